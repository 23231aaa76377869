"""The PostgreSQL benchmarks run to the end on small sizes and print their figures beside a raw
limit (CI never runs them at full size; a benchmark that no longer runs would go unnoticed)."""

from __future__ import annotations

import importlib

import pytest

SMALL = {
    "long_running": ["--seconds", "0.2", "--done", "500", "--in-flight", "20",
                     "--checkpoints", "500"],
    "ledger_proofs": ["--sizes", "200", "--proofs", "5"],
    "ledger_integration": ["--cases", "20", "--lag-seconds", "0.5"],
    "intake": ["--seconds", "0.3", "--writers", "1"],
    "projections": ["--events", "200"],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SMALL))
def test_the_benchmark_runs_and_prints_its_ratios(
    name: str, postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    benchmark = importlib.import_module(f"benchmarks.{name}")
    assert benchmark.main(["--dsn", postgres_dsn, *SMALL[name]]) == 0
    assert "| ratio " in capsys.readouterr().out

"""The SQLite writers benchmark runs and prints its figure beside the raw commit rate of the
same file settings, as a ratio (a smoke run: tiny, and no figure is judged here)."""

from __future__ import annotations

import pytest

from benchmarks import sqlite_writers


def test_a_tiny_run_prints_the_figure_beside_its_baseline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    figures = sqlite_writers.run(processes=2, threads=2, seconds=0.3)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("raw SQLite commit, 1 connection alone: ")
    (figure,) = [line for line in lines if "| ratio " in line]
    assert figure.startswith("2 processes × 2 threads writing, node's datastore: ")
    assert "per writer: fewest" in lines[-1] and "longest wait" in lines[-1]
    assert figures["rate"] > 0 and figures["raw"] > 0
    assert 0 <= figures["fewest"] <= figures["most"]  # a writer may be starved: it is measured

"""The benchmarks that start real nodes run to the end on tiny sizes and print their figures
beside a raw limit of the same run (``tests/integration/test_benchmarks_run.py`` does the same
for the in-process ones). The figures themselves are not checked: timings belong to the
benchmarks, never to tests. What is checked is that each still runs, still measures the nodes'
CPU (their processes are grandchildren of ``tongban serve``, under the fork server), and still
says whether the goals are met."""

from __future__ import annotations

import re

import pytest

from benchmarks import federation, grpc_intake


def test_the_federation_benchmark_runs_and_prints_its_ratios(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--store", "sqlite", "--kafka", kafka_bootstrap, "--clients", "4", "--seconds", "1",
            "--closed-cases", "20", "--open-seconds", "0.1", "--raw-seconds", "0.5"]  # fmt: skip
    assert federation.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("| ratio ") == 2  # the closed loop and the open loop, beside raw Kafka
    for region in ("43", "61"):
        busy = [int(share) for share in re.findall(rf"node {region} (\d+)%", out)]
        assert len(busy) == 2 and all(busy), out  # both loops measured each node's processes
    assert "throughput:" in out and "latency: p99" in out


def test_the_grpc_intake_benchmark_runs_and_prints_its_ratios(
    postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--dsn", postgres_dsn, "--clients", "2", "--processes", "1", "--serve-processes",
            "1", "--seconds", "0.5", "--open-seconds", "0.1", "--open-rate", "100",
            "--group-commit", "on"]  # fmt: skip
    assert grpc_intake.main(argv) == 0
    out = capsys.readouterr().out
    assert "| ratio " in out
    node = re.search(r"CPU over the window: node (\d+)%", out)
    assert node is not None and int(node.group(1)) > 0, out
    assert "goals (" in out

"""Case intake through the application layer on PostgreSQL, beside the raw limits of this run.

    python -m benchmarks.intake [--dsn DSN] [--seconds 5] [--writers 1 8]

For each writer count: every writer thread submits cases (收件), each a command signed by its
hall, through one ``HubApplication`` for ``--seconds``; each submission is verified (signature,
node, time, commitments), sealed (the applicant under a key of its own) and stored as two events
(the command record and the case's ``Submitted``) with the case's key row, in one transaction.
Printed: cases/s and events/s beside PostgreSQL's raw
single-row commit rate (same number of connections) and its COPY rate for rows of the same size
as a stored event, plus p50/p99 latency per command. Without ``--dsn`` a throwaway PostgreSQL with
durable (default) settings is started through ``tests.harness``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tongban.v1 import common_pb2

from benchmarks.baselines import (
    benchmark_database,
    format_ratio,
    postgres_commit_rate,
    postgres_commit_rate_concurrent,
    postgres_copy_rate,
)
from hub.application.hub import HubApplication
from hub.domain.values import Applicant, id_number_with_check
from hub.settings import Settings

ITEM = "070303001000"  # 户口迁移: a county-level item
COUNTY = "430902000000"


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_writers(node: Any, writers: int, seconds: float) -> tuple[int, list[float]]:
    """Each writer submits cases until the time is up; returns (cases, latencies in seconds).

    Each case is a command signed by its hall (signing is the hall's work and not timed; the
    node's verification of the signature and the commitments is)."""
    app: HubApplication = node.app
    signers = [node.halls[f"bench-hall-{n}"] for n in range(writers)]
    applicant = Applicant("测试", id_number_with_check("43090219900101001"), "13800000000")
    material = common_pb2.Material(
        name="居民户口簿", sha256=hashlib.sha256(b"x").hexdigest(), media_type="application/pdf",
        size=4096,
    )  # fmt: skip
    latencies: list[list[float]] = [[] for _ in range(writers)]
    start = threading.Barrier(writers + 1)
    stop_at = [0.0]
    run_id = time.time_ns()

    def writer(number: int) -> None:
        signer = signers[number]
        start.wait()
        count = 0
        while time.perf_counter() < stop_at[0]:
            signed = signer.sign(
                "submit",
                idempotency_key=f"bench-{run_id}-{number}-{count}",
                item_code=ITEM,
                applicant=applicant,
                materials=[material],
            )
            began = time.perf_counter()
            app.execute(signed)
            latencies[number].append(time.perf_counter() - began)
            count += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds
    start.wait()
    for thread in threads:
        thread.join()
    flat = [latency for per_writer in latencies for latency in per_writer]
    return len(flat), flat


def _stored_event_bytes(app: HubApplication) -> int:
    """Average size of the stored events so far."""
    stored = app.recorder.select_notifications(start=1, limit=500)
    return sum(len(n.state) for n in stored) // max(1, len(stored))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="PostgreSQL to use (default: start a throwaway one)")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each run")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 8])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with contextlib.ExitStack() as stack:
        dsn, bench_dsn = benchmark_database(stack, args.dsn)
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        settings = Settings(data_dir=data_dir, database_url=bench_dsn)
        inprocess: Any = importlib.import_module("tests.harness.inprocess")
        node = inprocess.InProcessNode.start(settings)  # tongban init, then the application
        stack.callback(node.close)
        for number in range(max(args.writers)):
            node.add_hall(f"bench-hall-{number}", COUNTY, f"基准测试窗口{number}")
        run_writers(node, 1, 1.0)  # warm-up: connections, caches, first pages
        event_bytes = _stored_event_bytes(node.app)

        print(f"\nraw limits of this machine, this run (stored event ≈ {event_bytes} bytes):")
        commit_1 = postgres_commit_rate(dsn)
        copy = postgres_copy_rate(dsn, row_bytes=event_bytes)
        print(f"  {commit_1}\n  {copy}")
        for writers in args.writers:
            commit_n = commit_1 if writers == 1 else postgres_commit_rate_concurrent(dsn, writers)
            if writers != 1:
                print(f"  {commit_n}")
            cases, latencies = run_writers(node, writers, args.seconds)
            cases_per_second = cases / args.seconds
            events_per_second = 2 * cases_per_second  # the command record and the case event
            print(f"\ncase intake, {writers} writer(s), {cases} cases in {args.seconds:.1f} s:")
            format_ratio(
                "  transactions (cases)", cases_per_second, "cases/s",
                f"raw commit, {writers} conn.", commit_n,
            )  # fmt: skip
            format_ratio("  events", events_per_second, "events/s", "raw COPY, same row size", copy)
            p50 = statistics.median(latencies) * 1000
            p99 = _percentile(latencies, 0.99) * 1000
            print(f"  latency per submit: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

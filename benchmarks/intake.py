"""Case intake through the application layer on PostgreSQL, beside the raw limits of this run.

    python -m benchmarks.intake [--dsn DSN] [--seconds 5] [--writers 1 8]

For each writer count: every writer thread submits cases (收件) through one ``HubApplication``
for ``--seconds``; each submission stores two events (the case's ``Submitted`` and the command's
idempotency record) in one transaction. Printed: cases/s and events/s beside PostgreSQL's raw
single-row commit rate (same number of connections) and its COPY rate for rows of the same size
as a stored event, plus p50/p99 latency per command. Without ``--dsn`` a throwaway PostgreSQL with
durable (default) settings is started through ``tests.harness``.
"""

from __future__ import annotations

import argparse
import base64
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

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks.baselines import (
    format_ratio,
    postgres_commit_rate,
    postgres_commit_rate_concurrent,
    postgres_copy_rate,
)
from hub.application.cipher import new_key
from hub.application.hub import HubApplication
from hub.bootstrap import build_application
from hub.domain.values import Actor, Applicant, Material, id_number_with_check
from hub.settings import Settings

ITEM = "070303001000"  # 户口迁移: a county-level item
COUNTY = "430902000000"


def _public_key() -> str:
    raw = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode()


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_writers(app: HubApplication, writers: int, seconds: float) -> tuple[int, list[float]]:
    """Each writer submits cases until the time is up; returns (cases, latencies in seconds)."""
    actors = [Actor(f"bench-hall-{n}", "op", COUNTY) for n in range(writers)]
    applicant = Applicant("测试", id_number_with_check("43090219900101001"), "13800000000")
    material = Material("居民户口簿", hashlib.sha256(b"x").hexdigest(), "application/pdf", 4096)
    latencies: list[list[float]] = [[] for _ in range(writers)]
    start = threading.Barrier(writers + 1)
    stop_at = [0.0]
    run_id = time.time_ns()

    def writer(number: int) -> None:
        actor = actors[number]
        start.wait()
        count = 0
        while time.perf_counter() < stop_at[0]:
            began = time.perf_counter()
            app.submit(
                idempotency_key=f"bench-{run_id}-{number}-{count}",
                actor=actor,
                item_code=ITEM,
                applicant=applicant,
                materials=[material],
            )
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
    """Average size of the stored (encrypted) events so far."""
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
        dsn: str = args.dsn or ""
        harness: Any = importlib.import_module("tests.harness.postgres")
        if not dsn:
            cluster = stack.enter_context(harness.PostgresCluster(durable=True))
            dsn = cluster.dsn
            print(f"started a throwaway PostgreSQL ({harness.describe_dsn(dsn)}, durable settings)")
        bench_dsn = stack.enter_context(harness.temporary_database(dsn))
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        settings = Settings(
            data_dir=data_dir,
            database_url=bench_dsn,
            cipher_keys=f"k1:{new_key()}",
            cipher_active_key="k1",
        )
        app = build_application(settings)
        stack.callback(app.close)
        for number in range(max(args.writers)):
            app.register_hall(
                hall_id=f"bench-hall-{number}",
                name=f"基准测试窗口{number}",
                region=COUNTY,
                windows=["1"],
                public_key=_public_key(),
            )
        run_writers(app, 1, 1.0)  # warm-up: connections, caches, first pages
        event_bytes = _stored_event_bytes(app)

        print(f"\nraw limits of this machine, this run (stored event ≈ {event_bytes} bytes):")
        commit_1 = postgres_commit_rate(dsn)
        copy = postgres_copy_rate(dsn, row_bytes=event_bytes)
        print(f"  {commit_1}\n  {copy}")
        for writers in args.writers:
            commit_n = commit_1 if writers == 1 else postgres_commit_rate_concurrent(dsn, writers)
            if writers != 1:
                print(f"  {commit_n}")
            cases, latencies = run_writers(app, writers, args.seconds)
            cases_per_second = cases / args.seconds
            events_per_second = 2 * cases_per_second
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

"""The ledger integrator and the auditor on PostgreSQL, beside the raw limits of this run.

    python -m benchmarks.ledger_integration [--dsn DSN] [--cases 4000] [--lag-seconds 10]

Prints, each beside a raw limit measured in the same run:

- integration rate: leaves/s from stored events to committed leaves, interior nodes, tracking
  and checkpoints (signed every 1,000 leaves), beside the raw PostgreSQL COPY rate of rows of
  the same size as a leaf (goal: >= 0.5x);
- audit rate: stored events/s re-hashed against their leaves with every root re-derived and every
  hall signature verified, and hall signatures/s, beside the raw Ed25519 verify rate (goal for
  the signatures: >= 0.7x);
- integration lag p50/p99 while cases arrive at about 1,000 events/s (goal: p99 <= 1 s).

Without ``--dsn`` a throwaway PostgreSQL with durable (default) settings is started.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import multiprocessing
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tongban.v1 import common_pb2

from benchmarks.baselines import (
    benchmark_database,
    ed25519_verify_rate,
    format_ratio,
    postgres_copy_rate,
)
from hub.application.hub import HubApplication
from hub.bootstrap import build_application, build_integrator
from hub.commands.signing import CommandSigner
from hub.domain.values import Applicant, id_number_with_check
from hub.integrity.audit import audit_store
from hub.integrity.integrator import LedgerIntegrator
from hub.integrity.store import ReadOnlyStore
from hub.settings import Settings

ITEM = "070303001000"
COUNTY = "430902000000"
APPLICANT = Applicant("测试", id_number_with_check("43090219900101001"), "13800000000")
MATERIAL = common_pb2.Material(
    name="居民户口簿",
    sha256=hashlib.sha256(b"x").hexdigest(),
    media_type="application/pdf",
    size=4096,
)


class SignedHall:
    """A hall that signs its commands, as adapters do."""

    def __init__(self, app: HubApplication, signer: CommandSigner) -> None:
        self.app = app
        self.signer = signer

    @classmethod
    def register(cls, node: Any, hall_id: str) -> SignedHall:
        """Register a new hall (an admin command) on an in-process node."""
        return cls(node.app, node.add_hall(hall_id, COUNTY))

    @classmethod
    def existing(cls, app: HubApplication, hall_id: str, key: Ed25519PrivateKey) -> SignedHall:
        """A hall registered already (in another process)."""
        signer = CommandSigner(
            key, node=app.policy.origin, operator="op", hall_id=hall_id, region=COUNTY
        )
        return cls(app, signer)

    def private_bytes(self) -> bytes:
        """The raw private key, to hand to a writer process."""
        return self.signer.key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def submit(self, key: str) -> None:
        """One signed submission (two stored events: its command record and the case)."""
        self.app.execute(
            self.signer.sign(
                "submit", idempotency_key=key, item_code=ITEM, applicant=APPLICANT,
                materials=[MATERIAL],
            )
        )  # fmt: skip


def _leaf_bytes(integrator: LedgerIntegrator) -> int:
    tables = integrator.view.tables
    # The first 200 leaves, or all of a smaller log (``--cases`` below 100).
    leaves = integrator.view.read(
        lambda cursor: tables.leaves(cursor, 0, min(200, tables.state(cursor)[0]))
    )
    return sum(len(leaf.encode()) for leaf in leaves) // max(1, len(leaves))


def _lag_writer(
    settings: Settings, hall_id: str, private_key: bytes, rate: float, seconds: float,
    start_at: float, results: Any,
) -> None:  # fmt: skip
    """A writer process: paced signed submissions; reports (time stored, id bound) pairs."""
    app = build_application(settings, create_tables=False)
    hall = SignedHall.existing(app, hall_id, Ed25519PrivateKey.from_private_bytes(private_key))
    stored: list[tuple[float, int]] = []
    count = 0
    while time.monotonic() < start_at:
        time.sleep(0.001)
    while time.monotonic() - start_at < seconds:
        delay = start_at + count / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        hall.submit(f"lag-{hall_id}-{count:07d}")
        stored.append((time.monotonic(), app.recorder.max_notification_id() or 0))
        count += 1
    app.close()
    results.put(stored)


def measure_lag(
    settings: Settings,
    node: Any,
    integrator: LedgerIntegrator,
    seconds: float,
    cases_per_second: float = 500.0,
    writers: int = 2,
) -> tuple[list[float], float]:
    """Cases arrive from ``writers`` processes at ``cases_per_second`` (two events each).

    Writers are separate processes (as hall traffic would reach a node from many server threads;
    one Python process cannot also offer 1,000 events/s while integrating, because of the GIL).
    After each submission a writer reads the log's highest notification id, an upper bound on its
    own event's id, so the lag measured (until the integrator has committed that many leaves) is
    never less than the true lag. Times are CLOCK_MONOTONIC, shared by all processes.
    """
    integrated: list[tuple[float, int]] = []  # (time committed, log size)
    stop = threading.Event()
    original_step = integrator.step

    def step() -> Any:
        result = original_step()
        if result.leaves:
            integrated.append((time.monotonic(), result.size))
        return result

    integrator.step = step  # type: ignore[method-assign]
    halls = [SignedHall.register(node, f"lag-hall-{n}") for n in range(writers)]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.monotonic() + 5.0  # after every writer process has started
    processes = [
        context.Process(
            target=_lag_writer,
            args=(
                settings,
                hall.signer.hall_id,
                hall.private_bytes(),
                cases_per_second / writers,
                seconds,
                start_at,
                results,
            ),
        )
        for hall in halls
    ]
    for process in processes:
        process.start()
    follower = threading.Thread(target=integrator.run, args=(stop,), kwargs={"idle_wait": 0.005})
    follower.start()
    stored: list[tuple[float, int]] = []
    for _ in processes:
        stored.extend(results.get(timeout=seconds + 60))
    for process in processes:
        process.join(timeout=30)
    last = max(bound for _at, bound in stored)
    deadline = time.monotonic() + 30
    while (not integrated or integrated[-1][1] < last) and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    follower.join()
    integrator.step = original_step  # type: ignore[method-assign]
    lags = []
    for at, needed in sorted(stored):
        done = next((when for when, size in integrated if size >= needed), None)
        if done is not None:
            lags.append(max(0.0, done - at))
    return lags, len(stored) / seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="PostgreSQL to use (default: start a throwaway one)")
    parser.add_argument("--cases", type=int, default=4000, help="signed cases to integrate")
    parser.add_argument("--lag-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        dsn, database = benchmark_database(stack, args.dsn)
        settings = Settings(
            data_dir=Path(stack.enter_context(tempfile.TemporaryDirectory())),
            database_url=database,
        )
        inprocess: Any = importlib.import_module("tests.harness.inprocess")
        node = inprocess.InProcessNode.start(settings)  # tongban init, then the application
        stack.callback(node.close)
        app = node.app
        integrator = build_integrator(settings, app)
        hall = SignedHall.register(node, "bench-hall")
        print(f"storing {args.cases} signed cases ({2 * args.cases} events)...", flush=True)
        for number in range(args.cases):
            hall.submit(f"bench-case-{number:06d}")

        began = time.perf_counter()
        size = integrator.catch_up()
        integration_seconds = time.perf_counter() - began
        leaf_bytes = _leaf_bytes(integrator)

        began = time.perf_counter()
        with ReadOnlyStore(database_url=settings.database_url) as store:
            report = audit_store(store, [integrator.signer.verifier()], origin=integrator.origin)
        audit_seconds = time.perf_counter() - began
        assert report.ok, report.summary()

        print("\nraw limits of this machine, this run:")
        copy = postgres_copy_rate(dsn, row_bytes=leaf_bytes)
        verify = ed25519_verify_rate()
        print(f"  {copy}\n  {verify}")

        print(f"\nintegration of {size} leaves (≈{leaf_bytes} bytes each):")
        format_ratio("  integration", size / integration_seconds, "leaves/s",
                     "raw COPY, same row size", copy)  # fmt: skip
        print(f"\naudit of {report.events} events, {report.signatures} signed commands:")
        format_ratio("  audit (events)", report.events / audit_seconds, "events/s",
                     "raw Ed25519 verify", verify)  # fmt: skip
        format_ratio("  audit (signatures)", report.signatures / audit_seconds,
                     "signatures/s", "raw Ed25519 verify", verify)  # fmt: skip

        lags, rate = measure_lag(settings, node, integrator, args.lag_seconds)
        p50 = statistics.median(lags) * 1000
        p99 = sorted(lags)[min(len(lags) - 1, int(0.99 * len(lags)))] * 1000
        print(f"\nintegration lag at {2 * rate:,.0f} events/s offered ({len(lags)} cases):")
        print(f"  p50 {p50:.1f} ms, p99 {p99:.1f} ms (goal: p99 <= 1000 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Ledger storage and proofs at 1 thousand, 100 thousand and 1 million leaves.

    python -m benchmarks.ledger_proofs [--dsn DSN] [--backend postgres|sqlite]
                                       [--sizes 1000 100000 1000000] [--batch 10000]
                                       [--proofs 2000]

For each size, a log is built in its own tables (``ledger.storage.LedgerTables``) by appending
batches of ``--batch`` hall-signed leaves, each batch followed by a signed checkpoint stored in
the same transaction and a commit, which is the shape of the integrator's loop. Printed:

* append rate (leaves/s with the database writes, checkpoint and commit; building the ``Leaf``
  objects is not timed) beside PostgreSQL's raw COPY rate of rows of the same size as a leaf row
  (``benchmarks.baselines.postgres_copy_rate``, measured in the same run);
* inclusion and consistency proof size (hashes and bytes, mean and max over random samples) and
  generation time from the stored tree (one query per proof), measured after an ``ANALYZE`` and
  a ``CHECKPOINT`` so that the build's write-back does not compete with the lookups;
* proofs generated and verified per second, verification beside the raw SHA-256 rate of 64-byte
  inputs measured in the same run, and what one verification costs in SHA-256 computations:
  all of these should grow with log2(n), not with n.

Without ``--dsn`` a throwaway PostgreSQL with durable (default) settings is started through
``tests.harness``. ``--backend sqlite`` builds the logs in a SQLite file instead (no PostgreSQL
needed, no COPY baseline).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

import ledger
import ledger.storage
from benchmarks.baselines import Baseline, benchmark_database, format_ratio, postgres_copy_rate

ORIGIN = "tongban.example/node-1"
TOPICS = ("CaseSubmitted", "CaseAccepted", "CaseHandedOver", "CaseConcluded")
CASES = [uuid.UUID(int=0x7B0000 + n) for n in range(10_000)]


def make_leaf(index: int) -> ledger.Leaf:
    """A leaf deterministic in ``index`` (so it can be rebuilt to verify proofs): every other
    one a hall's signed command (about 200 bytes of command), the rest caused by the one before,
    as in a node's log."""
    seed = index.to_bytes(8, "big")
    common: dict[str, Any] = {
        "origin": ORIGIN,
        "index": index,
        "aggregate_id": CASES[index % len(CASES)],
        "version": index // len(CASES) + 1,
        "topic": TOPICS[index % len(TOPICS)],
        "event_hash": hashlib.sha256(b"event" + seed).digest(),
    }
    if index % 2:
        return ledger.Leaf(**common, authority=ledger.Authority.CAUSED, cause=index - 1)
    return ledger.Leaf(
        **common,
        authority=ledger.Authority.HALL_COMMAND,
        signer="hn-ziyang-hall",
        key_id="0a1b2c3d0a1b2c3d",
        signature=hashlib.sha512(b"signature" + seed).digest(),  # Ed25519-sized
        command=hashlib.sha512(b"command" + seed).digest() * 3,
    )


def leaf_row_bytes(leaf: ledger.Leaf) -> int:
    """Bytes of data in one leaves row: idx, leaf, leaf_hash, aggregate_id, version."""
    return 8 + len(leaf.encode()) + 32 + 16 + 8


def sha256_rate(duration: float = 1.0, input_bytes: int = 64) -> Baseline:
    """SHA-256 digests per second of ``input_bytes``-byte inputs (hashlib, one thread)."""
    data = bytes(range(input_bytes % 256)) * (input_bytes // 256 + 1)
    data = data[:input_bytes]
    sha256 = hashlib.sha256
    count = 0
    start = time.perf_counter()
    end = start + duration
    while time.perf_counter() < end:
        for _ in range(1000):
            sha256(data).digest()
        count += 1000
    elapsed = time.perf_counter() - start
    return Baseline(
        f"SHA-256, {input_bytes}-byte inputs", count / elapsed, "hashes/s", count, elapsed
    )


@dataclass
class Database:
    """Where the logs are built: a dialect, a way to open a connection, and housekeeping."""

    dialect: str
    connect: Callable[[], Any]
    table_bytes: Callable[[Any, str], int]
    settle: Callable[[], None]


@dataclass
class SizeResult:
    size: int
    append_rate: float
    storage_mb: float
    inclusion_hashes: list[int]
    consistency_hashes: list[int]
    inclusion_gen: list[float]
    consistency_gen: list[float]
    inclusion_verify_rate: float
    consistency_verify_rate: float


def build(db: Database, tables: ledger.storage.LedgerTables, size: int, batch: int) -> float:
    """Build a log of ``size`` leaves; return the seconds spent appending and committing."""
    signer = ledger.Signer.from_seed(ORIGIN, bytes(32))
    spent = 0.0
    with contextlib.closing(db.connect()) as conn:
        cur = conn.cursor()
        tables.create(cur)
        conn.commit()
        for start in range(0, size, batch):
            leaves = [make_leaf(i) for i in range(start, min(size, start + batch))]
            began = time.perf_counter()
            new_size = tables.append(cur, leaves)
            root = tables.state(cur)[1].root()
            note = ledger.sign_checkpoint(ledger.Checkpoint(ORIGIN, new_size, root), signer)
            tables.store_checkpoint(cur, new_size, root, note)
            conn.commit()
            spent += time.perf_counter() - began
    return spent


def measure_proofs(
    db: Database, tables: ledger.storage.LedgerTables, size: int, count: int, rng: random.Random
) -> SizeResult:
    """Generate and verify ``count`` inclusion and consistency proofs of random leaves/sizes."""
    with contextlib.closing(db.connect()) as conn:
        cur = conn.cursor()
        root = tables.tree_root(cur, size)
        indices = [rng.randrange(size) for _ in range(count)]
        olds = [rng.randint(1, size) for _ in range(count)]

        inclusion: list[list[bytes]] = []
        inclusion_gen: list[float] = []
        for index in indices:
            began = time.perf_counter()
            inclusion.append(tables.inclusion_proof(cur, index, size))
            inclusion_gen.append(time.perf_counter() - began)
        consistency: list[list[bytes]] = []
        consistency_gen: list[float] = []
        for old in olds:
            began = time.perf_counter()
            consistency.append(tables.consistency_proof(cur, old, size))
            consistency_gen.append(time.perf_counter() - began)
        old_roots = [tables.tree_root(cur, old) for old in olds]  # not timed
        storage = sum(db.table_bytes(cur, t) for t in (tables.leaves_table, tables.nodes_table))
        conn.rollback()

    leaf_hashes = [make_leaf(i).leaf_hash() for i in indices]  # the verifier's own data
    began = time.perf_counter()
    for leaf_hash, index, proof in zip(leaf_hashes, indices, inclusion, strict=True):
        ledger.verify_inclusion(leaf_hash, index, size, proof, root)
    inclusion_verify = count / (time.perf_counter() - began)
    began = time.perf_counter()
    for old, proof, old_root in zip(olds, consistency, old_roots, strict=True):
        ledger.verify_consistency(old, size, proof, old_root, root)
    consistency_verify = count / (time.perf_counter() - began)
    return SizeResult(
        size=size,
        append_rate=0.0,
        storage_mb=storage / 1e6,
        inclusion_hashes=[len(p) for p in inclusion],
        consistency_hashes=[len(p) for p in consistency],
        inclusion_gen=inclusion_gen,
        consistency_gen=consistency_gen,
        inclusion_verify_rate=inclusion_verify,
        consistency_verify_rate=consistency_verify,
    )


def _percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(results: Sequence[SizeResult], sha: Baseline) -> None:
    """Print the growth table: every column should grow like log2(n)."""

    def sizes(hashes: list[int]) -> str:
        mean = statistics.fmean(hashes)
        return f"{mean:5.1f} / {max(hashes):2d} ({mean * 32:5.0f} B)"

    def micros(samples: list[float]) -> str:
        return f"{statistics.fmean(samples) * 1e6:6.0f} / {_percentile(samples, 0.99) * 1e6:6.0f}"

    print("\nproof size: hashes mean / max (mean bytes); generation: µs mean / p99; rates per s")
    print(
        f"{'leaves':>9} {'log2 n':>6} | {'inclusion size':>22} {'gen µs':>15} {'gen/s':>7} "
        f"{'verify/s':>9} | {'consistency size':>22} {'gen µs':>15} {'gen/s':>7} {'verify/s':>9}"
    )
    for r in results:
        print(
            f"{r.size:>9,} {math.log2(r.size):6.1f} | {sizes(r.inclusion_hashes):>22} "
            f"{micros(r.inclusion_gen):>15} {len(r.inclusion_gen) / sum(r.inclusion_gen):7,.0f} "
            f"{r.inclusion_verify_rate:9,.0f} | {sizes(r.consistency_hashes):>22} "
            f"{micros(r.consistency_gen):>15} "
            f"{len(r.consistency_gen) / sum(r.consistency_gen):7,.0f} "
            f"{r.consistency_verify_rate:9,.0f}"
        )
    print(f"\nverification beside raw SHA-256 ({sha.rate:,.0f} hashes/s, this run):")
    for r in results:
        for kind, rate, hashes in (
            ("inclusion", r.inclusion_verify_rate, r.inclusion_hashes),
            ("consistency", r.consistency_verify_rate, r.consistency_hashes),
        ):
            line = format_ratio(
                f"  {kind} verify, {r.size:,} leaves",
                rate,
                "proofs/s",
                "SHA-256 64 B",
                sha,
                echo=False,
            )
            print(
                f"{line} | one verification ≈ {sha.rate / rate:4.1f} SHA-256 "
                f"(proof of {statistics.fmean(hashes):.1f} hashes)"
            )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ledger_proofs", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dsn", help="PostgreSQL to use (default: start a throwaway one)")
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--batch", type=int, default=10_000, help="leaves per append + commit")
    parser.add_argument("--proofs", type=int, default=2_000, help="proofs of each kind per size")
    parser.add_argument("--seed", type=int, default=1)
    return parser


def _postgres(dsn: str) -> Database:
    def table_bytes(cur: Any, table: str) -> int:
        cur.execute("SELECT pg_total_relation_size(%s)", (table,))
        return int(cur.fetchone()[0])

    def settle() -> None:
        # Write the freshly built tables back and gather planner statistics before timing
        # proofs, so the proof figures measure lookups, not the build's write-back competing
        # for the disk. CHECKPOINT needs a superuser or pg_checkpoint: skipped otherwise.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ANALYZE")
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                conn.execute("CHECKPOINT")

    return Database("postgres", lambda: psycopg.connect(dsn), table_bytes, settle)


def _sqlite(path: Path) -> Database:
    def table_bytes(cur: Any, table: str) -> int:
        # dbstat is optional in SQLite builds; the file size is the honest fallback.
        try:
            cur.execute("SELECT sum(pgsize) FROM dbstat WHERE name = ?", (table,))
            return int(cur.fetchone()[0] or 0)
        except sqlite3.OperationalError:
            return path.stat().st_size if table.endswith("_leaves") else 0

    def settle() -> None:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("ANALYZE")

    return Database("sqlite", lambda: sqlite3.connect(path), table_bytes, settle)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rng = random.Random(args.seed)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        copy: Baseline | None = None
        if args.backend == "postgres":
            dsn, database = benchmark_database(stack, args.dsn)
            db = _postgres(database)
            row_bytes = leaf_row_bytes(make_leaf(0))
            copy = postgres_copy_rate(dsn, row_bytes=row_bytes)
        else:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            db = _sqlite(directory / "ledger.sqlite3")
            row_bytes = leaf_row_bytes(make_leaf(0))
        sha = sha256_rate()
        print(f"backend: {db.dialect} (all sizes); a leaf row holds {row_bytes} bytes")
        print("raw limits of this machine, this run:")
        if copy is not None:
            print(f"  {copy}")
        print(f"  {sha}")

        results: list[SizeResult] = []
        print(f"\nappend, {args.batch:,}-leaf batches, each + signed checkpoint + commit:")
        for size in args.sizes:
            tables = ledger.storage.LedgerTables(db.dialect, f"bench_{size}")
            seconds = build(db, tables, size, args.batch)
            rate = size / seconds
            name = f"  append, {size:,} leaves ({seconds:.2f} s)"
            if copy is not None:
                format_ratio(name, rate, "leaves/s", "raw COPY, same row size", copy)
            else:
                print(f"{name}: {rate:,.1f} leaves/s")
            db.settle()
            result = measure_proofs(db, tables, size, args.proofs, rng)
            result.append_rate = rate
            print(f"    stored leaves + nodes: {result.storage_mb:,.1f} MB")
            results.append(result)
        report(results, sha)
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

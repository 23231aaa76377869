"""Questions a node asks again and again, on tables of a long-running node's size.

    python -m benchmarks.long_running [--dsn DSN] [--done 100000] [--in-flight 1000]
                                      [--never-sent 10] [--checkpoints 100000] [--seconds 3]

A node's tables keep their history: the relay's outbox holds every row it ever sent, the
cosignatures table every checkpoint ever cosigned. A question asked in every round must cost
what the answer costs, not what the history costs. Two such questions, each asked of a table
filled in a throwaway PostgreSQL (durable settings) twice, as the node makes and asks it now
and as it did before 2026-12-03:

* **the publisher's due rows** (every publishing round): never sent, or sent longer ago than
  the resend time and not acknowledged, from an outbox of ``--done`` rows done, ``--in-flight``
  rows sent and waiting for an acknowledgement (many while a peer is slow or the broker is
  down) and ``--never-sent`` rows just queued. Before: an index on ``(done_at, seq)`` and one
  ``sent_at IS NULL OR sent_at < t`` statement; now: the ``_waiting`` index and
  ``hub.relay.store``'s two-branch statement.
* **the latest final checkpoint's candidates** (each witnessing round, each receipt): sizes
  cosigned by k = 2 witnesses, among ``--checkpoints`` cosigned checkpoints. Before: every
  candidate size at once; now: ``ledger.witness_storage``'s first page.

Each statement runs prepared, as the node runs it (psycopg prepares a statement after five
runs; PostgreSQL may then keep a generic plan), on one connection for ``--seconds``. Printed:
queries/s of each beside the raw limit of the same connection, a one-row read by primary key, as
a ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from benchmarks.baselines import benchmark_database, format_ratio
from hub.relay.store import OUTBOX, _RelaySQL, _statements
from ledger.witness_storage import WitnessTables

#: The outbox and its statement as they were before (the reference the change is measured by).
OUTBOX_BEFORE = f"{OUTBOX}_before"
OUTBOX_BEFORE_INDEX = f"CREATE INDEX {OUTBOX_BEFORE}_pending ON {OUTBOX_BEFORE} (done_at, seq)"
DUE_BEFORE = (
    "SELECT seq, kind, envelope_id, destination, case_id, record_id, attempts, sent_at, "
    f"done_at, outcome, reason FROM {OUTBOX_BEFORE} WHERE done_at IS NULL AND kind <> 'fetch' "
    "AND (sent_at IS NULL OR sent_at < %s) ORDER BY seq LIMIT %s"
)
#: The candidate sizes' statement as it was before.
CANDIDATES_BEFORE = (
    "SELECT size FROM {table} WHERE size >= %s GROUP BY size "
    "HAVING COUNT(DISTINCT witness) >= %s ORDER BY size DESC"
)


def _fill_outbox(
    conn: psycopg.Connection[Any], table: str, done: int, in_flight: int, new: int
) -> None:
    now = time.time()
    rows = (
        ("done", done, "1.0", "2.0"),  # sent and acknowledged long ago
        ("flight", in_flight, str(now), "NULL"),  # sent just now, waiting for the peer
        ("new", new, "NULL", "NULL"),  # queued, never sent
    )
    for name, count, sent_at, done_at in rows:
        conn.execute(
            f"INSERT INTO {table} (kind, envelope_id, destination, case_id, record_id, "
            f"created_at, sent_at, attempts, done_at) SELECT 'envelope', '{name}-' || n, '61', "
            f"'case-' || n, 'record-' || n, 1.0, {sent_at}, 1, {done_at} "
            f"FROM generate_series(1, {count}) AS n"
        )
    conn.execute(f"ANALYZE {table}")


def _fill_cosignatures(conn: psycopg.Connection[Any], table: str, checkpoints: int) -> None:
    """Two witnesses' cosignatures of every checkpoint (one every 3 leaves)."""
    conn.execute(
        f"INSERT INTO {table} (size, root, witness, key_id, line, timestamp, received_at) "
        "SELECT 3 * n, decode(repeat('ab', 32), 'hex'), witness, 1, 'line', 1, 1.0 "
        f"FROM generate_series(1, {checkpoints}) AS n, "
        "unnest(ARRAY['tongban/42/witness', 'tongban/61/witness']) AS witness"
    )
    conn.execute(f"ANALYZE {table}")


def _rate(seconds: float, query: Callable[[], int]) -> tuple[float, int]:
    """Queries per second for ``seconds`` (after ten runs: psycopg prepares after five)."""
    rows = 0
    for _ in range(10):
        rows = query()
    count = 0
    began = time.perf_counter()
    until = began + seconds
    while time.perf_counter() < until:
        query()
        count += 1
    return count / (time.perf_counter() - began), rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dsn", help="PostgreSQL to use (default: start a throwaway one)")
    parser.add_argument("--done", type=int, default=100_000, help="outbox rows done")
    parser.add_argument("--in-flight", type=int, default=1_000, help="outbox rows in flight")
    parser.add_argument("--never-sent", type=int, default=10, help="outbox rows just queued")
    parser.add_argument("--checkpoints", type=int, default=100_000, help="cosigned checkpoints")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with contextlib.ExitStack() as stack:
        _server, bench_dsn = benchmark_database(stack, args.dsn)
        conn = stack.enter_context(psycopg.connect(bench_dsn, autocommit=True))
        for statement in _statements("BIGSERIAL PRIMARY KEY", "BYTEA", "DOUBLE PRECISION"):
            if OUTBOX in statement:
                conn.execute(statement)
        conn.execute(f"CREATE TABLE {OUTBOX_BEFORE} (LIKE {OUTBOX} INCLUDING DEFAULTS)")
        conn.execute(f"ALTER TABLE {OUTBOX_BEFORE} ADD PRIMARY KEY (seq)")
        conn.execute(OUTBOX_BEFORE_INDEX)
        for table in (OUTBOX, OUTBOX_BEFORE):
            _fill_outbox(conn, table, args.done, args.in_flight, args.never_sent)
        witness = WitnessTables("postgres")
        for statement in witness.create_statements():
            conn.execute(statement)
        _fill_cosignatures(conn, witness.cosignatures_table, args.checkpoints)
        print(
            f"an outbox of {args.done:,} rows done, {args.in_flight:,} in flight and "
            f"{args.never_sent:,} never sent; {args.checkpoints:,} checkpoints cosigned by two "
            "witnesses; each statement prepared, on one connection"
        )
        due = _RelaySQL("%s").due
        resend_before = time.time() - 30
        candidates_before = CANDIDATES_BEFORE.format(table=witness.cosignatures_table)

        def one_row() -> int:
            found = conn.execute(f"SELECT * FROM {OUTBOX} WHERE seq = %s", (args.done // 2,))
            return len(found.fetchall())

        def due_now() -> int:
            return len(conn.execute(due, (100, resend_before, 100, 100)).fetchall())

        def due_before() -> int:
            return len(conn.execute(DUE_BEFORE, (resend_before, 100)).fetchall())

        def candidates_now() -> int:
            with conn.cursor() as cursor:
                return len(witness.candidate_sizes(cursor, 1, 2))

        def candidates_then() -> int:
            return len(conn.execute(candidates_before, (1, 2)).fetchall())

        # The raw limit is measured before and after the others and the higher kept: on a
        # shared machine the rate drifts while the run lasts.
        raw_before, _ = _rate(args.seconds, one_row)
        measured = [
            (name, *_rate(args.seconds, query))
            for name, query in (
                ("the publisher's due rows, now", due_now),
                ("the publisher's due rows, before", due_before),
                ("final checkpoint candidates, now (first page)", candidates_now),
                ("final checkpoint candidates, before (all)", candidates_then),
            )
        ]
        raw_after, _ = _rate(args.seconds, one_row)
        raw = max(raw_before, raw_after)
        print(
            f"\nraw limit of this connection, this run: {raw:,.0f} one-row reads/s "
            f"(before the others {raw_before:,.0f}, after {raw_after:,.0f})"
        )
        for name, rate, rows in measured:
            format_ratio(f"{name}, {rows:,} rows", rate, "queries/s", "one-row read", raw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

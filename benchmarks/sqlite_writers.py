"""Many writers of one SQLite file through the node's datastore, beside the raw limit of this run.

    python -m benchmarks.sqlite_writers [--processes 2] [--threads 3] [--seconds 8]
                                        [--code DIR]

A node on the embedded default writes its events file from two processes (the serving process
and the follower), with several threads in each. Every writer here commits a small transaction
(an insert and a read, like a command and its check) in a loop, for ``--seconds``, through the
node's datastore (``hub.application.sqlite_store``). It prints:

- commits/s of all the writers together, beside the raw limit: one ``sqlite3`` connection
  committing the same transaction alone, in the same file settings (WAL, synchronous FULL), in
  the same run;
- fairness: the fewest and the most commits of one writer (a writer that got almost none was
  starved: SQLite makes a writer that finds the file locked sleep and look again, ever longer);
- the longest any writer waited to begin its write transaction.

``--code DIR`` imports the datastore from another checkout (``git archive <rev> | tar -x -C
DIR``), to compare revisions on the same machine in the same minute.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.baselines import Baseline, format_ratio

_CREATE = "CREATE TABLE IF NOT EXISTS t (n INTEGER, pad TEXT)"
_PAD = "x" * 200  # about the size of a small event row


def _transaction(cursor: Any, n: int) -> None:
    cursor.execute("INSERT INTO t VALUES (?, ?)", (n, _PAD))
    cursor.execute("SELECT COUNT(*) FROM t WHERE n = ?", (n,))
    cursor.fetchone()


def raw_commit_rate(path: Path, seconds: float) -> Baseline:
    """One plain sqlite3 connection committing the transaction alone: the file's own limit."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(_CREATE)
        cursor = connection.cursor()
        n = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            cursor.execute("BEGIN IMMEDIATE")
            _transaction(cursor, n)
            cursor.execute("COMMIT")
            n += 1
        elapsed = time.perf_counter() - started
    finally:
        connection.close()
    return Baseline("raw SQLite commit, 1 connection alone", n / elapsed, "commits/s", n, elapsed)


def _writer_process(
    code: str | None,
    path: str,
    threads: int,
    seconds: float,
    ready: Any,
    results: Any,
    first: int,
) -> None:
    """One process: ``threads`` writers through the node's datastore for ``seconds``, from
    the moment every writer of every process is ready (``ready``, a barrier of them all);
    puts (commits, longest wait) per writer on ``results``."""
    if code:
        sys.path.insert(0, code)
    from hub.application.sqlite_store import TongbanSQLiteDatastore

    store = TongbanSQLiteDatastore(db_name=path, lock_timeout=10, pool_timeout=10.0)

    def write(number: int) -> None:
        commits, longest = 0, 0.0
        n = number * 1_000_000_000
        ready.wait()  # all start together: none writes alone while the others start up
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            asked = time.perf_counter()
            with store.transaction(commit=True) as cursor:
                longest = max(longest, time.perf_counter() - asked)
                _transaction(cursor, n)
            commits += 1
            n += 1
        results.put((commits, longest))

    workers = [threading.Thread(target=write, args=(first + i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    store.close()


def run(
    processes: int = 2, threads: int = 3, seconds: float = 8.0, code: str | None = None
) -> dict[str, float]:
    """Measure and print; returns the figures (for the smoke test)."""
    with tempfile.TemporaryDirectory(prefix="tongban-sqlite-writers-") as scratch:
        raw = raw_commit_rate(Path(scratch) / "raw.sqlite3", min(seconds, 3.0))
        print(raw, flush=True)
        path = str(Path(scratch) / "events.sqlite3")
        with sqlite3.connect(path) as setup:
            setup.execute("PRAGMA journal_mode=WAL")
            setup.execute(_CREATE)
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        ready = context.Barrier(processes * threads)
        children = [
            context.Process(
                target=_writer_process,
                args=(code, path, threads, seconds, ready, results, p * threads),
            )
            for p in range(processes)
        ]
        for child in children:
            child.start()
        per_writer = [results.get(timeout=seconds + 60) for _ in range(processes * threads)]
        for child in children:
            child.join(30)
    commits = [c for c, _ in per_writer]
    longest_ms = 1000 * max(w for _, w in per_writer)
    rate = sum(commits) / seconds
    format_ratio(
        f"{processes} processes × {threads} threads writing, node's datastore",
        rate,
        "commits/s",
        raw.name,
        raw,
    )
    print(
        f"  per writer: fewest {min(commits):,} commits, most {max(commits):,}; "
        f"longest wait to begin a write: {longest_ms:,.0f} ms",
        flush=True,
    )
    return {
        "rate": rate,
        "raw": raw.rate,
        "fewest": min(commits),
        "most": max(commits),
        "longest_ms": longest_ms,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--code", help="import the datastore from this checkout instead")
    args = parser.parse_args(argv)
    run(args.processes, args.threads, args.seconds, args.code)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The witness endpoint's throughput, beside the raw limits of this run.

    python -m benchmarks.witnessing [--dsn DSN] [--requests 400]

A peer log grows by one leaf per request and submits each new checkpoint with its consistency
proof to this node's witness (C2SP tlog-witness over HTTP keep-alive, one client, the node's
PostgreSQL store). Every accepted request verifies the log's signature and the proof, checks the
split-view records, swaps the witness state atomically and commits before it answers, so its
natural limit is one PostgreSQL commit: the rate is printed beside the raw commit rate of one
connection measured in the same run, and beside the Ed25519 sign rate (one cosignature each).
Without ``--dsn`` a throwaway PostgreSQL with durable (default) settings is started.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from benchmarks.baselines import ed25519_sign_rate, format_ratio, postgres_commit_rate
from hub.bootstrap import build_application, initialise
from hub.integrity.integrator import open_ledger_view
from hub.settings import Settings
from hub.witnessing.service import NodeWitness
from ledger import Checkpoint, Cosigner, MerkleTree, Signer, sign_checkpoint
from ledger.witness_protocol import format_add_checkpoint
from tests.harness.witness import ServedWitness

PEER = "tongban/42"


@contextlib.contextmanager
def _database(dsn: str | None) -> Iterator[str]:
    if dsn is not None:
        yield dsn
        return
    from tests.harness.postgres import postgres_service, temporary_database

    with postgres_service(durable=True) as server, temporary_database(server) as fresh:
        yield fresh


def run(dsn: str | None, requests: int) -> None:
    """Measure and print."""
    with _database(dsn) as database, tempfile.TemporaryDirectory() as directory:
        settings = Settings(data_dir=Path(directory), node_region="43", database_url=database)
        initialise(settings)
        app = build_application(settings)
        signer = Signer.generate(PEER)
        witness = NodeWitness(
            open_ledger_view(app),
            Cosigner.generate("tongban/43/witness"),
            {PEER: [signer.verifier()]},
        )
        tree = MerkleTree(b"peer event %d" % i for i in range(1000))
        try:
            with ServedWitness(witness) as served, httpx.Client(base_url=served.url) as client:
                old = 0
                latencies: list[float] = []
                start = time.perf_counter()
                for _ in range(requests):
                    tree.append(b"peer event %d" % tree.size)
                    note = sign_checkpoint(Checkpoint(PEER, tree.size, tree.root()), signer)
                    proof = tree.consistency_proof(old) if old else []
                    body = format_add_checkpoint(old, proof, note)
                    sent = time.perf_counter()
                    response = client.post("/add-checkpoint", content=body)
                    latencies.append(time.perf_counter() - sent)
                    if response.status_code != 200:
                        raise SystemExit(
                            f"witness answered {response.status_code}: {response.text}"
                        )
                    old = tree.size
                elapsed = time.perf_counter() - start
        finally:
            app.close()
        rate = requests / elapsed
        commits = postgres_commit_rate(database)
        signs = ed25519_sign_rate()
        format_ratio("witness add-checkpoint, 1 client", rate, "cosignatures/s",
                     "PostgreSQL commit, 1 connection", commits)  # fmt: skip
        format_ratio("witness add-checkpoint, 1 client", rate, "cosignatures/s",
                     "Ed25519 sign", signs)  # fmt: skip
        ordered = sorted(latencies)
        p99 = ordered[int(len(ordered) * 0.99) - 1]
        print(f"latency per request: p50 {statistics.median(latencies) * 1000:.1f} ms, "
              f"p99 {p99 * 1000:.1f} ms ({requests} requests)")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an existing PostgreSQL (default: a throwaway one)")
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args(argv)
    run(args.dsn, args.requests)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

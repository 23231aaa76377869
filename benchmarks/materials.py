"""Material files: upload and download throughput of a real node, beside the raw limits.

    python -m benchmarks.materials [--dsn DSN] [--mib 64] [--rounds 3]
                                   [--store postgres|sqlite|both]

What runs: a real ``tongban serve`` process (``tests.harness.node.NodeProcess``, two serving
processes) over mutual TLS, with its material store in PostgreSQL (a throwaway cluster with
durable settings unless ``--dsn``) or the embedded SQLite file; one hall uploads files of
``--mib`` MiB of random bytes with the hall SDK (``HallClient.upload_material``: the client's
digest pass and the streamed upload, which the node re-chunks, seals with AES-256-GCM, stores a
chunk per transaction and checks), lists them in a case, and downloads them again
(``download_material`` into a discarding sink: the node reads, opens and hashes each chunk and the
SDK checks the digest).

Beside each figure, measured in the same run on the same machine:

- raw gRPC streaming of the same bytes in the same 1 MiB messages, over the same mTLS setup (the
  node's CA, server certificate and message limits, the hall's client certificate), to a
  ``grpc.aio`` server in its own process that keeps nothing (client stream, for uploads) or sends
  bytes it holds in memory (server stream, for downloads);
- raw writes of the same bytes: to a file on the node's disk (1 MiB writes, one fsync at the
  end), and into PostgreSQL as 1 MiB ``bytea`` rows, one committed transaction per row (as the
  store does; with ``--store sqlite`` the same into a SQLite file).

Each figure is MiB/s over ``--rounds`` files (fresh bytes each time, so nothing is stored once
already). On a 2-CPU machine the client, the node and the database share both CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import multiprocessing
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import psycopg

from benchmarks.baselines import format_ratio

MiB = 1024 * 1024
MP = multiprocessing.get_context("spawn")
RAW_SERVICE = "bench.Raw"


def _harness(module: str) -> Any:
    """``tests.harness.<module>`` (see ``benchmarks.baselines._harness``)."""
    return importlib.import_module(f"tests.harness.{module}")


def random_file(path: Path, size: int) -> Path:
    """``size`` random bytes (a scan does not compress), written in 1 MiB blocks."""
    with path.open("wb") as handle:
        left = size
        while left:
            block = os.urandom(min(MiB, left))
            handle.write(block)
            left -= len(block)
    return path


# --------------------------------------------------------------------------- raw gRPC streaming


def _serve_raw(pki: Path, size: int, conn: Connection) -> None:
    """A grpc.aio server (its own process) with the node's TLS and message limits: ``Sink``
    counts and drops a client stream, ``Source`` sends ``size`` bytes in 1 MiB messages."""
    from hub.api.server import MAX_RECEIVE_BYTES, MAX_SEND_BYTES, TLSFiles

    block = os.urandom(MiB)

    async def sink(requests: AsyncIterator[bytes], context: Any) -> bytes:
        total = 0
        async for data in requests:
            total += len(data)
        return total.to_bytes(8, "big")

    async def source(request: bytes, context: Any) -> AsyncIterator[bytes]:
        left = size
        while left:
            piece = block[: min(MiB, left)]
            left -= len(piece)
            yield piece

    async def main() -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ]
        )
        handlers = {
            "Sink": grpc.stream_unary_rpc_method_handler(sink),
            "Source": grpc.unary_stream_rpc_method_handler(source),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(RAW_SERVICE, handlers),)
        )
        port = server.add_secure_port(
            "127.0.0.1:0", TLSFiles.in_directory(pki).server_credentials()
        )
        await server.start()
        conn.send(port)
        await asyncio.get_running_loop().run_in_executor(None, _wait_for_stop, conn)
        await server.stop(0)

    asyncio.run(main())


def _wait_for_stop(conn: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        conn.recv()


@contextlib.contextmanager
def raw_server(pki: Path, size: int) -> Iterator[int]:
    """Run ``_serve_raw`` in a spawned process; yields its port."""
    parent_end, child_end = MP.Pipe()
    process = MP.Process(target=_serve_raw, args=(pki, size, child_end), name="raw-grpc")
    process.start()
    child_end.close()
    try:
        if not parent_end.poll(60):
            raise RuntimeError("the raw gRPC server did not start")
        yield int(parent_end.recv())
    finally:
        with contextlib.suppress(OSError):
            parent_end.send("stop")
        parent_end.close()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join(5)


def raw_grpc(node: Any, hall_id: str, files: Sequence[Path], size: int) -> tuple[float, float]:
    """(upload MiB/s, download MiB/s) of plain gRPC streams of the same bytes."""
    hall = node.halls[hall_id]
    with raw_server(node.pki, size) as port:
        credentials = grpc.ssl_channel_credentials(
            (node.pki / "ca.pem").read_bytes(),
            hall.private_key.read_bytes(),
            hall.certificate.read_bytes(),
        )
        with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
            sink = channel.stream_unary(f"/{RAW_SERVICE}/Sink")
            source = channel.unary_stream(f"/{RAW_SERVICE}/Source")

            def chunks(path: Path) -> Iterator[bytes]:
                with path.open("rb") as handle:
                    yield from iter(lambda: handle.read(MiB), b"")

            began = time.perf_counter()
            for path in files:
                assert int.from_bytes(sink(chunks(path), timeout=600), "big") == size
            up = len(files) * size / MiB / (time.perf_counter() - began)
            began = time.perf_counter()
            for _ in files:
                received = sum(len(piece) for piece in source(b"", timeout=600))
                assert received == size
            down = len(files) * size / MiB / (time.perf_counter() - began)
    return up, down


# --------------------------------------------------------------------------- raw writes


def raw_disk(directory: Path, files: Sequence[Path]) -> float:
    """MiB/s writing the files' bytes to a new file in ``directory`` (one fsync per file)."""
    total = 0
    began = time.perf_counter()
    for path in files:
        target = directory / f"raw-{uuid.uuid4().hex}"
        with path.open("rb") as source, target.open("wb") as out:
            for block in iter(lambda: source.read(MiB), b""):
                out.write(block)
                total += len(block)
            out.flush()
            os.fsync(out.fileno())
        target.unlink()
    return total / MiB / (time.perf_counter() - began)


def raw_postgres(dsn: str, files: Sequence[Path]) -> float:
    """MiB/s inserting the bytes as 1 MiB bytea rows, one committed transaction per row."""
    table = f"bench_raw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, data BYTEA NOT NULL)")
        conn.execute(f"ALTER TABLE {table} ALTER COLUMN data SET STORAGE EXTERNAL")
        try:
            total = 0
            began = time.perf_counter()
            for path in files:
                with path.open("rb") as source:
                    for block in iter(lambda: source.read(MiB), b""):
                        with conn.transaction():
                            conn.execute(f"INSERT INTO {table} (data) VALUES (%s)", (block,))
                        total += len(block)
            return total / MiB / (time.perf_counter() - began)
        finally:
            conn.execute(f"DROP TABLE {table}")


def raw_sqlite(directory: Path, files: Sequence[Path]) -> float:
    """MiB/s inserting the bytes as 1 MiB blob rows into a SQLite file (WAL), one commit each."""
    path = directory / f"raw-{uuid.uuid4().hex}.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE raw (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        total = 0
        began = time.perf_counter()
        for source_path in files:
            with source_path.open("rb") as source:
                for block in iter(lambda: source.read(MiB), b""):
                    db.execute("BEGIN")
                    db.execute("INSERT INTO raw (data) VALUES (?)", (block,))
                    db.execute("COMMIT")
                    total += len(block)
        return total / MiB / (time.perf_counter() - began)
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


# --------------------------------------------------------------------------- the node


def through_the_node(node: Any, hall_id: str, files: Sequence[Path]) -> tuple[float, float]:
    """(upload MiB/s, download MiB/s) through the node with the hall SDK."""
    from tongban.v1 import common_pb2

    from adapters.sdk import RetryPolicy
    from hub.domain.values import id_number_with_check

    total = sum(path.stat().st_size for path in files)
    with node.client(hall_id, retry=RetryPolicy(attempts=1), timeout=600) as hall:
        began = time.perf_counter()
        materials = [hall.upload_material(path) for path in files]
        up = total / MiB / (time.perf_counter() - began)
        reply = hall.send(
            "submit",
            idempotency_key=uuid.uuid4().hex,
            item_code="200202001000",
            applicant=common_pb2.Applicant(
                name="测试", id_number=id_number_with_check("43090219500101009"), phone="1"
            ),
            competent_region="430902104000",
            materials=materials,
        )
        began = time.perf_counter()
        with open(os.devnull, "wb") as sink:
            for material in materials:
                hall.download_material(reply.case_id, material.sha256, sink, timeout=600)
        down = total / MiB / (time.perf_counter() - began)
    return up, down


def run(store: str, dsn: str, work: Path, size: int, rounds: int) -> None:
    pg = _harness("postgres")
    with contextlib.ExitStack() as stack:
        database = stack.enter_context(pg.temporary_database(dsn)) if store == "postgres" else None
        node = _harness("node").NodeProcess(work / f"node-{store}", database_url=database)
        stack.callback(node.stop)
        hall = node.add_hall("hn-shatou-town", "430902104000")
        node.start()
        scratch = work / f"files-{store}"
        scratch.mkdir()
        files = [random_file(scratch / f"scan-{n}.bin", size) for n in range(rounds)]
        raw_files = [random_file(scratch / f"raw-{n}.bin", size) for n in range(rounds)]
        label = f"{rounds} × {size // MiB} MiB, {store} store"
        print(f"\n{label}: tongban serve (2 processes) over mTLS, hall SDK", flush=True)
        up, down = through_the_node(node, hall.hall_id, files)
        raw_up, raw_down = raw_grpc(node, hall.hall_id, raw_files, size)
        disk = raw_disk(node.data_dir, raw_files)
        if store == "postgres":
            assert database is not None
            db_name, db_rate = (
                "raw PostgreSQL 1 MiB rows, a commit each",
                raw_postgres(database, raw_files),
            )
        else:
            db_name, db_rate = (
                "raw SQLite 1 MiB rows, a commit each",
                raw_sqlite(node.data_dir, raw_files),
            )
        format_ratio("upload", up, "MiB/s", "raw gRPC client stream, mTLS", raw_up)
        format_ratio("upload", up, "MiB/s", db_name, db_rate)
        format_ratio("upload", up, "MiB/s", "raw disk write + fsync", disk)
        format_ratio("download", down, "MiB/s", "raw gRPC server stream, mTLS", raw_down)
        # Digest check: the SDK's own first pass over the files, for scale.
        began = time.perf_counter()
        for path in files:
            with path.open("rb") as handle:
                digest = hashlib.sha256()
                for block in iter(lambda: handle.read(MiB), b""):
                    digest.update(block)
        sha = len(files) * size / MiB / (time.perf_counter() - began)
        print(f"  (SHA-256 of the files, one core: {sha:,.1f} MiB/s)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="PostgreSQL to use (default: start a throwaway one)")
    parser.add_argument("--mib", type=int, default=64, help="size of each file (MiB)")
    parser.add_argument("--rounds", type=int, default=3, help="files per direction")
    parser.add_argument("--store", choices=["postgres", "sqlite", "both"], default="both")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stores = ["postgres", "sqlite"] if args.store == "both" else [args.store]
    print(f"machine: {os.cpu_count()} CPUs shared by the client, the node and the database")
    with contextlib.ExitStack() as stack:
        dsn: str = args.dsn or ""
        if not dsn and "postgres" in stores:
            pg = _harness("postgres")
            cluster = stack.enter_context(pg.PostgresCluster(durable=True))
            dsn = cluster.dsn
            print(f"started a throwaway PostgreSQL ({pg.describe_dsn(dsn)}, durable settings)")
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tongban-bench-")))
        for store in stores:
            run(store, dsn, work, args.mib * MiB, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Raw limits of this machine, measured in the current run.

A benchmark figure means little on its own: the same code commits ten times faster on a laptop
NVMe disk than on a cloud volume. So every benchmark prints its figure next to one of these
baselines, measured on the same machine in the same run, and the ratio between the two
(``format_ratio``). Each function runs for a bounded time (``duration`` seconds, default 2.5),
creates and drops its own scratch table or topic, and returns a ``Baseline``.

    python -m benchmarks.baselines [--dsn DSN] [--kafka HOST:PORT]

prints them all; without ``--dsn``/``--kafka`` it starts a throwaway PostgreSQL (with
PostgreSQL's default, durable settings) and a Tansu broker through ``tests.harness``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TextIO

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql

DEFAULT_DURATION = 2.5


@dataclass(frozen=True)
class Baseline:
    """One measured rate: ``samples`` operations in ``seconds`` → ``rate`` per second."""

    name: str
    rate: float
    unit: str
    samples: int
    seconds: float
    detail: str = ""

    def __str__(self) -> str:
        extra = f"; {self.detail}" if self.detail else ""
        return (
            f"{self.name}: {self.rate:,.1f} {self.unit} "
            f"({self.samples:,} in {self.seconds:.2f} s{extra})"
        )


def _baseline(name: str, unit: str, samples: int, seconds: float, detail: str = "") -> Baseline:
    rate = samples / seconds if seconds > 0 else 0.0
    return Baseline(name, rate, unit, samples, seconds, detail)


def format_ratio(
    name: str,
    value: float,
    unit: str,
    baseline_name: str,
    baseline: float | Baseline,
    *,
    baseline_unit: str | None = None,
    file: TextIO | None = None,
    echo: bool = True,
) -> str:
    """Print (unless ``echo=False``) and return a figure beside its baseline and their ratio.

    ``baseline`` is a ``Baseline`` (its rate and unit are used) or a plain number in
    ``baseline_unit`` (default: ``unit``). Example::

        case intake, 1 writer: 412.0 events/s | PostgreSQL commit, 1 connection:
        1,530.2 commits/s | ratio 0.269
    """
    if isinstance(baseline, Baseline):
        base_rate, base_unit = baseline.rate, baseline.unit
    else:
        base_rate, base_unit = float(baseline), baseline_unit or unit
    ratio = f"{value / base_rate:.3g}" if base_rate else "n/a"
    line = (
        f"{name}: {value:,.1f} {unit} | {baseline_name}: {base_rate:,.1f} {base_unit} "
        f"| ratio {ratio}"
    )
    if echo:
        print(line, file=file or sys.stdout, flush=True)
    return line


# --------------------------------------------------------------------------- PostgreSQL


def benchmark_database(stack: contextlib.ExitStack, dsn: str | None) -> tuple[str, str]:
    """(server DSN, DSN of a fresh database on that server, dropped when ``stack`` closes).

    The server is ``dsn``'s, or a throwaway PostgreSQL with durable settings started through
    ``tests.harness`` (and stopped when ``stack`` closes)."""
    harness: Any = importlib.import_module("tests.harness.postgres")
    if not dsn:
        cluster = stack.enter_context(harness.PostgresCluster(durable=True))
        dsn = str(cluster.dsn)
        print(f"started a throwaway PostgreSQL ({harness.describe_dsn(dsn)}, durable settings)")
    database: str = stack.enter_context(harness.temporary_database(dsn))
    return dsn, database


def _scratch_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def _scratch_table(dsn: str, prefix: str, columns: str) -> Iterator[sql.Identifier]:
    """Create a uniquely named table with ``columns`` (SQL text), yield it, drop it."""
    table = sql.Identifier(_scratch_name(prefix))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (" + columns + ")").format(table))
    try:
        yield table
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))


_COMMIT_COLUMNS = "id bigserial PRIMARY KEY, payload text NOT NULL"
_COMMIT_PAYLOAD = "x" * 100


def postgres_commit_rate(dsn: str, duration: float = DEFAULT_DURATION) -> Baseline:
    """Single-row INSERT + COMMIT in a loop on one connection: transactions per second.

    The detail gives the commit latency's p99 and maximum: a disk whose flushes sometimes stall
    for hundreds of milliseconds (as shared cloud volumes do) puts the same stalls into every
    durable write above it, so a latency tail is read against this one."""
    with _scratch_table(dsn, "bench_commit", _COMMIT_COLUMNS) as table:
        insert = sql.SQL("INSERT INTO {} (payload) VALUES (%s)").format(table)
        with psycopg.connect(dsn) as conn:
            latencies: list[float] = []
            start = time.perf_counter()
            end = start + duration
            while (began := time.perf_counter()) < end:
                conn.execute(insert, (_COMMIT_PAYLOAD,))
                conn.commit()
                latencies.append(time.perf_counter() - began)
            elapsed = time.perf_counter() - start
    latencies.sort()
    count = len(latencies)
    detail = (
        f"commit latency p99 {latencies[int(0.99 * (count - 1))] * 1000:.2f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms"
        if latencies
        else ""
    )
    return _baseline(
        "PostgreSQL single-row commit, 1 connection", "commits/s", count, elapsed, detail
    )


def postgres_commit_rate_concurrent(
    dsn: str, writers: int = 8, duration: float = DEFAULT_DURATION
) -> Baseline:
    """Single-row INSERT + COMMIT loops in ``writers`` threads, one connection each: total
    transactions per second (all writers start together once connected)."""
    if writers < 1:
        raise ValueError("writers must be at least 1")
    window: dict[str, float] = {}

    def open_window() -> None:  # runs once, when every writer is connected
        window["start"] = time.perf_counter()
        window["end"] = window["start"] + duration

    barrier = threading.Barrier(writers, action=open_window, timeout=60)

    with _scratch_table(dsn, "bench_commit_conc", _COMMIT_COLUMNS) as table:
        insert = sql.SQL("INSERT INTO {} (payload) VALUES (%s)").format(table)

        def writer() -> tuple[int, float]:
            try:
                conn = psycopg.connect(dsn)
            except BaseException:
                barrier.abort()  # release the others instead of letting them wait
                raise
            with conn:
                barrier.wait()
                end = window["end"]
                count = 0
                while time.perf_counter() < end:
                    conn.execute(insert, (_COMMIT_PAYLOAD,))
                    conn.commit()
                    count += 1
                return count, time.perf_counter()

        with ThreadPoolExecutor(max_workers=writers) as pool:
            results = [f.result() for f in [pool.submit(writer) for _ in range(writers)]]
    total = sum(count for count, _ in results)
    elapsed = max(finished for _, finished in results) - window["start"]
    return _baseline(
        f"PostgreSQL single-row commit, {writers} connections",
        "commits/s",
        total,
        elapsed,
        f"{total / elapsed / writers:,.1f}/s per connection" if elapsed > 0 else "",
    )


def postgres_copy_rate(
    dsn: str, row_bytes: int = 256, duration: float = DEFAULT_DURATION
) -> Baseline:
    """Rows per second loaded with COPY (one connection, ~1 MB per COPY, commit after each).

    Rows are ``row_bytes`` characters of random hex text (hardly compressible, so TOAST
    compression does not flatter large rows), written as one pre-built text-format block, so
    the figure is PostgreSQL's ingest rate rather than Python's row formatting.
    """
    if row_bytes < 1:
        raise ValueError("row_bytes must be at least 1")
    rows_per_copy = max(1, min(10_000, 1_000_000 // row_bytes))
    block = b"".join(
        os.urandom(row_bytes // 2 + 1).hex()[:row_bytes].encode() + b"\n"
        for _ in range(rows_per_copy)
    )
    with _scratch_table(dsn, "bench_copy", "payload text NOT NULL") as table:
        copy_sql = sql.SQL("COPY {} (payload) FROM STDIN").format(table)
        with psycopg.connect(dsn) as conn:
            rows = 0
            start = time.perf_counter()
            end = start + duration
            while time.perf_counter() < end:
                with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                    copy.write(block)
                conn.commit()
                rows += rows_per_copy
            elapsed = time.perf_counter() - start
    mb_per_s = rows * row_bytes / elapsed / 1e6 if elapsed > 0 else 0.0
    return _baseline(
        f"PostgreSQL COPY, {row_bytes}-byte rows",
        "rows/s",
        rows,
        elapsed,
        f"{mb_per_s:,.1f} MB/s, {rows_per_copy:,} rows per COPY",
    )


# --------------------------------------------------------------------------- Ed25519


def ed25519_sign_rate(duration: float = DEFAULT_DURATION, message_bytes: int = 256) -> Baseline:
    """Ed25519 signatures per second (``cryptography``, one thread)."""
    key = Ed25519PrivateKey.generate()
    message = os.urandom(message_bytes)
    count = 0
    start = time.perf_counter()
    end = start + duration
    while time.perf_counter() < end:
        key.sign(message)
        count += 1
    elapsed = time.perf_counter() - start
    return _baseline(f"Ed25519 sign, {message_bytes}-byte message", "signatures/s", count, elapsed)


def ed25519_verify_rate(duration: float = DEFAULT_DURATION, message_bytes: int = 256) -> Baseline:
    """Ed25519 verifications per second (``cryptography``, one thread)."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    message = os.urandom(message_bytes)
    signature = key.sign(message)
    count = 0
    start = time.perf_counter()
    end = start + duration
    while time.perf_counter() < end:
        public.verify(signature, message)  # raises InvalidSignature if it were wrong
        count += 1
    elapsed = time.perf_counter() - start
    return _baseline(
        f"Ed25519 verify, {message_bytes}-byte message", "verifications/s", count, elapsed
    )


# --------------------------------------------------------------------------- Kafka


@contextlib.contextmanager
def _scratch_topic(bootstrap: str, topic: str | None, partitions: int) -> Iterator[str]:
    """Create topic ``topic`` (a unique name if None), yield its name, delete it."""
    from kafka import KafkaAdminClient

    name = topic or _scratch_name("tongban-bench")
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="tongban-bench-admin", request_timeout_ms=15000
    )
    try:
        admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": 1}},
            wait_for_metadata=True,
        )
        try:
            yield name
        finally:
            admin.delete_topics([name])
    finally:
        admin.close()


def _producer(bootstrap: str) -> Any:
    from kafka import KafkaProducer

    # The relay's settings: idempotent, acknowledged by all in-sync replicas.
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="tongban-bench-producer",
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_block_ms=30000,
        request_timeout_ms=30000,
    )


def _produce_for(
    producer: Any,
    topic: str,
    payload: bytes,
    duration: float,
    max_messages: int | None = None,
    max_pending: int = 5_000,
) -> tuple[int, float]:
    """Send ``payload`` as fast as the broker takes it for ``duration`` s, then flush.

    At most ``max_pending`` sends are unacknowledged at a time (kafka-python 3 has no
    ``buffer_memory`` bound), so little is left to flush when the loop ends and the run stays
    close to its duration. Returns (messages acknowledged, seconds including the flush); a
    failed send raises.
    """
    pending: deque[Any] = deque()
    count = 0
    start = time.perf_counter()
    end = start + duration
    while time.perf_counter() < end and (max_messages is None or count < max_messages):
        pending.append(producer.send(topic, value=payload))
        count += 1
        if len(pending) >= max_pending:
            pending.popleft().get(timeout=60)
    producer.flush(timeout=60)
    for future in pending:
        future.get(timeout=60)
    return count, time.perf_counter() - start


def kafka_produce_rate(
    bootstrap: str,
    topic: str | None = None,
    message_bytes: int = 256,
    duration: float = DEFAULT_DURATION,
    partitions: int = 3,
) -> Baseline:
    """Messages per second through one idempotent producer (``acks='all'``, linger 5 ms).

    Uses a scratch topic named ``topic`` (unique if None) that it creates and deletes.
    """
    payload = os.urandom(message_bytes)
    with _scratch_topic(bootstrap, topic, partitions) as name:
        producer = _producer(bootstrap)
        try:
            count, elapsed = _produce_for(producer, name, payload, duration)
        finally:
            producer.close(timeout=10)
    return _baseline(
        f"Kafka produce, {message_bytes}-byte messages, idempotent, acks=all",
        "messages/s",
        count,
        elapsed,
        f"{partitions} partitions",
    )


def kafka_consume_rate(
    bootstrap: str,
    topic: str | None = None,
    message_bytes: int = 256,
    duration: float = DEFAULT_DURATION,
    partitions: int = 3,
    max_messages: int = 500_000,
) -> Baseline:
    """Messages per second read by one consumer from the beginning of a filled topic.

    Fills a scratch topic (``topic``, unique if None; created and deleted here) for up to
    ``duration`` s or ``max_messages``, untimed; then times one consumer (partitions assigned,
    no group) reading all of it back, bounded by ``4 * duration + 10`` s.
    """
    from kafka import KafkaConsumer, TopicPartition

    payload = os.urandom(message_bytes)
    with _scratch_topic(bootstrap, topic, partitions) as name:
        producer = _producer(bootstrap)
        try:
            filled, _ = _produce_for(producer, name, payload, duration, max_messages)
        finally:
            producer.close(timeout=10)

        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id="tongban-bench-consumer",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            consumer.assign([TopicPartition(name, p) for p in range(partitions)])
            consumer.seek_to_beginning()
            count = 0
            start = time.perf_counter()
            deadline = start + 4 * duration + 10
            while count < filled and time.perf_counter() < deadline:
                for records in consumer.poll(timeout_ms=500, max_records=10_000).values():
                    count += len(records)
            elapsed = time.perf_counter() - start
        finally:
            consumer.close(autocommit=False)
    detail = f"{partitions} partitions"
    if count < filled:
        detail += f"; stopped at the time bound, {count:,} of {filled:,} read"
    return _baseline(
        f"Kafka consume, {message_bytes}-byte messages", "messages/s", count, elapsed, detail
    )


@dataclass(frozen=True)
class LatencyBaseline(Baseline):
    """A rate with the latency distribution of the same run (milliseconds)."""

    p50_ms: float = float("nan")
    p99_ms: float = float("nan")


def _percentile_ms(ordered: Sequence[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return 1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def kafka_round_trip(
    bootstrap: str,
    message_bytes: int = 256,
    duration: float = DEFAULT_DURATION,
    partitions: int = 3,
    rate: float = 0.0,
    max_pending: int = 2_000,
) -> LatencyBaseline:
    """Messages per second from one idempotent producer (``acks='all'``) to one member of a
    consumer group that commits its offsets after each poll, with the produce → consume latency.

    The raw counterpart of a relay hop: the producer's and the consumer's settings are the
    relay's, and the consumer commits synchronously, as the relay's does, after each poll. The
    consumer joins its group (a scratch topic, created and deleted here) before the first send.
    ``rate`` 0: as fast as the broker takes messages (at most ``max_pending`` unacknowledged);
    ``rate`` > 0: sends at fixed times ``k / rate`` (open loop; latency counted from each
    message's scheduled time, so a producer that falls behind shows in the figures). Each
    message carries its scheduled time in its first 8 bytes and is padded to ``message_bytes``.
    The rate counts messages consumed, from the first send to the last one consumed.
    """
    import struct

    from kafka import KafkaConsumer

    if message_bytes < 8:
        raise ValueError("message_bytes must be at least 8 (the send time)")
    padding = os.urandom(message_bytes - 8)
    with _scratch_topic(bootstrap, None, partitions) as name:
        consumer = KafkaConsumer(
            name,
            bootstrap_servers=bootstrap,
            client_id="tongban-bench-round-trip",
            group_id=_scratch_name("tongban-bench-group"),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,  # Tansu: a join takes about half of it
            heartbeat_interval_ms=2000,
            fetch_max_wait_ms=50,  # the relay's (hub.relay.node.FETCH_MAX_WAIT_MS)
        )
        latencies: list[float] = []
        produced: dict[str, int] = {}
        first_send: dict[str, float] = {}
        last_consumed = 0.0
        try:
            deadline = time.perf_counter() + 30
            while not consumer.assignment():
                consumer.poll(timeout_ms=200)
                if time.perf_counter() > deadline:
                    raise RuntimeError("the consumer did not join its group in 30 s")
            producer = _producer(bootstrap)

            def produce() -> None:
                pending: deque[Any] = deque()
                count = 0
                start = time.perf_counter()
                first_send["at"] = start
                end = start + duration
                while (now := time.perf_counter()) < end:
                    scheduled = now
                    if rate > 0:
                        scheduled = start + count / rate
                        if scheduled >= end:
                            break
                        if scheduled > now:
                            time.sleep(scheduled - now)
                    message = struct.pack(">d", scheduled) + padding
                    pending.append(producer.send(name, value=message))
                    count += 1
                    if len(pending) >= max_pending:
                        pending.popleft().get(timeout=60)
                producer.flush(timeout=60)
                for future in pending:
                    future.get(timeout=60)
                produced["count"] = count

            sender = threading.Thread(target=produce, name="round-trip-producer")
            sender.start()
            try:
                give_up = time.perf_counter() + 4 * duration + 30
                while time.perf_counter() < give_up:
                    polled = consumer.poll(timeout_ms=100, max_records=500)
                    if polled:
                        now = time.perf_counter()
                        for records in polled.values():
                            for record in records:
                                sent_at = struct.unpack(">d", record.value[:8])[0]
                                latencies.append(now - sent_at)
                        last_consumed = now
                        consumer.commit()
                    if "count" in produced and len(latencies) >= produced["count"]:
                        break
            finally:
                sender.join()
                producer.close(timeout=10)
        finally:
            consumer.close(autocommit=False)
    count = len(latencies)
    elapsed = last_consumed - first_send.get("at", last_consumed)
    latencies.sort()
    p50, p99 = _percentile_ms(latencies, 0.5), _percentile_ms(latencies, 0.99)
    offered = f"{rate:,.0f} messages/s offered" if rate > 0 else "as fast as it takes them"
    detail = (
        f"{offered}, {partitions} partitions; produce → consume p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )
    if count < produced.get("count", 0):
        detail += f"; stopped at the time bound, {count:,} of {produced['count']:,} consumed"
    return LatencyBaseline(
        f"Kafka produce → consume (group, commit per poll), {message_bytes}-byte messages",
        count / elapsed if elapsed > 0 else 0.0,
        "messages/s",
        count,
        elapsed,
        detail,
        p50_ms=p50,
        p99_ms=p99,
    )


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.baselines",
        description="Measure the raw limits of this machine (PostgreSQL, Ed25519, Kafka).",
    )
    parser.add_argument(
        "--dsn",
        help="libpq connection string of a PostgreSQL server (default: start a throwaway one)",
    )
    parser.add_argument(
        "--kafka", help="host:port of a Kafka-protocol broker (default: start a Tansu broker)"
    )
    parser.add_argument(
        "--duration", type=float, default=DEFAULT_DURATION, help="seconds per measurement"
    )
    parser.add_argument("--writers", type=int, default=8, help="threads for concurrent commits")
    parser.add_argument("--row-bytes", type=int, default=256, help="row size for COPY")
    parser.add_argument("--message-bytes", type=int, default=256, help="Kafka message size")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-crypto", action="store_true")
    parser.add_argument("--skip-kafka", action="store_true")
    return parser


def _harness(module: str) -> Any:
    """Import ``tests.harness.<module>`` (run from the project root).

    Imported by name rather than statically: ``tests`` is not a regular package, so
    ``mypy tests/harness benchmarks`` would see those files under two module names.
    """
    return importlib.import_module(f"tests.harness.{module}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    results: list[Baseline] = []

    def report(result: Baseline) -> None:
        results.append(result)
        print(f"  {result}", flush=True)

    with contextlib.ExitStack() as stack:
        if not args.skip_postgres:
            dsn: str = args.dsn
            if not dsn:
                pg = _harness("postgres")
                cluster = stack.enter_context(pg.PostgresCluster(durable=True))
                dsn = cluster.dsn
                print(f"started a throwaway PostgreSQL ({pg.describe_dsn(dsn)}, durable settings)")
            print("PostgreSQL:", flush=True)
            report(postgres_commit_rate(dsn, args.duration))
            report(postgres_commit_rate_concurrent(dsn, args.writers, args.duration))
            report(postgres_copy_rate(dsn, args.row_bytes, args.duration))
        if not args.skip_crypto:
            print("Ed25519:", flush=True)
            report(ed25519_sign_rate(args.duration))
            report(ed25519_verify_rate(args.duration))
        if not args.skip_kafka:
            bootstrap: str = args.kafka
            if not bootstrap:
                broker = stack.enter_context(_harness("broker").TansuBroker())
                bootstrap = broker.bootstrap
                print(f"started a throwaway Tansu broker at {bootstrap}")
            print("Kafka:", flush=True)
            report(
                kafka_produce_rate(
                    bootstrap, message_bytes=args.message_bytes, duration=args.duration
                )
            )
            report(
                kafka_consume_rate(
                    bootstrap, message_bytes=args.message_bytes, duration=args.duration
                )
            )
            report(
                kafka_round_trip(
                    bootstrap, message_bytes=args.message_bytes, duration=args.duration
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

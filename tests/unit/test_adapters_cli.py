"""The adapters' command line: one line per mistake (never a traceback), a closed stdout is not
an error, and every environment variable belongs to the adapters' families."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import adapters
from adapters.cli import EXIT_BROKEN_PIPE, VARIABLE_FAMILIES, _connection, build_parser, main
from adapters.errors import ConfigError

ROOT = Path(adapters.__file__).resolve().parents[1]
HALL = "hn-shatou-v201"
REGION = "430902104201"
REGISTER_HEADER = "登记编号,申请人,身份证号码,联系电话,事项编码,办件类型,收件日期,状态\n"


@pytest.fixture
def signing_key(tmp_path: Path) -> Path:
    path = tmp_path / "hall.signing.key"
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.fixture
def hall(tmp_path: Path, signing_key: Path) -> list[str]:
    """The options of a hall, an outbox and nothing else (no node is ever called)."""
    return ["--hall-id", HALL, "--region", REGION, "--signing-key", str(signing_key),
            "--db", str(tmp_path / "room.sqlite3")]  # fmt: skip


def run(argv: list[str], capsys: pytest.CaptureFixture[str], **env: str) -> tuple[int, str, str]:
    code = main(argv, environ=env)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def mistakes(tmp_path: Path, hall: list[str], signing_key: Path) -> Iterator[tuple[str, list[str]]]:
    """(what the one line must say, argv) for ordinary mistakes an operator makes."""
    register = tmp_path / "register.csv"
    register.write_text(REGISTER_HEADER, encoding="utf-8")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an outbox\n" * 200, encoding="utf-8")
    connect = ["--hall-id", HALL, "--region", REGION, "--signing-key", str(signing_key),
               "--target", "localhost:1", "--insecure"]  # fmt: skip
    yield "required: adapter", []
    yield "invalid choice: 'fly'", ["fly"]
    yield "required: village_command", ["village"]
    yield "--db or TONGBAN_VILLAGE_DB", ["village", "status"]
    yield "--hall-id or TONGBAN_ADAPTER_HALL_ID", ["village", "status", "--db", "x.sqlite3"]
    yield "12-digit code, got '4309'", ["village", "status", *hall, "--region", "4309"]
    yield "pad a short code with zeros: 430902104000", [
        "village", "status", *hall, "--region", "430902104"]  # fmt: skip
    yield "cannot load signing key", [
        "village", "status", *hall, "--signing-key", str(tmp_path / "missing.key")]  # fmt: skip
    yield "--node or TONGBAN_ADAPTER_NODE", ["village", "status", *hall, "--node", "tongban 43"]
    yield "cannot be used as an outbox", ["village", "status", *hall, "--db", str(notes)]
    yield "status: unknown status 'bogus'", ["village", "status", *hall, "--state", "bogus"]
    yield "invalid int value: 'x'", ["village", "retry", "x", *hall]
    yield "seq: no command #99", ["village", "retry", "99", *hall]
    yield "action: unknown action 'fly'", ["village", "act", "fly", "--ref", "A", *hall]
    yield "ref: unknown reference 'nope'", ["village", "act", "accept", "--ref", "nope", *hall]
    yield "--json: for accept", [
        "village", "act", "accept", "--case-id", str(uuid.uuid4()), "--json", "{bad", *hall]  # fmt: skip
    yield "--material: 'scan.pdf': use NAME=FILE", [
        "village", "submit", *hall, "--item", "200101001000", "--name", "甲", "--id-number",
        "11010519491231002X", "--phone", "1", "--material", "scan.pdf"]  # fmt: skip
    yield "material: '身份证': cannot read", [
        "village", "submit", *hall, "--item", "200101001000", "--name", "甲", "--id-number",
        "11010519491231002X", "--phone", "1", "--material", f"身份证={tmp_path / 'no.jpg'}"]  # fmt: skip
    yield "idempotency_key: 'short'", [
        "village", "act", "accept", "--case-id", str(uuid.uuid4()), "--idem-key", "short", *hall]  # fmt: skip
    yield "--target or TONGBAN_ADAPTER_TARGET", ["village", "forward", "--once", *hall]
    yield "--max-backoff", ["village", "forward", "--once", *hall, "--max-backoff", "0.1"]
    yield "cannot read", ["import", str(tmp_path / "none.csv"), *connect]
    yield "save it as .xlsx", ["import", str(tmp_path / "old.xls"), *connect]
    yield "invalid choice: 'yesterday'", ["import", str(register), "--issued-at", "yesterday"]
    yield (
        "--retries or TONGBAN_ADAPTER_RETRIES",
        ["import", str(register), *connect, "--retries", "9"],
    )
    yield "--retries: '2.5' is not a whole number", [
        "import", str(register), *connect, "--retries", "2.5"]  # fmt: skip
    yield (
        "--timeout: 'soon' is not a number",
        ["import", str(register), *connect, "--timeout", "soon"],
    )
    yield "--listen: 'nowhere'", ["gateway", "--listen", "nowhere", *connect]
    yield "mutual TLS needs --ca, --cert, --key", [
        "gateway", "--listen", "127.0.0.1:0", *connect[:-1]]  # fmt: skip


def test_ordinary_mistakes_are_one_line_never_a_traceback(
    tmp_path: Path, hall: list[str], signing_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for expected, argv in mistakes(tmp_path, hall, signing_key):
        code, out, err = run(argv, capsys)
        lines = err.strip().splitlines()
        assert code == 2, (argv, err)
        assert "Traceback" not in err and len(lines) == 1, (argv, err)
        assert expected in lines[0], (expected, lines[0])
        assert lines[0].startswith("tongban adapter"), lines[0]
        assert out == "", (argv, out)


def test_a_bad_log_level_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["village", "status"], capsys, TONGBAN_LOG_LEVEL="LOUD")
    assert code == 2 and "TONGBAN_LOG_LEVEL='LOUD'" in err and "Traceback" not in err


def test_help_is_not_a_mistake(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["village", "--help"], capsys)
    assert code == 0 and "forward" in out and err == ""


def test_status_into_a_closed_pipe_exits_141_without_a_traceback(
    hall: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tongban adapter village status --json | head -1``: the reader is gone before the
    output is written; the command ends quietly with 141, as ``tongban`` does."""
    assert main(["village", "act", "accept", "--case-id", str(uuid.uuid4()), *hall], {}) == 0
    capsys.readouterr()
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (head) has exited
    closed = open(write_end, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    monkeypatch.setattr(sys, "stdout", closed)
    try:
        assert main(["village", "status", "--json", *hall], {}) == EXIT_BROKEN_PIPE == 141
    finally:
        closed.close()  # its buffer goes to /dev/null now: no second BrokenPipeError
    err = capsys.readouterr().err
    assert err == ""


def test_a_closed_pipe_in_a_real_process(hall: list[str]) -> None:
    """The same in a real process, whose interpreter flushes stdout on the way out: the reading
    end is closed before the child (a fresh Python, ~100 ms to start) writes anything."""
    assert main(["village", "act", "accept", "--case-id", str(uuid.uuid4()), *hall], {}) == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "adapters.cli", "village", "status", "--json", *hall],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={key: value for key, value in os.environ.items() if not key.startswith("TONGBAN_")},
    )
    assert process.stdout is not None
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert process.returncode == EXIT_BROKEN_PIPE, err.decode()
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()


class Recording(dict[str, str]):
    """An environment that records every variable looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)


def test_every_variable_belongs_to_an_adapter_family(capsys: pytest.CaptureFixture[str]) -> None:
    env = Recording({})
    main(["village", "status"], env)  # builds every parser, reads the log level, then stops
    capsys.readouterr()
    assert {"TONGBAN_ADAPTER_NODE", "TONGBAN_ADAPTER_TARGET", "TONGBAN_LOG_LEVEL"} <= env.read
    for variable in env.read:
        assert variable.startswith(VARIABLE_FAMILIES), variable
    assert "TONGBAN_NODE" not in env.read
    # No variable is read anywhere else in the adapters, and none outside the families is named.
    for path in (ROOT / "adapters").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "os.environ" not in source or path.name == "cli.py", path.name
        for variable in re.findall(r"TONGBAN_[A-Z_]+", source):
            node_variable = variable == "TONGBAN_DEFERRED_MAX_AGE_DAYS"  # the node's, in text
            assert node_variable or variable.startswith(VARIABLE_FAMILIES), (path.name, variable)


def test_the_node_origin_variable() -> None:
    base = {"TONGBAN_ADAPTER_HALL_ID": "h", "TONGBAN_ADAPTER_REGION": "430902104000"}

    def node(env: dict[str, str], *argv: str) -> str:
        return _connection(build_parser(env).parse_args(list(argv)), "test").node

    assert node({**base, "TONGBAN_ADAPTER_NODE": "tongban/4309"}, "village", "status") == (
        "tongban/4309"
    )
    assert node({**base, "TONGBAN_NODE": "tongban/4309"}, "village", "status") == ""
    with pytest.raises(ConfigError, match="TONGBAN_ADAPTER_NODE"):
        _connection(
            build_parser(base).parse_args(["gateway", "--node", "tongban 43"]), "t"
        ).signing_credentials()

"""Ordinary mistakes give one line ``tongban: ...`` and a non-zero exit, never a traceback.

Each mistake runs through ``hub.cli.main()`` as ``tongban`` would run it: bad arguments, missing,
unreadable or wrong files, an ``--out`` that exists, a data directory without keys. A closed pipe
and Ctrl-C run in a subprocess, as they happen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.cli import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, main
from ledger import Signer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data directory as the only configuration (no other TONGBAN_ variable)."""
    for name in list(os.environ):
        if name.startswith("TONGBAN_"):
            monkeypatch.delenv(name)
    directory = tmp_path / "node"
    monkeypatch.setenv("TONGBAN_DATA_DIR", str(directory))
    return directory


def _pem(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _files(tmp_path: Path) -> dict[str, Path]:
    """Files a user might hand to the wrong command."""
    files = tmp_path / "files"
    files.mkdir()
    signing = Ed25519PrivateKey.generate()
    made = {
        "existing": files / "existing.key",
        "text": files / "notes.txt",
        "binary": files / "blob.bin",
        "public": files / "public.pem",
        "ec": files / "ec.key",
        "x25519": files / "x25519.key",
        "encrypted": files / "encrypted.key",
        "broken": files / "broken.key",
        "dir": files / "a-directory",
        "missing": files / "missing",
    }
    made["existing"].write_bytes(_pem(signing))
    made["text"].write_text("会议记录\n")
    made["binary"].write_bytes(bytes(range(256)))
    made["public"].write_bytes(
        signing.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    made["ec"].write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    made["x25519"].write_bytes(_pem(x25519.X25519PrivateKey.generate()))
    made["encrypted"].write_bytes(
        signing.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    made["broken"].write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    made["dir"].mkdir()
    return made


def _mistakes(f: dict[str, Path], log_key: str) -> list[list[str]]:
    return [
        # arguments
        [],
        ["nosuch"],
        ["hall"],
        ["pki"],
        ["keys"],
        ["audit"],
        ["hall", "show"],
        ["hall", "register", "--hall-id", "x"],
        ["serve", "--workers", "many"],
        ["pki", "issue", "--role", "mayor", "--name", "x", "--out", "d"],
        ["demo", "--pause", "soon"],
        ["regions"],
        ["regions", "4309021042"],
        ["regions", "990000"],
        ["erase", "--case", "x", "--id-number", "y", "--reason", "z"],
        # the catalogue file
        ["catalogue", "--file", str(f["missing"])],
        ["catalogue", "--file", str(f["binary"])],
        ["catalogue", "--file", str(f["text"])],
        ["catalogue", "--file", str(f["dir"])],
        # signing keys
        ["pki", "signing-key", "--out", str(f["existing"])],
        ["pki", "signing-key", "--out", str(f["existing"] / "below" / "a.key")],
        ["pki", "show-key", str(f["missing"])],
        ["pki", "show-key", str(f["dir"])],
        ["pki", "show-key", str(f["text"])],
        ["pki", "show-key", str(f["binary"])],
        ["pki", "show-key", str(f["public"])],
        ["pki", "show-key", str(f["ec"])],
        ["pki", "show-key", str(f["x25519"])],
        ["pki", "show-key", str(f["encrypted"])],
        ["pki", "show-key", str(f["broken"])],
        # the CA
        ["pki", "issue", "--dir", str(f["missing"]), "--role", "hall", "--name", "hn-x",
         "--out", str(f["dir"])],
        # the auditor's inputs
        ["audit", "verify"],
        ["audit", "verify", "--log-key", "not a key"],
        ["audit", "verify", "--log-key-file", str(f["missing"])],
        ["audit", "verify", "--log-key-file", str(f["binary"])],
        ["audit", "verify", "--log-key-file", str(f["dir"])],
        ["audit", "verify", "--log-key", log_key, "--trusted-checkpoint", str(f["missing"])],
        ["audit", "verify", "--log-key", log_key],  # no node store here
        ["audit", "case", "not-a-uuid", "--log-key", log_key],
        # a data directory without keys
        ["hall", "list"],
        ["hall", "show", "hn-shatou-town"],
        ["ledger", "key"],
        ["ledger", "export", str(f["dir"])],
        ["keys", "rotate"],
        ["erase", "--case", "x", "--reason", "申请人要求"],
    ]  # fmt: skip


def test_ordinary_mistakes_give_one_tongban_line_and_a_non_zero_exit(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _files(tmp_path)
    existing = files["existing"].read_bytes()
    log_key = Signer.generate("tongban/43").verifier_key()
    for argv in _mistakes(files, log_key):
        code = main(argv)
        captured = capsys.readouterr()
        assert code != 0, argv
        assert "Traceback" not in captured.err, (argv, captured.err)
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("tongban: "), (argv, captured.err)
        assert captured.out == "", (argv, captured.out)
    assert files["existing"].read_bytes() == existing  # never overwritten
    assert not data_dir.exists()  # no mistake created the data directory


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["pki", "signing-key", "--out", "{existing}"], "exists already"),
        (["pki", "show-key", "{missing}"], "no such file or directory (check the path)"),
        (["pki", "show-key", "{dir}"], "give a file, not a directory"),
        (["pki", "show-key", "{public}"], "not a PKCS#8 PEM key"),
        (["pki", "show-key", "{ec}"], "not an Ed25519 key (EC)"),
        (["pki", "show-key", "{encrypted}"], "an encrypted key"),
        (["hall", "list"], "tongban init"),
        (["hall", "show"], "see `tongban hall show --help`"),
    ],
)
def test_the_line_says_what_is_wrong_and_what_to_do(
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    says: str,
) -> None:
    files = {name: str(path) for name, path in _files(tmp_path).items()}
    assert main([arg.format(**files) for arg in argv]) != 0
    assert says in capsys.readouterr().err


def test_an_unreadable_file_says_so(
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (Tests may run as root, who reads any file: the refusal is the operating system's.)
    key = _files(tmp_path)["existing"]

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert main(["pki", "show-key", str(key)]) == 2
    err = capsys.readouterr().err
    assert err == f"tongban: {key}: permission denied (check its permissions, or run as the " \
        "user that owns it)\n"  # fmt: skip


def test_show_key_prints_the_key_that_signing_key_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "halls" / "hn-shatou-town.signing.key"
    assert main(["pki", "signing-key", "--out", str(out)]) == 0
    made = dict(line.rsplit(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert main(["pki", "show-key", str(out)]) == 0
    shown = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert shown == {
        "public key": made["public key (register it with the hall)"],
        "key id": made["key id"],
    }
    assert main(["pki", "show-key", str(out), "--json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out) == {
        "file": str(out),
        "public_key": shown["public key"],
        "key_id": shown["key id"],
    }
    from hub.domain.hall import key_id

    assert key_id(shown["public key"]) == shown["key id"]


def test_usage_and_configuration_mistakes_exit_2(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/operations.md "Exit codes": a usage or configuration mistake is 2."""
    assert main(["audit", "case"]) == 2  # a missing argument
    assert main(["no-such-command"]) == 2
    monkeypatch.setenv("TONGBAN_LISTEN_ADRESS", "x")  # mistyped, refused by name
    assert main(["hall", "list"]) == 2
    assert "TONGBAN_LISTEN_ADRESS" in capsys.readouterr().err


def test_ctrl_c_is_one_line_and_exit_130() -> None:
    # A real SIGINT, delivered while the command runs (in the middle of loading the regions).
    probe = (
        "import os, signal, sys\n"
        "from hub import cli\n"
        "from hub.domain import regions\n"
        "regions.RegionRegistry.load_default = lambda: os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.exit(cli.main(['regions', '43']))\n"
    )
    result = _python(probe)
    assert result.returncode == EXIT_INTERRUPTED == 128 + signal.SIGINT
    assert result.stderr == "tongban: interrupted\n"
    assert result.stdout == ""


def test_ctrl_c_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub.domain import regions

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(regions.RegionRegistry, "load_default", interrupted)
    assert main(["regions", "43"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "tongban: interrupted\n"


@pytest.mark.parametrize(
    "argv",
    [["catalogue"], ["catalogue", "--json"], ["regions", "43"], ["regions", "43", "--json"]],
)
def test_a_closed_pipe_ends_quietly(argv: list[str]) -> None:
    """``tongban regions 43 | head -1``: the reader is gone before anything is written."""
    read, write = os.pipe()
    os.close(read)  # every write to the pipe now fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "hub.cli", *argv],
            stdout=write,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=_env(),
            text=True,
            check=False,
        )
    finally:
        os.close(write)
    assert result.returncode == EXIT_BROKEN_PIPE == 128 + signal.SIGPIPE
    assert result.stderr == ""  # no traceback, no "Exception ignored"


def test_a_reader_that_stops_early_ends_it_quietly() -> None:
    """The real thing: ``| head -1`` on a document longer than a pipe's buffer (64 KiB)."""
    with subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "catalogue", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=_env(),
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()
        err = process.stderr.read()
        code = process.wait(timeout=60)
    assert first == b"{\n"
    assert code in (0, EXIT_BROKEN_PIPE)  # 0 if it wrote everything before the reader left
    assert b"Traceback" not in err and err == b""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )


def test_adapter_mistakes_are_the_adapters_one_line(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tongban adapter ...`` reports through the adapters' own command line, the same way."""
    for argv in (
        ["adapter", "nosuch"],
        ["adapter", "village", "retry", "seven"],
        ["adapter", "import", str(tmp_path / "missing.csv")],
    ):
        code = main(argv)
        captured = capsys.readouterr()
        assert code != 0, argv
        assert "Traceback" not in captured.err, (argv, captured.err)
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("tongban adapter"), (argv, captured.err)

"""``tongban audit`` as an outside auditor runs it: read-only, with the log's public key alone.

It creates nothing (not even in an empty or mistyped data directory), decrypts nothing, imports
no code that writes, keeps its own state only where told (``--state``), and reports a rollback
after the node's database is restored from an older backup.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub.settings import Settings
from tests.harness.inprocess import InProcessNode

ROOT = Path(__file__).resolve().parents[2]
TONGBAN = [sys.executable, "-m", "hub.cli"]


def _tongban(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}
    env["TONGBAN_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [*TONGBAN, *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    """A node's data directory with a small integrated log."""
    settings = Settings(data_dir=tmp_path / "node")
    node = InProcessNode.start(settings)
    try:
        village = node.add_hall("v-room", "430902104201")
        for number in range(3):
            node.submit(village, key=f"key-audit-cli-{number}")
        node.integrator().catch_up()
    finally:
        node.close()
    return settings.data_dir


def _log_key(node_dir: Path) -> str:
    return (node_dir / "log.vkey").read_text().strip()


def test_an_auditor_creates_nothing_in_an_empty_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    from ledger import Signer

    key = Signer.generate("tongban/43").verifier_key()
    result = _tongban(empty, "audit", "verify", "--log-key", key)
    assert result.returncode != 0
    assert "no node store at" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(empty.iterdir()) == []


def test_audit_verify_reads_only_and_keeps_state_only_where_told(
    node_dir: Path, tmp_path: Path
) -> None:
    before = {p: p.stat().st_mtime_ns for p in node_dir.rglob("*") if p.is_file()}
    result = _tongban(node_dir, "audit", "verify", "--log-key", _log_key(node_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: every checkpoint" in result.stdout
    after = {p: p.stat().st_mtime_ns for p in node_dir.rglob("*") if p.is_file()}
    assert after == before  # not a byte written, not a file created
    state = tmp_path / "auditor" / "state"
    state.parent.mkdir()
    result = _tongban(node_dir, "audit", "verify", "--log-key", _log_key(node_dir),
                      "--state", str(state))  # fmt: skip
    assert result.returncode == 0 and state.read_bytes().startswith(b"tongban/43\n")


def test_the_auditor_imports_no_code_that_writes(node_dir: Path) -> None:
    probe = (
        "import sys\n"
        "from hub.cli import main\n"
        f"code = main(['audit', 'verify', '--log-key', {_log_key(node_dir)!r}])\n"
        "writers = [m for m in ('hub.application.hub', 'hub.bootstrap', 'hub.integrity.integrator',"
        " 'eventsourcing.application') if m in sys.modules]\n"
        "print('WRITERS', writers)\n"
        "sys.exit(code)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}
    env["TONGBAN_DATA_DIR"] = str(node_dir)
    result = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT,
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WRITERS []" in result.stdout


def test_a_restored_backup_fails_the_audit_of_whoever_verified_the_newer_log(
    node_dir: Path, tmp_path: Path
) -> None:
    store = node_dir / "events.sqlite3"
    backup = tmp_path / "backup.sqlite3"
    with sqlite3.connect(store) as live, sqlite3.connect(backup) as copy:
        live.backup(copy)
    node = InProcessNode.start(Settings(data_dir=node_dir))
    try:
        village = node.add_hall("v-more", "430902104201")
        node.submit(village, key="key-after-backup")
        node.integrator().catch_up()
    finally:
        node.close()
    state = tmp_path / "state"
    assert _tongban(node_dir, "audit", "verify", "--log-key", _log_key(node_dir),
                    "--state", str(state)).returncode == 0  # fmt: skip
    for suffix in ("-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, store)  # the operator restores the older backup
    verified = state.read_bytes()
    for _again in range(2):  # a failed audit leaves the state as it was: the next fails too
        result = _tongban(node_dir, "audit", "verify", "--log-key", _log_key(node_dir),
                          "--state", str(state))  # fmt: skip
        assert result.returncode == 1
        assert "rollback" in result.stdout and "restored backup" in result.stdout
        assert state.read_bytes() == verified
    # The node refuses to serve on the restored store, saying what happened.
    refused = _tongban(node_dir, "ledger", "integrate")
    assert refused.returncode != 0
    assert "restored from an older backup" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_auditor_takes_the_nodes_clock_window(tmp_path: Path) -> None:
    """A hall whose clock runs four minutes ahead signs a 收件: the node (window 300 s) takes it,
    so its record's time precedes the signed time by four minutes. Told the node's window is a
    minute (its setting, or ``--clock-window-s``), the auditor names that receipt as
    backdated: what it checks is the window the node runs with."""
    settings = Settings(data_dir=tmp_path / "node")
    node = InProcessNode.start(settings)
    try:
        village = node.add_hall("v-fast-clock", "430902104201")
        node.submit(
            village, key="key-fast-clock", issued_at=datetime.now(UTC) + timedelta(minutes=4)
        )
        node.integrator().catch_up()
    finally:
        node.close()
    key = _log_key(settings.data_dir)
    assert _tongban(settings.data_dir, "audit", "verify", "--log-key", key).returncode == 0
    narrow = _tongban(
        settings.data_dir, "audit", "verify", "--log-key", key, "--clock-window-s", "60"
    )
    assert narrow.returncode == 1, narrow.stdout + narrow.stderr
    assert "backdated receipt" in narrow.stdout and "60 s from its clock" in narrow.stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}
    env.update(TONGBAN_DATA_DIR=str(settings.data_dir), TONGBAN_CLOCK_WINDOW_S="60")
    from_setting = subprocess.run([*TONGBAN, "audit", "verify", "--log-key", key], env=env,
                                  cwd=ROOT, capture_output=True, text=True, check=False)  # fmt: skip
    assert from_setting.returncode == 1 and "backdated receipt" in from_setting.stdout
    zero = _tongban(settings.data_dir, "audit", "verify", "--log-key", key, "--clock-window-s", "0")
    assert zero.returncode == 2 and "--clock-window-s 0: must be positive" in zero.stderr


def test_ordinary_mistakes_give_one_line_not_a_traceback(node_dir: Path, tmp_path: Path) -> None:
    for args in (
        ["audit", "case", "not-a-uuid", "--log-key", _log_key(node_dir)],
        ["audit", "verify"],
        ["audit", "verify", "--log-key", "not a key"],
        ["audit", "verify", "--log-key", _log_key(node_dir), "--trusted-checkpoint",
         str(tmp_path / "missing")],
    ):  # fmt: skip
        result = _tongban(node_dir, *args)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert result.stderr.startswith("tongban:"), (args, result.stderr)
    # Any other command in a data directory without keys names `tongban init`.
    result = _tongban(tmp_path / "mistyped", "ledger", "key")
    assert result.returncode != 0 and "tongban init" in result.stderr
    assert not (tmp_path / "mistyped" / "secrets").exists()


def test_the_operators_commands_from_the_cli(tmp_path: Path) -> None:
    """hall register/rotate-key/retire/show, erase by case and by person, keys rotate — and the
    log still verifies with the public key alone afterwards."""
    data = tmp_path / "node"
    assert _tongban(data, "init").returncode == 0
    again = _tongban(data, "init")
    assert again.returncode == 0 and "already initialised" in again.stdout
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from hub.bootstrap import public_key_b64

    first, second = (public_key_b64(Ed25519PrivateKey.generate()) for _ in range(2))
    steps = [
        ["hall", "register", "--hall-id", "hn-cli-hall", "--name", "命令行窗口",
         "--region", "430902000000", "--window", "综合窗口", "--public-key", first],
        ["hall", "rotate-key", "--hall-id", "hn-cli-hall", "--public-key", second],
        ["hall", "show", "hn-cli-hall"],
        ["hall", "retire", "--hall-id", "hn-cli-hall", "--reason", "机构撤并"],
    ]  # fmt: skip
    for args in steps:
        result = _tongban(data, *args)
        assert result.returncode == 0, (args, result.stderr)
    assert "retired" in result.stdout and second in result.stdout and first in result.stdout
    # Cases of one person, taken in through the application (as a node would over gRPC).
    node = InProcessNode.start(Settings(data_dir=data))
    try:
        village = node.add_hall("v-room", "430902104201")
        one = node.submit(village, key="key-cli-erase-1").case_id
        node.submit(village, key="key-cli-erase-2")
    finally:
        node.close()
    erased = _tongban(data, "erase", "--case", str(one), "--reason", "申请人要求")
    assert erased.returncode == 0 and str(one) in erased.stdout
    from tests.harness.inprocess import APPLICANT

    person = _tongban(data, "erase", "--id-number", APPLICANT.id_number, "--reason", "申请人要求")
    assert person.returncode == 0 and person.stdout.count("erased the personal data") == 1
    assert APPLICANT.id_number not in person.stdout + person.stderr
    rotated = _tongban(data, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    ring = (data / "secrets" / "cipher-keys").read_text().split()
    assert len(ring[0].split(",")) == 1 and ring[1] in rotated.stdout  # the old key is gone
    assert _tongban(data, "ledger", "integrate").returncode == 0
    audit = _tongban(data, "audit", "verify", "--log-key", _log_key(data))
    assert audit.returncode == 0, audit.stdout
    assert "2 cases (or appointments) have erased personal data" in audit.stdout


def test_the_key_ring_from_the_environment_is_rotated_with_keys_rewrap(tmp_path: Path) -> None:
    """docs/operations.md, "Rotating the at-rest key" with the ring in TONGBAN_CIPHER_KEYS: add
    a key there, make it TONGBAN_CIPHER_ACTIVE_KEY, run `tongban keys rewrap`, then remove the
    old key. `keys rotate` refuses to edit a ring it does not own, and a node without a key that
    still wraps data refuses to start, naming it."""
    from hub.application.cipher import new_key, new_key_id
    from tests.harness.inprocess import InProcessNode

    data = tmp_path / "node"
    node = InProcessNode.start(Settings(data_dir=data))
    try:
        node.submit(node.add_hall("v-room", "430902104201"), key="key-rewrap-1")
    finally:
        node.close()
    old_ring, old_id = (data / "secrets" / "cipher-keys").read_text().split()
    new_id, key = new_key_id(), new_key()

    def tongban(ring: str, active: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}
        env |= {"TONGBAN_DATA_DIR": str(data), "TONGBAN_CIPHER_KEYS": ring,
                "TONGBAN_CIPHER_ACTIVE_KEY": active}  # fmt: skip
        return subprocess.run(
            [*TONGBAN, *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False
        )

    only_new = f"{new_id}:{key}"
    refused = tongban(only_new, new_id, "keys", "rewrap")
    assert refused.returncode != 0 and old_id in refused.stderr  # the key still in use, named
    both = f"{old_ring},{only_new}"
    rotate = tongban(both, new_id, "keys", "rotate")
    assert rotate.returncode != 0 and "TONGBAN_CIPHER_KEYS" in rotate.stderr
    rewrapped = tongban(both, new_id, "keys", "rewrap")
    assert rewrapped.returncode == 0, rewrapped.stderr
    assert f"active at-rest key: {new_id}; 1 personal-data keys" in rewrapped.stdout
    again = tongban(only_new, new_id, "keys", "rewrap")  # the old key gone: nothing needs it
    assert again.returncode == 0, again.stderr

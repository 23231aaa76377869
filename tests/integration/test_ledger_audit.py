"""The integrator and the auditor on real stores: every kind of tampering is found and named.

Each test runs on SQLite and on PostgreSQL. A node's log is built from the demo story, integrated
and checkpointed; then the test tampers with the database (as a rogue operator with SQL access
would) and checks that ``audit_store`` reports the exact index and kind.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.application.cipher import new_key
from hub.application.hub import HubApplication
from hub.application.idempotency import CommandRecord, CommandResult, HallSignature
from hub.audit import AuditReport, audit_export, audit_store, case_proof_status, receipt_for
from hub.bootstrap import build_application, build_integrator
from hub.demo import run_demo
from hub.domain.values import Actor, Applicant, Material, id_number_with_check
from hub.integrator import LedgerIntegrator
from hub.settings import Settings
from ledger import Leaf, Verifier, WitnessPolicy, verify_receipt
from ledger.tiles import write_tiles

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    keys = f"k1:{new_key()}"
    common: dict[str, Any] = {
        "data_dir": tmp_path,
        "cipher_keys": keys,
        "cipher_active_key": "k1",
        "checkpoint_every": 16,
    }
    if request.param == "postgres":
        common["database_url"] = request.getfixturevalue("fresh_postgres_db")
    return Settings(**common)


@pytest.fixture
def node(settings: Settings) -> Iterator[tuple[HubApplication, LedgerIntegrator]]:
    app = build_application(settings)
    run_demo(app, out=lambda _line: None, pause_seconds=0)
    integrator = build_integrator(settings, app)
    integrator.catch_up()
    yield app, integrator
    app.close()


def _audit(app: HubApplication, integrator: LedgerIntegrator) -> AuditReport:
    return audit_store(
        app, integrator.view, [integrator.signer.verifier()], origin=integrator.origin
    )


def _sql(settings: Settings, statement: str, *params: Any) -> list[Any]:
    """Run SQL directly on the node's database, as a rogue operator could."""
    if settings.database_url is None:
        with sqlite3.connect(settings.sqlite_path) as connection:
            return connection.execute(statement.replace("%s", "?"), params).fetchall()
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        cursor = connection.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def _events_table(settings: Settings) -> tuple[str, str]:
    """(table, notification id column) of the event store."""
    if settings.database_url is None:
        return "stored_events", "rowid"
    return "tongban_events", "notification_id"


def _kinds(report: AuditReport) -> set[tuple[int | None, str]]:
    return {(finding.index, finding.kind) for finding in report.findings}


def test_a_clean_log_verifies_and_checkpoints_follow_the_policy(
    node: tuple[HubApplication, LedgerIntegrator],
) -> None:
    app, integrator = node
    report = _audit(app, integrator)
    assert report.ok, report.summary()
    assert report.leaves == report.events > 50
    assert report.pending == 0
    # Every 16 leaves a checkpoint was signed (the catch-up signed the last one).
    assert report.checkpoints >= report.leaves // 16


def test_receipts_verify_offline(node: tuple[HubApplication, LedgerIntegrator]) -> None:
    app, integrator = node
    first = app.recorder.select_notifications(start=1, limit=1)[0]
    receipt = receipt_for(integrator.view, first.originator_id, first.originator_version)  # type: ignore[arg-type]
    assert receipt is not None
    text = receipt.format()
    assert text.startswith(b"c2sp.org/tlog-proof@v1\n")
    verifier = Verifier.from_key(integrator.signer.verifier_key())
    verified = verify_receipt(text, [verifier], WitnessPolicy(0, ()), event=first.state)
    assert verified.leaf.version == first.originator_version
    with pytest.raises(Exception, match="hash"):
        verify_receipt(text, [verifier], WitnessPolicy(0, ()), event=first.state + b"x")


def test_updated_event_is_found(
    node: tuple[HubApplication, LedgerIntegrator], settings: Settings
) -> None:
    app, integrator = node
    table, id_column = _events_table(settings)
    _sql(settings, f"UPDATE {table} SET state = %s WHERE {id_column} = %s", b"forged", 10)
    report = _audit(app, integrator)
    assert (9, "event modified") in _kinds(report)
    assert len(report.findings) == 1


def test_deleted_event_is_found(
    node: tuple[HubApplication, LedgerIntegrator], settings: Settings
) -> None:
    app, integrator = node
    table, id_column = _events_table(settings)
    _sql(settings, f"DELETE FROM {table} WHERE {id_column} = %s", 20)
    report = _audit(app, integrator)
    kinds = _kinds(report)
    assert (19, "event missing") in kinds
    # The events after it now sit one position earlier than their leaves.
    assert any(kind == "order" for _index, kind in kinds)


def test_reordered_events_are_found(
    node: tuple[HubApplication, LedgerIntegrator], settings: Settings
) -> None:
    app, integrator = node
    table, id_column = _events_table(settings)
    if settings.database_url is None:
        # SQLite's notification id is the rowid: give the two rows each other's ids.
        _sql(settings, f"UPDATE {table} SET rowid = -1 WHERE rowid = 30")
        _sql(settings, f"UPDATE {table} SET rowid = 30 WHERE rowid = 31")
        _sql(settings, f"UPDATE {table} SET rowid = 31 WHERE rowid = -1")
    else:
        _sql(settings, f"UPDATE {table} SET {id_column} = -1 WHERE {id_column} = 30")
        _sql(settings, f"UPDATE {table} SET {id_column} = 30 WHERE {id_column} = 31")
        _sql(settings, f"UPDATE {table} SET {id_column} = 31 WHERE {id_column} = -1")
    report = _audit(app, integrator)
    assert {(29, "order"), (30, "order")} <= _kinds(report)


def test_inserted_event_is_found(
    node: tuple[HubApplication, LedgerIntegrator], settings: Settings
) -> None:
    app, integrator = node
    table, id_column = _events_table(settings)
    rows = _sql(settings, f"SELECT topic, state FROM {table} WHERE {id_column} = %s", 5)
    topic, state = rows[0]
    # A forged event slipped in below the integrator's position (id 0 is never used).
    forged_id = uuid4()
    if settings.database_url is None:
        _sql(settings, f"INSERT INTO {table} (rowid, originator_id, originator_version, topic, "
             "state) VALUES (0, %s, 1, %s, %s)", forged_id.hex, topic, state)  # fmt: skip
    else:
        _sql(settings, f"INSERT INTO {table} (notification_id, originator_id, "
             "originator_version, topic, state) VALUES (0, %s, 1, %s, %s)",
             forged_id, topic, state)  # fmt: skip
    report = _audit(app, integrator)
    assert any(f.kind == "event not in the log" and str(forged_id) in f.detail
               for f in report.findings), report.summary()  # fmt: skip


def test_altered_leaf_is_found(
    node: tuple[HubApplication, LedgerIntegrator], settings: Settings
) -> None:
    app, integrator = node
    (raw,) = _sql(settings, "SELECT leaf FROM ledger_leaves WHERE idx = %s", 3)[0]
    # A well-formed leaf that commits to other event bytes: only the roots can tell.
    leaf = Leaf.decode(bytes(raw))
    forged = dataclasses.replace(leaf, event_hash=hashlib.sha256(b"other").digest())
    _sql(settings, "UPDATE ledger_leaves SET leaf = %s WHERE idx = %s", forged.encode(), 3)
    report = _audit(app, integrator)
    assert any(f.kind == "root mismatch" for f in report.findings), report.summary()
    # A leaf row that no longer decodes is named too, and the rest is still checked.
    _sql(settings, "UPDATE ledger_leaves SET leaf = %s WHERE idx = %s", b"\x01garbage", 5)
    report = _audit(app, integrator)
    assert (5, "leaf unreadable") in _kinds(report)
    assert (5, "roots not derivable") in _kinds(report)


def test_a_checkpoint_signed_by_another_key_is_found(
    node: tuple[HubApplication, LedgerIntegrator], settings: Settings
) -> None:
    app, integrator = node
    report = audit_store(
        app, integrator.view, [Verifier.from_key(_other_key(integrator.origin))],
        origin=integrator.origin,
    )  # fmt: skip
    assert report.findings
    assert all(f.kind == "checkpoint signature" for f in report.findings)


def _other_key(origin: str) -> str:
    from ledger import Signer

    return Signer.generate(origin).verifier_key()


def test_forged_command_record_fails_the_hall_signature_check(
    node: tuple[HubApplication, LedgerIntegrator],
) -> None:
    app, integrator = node
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    actor = Actor("signed-hall", "op", "430902000000")
    app.register_hall(hall_id=actor.hall_id, name="签名窗口", region=actor.region,
                      windows=["1"], public_key=base64.b64encode(public).decode())  # fmt: skip
    command = b"the exact bytes the hall sent"
    app.submit(
        idempotency_key="signed-0001",
        actor=actor,
        item_code="070303001000",
        applicant=Applicant("王", id_number_with_check("43090219900101001"), "1"),
        materials=[Material("x", "0" * 64, "image/png", 1)],
        signature=HallSignature(command, private.sign(command)),
    )
    integrator.catch_up()
    assert _audit(app, integrator).hall_signatures == 1
    # The operator forges a record claiming the hall signed something it did not.
    forged = CommandRecord.record(
        hall_id=actor.hall_id, key="forged-0001", command="submit", digest="0" * 64,
        result=CommandResult(uuid4(), 1), signed_bytes=b"a command never sent",
        signature=private.sign(command), key_id=_key_id(public),
    )  # fmt: skip
    app.save(forged)
    integrator.catch_up()
    report = _audit(app, integrator)
    assert any(f.kind == "hall signature" and "does not verify" in f.detail
               for f in report.findings), report.summary()  # fmt: skip


def _key_id(public: bytes) -> str:
    from hub.application.idempotency import hall_key_id

    return hall_key_id(base64.b64encode(public).decode())


def test_export_verifies_and_an_altered_tile_is_named(
    node: tuple[HubApplication, LedgerIntegrator], tmp_path: Path
) -> None:
    _app, integrator = node
    view = integrator.view

    def export(cursor: Any) -> Any:
        latest = view.tables.latest_checkpoint(cursor)
        leaves = [leaf.encode() for leaf in view.tables.iter_leaves(cursor, 0, latest.size)]
        return write_tiles(tmp_path / "export", integrator.origin, leaves, latest.note)

    view.read(export)
    verifiers = [integrator.signer.verifier()]
    assert audit_export(tmp_path / "export", verifiers, origin=integrator.origin).ok
    entries = next((tmp_path / "export" / "tile" / "entries").rglob("*"))
    while entries.is_dir():
        entries = next(entries.iterdir())
    data = bytearray(entries.read_bytes())
    data[10] ^= 0xFF
    entries.write_bytes(bytes(data))
    report = audit_export(tmp_path / "export", verifiers, origin=integrator.origin)
    assert not report.ok
    assert any("entries" in f.detail for f in report.findings), report.summary()


def test_case_history_shows_each_event_proven(
    node: tuple[HubApplication, LedgerIntegrator],
) -> None:
    app, integrator = node
    first = app.recorder.select_notifications(start=1, limit=200)
    case_id = next(n.originator_id for n in first if n.topic.endswith("Case.Submitted"))
    rows = case_proof_status(app, integrator.view, case_id, [integrator.signer.verifier()])  # type: ignore[arg-type]
    assert rows
    assert all(status.startswith("proven") for _e, _leaf, status in rows)


WORKER = """
import sys, time
from hub.bootstrap import build_application, build_integrator
from hub.settings import Settings
settings = Settings.from_env()
app = build_application(settings, create_tables=False)
integrator = build_integrator(settings, app)
integrator.batch_size = 7
print("ready", flush=True)
while True:
    if not integrator.step().leaves:
        time.sleep(0.01)
"""


def test_a_killed_integrator_leaves_no_gap_and_no_duplicate(settings: Settings) -> None:
    app = build_application(settings)
    try:
        run_demo(app, out=lambda _line: None, pause_seconds=0)
        integrator = build_integrator(settings, app)  # creates the tables once
        env = {
            **os.environ,
            "TONGBAN_DATA_DIR": str(settings.data_dir),
            "TONGBAN_CIPHER_KEYS": settings.cipher_keys,
            "TONGBAN_CIPHER_ACTIVE_KEY": settings.cipher_active_key,
            "TONGBAN_CHECKPOINT_EVERY": "5",
            **({"TONGBAN_DATABASE_URL": settings.database_url} if settings.database_url else {}),
        }
        for round_ in range(4):
            # More events arrive while the integrator runs and is killed mid-stream.
            run_demo(app, out=lambda _line: None, pause_seconds=0)
            worker = subprocess.Popen(
                [sys.executable, "-c", WORKER], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            try:
                assert worker.stdout is not None
                assert worker.stdout.readline().strip() == "ready"
                time.sleep(0.05 + 0.05 * round_)
            finally:
                worker.send_signal(signal.SIGKILL)
                worker.wait(timeout=10)
        size = integrator.catch_up()
        report = _audit(app, integrator)
        assert report.ok, report.summary()
        assert size == report.events == report.leaves
    finally:
        app.close()

"""The tamper battery: every attack on the log is named by the auditor or refused by the node.

Each test runs on SQLite and on PostgreSQL. A node's log is built from the demo story (every
command signed by its hall or admin), integrated and checkpointed; then the test attacks it as a
rogue operator with SQL access — and, where it says so, with the node's own log key, integrating
forged events past the gate — and checks that ``tongban audit verify``'s engine, opened
read-only with nothing but the log's public key, reports the exact index and kind, or that the
node refuses. Nothing else may fail: each test also checks that the untouched log verifies.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.persistence import Notification, OperationalError
from psycopg import sql

from hub.application.log_watch import LogWatch
from hub.bootstrap import NodePaths, build_application, build_integrator
from hub.commands.model import Submit
from hub.commands.signing import CommandSigner
from hub.commands.wire import parse_command
from hub.demo import run_demo
from hub.domain.case import Case, case_id_for
from hub.domain.command_record import HALL, CommandRecord, payload_digest
from hub.domain.hall import key_id
from hub.domain.regions import RegionCode
from hub.domain.values import Actor, CrossRegionMode, SealedApplicant
from hub.errors import IntegrityViolation, NotFound, StoreMismatch
from hub.integrity import audit as audit_module
from hub.integrity.audit import AuditReport, audit_case, audit_export, audit_store
from hub.integrity.binding import LogChecker
from hub.integrity.export import export_log
from hub.integrity.store import ReadOnlyStore
from hub.settings import Settings
from ledger import Authority, Leaf, Signer, Verifier
from tests.harness.inprocess import APPLICANT, InProcessNode, material, public_key_b64
from tests.harness.tamper import integrate_without_the_gate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(store_url: str | None, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "node", checkpoint_every=16, database_url=store_url)


@pytest.fixture
def node(settings: Settings) -> Iterator[InProcessNode]:
    started = InProcessNode.start(settings)
    run_demo(started.app, started.admin, out=lambda _line: None, pause_seconds=0)
    started.integrator().catch_up()
    yield started
    started.close()


def _verifier(settings: Settings) -> Verifier:
    return Verifier.from_key((settings.data_dir / "log.vkey").read_text().strip())


def _store(settings: Settings) -> ReadOnlyStore:
    if settings.database_url:
        return ReadOnlyStore(database_url=settings.database_url)
    return ReadOnlyStore(sqlite_path=settings.sqlite_path)


def _audit(settings: Settings, trusted: bytes | None = None, key: str = "") -> AuditReport:
    verifier = Verifier.from_key(key) if key else _verifier(settings)
    with _store(settings) as store:
        return audit_store(store, [verifier], origin=settings.origin, trusted=trusted)


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


def _clean(settings: Settings) -> AuditReport:
    report = _audit(settings)
    assert report.ok, report.summary()
    return report


def _last_command(settings: Settings, hall: str) -> Leaf:
    rows = _sql(settings, "SELECT leaf FROM ledger_leaves ORDER BY idx")
    leaves = [Leaf.decode(bytes(row[0])) for row in rows]
    return [leaf for leaf in leaves if leaf.is_command and leaf.signer == hall][-1]


# ------------------------------------------------------------------------------ a clean log


def test_a_clean_log_verifies_with_the_public_key_alone(node: InProcessNode) -> None:
    report = _clean(node.settings)
    assert report.leaves == report.events > 80
    assert report.pending == 0 and report.unsigned == 0
    # Every command of the story was signed and checked: 5 hall registrations + the cases.
    assert report.signatures > 40
    assert report.checkpoints >= report.leaves // 16


def test_every_event_is_bound_to_its_command_in_the_leaves(node: InProcessNode) -> None:
    rows = _sql(node.settings, "SELECT leaf FROM ledger_leaves ORDER BY idx")
    leaves = [Leaf.decode(bytes(row[0])) for row in rows]
    assert leaves[0].authority is Authority.NODE  # the genesis
    for leaf in leaves[1:]:
        if leaf.authority is Authority.CAUSED:
            assert leaf.cause is not None and leaves[leaf.cause].is_command
        else:
            assert leaf.is_command and leaf.signature and leaf.command
    # No signed bytes hold personal data: the applicant is committed to, never signed.
    for leaf in leaves:
        for value in (APPLICANT.name, APPLICANT.id_number, APPLICANT.phone):
            assert value.encode() not in leaf.command


# ------------------------------------------------------------------------------ the store


def test_updated_event_is_found(node: InProcessNode) -> None:
    settings = node.settings
    table, id_column = _events_table(settings)
    _sql(settings, f"UPDATE {table} SET state = %s WHERE {id_column} = %s", b"forged", 10)
    report = _audit(settings)
    assert (9, "event modified") in _kinds(report)
    assert {kind for _i, kind in _kinds(report)} == {"event modified"}


def test_deleted_event_is_found(node: InProcessNode) -> None:
    settings = node.settings
    table, id_column = _events_table(settings)
    _sql(settings, f"DELETE FROM {table} WHERE {id_column} = %s", 20)
    report = _audit(settings)
    kinds = _kinds(report)
    assert (19, "event missing") in kinds
    # The events after it now sit one position earlier than their leaves.
    assert any(kind == "order" for _index, kind in kinds)


def test_reordered_events_are_found(node: InProcessNode) -> None:
    settings = node.settings
    table, id_column = _events_table(settings)
    _sql(settings, f"UPDATE {table} SET {id_column} = -1 WHERE {id_column} = 30")
    _sql(settings, f"UPDATE {table} SET {id_column} = 30 WHERE {id_column} = 31")
    _sql(settings, f"UPDATE {table} SET {id_column} = 31 WHERE {id_column} = -1")
    report = _audit(settings)
    assert {(29, "order"), (30, "order")} <= _kinds(report)


def test_an_event_inserted_below_the_integrators_position_is_found(node: InProcessNode) -> None:
    settings = node.settings
    table, id_column = _events_table(settings)
    rows = _sql(settings, f"SELECT topic, state FROM {table} WHERE {id_column} = %s", 5)
    topic, state = rows[0]
    forged_id = "7f3e9a64-8a5e-4a39-9d7d-6a1f2c3b4d5e"
    if settings.database_url is None:
        _sql(settings, f"INSERT INTO {table} (rowid, originator_id, originator_version, topic, "
             "state) VALUES (0, %s, 1, %s, %s)", forged_id.replace("-", ""), topic, state)  # fmt: skip
    else:
        _sql(settings, f"INSERT INTO {table} (notification_id, originator_id, "
             "originator_version, topic, state) VALUES (0, %s, 1, %s, %s)",
             forged_id, topic, state)  # fmt: skip
    report = _audit(settings)
    assert any(f.kind == "event not in the log" and forged_id in f.detail
               for f in report.findings), report.summary()  # fmt: skip


def test_an_event_inserted_past_the_position_is_refused_by_the_gate(node: InProcessNode) -> None:
    """The integrator does not sign what no command authorised: it stops and says why."""
    settings, app = node.settings, node.app
    case_id = next(
        n.originator_id
        for n in app.recorder.select_notifications(start=1, limit=500)
        if n.topic.endswith("Case.Submitted")
    )
    case = app.get_case(case_id)  # type: ignore[arg-type]
    actor = next(e for e in app.case_history(case.id) if hasattr(e, "actor")).actor  # type: ignore[attr-defined]
    case.trigger_event(Case.Withdrawn, actor=actor, reason="forged")
    app.save(case)  # straight into the store, no signed command
    integrator = node.integrator()
    size = integrator.view.read(lambda c: integrator.view.tables.state(c)[0])
    position = app.recorder.max_notification_id()
    with pytest.raises(IntegrityViolation, match=f"notification {position}") as caught:
        integrator.step()
    assert "unauthorised event" in str(caught.value)
    assert integrator.failure is not None
    assert integrator.view.read(lambda c: integrator.view.tables.state(c)[0]) == size
    # The auditor sees it as not integrated, and everything else verifies.
    report = _audit(settings)
    assert report.ok and report.pending == 1


def test_altered_leaves_and_stored_hashes_are_found(node: InProcessNode) -> None:
    settings = node.settings
    (raw,) = _sql(settings, "SELECT leaf FROM ledger_leaves WHERE idx = %s", 3)[0]
    leaf = Leaf.decode(bytes(raw))
    forged = dataclasses.replace(leaf, event_hash=hashlib.sha256(b"other").digest())
    _sql(settings, "UPDATE ledger_leaves SET leaf = %s WHERE idx = %s", forged.encode(), 3)
    report = _audit(settings)
    assert any(f.kind == "root mismatch" for f in report.findings), report.summary()
    _sql(settings, "UPDATE ledger_leaves SET leaf = %s WHERE idx = %s", b"\x02garbage", 5)
    assert (5, "leaf unreadable") in _kinds(_audit(settings))


def test_a_corrupted_leaf_hash_column_is_found(node: InProcessNode) -> None:
    settings = node.settings
    _sql(settings, "UPDATE ledger_leaves SET leaf_hash = %s WHERE idx = %s", b"\x00" * 32, 7)
    report = _audit(settings)
    assert _kinds(report) == {(7, "stored leaf hash")}


def test_a_corrupted_interior_node_row_is_found(node: InProcessNode) -> None:
    settings = node.settings
    level, index = _sql(settings, "SELECT level, idx FROM ledger_nodes ORDER BY level, idx")[0]
    _sql(settings, "UPDATE ledger_nodes SET hash = %s WHERE level = %s AND idx = %s",
         b"\x11" * 32, level, index)  # fmt: skip
    report = _audit(settings)
    assert {kind for _i, kind in _kinds(report)} == {"stored node"}
    assert (index << level, "stored node") in _kinds(report)


def test_a_wrong_log_key_is_one_finding(node: InProcessNode) -> None:
    report = _audit(node.settings, key=Signer.generate(node.settings.origin).verifier_key())
    assert len([f for f in report.findings if f.kind == "checkpoint signature"]) == 1
    assert "is it this log's key" in report.summary()


# ------------------------------------------------------------------------------ with the log key


def test_a_genuine_signature_moved_to_another_event_is_named(node: InProcessNode) -> None:
    """A rogue operator with the log key attaches a hall's genuine command to an event the
    hall never asked for: the binding check names it."""
    settings, app = node.settings, node.app
    township = _last_command(settings, "hn-shatou-town")
    case_id = next(
        n.originator_id
        for n in app.recorder.select_notifications(start=1, limit=500)
        if n.topic.endswith("Case.Submitted")
    )
    case = app.get_case(case_id)  # type: ignore[arg-type]
    actor = next(e for e in app.case_history(case.id) if hasattr(e, "actor")).actor  # type: ignore[attr-defined]
    case.trigger_event(Case.Withdrawn, actor=actor, reason="never asked for")
    app.save(case)
    integrator = node.integrator()
    forged_index = integrator.view.read(lambda c: integrator.view.tables.state(c)[0])

    def cite_the_township(index: int, notification: Notification, leaf: Leaf) -> Leaf:
        return dataclasses.replace(leaf, authority=Authority.CAUSED, cause=township.index)

    integrate_without_the_gate(integrator, cite_the_township)
    report = _audit(settings)
    assert (forged_index, "unauthorised event") in _kinds(report), report.summary()
    assert len(report.findings) == 1


def test_a_replayed_record_and_a_swapped_key_id_are_named(node: InProcessNode) -> None:
    """A copy of a genuine command record (under another id), and a leaf claiming another key
    id: each is named, everything else verifies."""
    settings, app = node.settings, node.app
    genuine = next(
        n
        for n in app.recorder.select_notifications(start=1, limit=500)
        if n.topic.endswith("CommandRecord.Recorded")
        and app.mapper.to_domain_event(n).action == "accept"  # type: ignore[attr-defined]
    )
    record = app.mapper.to_domain_event(genuine)
    copy = CommandRecord.record(
        signer_kind=record.signer_kind, signer=record.signer, key=record.key + "-copy",  # type: ignore[attr-defined]
        action=record.action, digest=record.digest, target_id=record.target_id,  # type: ignore[attr-defined]
        first_version=record.first_version, last_version=record.last_version,  # type: ignore[attr-defined]
        signed_bytes=record.signed_bytes, signature=record.signature,  # type: ignore[attr-defined]
        key_id=record.key_id, issued_at=record.issued_at, deferred=False,  # type: ignore[attr-defined]
    )  # fmt: skip
    app.save(copy)
    integrator = node.integrator()
    copied_at = integrator.view.read(lambda c: integrator.view.tables.state(c)[0])

    def swap_key(index: int, notification: Notification, leaf: Leaf) -> Leaf:
        return dataclasses.replace(leaf, key_id="0123456789abcdef")

    integrate_without_the_gate(integrator, swap_key)
    kinds = _kinds(_audit(settings))
    assert (copied_at, "key out of period") in kinds
    assert (copied_at, "mis-bound signature") in kinds  # the record says another key id
    assert (copied_at, "events missing") in kinds  # it announces events that do not follow


def _forge_submission(
    node: InProcessNode, signer: CommandSigner, key: str, *, flip_signature: bool = False
) -> None:
    """Store a 收件 as a rogue operator could, past the node's checks: ``signer``'s signed
    command (its signature with one bit flipped, if asked), its record and the case it opens."""
    app, hall_id, region_code = node.app, signer.hall_id, signer.region
    signed = signer.sign("submit", idempotency_key=key, item_code="070303001000",
                         applicant=APPLICANT, materials=[material()])  # fmt: skip
    signature = signed.signature
    if flip_signature:
        signature = bytes([signature[0] ^ 1]) + signature[1:]
    parsed = parse_command(signed.command)
    assert isinstance(parsed.action, Submit)
    region = RegionCode(region_code)
    case = Case.submit(
        case_id=case_id_for(hall_id, key), actor=Actor(hall_id, "op", region_code),
        item_code="070303001000", item_name="x", kind=app.catalogue.get("070303001000").kind,
        mode=CrossRegionMode.LOCAL, intake_region=region, competent_region=region,
        applicant=SealedApplicant(parsed.action.applicant, b""),
        materials=parsed.action.materials, promised_days=1, statutory_days=1,
        produces_certificate=False, timestamp=parsed.header.issued_at,  # its business time
    )  # fmt: skip
    record = CommandRecord.record(
        signer_kind=HALL, signer=hall_id, key=key, action="submit",
        digest=payload_digest("submit", {}), target_id=case.id, first_version=1,
        last_version=1, signed_bytes=signed.command, signature=signature,
        key_id=key_id(public_key_b64(signer.key)), issued_at=parsed.header.issued_at,
        deferred=False,
    )  # fmt: skip
    app.save(record, case)


def test_a_command_signed_for_another_node_or_with_a_rotated_out_key_is_named(
    node: InProcessNode,
) -> None:
    """The node refuses both; a rogue operator integrates them anyway: the audit names both."""
    settings, app = node.settings, node.app
    hall = node.add_hall("hn-test-hall", "430902000000")
    old_key = hall.key
    new_key = Ed25519PrivateKey.generate()
    app.execute(node.admin.sign("rotate_hall_key", hall_id=hall.hall_id,
                                public_key=public_key_b64(new_key)))  # fmt: skip
    node.integrator().catch_up()
    forged: list[tuple[str, CommandSigner]] = [
        ("key-other-node", CommandSigner(new_key, node="tongban/42", operator="op",
                                         hall_id=hall.hall_id, region=hall.region)),
        ("key-old-key-01", CommandSigner(old_key, node=settings.origin, operator="op",
                                         hall_id=hall.hall_id, region=hall.region)),
    ]  # fmt: skip
    for key, signer in forged:
        _forge_submission(node, signer, key)
    integrator = node.integrator()
    start = integrator.view.read(lambda c: integrator.view.tables.state(c)[0])
    integrate_without_the_gate(integrator)
    kinds = _kinds(_audit(settings))
    assert (start, "command for another node") in kinds
    assert (start + 2, "key out of period") in kinds
    assert {kind for _i, kind in kinds} == {"command for another node", "key out of period"}


def test_a_flipped_signature_and_a_retired_halls_command_are_named(node: InProcessNode) -> None:
    """A rogue operator holding the log key logs a command whose signature does not verify
    (its key id the hall's current one), and a command of a hall the admin retired, signed with
    its last key: the audit names each."""
    settings, app = node.settings, node.app
    flipped = node.add_hall("hn-flip-hall", "430902000000")
    retired = node.add_hall("hn-gone-hall", "430902104000")
    app.execute(node.admin.sign("retire_hall", hall_id=retired.hall_id, reason="撤并"))
    node.integrator().catch_up()
    integrator = node.integrator()
    start = integrator.view.read(lambda c: integrator.view.tables.state(c)[0])
    _forge_submission(node, flipped, "key-flipped-01", flip_signature=True)
    _forge_submission(node, retired, "key-retired-01")
    integrate_without_the_gate(integrator)
    kinds = _kinds(_audit(settings))
    assert {(start, "signature"), (start + 2, "retired signer")} <= kinds, kinds
    # (The forged cases' events, made by hand, differ from what the node makes besides.)
    assert {kind for _i, kind in kinds} <= {"signature", "retired signer", "content mismatch"}


# ------------------------------------------------------------------------------ rollback and forks


def _backup(settings: Settings, request: pytest.FixtureRequest) -> Callable[[], None]:
    """Take a backup of the node's database now; the returned function restores it."""
    if settings.database_url is None:
        copy = settings.data_dir.parent / "backup.sqlite3"
        with sqlite3.connect(settings.sqlite_path) as live, sqlite3.connect(copy) as backup:
            live.backup(backup)

        def restore_sqlite() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{settings.sqlite_path}{suffix}").unlink(missing_ok=True)
            shutil.copy(copy, settings.sqlite_path)

        return restore_sqlite
    server = request.getfixturevalue("postgres_dsn")
    name = psycopg.conninfo.conninfo_to_dict(settings.database_url)["dbname"]
    backup_name = f"{name}_bak"

    def template(source: str, target: str) -> None:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = {} AND pid <> pg_backend_pid()").format(
                                     sql.Literal(source)))  # fmt: skip
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(target)))  # fmt: skip
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(target), sql.Identifier(source)))  # fmt: skip

    template(str(name), backup_name)
    request.addfinalizer(
        lambda: psycopg.connect(server, autocommit=True).execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(backup_name))
        )
    )

    def restore_postgres() -> None:
        template(backup_name, str(name))

    return restore_postgres


def _more_story(node: InProcessNode) -> None:
    try:
        node.app.get_hall("hn-more")
        hall = node.halls["hn-more"]
    except NotFound:  # (not yet, or no longer after a restore)
        hall = node.add_hall("hn-more", "430902000000")
    for _ in range(3):
        node.submit(hall, key=f"key-more-{os.urandom(4).hex()}", item_code="070303001000")
    node.integrator().catch_up()


def test_an_integrator_that_another_overtook_logs_nothing_twice(node: InProcessNode) -> None:
    """The follower's integrator keeps its position between steps; ``tongban ledger
    integrate`` run meanwhile goes on from the store's. The follower must notice, not log the
    same events again, nor take the others' leaves for a broken binding."""
    follower = node.integrator()
    hall = node.add_hall("hn-overtaken", "430902000000")
    node.submit(hall, key="key-overtaken-1", item_code="070303001000")
    assert follower.step().leaves > 0  # its position is now kept in memory
    node.submit(hall, key="key-overtaken-2", item_code="070303001000")
    other = node.integrator()
    size = other.catch_up()  # the CLI, meanwhile
    moved = follower.step()
    assert (moved.leaves, moved.size) == (0, size)
    assert follower.failure is None
    node.submit(hall, key="key-overtaken-3", item_code="070303001000")
    while follower.step().leaves:
        pass
    follower.checkpoint_now()
    assert follower.view.read(lambda cursor: follower.view.tables.state(cursor)[0]) == (
        node.log_size()
    )
    _clean(node.settings)


def test_a_store_that_fails_between_two_steps_does_not_end_the_integrators_thread(
    node: InProcessNode,
) -> None:
    """After a step, the running integrator reads the store again (its lag, for the metrics;
    when its pending checkpoint falls due). A store that goes away just then — between two
    steps — is met like a failed step: the loop waits and goes on, and the events stored once
    the store is back are integrated. (The thread used to end there: a relay's handoffs then
    waited for a checkpoint that never came.)"""
    integrator = node.integrator()
    recorder: Any = node.app.recorder
    real = recorder.max_notification_id
    failures = [OperationalError("terminating connection due to administrator command")] * 2

    def failing_for_a_while() -> Any:
        if failures and threading.current_thread() is thread:  # the integrator's reads only
            raise failures.pop()
        return real()

    watch = LogWatch(recorder)
    watch.add(threading.Event())  # subscribed (PostgreSQL) before the store fails, as running
    recorder.max_notification_id = failing_for_a_while
    stop = threading.Event()
    thread = threading.Thread(
        target=integrator.run, args=(stop,), kwargs={"idle_wait": 0.01, "watch": watch}
    )
    thread.start()
    try:
        hall = node.add_hall("hn-outage", "430902000000")
        node.submit(hall, key="key-outage-1", item_code="070303001000")
        deadline = time.monotonic() + 60
        while (failures or integrator.position < node.log_size()) and time.monotonic() < deadline:
            stop.wait(0.05)  # the integrator's thread makes it true; bounded by the deadline
        assert failures == []  # the store did fail under the running loop
        assert integrator.position == node.log_size()
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(30)
        watch.stop()
        recorder.max_notification_id = real


def test_a_restored_backup_is_detected_and_the_node_refuses_to_sign(
    node: InProcessNode, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    settings = node.settings
    node.close()
    restore = _backup(settings, request)
    node.app = build_application(settings)
    _more_story(node)
    state = tmp_path / "auditor-state"
    report = _clean(settings)
    assert report.latest is not None
    state.write_bytes(report.latest)  # what `audit verify --state` keeps
    node.close()
    restore()  # the database is restored from the older backup
    # The auditor who verified the newer log names the rollback, with both checkpoints.
    rolled_back = _audit(settings, trusted=state.read_bytes())
    assert [f.kind for f in rolled_back.findings] == ["rollback"]
    assert "restored backup" in rolled_back.findings[0].detail
    # An auditor without that memory sees a consistent (older) log: why the state matters.
    assert _audit(settings).ok
    # The node remembers what it signed (in its data directory) and refuses to go on.
    app = build_application(settings)
    try:
        with pytest.raises(StoreMismatch, match="restored from an older backup"):
            build_integrator(settings, app)
    finally:
        app.close()
    node.app = build_application(settings)  # for the fixture's close


def test_a_different_history_shown_to_another_auditor_is_a_fork(
    node: InProcessNode, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    settings = node.settings
    node.close()
    restore = _backup(settings, request)
    node.app = build_application(settings)
    _more_story(node)
    first_auditor = _clean(settings).latest
    assert first_auditor is not None
    node.close()
    # A rogue node restores the backup, forgets what it signed, and writes another history of
    # at least the same length, signed with the genuine key.
    restore()
    NodePaths(settings.data_dir).head.unlink()
    node.app = build_application(settings)
    for _ in range(2):
        _more_story(node)
    second_auditor = _audit(settings)
    assert second_auditor.ok  # on its own, the other history is consistent
    forked = _audit(settings, trusted=first_auditor)
    assert [f.kind for f in forked.findings] == ["fork"]
    assert "two histories were signed" in forked.findings[0].detail


def test_deleting_the_newest_checkpoints_and_editing_the_tail_is_found(
    node: InProcessNode, tmp_path: Path
) -> None:
    settings = node.settings
    _more_story(node)
    trusted = _clean(settings).latest
    assert trusted is not None
    newest = _sql(settings, "SELECT MAX(size) FROM ledger_checkpoints")[0][0]
    _sql(settings, "DELETE FROM ledger_checkpoints WHERE size = %s", newest)
    table, id_column = _events_table(settings)
    _sql(settings, f"UPDATE {table} SET state = %s WHERE {id_column} = "
         f"(SELECT MAX({id_column}) FROM {table})", b"edited tail")  # fmt: skip
    report = _audit(settings, trusted=trusted)
    kinds = {kind for _i, kind in _kinds(report)}
    assert "rollback" in kinds
    assert "event modified" in kinds
    # Even without the auditor's memory, the edited event does not match its leaf.
    assert "event modified" in {kind for _i, kind in _kinds(_audit(settings))}


# ------------------------------------------------------------------------------ erasure


def test_erasure_keeps_every_proof_and_signature_valid(node: InProcessNode) -> None:
    settings, app = node.settings, node.app
    case_id = next(
        n.originator_id
        for n in app.recorder.select_notifications(start=1, limit=500)
        if n.topic.endswith("Case.Submitted")
    )
    app.execute(node.admin.sign("erase_personal_data", case_id=str(case_id), reason="申请人要求"))
    node.integrator().catch_up()
    report = _clean(settings)
    assert report.shredded == 1
    with _store(settings) as store:
        entries = audit_case(store, case_id, [_verifier(settings)], origin=settings.origin)  # type: ignore[arg-type]
    assert all(entry.ok for entry in entries)
    assert "personal data erased" in entries[0].status
    assert entries[-1].topic == "PersonalDataErased"


# ------------------------------------------------------------------------------ export and cases


def test_an_export_verifies_offline_and_names_an_altered_tile_or_event(
    node: InProcessNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = node.settings
    integrator = node.integrator()
    export_log(integrator.view, tmp_path / "export", settings.origin)
    verifiers = [_verifier(settings)]
    report = audit_export(tmp_path / "export", verifiers, origin=settings.origin)
    assert report.ok, report.summary()
    assert report.signatures > 40  # every signature checked from the export alone
    # The checker remembers a bounded number of cases (20,000); one it forgot is read again
    # from the export's events, as from a store: with no memory of cases at all, still clean.
    monkeypatch.setattr(audit_module, "LogChecker", functools.partial(LogChecker, cache_size=0))
    forgetful = audit_export(tmp_path / "export", verifiers, origin=settings.origin)
    assert forgetful.ok and forgetful.signatures == report.signatures, forgetful.summary()
    monkeypatch.undo()
    events = next(p for p in (tmp_path / "export" / "events").rglob("*") if p.is_file())
    data = bytearray(events.read_bytes())
    data[20] ^= 0x01
    events.write_bytes(bytes(data))
    report = audit_export(tmp_path / "export", verifiers, origin=settings.origin)
    assert any(f.kind == "event modified" for f in report.findings), report.summary()
    entries = next((tmp_path / "export" / "tile" / "entries").rglob("*"))
    while entries.is_dir():
        entries = next(entries.iterdir())
    data = bytearray(entries.read_bytes())
    data[10] ^= 0xFF
    entries.write_bytes(bytes(data))
    report = audit_export(tmp_path / "export", verifiers, origin=settings.origin)
    assert any("entries" in f.detail for f in report.findings), report.summary()


def test_audit_case_shows_each_event_proven_and_signed(node: InProcessNode) -> None:
    settings, app = node.settings, node.app
    case_id = next(
        n.originator_id
        for n in app.recorder.select_notifications(start=1, limit=500)
        if n.topic.endswith("Case.Submitted")
    )
    with _store(settings) as store:
        entries = audit_case(store, case_id, [_verifier(settings)], origin=settings.origin)  # type: ignore[arg-type]
    assert len(entries) == 11
    assert all(entry.ok and entry.status.startswith("proven") for entry in entries)
    assert all(entry.signer for entry in entries)


# ------------------------------------------------------------------------------ crashes


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
    node = InProcessNode.start(settings.with_changes(checkpoint_every=5))
    try:
        run_demo(node.app, node.admin, out=lambda _line: None, pause_seconds=0)
        integrator = node.integrator()  # creates the tables once
        env = {
            **os.environ,
            "TONGBAN_DATA_DIR": str(settings.data_dir),
            "TONGBAN_CHECKPOINT_EVERY": "5",
            **({"TONGBAN_DATABASE_URL": settings.database_url} if settings.database_url else {}),
        }
        for round_ in range(4):
            # More events arrive while the integrator runs and is killed mid-stream.
            run_demo(node.app, node.admin, out=lambda _line: None, pause_seconds=0)
            worker = subprocess.Popen(
                [sys.executable, "-c", WORKER], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            try:
                assert worker.stdout is not None
                assert worker.stdout.readline().strip() == "ready"
                time.sleep(0.05 + 0.05 * round_)  # kill it at a different point each round
            finally:
                worker.send_signal(signal.SIGKILL)
                worker.wait(timeout=10)
        size = node.integrator().catch_up()
        del integrator
        report = _clean(settings)
        assert size == report.events == report.leaves
    finally:
        node.close()

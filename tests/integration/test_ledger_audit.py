"""The tamper battery: every attack on the log is named by the auditor or refused by the node.

Each test runs on SQLite and on PostgreSQL. A node's log is built from the demo story (every
command signed by its hall or admin), integrated and checkpointed; then the test attacks it as a
rogue operator with SQL access — and, where it says so, with the node's own log key, integrating
forged events past the gate — and checks that ``tongban audit verify``'s engine, opened
read-only with nothing but the log's public key, reports the exact index and kind, or that the
node refuses. Nothing else may fail: each test also checks that the untouched log verifies.
"""

from __future__ import annotations

import base64
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.persistence import Notification, OperationalError
from psycopg import sql

from hub.application.log_watch import LogWatch
from hub.bootstrap import NodePaths, build_application, build_integrator
from hub.commands.model import CaseAction, SignedCommand, Submit
from hub.commands.signing import CommandSigner
from hub.commands.wire import parse_command
from hub.demo import run_demo
from hub.domain.case import Case, business_time, case_id_for
from hub.domain.certificates import CertificateStatus
from hub.domain.command_record import HALL, CommandRecord, payload_digest
from hub.domain.hall import key_id
from hub.domain.node import Node
from hub.domain.regions import RegionCode
from hub.domain.values import Actor, CrossRegionMode, SealedApplicant
from hub.errors import IntegrityViolation, NotFound, StoreMismatch, TransitionRefused
from hub.integrity import audit as audit_module
from hub.integrity.audit import AuditReport, audit_case, audit_export, audit_store
from hub.integrity.binding import LogChecker
from hub.integrity.export import export_log
from hub.integrity.store import ReadOnlyStore
from hub.settings import Settings
from ledger import Authority, Checkpoint, Leaf, Signer, Verifier, sign_checkpoint
from tests.harness.inprocess import (
    APPLICANT,
    InProcessNode,
    material,
    public_key_b64,
    read_only_store,
)
from tests.harness.tamper import integrate_without_the_gate, rewrite_last_event

ROOT = Path(__file__).resolve().parents[2]
#: 长春镇: its halls take in and issue the elder card (a township item, ELDER_CARD).
TOWNSHIP = "430902104000"


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
    return read_only_store(settings)


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


def _row_of_leaf(settings: Settings, index: int) -> tuple[Any, ...]:
    (row,) = _sql(settings, "SELECT idx, leaf, leaf_hash, aggregate_id, version FROM ledger_leaves "
                  "WHERE idx = %s", index)  # fmt: skip
    return tuple(row)


def _put_leaf_rows(settings: Settings, *rows: tuple[Any, ...]) -> None:
    for row in rows:
        _sql(settings, "INSERT INTO ledger_leaves (idx, leaf, leaf_hash, aggregate_id, version) "
             "VALUES (%s, %s, %s, %s, %s)", *row)  # fmt: skip


def test_swapped_leaf_rows_are_named_at_both_positions(node: InProcessNode) -> None:
    """Two leaves moved into each other's place (with their hash columns, so the rows look
    intact): each position is named, and the signed roots no longer follow."""
    settings = node.settings
    first, second = _row_of_leaf(settings, 4), _row_of_leaf(settings, 6)
    _sql(settings, "DELETE FROM ledger_leaves WHERE idx IN (4, 6)")
    _put_leaf_rows(settings, (4, *second[1:]), (6, *first[1:]))
    kinds = _kinds(_audit(settings))
    assert {(4, "leaf index"), (6, "leaf index")} <= kinds, kinds
    assert "root mismatch" in {kind for _i, kind in kinds}


def test_a_leaf_of_another_log_put_in_place_is_named(node: InProcessNode) -> None:
    """A leaf rewritten to claim another log's origin (its hash column recomputed, so the row
    looks intact): the auditor names that position, and the signed roots no longer follow."""
    settings = node.settings
    index, data, _hash, aggregate_id, version = _row_of_leaf(settings, 5)
    foreign = dataclasses.replace(Leaf.decode(bytes(data)), origin="tongban/42")
    _sql(settings, "DELETE FROM ledger_leaves WHERE idx = %s", index)
    _put_leaf_rows(settings, (index, foreign.encode(), foreign.leaf_hash(), aggregate_id, version))
    report = _audit(settings)
    kinds = _kinds(report)
    assert (5, "leaf origin") in kinds, report.summary()
    assert "'tongban/42', expected 'tongban/43'" in next(
        f.detail for f in report.findings if f.kind == "leaf origin"
    )
    assert "root mismatch" in {kind for _i, kind in kinds}


def test_a_dropped_leaf_and_dropped_newest_leaves_are_named(node: InProcessNode) -> None:
    """A leaf deleted from the middle of the log is named where it is missing, once, with the
    checkpoints that cover it (their roots cannot be re-derived) and the event whose leaf it
    was; the leaves after it are still checked, and not each reported. The newest leaves
    deleted (their checkpoints kept) leave a checkpoint over leaves the log no longer holds,
    and an auditor who verified the log before names the rollback."""
    settings = node.settings
    trusted = _clean(settings).latest
    assert trusted is not None
    dropped = _row_of_leaf(settings, 10)
    _sql(settings, "DELETE FROM ledger_leaves WHERE idx = %s", 10)
    report = _audit(settings, trusted=trusted)
    kinds = _kinds(report)
    assert {(10, "leaf missing"), (10, "checkpoint unverifiable"),
            (None, "event not in the log")} <= kinds, report.summary()  # fmt: skip
    # Besides, only what follows from that leaf's absence (here it registered a hall: that
    # hall's command is then by an unknown signer), never the later leaves one by one.
    assert len(report.findings) <= 6 < report.leaves, report.summary()
    assert not {kind for _index, kind in kinds} & {"order", "checkpoint beyond log", "rollback"}
    assert "no stored leaf at index 10: deleted" in report.summary()
    assert report.unsigned == 0  # the checkpoints still cover every leaf
    more = [_row_of_leaf(settings, index) for index in (12, 13)]
    _sql(settings, "DELETE FROM ledger_leaves WHERE idx IN (12, 13)")
    assert "no stored leaves at indices 12..13: deleted" in _audit(settings).summary()
    _put_leaf_rows(settings, dropped, *more)
    assert _audit(settings).ok
    size = _clean(settings).leaves
    _sql(settings, "DELETE FROM ledger_leaves WHERE idx >= %s", size - 2)
    report = _audit(settings)
    assert any(f.kind == "checkpoint beyond log" and f"{size} > {size - 2} leaves" in f.detail
               for f in report.findings), report.summary()  # fmt: skip
    assert "rollback" in {kind for _i, kind in _kinds(_audit(settings, trusted=trusted))}


def test_a_changed_event_type_is_named(node: InProcessNode) -> None:
    """The leaf commits to the stored event's bytes; its type (the topic column) is committed
    to by the leaf's topic. A rogue writer turns a reinstated certificate into a revoked one —
    the same fields, so the same bytes and hash: the auditor names the event's topic."""
    settings = node.settings
    hall = node.add_hall("hn-topic-hall", TOWNSHIP)
    case_id = _issued_certificate(node, hall, "key-topic-0001")
    node.run(hall, "suspend_certificate", case_id=str(case_id), reason="核查")
    node.run(hall, "reinstate_certificate", case_id=str(case_id), reason="核查完毕")
    at = node.integrator().catch_up() - 1  # the reinstatement's leaf, the newest
    table, id_column = _events_table(settings)
    _sql(settings, f"UPDATE {table} SET topic = %s WHERE {id_column} = "
         f"(SELECT MAX({id_column}) FROM {table})", "hub.domain.case:Case.CertificateRevoked")  # fmt: skip
    report = _audit(settings)
    assert _kinds(report) == {(at, "topic")}, report.summary()
    assert "logged hub.domain.case:Case.CertificateReinstated" in report.findings[0].detail


def test_a_checkpoint_row_that_differs_from_its_note_is_named_and_not_trusted(
    node: InProcessNode,
) -> None:
    """The auditor takes a checkpoint's size and root from the signed note, never from its row:
    a row whose root was changed, rows whose notes were swapped, and the newest row moved to
    another size are each one ``checkpoint row`` finding — no other finding, no traceback, and
    the newest signed checkpoint is still the one verified."""
    settings = node.settings
    clean = _clean(settings)
    rows = _sql(settings, "SELECT size, root, note FROM ledger_checkpoints ORDER BY size")
    (first, _r1, first_note), (second, _r2, second_note) = rows[0], rows[1]
    newest = rows[-1][0]

    def findings() -> list[tuple[int | None, str]]:
        report = _audit(settings)
        assert report.latest == clean.latest and report.unsigned == 0, report.summary()
        return sorted(((f.index, f.kind) for f in report.findings), key=str)

    _sql(settings, "UPDATE ledger_checkpoints SET root = %s WHERE size = %s", b"\x11" * 32, first)
    report = _audit(settings)
    assert [(f.index, f.kind) for f in report.findings] == [(None, "checkpoint row")]
    assert f"the row says size {first} root {'11' * 8}…" in report.findings[0].detail
    _sql(settings, "UPDATE ledger_checkpoints SET root = %s WHERE size = %s", rows[0][1], first)
    _clean(settings)
    # The notes of the two oldest rows swapped: each row says what the other's note says.
    for size, note in ((first, second_note), (second, first_note)):
        _sql(settings, "UPDATE ledger_checkpoints SET note = %s WHERE size = %s", note, size)
    assert findings() == [(None, "checkpoint row")] * 2
    for size, note in ((first, first_note), (second, second_note)):
        _sql(settings, "UPDATE ledger_checkpoints SET note = %s WHERE size = %s", note, size)
    _clean(settings)
    # The newest row claims a size its note does not (the largest free one below it).
    sizes = {row[0] for row in rows}
    moved = next(size for size in range(newest - 1, 0, -1) if size not in sizes)
    _sql(settings, "UPDATE ledger_checkpoints SET size = %s WHERE size = %s", moved, newest)
    assert findings() == [(None, "checkpoint row")]


def test_one_checkpoint_whose_signature_does_not_verify_is_named_by_its_size(
    node: InProcessNode,
) -> None:
    """One stored checkpoint's signature altered, the others genuine: the auditor names that
    checkpoint by its size (not "is it this log's key?", which is for none verifying), does
    not trust it, and still verifies the log against the others."""
    settings = node.settings
    clean = _clean(settings)
    rows = _sql(settings, "SELECT size, note FROM ledger_checkpoints ORDER BY size")
    size, note = rows[0]
    text, _, signature_line = bytes(note).rstrip(b"\n").rpartition(b"\n")
    name, _, signature = signature_line.rpartition(b" ")
    raw = base64.b64decode(signature)
    flipped = base64.b64encode(raw[:-1] + bytes([raw[-1] ^ 1]))
    altered = text + b"\n" + name + b" " + flipped + b"\n"
    _sql(settings, "UPDATE ledger_checkpoints SET note = %s WHERE size = %s", altered, size)
    report = _audit(settings)
    assert [(f.index, f.kind) for f in report.findings] == [(None, "checkpoint signature")]
    assert report.findings[0].detail.startswith(f"checkpoint of size {size}: ")
    assert report.latest == clean.latest, report.summary()


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
    node: InProcessNode,
    signer: CommandSigner,
    key: str,
    *,
    flip_signature: bool = False,
    recorded_bytes: bytes | None = None,
) -> None:
    """Store a 收件 as a rogue operator could, past the node's checks: ``signer``'s signed
    command (its signature with one bit flipped, if asked; other bytes recorded as the signed
    command, if given), its record and the case it opens."""
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
        last_version=1, signed_bytes=recorded_bytes or signed.command, signature=signature,
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


def test_a_command_record_whose_bytes_are_no_command_is_refused_and_named(
    node: InProcessNode,
) -> None:
    """A rogue writer records a 收件 whose signed bytes are not a command at all: the gate
    refuses it, and logged past the gate with the node's key, the auditor names the record's
    leaf as unreadable, and the case it opened as authorised by nothing."""
    settings = node.settings
    hall = node.add_hall("hn-test-hall", "430902000000")
    node.integrator().catch_up()
    signer = CommandSigner(hall.key, node=settings.origin, operator="op", hall_id=hall.hall_id,
                           region=hall.region)  # fmt: skip
    _forge_submission(node, signer, "key-unreadable-1", recorded_bytes=b"\x0a\x03not a command")
    start, report = _refused_then_logged(node, "command unreadable")
    assert _kinds(report) == {(start, "command unreadable"), (start + 1, "unauthorised event")}


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


def _store_past_the_state_machine(
    node: InProcessNode,
    signer: CommandSigner,
    signed: SignedCommand,
    event_class: Any,
    onto: UUID | None = None,
    received: datetime | None = None,
) -> None:
    """Store a hall's genuine signed case command and the event it asks for as a rogue writer
    could, past the node's state machine: its record, then the event (at its business time) —
    on the case it names, or ``onto`` another; received when signed, or at ``received``."""
    parsed = parse_command(signed.command)
    action = parsed.action
    assert isinstance(action, CaseAction)
    at = business_time(parsed.header.issued_at, received or parsed.header.issued_at, None)
    case = node.app.get_case(onto or action.case_id)
    before = case.version
    actor = Actor(signer.hall_id, signer.operator, signer.region)
    case.trigger_event(event_class, actor=actor, timestamp=at)
    record = CommandRecord.record(
        signer_kind=HALL, signer=signer.hall_id, key=parsed.header.idempotency_key,
        action=action.action_name, digest=payload_digest(action.action_name, {}),
        target_id=case.id, first_version=before + 1, last_version=case.version,
        signed_bytes=signed.command, signature=signed.signature,
        key_id=key_id(public_key_b64(signer.key)), issued_at=parsed.header.issued_at,
        deferred=False, timestamp=received or parsed.header.issued_at,
    )  # fmt: skip
    node.app.save(record, case)


def _size(node: InProcessNode) -> int:
    """How many leaves the log holds."""
    view = node.integrator().view
    size: int = view.read(lambda cursor: view.tables.state(cursor)[0])
    return size


def _refused_then_logged(node: InProcessNode, refusal: str) -> tuple[int, AuditReport]:
    """The gate refuses what a rogue writer stored (its problem matching ``refusal``); the
    rogue operator then logs it anyway with the node's key (a restarted integrator, no gate):
    the index of the first leaf logged, and the auditor's report."""
    start = _size(node)
    with pytest.raises(IntegrityViolation, match=refusal):
        node.integrator().catch_up()
    integrate_without_the_gate(node.integrator())
    return start, _audit(node.settings)


def test_a_backdated_step_is_refused_by_the_gate_and_named_by_the_auditor(
    node: InProcessNode,
) -> None:
    """A case event's time is its step's business time (the signed time, no later than the
    node received the command, no earlier than the case's previous step), so supervision's
    clocks can be re-derived from the log. A rogue writer moves an acceptance a day earlier
    (a late case looks on time): the gate refuses it; logged past the gate with the log key,
    the auditor names it."""
    settings, app = node.settings, node.app
    hall = node.add_hall("hn-backdate-hall", "430902000000")
    case_id = node.submit(hall, key="key-backdate-01", item_code="070303001000").case_id
    node.integrator().catch_up()
    node.run(hall, "accept", case_id=str(case_id))
    accepted = app.case_history(case_id)[-1]
    assert isinstance(accepted, Case.Accepted)
    at = _size(node) + 1  # the record's leaf, then the acceptance's
    earlier = accepted.timestamp - timedelta(days=1)
    rewrite_last_event(settings, "Case.Accepted", accepted.timestamp.isoformat().encode(),
                       earlier.isoformat().encode())  # fmt: skip
    with pytest.raises(IntegrityViolation) as refused:
        node.integrator().catch_up()
    assert refused.value.index == at
    assert "is not the step's business time" in str(refused.value)
    integrate_without_the_gate(node.integrator())
    report = _audit(settings)
    assert _kinds(report) == {(at, "content mismatch")}, report.summary()
    assert f"the event's time {earlier.isoformat()} is not" in report.findings[0].detail


def test_a_receipt_backdated_past_the_clock_window_is_refused_and_named(
    node: InProcessNode,
) -> None:
    """A case taken in a week ago (a deferred command) is decided today, late. A rogue node
    records the hall's genuine decision as received three days ago, and the decision at that
    time (its business time is the earlier of signed and received, so every event time agrees):
    supervision would see it on time. The node refuses a command signed more than its clock
    window from its clock, so no genuine receipt precedes the signed time by more: the gate
    refuses the record, and the auditor names it."""
    hall = node.add_hall("hn-backdated-receipt", "430902000000")
    week_ago = datetime.now(UTC) - timedelta(days=7)
    case_id = node.submit(
        hall, key="key-receipt-0001", item_code="070303001000", issued_at=week_ago, deferred=True
    ).case_id
    signed = hall.sign("accept", idempotency_key="key-receipt-0002", case_id=str(case_id))
    node.integrator().catch_up()
    at = _size(node)  # the record's leaf
    received = parse_command(signed.command).header.issued_at - timedelta(days=3)
    _store_past_the_state_machine(node, hall, signed, Case.Accepted, received=received)
    with pytest.raises(IntegrityViolation) as refused:
        node.integrator().catch_up()
    assert refused.value.index == at
    assert len(refused.value.problems) == 1, refused.value.problems
    assert refused.value.problems[0].startswith(
        f"backdated receipt: the node's record says it received the command at "
        f"{received.isoformat()}, 3 d 0 s before it was signed"
    ), refused.value.problems
    integrate_without_the_gate(node.integrator())
    assert _kinds(_audit(node.settings)) == {(at, "backdated receipt")}
    # Told the node's window is wider than three days, the auditor finds nothing.
    with _store(node.settings) as store:
        wide = audit_store(
            store, [_verifier(node.settings)], origin=node.settings.origin,
            clock_window=timedelta(days=4),
        )  # fmt: skip
    assert wide.ok, wide.summary()


def test_a_receipt_within_the_clock_window_before_the_signed_time_is_no_finding(
    node: InProcessNode,
) -> None:
    """A hall's clock a little ahead of the node's (within the window) is not a backdating: the
    record's time precedes the signed time, and the step's time is the record's."""
    hall = node.add_hall("hn-fast-clock", "430902000000")
    ahead = datetime.now(UTC) + timedelta(minutes=4)
    node.submit(hall, key="key-ahead-0001", item_code="070303001000", issued_at=ahead)
    node.integrator().catch_up()
    assert _audit(node.settings).ok


def test_a_step_the_cases_state_forbids_is_refused_by_the_gate_and_named_by_the_auditor(
    node: InProcessNode,
) -> None:
    """A hall signs 承办 of a case it has not accepted; the node refuses it. A rogue writer
    stores the genuine command and its event anyway: the gate refuses the transition, and the
    auditor names it once logged past the gate with the log key."""
    hall = node.add_hall("hn-skip-hall", "430902000000")
    case_id = node.submit(hall, key="key-skip-0001", item_code="070303001000").case_id
    signed = hall.sign("start_handling", idempotency_key="key-skip-0002", case_id=str(case_id))
    with pytest.raises(TransitionRefused, match="not allowed in state RECEIVED"):
        node.app.execute(signed)
    _refused_by_the_gate_and_named_by_the_auditor(
        node, hall, signed, Case.HandlingStarted,
        "invalid transition: start_handling is not allowed in state RECEIVED",
    )  # fmt: skip


def _refused_by_the_gate_and_named_by_the_auditor(
    node: InProcessNode, hall: CommandSigner, signed: SignedCommand, event: type, problem: str
) -> None:
    """A rogue writer stores ``signed`` (which the node refused) and its ``event`` anyway: the
    gate refuses the event with ``problem`` alone, and the auditor names its leaf with the
    problem's kind once logged past the gate with the log key."""
    node.integrator().catch_up()
    at = _size(node) + 1
    _store_past_the_state_machine(node, hall, signed, event)
    with pytest.raises(IntegrityViolation) as refused:
        node.integrator().catch_up()
    assert refused.value.index == at
    assert refused.value.problems == [problem], refused.value.problems
    integrate_without_the_gate(node.integrator())
    kind = problem.split(":", 1)[0]
    assert _kinds(_audit(node.settings)) == {(at, kind)}


def test_a_step_by_a_hall_that_does_not_hold_the_case_is_refused_and_named(
    node: InProcessNode,
) -> None:
    """Another hall of the node signs 受理 of a case it does not hold; the node refuses it. A
    rogue writer stores the genuine command and its event anyway: a genuine signature of a
    hall that may not act is no authority, so the gate refuses it and the auditor names it."""
    holder = node.add_hall("hn-holding-hall", "430902000000")
    other = node.add_hall("hn-meddling-hall", "430902000000")
    case_id = node.submit(holder, key="key-meddle-0001", item_code="070303001000").case_id
    signed = other.sign("accept", idempotency_key="key-meddle-0002", case_id=str(case_id))
    with pytest.raises(NotFound):  # to a hall that is no party, the case does not exist
        node.app.execute(signed)
    _refused_by_the_gate_and_named_by_the_auditor(
        node, other, signed, Case.Accepted,
        "unauthorised hall: accept: hall hn-meddling-hall: this hall does not hold the case",
    )  # fmt: skip


def test_a_genuine_command_moved_onto_another_case_is_refused_and_named(
    node: InProcessNode,
) -> None:
    """A rogue writer applies a hall's genuine 受理 of one case to another case of the same
    hall (its record and the acceptance on the other case): the gate refuses the record, and
    the auditor names both the record and the event once logged past the gate."""
    settings = node.settings
    hall = node.add_hall("hn-moved-hall", "430902000000")
    meant = node.submit(hall, key="key-moved-0001", item_code="070303001000").case_id
    other = node.submit(hall, key="key-moved-0002", item_code="070303001000").case_id
    node.integrator().catch_up()
    at = _size(node)
    signed = hall.sign("accept", idempotency_key="key-moved-0003", case_id=str(meant))
    _store_past_the_state_machine(node, hall, signed, Case.Accepted, onto=other)
    with pytest.raises(IntegrityViolation) as refused:
        node.integrator().catch_up()
    assert refused.value.index == at
    assert refused.value.problems == [
        f"mis-bound signature: the record says it acted on {other}, the command on {meant}"
    ]
    integrate_without_the_gate(node.integrator())
    kinds = _kinds(_audit(settings))
    assert kinds == {(at, "mis-bound signature"), (at + 1, "mis-bound event")}, kinds


def test_a_decision_turned_from_denied_to_approved_is_refused_and_named(
    node: InProcessNode,
) -> None:
    """A rogue writer turns a hall's signed denial (不予) into an approval in the stored
    event: the gate refuses it, and the auditor names it once logged past the gate."""
    settings = node.settings
    hall = node.add_hall("hn-denying-hall", TOWNSHIP)
    case_id = str(node.submit(hall, key="key-denied-0001").case_id)
    for action in ("accept", "start_handling"):
        node.run(hall, action, case_id=case_id)
    node.integrator().catch_up()
    at = _size(node) + 1
    node.run(hall, "decide", case_id=case_id, approved=False, reason="不符合条件")
    rewrite_last_event(settings, "Case.Decided", b'"approved":false', b'"approved":true')
    with pytest.raises(IntegrityViolation) as refused:
        node.integrator().catch_up()
    assert refused.value.index == at
    assert refused.value.problems == ["content mismatch: approved differs from the signed command"]
    integrate_without_the_gate(node.integrator())
    assert _kinds(_audit(settings)) == {(at, "content mismatch")}


def _issued_certificate(node: InProcessNode, hall: CommandSigner, key: str) -> UUID:
    """An elder-card case ``hall`` took in, decided, concluded and issued the certificate of."""
    case_id: UUID = node.submit(hall, key=key).case_id
    for action, arguments in (
        ("accept", {}),
        ("start_handling", {}),
        ("decide", {"approved": True, "reason": "符合条件"}),
        ("conclude", {}),
        ("issue_certificate", {"type_code": "150001", "issuer_code": "11430902MB0000001X",
                               "authority": "益阳市资阳区长春镇人民政府", "valid_until": ""}),
    ):  # fmt: skip
        node.run(hall, action, case_id=str(case_id), **arguments)
    return case_id


def test_a_replayed_command_is_refused_by_a_restarted_gate_and_named_by_the_auditor(
    node: InProcessNode,
) -> None:
    """A rogue writer replays a hall's genuine suspension of a certificate the hall has since
    reinstated: a second record of the same signed command (the same record id, its next
    version, announcing the case's next version) and the suspension again, at its business
    time. The gate of a node restarted since the genuine command (which remembers no
    idempotency key) refuses it; logged past the gate with the log key, the auditor names
    the replay and nothing else."""
    settings, app = node.settings, node.app
    hall = node.add_hall("hn-replay-hall", TOWNSHIP)
    case_id = _issued_certificate(node, hall, "key-replay-0001")
    node.run(hall, "suspend_certificate", case_id=str(case_id), reason="核查")
    node.run(hall, "reinstate_certificate", case_id=str(case_id), reason="核查完毕")
    node.integrator().catch_up()
    genuine = next(
        app.mapper.to_domain_event(n)
        for n in app.recorder.select_notifications(start=1, limit=1000)
        if n.topic.endswith("CommandRecord.Recorded")
        and app.mapper.to_domain_event(n).action == "suspend_certificate"  # type: ignore[attr-defined]
        and app.mapper.to_domain_event(n).signer == hall.hall_id  # type: ignore[attr-defined]
    )
    case = app.get_case(case_id)
    again = dataclasses.replace(
        genuine,  # type: ignore[type-var]
        originator_version=2, first_version=case.version + 1, last_version=case.version + 1,
    )  # fmt: skip
    app.recorder.insert_events([app.mapper.to_stored_event(again)])
    history = app.case_history(case_id)
    suspended = next(e for e in history if isinstance(e, Case.CertificateSuspended))
    case.trigger_event(Case.CertificateSuspended, actor=suspended.actor, reason=suspended.reason,
                       timestamp=case.last_step_at)  # fmt: skip
    app.save(case)
    assert app.get_case(case_id).certificate_status is CertificateStatus.SUSPENDED
    at = _size(node)
    with pytest.raises(IntegrityViolation, match="command replayed") as refused:
        node.integrator().catch_up()
    assert refused.value.index == at
    integrate_without_the_gate(node.integrator())
    report = _audit(settings)
    assert _kinds(report) == {(at, "command replayed")}, report.summary()


def test_a_step_attributed_to_another_hall_is_named(node: InProcessNode) -> None:
    """A rogue writer makes a hall's genuine 受理 say that another hall accepted the case: the
    gate refuses it, and the auditor names it once logged past the gate with the log key."""
    settings = node.settings
    hall = node.add_hall("hn-own-hall", "430902000000")
    node.add_hall("hn-blamed-hall", "430902000000")
    case_id = node.submit(hall, key="key-blame-0001", item_code="070303001000").case_id
    node.integrator().catch_up()
    node.run(hall, "accept", case_id=str(case_id))
    at = _size(node) + 1
    rewrite_last_event(settings, "Case.Accepted", b'"hn-own-hall"', b'"hn-blamed-hall"')
    with pytest.raises(IntegrityViolation, match="the acting hall is not the signer") as refused:
        node.integrator().catch_up()
    assert refused.value.index == at
    integrate_without_the_gate(node.integrator())
    report = _audit(settings)
    assert _kinds(report) == {(at, "content mismatch")}, report.summary()
    assert report.findings[0].detail == "the acting hall is not the signer"


def test_a_case_moved_to_another_intake_region_is_named(node: InProcessNode) -> None:
    """A rogue writer files a hall's genuine 收件 under another intake region (the statistics
    and every region query count it there): the gate refuses it, and the auditor names it."""
    settings = node.settings
    hall = node.add_hall("hn-intake-hall", "430902000000")
    node.integrator().catch_up()
    at = _size(node) + 1  # the record's leaf, then the submission's
    node.submit(hall, key="key-region-0001", item_code="070303001000")
    rewrite_last_event(settings, "Case.Submitted", b'"intake_region":"430902000000"',
                       b'"intake_region":"430921000000"')  # fmt: skip
    with pytest.raises(IntegrityViolation, match="the intake region is not the hall's") as refused:
        node.integrator().catch_up()
    assert refused.value.index == at
    integrate_without_the_gate(node.integrator())
    report = _audit(settings)
    assert _kinds(report) == {(at, "content mismatch")}, report.summary()


def test_a_genuine_signature_claimed_by_an_unsigned_event_is_named(node: InProcessNode) -> None:
    """A rogue operator with the log key gives an event no command produced a leaf that claims
    a hall's genuine signed command (signer, key id, signature and bytes): the auditor names
    the leaf, whose stored event is no command record."""
    settings, app = node.settings, node.app
    township = _last_command(settings, "hn-shatou-town")
    case_id = next(
        n.originator_id
        for n in app.recorder.select_notifications(start=1, limit=500)
        if n.topic.endswith("Case.Submitted")
    )
    case = app.get_case(case_id)  # type: ignore[arg-type]
    actor = next(e for e in app.case_history(case.id) if hasattr(e, "actor")).actor
    case.trigger_event(Case.Withdrawn, actor=actor, reason="never asked for")
    app.save(case)
    at = _size(node)

    def claim_the_township(index: int, notification: Notification, leaf: Leaf) -> Leaf:
        return dataclasses.replace(
            leaf, authority=township.authority, signer=township.signer, cause=None,
            key_id=township.key_id, signature=township.signature, command=township.command,
        )  # fmt: skip

    integrate_without_the_gate(node.integrator(), claim_the_township)
    report = _audit(settings)
    assert _kinds(report) == {(at, "mis-bound signature")}, report.summary()
    assert report.findings[0].detail == "a hall command leaf on a hub.domain.case:Case.Withdrawn"


def test_a_command_of_a_hall_never_registered_is_named(node: InProcessNode) -> None:
    """A rogue operator with the log key logs a 收件 signed by a key of a hall the admin never
    registered: the auditor names its signer as unknown."""
    settings = node.settings
    ghost = CommandSigner(Ed25519PrivateKey.generate(), node=settings.origin, operator="op",
                          hall_id="hn-ghost-hall", region="430902000000")  # fmt: skip
    at = _size(node)
    _forge_submission(node, ghost, "key-ghost-0001")
    integrate_without_the_gate(node.integrator())
    kinds = _kinds(_audit(settings))
    assert (at, "unknown signer") in kinds, kinds
    # (The case's events, made by hand, differ from what the node makes besides.)
    assert {kind for _i, kind in kinds} <= {"unknown signer", "content mismatch"}


def test_a_second_genesis_is_refused_by_the_gate_and_named_by_the_auditor(
    node: InProcessNode,
) -> None:
    """A second genesis would name a new admin key (who then registers halls): the gate
    refuses it, and the auditor names it once logged past the gate with the log key."""
    settings, app = node.settings, node.app
    genesis = app.genesis()
    forged = Node._create(
        Node.Initialised, id=uuid4(), origin=settings.origin, region=genesis.region,
        log_key=genesis.log_key, admin=next(iter(genesis.admins)),
        admin_key=public_key_b64(Ed25519PrivateKey.generate()),
    )  # fmt: skip
    app.save(forged)
    at = _size(node)
    with pytest.raises(IntegrityViolation, match="a second genesis") as refused:
        node.integrator().catch_up()
    assert refused.value.index == at
    integrate_without_the_gate(node.integrator())
    assert _kinds(_audit(settings)) == {(at, "unauthorised event")}


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


def test_another_history_at_the_size_the_node_signed_is_refused_at_start(
    node: InProcessNode, request: pytest.FixtureRequest
) -> None:
    """The head file names the last checkpoint the node signed. A database restored from an
    older backup and grown again — by a node run without its head file — to that size and
    beyond, with other events, has another root at that size: with the head file back in its
    data directory, the node refuses to start. A head file this node did not sign is refused
    too, never taken for its last checkpoint."""
    settings = node.settings
    node.close()
    restore = _backup(settings, request)
    node.app = build_application(settings)
    _more_story(node)
    head = NodePaths(settings.data_dir).head
    signed = head.read_bytes()
    node.close()
    restore()
    head.unlink()
    node.app = build_application(settings)
    for _ in range(2):
        _more_story(node)  # another history, longer than the one signed
    head.write_bytes(signed)
    with pytest.raises(StoreMismatch, match="another history"):
        build_integrator(settings, node.app)
    foreign = Signer.generate(settings.origin)
    head.write_bytes(sign_checkpoint(Checkpoint(settings.origin, 1, b"\x00" * 32), foreign))
    with pytest.raises(StoreMismatch, match="not a checkpoint this node signed"):
        build_integrator(settings, node.app)


def test_a_database_restored_under_a_running_node_stops_its_signing(tmp_path: Path) -> None:
    """The running integrator checked its log against the head file when it started. The
    database restored under it from an older backup (the head file kept; SQLite's online
    backup, as an operator restores the embedded store), and new events stored since: it
    refuses to sign again, stores no checkpoint, and the head file is unchanged."""
    settings = Settings(data_dir=tmp_path / "node", checkpoint_every=16)
    node = InProcessNode.start(settings)
    try:
        hall = node.add_hall("hn-running-hall", "430902000000")
        node.submit(hall, key="key-running-00", item_code="070303001000")
        running = node.integrator()
        running.catch_up()
        backup = tmp_path / "backup.sqlite3"
        with sqlite3.connect(settings.sqlite_path) as live, sqlite3.connect(backup) as copy:
            live.backup(copy)
        older = _sql(settings, "SELECT MAX(size) FROM ledger_checkpoints")[0][0]
        for number in range(1, 4):
            node.submit(hall, key=f"key-running-{number:02d}", item_code="070303001000")
        running.catch_up()
        head = NodePaths(settings.data_dir).head
        signed = head.read_bytes()
        with sqlite3.connect(backup) as copy, sqlite3.connect(settings.sqlite_path) as live:
            copy.backup(live)
        for number in range(4, 8):
            node.submit(hall, key=f"key-running-{number:02d}", item_code="070303001000")
        with pytest.raises(StoreMismatch, match="older backup|another history"):
            for _ in range(3):
                running.step()
            running.checkpoint_now()
        assert _sql(settings, "SELECT MAX(size) FROM ledger_checkpoints")[0][0] == older
        assert head.read_bytes() == signed
    finally:
        node.close()


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


def test_an_erasure_attributed_to_another_admin_is_refused_and_named(node: InProcessNode) -> None:
    """A rogue writer stores an admin's genuine erasure naming another admin as the one who
    erased (the acting admin must be the signer): the gate refuses it, and logged past the gate
    the auditor names it."""
    settings, app = node.settings, node.app
    case_id = next(
        n.originator_id
        for n in app.recorder.select_notifications(start=1, limit=500)
        if n.topic.endswith("Case.Submitted")
    )
    node.integrator().catch_up()
    app.execute(node.admin.sign("erase_personal_data", case_id=str(case_id), reason="申请人要求"))
    admin = node.admin.admin
    rewrite_last_event(
        settings, "Case.PersonalDataErased", f'"admin":"{admin}"'.encode(), b'"admin":"someone"'
    )
    start, report = _refused_then_logged(node, "the acting admin is not the signer")
    assert _kinds(report) == {(start + 1, "content mismatch")}, report.summary()
    assert "the acting admin is not the signer" in report.findings[0].detail


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


def test_an_export_with_events_cut_short_missing_or_without_its_checkpoint_is_named(
    node: InProcessNode, tmp_path: Path
) -> None:
    """What an auditor holding only an export (and the public key) is told when part of it is
    not there: an events bundle cut short or missing is named at its first leaf, and the
    rest is still checked; an export without its checkpoint is one finding, not a crash."""
    settings = node.settings
    integrator = node.integrator()
    verifiers = [_verifier(settings)]

    def exported(name: str) -> tuple[Path, Path]:
        directory = tmp_path / name
        export_log(integrator.view, directory, settings.origin)
        bundle = next(p for p in (directory / "events").rglob("*") if p.is_file())
        return directory, bundle

    for damage, message in (
        (lambda bundle: bundle.write_bytes(bundle.read_bytes()[:-3]), "truncated event bundle"),
        (lambda bundle: bundle.write_bytes(bundle.read_bytes()[:2]), "truncated event bundle"),
        (Path.unlink, "No such file"),
    ):
        directory, bundle = exported(f"export-{message[:9]}-{len(list(tmp_path.iterdir()))}")
        damage(bundle)
        report = audit_export(directory, verifiers, origin=settings.origin)
        assert not report.ok
        assert any(
            (f.index, f.kind) == (0, "export") and message in f.detail for f in report.findings
        ), report.summary()
    directory, _bundle = exported("export-without-checkpoint")
    (directory / "checkpoint").unlink()
    report = audit_export(directory, verifiers, origin=settings.origin)
    assert [(f.index, f.kind) for f in report.findings] == [(None, "export")], report.summary()


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

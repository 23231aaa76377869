"""The auditor's checkpoint checks on a log held in memory (``audit_log`` over ``LogContents``).

The log is a genesis and certificate status lists, all the node's own acts (``NODE`` leaves), so
it verifies with the log key alone; checkpoint rows are then altered as a rogue operator with SQL
access could. A checkpoint's size and root are its signed note's, never its row's.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from hub.domain.codec import event_mapper
from hub.domain.node import Node
from hub.domain.status_lists import StatusListPublication, digest_of_log
from hub.integrity.audit import AuditReport, LogContents, audit_log
from ledger import Authority, Checkpoint, Leaf, Signer, sign_checkpoint
from ledger.merkle import leaf_hash, root_from_leaf_hashes
from ledger.storage import StoredCheckpoint

ORIGIN = "tongban.example/audit-unit"
LOG = Signer.generate(ORIGIN)


def _public_key() -> str:
    return base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes_raw()).decode()


def _log(size: int) -> tuple[list[Leaf], list[StoredEvent]]:
    """A genesis, then ``size - 1`` status lists (each of the log before it)."""
    aggregates = [
        Node.initialise(origin=ORIGIN, region="430902000000", log_key=LOG.verifier_key(),
                        admin="admin", admin_key=_public_key()),
        *(StatusListPublication.publish(
            origin=ORIGIN, log_size=index, bits_digest=digest_of_log(index, frozenset(),
                                                                     frozenset()),
            token_digest=f"{index:064x}", kid="k", valid_from=1, valid_until=2,
        ) for index in range(1, size)),
    ]  # fmt: skip
    mapper = event_mapper()
    leaves, events = [], []
    for index, aggregate in enumerate(aggregates):
        (event,) = aggregate.collect_events()
        stored = mapper.to_stored_event(event)
        leaves.append(
            Leaf(origin=ORIGIN, index=index, aggregate_id=aggregate.id,
                 version=stored.originator_version, topic=get_topic(type(event)),
                 event_hash=hashlib.sha256(stored.state).digest(), authority=Authority.NODE)
        )  # fmt: skip
        events.append(stored)
    return leaves, events


def _checkpoint(leaves: list[Leaf], size: int) -> StoredCheckpoint:
    root = root_from_leaf_hashes(leaf.leaf_hash() for leaf in leaves[:size])
    return StoredCheckpoint(size, root, sign_checkpoint(Checkpoint(ORIGIN, size, root), LOG), 0.0)


def _audit(
    leaves: list[Leaf],
    events: list[StoredEvent],
    rows: list[StoredCheckpoint],
    trusted: bytes | None = None,
) -> AuditReport:
    def leaf_rows() -> Iterator[tuple[int, bytes, bytes | None]]:
        return ((leaf.index, leaf.encode(), leaf_hash(leaf.encode())) for leaf in leaves)

    contents = LogContents(
        checkpoints=rows,
        leaf_rows=leaf_rows,
        events=lambda: iter(enumerate(events, start=1)),
        node_rows=list,
        position=len(events),
        history=None,
    )
    return audit_log(contents, [LOG.verifier()], origin=ORIGIN, trusted=trusted)


def _kinds(report: AuditReport) -> list[tuple[int | None, str]]:
    return sorted(((f.index, f.kind) for f in report.findings), key=str)


def test_the_log_in_memory_verifies() -> None:
    leaves, events = _log(7)
    rows = [_checkpoint(leaves, size) for size in (3, 5, 7)]
    report = _audit(leaves, events, rows)
    assert report.ok, report.summary()
    assert (report.leaves, report.checkpoints, report.latest) == (7, 3, rows[-1].note)


def test_a_row_is_never_believed_over_its_note() -> None:
    leaves, events = _log(7)
    three, five, seven = (_checkpoint(leaves, size) for size in (3, 5, 7))
    # A root changed in the row: named, with both roots.
    altered = three._replace(root=b"\x11" * 32)
    report = _audit(leaves, events, [altered, five, seven])
    assert _kinds(report) == [(None, "checkpoint row")]
    detail = report.findings[0].detail
    assert f"row says size 3 root {'11' * 8}…, its signed note size 3 root" in detail, detail
    assert three.root.hex()[:16] in detail
    # Rows in another order than their notes (notes swapped): each named, both notes' roots
    # derived and compared in the notes' order — no traceback from a backwards proof.
    swapped = [three._replace(note=five.note), five._replace(note=three.note), seven]
    report = _audit(leaves, events, swapped)
    assert _kinds(report) == [(None, "checkpoint row")] * 2, report.summary()
    assert report.latest == seven.note
    # The newest row moved to another size: named, and the newest note is still the one
    # verified (no "beyond the log", no leaf counted unsigned).
    report = _audit(leaves, events, [three, five, seven._replace(size=6)])
    assert _kinds(report) == [(None, "checkpoint row")], report.summary()
    assert (report.latest, report.unsigned) == (seven.note, 0)


def test_a_trusted_checkpoint_that_is_not_the_logs_is_one_finding() -> None:
    """The state an auditor kept (``--state``) must verify with the log key; if it does not,
    nothing is compared with it, and that is said."""
    leaves, events = _log(4)
    rows = [_checkpoint(leaves, 4)]
    other = Signer.generate(ORIGIN)
    for trusted in (b"not a note", sign_checkpoint(Checkpoint(ORIGIN, 4, rows[0].root), other)):
        report = _audit(leaves, events, rows, trusted=trusted)
        assert _kinds(report) == [(None, "trusted checkpoint")], report.summary()
        assert "does not verify with the log key" in report.findings[0].detail
    assert _audit(leaves, events, rows, trusted=rows[0].note).ok

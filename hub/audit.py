"""The auditor's tools: verify a node's whole log, or an export, with only trusted public keys.

:func:`audit_store` checks a node's database end to end:

1. every stored checkpoint's signature (with the log keys given, never keys read from the store);
2. every root, re-derived from the stored leaves alone (ignoring the stored interior nodes), at
   every checkpoint size, and a consistency proof between each pair of successive checkpoints;
3. every stored event re-hashed against its leaf, matched by (aggregate id, version) and by
   position, which names each UPDATE (hash differs), DELETE (a leaf without its event),
   reordering (an event at another position than its leaf) and insertion (an event the
   integrator passed that has no leaf);
4. every hall signature a leaf commits to, over the exact command bytes, with the hall key the
   log itself recorded (the hall registry is event-sourced and so covered by the same log).

:func:`audit_export` checks a tlog-tiles export (``tongban ledger export``): the signed
checkpoint, every tile and entry bundle, and that entry ``i`` is the leaf with index ``i``.

Both return an :class:`AuditReport` listing each finding with the index it concerns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eventsourcing.persistence import Notification

from hub.application.hub import HubApplication
from hub.application.idempotency import CommandRecord, hall_key_id
from hub.domain.hall import Hall, decode_public_key, hall_aggregate_id
from hub.integrator import COMMAND_RECORD_TOPIC, LedgerView, event_hash
from ledger import (
    CompactRange,
    Leaf,
    LedgerError,
    NoteVerifier,
    Receipt,
    leaf_hash,
    open_checkpoint,
    verify_consistency,
    verify_receipt,
)
from ledger.merkle import LeafHashReader, consistency_proof
from ledger.tiles import verify_tiles
from ledger.witness import WitnessPolicy

Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    """The default: report nothing."""


@dataclass(frozen=True)
class Finding:
    """One thing wrong, at one leaf index (or None when it concerns no single leaf)."""

    index: int | None
    kind: str
    detail: str

    def __str__(self) -> str:
        where = f"index {self.index}" if self.index is not None else "log"
        return f"{where}: {self.kind}: {self.detail}"


@dataclass
class AuditReport:
    """What an audit checked and found."""

    leaves: int = 0
    events: int = 0
    checkpoints: int = 0
    hall_signatures: int = 0
    pending: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.findings

    def add(self, index: int | None, kind: str, detail: str) -> None:
        """Record a finding."""
        self.findings.append(Finding(index, kind, detail))

    def summary(self) -> str:
        """A human-readable report."""
        lines = [
            f"leaves: {self.leaves}, stored events: {self.events} "
            f"({self.pending} not yet integrated), checkpoints: {self.checkpoints}, "
            f"hall signatures verified: {self.hall_signatures}",
        ]
        if self.ok:
            lines.append("OK: every checkpoint, root, event and signature verified")
        else:
            lines.append(f"FAILED: {len(self.findings)} finding(s)")
            lines.extend(f"  {finding}" for finding in sorted(self.findings, key=_order))
        return "\n".join(lines)


def _order(finding: Finding) -> tuple[int, str]:
    return (-1 if finding.index is None else finding.index, finding.kind)


def audit_store(
    app: HubApplication,
    view: LedgerView,
    log_verifiers: Sequence[NoteVerifier],
    *,
    origin: str,
    progress: Progress = _no_progress,
) -> AuditReport:
    """Verify a node's database: checkpoints, roots, events against leaves, hall signatures."""
    report = AuditReport()
    leaves, checkpoints = view.read(lambda cursor: _load(view, cursor, report))
    report.leaves = len(leaves)
    report.checkpoints = len(checkpoints)
    _check_roots(leaves, checkpoints, log_verifiers, origin, report, progress)
    by_event = {(leaf.aggregate_id, leaf.version): leaf for leaf in leaves if leaf is not None}
    position = view.max_tracking_id(app.name) or 0
    _check_events(app, leaves, by_event, position, report, progress)
    return report


def _load(
    view: LedgerView, cursor: Any, report: AuditReport
) -> tuple[list[Leaf | None], list[Any]]:
    """All leaves in index order; an unreadable one is reported and kept as None."""
    size, _ = view.tables.state(cursor)
    leaves: list[Leaf | None] = []
    while len(leaves) < size:
        try:
            leaves.extend(view.tables.iter_leaves(cursor, len(leaves), size))
        except LedgerError as error:
            report.add(len(leaves), "leaf unreadable", str(error))
            leaves.append(None)
    return leaves, view.tables.checkpoints(cursor)


def _check_roots(
    leaves: list[Leaf | None],
    checkpoints: list[Any],
    log_verifiers: Sequence[NoteVerifier],
    origin: str,
    report: AuditReport,
    progress: Progress,
) -> None:
    hashes: list[bytes] = []
    compact = CompactRange()
    roots: dict[int, bytes] = {}
    wanted = {stored.size for stored in checkpoints}
    for position, leaf in enumerate(leaves):
        if leaf is None:
            report.add(position, "roots not derivable", "no root past an unreadable leaf")
            break
        if leaf.index != position:
            report.add(position, "leaf index", f"the leaf at position {position} says {leaf.index}")
        if leaf.origin != origin:
            report.add(position, "leaf origin", f"{leaf.origin!r}, expected {origin!r}")
        hashes.append(leaf_hash(leaf.encode()))
        compact.append(hashes[-1])
        if compact.size in wanted:
            roots[compact.size] = compact.root()
        if position % 10_000 == 0:
            progress("roots", position, len(leaves))
    previous: tuple[int, bytes] | None = None
    reader = LeafHashReader(hashes)
    for stored in checkpoints:
        try:
            signed = open_checkpoint(stored.note, log_verifiers, origin=origin)
        except LedgerError as error:
            report.add(None, "checkpoint signature", f"checkpoint of size {stored.size}: {error}")
            continue
        body = signed.checkpoint
        if (body.size, body.root) != (stored.size, stored.root):
            report.add(None, "checkpoint row", f"row says size {stored.size}, note {body.size}")
        derived = roots.get(body.size)
        if derived is None:
            report.add(None, "checkpoint beyond log", f"size {body.size} > {len(leaves)} leaves")
            continue
        if derived != body.root:
            report.add(
                body.size - 1,
                "root mismatch",
                f"the stored leaves give root {derived.hex()[:16]}… at size {body.size}, "
                f"the signed checkpoint says {body.root.hex()[:16]}… (a leaf was altered)",
            )
            continue
        if previous is not None:
            old_size, old_root = previous
            proof = consistency_proof(old_size, body.size, reader)
            try:
                verify_consistency(old_size, body.size, proof, old_root, body.root)
            except LedgerError as error:
                report.add(None, "inconsistent checkpoints", f"{old_size}→{body.size}: {error}")
        previous = (body.size, body.root)


def _check_events(
    app: HubApplication,
    leaves: list[Leaf | None],
    by_event: dict[tuple[UUID, int], Leaf],
    position: int,
    report: AuditReport,
    progress: Progress,
) -> None:
    matched: set[int] = set()
    expected_index = 0
    # From the very first row, whatever its id: a forged row with id 0 or below is read too.
    start: int | None = None
    halls: dict[str, Hall] = {}
    while True:
        batch = app.recorder.select_notifications(
            start=start, limit=1000, inclusive_of_start=start is None
        )
        if not batch:
            break
        for notification in batch:
            report.events += 1
            key = (notification.originator_id, notification.originator_version)
            leaf = by_event.get(key)  # type: ignore[arg-type]
            if leaf is None:
                if notification.id <= position:
                    report.add(
                        None,
                        "event not in the log",
                        f"stored event {key[0]} v{key[1]} (notification {notification.id}) "
                        "has no leaf although the log passed it: inserted",
                    )
                else:
                    report.pending += 1
                continue
            matched.add(leaf.index)
            _check_event(app, notification, leaf, expected_index, report, halls)
            expected_index += 1
        start = batch[-1].id
        progress("events", report.events, len(leaves))
    for leaf in leaves:
        if leaf is not None and leaf.index not in matched:
            report.add(
                leaf.index,
                "event missing",
                f"no stored event {leaf.aggregate_id} v{leaf.version} ({leaf.topic}): deleted",
            )


def _check_event(
    app: HubApplication,
    notification: Notification,
    leaf: Leaf,
    expected_index: int,
    report: AuditReport,
    halls: dict[str, Hall],
) -> None:
    if leaf.index != expected_index:
        report.add(
            leaf.index,
            "order",
            f"event {leaf.aggregate_id} v{leaf.version} is stored at position "
            f"{expected_index}, its leaf is {leaf.index}: reordered",
        )
    if notification.topic != leaf.topic:
        report.add(leaf.index, "topic", f"stored {notification.topic}, logged {leaf.topic}")
    if event_hash(notification) != leaf.event_hash:
        report.add(
            leaf.index,
            "event modified",
            f"stored event {leaf.aggregate_id} v{leaf.version} hashes to "
            f"{event_hash(notification).hex()[:16]}…, the leaf commits to "
            f"{leaf.event_hash.hex()[:16]}…",
        )
        return
    if leaf.hall_signature:
        _check_hall_signature(app, notification, leaf, report, halls)


def _check_hall_signature(
    app: HubApplication,
    notification: Notification,
    leaf: Leaf,
    report: AuditReport,
    halls: dict[str, Hall],
) -> None:
    if notification.topic != COMMAND_RECORD_TOPIC:
        report.add(leaf.index, "hall signature", "a signature on an event that records none")
        return
    record = app.mapper.to_domain_event(notification)
    assert isinstance(record, CommandRecord.Recorded)
    if record.signature != leaf.hall_signature or record.key_id != leaf.hall_key_id:
        report.add(leaf.index, "hall signature", "the leaf and the stored record disagree")
        return
    hall = halls.get(record.hall_id)
    if hall is None:
        hall = app.repository.get(hall_aggregate_id(record.hall_id))
        assert isinstance(hall, Hall)
        halls[record.hall_id] = hall
    keys = [k for k in hall.public_keys if hall_key_id(k) == leaf.hall_key_id]
    if not keys:
        report.add(
            leaf.index, "hall signature", f"hall {hall.hall_id} never had key {leaf.hall_key_id}"
        )
        return
    try:
        Ed25519PublicKey.from_public_bytes(decode_public_key(keys[0])).verify(
            record.signature, record.signed_bytes
        )
    except InvalidSignature:
        report.add(leaf.index, "hall signature", f"does not verify with {hall.hall_id}'s key")
        return
    report.hall_signatures += 1


def audit_export(
    directory: Path,
    log_verifiers: Sequence[NoteVerifier],
    *,
    origin: str,
    progress: Progress = _no_progress,
) -> AuditReport:
    """Verify a tlog-tiles export: checkpoint signature, every tile, and each entry's leaf."""
    report = AuditReport()

    def on_entry(index: int, entry: bytes) -> None:
        report.leaves += 1
        try:
            leaf = Leaf.decode(entry)
        except LedgerError as error:
            report.add(index, "entry", f"not a leaf: {error}")
            return
        if leaf.index != index:
            report.add(index, "entry", f"entry {index} holds the leaf of index {leaf.index}")
        if leaf.origin != origin:
            report.add(index, "entry", f"origin {leaf.origin!r}, expected {origin!r}")

    try:
        audit = verify_tiles(
            directory,
            log_verifiers,
            origin=origin,
            on_entry=on_entry,
            progress=lambda done, total: progress("tiles", done, total),
        )
    except LedgerError as error:
        report.add(None, "export", str(error))
        return report
    report.checkpoints = 1
    for problem in audit.problems:
        first = min(problem.indices) if getattr(problem, "indices", None) else None
        report.add(first, "tile", f"{problem.path}: {problem.message}")
    return report


def receipt_for(view: LedgerView, case_id: UUID, version: int) -> Receipt | None:
    """An offline receipt for one event, once a checkpoint covers its leaf; else None."""

    def work(cursor: Any) -> Receipt | None:
        leaf = view.tables.leaf_for(cursor, case_id, version)
        if leaf is None:
            return None
        checkpoint = view.tables.checkpoint_at_least(cursor, leaf.index + 1)
        if checkpoint is None:
            return None
        proof = view.tables.inclusion_proof(cursor, leaf.index, checkpoint.size)
        return Receipt.for_leaf(leaf, proof, checkpoint.note)

    result: Receipt | None = view.read(work)
    return result


def case_proof_status(
    app: HubApplication,
    view: LedgerView,
    case_id: UUID,
    log_verifiers: Iterable[NoteVerifier],
) -> list[tuple[Any, Leaf | None, str]]:
    """Each stored event of a case with its leaf and proof status, for ``tongban audit case``."""
    verifiers = list(log_verifiers)
    policy = WitnessPolicy(0, ())
    stored = {
        n.originator_version: n
        for n in app.recorder.select_events(case_id)  # the raw stored bytes
    }
    rows: list[tuple[Any, Leaf | None, str]] = []
    for event in app.case_history(case_id):
        version = event.originator_version
        receipt = receipt_for(view, case_id, version)
        if receipt is None:
            rows.append((event, None, "pending: not yet in a signed checkpoint"))
            continue
        try:
            verified = verify_receipt(receipt, verifiers, policy, event=stored[version].state)
        except LedgerError as error:
            rows.append((event, receipt.leaf(), f"FAILED: {error}"))
            continue
        size = verified.checkpoint.checkpoint.size
        rows.append((event, verified.leaf, f"proven in checkpoint of size {size}"))
    return rows


__all__ = [
    "AuditReport",
    "Finding",
    "audit_export",
    "audit_store",
    "case_proof_status",
    "receipt_for",
]

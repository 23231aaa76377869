"""The auditor: verify a node's whole log — its database or an export — with only public keys.

Read-only by construction: it opens the store through :class:`~hub.integrity.store.ReadOnlyStore`
(or reads an export's files), never builds the node's application, needs only the log's public
key, decrypts nothing, and creates nothing (except the state file it is explicitly given).

:func:`audit_log` checks, and names each finding by leaf index:

1. every stored checkpoint's signature (with the trusted log keys, never keys from the store),
   and that its stored row says what its note says;
2. every leaf: it decodes, its index is its position, its origin is the log's, and the stored
   ``leaf_hash`` column is the hash of its encoding; every stored interior-node row is re-derived
   from the leaf hashes;
3. every root, re-derived from the leaves alone, at every checkpoint size, and the consistency of
   each checkpoint with the one before;
4. every stored event re-hashed against its leaf, matched by (aggregate id, version) and by
   position: an UPDATE (hash differs), DELETE (a leaf without its event), reordering and insertion
   (an event the integrator passed that has no leaf) are each named;
5. the binding of every event to the signed command that authorised it, and every signature, with
   each signer's key history taken from the log itself (:mod:`hub.integrity.binding`);
6. rollback and forks: when given the last checkpoint this auditor verified (``trusted``), the
   log must be an append-only extension of it — the finding names both checkpoints otherwise.

Leaves after the latest signed checkpoint are checked like the rest but no signature covers them
yet: the report counts them as *unsigned*.

A leaf deleted from the middle of the log is named once where it is missing (one finding per run
of missing indices); the leaves after it are still read and their events and bindings checked,
and the checkpoints covering it are named together as unverifiable (their roots cannot be
re-derived without it), rather than every later leaf being reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from hub.domain.case import CLOCK_WINDOW
from hub.errors import NotFound
from hub.integrity.binding import (
    AGENT_TOPICS,
    NODE_TOPICS,
    WARNING_TOPIC,
    LogChecker,
    Problem,
)
from hub.integrity.store import ReadOnlyStore
from ledger import (
    Checkpoint,
    CompactRange,
    Leaf,
    LedgerError,
    NoteVerifier,
    Receipt,
    Verifier,
    WitnessPolicy,
    leaf_hash,
    open_checkpoint,
    peek_checkpoint,
    verify_consistency,
    verify_receipt,
)
from ledger.merkle import LeafHashReader, consistency_proof, root_from_leaf_hashes
from ledger.storage import StoredCheckpoint
from ledger.tiles import entries_path, verify_tiles

Progress = Callable[[str, int, int], None]

#: Topics whose events say who may sign with which key.
_KEY_TOPICS = frozenset(
    {
        *NODE_TOPICS,
        *(f"hub.domain.hall:Hall.{name}" for name in ("Registered", "KeyRotated", "Retired")),
        *AGENT_TOPICS,  # which agents (代办员) each hall has
    }
)


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
    signatures: int = 0
    pending: int = 0
    unsigned: int = 0
    shredded: int = 0
    latest: bytes | None = None  # the latest checkpoint note that verified
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
            f"signed commands verified: {self.signatures}",
        ]
        if self.unsigned:
            lines.append(
                f"{self.unsigned} leaves after the latest checkpoint are not signed yet "
                "(checked, but no signature covers them)"
            )
        if self.shredded:
            lines.append(
                f"{self.shredded} cases (or appointments) have erased personal data (their "
                "events, hashes and signatures verify as before)"
            )
        if self.ok:
            lines.append("OK: every checkpoint, root, hash, event, binding and signature verified")
        else:
            lines.append(f"FAILED: {len(self.findings)} finding(s)")
            lines.extend(f"  {finding}" for finding in sorted(self.findings, key=_order))
        return "\n".join(lines)


def _order(finding: Finding) -> tuple[int, str]:
    return (-1 if finding.index is None else finding.index, finding.kind)


@dataclass(frozen=True)
class LogContents:
    """What an audit reads of one log (from a store or an export)."""

    checkpoints: list[StoredCheckpoint]
    leaf_rows: Callable[[], Iterator[tuple[int, bytes, bytes | None]]]
    events: Callable[[], Iterator[tuple[int, StoredEvent]]]
    node_rows: Callable[[], list[tuple[int, int, bytes]]]
    position: int | None  # the integrator's tracking position (a store only)
    history: Callable[[UUID, int], Sequence[StoredEvent]] | None


def audit_store(
    store: ReadOnlyStore,
    log_verifiers: Sequence[NoteVerifier],
    *,
    origin: str,
    trusted: bytes | None = None,
    progress: Progress = _no_progress,
    peers: Mapping[str, Verifier] | None = None,
    peer_regions: Mapping[str, str] | None = None,
    clock_window: timedelta = CLOCK_WINDOW,
) -> AuditReport:
    """Verify a node's database, opened read-only (``peers``: the federation's log keys by
    origin, to check the steps and acknowledgements other nodes sent; ``peer_regions``: the
    region each of them keeps, by origin, which their halls must be of; ``clock_window``: how
    far the node lets a command's signed time be from its clock, its ``TONGBAN_CLOCK_WINDOW_S``:
    a command record received earlier than the signed time less this is backdated)."""
    tables = store.tables
    contents = LogContents(
        checkpoints=tables.checkpoints(store.cursor()),
        leaf_rows=lambda: tables.leaf_rows(store.cursor(), 0, _max_leaf(store)),
        events=store.events,
        node_rows=lambda: tables.node_rows(store.cursor()),
        position=store.position(),
        history=store.history,
    )
    return audit_log(
        contents,
        log_verifiers,
        origin=origin,
        trusted=trusted,
        progress=progress,
        peers=peers,
        peer_regions=peer_regions,
        clock_window=clock_window,
    )


def _max_leaf(store: ReadOnlyStore) -> int:
    """One past the largest stored leaf index (rows beyond the tree state are read too)."""
    cursor = store.cursor()
    cursor.execute(f"SELECT MAX(idx) FROM {store.tables.leaves_table}")
    row = cursor.fetchone()
    return 0 if row is None or row[0] is None else int(row[0]) + 1


def audit_export(
    directory: Path,
    log_verifiers: Sequence[NoteVerifier],
    *,
    origin: str,
    trusted: bytes | None = None,
    progress: Progress = _no_progress,
    peers: Mapping[str, Verifier] | None = None,
    peer_regions: Mapping[str, str] | None = None,
    clock_window: timedelta = CLOCK_WINDOW,
) -> AuditReport:
    """Verify a ``tongban ledger export``: its tiles, entries and events, offline."""
    report = AuditReport()
    entries: dict[int, bytes] = {}
    try:
        tiles = verify_tiles(
            directory,
            log_verifiers,
            origin=origin,
            on_entry=entries.__setitem__,
            progress=lambda done, total: progress("tiles", done, total),
        )
    except LedgerError as error:
        report.add(None, "export", str(error))
        return report
    for problem in tiles.problems:
        first = min(problem.indices) if getattr(problem, "indices", None) else None
        report.add(first, "tile", f"{problem.path}: {problem.message}")
    checkpoint = tiles.checkpoint
    size = checkpoint.checkpoint.size
    note = (directory / "checkpoint").read_bytes()
    events = _export_events(directory, size, entries, report)
    contents = LogContents(
        checkpoints=[StoredCheckpoint(size, checkpoint.checkpoint.root, note, 0.0)],
        leaf_rows=lambda: ((i, entries[i], None) for i in sorted(entries)),
        events=lambda: iter(events),
        node_rows=list,
        position=None,
        history=_history_of(events),
    )
    audited = audit_log(
        contents,
        log_verifiers,
        origin=origin,
        trusted=trusted,
        progress=progress,
        peers=peers,
        peer_regions=peer_regions,
        clock_window=clock_window,
    )
    audited.findings[:0] = report.findings
    return audited


def _export_events(
    directory: Path, size: int, entries: dict[int, bytes], report: AuditReport
) -> list[tuple[int, StoredEvent]]:
    """The stored events of an export (``events/`` bundles beside the entry bundles)."""
    events: list[tuple[int, StoredEvent]] = []
    for bundle in range((size + 255) // 256):
        width = min(256, size - bundle * 256)
        path = directory / "events" / entries_path(bundle, width).removeprefix("tile/entries/")
        try:
            states = decode_event_bundle(path.read_bytes())
        except (OSError, ValueError) as error:
            report.add(bundle * 256, "export", f"{path}: {error}")
            continue
        for offset, state in enumerate(states):
            index = bundle * 256 + offset
            if index not in entries:
                continue
            try:
                leaf = Leaf.decode(entries[index])
            except LedgerError:
                continue
            stored = StoredEvent(leaf.aggregate_id, leaf.version, leaf.topic, state)
            events.append((index + 1, stored))
    return events


def _history_of(
    events: Sequence[tuple[int, StoredEvent]],
) -> Callable[[UUID, int], Sequence[StoredEvent]]:
    """The stored events of one aggregate below a version, read from an export's events (as
    ``ReadOnlyStore.history`` reads them from a store): the checker's memory of cases is
    bounded, and a case it forgot is loaded again from here."""
    by_aggregate: dict[UUID, list[StoredEvent]] = {}
    for _position, event in events:
        by_aggregate.setdefault(UUID(str(event.originator_id)), []).append(event)
    for stored in by_aggregate.values():
        stored.sort(key=lambda event: event.originator_version)

    def below(aggregate_id: UUID, version: int) -> Sequence[StoredEvent]:
        return [e for e in by_aggregate.get(aggregate_id, ()) if e.originator_version < version]

    return below


def encode_event_bundle(states: Sequence[bytes]) -> bytes:
    """An export's event bundle: each stored event as uint32 length ‖ bytes."""
    return b"".join(len(state).to_bytes(4, "big") + state for state in states)


def decode_event_bundle(data: bytes) -> list[bytes]:
    """The stored events of an event bundle."""
    states, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise ValueError(f"truncated event bundle at offset {offset}")
        length = int.from_bytes(data[offset : offset + 4], "big")
        offset += 4
        if offset + length > len(data):
            raise ValueError(f"truncated event bundle at offset {offset}")
        states.append(data[offset : offset + length])
        offset += length
    return states


def audit_log(
    contents: LogContents,
    log_verifiers: Sequence[NoteVerifier],
    *,
    origin: str,
    trusted: bytes | None = None,
    progress: Progress = _no_progress,
    peers: Mapping[str, Verifier] | None = None,
    peer_regions: Mapping[str, str] | None = None,
    clock_window: timedelta = CLOCK_WINDOW,
) -> AuditReport:
    """Verify one log's contents (see the module docstring)."""
    report = AuditReport()
    leaves, hashes = _read_leaves(contents, origin, report, progress)
    # Past a missing leaf no root can be re-derived: ``hashes`` stops there, ``leaves`` does not.
    gap = len(hashes) if len(hashes) < len(leaves) else None
    report.leaves = len(leaves)
    report.checkpoints = len(contents.checkpoints)
    verified, covered = _check_checkpoints(
        contents.checkpoints, hashes, log_verifiers, origin, report, len(leaves)
    )
    _check_nodes(contents.node_rows(), hashes, report, len(leaves))
    if verified:
        report.latest = verified[-1][1]
    report.unsigned = max(0, len(leaves) - covered)
    if trusted is not None and (gap is None or gap >= _size_of(trusted)):
        # (A checkpoint past a missing leaf cannot be compared; the missing leaf is named.)
        _check_trusted(trusted, verified, hashes, log_verifiers, origin, report)
    checker = LogChecker(
        origin,
        load_history=contents.history,
        peers=dict(peers or {}),
        peer_regions=peer_regions,
        clock_window=clock_window,
    )
    _check_events_and_bindings(contents, leaves, report, progress, checker, gap is not None)
    return report


def _read_leaves(
    contents: LogContents, origin: str, report: AuditReport, progress: Progress
) -> tuple[list[Leaf | None], list[bytes]]:
    """Every stored leaf, at its position (``None`` where a leaf is missing or unreadable), and
    the leaf hashes up to the first missing one."""
    leaves: list[Leaf | None] = []
    hashes: list[bytes] = []
    complete = True
    for idx, data, stored_hash in contents.leaf_rows():
        if idx > len(leaves):
            first = len(leaves)
            report.add(
                first,
                "leaf missing",
                f"no stored leaf at index {first}: deleted"
                if idx == first + 1
                else f"no stored leaves at indices {first}..{idx - 1}: deleted",
            )
            leaves.extend([None] * (idx - first))
            complete = False
        elif idx < len(leaves):
            report.add(idx, "leaf index", f"leaf {idx} is stored twice, or out of order")
            continue
        digest = leaf_hash(data)
        if stored_hash is not None and stored_hash != digest:
            report.add(
                idx,
                "stored leaf hash",
                f"the leaf_hash column says {stored_hash.hex()[:16]}…, the leaf hashes to "
                f"{digest.hex()[:16]}…",
            )
        try:
            leaf = Leaf.decode(data)
        except LedgerError as error:
            report.add(idx, "leaf unreadable", str(error))
            leaves.append(None)
            if complete:
                hashes.append(digest)
            continue
        if leaf.index != idx:
            report.add(idx, "leaf index", f"the leaf at position {idx} says {leaf.index}")
        if leaf.origin != origin:
            report.add(idx, "leaf origin", f"{leaf.origin!r}, expected {origin!r}")
        leaves.append(leaf)
        if complete:
            hashes.append(digest)
        if idx % 10_000 == 0:
            progress("leaves", idx, idx + 1)
    return leaves, hashes


def _check_checkpoints(
    checkpoints: list[StoredCheckpoint],
    hashes: list[bytes],
    log_verifiers: Sequence[NoteVerifier],
    origin: str,
    report: AuditReport,
    positions: int,
) -> tuple[list[tuple[Checkpoint, bytes]], int]:
    """Signatures, rows, roots and consistency; returns the verified checkpoints in size order,
    and the largest size a checkpoint whose signature verified covers (``positions``: how many
    leaf positions the log has, missing ones included; ``hashes`` stops at a missing leaf).

    A checkpoint's size and root are its signed note's: a row that says otherwise is named, and
    not believed — not even for which roots to derive or in which order to compare them.
    """
    opened: list[tuple[Checkpoint, bytes]] = []
    unverified: list[tuple[int, str]] = []
    for stored in checkpoints:
        try:
            signed = open_checkpoint(stored.note, log_verifiers, origin=origin)
        except LedgerError as error:
            unverified.append((stored.size, str(error)))
            continue
        body = signed.checkpoint
        if (body.size, body.root) != (stored.size, stored.root):
            report.add(
                None,
                "checkpoint row",
                f"the row says size {stored.size} root {stored.root.hex()[:16]}…, its signed "
                f"note size {body.size} root {body.root.hex()[:16]}…",
            )
        opened.append((body, stored.note))
    opened.sort(key=lambda checkpoint: checkpoint[0].size)
    compact = CompactRange()
    roots: dict[int, bytes] = {}
    wanted = {body.size for body, _note in opened}
    for digest in hashes:
        compact.append(digest)
        if compact.size in wanted:
            roots[compact.size] = compact.root()
    verified: list[tuple[Checkpoint, bytes]] = []
    reader = LeafHashReader(hashes)
    across_gap: list[int] = []
    for body, note in opened:
        derived = roots.get(body.size)
        if derived is None and body.size <= positions:
            across_gap.append(body.size)  # it covers a missing leaf
            continue
        if derived is None:
            report.add(None, "checkpoint beyond log", f"size {body.size} > {positions} leaves")
            continue
        if derived != body.root:
            report.add(
                body.size - 1,
                "root mismatch",
                f"the stored leaves give root {derived.hex()[:16]}… at size {body.size}, "
                f"the signed checkpoint says {body.root.hex()[:16]}… (a leaf was altered)",
            )
            continue
        if verified:
            old = verified[-1][0]
            try:
                proof = consistency_proof(old.size, body.size, reader)
                verify_consistency(old.size, body.size, proof, old.root, body.root)
            except LedgerError as error:
                report.add(None, "inconsistent checkpoints", f"{old.size}→{body.size}: {error}")
        verified.append((body, note))
    if across_gap:
        report.add(
            len(hashes),
            "checkpoint unverifiable",
            f"{len(across_gap)} signed checkpoint(s), of sizes {across_gap[0]}..{across_gap[-1]}, "
            f"cover the missing leaf {len(hashes)}: their roots cannot be re-derived",
        )
    if unverified and not verified:
        # One finding for a wrong key, not one per checkpoint.
        report.add(
            None,
            "checkpoint signature",
            f"none of the {len(unverified)} checkpoints verifies with the given log key "
            f"(is it this log's key?): {unverified[0][1]}",
        )
    else:
        for size, problem in unverified:
            report.add(None, "checkpoint signature", f"checkpoint of size {size}: {problem}")
    covered = max([body.size for body, _note in verified] + across_gap, default=0)
    return verified, covered


def _check_nodes(
    rows: list[tuple[int, int, bytes]], hashes: list[bytes], report: AuditReport, positions: int
) -> None:
    for level, index, stored in rows:
        first, last = index << level, (index + 1) << level
        if last > positions:
            report.add(first, "stored node", f"node ({level}, {index}) lies beyond the log")
            continue
        if last > len(hashes):
            continue  # past a missing leaf (named): it cannot be re-derived
        if root_from_leaf_hashes(hashes[first:last]) != stored:
            report.add(
                first,
                "stored node",
                f"interior node (level {level}, index {index}) is not the hash of leaves "
                f"{first}..{last - 1}",
            )


def _size_of(note: bytes) -> int:
    """A checkpoint note's size, unverified (only to choose what to compare); 0 if unreadable."""
    try:
        return peek_checkpoint(note).size
    except LedgerError:
        return 0


def _check_trusted(
    trusted: bytes,
    verified: list[tuple[Checkpoint, bytes]],
    hashes: list[bytes],
    log_verifiers: Sequence[NoteVerifier],
    origin: str,
    report: AuditReport,
) -> None:
    """The log must extend the last checkpoint this auditor verified."""
    try:
        old = open_checkpoint(trusted, log_verifiers, origin=origin).checkpoint
    except LedgerError as error:
        report.add(None, "trusted checkpoint", f"does not verify with the log key: {error}")
        return
    latest = verified[-1][0] if verified else None
    shown = f"size {latest.size} root {latest.root.hex()[:16]}…" if latest else "no checkpoint"
    remembered = f"size {old.size} root {old.root.hex()[:16]}…"
    if latest is None or latest.size < old.size or len(hashes) < old.size:
        report.add(
            None,
            "rollback",
            f"the log now shows {shown} and {len(hashes)} leaves, but a checkpoint of "
            f"{remembered} was verified before: the log was rolled back (a restored backup?)",
        )
        return
    if root_from_leaf_hashes(hashes[: old.size]) != old.root:
        report.add(
            None,
            "fork",
            f"the log's first {old.size} leaves do not give the root of the checkpoint verified "
            f"before ({remembered}); it now shows {shown}: two histories were signed",
        )


def _check_events_and_bindings(
    contents: LogContents,
    leaves: list[Leaf | None],
    report: AuditReport,
    progress: Progress,
    checker: LogChecker,
    leaves_missing: bool = False,
) -> None:
    by_event = {(leaf.aggregate_id, leaf.version): leaf for leaf in leaves if leaf is not None}
    matched: dict[int, StoredEvent] = {}
    position = contents.position
    expected_index = 0
    next_leaf = 0

    def feed(leaf: Leaf, event: StoredEvent | None) -> None:
        for problem in checker.check(leaf, event):
            _add_problem(report, leaf.index, problem)

    for notification_id, event in contents.events():
        report.events += 1
        key = (event.originator_id, event.originator_version)
        leaf = by_event.get(key)  # type: ignore[arg-type]
        if leaf is None:
            if position is not None and notification_id > position:
                report.pending += 1
            else:
                if expected_index < len(leaves) and leaves[expected_index] is None:
                    # Its leaf is likely the missing (or unreadable) one at this position: the
                    # events after it are where they should be.
                    expected_index += 1
                report.add(
                    None,
                    "event not in the log",
                    f"stored event {key[0]} v{key[1]} (notification {notification_id}) has no "
                    "leaf although the log passed it: inserted"
                    + (", or its leaf is one of those missing" if leaves_missing else ""),
                )
            continue
        if leaf.index != expected_index:
            report.add(
                leaf.index,
                "order",
                f"event {leaf.aggregate_id} v{leaf.version} is stored at position "
                f"{expected_index}, its leaf is {leaf.index}: reordered",
            )
        expected_index += 1
        if event.topic != leaf.topic:
            report.add(leaf.index, "topic", f"stored {event.topic}, logged {leaf.topic}")
        intact = _sha256(event.state) == leaf.event_hash
        if not intact:
            report.add(
                leaf.index,
                "event modified",
                f"stored event {leaf.aggregate_id} v{leaf.version} hashes to "
                f"{_sha256(event.state).hex()[:16]}…, the leaf commits to "
                f"{leaf.event_hash.hex()[:16]}…",
            )
        # A modified event is not read: its leaf alone is checked (an empty state marks that).
        matched[leaf.index] = (
            event if intact else StoredEvent(leaf.aggregate_id, leaf.version, leaf.topic, b"")
        )
        # The binding check runs in leaf order; leaves passed over wait for their event.
        while next_leaf < len(leaves) and next_leaf in matched:
            current = leaves[next_leaf]
            stored = matched.pop(next_leaf)
            if current is not None:
                feed(current, stored if stored.state else None)
            next_leaf += 1
        if report.events % 10_000 == 0:
            progress("events", report.events, len(leaves))
    for index in range(next_leaf, len(leaves)):
        leaf = leaves[index]
        found: StoredEvent | None = matched.pop(index) if index in matched else None
        if leaf is None:
            continue
        if found is None:
            report.add(
                index,
                "event missing",
                f"no stored event {leaf.aggregate_id} v{leaf.version} ({leaf.topic}): deleted",
            )
        feed(leaf, found if found is not None and found.state else None)
    for index, problem in checker.finish():
        _add_problem(report, index, problem)
    report.signatures = checker.signatures
    report.shredded = checker.erasures


def _add_problem(report: AuditReport, index: int, problem: Problem) -> None:
    report.add(index, problem.kind, problem.detail)


def _sha256(data: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class CaseEntry:
    """One event of a case as ``tongban audit case`` shows it."""

    version: int
    topic: str
    index: int | None
    signer: str
    status: str
    ok: bool


def audit_case(
    store: ReadOnlyStore,
    case_id: UUID,
    log_verifiers: Sequence[NoteVerifier],
    *,
    origin: str,
) -> list[CaseEntry]:
    """Each stored event of one case with its leaf, its offline receipt and its signed command.

    Read-only, with only the log key: the signers' keys come from the log's own genesis and hall
    registry events. An event whose personal data was erased still verifies (it is reported as
    erased).
    """
    tables = store.tables
    cursor = store.cursor()
    checker = LogChecker(origin)
    for _, event in store.events():
        if event.topic in _KEY_TOPICS:
            leaf = tables.leaf_for(cursor, event.originator_id, event.originator_version)  # type: ignore[arg-type]
            if leaf is not None:
                checker.learn(leaf.index, event)
    stored = {e.originator_version: e for e in store.history(case_id, 2**62)}
    if not stored:
        raise NotFound("case", case_id)
    leaves = {leaf.version: leaf for leaf in tables.leaves_of(cursor, case_id)}
    erased = any(e.topic.endswith("PersonalDataErased") for e in stored.values())
    entries = []
    for version, event in sorted(stored.items()):
        leaf = leaves.get(version)
        if leaf is None:
            entries.append(
                CaseEntry(
                    version, _short(event.topic), None, "", "pending: not yet in the log", True
                )
            )
            continue
        signer, problems = "", []
        if leaf.topic == WARNING_TOPIC:
            signer = "the node (电子监察 warning)"  # its own act: the checkpoint signs it
        if leaf.cause is not None:
            (command,) = tables.leaves(cursor, leaf.cause, leaf.cause + 1)
            signer = f"{command.signer} (leaf {command.index})"
            problems += [str(p) for p in checker.verify_command(command)]
        checkpoint = tables.checkpoint_at_least(cursor, leaf.index + 1)
        if checkpoint is None:
            status = "pending: not yet in a signed checkpoint"
        else:
            proof = tables.inclusion_proof(cursor, leaf.index, checkpoint.size)
            receipt = Receipt.for_leaf(leaf, proof, checkpoint.note).format()
            try:
                verified = verify_receipt(
                    receipt, list(log_verifiers), WitnessPolicy(0, ()), event=event.state
                )
                status = f"proven in checkpoint of size {verified.checkpoint.checkpoint.size}"
            except LedgerError as error:
                problems.append(f"receipt: {error}")
                status = ""
        if problems:
            status = "FAILED: " + "; ".join(problems)
        elif erased and event.topic.endswith("Submitted"):
            status += "; personal data erased (hash and signature still verify)"
        entries.append(
            CaseEntry(version, _short(event.topic), leaf.index, signer, status, not problems)
        )
    return entries


def _short(topic: str) -> str:
    return topic.rsplit(".", 1)[-1]


__all__ = [
    "AuditReport",
    "CaseEntry",
    "Finding",
    "LogContents",
    "audit_case",
    "audit_export",
    "audit_log",
    "audit_store",
    "decode_event_bundle",
    "encode_event_bundle",
]

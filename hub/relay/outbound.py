"""Relay out: the outbox projection of the node's log, and the publisher that empties it.

**Which steps go where.** A case is shared by the nodes that keep one of its regions: the intake
region, the competent region, and the region of every hall of another node it names (a 转办
to the competent province, a joint task there). After each step stored here, the
:class:`OutboxProjection` works out the case's nodes and queues, for each other node:

* the step itself, if it was taken here (a hall of this node signed it);
* if that node just became a party (this step named it), every earlier step of the case it has
  not had, whichever node took it, so it can build its copy from the submission on.

It also queues an acknowledgement to the sender of every step another node's envelope brought.
Rows are queued with the library's tracking record in one transaction (:mod:`hub.relay.store`).

**Sending.** The :class:`Publisher` builds each envelope when it sends it, from the ledger: the
step's leaf and an inclusion proof under this node's latest signed checkpoint, a consistency
proof from the checkpoint the destination last acknowledged, the applicant sealed to the
destination (a submission only), all signed with the node's log key. A step whose leaf is not
yet under a signed checkpoint waits (and the publisher asks the integrator for one). Envelopes
are produced with the idempotent producer and ``acks=all``, keyed by case id (one partition per
case: per-case order), to the destination's inbox topic: a round's messages are produced in
outbox order, then the publisher waits for the broker's acknowledgement of each, and records
them as sent in one transaction. A row is done only when the destination's signed
acknowledgement is stored here;
until then it is sent again, with the same envelope id, every ``resend_after_s`` seconds — so a
broker that loses its data loses no handoff, and a backlog built while the broker is down drains
in order when it returns.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.persistence import Tracking
from eventsourcing.utils import get_topic

from hub.application.hub import HubApplication
from hub.application.log_watch import LogWatch
from hub.application.peers import hall_names
from hub.commands.federation import (
    AckBody,
    EnvelopeBody,
    StepBody,
    build_ack,
    build_envelope,
    parse_envelope,
)
from hub.commands.model import PersonalValue
from hub.commands.wire import parse_command
from hub.domain.case import Case
from hub.domain.command_record import HALL, CommandRecord
from hub.domain.federation import PeerStep, split_name
from hub.domain.hall import key_id
from hub.domain.values import CaseState
from hub.errors import TongbanError
from hub.integrity.integrator import LedgerView
from hub.relay.config import FederationConfig, Peer
from hub.relay.envelope import seal_personal, sign_ack, sign_envelope
from hub.relay.store import ACK, ENVELOPE, FETCH, OutboxRow, RelayStore
from ledger import Leaf, Signer, parse_note, peek_checkpoint
from ledger.cosignature import Cosigner
from ledger.storage import StoredCheckpoint

log = logging.getLogger(__name__)

#: The projection's name in the tracking table.
OUTBOX_PROJECTION = "relay-out"
_TOPICS = (get_topic(CommandRecord.Recorded), get_topic(PeerStep.Recorded))


def envelope_id_for(record_id: UUID, destination: str) -> UUID:
    """One envelope per (step, destination), the same on every resend and after a restart."""
    return uuid5(NAMESPACE_URL, f"tongban:envelope:{record_id}:{destination}")


def case_nodes(case: Case, config: FederationConfig) -> set[str]:
    """The origins of the other nodes that keep one of the case's regions."""
    nodes = set()
    for region in case.regions():
        peer = config.peer_for_region(region)
        if peer is not None:
            nodes.add(peer.origin)
    return nodes


class RecordMemory:
    """The events that created the step records the outbox projection queued rows for, kept
    for the publisher in the same process: building an envelope or an acknowledgement needs its
    record's creation event (the step's case versions; a peer step's evidence), which the
    projection just read from the log. A record's creation event never changes, so what the
    memory saves is a read, never a check; bounded (emptied when full, then read again)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._events: dict[UUID, CommandRecord.Recorded | PeerStep.Recorded] = {}

    def remember(self, event: CommandRecord.Recorded | PeerStep.Recorded) -> None:
        if len(self._events) >= self.size:
            self._events.clear()
        self._events[event.originator_id] = event

    def get(self, record_id: UUID) -> CommandRecord.Recorded | PeerStep.Recorded | None:
        return self._events.get(record_id)


#: Seconds a record found not yet in the log is left alone before it is looked up again, when
#: the leaf memory did not hear of it meanwhile (a safety net: the memory hears of every leaf).
LEAF_RECHECK_S = 1.0


class LeafMemory:
    """The leaves of step records (each record's creation, version 1) that the node's ledger
    integrator, running in the same process, has logged while the relay runs (Relay.attach).

    A message waits for its record's leaf: an envelope until a signed checkpoint covers it, an
    acknowledgement until the received step is in our log. The publisher looks at a waiting
    row in every round, woken by every batch the integrator logs, and each look was a read of
    the leaf. With the memory, the leaf is known the moment it is logged, and a record looked
    up and found not logged yet is not looked up again until the memory hears of it (or
    ``recheck`` seconds pass). A logged leaf never changes, so what the memory saves is a read,
    never a check; it is bounded (emptied when full, then read again)."""

    def __init__(
        self,
        size: int = 4096,
        recheck: float = LEAF_RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.recheck = recheck
        self.clock = clock
        self._lock = threading.Lock()
        self._leaves: dict[UUID, Leaf] = {}
        #: Records looked up and not logged yet, with when.
        self._not_logged: dict[UUID, float] = {}
        #: The size of the log as far as the memory heard of it (one past the last leaf). The
        #: integrator tells the memory after it committed: for a moment, the store (and a
        #: checkpoint read from it) may be ahead of what the memory heard.
        self.heard = 0

    def remember(self, leaves: Sequence[Leaf]) -> None:
        """Leaves the integrator just logged (committed)."""
        with self._lock:
            if leaves:
                self.heard = max(self.heard, leaves[-1].index + 1)
            for leaf in leaves:
                if leaf.version != 1:
                    continue  # a case's events: no message waits for those
                if len(self._leaves) >= self.size:
                    self._leaves.clear()
                self._leaves[leaf.aggregate_id] = leaf
                self._not_logged.pop(leaf.aggregate_id, None)

    def get(self, record_id: UUID) -> Leaf | None:
        """The record's leaf, if the memory heard of it."""
        return self._leaves.get(record_id)

    def waiting(self, record_id: UUID, below: int | None = None) -> bool:
        """Whether the record was found not logged less than ``recheck`` seconds ago, and the
        memory has not heard of its leaf since (looking it up again would find nothing).

        With ``below`` (a signed checkpoint's size, read from the store), only when the memory
        heard of every leaf below it: else the record may be one of the leaves the integrator
        committed and has not told yet, and it must be looked up."""
        with self._lock:
            if below is not None and self.heard < below:
                return False
            since = self._not_logged.get(record_id)
            return since is not None and self.clock() - since < self.recheck

    def not_logged(self, record_id: UUID) -> None:
        """The record was looked up just now and is not in the log yet."""
        with self._lock:
            if record_id in self._leaves:
                return  # logged meanwhile: the memory heard of it during the lookup
            if len(self._not_logged) >= self.size:
                self._not_logged.clear()
            self._not_logged[record_id] = self.clock()


class OutboxProjection:
    """Queues the envelopes and acknowledgements each stored step calls for (see above)."""

    name = OUTBOX_PROJECTION

    def __init__(
        self,
        app: HubApplication,
        store: RelayStore,
        config: FederationConfig,
        readers: ThreadPoolExecutor | None = None,
        records: RecordMemory | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.config = config
        #: Threads that read a batch's cases at once (None: each when it is needed).
        self.readers = readers
        #: Where the creation events of the records given rows are kept for the publisher.
        self.records = records
        #: The cases a batch's steps need, read beforehand: (case id, version) → case.
        self._read_ahead: dict[tuple[UUID, int], Case] = {}

    def process_event(self, event: Any, tracking: Tracking) -> None:
        """Queue what ``event`` calls for, and record ``tracking``, in one transaction."""
        rows, step = self._rows_for(event)
        if rows and self.records is not None:
            self.records.remember(event)
        self.store.enqueue(rows, tracking, step)

    def process_batch(self, batch: Sequence[tuple[Any, Tracking]]) -> None:
        """Queue what each event of ``batch`` calls for, and record the tracking of each, all
        in one transaction: one commit for the steps stored since the last batch rather than
        one each (each is a round trip on PostgreSQL, and a write of the log on either store).
        An event's rows may depend on the steps queued before it (a node that just became a
        party gets every earlier step): they are read in the same transaction."""
        self._read_ahead = self._cases_of(batch)
        try:
            with self.store.writing():
                for event, tracking in batch:
                    self.process_event(event, tracking)
        finally:
            self._read_ahead = {}

    def _cases_of(self, batch: Sequence[tuple[Any, Tracking]]) -> dict[tuple[UUID, int], Case]:
        """The case versions the hall commands of ``batch`` need (as each left the case, and
        as it was before), read beforehand: one read per case (both versions from its events),
        the cases' reads at once (a read each is a round trip each, and they overlap instead
        of adding up). A case that cannot be read is left out (read again, in order, where it
        is needed, with the same outcome as without reading ahead)."""
        wanted: dict[UUID, set[int]] = {}
        for event, _tracking in batch:
            if isinstance(event, CommandRecord.Recorded) and event.signer_kind == HALL:
                versions = wanted.setdefault(event.target_id, set())
                versions.add(event.last_version)
                if event.first_version > 1:
                    versions.add(event.first_version - 1)
        if not wanted:
            return {}

        def read(item: tuple[UUID, set[int]]) -> dict[int, Case]:
            try:
                return self.app.case_at_versions(item[0], sorted(item[1]))
            except TongbanError:
                return {}

        items = list(wanted.items())
        if self.readers is None or len(items) < 2:
            found = [read(item) for item in items]
        else:
            found = list(self.readers.map(read, items))
        return {
            (case_id, version): case
            for (case_id, _versions), cases in zip(items, found, strict=True)
            for version, case in cases.items()
        }

    def _case(self, case_id: UUID, version: int) -> Case:
        """The case as of ``version`` (read ahead for a batch, or now)."""
        case = self._read_ahead.get((case_id, version))
        return case if case is not None else self.app.get_case(case_id, version=version)

    def _rows_for(self, event: Any) -> tuple[list[OutboxRow], tuple[UUID, UUID, str, int] | None]:
        """The rows ``event`` calls for, and the step to remember among its case's steps."""
        own = self.app.policy.origin
        rows: list[OutboxRow] = []
        step: tuple[UUID, UUID, str, int] | None = None
        if isinstance(event, PeerStep.Recorded):
            record = event.originator_id
            rows.append(OutboxRow(ACK, event.envelope_id, event.sender, event.target_id, record))
            step = (record, event.target_id, event.origin, event.last_version)
            if _names_materials(event.signed_bytes):
                # The files stayed where the hall uploaded them: fetch them from there.
                fetch_id = uuid5(NAMESPACE_URL, f"tongban:fetch:{record}")
                rows.append(OutboxRow(FETCH, fetch_id, event.origin, event.target_id, record))
        elif isinstance(event, CommandRecord.Recorded) and event.signer_kind == HALL:
            case = self._case_after(event)
            # A wrong pickup code stays this node's record: the code never travels, so a peer
            # could not tell it from a pickup (docs/certificates.md, "Delivery").
            refused_code = (
                event.action == "pick_up_from_locker"
                and case is not None
                and (case.state is CaseState.IN_LOCKER)
            )
            if case is not None and not refused_code:
                step = (event.originator_id, event.target_id, own, event.last_version)
                rows += self._own_step(event, case)
        return rows, step

    def _case_after(self, record: CommandRecord.Recorded) -> Case | None:
        """The case as the command left it (None: the command was not a case's)."""
        try:
            return self._case(record.target_id, record.last_version)
        except TongbanError:
            return None

    def _own_step(self, record: CommandRecord.Recorded, case: Case) -> list[OutboxRow]:
        """This node's step goes to every other node of the case; a node this step made a
        party first gets every earlier step it has not had."""
        case_id = record.target_id
        after = case_nodes(case, self.config)
        before: set[str] = set()
        if record.first_version > 1:
            before = case_nodes(self._case(case_id, record.first_version - 1), self.config)
        rows: list[OutboxRow] = []
        for node in sorted(after):
            if record.first_version > 1 and node not in before:
                for earlier, origin in self.store.steps_of(case_id, record.first_version - 1):
                    if origin != node:
                        rows.append(
                            OutboxRow(
                                ENVELOPE, envelope_id_for(earlier, node), node, case_id, earlier
                            )
                        )
            record_id = record.originator_id
            rows.append(
                OutboxRow(ENVELOPE, envelope_id_for(record_id, node), node, case_id, record_id)
            )
        return rows


def _names_materials(signed_bytes: bytes) -> bool:
    action = parse_command(signed_bytes).action
    return bool(getattr(action, "materials", ()))


def follow(
    app: HubApplication,
    after: int,
    stop: threading.Event,
    poll: float = 0.05,
    watch: LogWatch | None = None,
) -> Iterator[list[tuple[Any, Tracking]]]:
    """The log's step records after notification ``after``, in batches of what is stored by
    the time each is read, as (event, tracking), until stop.

    On PostgreSQL the store's notifications wake it (``watch``, shared by the followers of the
    process; one of its own when none is given), used as a signal only: each batch is read at
    once from the log, as the ledger integrator does, so it waits for nothing while steps are
    being stored and reads them together; SQLite, which notifies nobody, is looked at every
    ``poll`` seconds.
    """
    arrived = threading.Event()
    own = watch is None
    watch = watch or LogWatch(app.recorder)
    position = after
    try:
        with watch.watching(arrived, stop, _TOPICS) as notifies:
            while not stop.is_set():
                arrived.clear()  # before reading: a step stored from now on wakes the next wait
                batch = stored_after(app, position)
                if batch:
                    position = batch[-1][1].notification_id
                    yield batch
                    continue
                if notifies:
                    # Woken by the next event stored; the timeout only bounds the wait should
                    # the watch lose its subscription without a word.
                    arrived.wait(1.0)
                else:
                    stop.wait(poll)
    finally:
        if own:
            watch.stop()


def stored_after(app: HubApplication, after: int, limit: int = 200) -> list[tuple[Any, Tracking]]:
    """The step records stored after notification ``after`` (at most ``limit``), now."""
    batch = app.recorder.select_notifications(start=after + 1, limit=limit, topics=list(_TOPICS))
    return [(app.mapper.to_domain_event(n), Tracking(app.name, n.id)) for n in batch]


class Publisher:
    """Sends what the outbox holds (see the module docstring)."""

    def __init__(
        self,
        app: HubApplication,
        store: RelayStore,
        view: LedgerView,
        config: FederationConfig,
        *,
        signer: Signer,
        witness: Cosigner,
        produce: Callable[[str, bytes, bytes], Any],
        flush: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        fetch_materials: Callable[[Peer, UUID, Any], Any] | None = None,
        builders: int = 1,
        records: RecordMemory | None = None,
    ) -> None:
        #: Fetches a received case's material files from a peer (None: not configured).
        self.fetch_materials = fetch_materials
        self.app = app
        self.store = store
        self.view = view
        self.config = config
        self.signer = signer
        self.witness = witness
        #: Produces one message; returns a future whose ``get(timeout)`` raises if it failed.
        self.produce = produce
        self.flush = flush
        self.clock = clock
        #: Called when an envelope waits for a checkpoint over its step (Relay.attach).
        self.want_checkpoint: Callable[[], None] = lambda: None
        #: Threads that build a round's messages at once (None: one after another, in the
        #: publishing thread, as on SQLite whose reads are local calls).
        self.builders = ThreadPoolExecutor(builders, "relay-build") if builders > 1 else None
        #: Creation events the outbox projection kept (a read saved per message).
        self.records = records or RecordMemory()
        #: Leaves of step records, told by the integrator in this process (Relay.attach; None:
        #: each leaf is read when a message needs it).
        self.leaves: LeafMemory | None = None

    def publish_due(self, limit: int = 100) -> int:
        """Send every row that is due now; returns how many went out.

        The round's messages are produced in outbox order (per-case order holds: one partition
        per case, and the idempotent producer keeps a partition's order), then each broker
        acknowledgement is awaited; the rows acknowledged are recorded as sent in one
        transaction, even when a later one failed (whose error is raised then)."""
        pending: list[tuple[OutboxRow, Any]] = []
        due: list[tuple[OutboxRow, Peer]] = []
        # The round's reads (ledger, outbox) share a transaction each: a round trip per read
        # instead of three.
        with self.view.reading(), self.store.reading():
            shared = self._round()
            for row in self.store.due(self.config.resend_after_s, limit):
                peer = self.config.peer_by_origin(row.destination)
                if peer is None:
                    log.warning("outbox row for %s, which is no longer a peer", row.destination)
                    continue
                due.append((row, peer))
            if self.builders is None or len(due) < 2:
                messages = [self._message(row, peer, shared) for row, peer in due]
        if self.builders is not None and len(due) >= 2:
            # Each message takes a few reads (its leaf and proof, its case's earlier steps):
            # built at once, their round trips overlap instead of adding up.
            messages = list(
                self.builders.map(lambda item: self._built(item[0], item[1], shared), due)
            )
        # Produced in outbox order (map keeps it), whoever built them. An envelope that is not
        # ready holds back the later envelopes of its case to the same peer this round: a
        # case's steps go out in their order (the destination also waits for the earlier ones
        # each envelope names in ``after``, but a later step sent first would only wait there
        # until it is sent again).
        held: set[tuple[UUID, str]] = set()
        for (row, peer), message in zip(due, messages, strict=True):
            lane = (row.case_id, row.destination)
            if row.kind == ENVELOPE and lane in held:
                continue
            if message is None:
                if row.kind == ENVELOPE:
                    held.add(lane)
                continue  # not yet under a signed checkpoint: next round
            key = str(row.case_id).encode()
            pending.append((row, self.produce(peer.inbox_topic, key, message)))
        if not pending:
            return 0
        sent: list[OutboxRow] = []
        try:
            self.flush()
            for row, future in pending:
                future.get(timeout=15)
                sent.append(row)
        finally:
            # An acknowledgement is not acknowledged (the store marks it done once sent): if it
            # is lost, the sender sends the envelope again and gets it again.
            self.store.mark_sent(sent)
        return len(sent)

    def fetch_due(self, limit: int = 10) -> int:
        """Fetch the materials of received cases that are due; returns how many were tried.

        Network calls to peers, which may be slow or unreachable: the relay runs them in a loop
        of their own, so no acknowledgement or envelope ever waits behind one."""
        rows = self.store.due_fetches(self.config.resend_after_s, limit)
        for row in rows:
            peer = self.config.peer_by_origin(row.destination)
            if peer is None:
                log.warning("material fetch from %s, which is no longer a peer", row.destination)
                continue
            self._fetch(row, peer)
        return len(rows)

    def _fetch(self, row: OutboxRow, peer: Peer) -> None:
        """Fetch a received case's files from ``peer``; tried again later while it cannot be
        reached, done (naming what is missing or altered) once it answered."""
        self.store.mark_sent([row])
        if self.fetch_materials is None:
            return
        evidence = self.app.peer_step_evidence(row.record_id)
        action = parse_command(evidence.signed_bytes).action
        try:
            report = self.fetch_materials(peer, row.case_id, getattr(action, "materials", ()))
        except TongbanError as error:  # unreachable, no peer certificate: next round
            log.warning("materials of case %s from %s: %s", row.case_id, peer.origin, error)
            return
        problems = [*report.missing, *report.altered]
        detail = "; ".join(str(problem) for problem in problems)
        if problems:
            log.warning("materials of case %s from %s: %s", row.case_id, peer.origin, detail)
        self.store.mark_done(
            FETCH, row.envelope_id, "incomplete" if problems else "fetched", detail
        )

    def message_for(self, row: OutboxRow) -> bytes | None:
        """The signed message of one outbox row as it would go out now (None: not yet)."""
        peer = self.config.peer_by_origin(row.destination)
        if peer is None:
            return None
        return self._message(row, peer, self._round())

    def _built(self, row: OutboxRow, peer: Peer, shared: _Round) -> bytes | None:
        """One message, built in a builder thread (its reads share a transaction each)."""
        with self.view.reading(), self.store.reading():
            return self._message(row, peer, shared)

    def _message(self, row: OutboxRow, peer: Peer, shared: _Round) -> bytes | None:
        if row.kind == ACK:
            return self._ack(row)
        return self._envelope(row, peer, shared)

    # ------------------------------------------------------------------ envelopes

    def _round(self) -> _Round:
        """What the envelopes of one round share: our latest signed checkpoint."""
        return _Round(self.view.read(self.view.tables.latest_checkpoint))

    def _consistency(self, shared: _Round, destination: str) -> tuple[int, tuple[bytes, ...]]:
        """(from size, proof) of the round's checkpoint from the one ``destination`` last
        acknowledged (0 and no proof when there is none to give); once per round."""
        latest = shared.latest
        assert latest is not None
        if destination not in shared.consistency:
            acked = min(self.store.peer(destination).acked_size, latest.size)
            proof: tuple[bytes, ...] = ()
            if 0 < acked < latest.size:
                proof = tuple(
                    self.view.read(
                        lambda cursor: self.view.tables.consistency_proof(
                            cursor, acked, latest.size
                        )
                    )
                )
            shared.consistency[destination] = (acked if proof else 0, proof)
        return shared.consistency[destination]

    def _envelope(self, row: OutboxRow, peer: Peer, shared: _Round) -> bytes | None:
        latest = shared.latest
        if latest is None:
            self.want_checkpoint()
            return None
        created = self._record_event(row.record_id)
        if isinstance(created, PeerStep.Recorded):
            step, submit = self._forwarded_step(created)
        else:
            found = self._own_step(created, latest.size, shared)
            if found is None:
                self.want_checkpoint()
                return None
            step, submit = found
        consistency_from, proof = self._consistency(shared, peer.origin)
        sealed = b""
        if submit:
            values = self._personal(row.case_id)
            if values:
                sealed = seal_personal(values, peer.encryption_public_key(), row.envelope_id)
        body = EnvelopeBody(
            envelope_id=row.envelope_id,
            sender=self.app.policy.origin,
            destination=peer.origin,
            case_id=row.case_id,
            step=step,
            checkpoint=latest.note,
            consistency_from=consistency_from,
            consistency_proof=proof,
            sent_at=self.clock(),
            after=self._after(row, created.first_version, peer.origin, latest.size),
            sealed_personal_sha256=hashlib.sha256(sealed).digest() if sealed else b"",
        )
        return sign_envelope(build_envelope(body), self.signer, sealed)

    def _record_event(self, record_id: UUID) -> CommandRecord.Recorded | PeerStep.Recorded:
        """The event that created a step record (kept by the projection, or read)."""
        return self.records.get(record_id) or self.app.record_event(record_id)

    def _after(
        self, row: OutboxRow, first: int, destination: str, covered: int
    ) -> tuple[tuple[str, int], ...]:
        """The latest step of each node (but the destination) applied here before this one,
        which produced case versions from ``first`` on; this node's own among them (each under
        the checkpoint of size ``covered``, as this one is), so the destination applies the
        case's steps in their order even when they reach it in another (a resend after a
        broker lost one, or a round that built a later one first)."""
        latest: dict[str, int] = {}
        for record_id, origin in self.store.steps_of(row.case_id, first - 1):
            if origin == destination or record_id == row.record_id:
                continue
            sent = self.store.row(ENVELOPE, envelope_id_for(record_id, destination))
            if sent is not None and sent.outcome == "refused":
                continue  # the destination never applied it: nothing to wait for
            index = self._index_of(record_id, origin, covered)
            if index is not None:
                latest[origin] = max(index, latest.get(origin, -1))
        return tuple(sorted(latest.items()))

    def _index_of(self, record_id: UUID, origin: str, covered: int) -> int | None:
        """A step record's index in its origin's log."""
        if origin != self.app.policy.origin:
            return int(self.app.peer_step_evidence(record_id).origin_index)
        leaf = self._leaf(record_id, below=covered)
        return None if leaf is None else leaf.index

    def _leaf(self, record_id: UUID, below: int | None = None) -> Leaf | None:
        """The leaf of a step record in our log (None: not logged yet). With ``below`` (the
        size of the checkpoint the caller wants it under), never a stale "not yet" for a leaf
        below it: see :meth:`LeafMemory.waiting`."""
        memory = self.leaves
        if memory is not None:
            known = memory.get(record_id)
            if known is not None:
                return known
            if memory.waiting(record_id, below):
                return None  # not logged at the last look, and the integrator has not since
        leaf = self.view.read(lambda cursor: self.view.tables.leaf_for(cursor, record_id, 1))
        if leaf is None and memory is not None:
            memory.not_logged(record_id)
        return leaf

    def _own_step(
        self, record: CommandRecord.Recorded, size: int, shared: _Round
    ) -> tuple[StepBody, bool] | None:
        leaf = self._leaf(record.originator_id, below=size)
        if leaf is None or leaf.index >= size:
            return None  # not logged yet, or not under the round's signed checkpoint yet
        proof = self.view.read(
            lambda cursor: self.view.tables.inclusion_proof(cursor, leaf.index, size)
        )
        command = parse_command(leaf.command)
        hall_key = self._hall_key(command.header.hall_id, leaf.key_id, shared, command.header.agent)
        regions = {
            name: self.app.get_hall(name).region
            for name in hall_names(command.action)
            if split_name(name)[1] is None
        }
        step = StepBody(
            origin=self.app.policy.origin,
            index=leaf.index,
            leaf=leaf.encode(),
            inclusion_proof=tuple(proof),
            checkpoint=b"",
            hall_key=hall_key,
            hall_regions=regions,
        )
        return step, command.action.action_name == "submit"

    def _hall_key(self, hall_id: str, wanted: str, shared: _Round, agent: str = "") -> str:
        """The public key whose key id is ``wanted`` that signed a step of ``hall_id``: one of
        the hall's, or the named ``agent``'s own (looked up once a round)."""
        if (hall_id, wanted) not in shared.hall_keys:
            keys = [key for key, _version in self.app.hall_key_versions(hall_id)]
            if agent:
                keys.append(self.app.get_agent(hall_id, agent).public_key)
            shared.hall_keys[hall_id, wanted] = next(
                key for key in keys if key and key_id(key) == wanted
            )
        return shared.hall_keys[hall_id, wanted]

    def _forwarded_step(self, evidence: PeerStep.Recorded) -> tuple[StepBody, bool]:
        command = parse_command(evidence.signed_bytes)
        step = StepBody(
            origin=evidence.origin,
            index=evidence.origin_index,
            leaf=evidence.origin_leaf,
            inclusion_proof=tuple(evidence.inclusion_proof),
            checkpoint=evidence.checkpoint,
            hall_key=evidence.hall_key,
            hall_regions=dict(evidence.hall_regions),
        )
        return step, command.action.action_name == "submit"

    def _personal(self, case_id: UUID) -> Sequence[PersonalValue]:
        case = self.app.get_case(case_id, version=1)
        opened = self.app.open_applicant(case)
        if opened is None:
            return ()
        values = {
            "name": opened.applicant.name,
            "id_number": opened.applicant.id_number,
            "phone": opened.applicant.phone,
        }
        return tuple(
            PersonalValue(path, values[path.rsplit(".", 1)[1]], opened.salts[path])
            for path in sorted(opened.salts)
        )

    # ------------------------------------------------------------------ acknowledgements

    def _ack(self, row: OutboxRow) -> bytes | None:
        return self.ack_message(row.record_id, row.envelope_id, row.destination)

    def ack_message(self, record_id: UUID, envelope_id: UUID, destination: str) -> bytes | None:
        """The signed acknowledgement that the step record ``record_id`` is in our log (None
        while it is not integrated yet)."""
        leaf = self._leaf(record_id)
        if leaf is None:
            return None  # the step record is not in the log yet: acknowledge once it is
        evidence = self.records.get(record_id)
        if not isinstance(evidence, PeerStep.Recorded):
            evidence = self.app.peer_step_evidence(record_id)
        envelope = parse_envelope(evidence.envelope)
        # Cosigning the sender's checkpoint: the inbound side verified it (signature and
        # consistency with what this node saw of the sender) before storing the step.
        line = self.witness.signature_line(parse_note(envelope.checkpoint).text)
        body = AckBody(
            envelope_id=envelope_id,
            sender=self.app.policy.origin,
            destination=destination,
            stored=True,
            index=leaf.index,
            reason="",
            cosignature=line,
            cosigned_size=peek_checkpoint(envelope.checkpoint).size,
            signed_at=self.clock(),
        )
        return sign_ack(build_ack(body), self.signer)


@dataclass
class _Round:
    """What the envelopes of one publishing round share, read once: our latest signed
    checkpoint, the consistency proof to each destination, and the hall keys looked up."""

    latest: StoredCheckpoint | None
    consistency: dict[str, tuple[int, tuple[bytes, ...]]] = field(default_factory=dict)
    hall_keys: dict[tuple[str, str], str] = field(default_factory=dict)


def refusal(
    signer: Signer, *, own_origin: str, envelope_id: UUID, destination: str, reason: str
) -> bytes:
    """A signed REFUSED acknowledgement (not stored in our log: nothing was applied)."""
    body = AckBody(
        envelope_id=envelope_id,
        sender=own_origin,
        destination=destination,
        stored=False,
        index=0,
        reason=reason,
        cosignature="",
        cosigned_size=0,
        signed_at=datetime.now(UTC),
    )
    return sign_ack(build_ack(body), signer)


__all__ = [
    "OUTBOX_PROJECTION",
    "LeafMemory",
    "OutboxProjection",
    "Publisher",
    "RecordMemory",
    "case_nodes",
    "envelope_id_for",
    "follow",
    "refusal",
]

"""The binding check: every event in the log is authorised by exactly the signed command (or the
node act) that its leaf claims, checked with nothing but public keys.

Both the ledger integrator (before an event becomes a leaf) and the auditor (over a whole stored
log or an export) feed the events, in log order, through one :class:`LogChecker`. So the node
never signs into its log what an auditor would reject, and an auditor needs no secret.

What is checked, leaf by leaf:

* a **command leaf** (``HALL_COMMAND`` / ``ADMIN_COMMAND``) records one signed command: its
  stored event is the :class:`~hub.domain.command_record.CommandRecord` with the very signer,
  key id, signature and bytes the leaf carries; the bytes parse as a ``Command`` whose header
  names this signer, this log's origin as its node, and a never-used idempotency key; the key id
  is the signer's *current* key at this position of the log (each hall's key history comes from
  the hall registry's events in the same log, each admin's from the node's genesis); the Ed25519
  signature verifies; a hall command's hall is not retired.
* the leaves right after it are the events that command produced, each ``CAUSED`` by it: the
  command's target, consecutive versions, event types the action produces, a transition the
  state machine allows from the case's state before the command, and contents equal to the
  command's arguments (acting hall, operator and region; each argument the event records; the
  applicant's commitments; the case id of a submission derived from hall and key).
* a certificate's issuing event (:class:`~hub.domain.case.Case.CertificateIssued`) carries
  the identifier, region and holder that the case before it and the signed command give
  (:meth:`~hub.domain.case.Case.certificate_facts`); a certificate's suspension, reinstatement
  or revocation is one the case before it allows (:meth:`~hub.domain.case.Case.check_status_change`:
  the holding hall of the competent region, reinstate only from suspended, revoked is final).
* an acceptance (``accept``, ``resubmit``) comes after a passed identity check of every method
  the case's item requires (``Submitted.required_checks``; :meth:`~hub.domain.case.Case.
  check_required_checks`), each an :class:`~hub.domain.case.Case.IdentityChecked` event bound
  to its own signed ``record_identity_check`` command whose method, device, result and score
  band it records.
* each caused case event's time is the step's business time: the command's signed time, no
  later than the node received it (the command record's time) and no earlier than the case's
  previous step (:func:`~hub.domain.case.business_time`); and the command record's time is
  no earlier than the signed time less the node's clock window
  (:data:`~hub.domain.case.CLOCK_WINDOW` unless the node sets another), which the node
  refuses commands outside of: an earlier receipt is backdated.
* a ``NODE`` leaf is the node's own act: the genesis (:class:`~hub.domain.node.Node`), or an
  电子监察 warning (:class:`~hub.domain.case.Case.SupervisionWarned`) that the case's history
  up to that leaf justifies: the mark it names was crossed at exactly its ``due_at``
  (:func:`~hub.domain.supervision.warning_due`), no later than the warning's own time, and it is
  the first warning of its kind for the case; or a published certificate status list
  (:class:`~hub.domain.status_lists.StatusListPublication`) of this log whose ``log_size`` is
  below its own leaf and whose bitstrings' digest is the one the log's certificate leaves up to
  ``log_size`` give (:func:`~hub.domain.status_lists.certificate_statuses`).
* a **peer step leaf** (``PEER_COMMAND``) records a hall's command that another node's log holds:
  its stored event is the :class:`~hub.domain.federation.PeerStep` with the very hall name (in
  this node's naming), key id, signature and bytes the leaf carries; the bytes are signed by
  the hall's key the record names and were signed for the record's origin; the origin's leaf
  in the record is that command; with the origin's log key, the record's checkpoint verifies
  and proves that leaf at its index, and the sender's signature covers the envelope that
  brought it; the record's time (when this node applied the step) is no earlier than the
  envelope's signed sending time less the clock skew two nodes may have
  (:data:`~hub.commands.federation.MAX_CLOCK_SKEW`). The events that follow are checked as a
  local command's are, with every hall name rewritten into this node's naming
  (:func:`hub.domain.federation.local_name`), and their time is the record's (no earlier than
  the case's previous step).
* a **peer acknowledgement leaf** (``PEER_ACK``) records another node's signed answer to one of
  this node's envelopes: with that node's log key, its signature verifies over the body the
  record holds, and the body names this node, the envelope and what the record says; the
  record's time is no earlier than the time the peer signed less the clock skew.

Every other combination is a problem named by index: an event no command authorised (inserted),
a command whose events are missing (deleted), a genuine signature attached to another event
(moved), a key swapped or used out of its period, a command signed for another node, a replayed
command.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from hub.commands import model as cmd
from hub.commands.federation import (
    ACK_CONTEXT,
    ENVELOPE_CONTEXT,
    MAX_CLOCK_SKEW,
    parse_ack,
    parse_envelope,
)
from hub.commands.model import (
    Action,
    AuthoriseAgent,
    CaseAction,
    ParsedCommand,
    RegisterAgent,
    RegisterHall,
    RetireAgent,
    RetireHall,
    RotateHallKey,
    StaffWindow,
    Submit,
)
from hub.commands.wire import parse_command
from hub.domain.agent import Agent, agent_aggregate_id
from hub.domain.appointments import (
    HOME_VISIT_SLOT,
    Appointment,
    AppointmentCommitments,
    AppointmentKind,
    AppointmentState,
    appointment_id,
)
from hub.domain.case import (
    ACCEPTING_COMMANDS,
    ALLOWED_FROM,
    CLOCK_WINDOW,
    Case,
    business_time,
    case_id_for,
    step_time,
)
from hub.domain.codec import event_mapper
from hub.domain.command_record import ADMIN, HALL, CommandRecord, record_id
from hub.domain.federation import (
    PeerAcknowledgement,
    PeerStep,
    acknowledgement_id,
    local_name,
    peer_step_id,
    within,
)
from hub.domain.hall import Hall, hall_aggregate_id, key_id
from hub.domain.node import Node
from hub.domain.status_lists import (
    CERTIFICATE_TOPICS,
    PUBLISHED_TOPIC,
    StatusListPublication,
    certificate_statuses,
    digest_of_log,
)
from hub.domain.supervision import warning_due
from hub.domain.values import CaseState, DeliveryMethod, HallKind, SealedApplicant
from hub.errors import CalendarUnknown, InvalidInput, TongbanError
from ledger import Authority, Leaf, LedgerError, Verifier, open_checkpoint, verify_inclusion

RECORD_TOPIC = get_topic(CommandRecord.Recorded)
PEER_STEP_TOPIC = get_topic(PeerStep.Recorded)
PEER_ACK_TOPIC = get_topic(PeerAcknowledgement.Recorded)
TRANSFER_REFUSED_TOPIC = get_topic(Case.TransferRefused)
NODE_TOPICS = frozenset({get_topic(Node.Initialised)})
#: The node's supervision acts: NODE leaves justified by the case's history.
WARNING_TOPIC = get_topic(Case.SupervisionWarned)
#: A certificate's status changes: each must be one the case before it allows.
STATUS_EVENTS = (Case.CertificateSuspended, Case.CertificateReinstated, Case.CertificateRevoked)
#: 预约办: the node's record that nobody came to an appointment (a NODE leaf it justifies).
EXPIRY_TOPIC = get_topic(Appointment.Expired)
#: The delivery channels' steps: each must be one the case before it allows, at its time.
DELIVERY_ACTIONS = (
    cmd.Deliver,
    cmd.DispatchByPost,
    cmd.DepositInLocker,
    cmd.PickUpFromLocker,
    cmd.ReturnToWindow,
)
#: Steps whose whole rule, who may act included, the case is asked apart (a delivery's by its
#: channel, a certificate status change's): the transition check does not ask who acts again.
OWN_RULE_ACTIONS = (
    cmd.Deliver,
    cmd.SuspendCertificate,
    cmd.ReinstateCertificate,
    cmd.RevokeCertificate,
)
#: The hall's agents (代办员): learnt before a restarted check, like the halls' keys.
AGENT_TOPICS = frozenset({get_topic(Agent.Registered), get_topic(Agent.Retired)})
#: 预约办: the bookings of a slot and their cancellations, learnt before a restarted check (a
#: slot is booked again only once every earlier booking of it was cancelled).
BOOKED_TOPIC = get_topic(Appointment.Booked)
BOOKING_TOPICS = frozenset({BOOKED_TOPIC, get_topic(Appointment.Cancelled)})
_HALL_EVENTS = frozenset({get_topic(c) for c in (Hall.Registered, Hall.KeyRotated, Hall.Retired)})

#: Loads the stored events of one aggregate below a version (for a case no longer cached).
HistoryLoader = Callable[[UUID, int], Sequence[StoredEvent]]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one leaf."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass
class _KeyPeriod:
    public_key: str
    key_id: str
    since: int
    until: int | None = None


@dataclass
class _Signer:
    periods: list[_KeyPeriod] = field(default_factory=list)
    retired_at: int | None = None

    def key_at(self, index: int) -> _KeyPeriod | None:
        for period in self.periods:
            if period.since < index and (period.until is None or index < period.until):
                return period
        return None


@dataclass
class _Expectation:
    """The events the command at ``index`` announced, not all seen yet."""

    index: int
    command: ParsedCommand
    target: UUID | None  # None: a booking whose record is unknown (its first event says)
    next_version: int
    last_version: int | None  # None when the record is unknown (leaf-only check)
    produced: int = 0
    received_at: Any = None  # the command record's time (None when the record is unknown)
    #: For a peer's step: when this node applied it (its record's time), its events' time.
    applied_at: datetime | None = None
    #: For a peer's step: the hall's name here, and how to write the halls it names here.
    actor_name: str | None = None
    localize: Callable[[str], str] | None = None
    #: The event classes expected here when not the action's own (an appointment's reception).
    produces: tuple[type[Any], ...] | None = None
    #: What the same command produces next, on another aggregate (预约办: a submission that
    #: cites an appointment also marks it received).
    then: _Expectation | None = None


def _expected_target(command: ParsedCommand) -> UUID | None:
    """The aggregate a command acts on; None when only its event says (a booking's ordinal)."""
    action = command.action
    if isinstance(action, cmd.BookAppointment):
        return None  # checked against the Booked event's slot and ordinal
    if isinstance(action, cmd.CancelAppointment):
        return action.appointment_id
    if isinstance(action, Submit):
        return case_id_for(command.header.hall_id, command.header.idempotency_key)
    if isinstance(action, CaseAction):
        return action.case_id
    if isinstance(action, StaffWindow):
        return hall_aggregate_id(command.header.hall_id)
    if isinstance(action, RegisterAgent | RetireAgent):
        return agent_aggregate_id(command.header.hall_id, action.agent_id)
    return hall_aggregate_id(action.arguments()["hall_id"])


def _duration(span: timedelta) -> str:
    """A span for a finding: whole seconds, with days when it is that long."""
    seconds = int(span.total_seconds())
    days, rest = divmod(seconds, 86_400)
    return f"{days} d {rest} s" if days else f"{seconds} s"


def _verifies(public_key_b64: str, signature: bytes, message: bytes) -> bool:
    try:
        raw = base64.b64decode(public_key_b64, validate=True)
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


class LogChecker:
    """Checks a log's events in order (see the module docstring); keeps what it learnt."""

    def __init__(
        self,
        origin: str,
        *,
        load_history: HistoryLoader | None = None,
        cache_size: int = 20_000,
        peers: dict[str, Verifier] | None = None,
        peer_regions: Mapping[str, str] | None = None,
        clock_window: timedelta = CLOCK_WINDOW,
    ) -> None:
        self.origin = origin
        #: How far the node lets a command's signed time be from its clock (its
        #: ``TONGBAN_CLOCK_WINDOW_S``): a receipt earlier than the signed time less this is
        #: backdated.
        self.clock_window = clock_window
        #: The other nodes' log keys, by origin: without them a peer's proofs cannot be checked.
        self.peers = dict(peers or {})
        #: The region each peer keeps, by origin, where known (the federation file says): a
        #: peer's hall must be of it. Without it a step is only checked to be of another region.
        self.peer_regions = dict(peer_regions or {})
        #: The region this node keeps (from its genesis).
        self.region: str | None = None
        self._peer_steps: set[tuple[str, int]] = set()
        self._mapper = event_mapper()
        self._load_history = load_history
        self._cache_size = cache_size
        #: Cases (and 预约办 appointments) as they stand, most recently used last.
        self._cases: OrderedDict[UUID, Any] = OrderedDict()
        self._signers: dict[tuple[str, str], _Signer] = {}
        #: Each hall's kind (a kiosk may only print, and only a kiosk prints).
        self._hall_kinds: dict[str, HallKind] = {}
        self._used_keys: set[tuple[str, str, str]] = set()
        #: Each hall's agents (代办员) by (hall, agent id): whether retired.
        self._agents: dict[tuple[str, str], bool] = {}
        #: The agents who sign their own steps: (hall, agent id) -> their key since registration.
        self._agent_keys: dict[tuple[str, str], _KeyPeriod] = {}
        #: 预约办: every appointment booked in the log so far, by id: whether it was cancelled.
        #: Apart from the cases' cache, which forgets: a slot's earlier bookings are never
        #: forgotten, so a double booking is named however long ago the first one was.
        self._bookings: dict[UUID, bool] = {}
        self._open: _Expectation | None = None
        #: Signed commands whose signature verified.
        self.signatures = 0
        #: Cases whose personal data was erased (their events still verify).
        self.erasures = 0
        #: ``(index, case id, topic)`` of every certificate leaf so far, in log order: what a
        #: published status list is recomputed from.
        self._certificate_leaves: list[tuple[int, UUID, str]] = []

    # ------------------------------------------------------------------ the integrator's side

    def leaf_for(self, origin: str, index: int, event: StoredEvent) -> tuple[Leaf, list[Problem]]:
        """The leaf the integrator must write for ``event`` and the problems it would have.

        The leaf's claims come from the event itself (a command record, the node's genesis, or
        else the command open just before it); the checks are then those of :meth:`check`.
        """
        decoded = self._decode(event)
        claims: dict[str, Any] = {}
        if event.topic == RECORD_TOPIC and isinstance(decoded, CommandRecord.Recorded):
            claims = {
                "authority": (
                    Authority.ADMIN_COMMAND
                    if decoded.signer_kind == ADMIN
                    else Authority.HALL_COMMAND
                ),
                "signer": decoded.signer,
                "key_id": decoded.key_id,
                "signature": decoded.signature,
                "command": decoded.signed_bytes,
            }
        elif event.topic == PEER_STEP_TOPIC and isinstance(decoded, PeerStep.Recorded):
            claims = {
                "authority": Authority.PEER_COMMAND,
                "signer": decoded.signer,
                "key_id": decoded.key_id,
                "signature": decoded.signature,
                "command": decoded.signed_bytes,
            }
        elif (
            event.topic == PEER_ACK_TOPIC and isinstance(decoded, PeerAcknowledgement.Recorded)
        ) or (event.topic == TRANSFER_REFUSED_TOPIC and isinstance(decoded, Case.TransferRefused)):
            claims = {
                "authority": Authority.PEER_ACK,
                "signer": decoded.peer,
                "key_id": decoded.key_id,
                "signature": decoded.signature,
                "command": decoded.body,
            }
        elif event.topic in NODE_TOPICS or event.topic in (
            WARNING_TOPIC,
            EXPIRY_TOPIC,
            PUBLISHED_TOPIC,
        ):
            claims = {"authority": Authority.NODE}
        elif self._open is not None:
            claims = {"authority": Authority.CAUSED, "cause": self._open.index}
        else:
            claims = {"authority": Authority.NODE}  # which check() then refuses
        leaf = Leaf(
            origin=origin,
            index=index,
            aggregate_id=event.originator_id,  # type: ignore[arg-type]
            version=event.originator_version,
            topic=event.topic,
            event_hash=_sha256(event.state),
            **claims,
        )
        return leaf, self.check(leaf, event, decoded=decoded)

    # ------------------------------------------------------------------ the auditor's side

    def check(self, leaf: Leaf, event: StoredEvent | None, *, decoded: Any = None) -> list[Problem]:
        """The problems of ``leaf`` (and its stored ``event``); the checker moves past it."""
        problems: list[Problem] = []
        if decoded is None and event is not None:
            decoded = self._decode(event)
        if event is not None and decoded is None:
            problems.append(Problem("event undecodable", f"stored event of topic {leaf.topic}"))
        if self._open is not None and leaf.authority is not Authority.CAUSED:
            problems += self._close_incomplete()
        if leaf.authority is Authority.PEER_COMMAND:
            problems += self._check_peer_step(leaf, decoded)
        elif leaf.authority is Authority.PEER_ACK:
            problems += self._check_peer_ack(leaf, decoded)
        elif leaf.is_command:
            problems += self._check_command(leaf, decoded)
        elif leaf.authority is Authority.CAUSED:
            problems += self._check_caused(leaf, decoded)
        else:
            problems += self._check_node_event(leaf, decoded)
        if decoded is not None:
            self._learn(leaf.index, decoded)
        self.learn_certificate_leaf(leaf.index, leaf.aggregate_id, leaf.topic)
        self.learn_booking(leaf.aggregate_id, leaf.topic)
        return problems

    def learn_certificate_leaf(self, index: int, aggregate_id: UUID, topic: str) -> None:
        """Take in a leaf a status list depends on (others are ignored); each index once."""
        known = self._certificate_leaves
        if topic in CERTIFICATE_TOPICS and (not known or index > known[-1][0]):
            known.append((index, aggregate_id, topic))

    def learn_booking(self, aggregate_id: UUID, topic: str) -> None:
        """Take in a leaf that books an appointment or cancels one (others are ignored)."""
        if topic in BOOKING_TOPICS:
            cancelled = topic != BOOKED_TOPIC
            self._bookings[aggregate_id] = cancelled or self._bookings.get(aggregate_id, False)

    def learn(self, index: int, event: StoredEvent) -> None:
        """Take in what ``event`` (at leaf ``index``) says of signers, without checking it."""
        decoded = self._decode(event)
        if decoded is not None:
            self._learn(index, decoded)

    def verify_command(self, leaf: Leaf) -> list[Problem]:
        """Check one command leaf's signature against the key history learnt so far."""
        kind = HALL if leaf.authority is Authority.HALL_COMMAND else ADMIN
        agent = ""
        if kind == HALL:
            try:
                agent = parse_command(leaf.command).header.agent
            except InvalidInput as error:
                return [Problem("command unreadable", str(error))]
        return self._check_signature(leaf, kind, agent)

    def finish(self) -> list[tuple[int, Problem]]:
        """Problems left at the end of the log (a command whose events are missing)."""
        if self._open is None:
            return []
        index = self._open.index
        return [(index, problem) for problem in self._close_incomplete()]

    # ------------------------------------------------------------------ checks

    def _check_command(self, leaf: Leaf, record: Any) -> list[Problem]:
        problems: list[Problem] = []
        kind = HALL if leaf.authority is Authority.HALL_COMMAND else ADMIN
        if record is not None:
            if not isinstance(record, CommandRecord.Recorded):
                return [Problem("mis-bound signature", f"a {kind} command leaf on a {leaf.topic}")]
            stored = (record.signer_kind, record.signer, record.key_id, record.signature)
            if stored != (kind, leaf.signer, leaf.key_id, leaf.signature) or (
                record.signed_bytes != leaf.command
            ):
                problems.append(
                    Problem("mis-bound signature", "the leaf and the stored command record differ")
                )
        try:
            command = parse_command(leaf.command)
        except InvalidInput as error:
            return [*problems, Problem("command unreadable", str(error))]
        header, action = command.header, command.action
        if action.signer != kind or header.signer != leaf.signer:
            problems.append(
                Problem(
                    "mis-bound signature",
                    f"the command is a {action.signer} command of {header.signer!r}, the leaf "
                    f"names {kind} {leaf.signer!r}",
                )
            )
        if header.node != self.origin:
            problems.append(
                Problem(
                    "command for another node",
                    f"signed for {header.node!r}, this log is {self.origin!r}",
                )
            )
        used = (kind, header.signer, header.idempotency_key)
        # A record is one event, its creation: a later version of it is a replay, seen without
        # remembering the keys used (a restarted gate's checker does not know them).
        if (
            leaf.aggregate_id != record_id(kind, header.signer, header.idempotency_key)
            or leaf.version != 1
            or used in self._used_keys
        ):
            problems.append(
                Problem(
                    "command replayed",
                    f"{kind} {header.signer!r} already used key {header.idempotency_key!r}",
                )
            )
        self._used_keys.add(used)
        problems += self._check_signature(leaf, kind, header.agent)
        target = _expected_target(command)
        first, last, received_at = 1, None, None
        if isinstance(record, CommandRecord.Recorded):
            first, last, received_at = record.first_version, record.last_version, record.timestamp
            problems += self._check_receipt(header.issued_at, received_at)
            if target is None:
                target = record.target_id  # a booking: its Booked event is checked against it
            if (record.key, record.action) != (header.idempotency_key, action.action_name):
                problems.append(
                    Problem(
                        "mis-bound signature", "the record's key or action is not the command's"
                    )
                )
            if record.target_id != target:
                problems.append(
                    Problem(
                        "mis-bound signature",
                        f"the record says it acted on {record.target_id}, the command on {target}",
                    )
                )
        self._open = _Expectation(leaf.index, command, target, first, last, 0, received_at)
        if isinstance(action, Submit) and action.appointment_id:
            self._open.then = self._reception(leaf.index, command, received_at)
        return problems

    def _check_receipt(self, signed_at: datetime, received_at: datetime) -> list[Problem]:
        """The node refuses a command signed further than its clock window from its clock, so
        it cannot have received one earlier than the signed time less the window. A receipt
        backdated past that would move the step's business time (the earlier of the two)
        back: a late decision would look on time to supervision."""
        if received_at >= signed_at - self.clock_window:
            return []
        early = signed_at - received_at
        return [
            Problem(
                "backdated receipt",
                f"the node's record says it received the command at {received_at.isoformat()}, "
                f"{_duration(early)} before it was signed ({signed_at.isoformat()}); the node "
                f"refuses a command signed more than {_duration(self.clock_window)} from its "
                "clock",
            )
        ]

    def _reception(
        self, index: int, command: ParsedCommand, received_at: Any
    ) -> _Expectation | None:
        """A submission citing an appointment also marks it received (the next leaf)."""
        action = command.action
        assert isinstance(action, Submit)
        try:
            target = UUID(action.appointment_id)
        except ValueError:
            return None  # the node refuses such a submission; the missing event is reported
        return _Expectation(
            index,
            command,
            target,
            0,  # the version is the leaf's; its state is checked against the history
            None,
            received_at=received_at,
            produces=(Appointment.Received,),
        )

    def _check_peer_step(self, leaf: Leaf, record: Any) -> list[Problem]:
        if record is not None and not isinstance(record, PeerStep.Recorded):
            return [Problem("mis-bound signature", f"a peer step leaf on a {leaf.topic}")]
        if record is None:
            return [Problem("peer step unverifiable", "its stored record is missing")]
        problems: list[Problem] = []
        if (record.signer, record.key_id, record.signature, record.signed_bytes) != (
            leaf.signer,
            leaf.key_id,
            leaf.signature,
            leaf.command,
        ):
            problems.append(Problem("mis-bound signature", "the leaf and the step record differ"))
        step = (record.origin, record.origin_index)
        # One event per step record (its creation): a later version is a replay (see
        # _check_command).
        if (
            leaf.aggregate_id != peer_step_id(*step)
            or leaf.version != 1
            or step in self._peer_steps
        ):
            problems.append(
                Problem("peer step replayed", f"step {record.origin}#{record.origin_index}")
            )
        self._peer_steps.add(step)
        try:
            command = parse_command(record.signed_bytes)
        except InvalidInput as error:
            return [*problems, Problem("command unreadable", str(error))]
        header, action = command.header, command.action
        own = self.region or ""
        if header.node != record.origin or record.origin == self.origin:
            problems.append(
                Problem(
                    "command for another node",
                    f"signed for {header.node!r}, recorded as a step of {record.origin!r}",
                )
            )
        kept = self.peer_regions.get(record.origin)
        if action.signer != HALL or within(header.region, own):
            problems.append(Problem("mis-bound signature", "not a command of another node's hall"))
        elif leaf.signer != local_name(header.hall_id, header.region, own):
            problems.append(
                Problem("mis-bound signature", f"the hall is {header.hall_id!r}@{header.region}")
            )
        elif kept is not None and not within(header.region, kept):
            # A node speaks only for halls it registered, and it registers its own region's.
            problems.append(
                Problem(
                    "hall of another region",
                    f"the hall is of region {header.region}, which {record.origin!r} does not "
                    f"keep ({kept})",
                )
            )
        if key_id(record.hall_key) != leaf.key_id or not _verifies(
            record.hall_key, record.signature, record.signed_bytes
        ):
            problems.append(
                Problem("signature", f"does not verify with the key {leaf.key_id} it names")
            )
        else:
            self.signatures += 1
        problems += self._check_origin_proof(record, header.hall_id)
        target = _expected_target(command)
        if record.target_id != target:
            problems.append(
                Problem(
                    "mis-bound signature", f"the record acts on {record.target_id}, not {target}"
                )
            )
        regions = dict(record.hall_regions)
        self._open = _Expectation(
            leaf.index,
            command,
            target,
            record.first_version,
            record.last_version,
            actor_name=leaf.signer,
            localize=lambda name: local_name(name, regions.get(name), own),
            applied_at=record.timestamp,
        )
        return problems

    def _check_applied_at(self, record: PeerStep.Recorded, sent_at: datetime) -> list[Problem]:
        """A node applies a step after its envelope was sent (``sent_at``, signed by the
        sender): it refuses an envelope sent more than the clock skew ahead of its clock, so a
        record earlier than the sending time less that skew is backdated. (The latest it can be
        is this node's signed acknowledgement: ``tongban audit citations`` checks that, with
        both logs.)"""
        if record.timestamp >= sent_at - MAX_CLOCK_SKEW:
            return []
        return [
            Problem(
                "backdated receipt",
                f"the step of envelope {record.envelope_id} is recorded as applied at "
                f"{record.timestamp.isoformat()}, {_duration(sent_at - record.timestamp)} before "
                f"{record.sender} sent it ({sent_at.isoformat()}); a node refuses an envelope "
                f"sent more than {_duration(MAX_CLOCK_SKEW)} ahead of its clock",
            )
        ]

    def _check_origin_proof(self, record: Any, hall_id: str) -> list[Problem]:
        """The step's leaf in its origin's log, proved under a checkpoint the origin signed,
        in an envelope its sender signed, and applied here no earlier than it was sent."""
        try:
            origin_leaf = Leaf.decode(record.origin_leaf)
        except LedgerError as error:
            return [Problem("peer proof", f"the origin's leaf does not decode: {error}")]
        if (
            origin_leaf.origin,
            origin_leaf.index,
            origin_leaf.authority,
            origin_leaf.signer,
            origin_leaf.key_id,
            origin_leaf.signature,
            origin_leaf.command,
        ) != (
            record.origin,
            record.origin_index,
            Authority.HALL_COMMAND,
            hall_id,
            record.key_id,
            record.signature,
            record.signed_bytes,
        ):
            return [Problem("peer proof", "the origin's leaf is not this command")]
        verifier = self.peers.get(record.origin)
        if verifier is None:
            return [Problem("peer key unknown", f"no log key of {record.origin!r} to check with")]
        try:
            checkpoint = open_checkpoint(record.checkpoint, [verifier], origin=record.origin)
            verify_inclusion(
                origin_leaf.leaf_hash(),
                record.origin_index,
                checkpoint.checkpoint.size,
                list(record.inclusion_proof),
                checkpoint.checkpoint.root,
            )
        except LedgerError as error:
            return [Problem("peer proof", f"step {record.origin}#{record.origin_index}: {error}")]
        sender = self.peers.get(record.sender)
        if sender is None:
            return [Problem("peer key unknown", f"no log key of {record.sender!r} to check with")]
        if not sender.verify(ENVELOPE_CONTEXT + record.envelope, record.envelope_signature):
            return [Problem("peer envelope", f"{record.sender!r} did not sign this envelope")]
        try:
            envelope = parse_envelope(record.envelope)
        except InvalidInput as error:
            return [Problem("peer envelope", str(error))]
        if (
            envelope.envelope_id,
            envelope.sender,
            envelope.destination,
            envelope.step.origin,
            envelope.step.index,
            envelope.step.leaf,
        ) != (
            record.envelope_id,
            record.sender,
            self.origin,
            record.origin,
            record.origin_index,
            record.origin_leaf,
        ):
            return [Problem("peer envelope", "the envelope did not carry this step to this node")]
        return self._check_applied_at(record, envelope.sent_at)

    def _check_peer_ack(self, leaf: Leaf, record: Any) -> list[Problem]:
        refused = isinstance(record, Case.TransferRefused)
        if record is not None and not (refused or isinstance(record, PeerAcknowledgement.Recorded)):
            return [Problem("mis-bound signature", f"a peer acknowledgement on a {leaf.topic}")]
        if record is None:
            return [Problem("peer acknowledgement unverifiable", "its stored record is missing")]
        if (record.peer, record.key_id, record.signature, record.body) != (
            leaf.signer,
            leaf.key_id,
            leaf.signature,
            leaf.command,
        ):
            return [Problem("mis-bound signature", "the leaf and the acknowledgement differ")]
        if refused:
            # The refusal takes a case back: it must be waiting for another node's hall.
            case = self._case(leaf.aggregate_id, leaf.version)
            if case is None or not (
                case.state_is(CaseState.HANDED_OFF, CaseState.ESCALATED)
                and case.awaits_another_node
            ):
                return [Problem("invalid transition", "a refusal of a case not sent to a peer")]
        elif leaf.aggregate_id != acknowledgement_id(record.envelope_id) or leaf.version != 1:
            return [Problem("peer acknowledgement replayed", f"envelope {record.envelope_id}")]
        verifier = self.peers.get(record.peer)
        if verifier is None:
            return [Problem("peer key unknown", f"no log key of {record.peer!r} to check with")]
        if f"{verifier.key_id:08x}" != record.key_id or not verifier.verify(
            ACK_CONTEXT + record.body, record.signature
        ):
            return [Problem("signature", f"{record.peer!r} did not sign this acknowledgement")]
        try:
            body = parse_ack(record.body)
        except InvalidInput as error:
            return [Problem("peer acknowledgement", str(error))]
        stored = False if refused else record.stored
        if (
            (body.envelope_id, body.sender, body.destination, body.stored)
            != (record.envelope_id, record.peer, self.origin, stored)
            or (body.stored and body.index != record.peer_index)
            or (refused and body.reason != record.reason)
        ):
            return [Problem("peer acknowledgement", "the record is not what the peer signed")]
        if record.timestamp < body.signed_at - MAX_CLOCK_SKEW:
            # The node refuses an acknowledgement signed further ahead of its clock.
            early = body.signed_at - record.timestamp
            return [
                Problem(
                    "backdated receipt",
                    f"the acknowledgement of envelope {record.envelope_id} is recorded at "
                    f"{record.timestamp.isoformat()}, {_duration(early)} before {record.peer} "
                    f"signed it ({body.signed_at.isoformat()})",
                )
            ]
        return []

    def _check_signature(self, leaf: Leaf, kind: str, agent: str = "") -> list[Problem]:
        """The leaf's signature, by the key its signer had at that index: the hall's (or
        admin's), or the key of the named ``agent`` when that agent signs their own steps."""
        own = self._agent_keys.get((leaf.signer, agent)) if agent and kind == HALL else None
        if own is not None and own.since < leaf.index:
            return self._check_agent_signature(leaf, agent, own)
        signer = self._signers.get((kind, leaf.signer))
        if signer is None:
            return [
                Problem("unknown signer", f"no {kind} {leaf.signer!r} before index {leaf.index}")
            ]
        period = signer.key_at(leaf.index)
        if period is None or period.key_id != leaf.key_id:
            known = any(p.key_id == leaf.key_id for p in signer.periods)
            why = "was not its current key here" if known else "was never its key"
            return [
                Problem("key out of period", f"{kind} {leaf.signer!r}: key {leaf.key_id} {why}")
            ]
        if kind == HALL and signer.retired_at is not None and signer.retired_at < leaf.index:
            return [Problem("retired signer", f"hall {leaf.signer!r} was retired before")]
        if not _verifies(period.public_key, leaf.signature, leaf.command):
            return [
                Problem(
                    "signature",
                    f"does not verify over the command bytes with {leaf.signer!r}'s key "
                    f"{leaf.key_id}",
                )
            ]
        self.signatures += 1
        return []

    def _check_agent_signature(self, leaf: Leaf, agent: str, own: _KeyPeriod) -> list[Problem]:
        """A step of an agent who signs their own: by that key and no other (the hall's
        signature on it is refused, as the node refuses it)."""
        if own.key_id != leaf.key_id:
            return [
                Problem(
                    "key out of period",
                    f"agent {agent} of {leaf.signer!r} signs their own steps with key "
                    f"{own.key_id}, not {leaf.key_id}",
                )
            ]
        if not _verifies(own.public_key, leaf.signature, leaf.command):
            return [
                Problem(
                    "signature",
                    f"does not verify over the command bytes with agent {agent}'s key "
                    f"{leaf.key_id}",
                )
            ]
        self.signatures += 1
        return []

    def _check_caused(self, leaf: Leaf, event: Any) -> list[Problem]:
        open_ = self._open
        if open_ is None or leaf.cause != open_.index:
            return [
                Problem(
                    "unauthorised event",
                    f"{leaf.topic} v{leaf.version} of {leaf.aggregate_id} cites command "
                    f"{leaf.cause}, which is not the command that precedes it",
                )
            ]
        if (
            open_.then is not None
            and open_.produced > 0
            and open_.last_version is None
            and leaf.aggregate_id == open_.then.target
        ):
            open_ = self._open = open_.then  # without the record: the next aggregate begins
        command = open_.command
        action = command.action
        problems: list[Problem] = []
        topics = [get_topic(cls) for cls in (open_.produces or action.produces)]
        if open_.target is None:
            open_.target = leaf.aggregate_id  # a booking without its record: the leaf says
        if open_.next_version == 0:
            open_.next_version = leaf.version  # an appointment's reception: the leaf says
        if leaf.aggregate_id != open_.target or leaf.version != open_.next_version:
            problems.append(
                Problem(
                    "mis-bound event",
                    f"command {open_.index} ({action.action_name}) acts on {open_.target} "
                    f"v{open_.next_version}, not {leaf.aggregate_id} v{leaf.version}",
                )
            )
        # A pickup's one event is either outcome (delivered, or a wrong code recorded); an
        # erasure's is a case's or an appointment's (its content check says which it may be).
        either = isinstance(action, cmd.PickUpFromLocker | cmd.ErasePersonalData)
        first = topics if either else topics[:1]
        if leaf.topic not in topics or (open_.produced == 0 and leaf.topic not in first):
            problems.append(
                Problem("mis-bound event", f"{action.action_name} does not produce {leaf.topic}")
            )
        if event is not None and not problems:
            problems += self._check_content(leaf, event, open_, first=open_.produced == 0)
            problems += self._check_time(leaf, event, open_)
        elif event is None:
            self._learn_from_command(leaf.index, action, command.header.hall_id)
        open_.produced += 1
        open_.next_version = leaf.version + 1
        if open_.produces is not None:
            self._open = None  # an appointment's reception is one event
        elif open_.last_version is not None and leaf.version >= open_.last_version:
            self._open = open_.then
        return problems

    def _check_content(
        self, leaf: Leaf, event: Any, open_: _Expectation, *, first: bool
    ) -> list[Problem]:
        command = open_.command
        header, action = command.header, command.action
        problems: list[Problem] = []
        actor = getattr(event, "actor", None)
        signer_acts = actor is None or (
            actor.hall_id,
            actor.operator,
            actor.region,
            actor.agent,
        ) == (open_.actor_name or header.hall_id, header.operator, header.region, header.agent)
        if not signer_acts:
            problems.append(Problem("content mismatch", "the acting hall is not the signer"))
        if first and open_.localize is None:
            problems += self._check_agents(header.hall_id, header.agent, action)
        if open_.localize is not None:
            action = _localized(action, open_.localize)
        if isinstance(event, Appointment.Booked | Appointment.Event):
            return [*problems, *self._check_appointment(leaf, event, open_)]
        if getattr(event, "admin", header.admin) != header.admin:
            problems.append(Problem("content mismatch", "the acting admin is not the signer"))
        for name, wanted in action.arguments().items():
            if name == "case_id" or not hasattr(event, name):
                continue
            stored = getattr(event, name)
            if isinstance(stored, SealedApplicant):
                stored = stored.commitments
            if isinstance(action, Submit) and name == "competent_region" and not wanted:
                continue  # derived by the node from the item and the hall
            if stored != wanted:
                problems.append(
                    Problem("content mismatch", f"{name} differs from the signed command")
                )
        if isinstance(action, Submit) and getattr(event, "intake_region", None) != header.region:
            problems.append(Problem("content mismatch", "the intake region is not the hall's"))
        if isinstance(event, Case.CertificateIssued):
            problems += self._check_certificate(leaf, event)
        if isinstance(event, STATUS_EVENTS):
            problems += self._check_certificate_status(leaf, event, action)
        if isinstance(action, DELIVERY_ACTIONS) and actor is not None:
            problems += self._check_delivery(leaf, event, action)
        if first and isinstance(action, CaseAction | Submit):
            # Whether the acting hall may take the step is asked only of a signer's own step:
            # an event naming another hall is already named above, and once is enough.
            problems += self._check_transition(leaf, action, actor, ask_actor=signer_acts)
        return problems

    def _check_agents(self, hall_id: str, agent: str, action: Action) -> list[Problem]:
        """The agent a local command names (in its header, or as authorised in a submission
        or an authorisation) is one the hall registered before, and not retired; a registration
        is of an agent the hall does not have yet, a retirement of one it has."""
        problems: list[Problem] = []
        named = [agent] if agent else []
        if isinstance(action, Submit | AuthoriseAgent) and action.agent:
            named.append(action.agent.agent_id)
        for agent_id in named:
            retired = self._agents.get((hall_id, agent_id))
            if retired is None:
                problems.append(
                    Problem("unauthorised agent", f"{agent_id} is not an agent of {hall_id}")
                )
            elif retired:
                problems.append(Problem("unauthorised agent", f"{agent_id} of {hall_id} retired"))
        if isinstance(action, RegisterAgent) and (hall_id, action.agent_id) in self._agents:
            problems.append(Problem("invalid transition", f"{action.agent_id} registered twice"))
        if isinstance(action, RetireAgent) and self._agents.get((hall_id, action.agent_id)):
            problems.append(Problem("invalid transition", f"{action.agent_id} already retired"))
        return problems

    def _check_appointment(self, leaf: Leaf, event: Any, open_: _Expectation) -> list[Problem]:
        """预约办: a booking, cancellation or reception says what the command asked, of an
        appointment whose history allows it."""
        header, action = open_.command.header, open_.command.action
        if isinstance(event, Appointment.Booked) and isinstance(action, cmd.BookAppointment):
            return self._check_booking(leaf, event, open_, action)
        appointment = self._case(leaf.aggregate_id, leaf.version)
        if not isinstance(appointment, Appointment):
            return [Problem("invalid transition", "an appointment event for no appointment")]
        if isinstance(event, Appointment.PersonalDataErased):
            return self._check_appointment_erasure(event, open_, appointment)
        if appointment.state is not AppointmentState.BOOKED:
            return [Problem("invalid transition", f"the appointment is {appointment.state.name}")]
        if appointment.hall_id != header.hall_id:
            return [Problem("content mismatch", "the appointment is at another hall")]
        problems = self._check_appointment_time(event, open_, appointment.booked_at)
        if isinstance(event, Appointment.Cancelled) and isinstance(action, cmd.CancelAppointment):
            if event.reason != action.reason:
                problems.append(Problem("content mismatch", "reason differs from the command"))
            return problems
        if isinstance(event, Appointment.Received) and isinstance(action, Submit):
            case_id = case_id_for(header.hall_id, header.idempotency_key)
            if event.case_id != case_id or action.item_code != appointment.item_code:
                problems.append(
                    Problem("content mismatch", "the reception is not of the submitted case")
                )
            return problems
        return [Problem("mis-bound event", f"{action.action_name} does not produce {leaf.topic}")]

    def _check_appointment_erasure(
        self, event: Any, open_: _Expectation, appointment: Appointment
    ) -> list[Problem]:
        """An admin's erasure of an appointment's personal data: once, in any state, saying
        the admin and reason the command signed."""
        header, action = open_.command.header, open_.command.action
        if not isinstance(action, cmd.ErasePersonalData):
            return [Problem("mis-bound event", f"{action.action_name} does not erase")]
        if appointment.personal_data_erased:
            return [Problem("invalid transition", "the appointment's data was erased already")]
        problems = self._check_appointment_time(event, open_, appointment.booked_at)
        if (event.admin, event.reason) != (header.admin, action.reason):
            problems.append(Problem("content mismatch", "the erasure is not the signed command's"))
        return problems

    def _check_booking(
        self, leaf: Leaf, event: Appointment.Booked, open_: _Expectation, action: Any
    ) -> list[Problem]:
        hall_id = open_.command.header.hall_id
        problems = self._check_appointment_time(event, open_, None)
        commitments: AppointmentCommitments = action.applicant
        wanted = (
            action.item_code,
            action.kind,
            action.starts_at,
            action.ends_at,
            commitments.applicant,
            commitments.address,
            action.channel,
            action.agent,
            hall_id,
        )
        stored = (
            event.item_code,
            event.kind,
            event.starts_at,
            event.ends_at,
            event.applicant.commitments,
            event.address,
            event.channel,
            event.agent,
            action.hall_id,
        )
        if wanted != stored or (action.window and event.window != action.window):
            problems.append(Problem("content mismatch", "the booking differs from the command"))
        if leaf.version != 1:
            problems.append(Problem("invalid transition", "not a new appointment"))
        slot = event.window if event.kind is AppointmentKind.WINDOW else HOME_VISIT_SLOT
        if leaf.aggregate_id != appointment_id(hall_id, slot, event.starts_at, event.ordinal):
            problems.append(Problem("mis-bound event", "the appointment is not of its slot"))
        for ordinal in range(1, event.ordinal):
            # Every earlier booking of the slot is in the log before it, and was cancelled.
            cancelled = self._bookings.get(appointment_id(hall_id, slot, event.starts_at, ordinal))
            if cancelled is None:
                problems.append(
                    Problem(
                        "invalid transition", f"booking {ordinal} of the slot is not in the log"
                    )
                )
                break
            if not cancelled:
                problems.append(Problem("invalid transition", "the slot was booked already"))
                break
        return problems

    def _check_appointment_time(self, event: Any, open_: _Expectation, after: Any) -> list[Problem]:
        """An appointment event's time is its step's business time, as a case event's."""
        if open_.received_at is None:
            return []
        expected = business_time(open_.command.header.issued_at, open_.received_at, after)
        if event.timestamp != expected:
            return [Problem("content mismatch", "the event's time is not the step's business time")]
        return []

    def _check_expiry(self, leaf: Leaf, event: Any) -> list[Problem]:
        """预约办: the node's record that nobody came must follow from the appointment's history."""
        if event is None:
            return []
        if not isinstance(event, Appointment.Expired):
            return [Problem("unauthorised event", f"{leaf.topic} is not an expiry")]
        appointment = self._case(leaf.aggregate_id, leaf.version)
        if not isinstance(appointment, Appointment):
            return [Problem("unauthorised event", "an expiry of an appointment not in the log")]
        reason = appointment.check_expiry(event)
        return [] if reason is None else [Problem("unauthorised event", reason)]

    def _check_certificate(self, leaf: Leaf, event: Case.CertificateIssued) -> list[Problem]:
        """A certificate's identifier, region and holder are what the case before it gives."""
        case = self._case(leaf.aggregate_id, leaf.version)
        if case is None:
            return []  # reported by the transition check
        try:
            expected = case.certificate_facts(event.type_code, event.issuer_code)
        except InvalidInput as error:
            return [Problem("content mismatch", f"the certificate's {error}")]
        if (event.certificate_id, event.region, event.holder) != expected:
            return [
                Problem(
                    "content mismatch",
                    "the certificate's identifier, region or holder is not what the case gives",
                )
            ]
        return []

    def _check_certificate_status(self, leaf: Leaf, event: Any, action: Action) -> list[Problem]:
        """A status change is one the case before it allows: the holding hall of the competent
        region, a certificate issued here, and suspend/reinstate/revoke from the right status
        (:meth:`~hub.domain.case.Case.check_status_change`)."""
        case = self._case(leaf.aggregate_id, leaf.version)
        if case is None:
            return []  # reported by the transition check
        try:
            case.check_status_change(action.action_name, event.actor, event.reason)
        except TongbanError as error:
            return [Problem("invalid transition", f"{action.action_name}: {error}")]
        return []

    def _check_delivery(self, leaf: Leaf, event: Any, action: Action) -> list[Problem]:
        """A delivery step is one the case before it allows at the step's time: who may deliver
        by which channel (a kiosk only prints, after an identity check), a locker pickup at the
        deposit's compartment before it expired or locked, a return from the locker only after
        that (:meth:`~hub.domain.case.Case.check_delivery`, ``check_pickup``, ``check_return``).
        The pickup code itself is not in the log: the node checked it at its gate's side."""
        case = self._case(leaf.aggregate_id, leaf.version)
        if case is None:
            return []  # reported by the transition check
        actor = event.actor
        try:
            with step_time(event.timestamp):
                if isinstance(action, cmd.Deliver):
                    kind = (
                        None
                        if "@" in actor.hall_id
                        else self._hall_kinds.get(actor.hall_id, HallKind.UNSPECIFIED)
                    )
                    case.check_delivery(actor, event.method, event.identity_check, kind)
                elif isinstance(action, cmd.DispatchByPost | cmd.DepositInLocker):
                    case.check_ready(action.action_name)
                elif isinstance(action, cmd.PickUpFromLocker):
                    case.check_pickup(
                        action.action_name, actor, action.locker_id, action.compartment
                    )
                    place = f"{action.locker_id}#{action.compartment}"
                    if isinstance(event, Case.Delivered) and (event.method, event.place) != (
                        DeliveryMethod.LOCKER,
                        place,
                    ):
                        return [Problem("content mismatch", "a pickup delivers at its locker")]
                elif isinstance(action, cmd.ReturnToWindow):
                    case.check_return(actor, action.reason)
        except TongbanError as error:
            return [Problem("invalid transition", f"{action.action_name}: {error}")]
        return []

    def _check_time(self, leaf: Leaf, event: Any, open_: _Expectation) -> list[Problem]:
        """A case event's time must be its step's business time (see the module docstring):
        for a peer's step, the time this node applied it."""
        if not isinstance(event, Case.Submitted | Case.Event):
            return []
        if open_.applied_at is not None:
            signed_at = received_at = open_.applied_at
            bounds = "the time this node applied the peer's step, bounded by the previous step"
        elif open_.received_at is not None:
            signed_at, received_at = open_.command.header.issued_at, open_.received_at
            bounds = "signed time, bounded by receipt and the previous step"
        else:
            return []
        before = None
        if leaf.version > 1:
            case = self._case(leaf.aggregate_id, leaf.version)
            if case is None:
                return []  # reported by the transition check
            before = case.last_step_at
        expected = business_time(signed_at, received_at, before)
        if event.timestamp != expected:
            return [
                Problem(
                    "content mismatch",
                    f"the event's time {event.timestamp.isoformat()} is not the step's business "
                    f"time {expected.isoformat()} ({bounds})",
                )
            ]
        return []

    def _check_warning(self, leaf: Leaf, event: Any) -> list[Problem]:
        """An 电子监察 warning must be justified by the case's history before it."""
        if event is None:
            return []  # the leaf alone says nothing more; a missing event is reported apart
        if not isinstance(event, Case.SupervisionWarned):
            return [Problem("unauthorised event", f"{leaf.topic} is not a warning")]
        case = self._case(leaf.aggregate_id, leaf.version)
        if case is None:
            return [Problem("unauthorised event", "a warning for a case not in the log")]
        kind = event.kind.name
        if event.kind in case.warnings:
            return [Problem("unauthorised event", f"a second {kind} warning for the case")]
        try:
            due = warning_due(case, event.kind)
        except CalendarUnknown as error:
            return [Problem("warning unverifiable", str(error))]
        if due is None:
            return [
                Problem(
                    "unauthorised event",
                    f"a {kind} warning for a case whose history never reaches that mark",
                )
            ]
        if due != event.due_at:
            return [
                Problem(
                    "unauthorised event",
                    f"the {kind} warning says due at {event.due_at.isoformat()}, the case's "
                    f"history says {due.isoformat()}",
                )
            ]
        if event.timestamp < due:
            return [
                Problem(
                    "unauthorised event",
                    f"a {kind} warning recorded at {event.timestamp.isoformat()}, before the "
                    f"case was due ({due.isoformat()})",
                )
            ]
        return []

    def _check_transition(
        self, leaf: Leaf, action: Action, actor: Any = None, *, ask_actor: bool = True
    ) -> list[Problem]:
        if isinstance(action, Submit):
            return [] if leaf.version == 1 else [Problem("invalid transition", "not a new case")]
        case = self._case(leaf.aggregate_id, leaf.version)
        if case is None:
            return [Problem("invalid transition", f"{action.action_name} on a case not in the log")]
        if not isinstance(case, Case):
            # A case's event stored on another record (an appointment) is never a case's step.
            return [Problem("invalid transition", f"{action.action_name} on a record not a case")]
        if ask_actor and actor is not None and not isinstance(action, OWN_RULE_ACTIONS):
            # Who may act, as the command asked the case. A hall's genuine signature on a step
            # it may not take (another hall's case) is no authority for it.
            try:
                case.check_actor(action.action_name, actor, task_id=getattr(action, "task_id", ""))
            except TongbanError as error:
                return [Problem("unauthorised hall", f"{action.action_name}: {error}")]
        if actor is not None:
            try:
                case.check_agent(actor)  # an agent acts only with the applicant's authority
            except TongbanError as error:
                return [Problem("unauthorised agent", str(error))]
        allowed = ALLOWED_FROM.get(action.action_name)
        if allowed is not None and case.state not in allowed:
            return [
                Problem(
                    "invalid transition",
                    f"{action.action_name} is not allowed in state {case.state.name}",
                )
            ]
        if action.action_name in ACCEPTING_COMMANDS:
            # Acceptance needs every identity check the item requires passed before it, in
            # this log (the checks' events come before, bound to their own signed commands).
            try:
                case.check_required_checks(action.action_name)
            except TongbanError as error:
                return [Problem("invalid transition", str(error))]
        return []

    def _check_status_list(self, leaf: Leaf, event: Any) -> list[Problem]:
        """A published status list must be this log's, and say what the log up to its
        ``log_size`` says (recomputed from the certificate leaves before it)."""
        if event is None:
            return []  # the leaf alone says nothing more; a missing event is reported apart
        if not isinstance(event, StatusListPublication.Published):
            return [Problem("unauthorised event", f"{leaf.topic} is not a status list")]
        if event.origin != self.origin:
            return [Problem("unauthorised event", f"a status list of {event.origin}")]
        if not 0 <= event.log_size <= leaf.index:
            return [
                Problem(
                    "unauthorised event",
                    f"a status list of {event.log_size} leaves recorded at leaf {leaf.index}",
                )
            ]
        before = (c for c in self._certificate_leaves if c[0] < event.log_size)
        expected = digest_of_log(event.log_size, *certificate_statuses(before))
        if event.bits_digest != expected:
            return [
                Problem(
                    "content mismatch",
                    f"the status list of {event.log_size} leaves has digest "
                    f"{event.bits_digest[:16]}…, the log gives {expected[:16]}…",
                )
            ]
        return []

    def _check_node_event(self, leaf: Leaf, event: Any) -> list[Problem]:
        if leaf.topic == WARNING_TOPIC:
            return self._check_warning(leaf, event)
        if leaf.topic == EXPIRY_TOPIC:
            return self._check_expiry(leaf, event)
        if leaf.topic == PUBLISHED_TOPIC:
            return self._check_status_list(leaf, event)
        if leaf.topic not in NODE_TOPICS:
            return [
                Problem(
                    "unauthorised event",
                    f"{leaf.topic} claims no signer, but only a signed command may produce it",
                )
            ]
        if leaf.index != 0:
            return [Problem("unauthorised event", "a second genesis")]
        if event is not None and getattr(event, "origin", self.origin) != self.origin:
            return [Problem("unauthorised event", "the genesis names another origin")]
        return []

    def _close_incomplete(self) -> list[Problem]:
        open_, self._open = self._open, None
        assert open_ is not None
        last = open_.last_version
        if open_.produced == 0 or (last is not None and open_.next_version <= last):
            missing = f"v{open_.next_version}" + (f"..v{last}" if last else "")
            return [
                Problem(
                    "events missing",
                    f"command {open_.index} ({open_.command.action.action_name}) produced "
                    f"{open_.target} {missing}, which the log does not hold here",
                )
            ]
        return []

    # ------------------------------------------------------------------ state

    def _decode(self, event: StoredEvent) -> Any:
        try:
            return self._mapper.to_domain_event(event)
        except Exception:  # any undecodable bytes are a finding, never a crash
            return None

    def _learn(self, index: int, event: Any) -> None:
        if isinstance(event, Node.Initialised):
            self.region = event.region
            self._signers[(ADMIN, event.admin)] = _Signer(
                [_KeyPeriod(event.admin_key, key_id(event.admin_key), index)]
            )
        elif isinstance(event, Hall.Registered):
            self._signers[(HALL, event.hall_id)] = _Signer(
                [_KeyPeriod(event.public_key, key_id(event.public_key), index)]
            )
            self._hall_kinds[event.hall_id] = event.kind
        elif isinstance(event, Hall.KeyRotated | Hall.Retired):
            hall = self._hall_of(event.originator_id)
            if hall is not None and isinstance(event, Hall.KeyRotated):
                hall.periods[-1].until = index
                hall.periods.append(_KeyPeriod(event.public_key, key_id(event.public_key), index))
            elif hall is not None:
                hall.retired_at = index
        elif isinstance(event, Agent.Registered):
            self._agents[(event.actor.hall_id, event.agent_id)] = False
            if event.public_key:
                self._agent_keys[(event.actor.hall_id, event.agent_id)] = _KeyPeriod(
                    event.public_key, key_id(event.public_key), index
                )
        elif isinstance(event, Agent.Retired):
            for key in self._agents:
                if agent_aggregate_id(*key) == event.originator_id:
                    self._agents[key] = True
        elif isinstance(event, Case.Submitted | Case.Event):
            if isinstance(event, Case.PersonalDataErased):
                self.erasures += 1
            self._apply(event)
        elif isinstance(event, Appointment.Booked | Appointment.Event):
            if isinstance(event, Appointment.PersonalDataErased):
                self.erasures += 1
            self._apply(event)  # 预约办: kept beside the cases, by id

    def _learn_from_command(self, index: int, action: Action, hall_id: str = "") -> None:
        """Without the stored event, take a hall's keys from the admin's signed command (and a
        hall's agents from its own)."""
        if isinstance(action, RegisterAgent | RetireAgent):
            self._agents[(hall_id, action.agent_id)] = isinstance(action, RetireAgent)
            if isinstance(action, RegisterAgent) and action.public_key:
                with contextlib.suppress(InvalidInput):  # a bad key: the content check says
                    self._agent_keys[(hall_id, action.agent_id)] = _KeyPeriod(
                        action.public_key, key_id(action.public_key), index
                    )
        elif isinstance(action, RegisterHall):
            self._signers[(HALL, action.hall_id)] = _Signer(
                [_KeyPeriod(action.public_key, key_id(action.public_key), index)]
            )
            self._hall_kinds[action.hall_id] = action.kind
        elif isinstance(action, RotateHallKey | RetireHall):
            hall = self._signers.get((HALL, action.hall_id))
            if hall is not None and isinstance(action, RotateHallKey):
                hall.periods[-1].until = index
                hall.periods.append(_KeyPeriod(action.public_key, key_id(action.public_key), index))
            elif hall is not None:
                hall.retired_at = index

    def _hall_of(self, aggregate_id: UUID) -> _Signer | None:
        for (kind, name), signer in self._signers.items():
            if kind == HALL and hall_aggregate_id(name) == aggregate_id:
                return signer
        return None

    def _case(self, case_id: UUID, version: int) -> Any:
        """The case (or 预约办 appointment) as it stood before ``version`` (from the cache or
        the store); None when unknown."""
        case = self._cases.get(case_id)
        if case is not None and case.version == version - 1:
            self._cases.move_to_end(case_id)
            return case
        if self._load_history is None:
            return None
        case = None
        for stored in self._load_history(case_id, version):
            decoded = self._decode(stored)
            if decoded is None:
                return None
            case = decoded.mutate(case)
        if case is not None:
            self._remember(case)
        return case

    def _apply(self, event: Any) -> None:
        case = self._cases.get(event.originator_id)
        if case is None and not isinstance(event, Case.Submitted | Appointment.Booked):
            case = self._case(event.originator_id, event.originator_version)
            if case is None:
                return
        try:
            case = event.mutate(case)
        except Exception:  # a version gap: forget the case; a reload restores it
            self._cases.pop(event.originator_id, None)
            return
        self._remember(case)

    def _remember(self, case: Case) -> None:
        self._cases[case.id] = case
        self._cases.move_to_end(case.id)
        while len(self._cases) > self._cache_size:
            self._cases.popitem(last=False)

    def hall_key_history(self, hall_id: str) -> list[tuple[str, str, int, int | None]]:
        """``(public key, key id, since index, until index)`` of each key the hall had."""
        signer = self._signers.get((HALL, hall_id))
        if signer is None:
            return []
        return [(p.public_key, p.key_id, p.since, p.until) for p in signer.periods]


def _localized(action: Action, localize: Callable[[str], str]) -> Action:
    """A peer's action with the halls it names written in this node's naming."""
    if isinstance(action, cmd.HandOff | cmd.Escalate):
        return dataclasses.replace(action, to_hall=localize(action.to_hall))
    if isinstance(action, cmd.OpenJointTasks):
        tasks = tuple(
            dataclasses.replace(task, hall_id=localize(task.hall_id)) for task in action.tasks
        )
        return dataclasses.replace(action, tasks=tasks)
    return action


def _sha256(data: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(data).digest()


__all__ = [
    "AGENT_TOPICS",
    "EXPIRY_TOPIC",
    "NODE_TOPICS",
    "RECORD_TOPIC",
    "WARNING_TOPIC",
    "HistoryLoader",
    "LogChecker",
    "Problem",
]

"""The node's application: every signed command of the case lifecycle and the hall registry.

One ``eventsourcing`` Application holds all of a node's aggregates (its genesis, halls, cases,
command records), so its notification log is the node's single ordered feed that the ledger,
projections and relay follow.

Every command enters through :meth:`HubApplication.execute` with the exact bytes its signer
signed, and goes through the same steps, in this order:

1. parse the bytes (:mod:`hub.commands.wire`); the caller's certificate must be the signer;
2. find the signer — a registered, active hall at the region it claims, or an admin the node's
   genesis names — and verify the Ed25519 signature over those bytes with its current key;
3. the header must name this node;
4. a retry (same signer and idempotency key) returns the first result; the same key with
   another payload is ``IdempotencyConflict`` (a submit finds out when it is saved: its case and
   command record ids follow from the key, so a retry conflicts with the first and is answered
   with its result, saving every first submit a read);
5. the signed time must lie within the node's clock window (or, for a deferred command, in the
   past and not too old);
6. the clear personal values beside the bytes must open the commitments the command signed;
7. authorisation before anything about the case is revealed: a hall that is not a party to the
   case gets the same NotFound as for a case that does not exist;
8. the aggregate decides (it raises before changing anything), and the command record, then the
   events, are saved in one transaction (with the case's sealed personal-data key, if any).

If the aggregate refuses while a concurrent duplicate of the same command has just succeeded,
the duplicate's first result is returned rather than the refusal.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eventsourcing.application import AggregateNotFoundError, Application, Repository
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    Transcoder,
)
from eventsourcing.utils import Environment, EnvType, get_topic

from hub.application import appointments as appts
from hub.application.group_commit import GroupCommit
from hub.application.openings import open_commitments
from hub.application.recorders import PersonalKey, PersonalKeyAccess
from hub.application.storage import StorageGuard
from hub.application.vault import OpenedApplicant, PersonalDataVault
from hub.commands import model as cmd
from hub.commands.model import Action, CaseAction, ParsedCommand, PersonalValue, SignedCommand
from hub.commands.wire import parse_command
from hub.domain.agent import Agent, agent_aggregate_id
from hub.domain.appointments import Appointment, appointment_id
from hub.domain.case import (
    CLOCK_WINDOW,
    RECTIFICATION_DAYS,
    Case,
    business_time,
    case_id_for,
    step_time,
)
from hub.domain.codec import FrozenJSONTranscoder, register_domain_transcodings
from hub.domain.command_record import (
    ADMIN,
    CommandRecord,
    CommandResult,
    check_key,
    payload_digest,
    record_id,
)
from hub.domain.custody import (
    KIOSK_ID_NUMBER_FIELD,
    PICKUP_CODE_FIELD,
    check_code,
    code_matches,
)
from hub.domain.custody import check_key as check_locker_key
from hub.domain.federation import PeerStep, check_remote_name, split_name, within
from hub.domain.hall import Hall, decode_public_key, hall_aggregate_id, key_id
from hub.domain.items import Catalogue
from hub.domain.node import NODE_ID, Node
from hub.domain.regions import RegionCode, RegionRegistry
from hub.domain.supervision import warning_due
from hub.domain.values import (
    APPLICANT_FIELDS,
    Actor,
    AgentAuthorisation,
    Applicant,
    CaseState,
    DeliveryMethod,
    HallKind,
    IntakeChannel,
    WarningKind,
)
from hub.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    PermissionRefused,
    SignatureRefused,
    SlotTaken,
    StoreMismatch,
    TongbanError,
)

Clock = Callable[[], datetime]
#: Checks the certificate a window hands over for another node: (case, token, now); raises
#: InvalidInput (built by hub.bootstrap from the peers' trust bundles; None: none configured).
CertificateCheck = Callable[[Case, str, datetime], None]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NodePolicy:
    """What binds a command to this node: its log origin, the region it keeps, the clock."""

    origin: str
    region: str
    #: How far a command's signed time may be from the node's (either way).
    clock_window: timedelta = CLOCK_WINDOW
    #: How old a deferred command (outbox, register import) may be.
    deferred_max_age: timedelta = timedelta(days=30)
    #: The federation's other nodes (from the federation file), as (log origin, region kept):
    #: a hall there is named ``hall_id@region`` in commands (see hub.domain.federation), and a
    #: step a peer relays must be one of its own halls' (hub.application.peers).
    peers: tuple[tuple[str, str], ...] = ()

    def peer_keeps(self, region: str) -> bool:
        """Whether another node of the federation keeps ``region``."""
        return any(within(region, kept) for _origin, kept in self.peers)

    def origin_keeps(self, origin: str, region: str) -> bool:
        """Whether the peer whose log is ``origin`` keeps ``region``."""
        return any(o == origin and within(region, kept) for o, kept in self.peers)

    #: Working days a 差评's rectification (整改) is given (set per province).
    rectification_days: int = RECTIFICATION_DAYS


@dataclass
class _Run:
    """One command on its way through :meth:`HubApplication.execute`."""

    parsed: ParsedCommand
    signed: SignedCommand
    key_id: str
    digest: str
    hall: Hall | None  # the signing hall (None for an admin command)
    received_at: datetime  # the node's time when the command arrived

    def step_at(self, after: datetime | None) -> datetime:
        """The business time of the command's step (after the case's previous step)."""
        return business_time(self.parsed.header.issued_at, self.received_at, after)

    @property
    def actor(self) -> Actor:
        header = self.parsed.header
        return Actor(header.hall_id, header.operator, header.region, header.agent)


CaseStep = Callable[["HubApplication", Case, Actor, Any], None]

#: What each case command asks of the case: one line per command.
CASE_STEPS: dict[type[CaseAction], CaseStep] = {
    cmd.RequestCorrection: lambda app, case, actor, c: case.request_correction(
        actor, c.missing, c.notice
    ),
    cmd.Resubmit: lambda app, case, actor, c: case.resubmit(actor, c.materials),
    cmd.Accept: lambda app, case, actor, c: case.accept(actor),
    cmd.RejectAtIntake: lambda app, case, actor, c: case.reject_at_intake(actor, c.reason),
    cmd.HandOff: lambda app, case, actor, c: case.hand_off(
        actor, c.to_hall, app.receiving_region(c.to_hall, "to_hall"), c.reason
    ),
    cmd.AcknowledgeHandoff: lambda app, case, actor, c: case.acknowledge_handoff(
        actor, app.window_of(actor.hall_id, c.window, "window")
    ),
    cmd.StartHandling: lambda app, case, actor, c: case.start_handling(actor),
    cmd.Suspend: lambda app, case, actor, c: case.suspend(actor, c.reason, c.note),
    cmd.Resume: lambda app, case, actor, c: case.resume(actor),
    cmd.Escalate: lambda app, case, actor, c: case.escalate(
        actor, c.to_hall, app.receiving_region(c.to_hall, "to_hall"), c.reason
    ),
    cmd.OpenJointTasks: lambda app, case, actor, c: case.open_joint_tasks(
        actor, app.receiving_tasks(c.tasks)
    ),
    cmd.CompleteJointTask: lambda app, case, actor, c: case.complete_joint_task(
        actor, c.task_id, c.approved, c.note
    ),
    cmd.Decide: lambda app, case, actor, c: case.decide(actor, c.approved, c.reason),
    cmd.Conclude: lambda app, case, actor, c: case.conclude(actor),
    cmd.RecordCertificate: lambda app, case, actor, c: case.record_certificate(
        actor, c.certificate_id
    ),
    cmd.IssueCertificate: lambda app, case, actor, c: case.issue_certificate(
        actor, app.certificate_type(case, c.type_code), c.issuer_code, c.authority, c.valid_until
    ),
    cmd.SuspendCertificate: lambda app, case, actor, c: case.suspend_certificate(actor, c.reason),
    cmd.ReinstateCertificate: lambda app, case, actor, c: case.reinstate_certificate(
        actor, c.reason
    ),
    cmd.RevokeCertificate: lambda app, case, actor, c: case.revoke_certificate(actor, c.reason),
    cmd.Deliver: lambda app, case, actor, c: case.deliver(
        actor,
        c.method,
        c.note,
        app.delivery_place(actor.hall_id, c),
        c.identity_check,
        app.hall_kind(actor.hall_id),
    ),
    cmd.DispatchByPost: lambda app, case, actor, c: case.dispatch_by_post(
        actor, c.carrier, c.tracking_number
    ),
    cmd.DepositInLocker: lambda app, case, actor, c: case.deposit_in_locker(
        actor, c.locker_id, c.compartment, c.code_hash, c.hold_hours
    ),
    # A peer's copy records the outcome the origin's node decided (it checked the code, which
    # never travels); here the node itself checks it first (HubApplication._pick_up).
    cmd.PickUpFromLocker: lambda app, case, actor, c: case.pick_up_from_locker(
        actor, c.locker_id, c.compartment
    ),
    cmd.ReturnToWindow: lambda app, case, actor, c: case.return_to_window(
        actor, c.reason, app.window_of(actor.hall_id, c.window, "window")
    ),
    cmd.Rate: lambda app, case, actor, c: case.rate(
        actor, c.rating, c.comment, c.channel, app.policy.rectification_days
    ),
    cmd.CompleteRectification: lambda app, case, actor, c: case.complete_rectification(
        actor, c.report, c.follow_up
    ),
    cmd.Archive: lambda app, case, actor, c: case.archive(actor),
    cmd.Withdraw: lambda app, case, actor, c: case.withdraw(actor, c.reason),
    cmd.RecordIdentityCheck: lambda app, case, actor, c: case.record_identity_check(
        actor, c.method, c.device_id, c.result, c.score_band
    ),
    cmd.AuthoriseAgent: lambda app, case, actor, c: case.authorise_agent(
        actor, app.authorised_agent(actor.hall_id, c.agent, "agent.agent_id")
    ),
}

#: The personal fields each action commits to, by wire path.
PERSONAL_FIELDS: dict[str, tuple[str, ...]] = {
    "submit": tuple(f"submit.applicant.{field}" for field in APPLICANT_FIELDS),
    "book_appointment": tuple(
        f"book_appointment.applicant.{field}" for field in (*APPLICANT_FIELDS, "address")
    ),
    "register_agent": tuple(f"register_agent.person.{field}" for field in APPLICANT_FIELDS),
}

#: The attribute of each action holding the commitments its personal values open.
_COMMITTED = {"submit": "applicant", "register_agent": "person"}


class HubApplication(Application[UUID]):
    """A node's event-sourced application."""

    name = "Tongban"
    policy: NodePolicy

    def __init__(
        self,
        env: EnvType | None = None,
        *,
        policy: NodePolicy,
        vault: PersonalDataVault,
        regions: RegionRegistry | None = None,
        catalogue: Catalogue | None = None,
        group_commit: bool = False,
        clock: Clock = _utc_now,
    ) -> None:
        self.policy = policy
        self.vault = vault
        self.regions = regions or RegionRegistry.load_default()
        self.catalogue = catalogue or Catalogue.load_default()
        self.clock = clock
        #: Fails calls fast while the store is down (see hub.application.storage).
        self.storage = StorageGuard()
        super().__init__(env)
        #: The hall registry, cached: every command needs its signer's current key. Fast-forward
        #: reads only the events after the cached version (one indexed query), so a key rotated or
        #: a hall retired by another process is seen by the very next command.
        self.hall_repository: Repository[UUID] = Repository(
            self.events, cache_maxsize=10_000, fastforward=True
        )
        #: Concurrent commands share event-store transactions (see hub.application.group_commit).
        self.group_commit = GroupCommit(self) if group_commit else None
        self._admins: dict[str, str] | None = None
        #: See :data:`CertificateCheck`; set by hub.bootstrap from the federation file.
        self.certificate_check: CertificateCheck | None = None

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        """Configuration comes only from ``env`` (built from Settings), never the process env."""
        values = dict(type(self).env)
        values.update(env or {})
        return Environment(name, values)

    def construct_transcoder(self) -> Transcoder:
        """The library's JSON transcoder with arrays read back as tuples, plus domain types."""
        transcoder = FrozenJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        """Add the domain's value types to the library's JSON transcoder."""
        super().register_transcodings(transcoder)
        register_domain_transcodings(transcoder)

    @property
    def keys(self) -> PersonalKeyAccess:
        """The personal-data key tables beside the event store."""
        return cast(PersonalKeyAccess, self.recorder)

    # ================================================================ the node's genesis

    def initialise(self, *, log_key: str, admin: str, admin_key: str) -> Node:
        """Record the node's genesis (``tongban init``): its log key and first admin."""
        node = Node.initialise(
            origin=self.policy.origin,
            region=self.policy.region,
            log_key=log_key,
            admin=admin,
            admin_key=admin_key,
        )
        self._save(node, conflict=AlreadyExists("this store is already initialised"))
        return node

    def genesis(self) -> Node:
        """The node's genesis; StoreMismatch when the store was never initialised."""
        try:
            node = self._get(NODE_ID)
        except AggregateNotFoundError:
            raise StoreMismatch(
                "the store has not been initialised: run `tongban init` first"
            ) from None
        assert isinstance(node, Node)
        return node

    # ================================================================ commands

    def execute(
        self, signed: SignedCommand, *, expected: str | None = None, caller: str | None = None
    ) -> CommandResult:
        """Run one signed command (see the module docstring for the steps).

        ``expected``: the action the RPC stands for; ``caller``: the name in the caller's
        certificate, which must be the signer's.
        """
        parsed = parse_command(signed.command, expected)
        header, action = parsed.header, parsed.action
        check_key(header.idempotency_key)
        if caller is not None and caller != header.signer:
            raise PermissionRefused(caller, "the command is signed in another name")
        public_key, hall = self._signer_key(parsed)
        agent_signs = hall is not None and public_key != hall.current_key
        self._verify(signed, public_key, header.signer, header.agent if agent_signs else "")
        if header.node != self.policy.origin:
            raise InvalidInput(
                "command.header.node",
                header.node,
                f"this node is {self.policy.origin!r}; sign the command for the node you send to",
            )
        digest = payload_digest(action.action_name, self._canonical(action, signed))
        if not isinstance(action, cmd.Submit):
            # A submit skips this read: a retried submit names the same case and the same
            # command record as the first, so saving it conflicts and the handler below finds
            # the first result then. Every other command is looked up first, as running it
            # again could be refused by the state the first run left (e.g. accepting twice).
            replay = self._replay(
                action.signer, header.signer, header.idempotency_key, digest, action
            )
            if replay is not None:
                return self._unless_code_refused(action, replay, header.signer)
        run = _Run(parsed, signed, key_id(public_key), digest, hall, self.clock())
        try:
            self._check_time(parsed, run.received_at)
            result = self._handle(run)
        except TongbanError as error:
            # A concurrent duplicate of this very command may have won meanwhile: its result,
            # not a refusal of the command's own effect.
            replay = self._replay(
                action.signer, header.signer, header.idempotency_key, digest, action
            )
            if replay is not None:
                return self._unless_code_refused(action, replay, header.signer)
            if isinstance(error, InvalidInput):
                raise error.within(action.action_name) from None
            raise
        return self._unless_code_refused(action, result, header.signer)

    def _handle(self, run: _Run) -> CommandResult:
        action = run.parsed.action
        header = run.parsed.header
        if header.agent:
            # Before anything else: the agent is the signing hall's, and active.
            self.acting_agent(header.hall_id, header.agent, "command.header.agent")
        if isinstance(action, cmd.RegisterAgent | cmd.RetireAgent):
            return self._administer_agent(run, action)
        if isinstance(action, cmd.Submit):
            return self._submit(run, action)
        if isinstance(action, cmd.RegisterHall | cmd.RotateHallKey | cmd.RetireHall):
            return self._administer_hall(run, action)
        if isinstance(action, cmd.ErasePersonalData):
            return self._erase(run, action)
        if isinstance(action, cmd.StaffWindow):
            return self._staff_window(run, action)
        if isinstance(action, cmd.BookAppointment):
            return self._book_appointment(run, action)
        if isinstance(action, cmd.CancelAppointment):
            return self._cancel_appointment(run, action)
        assert isinstance(action, CaseAction)
        if isinstance(action, cmd.PickUpFromLocker):
            return self._pick_up(run, action)
        kiosk = run.hall is not None and run.hall.kind is HallKind.KIOSK
        if isinstance(action, cmd.Deliver) and (kiosk or action.method is DeliveryMethod.KIOSK):
            case = self._case_for_kiosk(action.case_id, run)
            if kiosk and action.method is DeliveryMethod.KIOSK:
                self._check_kiosk_reading(case, run)
            else:
                self._check_no_personal(run)
        else:
            self._check_no_personal(run)
            case = self._case_for_hall(action.case_id, run.parsed.header.hall_id)
        before = case.version
        if isinstance(action, cmd.Deliver):
            self._check_carried_certificate(case, action, run.received_at)
        with step_time(run.step_at(case.last_step_at)):
            CASE_STEPS[type(action)](self, case, run.actor, action)
        return self._commit(run, case, before)

    def _submit(self, run: _Run, action: cmd.Submit) -> CommandResult:
        """收件: take in an application at the signing hall."""
        header = run.parsed.header
        applicant, salts = self._open_personal(run)
        hall = run.hall
        assert hall is not None  # a hall signs a submit (checked when parsing)
        item = self.catalogue.get(action.item_code)
        intake = RegionCode(hall.region)
        if action.competent_region:
            competent = self.regions.validate(
                action.competent_region, "command.submit.competent_region"
            )
            if competent.level != item.competent_level:
                raise InvalidInput(
                    "command.submit.competent_region",
                    action.competent_region,
                    f"item {item.code} is decided at {item.competent_level.name} level, "
                    f"this region is {competent.level.name}",
                )
        elif intake.level >= item.competent_level:
            competent = intake.ancestor_at(item.competent_level)
        else:
            raise PermissionRefused(
                header.hall_id,
                f"a {intake.level.name} hall cannot take in item {item.code} without naming its "
                f"competent region ({item.competent_level.name} level)",
            )
        home = (
            self.regions.validate(action.home_region, "command.submit.home_region")
            if action.home_region
            else None
        )
        try:
            mode = item.mode_for(intake, competent, home)
        except InvalidInput as error:
            raise InvalidInput(f"command.submit.{error.field}", error.value, error.reason) from None
        hall.check_window(action.window, "command.submit.window")
        if action.channel is IntakeChannel.PEER_NODE:
            # The node marks the copies other nodes forward (docs/agents.md, "Intake channels").
            raise InvalidInput(
                "command.submit.channel",
                action.channel.name,
                "PEER_NODE is the node's own mark for a case another node forwarded: say how "
                "this hall took the application in",
            )
        if action.agent:
            self.authorised_agent(header.hall_id, action.agent, "command.submit.agent.agent_id")
        case_id = case_id_for(header.hall_id, header.idempotency_key)
        appointment = self._booked_for(run, action, applicant, case_id)
        sealed, key_row = self.vault.seal(case_id, applicant, salts, action.applicant)
        case = Case.submit(
            case_id=case_id,
            actor=run.actor,
            item_code=item.code,
            item_name=item.name,
            kind=item.kind,
            mode=mode,
            intake_region=intake,
            competent_region=competent,
            applicant=sealed,
            materials=action.materials,
            promised_days=item.promised_days,
            statutory_days=item.statutory_days,
            produces_certificate=item.certificate is not None,
            home_region=action.home_region,
            timestamp=run.step_at(None),
            window=action.window,
            channel=action.channel,
            appointment_id=action.appointment_id,
            required_checks=item.required_checks,
            agent=action.agent,
        )
        extra = (appointment,) if appointment is not None else ()
        return self._commit(run, case, 0, personal_keys=[key_row], extra=extra)

    # ================================================================ 预约办 (appointments)

    def _booked_for(
        self, run: _Run, action: cmd.Submit, applicant: Applicant, case_id: UUID
    ) -> Appointment | None:
        """The appointment a submission cites, marked received for ``case_id`` (None: none)."""
        if not action.appointment_id:
            return None
        field = "command.submit.appointment_id"
        hall_id = run.parsed.header.hall_id
        appointment = appts.appointment_for_hall(
            self._aggregate_or_none, action.appointment_id, hall_id, field
        )
        booked = self.open_appointment(appointment)
        appts.check_applicant(booked.applicant if booked else None, applicant, field)
        try:
            appointment.receive(run.actor, case_id, action.item_code, run.step_at(None))
        except InvalidInput as error:
            raise InvalidInput(field, error.value, error.reason) from None
        return appointment

    def _book_appointment(self, run: _Run, action: cmd.BookAppointment) -> CommandResult:
        """预约: book a slot at one of the signing hall's windows, or a home visit."""
        hall = run.hall
        assert hall is not None  # a hall signs a booking (checked when parsing)
        appts.check_booking_hall(run.actor, action)
        item = self.catalogue.get(action.item_code, "command.book_appointment.item_code")
        self._check_handles(hall, item)
        applicant, address, salts = appts.open_booking(action, run.signed.personal)
        window, slot = appts.slot_of(hall, action)
        ordinal = appts.free_ordinal(self._aggregate_or_none, hall.hall_id, slot, action.starts_at)
        target = appointment_id(hall.hall_id, slot, action.starts_at, ordinal)
        sealed, key_row = self.vault.seal(
            target,
            applicant,
            salts,
            action.applicant.applicant,
            extra={"address": address} if address else None,
        )
        appointment = Appointment.book(
            actor=run.actor,
            item_code=item.code,
            item_name=item.name,
            kind=action.kind,
            window=window,
            starts_at=action.starts_at,
            ends_at=action.ends_at,
            applicant=sealed,
            address=action.applicant.address,
            channel=action.channel,
            agent=action.agent,
            ordinal=ordinal,
            now=run.received_at,
            timestamp=run.step_at(None),
        )
        try:
            return self._commit(run, appointment, 0, personal_keys=[key_row])
        except ConcurrencyConflict as conflict:
            if self._aggregate_or_none(target) is None:
                raise
            # Another booking of the same slot was saved first (the ids collide by design).
            taken = f"the slot {slot} at {action.starts_at.isoformat()} was just booked"
            raise SlotTaken(taken) from conflict

    def _cancel_appointment(self, run: _Run, action: cmd.CancelAppointment) -> CommandResult:
        """Cancel one of the signing hall's appointments."""
        self._check_no_personal(run)
        appointment = appts.appointment_for_hall(
            self._aggregate_or_none,
            str(action.appointment_id),
            run.parsed.header.hall_id,
            "command.cancel_appointment.appointment_id",
        )
        before = appointment.version
        appointment.cancel(run.actor, action.reason, run.step_at(appointment.booked_at))
        return self._commit(run, appointment, before)

    def _check_handles(self, hall: Hall, item: Any) -> None:
        """The hall takes ``item`` in itself (its level decides it or is below, and the item may
        be taken in there): what a hall may be booked for."""
        intake = RegionCode(hall.region)
        field = "command.book_appointment.item_code"
        if intake.level < item.competent_level:
            raise InvalidInput(
                field,
                item.code,
                f"this hall does not take in item {item.code}: it is decided at "
                f"{item.competent_level.name} level, below the hall's",
            )
        try:
            item.allows_intake_in(intake, intake.ancestor_at(item.competent_level))
        except InvalidInput as error:
            raise InvalidInput(field, item.code, error.reason) from None

    def get_appointment(self, appointment_id: UUID) -> Appointment:
        """The appointment rebuilt from its stored events; NotFound otherwise."""
        found = self._aggregate_or_none(appointment_id)
        if not isinstance(found, Appointment):
            raise NotFound("appointment", appointment_id)
        return found

    def open_appointment(self, appointment: Appointment) -> OpenedApplicant | None:
        """The appointment's applicant (and address, in ``extra``) in clear; None when erased."""
        if appointment.applicant is None or appointment.personal_data_erased:
            return None
        stored = self._read(lambda: self.keys.personal_key(appointment.id))
        if not stored:
            return None
        return self.vault.open(appointment.id, appointment.applicant, stored[1])

    def record_appointment_expiry(self, appointment_id: UUID) -> Appointment:
        """Record that nobody came to ``appointment_id`` (the node's own act, once its slot is
        over): InvalidInput before the slot's end, TransitionRefused when no longer booked."""
        appointment = self.get_appointment(appointment_id)
        appointment.expire(self.clock())
        self._save(appointment)
        return appointment

    def _aggregate_or_none(self, aggregate_id: UUID) -> Any:
        try:
            return self._get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def _administer_hall(
        self, run: _Run, action: cmd.RegisterHall | cmd.RotateHallKey | cmd.RetireHall
    ) -> CommandResult:
        self._check_no_personal(run)
        if isinstance(action, cmd.RegisterHall):
            code = self.regions.validate(action.region, "command.register_hall.region")
            if not code.value.startswith(self.policy.region):
                raise InvalidInput(
                    "command.register_hall.region",
                    action.region,
                    f"this node keeps region {self.policy.region}; register the hall at the "
                    "node of its own region",
                )
            hall = Hall.register(
                hall_id=action.hall_id,
                name=action.name,
                region=code,
                windows=action.windows,
                public_key=action.public_key,
                kind=action.kind,
            )
            if self._exists(hall.id):
                raise AlreadyExists(f"hall {action.hall_id} is already registered")
            return self._commit(run, hall, 0)
        hall = self.get_hall(action.hall_id, for_change=True)
        before = hall.version
        if isinstance(action, cmd.RotateHallKey):
            hall.rotate_key(action.public_key)
        else:
            hall.retire(action.reason)
        return self._commit(run, hall, before)

    def _erase(self, run: _Run, action: cmd.ErasePersonalData) -> CommandResult:
        self._check_no_personal(run)
        found = self._aggregate_or_none(action.case_id)
        if isinstance(found, Appointment):
            # 预约办: the appointment's sealed applicant (and address) lose their key alike.
            before = found.version
            found.erase_personal_data(
                run.parsed.header.admin, action.reason, run.step_at(found.booked_at)
            )
            return self._commit(run, found, before, erase_keys=[found.id])
        case = self.get_case(action.case_id)
        before = case.version
        with step_time(run.step_at(case.last_step_at)):
            case.erase_personal_data(run.parsed.header.admin, action.reason)
        return self._commit(run, case, before, erase_keys=[case.id])

    def _administer_agent(
        self, run: _Run, action: cmd.RegisterAgent | cmd.RetireAgent
    ) -> CommandResult:
        """代办员: the signing hall registers or retires one of its agents."""
        hall_id = run.parsed.header.hall_id
        agent_id = agent_aggregate_id(hall_id, action.agent_id)
        if isinstance(action, cmd.RetireAgent):
            self._check_no_personal(run)
            agent = self.get_agent(hall_id, action.agent_id)
            before = agent.version
            agent.retire(run.actor, action.reason)
            return self._commit(run, agent, before)
        person, salts = self.open_personal(action, run.signed.personal)
        if self._exists(agent_id):
            raise AlreadyExists(f"agent {action.agent_id} is already registered at {hall_id}")
        if action.public_key:
            decode_public_key(action.public_key)
            if action.public_key in (key for key, _ in self.hall_key_versions(hall_id)):
                raise InvalidInput(
                    "public_key",
                    key_id(action.public_key),
                    "this is one of the hall's keys: an agent's key must be the agent's own",
                )
        sealed, key_row = self.vault.seal(agent_id, person, salts, action.person)
        # An agent's key row is not found by the person's ID number as an applicant's cases
        # are (erasing an applicant's cases must not touch the agent record).
        key_row = dataclasses.replace(key_row, subject=self.vault.subject(f"agent\x00{hall_id}"))
        agent = Agent.register(
            actor=run.actor, agent_id=action.agent_id, person=sealed, public_key=action.public_key
        )
        return self._commit(run, agent, 0, personal_keys=[key_row])

    def get_agent(self, hall_id: str, agent_id: str) -> Agent:
        """The agent ``agent_id`` of ``hall_id``; NotFound otherwise."""
        try:
            agent = self._get(agent_aggregate_id(hall_id, agent_id))
        except AggregateNotFoundError:
            raise NotFound("agent", f"{agent_id} of {hall_id}") from None
        if not isinstance(agent, Agent):
            raise NotFound("agent", f"{agent_id} of {hall_id}")
        return agent

    def acting_agent(self, hall_id: str, agent_id: str, field: str) -> Agent:
        """The registered, active agent of the signing hall; PermissionRefused otherwise (an
        agent of another hall is not known here, by construction)."""
        try:
            agent = self.get_agent(hall_id, agent_id)
        except NotFound:
            raise PermissionRefused(
                hall_id, f"{field}: agent {agent_id!r} is not registered at this hall"
            ) from None
        agent.check_active()
        return agent

    def authorised_agent(
        self, hall_id: str, authorisation: AgentAuthorisation, field: str
    ) -> AgentAuthorisation:
        """``authorisation``, after checking that it names an active agent of the hall (a hall
        of another node, ``hall@region``, keeps its agents there: its node checked them)."""
        if "@" not in hall_id:
            self.acting_agent(hall_id, authorisation.agent_id, field)
        return authorisation

    def _staff_window(self, run: _Run, action: cmd.StaffWindow) -> CommandResult:
        """AB岗: the signing hall sets who serves one of its windows."""
        self._check_no_personal(run)
        hall = self.get_hall(run.parsed.header.hall_id, for_change=True)
        before = hall.version
        hall.staff_window(
            run.actor, action.window, action.a_post, action.b_post, action.a_post_absent
        )
        return self._commit(run, hall, before)

    # ================================================================ delivery channels

    def _pick_up(self, run: _Run, action: cmd.PickUpFromLocker) -> CommandResult:
        """取件: check the typed code against the deposit's keyed hash, then record the
        delivery, or the wrong code (which :meth:`_unless_code_refused` then refuses)."""
        case = self._case_for_hall(action.case_id, run.parsed.header.hall_id)
        code, key = self._pickup_code(run)
        before = case.version
        with step_time(run.step_at(case.last_step_at)):
            # Expired, locked or another compartment: refused before the code is looked at.
            case.check_pickup(action.action_name, run.actor, action.locker_id, action.compartment)
            if code_matches(case.locker_code_hash, case.id, code, key):
                case.pick_up_from_locker(run.actor, action.locker_id, action.compartment)
            else:
                case.refuse_locker_code(run.actor, action.locker_id, action.compartment)
        return self._commit(run, case, before)

    def _pickup_code(self, run: _Run) -> tuple[str, bytes]:
        personal = run.signed.personal
        if len(personal) != 1 or personal[0].field != PICKUP_CODE_FIELD:
            raise InvalidInput(
                "personal",
                [value.field for value in personal],
                f"send the typed code as the one value of field {PICKUP_CODE_FIELD!r}, with "
                "the locker's key as its salt",
            )
        check_code(personal[0].value, "personal[0].value")
        check_locker_key(personal[0].salt, "personal[0].salt")
        return personal[0].value, personal[0].salt

    def _unless_code_refused(
        self, action: Action, result: CommandResult, signer: str
    ) -> CommandResult:
        """A pickup whose code was wrong is stored (it counts towards the lock) and answered
        as refused — its retries too."""
        if not isinstance(action, cmd.PickUpFromLocker):
            return result
        case = self.get_case(result.case_id, result.version)
        if case.state is CaseState.IN_LOCKER:
            raise PermissionRefused(
                signer,
                f"wrong pickup code (personal[0].value): {case.locker_attempts_left} attempts left",
            )
        return result

    def _check_carried_certificate(self, case: Case, action: cmd.Deliver, now: datetime) -> None:
        """异地代收代办: before the intake window hands over a certificate another node issued,
        check its token offline with that node's issuer keys (the federation file's trust
        bundle for the peer). Without a trust bundle for that peer nothing can be checked: a
        token is then refused, and a delivery without one goes on as before."""
        offsite = action.method is DeliveryMethod.OFFSITE_WINDOW
        elsewhere = bool(case.certificate_id) and not case.competent_region.startswith(
            self.policy.region
        )
        if action.certificate_token and not (offsite and elsewhere):
            raise InvalidInput(
                "certificate_token", "<token>",
                "only an off-site window delivery of another node's certificate carries it",
            )  # fmt: skip
        if offsite and elsewhere:
            if self.certificate_check is not None:
                self.certificate_check(case, action.certificate_token, now)
            elif action.certificate_token:
                raise InvalidInput(
                    "certificate_token", "<token>",
                    "no trust bundle of the issuing node in the federation file: cannot check",
                )  # fmt: skip

    def _check_kiosk_reading(self, case: Case, run: _Run) -> None:
        """A kiosk prints only for the applicant: the ID number it read from the card travels
        beside the signed bytes (never signed, never stored) and must be the case's."""
        personal = run.signed.personal
        if len(personal) != 1 or personal[0].field != KIOSK_ID_NUMBER_FIELD:
            raise InvalidInput(
                "personal",
                [value.field for value in personal],
                f"send the ID number the kiosk read as the one value of {KIOSK_ID_NUMBER_FIELD!r}",
            )
        opened = self.open_applicant(case)
        if opened is None:
            raise PermissionRefused(
                run.parsed.header.hall_id, "the case's personal data was erased: no kiosk print"
            )
        if not hmac.compare_digest(
            personal[0].value.encode("utf-8"), opened.applicant.id_number.encode("utf-8")
        ):
            raise PermissionRefused(
                run.parsed.header.hall_id, "the ID card read is not the applicant's: no print"
            )

    def _case_for_kiosk(self, case_id: UUID, run: _Run) -> Case:
        """A kiosk prints the results of its county's cases without being a party; any other
        case is NotFound as for a hall that is no party to it."""
        hall = run.hall
        case = self._case_for_hall_or_none(case_id, run.parsed.header.hall_id)
        if case is not None:
            return case
        if hall is None or hall.kind is not HallKind.KIOSK:
            raise NotFound("case", case_id)
        try:
            case = self.get_case(case_id)
        except NotFound:
            raise NotFound("case", case_id) from None
        if hall.region[:6] not in {case.intake_region[:6], case.competent_region[:6]}:
            raise NotFound("case", case_id)
        return case

    def _case_for_hall_or_none(self, case_id: UUID, hall_id: str) -> Case | None:
        try:
            return self._case_for_hall(case_id, hall_id)
        except NotFound:
            return None

    def hall_kind(self, hall_id: str) -> HallKind | None:
        """The kind of a hall of this node; None for a hall of another node (its node checked)."""
        if split_name(hall_id)[1] is not None:
            return None
        return self.get_hall(hall_id).kind

    def delivery_place(self, hall_id: str, action: cmd.Deliver) -> str:
        """Where a delivery happens: a window of the hall (checked), or the kiosk itself."""
        if action.method in (DeliveryMethod.WINDOW, DeliveryMethod.OFFSITE_WINDOW):
            return self.window_of(hall_id, action.place, "place")
        if action.method is DeliveryMethod.KIOSK and action.place not in ("", hall_id):
            raise InvalidInput("place", action.place, "a kiosk prints at itself: its hall id")
        return action.place

    # ================================================================ supervision

    def record_warning(self, case_id: UUID, kind: WarningKind) -> Case:
        """Record an 电子监察 warning of ``case_id`` that is due now (the node's own act).

        The mark must have been crossed by now, computed from the case's stored history exactly
        as the ledger's gate and an auditor will re-compute it; each kind is recorded once
        (TransitionRefused for a second). Raises InvalidInput when it is not due (yet).
        """
        case = self.get_case(case_id)
        now = self.clock()
        due = warning_due(case, kind)
        if due is None or due > now:
            raise InvalidInput(
                "kind",
                kind.name,
                f"case {case_id} is not due for it"
                + (f" before {due.isoformat(timespec='seconds')}" if due else ""),
            )
        case.record_warning(kind, due, max(now, due))
        self._save(case)
        return case

    # ================================================================ queries

    def get_case(self, case_id: UUID, version: int | None = None) -> Case:
        """The case rebuilt from its stored events (optionally as of ``version``)."""
        try:
            case = self._get(case_id, version)
        except AggregateNotFoundError:
            raise NotFound("case", case_id) from None
        if not isinstance(case, Case):
            raise NotFound("case", case_id)
        return case

    def case_at_versions(self, case_id: UUID, versions: Sequence[int]) -> dict[int, Case]:
        """The case as of each of ``versions`` (as :meth:`get_case` gives it), from one read of
        its stored events: a follower that needs a step's case before and after it pays one
        round trip and one decoding, not two."""
        last = max(versions)
        events = self._read(lambda: list(self.events.get(case_id, lte=last)))
        if not events or not isinstance(events[0], Case.Submitted):
            raise NotFound("case", case_id)
        cases: dict[int, Case] = {}
        for version in versions:
            case: Any = None
            for event in events:
                if event.originator_version > version:
                    break
                case = event.mutate(case)  # replayed from the start: each its own object
            if case is not None:
                cases[version] = case
        return cases

    def case_for_hall(self, case_id: UUID, hall_id: str) -> Case:
        """The case if ``hall_id`` — a hall of this node that reads — is a party to it; the same
        NotFound as for no case otherwise. A retired hall reads nothing (PermissionRefused),
        whatever its certificate says."""
        self.reading_hall(hall_id)
        return self._case_for_hall(case_id, hall_id)

    def reading_hall(self, hall_id: str) -> Hall:
        """The registered hall behind a hall certificate (that reads, or signs): unknown is
        SignatureRefused, retired PermissionRefused."""
        try:
            hall = self.get_hall(hall_id)
        except NotFound:
            raise SignatureRefused(hall_id, "no such hall at this node") from None
        if hall.retired:
            raise PermissionRefused(hall_id, "the hall is retired")
        return hall

    def case_history(self, case_id: UUID) -> list[CanMutateAggregate[UUID]]:
        """The case's stored events, oldest first."""
        events = list(self._read(lambda: list(self.events.get(case_id))))
        if not events or not isinstance(events[0], Case.Submitted):
            raise NotFound("case", case_id)
        return events

    def steps_since(self, case_id: UUID, version: int) -> bool:
        """Whether a step changed the case after ``version``: any event but the node's own
        电子监察 warnings, which each node records in its own copy of a shared case."""
        events = self._read(lambda: list(self.events.get(case_id, gt=version)))
        return any(not isinstance(event, Case.SupervisionWarned) for event in events)

    def open_applicant(self, case: Case) -> OpenedApplicant | None:
        """The case's applicant in clear, or None when erased (or the case has none)."""
        if case.applicant is None or case.personal_data_erased:
            return None
        stored = self._read(lambda: self.keys.personal_key(case.id))
        return self.vault.open(case.id, case.applicant, stored[1] if stored else None)

    def cases_of_person(self, id_number: str) -> list[UUID]:
        """The cases (not yet erased) whose applicant has ``id_number``."""
        subject = self.vault.subject(id_number)
        found = list(self._read(lambda: self.keys.cases_of_subject(subject)))
        # 预约办: an appointment's sealed applicant has a key of its own there too; not a case.
        return [key for key in found if isinstance(self._aggregate_or_none(key), Case)]

    def appointments_of_person(self, id_number: str) -> list[UUID]:
        """The 预约办 appointments (not yet erased) whose applicant has ``id_number``."""
        subject = self.vault.subject(id_number)
        found = list(self._read(lambda: self.keys.cases_of_subject(subject)))
        return [key for key in found if isinstance(self._aggregate_or_none(key), Appointment)]

    def get_hall(self, hall_id: str, *, for_change: bool = False) -> Hall:
        """The hall with ``hall_id`` as stored now; NotFound otherwise.

        The hall comes from a cache brought up to date from the store on every call (so a key
        rotated or a hall retired in another process counts at once). It is shared: only with
        ``for_change`` is it a copy that may be changed and saved.
        """
        aggregate_id = hall_aggregate_id(hall_id)
        try:
            hall = self._read(
                lambda: self.hall_repository.get(aggregate_id, deepcopy_from_cache=for_change)
            )
        except AggregateNotFoundError:
            raise NotFound("hall", hall_id) from None
        if not isinstance(hall, Hall):
            raise NotFound("hall", hall_id)
        return hall

    def halls(self) -> list[Hall]:
        """Every hall ever registered at this node (retired ones too), by hall id."""
        topic = get_topic(Hall.Registered)
        ids: list[UUID] = []
        start: int | None = None

        def page(after: int | None) -> list[Any]:
            return list(
                self.recorder.select_notifications(
                    start=after, limit=500, topics=[topic], inclusive_of_start=after is None
                )
            )

        while True:
            batch: list[Any] = self._read(functools.partial(page, start))
            ids += [n.originator_id for n in batch]
            if len(batch) < 500:
                break
            start = batch[-1].id
        halls = [self.hall_by_id(hall_id) for hall_id in ids]
        return sorted(halls, key=lambda hall: hall.hall_id)

    def hall_by_id(self, aggregate_id: UUID) -> Hall:
        """The hall whose aggregate id is ``aggregate_id`` (an admin command's result)."""
        hall = self._get(aggregate_id)
        if not isinstance(hall, Hall):
            raise NotFound("hall", aggregate_id)
        return hall

    def hall_key_versions(self, hall_id: str) -> list[tuple[str, int]]:
        """Each key the hall has had, oldest first, with the version of the event that set it."""
        events = self._read(lambda: list(self.events.get(hall_aggregate_id(hall_id))))
        return [
            (event.public_key, event.originator_version)
            for event in events
            if isinstance(event, Hall.Registered | Hall.KeyRotated)
        ]

    def receiving_region(self, hall_id: str, field: str) -> RegionCode:
        """The region of a hall a case is sent to: registered and active here, or named
        ``hall_id@region`` in a region another node of the federation keeps."""
        if split_name(hall_id)[1] is not None:
            region = check_remote_name(hall_id, self.policy.region, field)
            if not self.policy.peer_keeps(region):
                raise InvalidInput(
                    field, hall_id, f"no node of this node's federation keeps region {region}"
                )
            return RegionCode(region)
        return RegionCode(self._receiving_hall(hall_id, field).region)

    def window_of(self, hall_id: str, window: str, field: str) -> str:
        """``window`` if it is one of the hall's windows (or empty: its first window).

        A hall of another node (``hall_id@region``, acting in a peer's step) is registered
        there, not here: its own node checked the window before it signed the step into its log.
        """
        if split_name(hall_id)[1] is None:
            self.get_hall(hall_id).check_window(window, field)
        return window

    def certificate_type(self, case: Case, type_code: str) -> str:
        """``type_code`` if it is the certificate type the catalogue gives the case's item."""
        item = self.catalogue.get(case.item_code)
        wanted = item.certificate.type_code if item.certificate else None
        if type_code != wanted:
            raise InvalidInput(
                "type_code",
                type_code,
                f"item {case.item_code} issues "
                + (f"certificate type {wanted}" if wanted else "no certificate"),
            )
        return type_code

    def receiving_tasks(self, tasks: tuple[Any, ...]) -> tuple[Any, ...]:
        """Joint tasks, each at a registered, active hall (here or at another node)."""
        for number, task in enumerate(tasks):
            self.receiving_region(task.hall_id, f"tasks[{number}].hall_id")
        return tasks

    # ================================================================ internals

    def _signer_key(self, parsed: ParsedCommand) -> tuple[str, Hall | None]:
        """The current public key of the command's signer, and the signing hall if a hall."""
        header = parsed.header
        if parsed.signer_kind == ADMIN:
            admins = self._admin_keys()
            if header.admin not in admins:
                raise SignatureRefused(header.admin, "no such admin at this node")
            return admins[header.admin], None
        hall = self._acting_hall(header.hall_id, header.region)
        if header.agent:
            # An agent with a key of their own signs their steps with it, never the hall.
            # (Whether the agent may act is checked after the signature and the retry lookup,
            # so a retry of a step taken before the agent retired still gets its first result.)
            try:
                agent = self.get_agent(header.hall_id, header.agent)
            except NotFound:
                agent = None  # refused by _handle, once the hall's signature is checked
            if agent is not None and agent.signs_own_steps:
                return agent.public_key, hall
        return hall.current_key, hall

    def _admin_keys(self) -> dict[str, str]:
        if self._admins is None:
            self._admins = dict(self.genesis().admins)
        return self._admins

    def _verify(self, signed: SignedCommand, public_key: str, signer: str, agent: str = "") -> None:
        """The signature must verify over the exact bytes with the signer's current key, or
        with ``agent``'s own key when ``public_key`` is it."""
        if not signed.signature:
            raise SignatureRefused(signer, "the command is not signed")
        public = Ed25519PublicKey.from_public_bytes(decode_public_key(public_key))
        try:
            public.verify(signed.signature, signed.command)
        except InvalidSignature:
            whose = "the signer's current key"
            if agent:
                whose = f"agent {agent}'s own key (the agent signs their steps, not the hall)"
            raise SignatureRefused(
                signer, f"does not verify over the command bytes with {whose}"
            ) from None

    def _check_time(self, parsed: ParsedCommand, now: datetime) -> None:
        header, policy = parsed.header, self.policy
        signed_at = header.issued_at
        when = signed_at.isoformat()
        if header.deferred:
            if signed_at > now + policy.clock_window:
                raise InvalidInput(
                    "command.header.issued_at", when, "a deferred command cannot be from the future"
                )
            if now - signed_at > policy.deferred_max_age:
                raise InvalidInput(
                    "command.header.issued_at",
                    when,
                    f"a deferred command may be at most {policy.deferred_max_age.days} days old",
                )
        elif abs(now - signed_at) > policy.clock_window:
            raise InvalidInput(
                "command.header.issued_at",
                when,
                f"more than {int(policy.clock_window.total_seconds())} s from the node's time "
                f"({now.isoformat(timespec='seconds')}): check the clock and sign again, or mark "
                "a command forwarded later as deferred",
            )

    def _open_personal(self, run: _Run) -> tuple[Applicant, dict[str, bytes]]:
        """The clear applicant and salts, each value opening its signed commitment."""
        action = run.parsed.action
        assert isinstance(action, cmd.Submit)
        return self.open_personal(action, run.signed.personal)

    def open_personal(
        self, action: cmd.Submit | cmd.RegisterAgent, personal: Sequence[PersonalValue]
    ) -> tuple[Applicant, dict[str, bytes]]:
        """The clear person (an applicant, or an agent) and salts of a command, each value
        opening the commitment the hall signed; InvalidInput naming the value at fault
        otherwise."""
        wanted = PERSONAL_FIELDS[action.action_name]
        commitments = getattr(action, _COMMITTED[action.action_name])
        prefix = f"{action.action_name}."  # the wire paths start with the action's name
        opened = open_commitments(commitments, wanted, personal)
        try:
            applicant = Applicant(**opened.values)
        except InvalidInput as error:
            # The value object names its field "applicant.<field>", whoever the person is.
            path = f"{prefix}{_COMMITTED[action.action_name]}.{error.field.rsplit('.', 1)[-1]}"
            raise opened.refuse(path, error.reason) from None
        return applicant, opened.salts

    def _canonical(self, action: Action, signed: SignedCommand) -> dict[str, Any]:
        """What makes two commands the same for idempotency: the arguments, with personal
        fields compared by their clear values (a re-signed retry has fresh salts, so other
        commitments) through a keyed hash, so the record holds nothing guessable."""
        arguments = _canonical(action)
        if signed.personal:
            clear = "\x00".join(f"{p.field}\x00{p.value}" for p in sorted(
                signed.personal, key=lambda p: p.field))  # fmt: skip
            arguments["applicant"] = self.vault.subject(clear)
            # An agent's registration commits to the agent as ``person``: compared the same way.
            arguments.pop("person", None)
        return arguments

    def _check_no_personal(self, run: _Run) -> None:
        if run.signed.personal:
            raise InvalidInput(
                "personal[0].field",
                run.signed.personal[0].field,
                f"{run.parsed.action.action_name!r} commits to no personal field",
            )

    def _case_for_hall(self, case_id: UUID, hall_id: str) -> Case:
        try:
            case = self.get_case(case_id)
        except NotFound:
            raise NotFound("case", case_id) from None
        if not case.involves(hall_id):
            # Indistinguishable from a case that does not exist.
            raise NotFound("case", case_id)
        return case

    def _replay(
        self, kind: str, signer: str, key: str, digest: str, action: Action
    ) -> CommandResult | None:
        """The first result when this signer already ran the same command; else None."""
        try:
            record = self._get(record_id(kind, signer, key))
        except AggregateNotFoundError:
            return None
        assert isinstance(record, CommandRecord)
        if record.action != action.action_name:
            raise IdempotencyConflict(key, f"for {record.action!r}, not {action.action_name!r}")
        if record.digest != digest:
            raise IdempotencyConflict(key, f"for {action.action_name!r} with a different payload")
        return record.result

    def _commit(
        self, run: _Run, aggregate: Any, before: int, extra: tuple[Any, ...] = (), **save: Any
    ) -> CommandResult:
        header = run.parsed.header
        result = CommandResult(aggregate.id, aggregate.version)
        record = CommandRecord.record(
            signer_kind=run.parsed.signer_kind,
            signer=header.signer,
            key=header.idempotency_key,
            action=run.parsed.action.action_name,
            digest=run.digest,
            target_id=aggregate.id,
            first_version=before + 1,
            last_version=aggregate.version,
            signed_bytes=run.signed.command,
            signature=run.signed.signature,
            key_id=run.key_id,
            issued_at=header.issued_at,
            deferred=header.deferred,
            timestamp=run.received_at,
        )
        try:
            # The record first: in the log each command is followed by the events it produced.
            # Further aggregates the command changed (an appointment a submission cites) follow.
            self._save(record, aggregate, *extra, **save)
        except ConcurrencyConflict:
            # Either a concurrent duplicate of this very command won (return its result), or
            # another command changed the same aggregate first (the caller may retry).
            replay = self._replay(
                run.parsed.signer_kind,
                header.signer,
                header.idempotency_key,
                run.digest,
                run.parsed.action,
            )
            if replay is not None:
                return replay
            raise
        return result

    def _acting_hall(self, hall_id: str, region: str) -> Hall:
        """The registered, active hall that signs, at the region it claims."""
        hall = self.reading_hall(hall_id)  # registered and not retired, as for a read
        if region != hall.region:
            raise PermissionRefused(
                hall_id, f"the hall is registered at {hall.region}, not {region}"
            )
        return hall

    def _receiving_hall(self, hall_id: str, field: str) -> Hall:
        try:
            hall = self.get_hall(hall_id)
        except NotFound:
            raise InvalidInput(field, hall_id, "no such hall at this node") from None
        if hall.retired:
            raise InvalidInput(field, hall_id, "the hall is retired")
        return hall

    def get_record(self, record_id: UUID) -> CommandRecord | PeerStep:
        """A command record or a peer step record; NotFound otherwise."""
        try:
            record = self._get(record_id)
        except AggregateNotFoundError:
            raise NotFound("record", record_id) from None
        if not isinstance(record, CommandRecord | PeerStep):
            raise NotFound("record", record_id)
        return record

    def record_event(self, record_id: UUID) -> CommandRecord.Recorded | PeerStep.Recorded:
        """The event that created a command record or a peer step record (the case versions
        its step produced; for a peer step, its evidence), in one read; NotFound otherwise."""
        events = self._read(lambda: list(self.events.get(record_id, lte=1)))
        if not events or not isinstance(events[0], CommandRecord.Recorded | PeerStep.Recorded):
            raise NotFound("record", record_id)
        created: CommandRecord.Recorded | PeerStep.Recorded = events[0]
        return created

    def record_first_version(self, record_id: UUID) -> int:
        """The first case version a command record's or peer step record's step produced."""
        events = self._read(lambda: list(self.events.get(record_id, lte=1)))
        if not events:
            raise NotFound("record", record_id)
        return int(events[0].first_version)

    def peer_step_evidence(self, record_id: UUID) -> PeerStep.Recorded:
        """The stored evidence of a step another node took (its envelope, proofs, keys)."""
        events = self._read(lambda: list(self.events.get(record_id, lte=1)))
        if not events or not isinstance(events[0], PeerStep.Recorded):
            raise NotFound("peer step", record_id)
        evidence: PeerStep.Recorded = events[0]
        return evidence

    def has_aggregate(self, aggregate_id: UUID) -> bool:
        """Whether any event of ``aggregate_id`` is stored."""
        return self._exists(aggregate_id)

    def save_records(self, *aggregates: Any, **kwargs: Any) -> None:
        """Save aggregates in one transaction (ConcurrencyConflict when one exists already).

        For the relay's records: a step another node took and the events it produced here, a
        peer's acknowledgement. Local commands go through :meth:`execute`.
        """
        self._save(*aggregates, **kwargs)

    def _exists(self, aggregate_id: UUID) -> bool:
        return bool(self._read(lambda: self.recorder.select_events(aggregate_id, limit=1)))

    def _get(self, aggregate_id: UUID, version: int | None = None) -> Any:
        return self._read(lambda: self.repository.get(aggregate_id, version=version))

    def _read(self, read: Callable[[], Any]) -> Any:
        return self.storage.run(read)

    def _save(self, *aggregates: Any, conflict: Exception | None = None, **kwargs: Any) -> None:
        def save() -> None:
            if self.group_commit is not None:
                # Raises what save() would, for these alone.
                self.group_commit.save(*aggregates, **kwargs)
            else:
                self.save(*aggregates, **kwargs)

        try:
            self.storage.run(save, write=True)
        except IntegrityError as error:
            if conflict is not None:
                raise conflict from error
            raise ConcurrencyConflict(
                "another command changed the same aggregate first; read it again and retry"
            ) from error


def _canonical(action: Action) -> dict[str, Any]:
    """The action's arguments as plain JSON values (for the idempotency digest)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [plain(item) for item in value]
        if isinstance(value, enum.Enum):
            return value.name
        return value

    return {name: plain(value) for name, value in action.arguments().items()}


__all__ = [
    "CASE_STEPS",
    "PERSONAL_FIELDS",
    "HubApplication",
    "NodePolicy",
    "PersonalKey",
]

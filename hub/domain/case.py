"""The ``Case`` aggregate (办件) and its lifecycle state machine.

Each public command method checks, in this order: the command is allowed in the current state
(:data:`ALLOWED_FROM`), the acting hall may act on the case (holder rules), and the arguments make
sense for this case. Only then does it trigger an event. So a refused command raises a
:class:`~hub.errors.TongbanError` and leaves the aggregate untouched.

Every event carries the :class:`~hub.domain.values.Actor` (hall, operator, region). Its time is
the *business time* of the step (:func:`step_time`): when the hall signed the command, bounded by
the node's rules (see :func:`business_time`), so a case taken in offline at a village room on
Friday starts its clock on Friday, not when the room's outbox synced. Events hold only plain values
and value objects, and each event class's ``apply`` is the single place that changes state, used
both when a command runs and when events are replayed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from hub.domain.certificates import CertificateIdentifier, CertificateStatus, serial_for
from hub.domain.custody import LOCKER_MAX_ATTEMPTS, MAX_HOLD_HOURS, check_code_hash
from hub.domain.regions import RegionCode
from hub.domain.values import (
    NO_AGENT,
    OPEN_STATES,
    Actor,
    AgentAuthorisation,
    CaseKind,
    CaseState,
    CheckResult,
    CrossRegionMode,
    DeliveryMethod,
    HallKind,
    IdentityCheck,
    IdentityCheckMethod,
    IntakeChannel,
    JointTask,
    Material,
    Rating,
    RatingChannel,
    ScoreBand,
    SealedApplicant,
    SuspensionReason,
    WarningKind,
)
from hub.errors import CheckMissing, InvalidInput, PermissionRefused, TransitionRefused

S = CaseState

#: The states of a case whose certificate may have been issued (the case is not archived).
CERTIFICATE_STATES = frozenset(
    {S.CERTIFICATE_ISSUED, S.DELIVERED, S.RATED, S.RECTIFYING, S.IN_POST, S.IN_LOCKER}
)

#: The states of a result ready to leave the hall (送达 by any channel, or into custody).
READY_STATES = frozenset({S.CONCLUDED, S.CERTIFICATE_ISSUED})

#: For each command, the states it may start from. The single source of truth of the lifecycle.
ALLOWED_FROM: dict[str, frozenset[CaseState]] = {
    "request_correction": frozenset({S.RECEIVED}),
    "resubmit": frozenset({S.AWAITING_CORRECTION}),
    "accept": frozenset({S.RECEIVED}),
    "reject_at_intake": frozenset({S.RECEIVED, S.AWAITING_CORRECTION}),
    "hand_off": frozenset({S.RECEIVED, S.ACCEPTED, S.HANDLING}),
    "acknowledge_handoff": frozenset({S.HANDED_OFF, S.ESCALATED}),
    "start_handling": frozenset({S.ACCEPTED}),
    "suspend": frozenset({S.HANDLING}),
    "resume": frozenset({S.SUSPENDED}),
    "escalate": frozenset({S.ACCEPTED, S.HANDLING}),
    "open_joint_tasks": frozenset({S.ACCEPTED, S.HANDLING}),
    "complete_joint_task": frozenset({S.JOINT}),
    "decide": frozenset({S.HANDLING}),
    "conclude": frozenset({S.DECIDED}),
    "record_certificate": frozenset({S.CONCLUDED}),
    "issue_certificate": frozenset({S.CONCLUDED}),
    # 送达; from IN_POST only by post (the confirmation that the post delivered it).
    "deliver": READY_STATES | {S.IN_POST},
    # Custody on the way to the applicant (docs/certificates.md, "Delivery"): the result is
    # posted or waits in a locker; it goes back to the window when the post returns it or the
    # deposit expires, and may then leave by another channel.
    "dispatch_by_post": READY_STATES,
    "deposit_in_locker": READY_STATES,
    "pick_up_from_locker": frozenset({S.IN_LOCKER}),
    "return_to_window": frozenset({S.IN_POST, S.IN_LOCKER}),
    "rate": frozenset({S.DELIVERED}),
    "complete_rectification": frozenset({S.RECTIFYING}),
    "archive": frozenset({S.DELIVERED, S.RATED}),
    # A certificate's status changes after it was issued, whatever the case did since (but an
    # archived case is final). Which status may change to which: Case.check_status_change.
    "suspend_certificate": CERTIFICATE_STATES,
    "reinstate_certificate": CERTIFICATE_STATES,
    "revoke_certificate": CERTIFICATE_STATES,
    "withdraw": OPEN_STATES,
    # An identity check is done while the case is taken in or handled (a failed one may be
    # repeated); an item that requires it is not accepted before it passed (Case.missing_checks).
    "record_identity_check": frozenset({S.RECEIVED, S.AWAITING_CORRECTION, S.ACCEPTED, S.HANDLING}),
    # An applicant may authorise an agent of the holding hall while the case is open.
    "authorise_agent": OPEN_STATES,
}

#: Commands the hall that took the case in may also take, besides the holding hall.
HOLDER_OR_INTAKE_COMMANDS = frozenset({"withdraw", "rate"})
#: Commands only a hall of the case's competent region takes (so only the competent node).
COMPETENT_REGION_COMMANDS = frozenset(
    {
        "decide",
        "issue_certificate",
        "suspend_certificate",
        "reinstate_certificate",
        "revoke_certificate",
    }
)

#: The commands that accept a case: refused while a check the item requires has not passed.
ACCEPTING_COMMANDS = frozenset({"accept", "resubmit"})


def case_id_for(hall_id: str, idempotency_key: str) -> UUID:
    """A submitted case's id follows from the intake hall and its key, so retries collide."""
    return uuid5(NAMESPACE_URL, f"tongban:case:{hall_id}:{idempotency_key}")


#: How far a command's signed time may be from the node's clock, either way, unless the node
#: sets another (``TONGBAN_CLOCK_WINDOW_S``). The node refuses a command signed outside it, so a
#: command record's time (when the node received the command) is never earlier than the signed
#: time less this window: the auditor checks it, so a rogue node cannot backdate a receipt to
#: make a late step look on time (a step's business time is the earlier of the two).
CLOCK_WINDOW = timedelta(minutes=5)

#: Working days given to fix a 差评 (rectification) and follow it up, unless the node (its
#: province) sets another number (``TONGBAN_RECTIFICATION_DAYS``).
RECTIFICATION_DAYS = 15

#: China Standard Time, in which a certificate's days are reckoned (hub.certificates).
_CHINA_TIME = timezone(timedelta(hours=8))
#: A certificate's last day as the log keeps it (``date.fromisoformat`` takes more forms).
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
#: The business time of the step being run, if a command is running (see :func:`step_time`).
_STEP_TIME: ContextVar[datetime | None] = ContextVar("step_time", default=None)


def business_time(signed_at: datetime, received_at: datetime, after: datetime | None) -> datetime:
    """The time a step happened: when its command was signed, within what the node can vouch for.

    Never after the node received the command (a hall's clock running ahead), and never before
    the case's previous step (a deferred command signed before a step that was stored first takes
    effect after it). The node has already refused commands whose signed time is outside its
    clock window (or, for deferred ones, from the future or too old).
    """
    moment = min(signed_at, received_at)
    return moment if after is None or moment >= after else after


@contextmanager
def step_time(at: datetime) -> Iterator[None]:
    """Case events made inside carry ``at`` as their time (the step's business time)."""
    token = _STEP_TIME.set(at)
    try:
        yield
    finally:
        _STEP_TIME.reset(token)


def _freeze(value: Any) -> Any:
    """Lists become tuples, so an event decoded from JSON equals the event that was encoded."""
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value


@dataclass(frozen=True)
class JointTaskStatus:
    """Progress of one joint task."""

    task: JointTask
    done: bool = False
    approved: bool | None = None
    note: str = ""


class Case(Aggregate):
    """One application for one service item by one applicant."""

    class HallEvent(Aggregate.Event):
        """Base of every case event a hall's command makes after submission: names the hall."""

        actor: Actor

        def __post_init__(self) -> None:
            super().__post_init__()
            for field in fields(self):
                object.__setattr__(self, field.name, _freeze(getattr(self, field.name)))

        def mutate(self, aggregate: Any) -> Any:
            aggregate = super().mutate(aggregate)
            aggregate.last_step_at = self.timestamp
            return aggregate

    class Submitted(Aggregate.Created):
        """收件: a hall took in the application."""

        actor: Actor
        item_code: str
        item_name: str
        kind: CaseKind
        mode: CrossRegionMode
        intake_region: str
        competent_region: str
        applicant: SealedApplicant
        materials: tuple[Material, ...]
        promised_days: int
        statutory_days: int
        produces_certificate: bool
        #: 全程网办: the applicant's home region when in another province ("" otherwise).
        home_region: str = ""
        window: str = ""  # the intake window (一窗受理); empty: the hall's first window
        channel: IntakeChannel = IntakeChannel.UNSPECIFIED
        #: 预约办: the appointment the applicant was booked for ("" none).
        appointment_id: str = ""
        #: The identity checks the item needs passed before acceptance (from the catalogue).
        required_checks: tuple[IdentityCheckMethod, ...] = ()
        #: An agent (代办员) of the intake hall acting for the applicant, and on what authority.
        agent: AgentAuthorisation = NO_AGENT

        def __post_init__(self) -> None:
            super().__post_init__()
            object.__setattr__(self, "materials", _freeze(self.materials))
            object.__setattr__(self, "required_checks", _freeze(self.required_checks))

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.RECEIVED
            aggregate.item_code = self.item_code
            aggregate.item_name = self.item_name
            aggregate.kind = self.kind
            aggregate.mode = self.mode
            aggregate.intake_region = self.intake_region
            aggregate.competent_region = self.competent_region
            aggregate.applicant = self.applicant
            aggregate.materials = self.materials
            aggregate.promised_days = self.promised_days
            aggregate.statutory_days = self.statutory_days
            aggregate.produces_certificate = self.produces_certificate
            aggregate.home_region = self.home_region
            aggregate.intake_hall = self.actor.hall_id
            aggregate.holder = self.actor.hall_id
            aggregate.parties = (self.actor.hall_id,)
            aggregate.clock_started_at = self.timestamp
            aggregate.last_step_at = self.timestamp
            aggregate.window = self.window
            aggregate.intake_window = self.window
            aggregate.channel = self.channel
            aggregate.appointment_id = self.appointment_id
            aggregate.required_checks = self.required_checks
            if self.agent:
                aggregate.agents = {(self.actor.hall_id, self.agent.agent_id): self.agent}

    class CorrectionRequested(HallEvent):
        """一次性告知: everything missing, in one notice; the clock pauses."""

        missing: tuple[str, ...]
        notice: str

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.AWAITING_CORRECTION
            aggregate.missing = self.missing
            aggregate._pause_clock(self.timestamp)

    class Resubmitted(HallEvent):
        """补正: the applicant brought what was missing; the case is accepted, clock resumes."""

        materials: tuple[Material, ...]

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.ACCEPTED
            aggregate.materials = aggregate.materials + self.materials
            aggregate.missing = ()
            aggregate._resume_clock(self.timestamp)

    class Accepted(HallEvent):
        """受理."""

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.ACCEPTED

    class RejectedAtIntake(HallEvent):
        """不予受理 (final)."""

        reason: str

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.REJECTED_AT_INTAKE
            aggregate.closing_reason = self.reason
            aggregate._stop_clock(self.timestamp)

    class HandedOff(HallEvent):
        """转办: sent to another hall, which must acknowledge."""

        to_hall: str
        to_region: str
        reason: str

        def apply(self, aggregate: Case) -> None:
            aggregate.state_before_transfer = aggregate.state
            aggregate.state = S.HANDED_OFF
            aggregate.pending_receiver = self.to_hall
            aggregate._add_party(self.to_hall)

    class Escalated(HallEvent):
        """上报: sent up to a hall of a higher level, which must acknowledge."""

        to_hall: str
        to_region: str
        reason: str

        def apply(self, aggregate: Case) -> None:
            aggregate.state_before_transfer = aggregate.state
            aggregate.state = S.ESCALATED
            aggregate.pending_receiver = self.to_hall
            aggregate._add_party(self.to_hall)

    class HandoffAcknowledged(HallEvent):
        """The receiving hall took the case; it is now its holder."""

        from_hall: str
        window: str = ""  # the receiving hall's window that takes the case

        def apply(self, aggregate: Case) -> None:
            aggregate.window = self.window
            before = aggregate.state_before_transfer
            aggregate.state = S.RECEIVED if before is S.RECEIVED else S.HANDLING
            aggregate.holder = self.actor.hall_id
            aggregate.pending_receiver = None
            aggregate.state_before_transfer = None

    class HandlingStarted(HallEvent):
        """承办: the holding hall starts handling."""

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.HANDLING

    class Suspended(HallEvent):
        """特别程序 starts; the clock pauses."""

        reason: SuspensionReason
        note: str

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.SUSPENDED
            aggregate._pause_clock(self.timestamp)

    class Resumed(HallEvent):
        """特别程序 ends; the clock resumes."""

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.HANDLING
            aggregate._resume_clock(self.timestamp)

    class JointTasksOpened(HallEvent):
        """联办: child tasks for departments or regions are opened."""

        tasks: tuple[JointTask, ...]

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.JOINT
            aggregate.joint_tasks = {t.task_id: JointTaskStatus(t) for t in self.tasks}
            for task in self.tasks:
                aggregate._add_party(task.hall_id)

    class JointTaskCompleted(HallEvent):
        """One joint task is done."""

        task_id: str
        approved: bool
        note: str

        def apply(self, aggregate: Case) -> None:
            status = aggregate.joint_tasks[self.task_id]
            aggregate.joint_tasks = {
                **aggregate.joint_tasks,
                self.task_id: JointTaskStatus(status.task, True, self.approved, self.note),
            }

    class JointTasksJoined(HallEvent):
        """All joint tasks are done; handling continues at the lead hall."""

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.HANDLING

    class Decided(HallEvent):
        """决定: approved (准予) or denied (不予)."""

        approved: bool
        reason: str

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.DECIDED
            aggregate.approved = self.approved
            aggregate.decision_reason = self.reason

    class Concluded(HallEvent):
        """办结; the clock stops."""

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.CONCLUDED
            aggregate._stop_clock(self.timestamp)

    class CertificateRecorded(HallEvent):
        """制证: the certificate issued for this case."""

        certificate_id: str

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.CERTIFICATE_ISSUED
            aggregate.certificate_id = self.certificate_id

    class CertificateIssued(HallEvent):
        """制证 (电子证照): the node issued the certificate of this case.

        ``type_code``, ``issuer_code``, ``authority`` and ``valid_until`` are what the hall
        signed; ``certificate_id``, ``region`` and ``holder`` follow from them and the case
        (:meth:`Case.certificate_facts`), which is what the auditor recomputes.
        """

        certificate_id: str
        type_code: str
        issuer_code: str
        authority: str
        valid_until: str
        region: str
        holder: str

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.CERTIFICATE_ISSUED
            aggregate.certificate_id = self.certificate_id
            aggregate.certificate_issued_at = self.timestamp
            aggregate.certificate_status = CertificateStatus.VALID

    class AgentAuthorised(HallEvent):
        """The applicant authorised an agent of the holding hall to act for them."""

        agent: AgentAuthorisation

        def apply(self, aggregate: Case) -> None:
            key = (self.actor.hall_id, self.agent.agent_id)
            aggregate.agents = {**aggregate.agents, key: self.agent}

    class IdentityChecked(HallEvent):
        """身份证识别 / 人脸识别 / 生存认证 was done: its outcome, never the biometric data."""

        method: IdentityCheckMethod
        device_id: str
        result: CheckResult
        score_band: ScoreBand

        def apply(self, aggregate: Case) -> None:
            if self.result is CheckResult.PASSED and self.method not in aggregate.passed_checks:
                aggregate.passed_checks = (*aggregate.passed_checks, self.method)

    class CertificateSuspended(HallEvent):
        """The issuing hall suspended the case's certificate (it may reinstate it)."""

        reason: str

        def apply(self, aggregate: Case) -> None:
            aggregate.certificate_status = CertificateStatus.SUSPENDED

    class CertificateReinstated(HallEvent):
        """The issuing hall lifted the suspension of the case's certificate."""

        reason: str

        def apply(self, aggregate: Case) -> None:
            aggregate.certificate_status = CertificateStatus.VALID

    class CertificateRevoked(HallEvent):
        """The issuing hall revoked the case's certificate: final."""

        reason: str

        def apply(self, aggregate: Case) -> None:
            aggregate.certificate_status = CertificateStatus.REVOKED

    class Delivered(HallEvent):
        """送达: the applicant has the result (handed over, printed, picked up, confirmed
        delivered by post, or sent online), at ``place`` (a window, kiosk or locker)."""

        method: DeliveryMethod
        note: str
        #: Where: the window (empty: the hall's first), the kiosk, or ``locker#compartment``.
        place: str = ""
        #: How a kiosk checked the applicant before printing (the method, never the data read).
        identity_check: IdentityCheck = IdentityCheck.UNSPECIFIED

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.DELIVERED
            aggregate.delivery_method = self.method
            aggregate.delivery_place = self.place
            aggregate._leave_custody()

    class PostDispatched(HallEvent):
        """邮寄: the result left the hall by post; delivered once the hall confirms it."""

        carrier: str
        tracking_number: str

        def apply(self, aggregate: Case) -> None:
            aggregate.state_before_custody = aggregate.state
            aggregate.state = S.IN_POST
            aggregate.tracking_number = self.tracking_number

    class LockerDeposited(HallEvent):
        """入柜: the result waits in a 24-hour locker; only the code's keyed hash is kept."""

        locker_id: str
        compartment: str
        code_hash: str
        hold_hours: int

        def apply(self, aggregate: Case) -> None:
            aggregate.state_before_custody = aggregate.state
            aggregate.state = S.IN_LOCKER
            aggregate.locker = (self.locker_id, self.compartment)
            aggregate.locker_code_hash = self.code_hash
            aggregate.locker_expires_at = self.timestamp + timedelta(hours=self.hold_hours)
            aggregate.locker_failed_attempts = 0

    class LockerCodeRefused(HallEvent):
        """A wrong pickup code was typed at the locker (the code itself is never recorded)."""

        locker_id: str
        compartment: str

        def apply(self, aggregate: Case) -> None:
            aggregate.locker_failed_attempts += 1

    class ReturnedToWindow(HallEvent):
        """The post returned the result (退件), or the locker deposit expired or was locked:
        the result is back at the hall's ``window`` and may be delivered another way."""

        reason: str
        window: str = ""

        def apply(self, aggregate: Case) -> None:
            aggregate.state = aggregate.state_before_custody or S.CONCLUDED
            aggregate.window = self.window
            aggregate._leave_custody()

    class Rated(HallEvent):
        """评价 (好差评)."""

        rating: Rating
        comment: str
        channel: RatingChannel = RatingChannel.UNSPECIFIED

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.RATED
            aggregate.rating = self.rating

    class RectificationOpened(HallEvent):
        """整改: a 差评 opens a rectification task with a deadline in working days."""

        deadline_days: int

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.RECTIFYING
            aggregate.rectification_deadline_days = self.deadline_days
            aggregate.rectification_opened_at = self.timestamp

    class RectificationCompleted(HallEvent):
        """整改 done, with the follow-up (回访) result."""

        report: str
        follow_up: str

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.RATED
            aggregate.rectified = True
            aggregate.rectification_completed_at = self.timestamp

    class Archived(HallEvent):
        """归档 (final)."""

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.ARCHIVED

    class Withdrawn(HallEvent):
        """撤回 (final)."""

        reason: str

        def apply(self, aggregate: Case) -> None:
            aggregate.state = S.WITHDRAWN
            aggregate.closing_reason = self.reason
            aggregate.pending_receiver = None  # a transfer in flight ends with the case
            aggregate.state_before_transfer = None
            aggregate._stop_clock(self.timestamp)

    class TransferRefused(Aggregate.Event):
        """The node of the hall a case was handed off or escalated to refused it; the case
        is back where it was. Not a :class:`HallEvent`: the other node's signed refusal (its
        acknowledgement body and signature, kept here) is what authorises it."""

        envelope_id: UUID
        peer: str
        key_id: str
        body: bytes
        signature: bytes
        reason: str

        def apply(self, aggregate: Case) -> None:
            aggregate.state = aggregate.state_before_transfer or S.ACCEPTED
            aggregate.pending_receiver = None
            aggregate.state_before_transfer = None

    class PersonalDataErased(Aggregate.Event):
        """An admin crypto-shredded the case's personal data (its sealed applicant).

        Not a :class:`HallEvent`: an admin acts here, named by ``admin``.
        """

        admin: str
        reason: str

        def apply(self, aggregate: Case) -> None:
            aggregate.personal_data_erased = True

    class SupervisionWarned(Aggregate.Event):
        """电子监察: the node's supervisor recorded that the case crossed a time mark.

        Not a :class:`HallEvent`: the node itself acts (its ledger leaf has the NODE authority),
        and anyone can check it from the case's own history: ``due_at`` is the instant the mark
        was crossed (:mod:`hub.domain.supervision`), no later than the event's time, and each
        kind is recorded at most once per case.
        """

        kind: WarningKind
        due_at: datetime

        def apply(self, aggregate: Case) -> None:
            aggregate.warnings = (*aggregate.warnings, self.kind)

    def __init__(self) -> None:
        # Attributes set by Submitted.apply are declared here for readers and type checkers.
        self.state = S.RECEIVED
        self.item_code = ""
        self.item_name = ""
        self.kind = CaseKind.PROMISED
        self.mode = CrossRegionMode.LOCAL
        self.intake_region = ""
        self.competent_region = ""
        self.home_region = ""
        self.applicant: SealedApplicant | None = None
        self.personal_data_erased = False
        #: Every hall that took in, held, was addressed or given a task: those may read the case.
        self.parties: tuple[str, ...] = ()
        self.materials: tuple[Material, ...] = ()
        self.promised_days = 0
        self.statutory_days = 0
        self.produces_certificate = False
        self.intake_hall = ""
        self.holder = ""
        self.pending_receiver: str | None = None
        self.state_before_transfer: CaseState | None = None
        self.missing: tuple[str, ...] = ()
        self.joint_tasks: dict[str, JointTaskStatus] = {}
        self.approved: bool | None = None
        self.decision_reason = ""
        self.certificate_id = ""
        self.certificate_issued_at: datetime | None = None
        self.certificate_status: CertificateStatus | None = None  # None: none issued here
        self.delivery_method: DeliveryMethod | None = None
        self.delivery_place = ""
        #: Custody on the way to the applicant (IN_POST / IN_LOCKER) and what came before it.
        self.state_before_custody: CaseState | None = None
        self.tracking_number = ""
        self.locker: tuple[str, str] | None = None  # (locker id, compartment)
        self.locker_code_hash = ""
        self.locker_expires_at: datetime | None = None
        self.locker_failed_attempts = 0
        self.rating: Rating | None = None
        self.rectification_deadline_days = 0
        self.rectified = False
        self.closing_reason = ""
        self.clock_started_at: datetime | None = None
        self.clock_stopped_at: datetime | None = None
        self.paused_since: datetime | None = None
        self.paused_seconds = 0.0
        #: Every finished pause of the clock, (start, end), in order.
        self.pauses: tuple[tuple[datetime, datetime], ...] = ()
        #: The business time of the last step a hall took (the floor for the next one).
        self.last_step_at: datetime | None = None
        #: The window that holds the case at its holder (empty: the hall's first window).
        self.window = ""
        self.intake_window = ""
        self.channel = IntakeChannel.UNSPECIFIED
        #: 预约办: the appointment this case was booked under ("" none).
        self.appointment_id = ""
        #: The identity checks the item requires, and those that passed so far.
        self.required_checks: tuple[IdentityCheckMethod, ...] = ()
        self.passed_checks: tuple[IdentityCheckMethod, ...] = ()
        #: The agents authorised to act for the applicant, by (hall, agent id).
        self.agents: dict[tuple[str, str], AgentAuthorisation] = {}
        self.rectification_opened_at: datetime | None = None
        self.rectification_completed_at: datetime | None = None
        #: The 电子监察 warnings recorded so far.
        self.warnings: tuple[WarningKind, ...] = ()

    # ---------------------------------------------------------------- creation

    @classmethod
    def submit(
        cls,
        *,
        case_id: UUID,
        actor: Actor,
        item_code: str,
        item_name: str,
        kind: CaseKind,
        mode: CrossRegionMode,
        intake_region: RegionCode,
        competent_region: RegionCode,
        applicant: SealedApplicant,
        materials: tuple[Material, ...],
        promised_days: int,
        statutory_days: int,
        produces_certificate: bool,
        home_region: str = "",
        timestamp: datetime | None = None,
        window: str = "",
        channel: IntakeChannel = IntakeChannel.UNSPECIFIED,
        appointment_id: str = "",
        required_checks: tuple[IdentityCheckMethod, ...] = (),
        agent: AgentAuthorisation = NO_AGENT,
    ) -> Case:
        """收件: create a case taken in by ``actor``'s hall (at ``window``, by ``channel``);
        an agent who takes it in (``actor.agent``) must be the one the authorisation names."""
        if actor.agent and actor.agent != agent.agent_id:
            raise PermissionRefused(
                actor.hall_id,
                f"agent {actor.agent} acts for the applicant without an authorisation recorded "
                "(give the 委托书 or the oral authorisation in submit.agent)",
            )
        if not materials:
            raise InvalidInput("materials", [], "at least one material is required")
        if actor.region != intake_region.value:
            raise PermissionRefused(actor.hall_id, "a hall takes in cases at its own region only")
        return cls._create(
            cls.Submitted,
            id=case_id,
            timestamp=timestamp if timestamp is not None else _STEP_TIME.get(),
            actor=actor,
            item_code=item_code,
            item_name=item_name,
            kind=kind,
            mode=mode,
            intake_region=intake_region.value,
            competent_region=competent_region.value,
            applicant=applicant,
            materials=tuple(materials),
            promised_days=promised_days,
            statutory_days=statutory_days,
            produces_certificate=produces_certificate,
            home_region=home_region,
            window=window,
            channel=channel,
            appointment_id=appointment_id,
            required_checks=tuple(required_checks),
            agent=agent,
        )

    # ---------------------------------------------------------------- intake

    def request_correction(self, actor: Actor, missing: tuple[str, ...], notice: str) -> None:
        """一次性告知: list everything missing at once; pauses the clock."""
        self._check("request_correction", actor)
        if not missing or any(not item.strip() for item in missing):
            raise InvalidInput("missing", list(missing), "name at least one missing material")
        self.trigger_event(self.CorrectionRequested, actor=actor, missing=missing, notice=notice)

    def resubmit(self, actor: Actor, materials: tuple[Material, ...]) -> None:
        """补正: the missing materials arrive; the case is accepted and the clock resumes."""
        self._check("resubmit", actor)
        self.check_required_checks("resubmit")
        if not materials:
            raise InvalidInput("materials", [], "a resubmission brings at least one material")
        self.trigger_event(self.Resubmitted, actor=actor, materials=tuple(materials))

    def accept(self, actor: Actor) -> None:
        """受理."""
        self._check("accept", actor)
        self.check_required_checks("accept")
        self.trigger_event(self.Accepted, actor=actor)

    def record_identity_check(
        self,
        actor: Actor,
        method: IdentityCheckMethod,
        device_id: str,
        result: CheckResult,
        score_band: ScoreBand,
    ) -> None:
        """Record an identity check the holding hall did (its outcome, never its data)."""
        self._check("record_identity_check", actor)
        _require_text("device_id", device_id)
        if len(device_id) > 128:
            raise InvalidInput("device_id", device_id[:16] + "…", "at most 128 characters")
        self.trigger_event(
            self.IdentityChecked, actor=actor, method=method, device_id=device_id,
            result=result, score_band=score_band,
        )  # fmt: skip

    def authorise_agent(self, actor: Actor, agent: AgentAuthorisation) -> None:
        """Record that the applicant authorised an agent of the holding hall (by the hall's
        staff: an agent does not record their own authorisation)."""
        self._check("authorise_agent", actor)
        if actor.agent:
            raise PermissionRefused(actor.hall_id, "an agent does not record their own authority")
        if not agent:
            raise InvalidInput("agent.agent_id", "", "name the agent")
        self.trigger_event(self.AgentAuthorised, actor=actor, agent=agent)

    def missing_checks(self) -> tuple[IdentityCheckMethod, ...]:
        """The checks the item requires that have not passed yet, in the item's order."""
        return tuple(m for m in self.required_checks if m not in self.passed_checks)

    def check_required_checks(self, command: str) -> None:
        """Raise :class:`~hub.errors.CheckMissing` (naming the first check) while a check the
        item requires has not passed; the binding check asks the same before each acceptance."""
        missing = self.missing_checks()
        if missing:
            raise CheckMissing(command, self.state.name, missing[0].name, self.item_code)

    def reject_at_intake(self, actor: Actor, reason: str) -> None:
        """不予受理, with the reason the applicant is told."""
        self._check("reject_at_intake", actor)
        _require_text("reason", reason)
        self.trigger_event(self.RejectedAtIntake, actor=actor, reason=reason)

    # ---------------------------------------------------------------- transfer

    def hand_off(self, actor: Actor, to_hall: str, to_region: RegionCode, reason: str) -> None:
        """转办 to another hall; the receiver must acknowledge before it holds the case."""
        self._check("hand_off", actor)
        if to_hall == self.holder:
            raise InvalidInput("to_hall", to_hall, "the case is already held by this hall")
        self.trigger_event(
            self.HandedOff, actor=actor, to_hall=to_hall, to_region=to_region.value, reason=reason
        )

    def escalate(self, actor: Actor, to_hall: str, to_region: RegionCode, reason: str) -> None:
        """上报 to a hall of a higher level containing this hall's region: never sideways/down."""
        self._check("escalate", actor)
        own_region = RegionCode(actor.region)
        if to_region not in set(own_region.ancestors()):
            raise InvalidInput(
                "to_region",
                to_region.value,
                f"escalation goes up to a region containing {own_region.value} "
                f"({own_region.level.name}), never sideways or down",
            )
        _require_text("reason", reason)
        self.trigger_event(
            self.Escalated, actor=actor, to_hall=to_hall, to_region=to_region.value, reason=reason
        )

    def acknowledge_handoff(self, actor: Actor, window: str = "") -> None:
        """The receiver of a handoff or escalation takes the case (at ``window``)."""
        self.check_actor("acknowledge_handoff", actor)
        self._check("acknowledge_handoff", actor, holder_only=False)
        self.trigger_event(
            self.HandoffAcknowledged, actor=actor, from_hall=self.holder, window=window
        )

    # ---------------------------------------------------------------- handling

    def start_handling(self, actor: Actor) -> None:
        """承办 at the holding hall."""
        self._check("start_handling", actor)
        self.trigger_event(self.HandlingStarted, actor=actor)

    def suspend(self, actor: Actor, reason: SuspensionReason, note: str) -> None:
        """特别程序: pause the clock for a hearing, inspection, expert review or public notice."""
        self._check("suspend", actor)
        self.trigger_event(self.Suspended, actor=actor, reason=reason, note=note)

    def resume(self, actor: Actor) -> None:
        """End the 特别程序; the clock resumes."""
        self._check("resume", actor)
        self.trigger_event(self.Resumed, actor=actor)

    def open_joint_tasks(self, actor: Actor, tasks: tuple[JointTask, ...]) -> None:
        """联办: open one task per department or region; the case waits until all are done."""
        self._check("open_joint_tasks", actor)
        if len(tasks) < 2:
            raise InvalidInput("tasks", len(tasks), "a joint case has at least two tasks")
        ids = [task.task_id for task in tasks]
        if len(set(ids)) != len(ids):
            raise InvalidInput("tasks.task_id", ids, "task ids must be unique")
        if self.kind is not CaseKind.JOINT:
            raise InvalidInput(
                "item", self.item_code, f"a {self.kind.name} item has no joint tasks"
            )
        if self.joint_tasks:
            raise TransitionRefused("open_joint_tasks", self.state.name, "tasks were already run")
        self.trigger_event(self.JointTasksOpened, actor=actor, tasks=tuple(tasks))

    def complete_joint_task(self, actor: Actor, task_id: str, approved: bool, note: str) -> None:
        """The task's hall reports its part; the last completion joins the case."""
        self.check_actor("complete_joint_task", actor, task_id=task_id)
        self._check("complete_joint_task", actor, holder_only=False)
        status = self.joint_tasks[task_id]
        if status.done:
            raise TransitionRefused("complete_joint_task", self.state.name, f"{task_id} is done")
        self.trigger_event(
            self.JointTaskCompleted, actor=actor, task_id=task_id, approved=approved, note=note
        )
        if all(s.done for s in self.joint_tasks.values()):
            self.trigger_event(self.JointTasksJoined, actor=actor)

    def decide(self, actor: Actor, approved: bool, reason: str) -> None:
        """决定, by a hall of the competent region only."""
        self._check("decide", actor)
        self._require_competent_region("decide", actor)
        _require_text("reason", reason)
        self.trigger_event(self.Decided, actor=actor, approved=approved, reason=reason)

    def conclude(self, actor: Actor) -> None:
        """办结; the clock stops."""
        self._check("conclude", actor)
        self.trigger_event(self.Concluded, actor=actor)

    def record_certificate(self, actor: Actor, certificate_id: str) -> None:
        """制证: record the certificate issued on an approved case of a certificate item."""
        self._check("record_certificate", actor)
        if not self.approved:
            raise TransitionRefused("record_certificate", self.state.name, "the case was denied")
        if not self.produces_certificate:
            raise TransitionRefused(
                "record_certificate", self.state.name, f"item {self.item_code} has no certificate"
            )
        _require_text("certificate_id", certificate_id)
        self.trigger_event(self.CertificateRecorded, actor=actor, certificate_id=certificate_id)

    def issue_certificate(
        self, actor: Actor, type_code: str, issuer_code: str, authority: str, valid_until: str
    ) -> None:
        """制证 (电子证照): issue the certificate of an approved, concluded certificate item.

        Only the holding hall of the competent region issues (like :meth:`decide`), so only the
        competent node can: a hall registered at a node is in that node's region.
        """
        self._check("issue_certificate", actor)
        self._require_competent_region("issue_certificate", actor)
        if not self.approved:
            raise TransitionRefused("issue_certificate", self.state.name, "the case was denied")
        if not self.produces_certificate:
            raise TransitionRefused(
                "issue_certificate", self.state.name, f"item {self.item_code} has no certificate"
            )
        _require_text("authority", authority)
        if valid_until:
            try:
                # YYYY-MM-DD only: the log keeps the text as given, and verifiers read it so.
                if not _ISO_DAY.fullmatch(valid_until):
                    raise ValueError(valid_until)
                until = date.fromisoformat(valid_until)
            except ValueError:
                raise InvalidInput(
                    "valid_until", valid_until, "expected a date as YYYY-MM-DD, or empty"
                ) from None
            # The issue date in China Standard Time, as the certificate's ``exp`` is reckoned.
            issued = (_STEP_TIME.get() or datetime.now(UTC)).astimezone(_CHINA_TIME).date()
            if until <= issued:
                raise InvalidInput("valid_until", valid_until, "must be after the issue date")
        certificate_id, region, holder = self.certificate_facts(type_code, issuer_code)
        self.trigger_event(
            self.CertificateIssued, actor=actor, certificate_id=certificate_id,
            type_code=type_code, issuer_code=issuer_code, authority=authority,
            valid_until=valid_until, region=region, holder=holder,
        )  # fmt: skip

    def certificate_facts(self, type_code: str, issuer_code: str) -> tuple[str, str, str]:
        """(identifier, region, holder) of this case's certificate: what the node derives.

        The identifier's serial comes from the case id (version 01: one issue per case); the
        holder is the case's salted commitment to the applicant's ID number, never the number.
        """
        identifier = CertificateIdentifier(type_code, issuer_code, serial_for(self.id))
        holder = self.applicant.commitments.id_number if self.applicant else ""
        return str(identifier), self.competent_region, holder

    def suspend_certificate(self, actor: Actor, reason: str) -> None:
        """Suspend the certificate this node issued (only a valid one; see
        :meth:`check_status_change`)."""
        self.check_status_change("suspend_certificate", actor, reason)
        self.trigger_event(self.CertificateSuspended, actor=actor, reason=reason)

    def reinstate_certificate(self, actor: Actor, reason: str) -> None:
        """Lift a suspension: only a suspended certificate is reinstated."""
        self.check_status_change("reinstate_certificate", actor, reason)
        self.trigger_event(self.CertificateReinstated, actor=actor, reason=reason)

    def revoke_certificate(self, actor: Actor, reason: str) -> None:
        """Revoke the certificate (valid or suspended); a revoked certificate stays revoked."""
        self.check_status_change("revoke_certificate", actor, reason)
        self.trigger_event(self.CertificateRevoked, actor=actor, reason=reason)

    def check_status_change(self, command: str, actor: Actor, reason: str) -> None:
        """Raise unless ``actor`` may make ``command`` (a certificate status change) now.

        Only the hall holding the case, in the competent region (so only the issuing node), acts
        on a certificate this node issued (:class:`CertificateIssued`, not a recorded one). The
        binding check asks the same question of the case before each logged status event.
        """
        self._check(command, actor)
        self._require_competent_region(command, actor)
        status = self.certificate_status
        if status is None:
            raise TransitionRefused(command, self.state.name, "no certificate was issued here")
        allowed = {
            "suspend_certificate": {CertificateStatus.VALID},
            "reinstate_certificate": {CertificateStatus.SUSPENDED},
            "revoke_certificate": {CertificateStatus.VALID, CertificateStatus.SUSPENDED},
        }[command]
        if status not in allowed:
            raise TransitionRefused(command, self.state.name, f"the certificate is {status.value}")
        _require_text("reason", reason)

    # ---------------------------------------------------------------- after the decision

    def deliver(
        self,
        actor: Actor,
        method: DeliveryMethod,
        note: str,
        place: str = "",
        identity_check: IdentityCheck = IdentityCheck.UNSPECIFIED,
        hall_kind: HallKind | None = HallKind.UNSPECIFIED,
    ) -> None:
        """送达: the applicant has the result (see :meth:`check_delivery` for who may)."""
        self.check_delivery(actor, method, identity_check, hall_kind)
        self.trigger_event(
            self.Delivered, actor=actor, method=method, note=note, place=place,
            identity_check=identity_check,
        )  # fmt: skip

    def check_delivery(
        self,
        actor: Actor,
        method: DeliveryMethod,
        identity_check: IdentityCheck,
        hall_kind: HallKind | None,
    ) -> None:
        """Raise unless ``actor`` (a hall of ``hall_kind``) may deliver by ``method`` now.

        The holding hall delivers; an approved certificate item needs its certificate first. A
        cross-region case's result may be handed over at the intake hall's window (一窗发证,
        ``OFFSITE_WINDOW``) by that hall, even though a hall of the competent region holds it.
        A self-service kiosk (a hall of kind KIOSK in the county of the case's intake or
        competent region) prints a result (``KIOSK``) only after it checked the applicant's
        identity, and delivers no other way. A result in the post is delivered only by post
        (the confirmation); the locker channel is :meth:`pick_up_from_locker`. ``hall_kind``
        None: a hall of another node, whose own node checked its kind.
        """
        kiosk = hall_kind is HallKind.KIOSK
        if method is DeliveryMethod.OFFSITE_WINDOW:
            self._require_holder_or_intake(actor)
            self._check("deliver", actor, holder_only=False)
        elif method is DeliveryMethod.KIOSK:
            if hall_kind is not None and not kiosk:
                raise PermissionRefused(actor.hall_id, "only a self-service kiosk prints (KIOSK)")
            if actor.region[:6] not in {self.intake_region[:6], self.competent_region[:6]}:
                raise PermissionRefused(actor.hall_id, "the kiosk is not in the case's county")
            self._check("deliver", actor, holder_only=False)
        else:
            if kiosk:
                raise PermissionRefused(actor.hall_id, "a kiosk delivers only by printing (KIOSK)")
            self._check("deliver", actor)
        if method is DeliveryMethod.LOCKER:
            raise InvalidInput("method", method.name, "a locker delivers by pick_up_from_locker")
        if self.state is S.IN_POST and method is not DeliveryMethod.POST:
            raise TransitionRefused(
                "deliver", self.state.name, "the result is in the post: confirm it by post, or "
                "return it to the window first",
            )  # fmt: skip
        if self.state is S.CONCLUDED and self.approved and self.produces_certificate:
            raise TransitionRefused("deliver", self.state.name, "issue the certificate first")
        if method is DeliveryMethod.OFFSITE_WINDOW and self.mode is CrossRegionMode.LOCAL:
            raise InvalidInput(
                "method", method.name, "only a cross-region case is delivered off-site"
            )
        if method is DeliveryMethod.KIOSK and identity_check is IdentityCheck.UNSPECIFIED:
            raise InvalidInput(
                "identity_check", identity_check.name,
                "a kiosk prints only after the applicant's identity check: name its method",
            )  # fmt: skip

    # ---------------------------------------------------------------- custody (送达 channels)

    def dispatch_by_post(self, actor: Actor, carrier: str, tracking_number: str) -> None:
        """邮寄: the holding hall posts the result; :meth:`deliver` by POST confirms it later."""
        self._check("dispatch_by_post", actor)
        self.check_ready("dispatch_by_post")
        _require_text("carrier", carrier)
        _require_text("tracking_number", tracking_number)
        self.trigger_event(
            self.PostDispatched, actor=actor, carrier=carrier, tracking_number=tracking_number
        )

    def deposit_in_locker(
        self, actor: Actor, locker_id: str, compartment: str, code_hash: str, hold_hours: int
    ) -> None:
        """入柜: the holding hall puts the result in a locker for ``hold_hours`` hours."""
        self._check("deposit_in_locker", actor)
        self.check_ready("deposit_in_locker")
        _require_text("locker_id", locker_id)
        _require_text("compartment", compartment)
        check_code_hash(code_hash, "code_hash")
        if not 1 <= hold_hours <= MAX_HOLD_HOURS:
            raise InvalidInput("hold_hours", hold_hours, f"from 1 to {MAX_HOLD_HOURS} hours")
        self.trigger_event(
            self.LockerDeposited, actor=actor, locker_id=locker_id, compartment=compartment,
            code_hash=code_hash, hold_hours=hold_hours,
        )  # fmt: skip

    def pick_up_from_locker(self, actor: Actor, locker_id: str, compartment: str) -> None:
        """取件: the applicant opened the compartment with the right code (the node checked
        it against the keyed hash before calling this); the case is delivered."""
        self.check_pickup("pick_up_from_locker", actor, locker_id, compartment)
        self.trigger_event(
            self.Delivered, actor=actor, method=DeliveryMethod.LOCKER, note="",
            place=f"{locker_id}#{compartment}", identity_check=IdentityCheck.UNSPECIFIED,
        )  # fmt: skip

    def refuse_locker_code(self, actor: Actor, locker_id: str, compartment: str) -> None:
        """Record a wrong pickup code; after :data:`LOCKER_MAX_ATTEMPTS` the deposit locks."""
        self.check_pickup("pick_up_from_locker", actor, locker_id, compartment)
        self.trigger_event(
            self.LockerCodeRefused, actor=actor, locker_id=locker_id, compartment=compartment
        )

    def check_pickup(self, command: str, actor: Actor, locker_id: str, compartment: str) -> None:
        """Raise unless a pickup may be tried now at this locker and compartment: the deposit's,
        not expired (by the step's time), not locked by too many wrong codes."""
        self._check(command, actor)
        if self.locker != (locker_id, compartment):
            raise InvalidInput(
                "compartment" if self.locker and self.locker[0] == locker_id else "locker_id",
                f"{locker_id}#{compartment}", "the result is not in this locker compartment",
            )  # fmt: skip
        if self.locker_failed_attempts >= LOCKER_MAX_ATTEMPTS:
            raise TransitionRefused(
                command, self.state.name,
                f"locked after {LOCKER_MAX_ATTEMPTS} wrong codes: return it to the window",
            )  # fmt: skip
        # A hall of another node (``hall@region``): its own node checked the hold time at the
        # step's time; this copy applies the step when it arrives, perhaps later.
        if "@" not in actor.hall_id and self.locker_expired(self._now()):
            raise TransitionRefused(
                command, self.state.name, "the deposit expired: return it to the window"
            )

    def locker_expired(self, at: datetime) -> bool:
        """Whether the locker deposit's hold time is over at ``at``."""
        return self.locker_expires_at is not None and at >= self.locker_expires_at

    @property
    def locker_attempts_left(self) -> int:
        """Wrong codes that may still be tried before the deposit locks."""
        return max(0, LOCKER_MAX_ATTEMPTS - self.locker_failed_attempts)

    def return_to_window(self, actor: Actor, reason: str, window: str = "") -> None:
        """The result comes back to the hall's window: from the post at any time (退件), from a
        locker once the deposit expired or locked. It may then leave another way."""
        self.check_return(actor, reason)
        self.trigger_event(self.ReturnedToWindow, actor=actor, reason=reason, window=window)

    def check_return(self, actor: Actor, reason: str) -> None:
        """Raise unless ``actor`` may take the result back to the window now."""
        self._check("return_to_window", actor)
        # A hall of another node (``hall@region``) returns what its node saw locked: wrong
        # codes are that node's own records and never travel (nor do the codes).
        if self.state is S.IN_LOCKER and not (
            self.locker_expired(self._now())
            or self.locker_failed_attempts >= LOCKER_MAX_ATTEMPTS
            or "@" in actor.hall_id
        ):
            assert self.locker_expires_at is not None
            raise TransitionRefused(
                "return_to_window", self.state.name,
                f"the deposit waits for the applicant until {self.locker_expires_at.isoformat()}",
            )  # fmt: skip
        _require_text("reason", reason)

    def check_ready(self, command: str) -> None:
        """Raise if the result cannot leave the hall yet (its certificate is not issued)."""
        if self.state is S.CONCLUDED and self.approved and self.produces_certificate:
            raise TransitionRefused(command, self.state.name, "issue the certificate first")

    def _leave_custody(self) -> None:
        self.state_before_custody = None
        self.locker = None
        self.locker_code_hash = ""
        self.locker_expires_at = None
        self.locker_failed_attempts = 0

    @staticmethod
    def _now() -> datetime:
        """The running step's business time (the node's clock outside a command)."""
        return _STEP_TIME.get() or datetime.now(UTC)

    def rate(
        self,
        actor: Actor,
        rating: Rating,
        comment: str,
        channel: RatingChannel = RatingChannel.UNSPECIFIED,
        rectification_days: int = RECTIFICATION_DAYS,
    ) -> None:
        """好差评; a 差评 opens a rectification due in ``rectification_days`` working days."""
        self.check_actor("rate", actor)
        self._check("rate", actor, holder_only=False)
        self.trigger_event(self.Rated, actor=actor, rating=rating, comment=comment, channel=channel)
        if rating.is_bad:
            self.trigger_event(
                self.RectificationOpened, actor=actor, deadline_days=rectification_days
            )

    def complete_rectification(self, actor: Actor, report: str, follow_up: str) -> None:
        """整改 done, with the 回访 result."""
        self._check("complete_rectification", actor)
        _require_text("report", report)
        _require_text("follow_up", follow_up)
        self.trigger_event(
            self.RectificationCompleted, actor=actor, report=report, follow_up=follow_up
        )

    def archive(self, actor: Actor) -> None:
        """归档 (final)."""
        self._check("archive", actor)
        self.trigger_event(self.Archived, actor=actor)

    def withdraw(self, actor: Actor, reason: str) -> None:
        """撤回 at the applicant's request, from any open state, at the holder or intake hall."""
        self.check_actor("withdraw", actor)
        self._check("withdraw", actor, holder_only=False)
        _require_text("reason", reason)
        self.trigger_event(self.Withdrawn, actor=actor, reason=reason)

    def transfer_refused(
        self,
        *,
        envelope_id: UUID,
        peer: str,
        key_id: str,
        body: bytes,
        signature: bytes,
        reason: str,
    ) -> None:
        """Another node refused the hall this case was sent to: take the case back."""
        if self.state not in (S.HANDED_OFF, S.ESCALATED) or not self.awaits_another_node:
            raise TransitionRefused("transfer_refused", self.state.name, "nothing to take back")
        self.trigger_event(
            self.TransferRefused, envelope_id=envelope_id, peer=peer, key_id=key_id, body=body,
            signature=signature, reason=reason,
        )  # fmt: skip

    @property
    def awaits_another_node(self) -> bool:
        """Whether the case waits for a hall of another node to take it."""
        return self.pending_receiver is not None and "@" in self.pending_receiver

    # ---------------------------------------------------------------- personal data

    def erase_personal_data(self, admin: str, reason: str) -> None:
        """Record that an admin crypto-shredded this case's personal data (once, in any state)."""
        if self.personal_data_erased:
            raise TransitionRefused("erase_personal_data", self.state.name, "already erased")
        _require_text("reason", reason)
        self.trigger_event(self.PersonalDataErased, admin=admin, reason=reason)

    # ---------------------------------------------------------------- supervision

    def record_warning(self, kind: WarningKind, due_at: datetime, at: datetime) -> None:
        """Record an 电子监察 warning the node's supervisor found due at ``due_at`` (once a kind).

        The supervisor (:meth:`~hub.application.hub.HubApplication.record_warning`) computes
        ``due_at`` from the case's own history; this only refuses a second warning of a kind.
        """
        if kind in self.warnings:
            raise TransitionRefused("record_warning", self.state.name, f"{kind.name} is recorded")
        self.trigger_event(self.SupervisionWarned, kind=kind, due_at=due_at, timestamp=at)

    # ---------------------------------------------------------------- queries

    def regions(self) -> set[str]:
        """Every region the case touches: intake, competent, and each region-qualified party
        (a hall of another node it was sent to or tasked, ``hall@region``)."""
        regions = {self.intake_region, self.competent_region}
        for party in self.parties:
            region = party.partition("@")[2]
            if region:
                regions.add(region)
        return regions

    def involves(self, hall_id: str) -> bool:
        """Whether ``hall_id`` is a party to the case (and so may read it)."""
        return hall_id in self.parties

    def state_is(self, *states: CaseState) -> bool:
        """True when the case is in one of ``states``."""
        return self.state in states

    def allowed_commands(self) -> list[str]:
        """Commands the state machine allows now (holder rules aside)."""
        return [command for command, states in ALLOWED_FROM.items() if self.state in states]

    def clock_seconds(self, now: datetime) -> float:
        """Seconds the supervision clock has run: from intake, minus pauses, until it stopped."""
        if self.clock_started_at is None:
            return 0.0
        end = self.clock_stopped_at or now
        paused = self.paused_seconds
        if self.paused_since is not None:
            paused += (end - self.paused_since).total_seconds()
        return max(0.0, (end - self.clock_started_at).total_seconds() - paused)

    @property
    def clock_running(self) -> bool:
        """The clock runs from intake until the case ends, except while paused."""
        return self.clock_stopped_at is None and self.paused_since is None

    # ---------------------------------------------------------------- internals

    def check_actor(self, command: str, actor: Actor, *, task_id: str = "") -> None:
        """Raise :class:`PermissionRefused` unless ``actor``'s hall may take ``command`` on this
        case, whatever its state: the receiver of a transfer acknowledges it, a joint task's hall
        completes its task, the holding or the intake hall withdraws or rates, a hall of the
        competent region decides and issues, the holding hall does the rest. (``deliver`` has
        its own rules by channel: :meth:`check_delivery`.) The commands ask this first, and the
        binding check asks the same question of the case before each logged step, so a genuine
        signature of a hall that may not act does not make a step."""
        self._check_party(command, actor, task_id)
        if command in COMPETENT_REGION_COMMANDS:
            # After the state in the commands themselves (their refusals keep their order).
            self._require_competent_region(command, actor)

    def _check_party(self, command: str, actor: Actor, task_id: str = "") -> None:
        if command == "acknowledge_handoff":
            if actor.hall_id != self.pending_receiver:
                raise PermissionRefused(actor.hall_id, "the case is not addressed to this hall")
        elif command == "complete_joint_task":
            status = self.joint_tasks.get(task_id)
            if status is None or status.task.hall_id != actor.hall_id:
                # One answer for "no such task" and "another hall's task": names no other hall.
                raise PermissionRefused(actor.hall_id, f"task {task_id!r} is not this hall's task")
        elif command in HOLDER_OR_INTAKE_COMMANDS:
            self._require_holder_or_intake(actor)
        elif actor.hall_id != self.holder:
            raise PermissionRefused(actor.hall_id, "this hall does not hold the case")

    def _require_competent_region(self, command: str, actor: Actor) -> None:
        if actor.region == self.competent_region:
            return
        if command == "decide":
            own = RegionCode(actor.region)
            competent = RegionCode(self.competent_region)
            raise PermissionRefused(
                actor.hall_id,
                f"a {own.level.name} hall at {own.value} cannot decide item {self.item_code}; "
                f"the competent region is {competent.value} ({competent.level.name})",
            )
        if command == "issue_certificate":
            raise PermissionRefused(
                actor.hall_id,
                f"only a hall of the competent region {self.competent_region} issues the "
                f"certificate of item {self.item_code}",
            )
        raise PermissionRefused(
            actor.hall_id,
            f"only a hall of the competent region {self.competent_region} changes the "
            "status of the certificate it issued",
        )

    def _check(self, command: str, actor: Actor, *, holder_only: bool = True) -> None:
        # Who may act is decided before the state is looked at, and a refusal names no other
        # hall: a party that may not act learns nothing from the reply.
        if holder_only:
            self._check_party(command, actor)
        self.check_agent(actor)
        if self.state not in ALLOWED_FROM[command]:
            raise TransitionRefused(command, self.state.name)

    def check_agent(self, actor: Actor) -> None:
        """An agent acts on a case only with the applicant's authorisation recorded on it."""
        if actor.agent and (actor.hall_id, actor.agent) not in self.agents:
            raise PermissionRefused(
                actor.hall_id,
                f"agent {actor.agent} has no authorisation of the applicant recorded on this case",
            )

    def _require_holder_or_intake(self, actor: Actor) -> None:
        if actor.hall_id not in {self.holder, self.intake_hall}:
            raise PermissionRefused(
                actor.hall_id, "only the holding or the intake hall may do this"
            )

    def _add_party(self, hall_id: str) -> None:
        if hall_id not in self.parties:
            self.parties = (*self.parties, hall_id)

    def _pause_clock(self, at: datetime) -> None:
        self.paused_since = at

    def _resume_clock(self, at: datetime) -> None:
        if self.paused_since is not None:
            self.paused_seconds += (at - self.paused_since).total_seconds()
            self.pauses = (*self.pauses, (self.paused_since, at))
        self.paused_since = None

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        """The library's, with the running command's business time (:func:`step_time`)."""
        if kwargs.get("timestamp") is None:
            kwargs["timestamp"] = _STEP_TIME.get()
        super().trigger_event(event_class, **kwargs)

    def _stop_clock(self, at: datetime) -> None:
        self._resume_clock(at)
        self.clock_stopped_at = at


def _require_text(field: str, value: str) -> None:
    if not value.strip():
        raise InvalidInput(field, value, "must not be empty")

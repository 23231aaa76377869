"""Commands as small frozen dataclasses: one per action of the wire API's ``Command`` oneof.

A command is what a hall (or an admin) signed: a :class:`Header` (who, for which node, when, the
retry key) and one action. Each action class names its wire field (``action_name``), who may sign it
(``signer``), and the event classes it may produce (``produces``), which is what the auditor and
the ledger integrator check every stored event against. The application handles each class
through one table (:mod:`hub.application.hub`), so a new command is one dataclass here, one
aggregate method, and one line in that table.

Field names equal the wire fields' names (and, where an event records an argument, the event's
attribute name), so :mod:`hub.commands.wire` converts mechanically and the binding check compares
like with like.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from hub.domain.agent import Agent
from hub.domain.appointments import (
    Appointment,
    AppointmentCommitments,
    AppointmentKind,
    BookingChannel,
)
from hub.domain.case import Case
from hub.domain.command_record import ADMIN, HALL
from hub.domain.hall import Hall
from hub.domain.values import (
    AgentAuthorisation,
    ApplicantCommitments,
    CheckResult,
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
    SuspensionReason,
)


@dataclass(frozen=True)
class Header:
    """Who signed, for which node, when, and the retry key (``CommandHeader`` on the wire)."""

    idempotency_key: str
    hall_id: str
    admin: str
    operator: str
    region: str
    issued_at: datetime
    node: str
    deferred: bool
    #: The hall's agent (代办员) who takes this step for the applicant; empty: none.
    agent: str = ""

    @property
    def signer(self) -> str:
        """The hall id or the admin name."""
        return self.hall_id or self.admin


@dataclass(frozen=True)
class PersonalValue:
    """The clear value of one committed personal field, and its salt (never signed)."""

    field: str
    value: str
    salt: bytes

    def __repr__(self) -> str:
        # Never print personal data, not even in a traceback.
        return f"PersonalValue(field={self.field!r}, value=<redacted>)"


@dataclass(frozen=True)
class SignedCommand:
    """What arrives: the signed bytes, the signature, and the clear personal values beside."""

    command: bytes
    signature: bytes
    personal: tuple[PersonalValue, ...] = ()


class Action:
    """Base of every action; subclasses are frozen dataclasses."""

    #: The field of the wire ``Command`` oneof.
    action_name: ClassVar[str]
    #: Who signs it: ``hall`` or ``admin``.
    signer: ClassVar[str] = HALL
    #: The event classes one command of this kind may produce, in order.
    produces: ClassVar[tuple[type[Any], ...]]

    def arguments(self) -> dict[str, Any]:
        """The action's fields by name."""
        return {field.name: getattr(self, field.name) for field in fields(self)}  # type: ignore[arg-type]


class CaseAction(Action):
    """An action on an existing case."""

    case_id: UUID


# ---------------------------------------------------------------------------- case commands


@dataclass(frozen=True)
class Submit(Action):
    """收件."""

    action_name: ClassVar[str] = "submit"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.Submitted,)
    item_code: str
    applicant: ApplicantCommitments
    materials: tuple[Material, ...]
    competent_region: str
    home_region: str
    window: str
    channel: IntakeChannel
    agent: AgentAuthorisation
    #: 预约办: the appointment the applicant was booked for ("" none; docs/appointments.md).
    appointment_id: str = ""


@dataclass(frozen=True)
class RequestCorrection(CaseAction):
    """一次性告知."""

    action_name: ClassVar[str] = "request_correction"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.CorrectionRequested,)
    case_id: UUID
    missing: tuple[str, ...]
    notice: str


@dataclass(frozen=True)
class Resubmit(CaseAction):
    """补正."""

    action_name: ClassVar[str] = "resubmit"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.Resubmitted,)
    case_id: UUID
    materials: tuple[Material, ...]


@dataclass(frozen=True)
class Accept(CaseAction):
    """受理."""

    action_name: ClassVar[str] = "accept"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.Accepted,)
    case_id: UUID


@dataclass(frozen=True)
class RejectAtIntake(CaseAction):
    """不予受理."""

    action_name: ClassVar[str] = "reject_at_intake"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.RejectedAtIntake,)
    case_id: UUID
    reason: str


@dataclass(frozen=True)
class HandOff(CaseAction):
    """转办."""

    action_name: ClassVar[str] = "hand_off"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.HandedOff,)
    case_id: UUID
    to_hall: str
    reason: str


@dataclass(frozen=True)
class AcknowledgeHandoff(CaseAction):
    """The receiver takes the case."""

    action_name: ClassVar[str] = "acknowledge_handoff"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.HandoffAcknowledged,)
    case_id: UUID
    window: str


@dataclass(frozen=True)
class StartHandling(CaseAction):
    """承办."""

    action_name: ClassVar[str] = "start_handling"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.HandlingStarted,)
    case_id: UUID


@dataclass(frozen=True)
class Suspend(CaseAction):
    """特别程序 starts."""

    action_name: ClassVar[str] = "suspend"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.Suspended,)
    case_id: UUID
    reason: SuspensionReason
    note: str


@dataclass(frozen=True)
class Resume(CaseAction):
    """特别程序 ends."""

    action_name: ClassVar[str] = "resume"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.Resumed,)
    case_id: UUID


@dataclass(frozen=True)
class Escalate(CaseAction):
    """上报."""

    action_name: ClassVar[str] = "escalate"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.Escalated,)
    case_id: UUID
    to_hall: str
    reason: str


@dataclass(frozen=True)
class OpenJointTasks(CaseAction):
    """联办."""

    action_name: ClassVar[str] = "open_joint_tasks"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.JointTasksOpened,)
    case_id: UUID
    tasks: tuple[JointTask, ...]


@dataclass(frozen=True)
class CompleteJointTask(CaseAction):
    """A joint task's part is done; the last one joins the case."""

    action_name: ClassVar[str] = "complete_joint_task"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.JointTaskCompleted, Case.JointTasksJoined)
    case_id: UUID
    task_id: str
    approved: bool
    note: str


@dataclass(frozen=True)
class Decide(CaseAction):
    """决定."""

    action_name: ClassVar[str] = "decide"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.Decided,)
    case_id: UUID
    approved: bool
    reason: str


@dataclass(frozen=True)
class Conclude(CaseAction):
    """办结."""

    action_name: ClassVar[str] = "conclude"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.Concluded,)
    case_id: UUID


@dataclass(frozen=True)
class RecordCertificate(CaseAction):
    """制证."""

    action_name: ClassVar[str] = "record_certificate"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.CertificateRecorded,)
    case_id: UUID
    certificate_id: str


@dataclass(frozen=True)
class IssueCertificate(CaseAction):
    """制证 (电子证照): the node issues the case's certificate (see docs/certificates.md)."""

    action_name: ClassVar[str] = "issue_certificate"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.CertificateIssued,)
    case_id: UUID
    type_code: str  # the item's certificate type in the catalogue
    issuer_code: str  # the issuing authority's 统一社会信用代码
    authority: str  # the issuing authority's name, as printed
    valid_until: str  # ISO date, or empty: no expiry (长期有效)


@dataclass(frozen=True)
class SuspendCertificate(CaseAction):
    """Suspend the case's electronic certificate (docs/certificates.md, "Status")."""

    action_name: ClassVar[str] = "suspend_certificate"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.CertificateSuspended,)
    case_id: UUID
    reason: str


@dataclass(frozen=True)
class ReinstateCertificate(CaseAction):
    """Reinstate the case's suspended electronic certificate."""

    action_name: ClassVar[str] = "reinstate_certificate"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.CertificateReinstated,)
    case_id: UUID
    reason: str


@dataclass(frozen=True)
class RevokeCertificate(CaseAction):
    """Revoke the case's electronic certificate (final)."""

    action_name: ClassVar[str] = "revoke_certificate"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.CertificateRevoked,)
    case_id: UUID
    reason: str


@dataclass(frozen=True)
class Deliver(CaseAction):
    """送达."""

    action_name: ClassVar[str] = "deliver"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.Delivered,)
    case_id: UUID
    method: DeliveryMethod
    note: str
    place: str  # the window (empty: the hall's first) or the kiosk
    identity_check: IdentityCheck  # a kiosk's identity check of the applicant (method only)
    certificate_token: str  # OFFSITE_WINDOW: the issuing peer's signed certificate (JWS)


@dataclass(frozen=True)
class DispatchByPost(CaseAction):
    """邮寄: the result leaves by post (custody); ``deliver`` by POST confirms it."""

    action_name: ClassVar[str] = "dispatch_by_post"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.PostDispatched,)
    case_id: UUID
    carrier: str
    tracking_number: str


@dataclass(frozen=True)
class DepositInLocker(CaseAction):
    """入柜: the result waits in a 24-hour locker; the hall signs the code's keyed hash only."""

    action_name: ClassVar[str] = "deposit_in_locker"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.LockerDeposited,)
    case_id: UUID
    locker_id: str
    compartment: str
    code_hash: str  # HMAC-SHA256 of the pickup code (hub.domain.custody), hex
    hold_hours: int


@dataclass(frozen=True)
class PickUpFromLocker(CaseAction):
    """取件 with the code (sent beside the signed bytes): delivered, or a wrong code recorded."""

    action_name: ClassVar[str] = "pick_up_from_locker"
    #: Either outcome is the command's one event: the delivery, or the refused code.
    produces: ClassVar[tuple[type[Any], ...]] = (Case.Delivered, Case.LockerCodeRefused)
    case_id: UUID
    locker_id: str
    compartment: str


@dataclass(frozen=True)
class ReturnToWindow(CaseAction):
    """The result is back at the window (post returned it, locker deposit expired/locked)."""

    action_name: ClassVar[str] = "return_to_window"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.ReturnedToWindow,)
    case_id: UUID
    reason: str
    window: str


@dataclass(frozen=True)
class Rate(CaseAction):
    """好差评; a 差评 opens a rectification."""

    action_name: ClassVar[str] = "rate"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.Rated, Case.RectificationOpened)
    case_id: UUID
    rating: Rating
    comment: str
    channel: RatingChannel


@dataclass(frozen=True)
class CompleteRectification(CaseAction):
    """整改 done."""

    action_name: ClassVar[str] = "complete_rectification"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.RectificationCompleted,)
    case_id: UUID
    report: str
    follow_up: str


@dataclass(frozen=True)
class Archive(CaseAction):
    """归档."""

    action_name: ClassVar[str] = "archive"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.Archived,)
    case_id: UUID


@dataclass(frozen=True)
class Withdraw(CaseAction):
    """撤回."""

    action_name: ClassVar[str] = "withdraw"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.Withdrawn,)
    case_id: UUID
    reason: str


@dataclass(frozen=True)
class RecordIdentityCheck(CaseAction):
    """身份证识别 / 人脸识别 / 生存认证: the outcome of an identity check (never its data)."""

    action_name: ClassVar[str] = "record_identity_check"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.IdentityChecked,)
    case_id: UUID
    method: IdentityCheckMethod
    device_id: str
    result: CheckResult
    score_band: ScoreBand


@dataclass(frozen=True)
class AuthoriseAgent(CaseAction):
    """The applicant authorised an agent of the holding hall (委托书 or oral, witnessed)."""

    action_name: ClassVar[str] = "authorise_agent"
    produces: ClassVar[tuple[type[Any], ...]] = (Case.AgentAuthorised,)
    case_id: UUID
    agent: AgentAuthorisation


# ---------------------------------------------------------------------------- hall commands


@dataclass(frozen=True)
class RegisterAgent(Action):
    """Register a 代办员 at the signing hall; their personal data as commitments."""

    action_name: ClassVar[str] = "register_agent"
    produces: ClassVar[tuple[type[Any], ...]] = (Agent.Registered,)
    agent_id: str
    person: ApplicantCommitments
    #: The agent's own base64 Ed25519 public key; empty: the agent acts under the hall's key.
    public_key: str = ""


@dataclass(frozen=True)
class RetireAgent(Action):
    """Retire one of the signing hall's agents."""

    action_name: ClassVar[str] = "retire_agent"
    produces: ClassVar[tuple[type[Any], ...]] = (Agent.Retired,)
    agent_id: str
    reason: str


@dataclass(frozen=True)
class StaffWindow(Action):
    """AB岗: who serves one of the signing hall's windows."""

    action_name: ClassVar[str] = "staff_window"
    produces: ClassVar[tuple[type[Any], ...]] = (Hall.WindowStaffed,)
    window: str
    a_post: str
    b_post: str
    a_post_absent: bool


# ---------------------------------------------------------------------------- appointments


@dataclass(frozen=True)
class BookAppointment(Action):
    """预约: book a slot at one of the signing hall's windows, or a home visit."""

    action_name: ClassVar[str] = "book_appointment"
    produces: ClassVar[tuple[type[Any], ...]] = (Appointment.Booked,)
    item_code: str
    kind: AppointmentKind
    hall_id: str
    window: str
    starts_at: datetime
    ends_at: datetime
    applicant: AppointmentCommitments
    channel: BookingChannel
    agent: str


@dataclass(frozen=True)
class CancelAppointment(Action):
    """Cancel one of the signing hall's appointments."""

    action_name: ClassVar[str] = "cancel_appointment"
    produces: ClassVar[tuple[type[Any], ...]] = (Appointment.Cancelled,)
    appointment_id: UUID
    reason: str


# ---------------------------------------------------------------------------- admin commands


@dataclass(frozen=True)
class RegisterHall(Action):
    """Register a hall with its Ed25519 key."""

    action_name: ClassVar[str] = "register_hall"
    signer: ClassVar[str] = ADMIN
    produces: ClassVar[tuple[type[Any], ...]] = (Hall.Registered,)
    hall_id: str
    name: str
    region: str
    windows: tuple[str, ...]
    public_key: str
    kind: HallKind  # a staffed hall (unspecified) or a self-service kiosk


@dataclass(frozen=True)
class RotateHallKey(Action):
    """Replace a hall's signing key."""

    action_name: ClassVar[str] = "rotate_hall_key"
    signer: ClassVar[str] = ADMIN
    produces: ClassVar[tuple[type[Any], ...]] = (Hall.KeyRotated,)
    hall_id: str
    public_key: str


@dataclass(frozen=True)
class RetireHall(Action):
    """Retire a hall."""

    action_name: ClassVar[str] = "retire_hall"
    signer: ClassVar[str] = ADMIN
    produces: ClassVar[tuple[type[Any], ...]] = (Hall.Retired,)
    hall_id: str
    reason: str


@dataclass(frozen=True)
class ErasePersonalData(CaseAction):
    """Crypto-shred one case's personal data, or one 预约办 appointment's (``case_id`` then
    names the appointment: both records hold a sealed applicant)."""

    action_name: ClassVar[str] = "erase_personal_data"
    signer: ClassVar[str] = ADMIN
    produces: ClassVar[tuple[type[Any], ...]] = (
        Case.PersonalDataErased,
        Appointment.PersonalDataErased,
    )
    case_id: UUID
    reason: str


#: Every action class by its wire name.
ACTIONS: dict[str, type[Action]] = {
    cls.action_name: cls
    for cls in (
        Submit,
        RequestCorrection,
        Resubmit,
        Accept,
        RejectAtIntake,
        HandOff,
        AcknowledgeHandoff,
        StartHandling,
        Suspend,
        Resume,
        Escalate,
        OpenJointTasks,
        CompleteJointTask,
        Decide,
        Conclude,
        RecordCertificate,
        IssueCertificate,
        SuspendCertificate,
        ReinstateCertificate,
        RevokeCertificate,
        Deliver,
        DispatchByPost,
        DepositInLocker,
        PickUpFromLocker,
        ReturnToWindow,
        Rate,
        CompleteRectification,
        Archive,
        Withdraw,
        RecordIdentityCheck,
        AuthoriseAgent,
        StaffWindow,
        BookAppointment,
        CancelAppointment,
        RegisterAgent,
        RetireAgent,
        RegisterHall,
        RotateHallKey,
        RetireHall,
        ErasePersonalData,
    )
}


@dataclass(frozen=True)
class ParsedCommand:
    """A command parsed from the exact bytes a signer signed."""

    header: Header
    action: Action
    raw: bytes

    @property
    def signer_kind(self) -> str:
        """``hall`` or ``admin``, from the action."""
        return self.action.signer

"""Value objects and enumerations shared by the domain model.

Everything here is immutable and holds only plain values (str, int, bool, tuples of those), so
events that carry them serialise without surprises and compare equal after a round trip.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from hub.errors import InvalidInput

#: Largest material the hub accepts a digest for (the material itself stays in the hall's store).
MAX_MATERIAL_BYTES = 200 * 1024 * 1024
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_MEDIA_TYPE = re.compile(r"^[a-z]+/[a-z0-9.+-]+$")


class CaseKind(enum.Enum):
    """办件类型. Hall systems number these differently; adapters map their codes onto this enum."""

    IMMEDIATE = "IMMEDIATE"  # 即办件
    PROMISED = "PROMISED"  # 承诺件
    ESCALATED = "ESCALATED"  # 上报件
    JOINT = "JOINT"  # 联办件


class CrossRegionMode(enum.Enum):
    """跨省通办 mode of a case; LOCAL when intake and competent region share a province."""

    LOCAL = "LOCAL"
    FULLY_ONLINE = "FULLY_ONLINE"  # 全程网办
    OFFSITE_PROXY = "OFFSITE_PROXY"  # 异地代收代办 (收受分离)
    MULTI_SITE = "MULTI_SITE"  # 多地联办


class CaseState(enum.Enum):
    """States of the case lifecycle (DESIGN.md §2)."""

    RECEIVED = "RECEIVED"  # 收件
    AWAITING_CORRECTION = "AWAITING_CORRECTION"  # 补正
    ACCEPTED = "ACCEPTED"  # 受理
    REJECTED_AT_INTAKE = "REJECTED_AT_INTAKE"  # 不予受理
    HANDLING = "HANDLING"  # 承办
    HANDED_OFF = "HANDED_OFF"  # 转办, awaiting the receiver's acknowledgement
    ESCALATED = "ESCALATED"  # 上报, awaiting the higher hall's acknowledgement
    SUSPENDED = "SUSPENDED"  # 特别程序
    JOINT = "JOINT"  # 联办, child tasks open
    DECIDED = "DECIDED"  # 决定
    CONCLUDED = "CONCLUDED"  # 办结
    CERTIFICATE_ISSUED = "CERTIFICATE_ISSUED"  # 制证
    DELIVERED = "DELIVERED"  # 送达
    RATED = "RATED"  # 评价
    RECTIFYING = "RECTIFYING"  # 整改
    ARCHIVED = "ARCHIVED"  # 归档
    IN_POST = "IN_POST"  # 邮寄中: dispatched by post, delivery not yet confirmed
    IN_LOCKER = "IN_LOCKER"  # 待取件: deposited in a 24-hour locker (政务e家 取件柜)
    WITHDRAWN = "WITHDRAWN"  # 撤回

    @property
    def is_final(self) -> bool:
        """No command changes a case in a final state."""
        return self in {CaseState.REJECTED_AT_INTAKE, CaseState.ARCHIVED, CaseState.WITHDRAWN}


#: States from which the applicant may still withdraw (撤回): everything before a decision.
OPEN_STATES = frozenset(
    {
        CaseState.RECEIVED,
        CaseState.AWAITING_CORRECTION,
        CaseState.ACCEPTED,
        CaseState.HANDLING,
        CaseState.HANDED_OFF,
        CaseState.ESCALATED,
        CaseState.SUSPENDED,
        CaseState.JOINT,
    }
)


class SuspensionReason(enum.Enum):
    """特别程序: the clock pauses while one of these runs."""

    HEARING = "HEARING"  # 听证
    INSPECTION = "INSPECTION"  # 现场勘验/检验检测
    EXPERT_REVIEW = "EXPERT_REVIEW"  # 专家评审
    PUBLIC_NOTICE = "PUBLIC_NOTICE"  # 公示


class DeliveryMethod(enum.Enum):
    """How the result reaches the applicant (送达)."""

    WINDOW = "WINDOW"  # 窗口领取
    POST = "POST"  # 邮寄
    ONLINE = "ONLINE"  # 网上送达
    OFFSITE_WINDOW = "OFFSITE_WINDOW"  # 异地收件窗口领取
    KIOSK = "KIOSK"  # 自助打印: printed at a self-service kiosk after an identity check
    LOCKER = "LOCKER"  # 智能柜取件: picked up from a 24-hour locker with its pickup code


class HallKind(enum.Enum):
    """What a registered "hall" is: a staffed service place, or a self-service kiosk.

    UNSPECIFIED is what halls registered before kinds existed have: a staffed hall.
    """

    UNSPECIFIED = "UNSPECIFIED"  # a staffed service hall (registered before kinds existed)
    SERVICE_HALL = "SERVICE_HALL"  # 服务大厅/便民服务站: people at windows
    KIOSK = "KIOSK"  # 自助终端: a self-service kiosk that prints results (自助打印)


class IdentityCheck(enum.Enum):
    """How a kiosk checked the applicant before printing: the method only, never the data read.

    UNSPECIFIED: no check (every channel but the kiosk).
    """

    UNSPECIFIED = "UNSPECIFIED"
    ID_CARD = "ID_CARD"  # 二代证读卡 (the chip of the resident ID card)
    ID_CARD_AND_FACE = "ID_CARD_AND_FACE"  # 读卡 + 人证比对 (face matched on the kiosk)
    ELECTRONIC_ID = "ELECTRONIC_ID"  # 电子身份证 / 网证 (CTID) shown on a phone


class Rating(enum.Enum):
    """好差评 levels; NOT_SATISFIED and VERY_DISSATISFIED are 差评 and open a rectification.

    A plain Enum, not an IntEnum: the event store's JSON transcoder would store an int subclass
    as a bare number and read it back as an int, losing the type.
    """

    VERY_DISSATISFIED = 1  # 非常不满意
    NOT_SATISFIED = 2  # 不满意
    BASICALLY_SATISFIED = 3  # 基本满意
    SATISFIED = 4  # 满意
    VERY_SATISFIED = 5  # 非常满意

    @property
    def is_bad(self) -> bool:
        """差评: the two lowest levels."""
        return bool(self.value <= Rating.NOT_SATISFIED.value)


class IntakeChannel(enum.Enum):
    """How the applicant reached the hall (the seed regions count each).

    UNSPECIFIED is what a hall system that does not say sends; it is counted as a window intake.
    """

    UNSPECIFIED = "UNSPECIFIED"  # not said: a window intake
    WINDOW = "WINDOW"  # 窗口
    ONLINE = "ONLINE"  # 网上办 (portal, app, mini program)
    AGENT = "AGENT"  # 帮代办: an agent (代办员) acted for the applicant
    HOME_VISIT = "HOME_VISIT"  # 上门办: taken in at the applicant's home
    PHONE = "PHONE"  # 电话办: by telephone (e.g. a village room's phone service)
    KIOSK = "KIOSK"  # 自助办: a self-service terminal (自助终端)
    IMPORTED = "IMPORTED"  # from an imported register (台账导入)
    PEER_NODE = "PEER_NODE"  # forwarded by another node of the federation


class IdentityCheckMethod(enum.Enum):
    """How a person's identity (or that they are alive) was checked, as an event of a case.

    Only the outcome is recorded (device, result, score band), never biometric data or a photo.
    """

    ID_CARD_READ = "ID_CARD_READ"  # 身份证识别: the chip of the ID card read by a reader
    FACE_MATCH = "FACE_MATCH"  # 人脸识别: the face matched against the ID card's photo
    LIVENESS = "LIVENESS"  # 生存认证: proof of life (pension and benefit items)


class CheckResult(enum.Enum):
    """The outcome of an identity check."""

    PASSED = "PASSED"
    FAILED = "FAILED"


class ScoreBand(enum.Enum):
    """The band a device's match score fell in; the raw score is never recorded."""

    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"


class AgentRole(enum.Enum):
    """What an agent (代办员) does for the applicant."""

    UNSPECIFIED = "UNSPECIFIED"
    GUIDING = "GUIDING"  # 帮办: helps the applicant, who acts
    ACTING = "ACTING"  # 代办: acts for the applicant


class RatingChannel(enum.Enum):
    """Where a rating (好差评) came from; UNSPECIFIED (not said) counts as the window."""

    UNSPECIFIED = "UNSPECIFIED"
    WINDOW = "WINDOW"  # the rating device at the window (评价器)
    ONLINE = "ONLINE"  # online: portal, app, SMS link
    ADAPTER = "ADAPTER"  # forwarded by a hall system's adapter (e.g. a 12345 hotline system)


class WarningKind(enum.Enum):
    """电子监察 warnings, each recorded once per case by the node's supervisor."""

    YELLOW = "YELLOW"  # 黄牌: 90 % of the promised time used
    RED = "RED"  # 红牌: the promised time is over and the case is not concluded
    RECTIFICATION_OVERDUE = "RECTIFICATION_OVERDUE"  # 整改 not completed by its deadline


@dataclass(frozen=True)
class Actor:
    """Who acts: the hall, the operator at its window, and the hall's region code."""

    hall_id: str
    operator: str
    region: str
    #: The agent (代办员) of the hall who took the step for the applicant; empty: none.
    agent: str = ""

    def __post_init__(self) -> None:
        if not self.hall_id:
            raise InvalidInput("actor.hall_id", self.hall_id, "must not be empty")
        if not self.operator:
            raise InvalidInput("actor.operator", self.operator, "must not be empty")


@dataclass(frozen=True)
class Applicant:
    """The applicant; ``name``, ``id_number`` and ``phone`` are personal data (encrypted)."""

    name: str
    id_number: str
    phone: str

    def __post_init__(self) -> None:
        # Error values are redacted: a refusal must never echo personal data.
        if not self.name.strip():
            raise InvalidInput("applicant.name", "<redacted>", "must not be empty")
        if len(self.name) > MAX_PERSONAL_CHARS or len(self.phone) > MAX_PERSONAL_CHARS:
            field = "applicant.name" if len(self.name) > MAX_PERSONAL_CHARS else "applicant.phone"
            raise InvalidInput(field, "<redacted>", f"at most {MAX_PERSONAL_CHARS} characters")
        if not re.fullmatch(r"[0-9]{17}[0-9X]", self.id_number):
            raise InvalidInput(
                "applicant.id_number", "<redacted>", "must be an 18-character resident ID number"
            )
        if not _id_number_check_ok(self.id_number):
            raise InvalidInput(
                "applicant.id_number", "<redacted>", "check character does not match (GB 11643)"
            )


@dataclass(frozen=True)
class AgentAuthorisation:
    """That an agent of the hall acts for the applicant of a case, and on what authority.

    The authority is either a 委托书 (signed or scanned: its material's SHA-256) or an oral
    authorisation given at a home visit before a witness: the witness's role, and a salted
    commitment to the witness's name (the hall keeps the name and salt; the node never sees the
    name). All fields empty: no agent.
    """

    agent_id: str = ""
    role: AgentRole = AgentRole.UNSPECIFIED
    letter_sha256: str = ""
    witness_role: str = ""
    witness_commitment: str = ""

    def __post_init__(self) -> None:
        if not self.agent_id:
            if self.role is not AgentRole.UNSPECIFIED or self.letter_sha256 or self.witness_role:
                raise InvalidInput("agent.agent_id", "", "name the agent this authorisation is for")
            return
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", self.agent_id):
            raise InvalidInput("agent.agent_id", self.agent_id, "1-64 letters, digits, . _ -")
        if self.role is AgentRole.UNSPECIFIED:
            raise InvalidInput("agent.role", self.role.name, "帮办 (GUIDING) or 代办 (ACTING)")
        oral = bool(self.witness_role or self.witness_commitment)
        if bool(self.letter_sha256) == oral:
            raise InvalidInput(
                "agent.letter_sha256",
                self.letter_sha256,
                "give exactly one authorisation: a 委托书's digest, or an oral one's witness",
            )
        if self.letter_sha256 and not _SHA256_HEX.fullmatch(self.letter_sha256):
            raise InvalidInput("agent.letter_sha256", self.letter_sha256, "64 lowercase hex")
        if oral and not self.witness_role.strip():
            raise InvalidInput("agent.witness_role", "", "the witness's role (e.g. 村委会主任)")
        if oral and not _SHA256_HEX.fullmatch(self.witness_commitment):
            raise InvalidInput(
                "agent.witness_commitment", "<redacted>", "a commitment is 64 lowercase hex"
            )

    def __bool__(self) -> bool:
        return bool(self.agent_id)


#: No agent: what a case taken in without one records.
NO_AGENT = AgentAuthorisation()

#: Longest name or phone number accepted (a personal field is stored sealed, never truncated).
MAX_PERSONAL_CHARS = 128

#: The personal fields of an applicant, in their wire order.
APPLICANT_FIELDS = ("name", "id_number", "phone")


@dataclass(frozen=True)
class ApplicantCommitments:
    """What a hall signs of an applicant: one salted commitment per field, as hex.

    See :mod:`hub.domain.commitments`; the clear values are kept only sealed
    (:class:`SealedApplicant`).
    """

    name: str
    id_number: str
    phone: str

    def __post_init__(self) -> None:
        for field in APPLICANT_FIELDS:
            value = getattr(self, field)
            if not _SHA256_HEX.fullmatch(value):
                raise InvalidInput(
                    f"applicant.{field}", value, "a commitment is 32 bytes (SHA-256)"
                )


@dataclass(frozen=True)
class SealedApplicant:
    """The applicant as a case stores it: the signed commitments and the sealed clear values.

    ``ciphertext`` is AES-256-GCM under the case's own personal-data key, which the node keeps
    outside the event log; erasing the case's personal data destroys that key, so the clear
    values become unreadable while every stored byte (and so every hash and proof) stays.
    """

    commitments: ApplicantCommitments
    ciphertext: bytes


def _id_number_check_ok(id_number: str) -> bool:
    """GB 11643 check character: weights 2^(17-i) mod 11, mapped through '10X98765432'."""
    weights = [pow(2, 17 - i, 11) for i in range(17)]
    total = sum(int(digit) * weight for digit, weight in zip(id_number[:17], weights, strict=True))
    return "10X98765432"[total % 11] == id_number[17]


def id_number_with_check(first_17: str) -> str:
    """Complete a 17-digit ID number prefix with its GB 11643 check character (for demos/tests)."""
    weights = [pow(2, 17 - i, 11) for i in range(17)]
    total = sum(int(digit) * weight for digit, weight in zip(first_17, weights, strict=True))
    return first_17 + "10X98765432"[total % 11]


@dataclass(frozen=True)
class Material:
    """A submitted material, referenced by digest; the bytes stay in the hall's document store."""

    name: str
    sha256: str
    media_type: str
    size: int

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise InvalidInput("material.name", self.name, "must not be empty")
        if not _SHA256_HEX.fullmatch(self.sha256):
            raise InvalidInput(
                "material.sha256", self.sha256, "must be 64 lowercase hex digits (SHA-256)"
            )
        if not _MEDIA_TYPE.fullmatch(self.media_type):
            raise InvalidInput("material.media_type", self.media_type, "not a media type")
        if self.size <= 0:
            raise InvalidInput("material.size", self.size, "an empty material is not accepted")
        if self.size > MAX_MATERIAL_BYTES:
            raise InvalidInput(
                "material.size", self.size, f"larger than the limit of {MAX_MATERIAL_BYTES} bytes"
            )


@dataclass(frozen=True)
class JointTask:
    """One part of a joint case (联办): a department's hall in some region handles it."""

    task_id: str
    hall_id: str
    department: str

    def __post_init__(self) -> None:
        if not self.task_id:
            raise InvalidInput("joint_task.task_id", self.task_id, "must not be empty")
        if not self.department.strip():
            raise InvalidInput("joint_task.department", self.department, "must not be empty")

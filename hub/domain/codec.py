"""How domain events are stored: JSON transcodings for the value objects and enumerations.

The event store's JSON transcoder needs one transcoding per custom type. The value objects are
frozen dataclasses and the enums are plain, so two generic transcodings cover them all instead of
one hand-written class per type.

Stored events are plain JSON (personal data inside them is sealed separately, see
:class:`~hub.domain.values.SealedApplicant`), so anyone can decode them with :func:`event_mapper`
without any key: the auditor does, to check each event against the command that produced it.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
from typing import Any

from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    Transcoding,
    UUIDAsHex,
)

from hub.domain.appointments import (
    AppointmentCommitments,
    AppointmentKind,
    AppointmentState,
    BookingChannel,
)
from hub.domain.case import JointTaskStatus
from hub.domain.regions import Level
from hub.domain.values import (
    Actor,
    AgentAuthorisation,
    AgentRole,
    ApplicantCommitments,
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


class FrozenJSONTranscoder(JSONTranscoder):
    """The library's JSON transcoder, but arrays decode as tuples.

    Events declare sequence fields as tuples (they are frozen); JSON has only arrays. Decoding
    arrays as tuples makes an event read back from the store equal to the event that was saved.
    """

    def decode(self, data: bytes) -> Any:
        return _freeze(super().decode(data))


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, dict):
        return {key: _freeze(item) for key, item in value.items()}
    return value


class DataclassTranscoding(Transcoding):
    """Encodes a frozen dataclass as a dict of its fields; lists come back as tuples."""

    def __init__(self, cls: type[Any]) -> None:
        self.type = cls
        self.name = cls.__name__
        self._fields = [field.name for field in dataclasses.fields(cls)]

    def encode(self, obj: Any) -> dict[str, Any]:
        omit = _OMITTED_WHEN_EMPTY.get(self.type, ())
        return {
            name: getattr(obj, name)
            for name in self._fields
            if not (name in omit and getattr(obj, name) == "")
        }

    def decode(self, data: dict[str, Any]) -> Any:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return self.type(**values)


class SealedApplicantTranscoding(Transcoding):
    """A sealed applicant: its commitments (hex) and the ciphertext (base64)."""

    type = SealedApplicant
    name = "SealedApplicant"

    def encode(self, obj: SealedApplicant) -> dict[str, Any]:
        return {
            "commitments": dataclasses.asdict(obj.commitments),
            "ciphertext": base64.b64encode(obj.ciphertext).decode("ascii"),
        }

    def decode(self, data: dict[str, Any]) -> SealedApplicant:
        return SealedApplicant(
            ApplicantCommitments(**data["commitments"]), base64.b64decode(data["ciphertext"])
        )


class BytesAsBase64(Transcoding):
    """Encodes bytes (signed command bytes, signatures) as base64 text."""

    type = bytes
    name = "b64"

    def encode(self, obj: bytes) -> str:
        return base64.b64encode(obj).decode("ascii")

    def decode(self, data: str) -> bytes:
        return base64.b64decode(data)


class EnumTranscoding(Transcoding):
    """Encodes an enum member by its name."""

    def __init__(self, cls: type[enum.Enum]) -> None:
        self.type = cls
        self.name = cls.__name__
        self._cls = cls

    def encode(self, obj: Any) -> str:
        return str(obj.name)

    def decode(self, data: str) -> Any:
        return self._cls[data]


VALUE_TYPES: tuple[type[Any], ...] = (
    Actor,
    Material,
    JointTask,
    JointTaskStatus,
    AppointmentCommitments,
    AgentAuthorisation,
)

#: Fields added to a value type later, left out of the stored JSON while empty: events stored
#: before the field existed, and events that do not use it, keep their exact bytes.
_OMITTED_WHEN_EMPTY: dict[type[Any], tuple[str, ...]] = {Actor: ("agent",)}

ENUM_TYPES: tuple[type[enum.Enum], ...] = (
    CaseKind,
    CaseState,
    CrossRegionMode,
    DeliveryMethod,
    Level,
    Rating,
    SuspensionReason,
    IntakeChannel,
    RatingChannel,
    WarningKind,
    AppointmentKind,
    AppointmentState,
    BookingChannel,
    HallKind,
    IdentityCheck,
    IdentityCheckMethod,
    CheckResult,
    ScoreBand,
    AgentRole,
)


def register_domain_transcodings(transcoder: JSONTranscoder) -> None:
    """Register every domain value type and enum on ``transcoder``."""
    transcoder.register(BytesAsBase64())
    transcoder.register(SealedApplicantTranscoding())
    for value_type in VALUE_TYPES:
        transcoder.register(DataclassTranscoding(value_type))
    for enum_type in ENUM_TYPES:
        transcoder.register(EnumTranscoding(enum_type))


def event_transcoder() -> JSONTranscoder:
    """The transcoder of a node's stored events (the library's defaults plus the domain's)."""
    transcoder = FrozenJSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    register_domain_transcodings(transcoder)
    return transcoder


def event_mapper() -> Mapper[Any]:
    """A mapper that decodes stored events without any key (they are plain JSON)."""
    return Mapper(transcoder=event_transcoder())

"""Conversion between domain objects and the wire API's protobuf messages.

Event messages in ``events.proto`` have the same field names as the domain events, so one
mechanical converter, driven by the events' type hints, covers every event type; a unit test
round-trips every event to protobuf and back. Enum values follow the protobuf style prefix
(``CaseKind.JOINT`` ↔ ``CASE_KIND_JOINT``).
"""

from __future__ import annotations

import dataclasses
import enum
import re
import typing
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from tongban.v1 import common_pb2, events_pb2

from hub.domain.case import Case
from hub.domain.values import Actor, Applicant, JointTask, Material
from hub.errors import InvalidInput

#: Every case event class, in the order of the ``CaseEvent.event`` oneof.
EVENT_CLASSES: tuple[type[Any], ...] = (
    Case.Submitted,
    Case.CorrectionRequested,
    Case.Resubmitted,
    Case.Accepted,
    Case.RejectedAtIntake,
    Case.HandedOff,
    Case.Escalated,
    Case.HandoffAcknowledged,
    Case.HandlingStarted,
    Case.Suspended,
    Case.Resumed,
    Case.JointTasksOpened,
    Case.JointTaskCompleted,
    Case.JointTasksJoined,
    Case.Decided,
    Case.Concluded,
    Case.CertificateRecorded,
    Case.Delivered,
    Case.Rated,
    Case.RectificationOpened,
    Case.RectificationCompleted,
    Case.Archived,
    Case.Withdrawn,
)

#: Value objects and their messages.
VALUE_MESSAGES: dict[type[Any], type[Message]] = {
    Actor: common_pb2.Actor,
    Applicant: common_pb2.Applicant,
    Material: common_pb2.Material,
    JointTask: common_pb2.JointTask,
}

# Envelope attributes of every event, carried by CaseEvent's own fields.
_ENVELOPE = {"originator_id", "originator_version", "timestamp", "actor", "originator_topic"}


def snake_case(name: str) -> str:
    """``JointTasksOpened`` → ``joint_tasks_opened`` (the oneof field names)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def enum_prefix(cls: type[enum.Enum]) -> str:
    """``CrossRegionMode`` → ``CROSS_REGION_MODE``."""
    return snake_case(cls.__name__).upper()


def enum_to_proto(member: enum.Enum) -> Any:
    """A domain enum member as its protobuf enum number.

    Typed Any because each generated enum has its own ``ValueType`` (a NewType of int).
    """
    proto_enum = _proto_enum(type(member))
    return int(proto_enum.Value(f"{enum_prefix(type(member))}_{member.name}"))


def enum_from_proto(cls: type[enum.Enum], number: int, field: str) -> Any:
    """A protobuf enum number as a domain member; unknown or UNSPECIFIED is InvalidInput."""
    proto_enum = _proto_enum(cls)
    try:
        name = proto_enum.Name(number)
    except ValueError:
        raise InvalidInput(field, number, f"not a {cls.__name__} value") from None
    member = name.removeprefix(f"{enum_prefix(cls)}_")
    if member not in cls.__members__:
        raise InvalidInput(field, name, f"a {cls.__name__} must be given")
    return cls[member]


def _proto_enum(cls: type[enum.Enum]) -> Any:
    # Domain enums and common.proto enums share their names (CaseKind ↔ tongban.v1.CaseKind).
    return getattr(common_pb2, cls.__name__)


def value_to_proto(value: Any) -> Message:
    """A value object as its message."""
    message_class = VALUE_MESSAGES[type(value)]
    message = message_class()
    for field in dataclasses.fields(value):
        setattr(message, field.name, getattr(value, field.name))
    return message


def value_from_proto(cls: type[Any], message: Message, field: str) -> Any:
    """A message as a value object; the value object's own checks name the bad field."""
    try:
        return cls(**{f.name: getattr(message, f.name) for f in dataclasses.fields(cls)})
    except InvalidInput as error:
        raise InvalidInput(
            f"{field}.{error.field.split('.')[-1]}", error.value, error.reason
        ) from None


def timestamp_to_proto(moment: datetime) -> Timestamp:
    """A timezone-aware datetime as a Timestamp."""
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def timestamp_from_proto(stamp: Timestamp) -> datetime:
    """A Timestamp as a UTC datetime."""
    return stamp.ToDatetime(tzinfo=UTC)


def _payload_fields(cls: type[Any]) -> tuple[tuple[str, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple(
        (field.name, hints[field.name])
        for field in dataclasses.fields(cls)
        if field.name not in _ENVELOPE
    )


# Per event class: its payload fields (name, type hint), and the class by oneof field name.
_FIELDS = {cls: _payload_fields(cls) for cls in EVENT_CLASSES}
_CLASSES_BY_FIELD = {snake_case(cls.__name__): cls for cls in EVENT_CLASSES}


def _to_wire(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return enum_to_proto(value)
    if type(value) in VALUE_MESSAGES:
        return value_to_proto(value)
    return value


def parse_uuid(text: str, field: str) -> UUID:
    """A UUID from the wire; InvalidInput naming ``field`` when malformed."""
    try:
        return UUID(text)
    except ValueError:
        raise InvalidInput(field, text, "not a UUID") from None


def from_wire(hint: Any, value: Any, field: str) -> Any:
    """Convert one message field to the domain type ``hint`` (events and command arguments)."""
    if hint is UUID:
        return parse_uuid(value, field)
    if typing.get_origin(hint) in (tuple, list, Sequence):
        item_hint = typing.get_args(hint)[0]
        return tuple(from_wire(item_hint, item, field) for item in value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return enum_from_proto(hint, value, field)
    if hint in VALUE_MESSAGES:
        return value_from_proto(hint, value, field)
    return value


def event_to_proto(event: Any) -> events_pb2.CaseEvent:
    """A stored case event as a ``CaseEvent`` message."""
    message = events_pb2.CaseEvent(
        case_id=str(event.originator_id),
        version=event.originator_version,
        timestamp=timestamp_to_proto(event.timestamp),
    )
    message.actor.CopyFrom(typing.cast(common_pb2.Actor, value_to_proto(event.actor)))
    body = getattr(message, snake_case(type(event).__name__))
    body.SetInParent()  # events without fields are still set in the oneof
    for name, _hint in _FIELDS[type(event)]:
        value = getattr(event, name)
        target = getattr(body, name)
        if isinstance(value, tuple):
            target.extend(_to_wire(item) for item in value)
        elif type(value) in VALUE_MESSAGES:
            target.CopyFrom(value_to_proto(value))
        else:
            setattr(body, name, _to_wire(value))
    return message


def event_from_proto(message: events_pb2.CaseEvent) -> Any:
    """A ``CaseEvent`` message as the domain event it encodes."""
    which = message.WhichOneof("event")
    if which is None:
        raise InvalidInput("event", None, "no event type is set")
    cls = _CLASSES_BY_FIELD[which]
    body = getattr(message, which)
    case_id = parse_uuid(message.case_id, "case_id")
    kwargs: dict[str, Any] = {
        "originator_id": case_id,
        "originator_version": message.version,
        "timestamp": timestamp_from_proto(message.timestamp),
        "actor": value_from_proto(Actor, message.actor, "actor"),
    }
    if cls is Case.Submitted:
        kwargs["originator_topic"] = get_topic(Case)
    for name, hint in _FIELDS[cls]:
        kwargs[name] = from_wire(hint, getattr(body, name), f"{which}.{name}")
    return cls(**kwargs)

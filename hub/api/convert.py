"""Conversion from domain objects to the wire API's protobuf messages (the reading side).

Event messages in ``events.proto`` have the same field names as the domain events, so one
mechanical converter, driven by the events' type hints, covers every event type; a unit test
round-trips every event to protobuf and back. Parsing of commands (the writing side) is
:mod:`hub.commands.wire`, whose enum and value converters this module shares.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from tongban.v1 import case_exchange_pb2, common_pb2, events_pb2

from hub.commands.wire import (
    enum_to_proto,
    from_wire,
    parse_uuid,
    snake_case,
    value_from_proto,
)
from hub.domain.case import Case
from hub.domain.hall import Hall, key_id
from hub.domain.items import ServiceItem
from hub.domain.values import (
    Actor,
    AgentAuthorisation,
    Applicant,
    ApplicantCommitments,
    JointTask,
    Material,
    SealedApplicant,
)
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
    Case.PersonalDataErased,
    Case.TransferRefused,
    Case.SupervisionWarned,
    Case.CertificateIssued,
    Case.CertificateSuspended,
    Case.CertificateReinstated,
    Case.CertificateRevoked,
    Case.PostDispatched,
    Case.LockerDeposited,
    Case.LockerCodeRefused,
    Case.ReturnedToWindow,
    Case.IdentityChecked,
    Case.AgentAuthorised,
)

#: Value objects and their messages.
VALUE_MESSAGES: dict[type[Any], type[Message]] = {
    Actor: common_pb2.Actor,
    AgentAuthorisation: common_pb2.AgentAuthorisation,
    Applicant: common_pb2.Applicant,
    Material: common_pb2.Material,
    JointTask: common_pb2.JointTask,
}

# Envelope attributes of every event, carried by CaseEvent's own fields.
_ENVELOPE = {"originator_id", "originator_version", "timestamp", "actor", "originator_topic"}

__all__ = [
    "EVENT_CLASSES",
    "case_view",
    "enum_to_proto",
    "event_from_proto",
    "event_to_proto",
    "hall_to_proto",
    "item_to_proto",
    "parse_uuid",
    "timestamp_to_proto",
]


def value_to_proto(value: Any) -> Message:
    """A value object as its message."""
    message = VALUE_MESSAGES[type(value)]()
    for field in dataclasses.fields(value):
        item = getattr(value, field.name)
        setattr(message, field.name, enum_to_proto(item) if isinstance(item, enum.Enum) else item)
    return message


def timestamp_to_proto(moment: datetime) -> Timestamp:
    """A timezone-aware datetime as a Timestamp."""
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def timestamp_from_proto(stamp: Timestamp) -> datetime:
    """A Timestamp as a UTC datetime."""
    return stamp.ToDatetime(tzinfo=UTC)


def commitments_to_proto(commitments: ApplicantCommitments) -> common_pb2.ApplicantCommitments:
    """Commitments (hex in the domain) as the wire's 32-byte digests."""
    return common_pb2.ApplicantCommitments(
        name=bytes.fromhex(commitments.name),
        id_number=bytes.fromhex(commitments.id_number),
        phone=bytes.fromhex(commitments.phone),
    )


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
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return enum_to_proto(value)
    if type(value) in VALUE_MESSAGES:
        return value_to_proto(value)
    return value


def event_to_proto(
    event: Any, *, applicant: Applicant | None = None, erased: bool = False
) -> events_pb2.CaseEvent:
    """A stored case event as a ``CaseEvent`` message.

    The applicant of a ``Submitted`` event is given as its commitments; its clear values only
    when ``applicant`` is passed (to a hall entitled to them), never when ``erased``.
    """
    message = events_pb2.CaseEvent(
        case_id=str(event.originator_id),
        version=event.originator_version,
        timestamp=timestamp_to_proto(event.timestamp),
    )
    actor = getattr(event, "actor", None)
    if actor is not None:
        message.actor.CopyFrom(typing.cast(common_pb2.Actor, value_to_proto(actor)))
    body = getattr(message, snake_case(type(event).__name__))
    body.SetInParent()  # events without fields are still set in the oneof
    for name, _hint in _FIELDS[type(event)]:
        value = getattr(event, name)
        if isinstance(value, SealedApplicant):
            body.applicant_commitments.CopyFrom(commitments_to_proto(value.commitments))
            body.personal_data_erased = erased
            if applicant is not None and not erased:
                body.applicant.CopyFrom(value_to_proto(applicant))
            continue
        target = getattr(body, name)
        if isinstance(value, datetime):
            target.CopyFrom(timestamp_to_proto(value))
        elif isinstance(value, tuple):
            target.extend(_to_wire(item) for item in value)
        elif type(value) in VALUE_MESSAGES:
            target.CopyFrom(value_to_proto(value))
        else:
            setattr(body, name, _to_wire(value))
    return message


def event_from_proto(message: events_pb2.CaseEvent) -> Any:
    """A ``CaseEvent`` message as the domain event it encodes (the applicant as commitments,
    with an empty sealed ciphertext: clear values never come back from the wire)."""
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
    }
    if message.HasField("actor"):
        kwargs["actor"] = value_from_proto(Actor, message.actor, "actor")
    if cls is Case.Submitted:
        kwargs["originator_topic"] = get_topic(Case)
    for name, hint in _FIELDS[cls]:
        if hint is SealedApplicant:
            wire = body.applicant_commitments
            kwargs[name] = SealedApplicant(
                ApplicantCommitments(wire.name.hex(), wire.id_number.hex(), wire.phone.hex()),
                b"",
            )
            continue
        if hint is datetime:
            kwargs[name] = timestamp_from_proto(getattr(body, name))
            continue
        kwargs[name] = from_wire(hint, getattr(body, name), f"{which}.{name}")
    return cls(**kwargs)


def case_view(case: Case) -> case_exchange_pb2.CaseView:
    """A case's current state on the wire."""
    view = case_exchange_pb2.CaseView(
        case_id=str(case.id),
        version=case.version,
        state=enum_to_proto(case.state),
        item_code=case.item_code,
        item_name=case.item_name,
        kind=enum_to_proto(case.kind),
        mode=enum_to_proto(case.mode),
        intake_region=case.intake_region,
        competent_region=case.competent_region,
        home_region=case.home_region,
        intake_hall=case.intake_hall,
        holder=case.holder,
        pending_receiver=case.pending_receiver or "",
        promised_days=case.promised_days,
        statutory_days=case.statutory_days,
        certificate_id=case.certificate_id,
        clock_running=case.clock_running,
        clock_seconds=case.clock_seconds(case.modified_on),
        paused_seconds=case.paused_seconds,
        allowed_commands=case.allowed_commands(),
        submitted_at=timestamp_to_proto(case.created_on),
        modified_at=timestamp_to_proto(case.modified_on),
    )
    if case.approved is not None:
        view.approved = case.approved
    if case.rating is not None:
        view.rating = enum_to_proto(case.rating)
    for status in case.joint_tasks.values():
        view.joint_tasks.add(
            task=common_pb2.JointTask(
                task_id=status.task.task_id,
                hall_id=status.task.hall_id,
                department=status.task.department,
            ),
            done=status.done,
            approved=bool(status.approved),
            note=status.note,
        )
    return view


def hall_to_proto(hall: Hall, periods: list[tuple[str, int, int]] | None = None) -> common_pb2.Hall:
    """A registered hall on the wire, with its key history.

    ``periods``: per key, ``(public key, from index, until index)`` in the log (0 unknown/open).
    """
    message = common_pb2.Hall(
        hall_id=hall.hall_id,
        name=hall.name,
        region=hall.region,
        level=enum_to_proto(hall.level),
        windows=list(hall.windows),
        public_key=hall.current_key,
        retired=hall.retired,
        kind=enum_to_proto(hall.kind),
    )
    for public_key, since, until in periods or [(k, 0, 0) for k in hall.public_keys]:
        message.keys.add(
            public_key=public_key, key_id=key_id(public_key), from_index=since, until_index=until
        )
    return message


def item_to_proto(item: ServiceItem) -> common_pb2.ServiceItem:
    """A catalogue item with its guide fields on the wire."""
    message = common_pb2.ServiceItem(
        code=item.code,
        name=item.name,
        kind=enum_to_proto(item.kind),
        department=item.department,
        competent_level=enum_to_proto(item.competent_level),
        legal_basis=item.legal_basis,
        conditions=item.conditions,
        procedure=item.procedure,
        promised_days=item.promised_days,
        statutory_days=item.statutory_days,
        fee_basis=item.fee_basis,
        fee_standard=item.fee_standard,
        cross_region_modes=[enum_to_proto(m) for m in item.cross_region_modes],
        offsite_intake_provinces=item.offsite_intake_provinces,
        joint_departments=item.joint_departments,
        required_checks=[enum_to_proto(m) for m in item.required_checks],
        recurs_every_months=item.recurs_every_months,
    )
    for material in item.materials:
        message.materials.add(name=material.name, required=material.required, form=material.form)
    if item.certificate is not None:
        message.certificate.type_code = item.certificate.type_code
        message.certificate.name = item.certificate.name
    return message

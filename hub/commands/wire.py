"""Parsing signed ``Command`` bytes of the wire API into :mod:`hub.commands.model` dataclasses.

One mechanical converter, driven by the dataclasses' type hints, turns each wire field into its
domain type (UUIDs, enums, value objects, tuples), so the node, the ledger integrator and the
auditor all read a signed command the same way. Every refusal is an
:class:`~hub.errors.InvalidInput` whose field is the full wire path (``command.header.node``,
``command.submit.materials[1].sha256``) and which never echoes a personal value.

Enum values follow the protobuf style prefix (``CaseKind.JOINT`` ↔ ``CASE_KIND_JOINT``).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
import typing
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet
from tongban.v1 import case_exchange_pb2, common_pb2

from hub.commands.model import ACTIONS, Action, Header, ParsedCommand
from hub.domain.appointments import APPOINTMENT_FIELDS, AppointmentCommitments
from hub.domain.command_record import ADMIN, HALL
from hub.domain.values import ApplicantCommitments
from hub.errors import InvalidInput

#: Actions whose messages must hold no field this node does not know. Their signed bytes are
#: stored as they are, so bytes the node cannot read (a photo, a face template, a raw score that
#: a newer or careless client put in a field number of its own) would be kept in the log for
#: ever: such a command is refused instead, before anything is stored.
STRICT_ACTIONS = frozenset(
    {"record_identity_check", "register_agent", "retire_agent", "authorise_agent"}
)

#: The largest signed command: its bytes go into a ledger leaf, which must fit 64 KiB.
MAX_COMMAND_BYTES = 48 * 1024

_AGENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

_HINTS = {name: typing.get_type_hints(cls) for name, cls in ACTIONS.items()}


def snake_case(name: str) -> str:
    """``JointTasksOpened`` → ``joint_tasks_opened``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def enum_prefix(cls: type[enum.Enum]) -> str:
    """``CrossRegionMode`` → ``CROSS_REGION_MODE``."""
    return snake_case(cls.__name__).upper()


def proto_enum(cls: type[enum.Enum]) -> Any:
    """The generated protobuf enum of a domain enum (they share their names)."""
    return getattr(common_pb2, cls.__name__)


def enum_to_proto(member: enum.Enum) -> Any:
    """A domain enum member as its protobuf enum number.

    Typed Any because each generated enum has its own ``ValueType`` (a NewType of int).
    """
    return int(proto_enum(type(member)).Value(f"{enum_prefix(type(member))}_{member.name}"))


def enum_from_proto(cls: type[enum.Enum], number: int, field: str) -> Any:
    """A protobuf enum number as a domain member; unknown or UNSPECIFIED is InvalidInput."""
    try:
        name = proto_enum(cls).Name(number)
    except ValueError:
        raise InvalidInput(field, number, f"not a {cls.__name__} value") from None
    member = name.removeprefix(f"{enum_prefix(cls)}_")
    if member not in cls.__members__:
        raise InvalidInput(field, name, f"a {cls.__name__} must be given")
    return cls[member]


def parse_uuid(text: str, field: str) -> UUID:
    """A UUID from the wire; InvalidInput naming ``field`` when malformed."""
    try:
        return UUID(text)
    except ValueError:
        raise InvalidInput(field, text, "not a UUID") from None


def value_from_proto(cls: type[Any], message: Message, field: str) -> Any:
    """A message as a value object; the value object's own checks name the bad field."""
    if cls is ApplicantCommitments:
        return _commitments(message, field)
    if cls is AppointmentCommitments:
        return _appointment_commitments(message, field)
    hints = _hints_of(cls)
    try:
        return cls(
            **{
                f.name: from_wire(hints[f.name], getattr(message, f.name), f"{field}.{f.name}")
                if isinstance(hints[f.name], type) and issubclass(hints[f.name], enum.Enum)
                else getattr(message, f.name)
                for f in dataclasses.fields(cls)
            }
        )
    except InvalidInput as error:
        raise InvalidInput(
            f"{field}.{error.field.split('.')[-1]}", error.value, error.reason
        ) from None


#: Resolved once per class. A dict rather than functools.cache: mypy --strict does not take
#: ``type[Any]`` for the Hashable argument a cached function asks for.
_VALUE_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints_of(cls: type[Any]) -> dict[str, Any]:
    """A value class's resolved type hints (``typing.get_type_hints`` is slow: once per class)."""
    hints = _VALUE_HINTS.get(cls)
    if hints is None:
        hints = _VALUE_HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _commitments(message: Message, field: str) -> ApplicantCommitments:
    values = {}
    for name in ("name", "id_number", "phone"):
        digest = getattr(message, name)
        if len(digest) != 32:
            raise InvalidInput(
                f"{field}.{name}", f"{len(digest)} bytes", "a commitment is 32 bytes (SHA-256)"
            )
        values[name] = digest.hex()
    return ApplicantCommitments(**values)


def _appointment_commitments(message: Message, field: str) -> AppointmentCommitments:
    """An appointment's commitments; the address is empty for a window booking."""
    values = {}
    for name in APPOINTMENT_FIELDS:
        digest = getattr(message, name)
        if name == "address" and not digest:
            values[name] = ""
            continue
        if len(digest) != 32:
            raise InvalidInput(
                f"{field}.{name}", f"{len(digest)} bytes", "a commitment is 32 bytes (SHA-256)"
            )
        values[name] = digest.hex()
    return AppointmentCommitments(**values)


def from_wire(hint: Any, value: Any, field: str) -> Any:
    """Convert one message field to the domain type ``hint``."""
    if hint is datetime:
        return _timestamp(value, field)
    if hint is UUID:
        return parse_uuid(value, field)
    if typing.get_origin(hint) in (tuple, list, Sequence):
        item_hint = typing.get_args(hint)[0]
        return tuple(
            from_wire(item_hint, item, f"{field}[{number}]") for number, item in enumerate(value)
        )
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return enum_from_proto(hint, value, field)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return value_from_proto(hint, value, field)
    return value


def _timestamp(value: Any, field: str) -> datetime:
    """A ``google.protobuf.Timestamp`` as an aware UTC datetime; unset is InvalidInput."""
    if value.seconds == 0 and value.nanos == 0:
        raise InvalidInput(field, "", "missing: give the time")
    return cast(datetime, value.ToDatetime(tzinfo=UTC))


def parse_command(data: bytes, expected: str | None = None) -> ParsedCommand:
    """Parse signed ``Command`` bytes; ``expected``: the action the RPC stands for.

    The same bytes are parsed several times on their way through a node (the call, the
    ledger's gate, the relay at both ends, the receiving node's gate), so the latest parses are
    kept: the result is immutable (frozen dataclasses, tuples) and depends on the bytes alone.
    A refusal (InvalidInput) is not kept; it is raised again each time."""
    return _parse(bytes(data), expected)


@functools.lru_cache(maxsize=512)  # at most 24 MiB (512 × 48 KiB), under 1 MiB in practice
def _parse(data: bytes, expected: str | None) -> ParsedCommand:
    if len(data) > MAX_COMMAND_BYTES:
        raise InvalidInput("command", f"{len(data)} bytes", f"larger than {MAX_COMMAND_BYTES}")
    if not data:
        raise InvalidInput("command", "", "empty: send a serialised Command")
    try:
        message = case_exchange_pb2.Command.FromString(data)
    except DecodeError as error:
        raise InvalidInput("command", f"{len(data)} bytes", f"not a Command: {error}") from None
    which = message.WhichOneof("action")
    if which is None:
        raise InvalidInput("command.action", "", "no action is set")
    if expected is not None and which != expected:
        raise InvalidInput("command.action", which, f"this RPC takes a {expected!r} command")
    cls = ACTIONS[which]
    header = _header(message, cls)
    body = getattr(message, which)
    if which in STRICT_ACTIONS:
        _refuse_unknown_fields(message, "command")
    arguments = {
        name: from_wire(hint, getattr(body, name), f"command.{which}.{name}")
        for name, hint in _HINTS[which].items()
        if not _is_classvar(hint)
    }
    return ParsedCommand(header, cls(**arguments), bytes(data))


def _refuse_unknown_fields(message: Message, field: str) -> None:
    """InvalidInput naming the first (sub)message that carries fields this node does not know."""
    unknown = UnknownFieldSet(message)
    if len(unknown):
        numbers = sorted({unknown[i].field_number for i in range(len(unknown))})
        raise InvalidInput(
            field,
            f"unknown field numbers {numbers}",
            "this command has no such field (never send biometric data, photos or raw scores); "
            "nothing was stored",
        )
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if descriptor.is_repeated:
            for number, item in enumerate(value):
                _refuse_unknown_fields(item, f"{field}.{descriptor.name}[{number}]")
        else:
            _refuse_unknown_fields(value, f"{field}.{descriptor.name}")


def _is_classvar(hint: Any) -> bool:
    return typing.get_origin(hint) is typing.ClassVar


def _header(message: case_exchange_pb2.Command, cls: type[Action]) -> Header:
    if not message.HasField("header"):
        raise InvalidInput("command.header", "", "missing")
    wire = message.header
    if not wire.HasField("issued_at"):
        raise InvalidInput("command.header.issued_at", "", "missing: when the command was signed")
    if not wire.node:
        raise InvalidInput(
            "command.header.node", "", "name the node (log origin) the command is for"
        )
    if wire.agent and (cls.signer != HALL or not _AGENT.fullmatch(wire.agent)):
        raise InvalidInput(
            "command.header.agent", wire.agent, "a hall's agent id (1-64 letters, digits, . _ -)"
        )
    if cls.signer == HALL:
        if not wire.hall_id or wire.admin:
            raise InvalidInput(
                "command.header.hall_id", wire.hall_id, f"a hall signs {cls.action_name!r}"
            )
        if not wire.operator:
            raise InvalidInput("command.header.operator", "", "must not be empty")
    elif cls.signer == ADMIN and (not wire.admin or wire.hall_id):
        raise InvalidInput(
            "command.header.admin", wire.admin, f"an admin signs {cls.action_name!r}"
        )
    return Header(
        idempotency_key=wire.idempotency_key,
        hall_id=wire.hall_id,
        admin=wire.admin,
        operator=wire.operator,
        region=wire.region,
        issued_at=wire.issued_at.ToDatetime(tzinfo=UTC),
        node=wire.node,
        deferred=wire.deferred,
        agent=wire.agent,
    )

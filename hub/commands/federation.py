"""The federation's signed messages on the wire: envelopes and acknowledgements.

Nodes sign the exact serialised body of each message with their log key, after a context line
that says which kind of message it is (so an envelope's signature can never pass as an
acknowledgement's). Parsing checks every field the receiver relies on and names the field at
fault; nothing here touches keys other than to verify and sign with what it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from google.protobuf.message import DecodeError
from tongban.v1 import federation_pb2

from hub.errors import InvalidInput

#: Context lines signed before the body (docs/federation.md).
ENVELOPE_CONTEXT = b"tongban/envelope/v1\n"
ACK_CONTEXT = b"tongban/ack/v1\n"

#: How far two nodes' clocks may differ: an envelope sent further in the future is refused, and
#: the auditor allows this much between one node's times and another's (docs/federation.md).
MAX_CLOCK_SKEW = timedelta(minutes=5)

#: An envelope body goes into a ledger leaf of the receiver's log, which must fit 64 KiB.
MAX_ENVELOPE_BYTES = 60 * 1024


@dataclass(frozen=True)
class StepBody:
    """One step as an envelope carries it."""

    origin: str
    index: int
    leaf: bytes
    inclusion_proof: tuple[bytes, ...]
    checkpoint: bytes  # empty: the envelope's checkpoint
    hall_key: str
    hall_regions: dict[str, str]


@dataclass(frozen=True)
class EnvelopeBody:
    """A parsed envelope body (its signature checked separately)."""

    envelope_id: UUID
    sender: str
    destination: str
    case_id: UUID
    step: StepBody
    checkpoint: bytes
    consistency_from: int
    consistency_proof: tuple[bytes, ...]
    sent_at: datetime
    #: (origin, index) of the steps to apply before this one.
    after: tuple[tuple[str, int], ...] = ()
    #: SHA-256 of the applicant sealed beside the body (empty: none), so the signature covers it.
    sealed_personal_sha256: bytes = b""


@dataclass(frozen=True)
class AckBody:
    """A parsed acknowledgement body."""

    envelope_id: UUID
    sender: str
    destination: str
    stored: bool
    index: int
    reason: str
    cosignature: str
    cosigned_size: int
    #: The acknowledging node's clock when it signed (a stored step was applied no later).
    signed_at: datetime


def _time(text: str, field: str) -> datetime:
    """An RFC 3339 time with its time zone; InvalidInput naming ``field`` otherwise."""
    try:
        moment = datetime.fromisoformat(_required(text, field))
    except ValueError:
        raise InvalidInput(field, text, "not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise InvalidInput(field, text, "give the time zone (UTC)")
    return moment


def _uuid(text: str, field: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise InvalidInput(field, text, "not a UUID") from None


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidInput(field, value, "missing")
    return value


def parse_envelope(body: bytes) -> EnvelopeBody:
    """Parse an envelope body; InvalidInput naming the field at fault."""
    if len(body) > MAX_ENVELOPE_BYTES:
        raise InvalidInput("envelope", f"{len(body)} bytes", f"larger than {MAX_ENVELOPE_BYTES}")
    try:
        message = federation_pb2.Envelope.FromString(body)
    except DecodeError as error:
        raise InvalidInput("envelope", f"{len(body)} bytes", f"not an Envelope: {error}") from None
    if not message.HasField("step"):
        raise InvalidInput("envelope.step", "", "missing")
    step = message.step
    sent_at = _time(message.sent_at, "envelope.sent_at")
    sealed_digest = bytes(message.sealed_personal_sha256)
    if len(sealed_digest) not in (0, 32):
        raise InvalidInput(
            "envelope.sealed_personal_sha256",
            f"{len(sealed_digest)} bytes",
            "a SHA-256 (32 bytes), or empty when nothing is sealed",
        )
    return EnvelopeBody(
        envelope_id=_uuid(message.envelope_id, "envelope.envelope_id"),
        sender=_required(message.sender, "envelope.sender"),
        destination=_required(message.destination, "envelope.destination"),
        case_id=_uuid(message.case_id, "envelope.case_id"),
        step=StepBody(
            origin=_required(step.origin, "envelope.step.origin"),
            index=step.index,
            leaf=bytes(_required_bytes(step.leaf, "envelope.step.leaf")),
            inclusion_proof=tuple(bytes(h) for h in step.inclusion_proof),
            checkpoint=bytes(step.checkpoint),
            hall_key=_required(step.hall_key, "envelope.step.hall_key"),
            hall_regions=dict(step.hall_regions),
        ),
        checkpoint=bytes(_required_bytes(message.checkpoint, "envelope.checkpoint")),
        consistency_from=message.consistency_from,
        consistency_proof=tuple(bytes(h) for h in message.consistency_proof),
        sent_at=sent_at,
        after=tuple(
            (_required(ref.origin, "envelope.after.origin"), ref.index) for ref in message.after
        ),
        sealed_personal_sha256=sealed_digest,
    )


def build_envelope(body: EnvelopeBody) -> bytes:
    """Serialise an envelope body (what the sender signs)."""
    step = body.step
    return federation_pb2.Envelope(
        envelope_id=str(body.envelope_id),
        sender=body.sender,
        destination=body.destination,
        case_id=str(body.case_id),
        step=federation_pb2.Step(
            origin=step.origin,
            index=step.index,
            leaf=step.leaf,
            inclusion_proof=list(step.inclusion_proof),
            checkpoint=step.checkpoint,
            hall_key=step.hall_key,
            hall_regions=step.hall_regions,
        ),
        checkpoint=body.checkpoint,
        consistency_from=body.consistency_from,
        consistency_proof=list(body.consistency_proof),
        sent_at=body.sent_at.isoformat(),
        after=[federation_pb2.StepRef(origin=origin, index=index) for origin, index in body.after],
        sealed_personal_sha256=body.sealed_personal_sha256,
    ).SerializeToString()


def parse_ack(body: bytes) -> AckBody:
    """Parse an acknowledgement body; InvalidInput naming the field at fault."""
    try:
        message = federation_pb2.Ack.FromString(body)
    except DecodeError as error:
        raise InvalidInput("ack", f"{len(body)} bytes", f"not an Ack: {error}") from None
    if message.status not in (federation_pb2.Ack.STORED, federation_pb2.Ack.REFUSED):
        raise InvalidInput("ack.status", message.status, "STORED or REFUSED")
    stored = message.status == federation_pb2.Ack.STORED
    if not stored and not message.reason:
        raise InvalidInput("ack.reason", "", "a refusal says why")
    return AckBody(
        envelope_id=_uuid(message.envelope_id, "ack.envelope_id"),
        sender=_required(message.sender, "ack.sender"),
        destination=_required(message.destination, "ack.destination"),
        stored=stored,
        index=message.index,
        reason=message.reason,
        cosignature=message.cosignature,
        cosigned_size=message.cosigned_size,
        signed_at=_time(message.signed_at, "ack.signed_at"),
    )


def build_ack(body: AckBody) -> bytes:
    """Serialise an acknowledgement body (what the acknowledging node signs)."""
    return federation_pb2.Ack(
        envelope_id=str(body.envelope_id),
        sender=body.sender,
        destination=body.destination,
        status=federation_pb2.Ack.STORED if body.stored else federation_pb2.Ack.REFUSED,
        index=body.index,
        reason=body.reason,
        cosignature=body.cosignature,
        cosigned_size=body.cosigned_size,
        signed_at=body.signed_at.isoformat(),
    ).SerializeToString()


def _required_bytes(value: bytes, field: str) -> bytes:
    if not value:
        raise InvalidInput(field, "", "missing")
    return value


__all__ = [
    "ACK_CONTEXT",
    "ENVELOPE_CONTEXT",
    "MAX_ENVELOPE_BYTES",
    "AckBody",
    "EnvelopeBody",
    "StepBody",
    "build_ack",
    "build_envelope",
    "parse_ack",
    "parse_envelope",
]

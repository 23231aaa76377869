"""The federation's signed message bodies: what a node builds is what its peer parses, and a
body that its sender signed but that lacks or garbles a field the receiver relies on is refused
naming that field (the relay quarantines it as ``malformed``, ``docs/federation.md``) — a peer's
valid signature does not make a bad body usable."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from tongban.v1 import federation_pb2

from hub.commands.federation import (
    MAX_ENVELOPE_BYTES,
    AckBody,
    EnvelopeBody,
    StepBody,
    build_ack,
    build_envelope,
    parse_ack,
    parse_envelope,
)
from hub.errors import InvalidInput

SENT = datetime(2026, 12, 4, 8, 30, 15, 250000, tzinfo=UTC)

ENVELOPE = EnvelopeBody(
    envelope_id=UUID("0b9a6f1e-3c1d-4a53-9a43-2b7e1c0d5f61"),
    sender="tongban/43",
    destination="tongban/61",
    case_id=UUID("7d2c1b4a-5e6f-4a8b-9c0d-1e2f3a4b5c6d"),
    step=StepBody(
        origin="tongban/43",
        index=17,
        leaf=b"\x02leaf bytes",
        inclusion_proof=(b"\x01" * 32, b"\x02" * 32),
        checkpoint=b"",
        hall_key="AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        hall_regions={"hn-shatou-town": "430902104000"},
    ),
    checkpoint=b"tongban/43\n18\nROOT=\n\n- tongban/43 sig\n",
    consistency_from=12,
    consistency_proof=(b"\x03" * 32,),
    sent_at=SENT,
    after=(("tongban/43", 16), ("tongban/42", 3)),
    sealed_personal_sha256=b"\x05" * 32,
)

ACK = AckBody(
    envelope_id=ENVELOPE.envelope_id,
    sender="tongban/61",
    destination="tongban/43",
    stored=True,
    index=40,
    reason="",
    cosignature="— tongban/61/witness abc=",
    cosigned_size=18,
    signed_at=SENT,
)


def test_an_envelope_and_an_acknowledgement_parse_back_to_what_was_built() -> None:
    assert parse_envelope(build_envelope(ENVELOPE)) == ENVELOPE
    assert parse_ack(build_ack(ACK)) == ACK
    refusal = AckBody(**{**ACK.__dict__, "stored": False, "index": 0, "reason": "no such hall"})
    assert parse_ack(build_ack(refusal)) == refusal


def _envelope_changed(change: Callable[[Any], None]) -> bytes:
    message = federation_pb2.Envelope.FromString(build_envelope(ENVELOPE))
    change(message)
    return message.SerializeToString()


def _set(path: str, value: object) -> Callable[[Any], None]:
    """A change that sets the (dotted) field ``path`` of a message to ``value``."""
    *parents, name = path.split(".")

    def change(message: Any) -> None:
        for parent in parents:
            message = getattr(message, parent)
        setattr(message, name, value)

    return change


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (lambda m: m.ClearField("step"), "envelope.step", "missing"),
        (_set("envelope_id", "not-a-uuid"), "envelope.envelope_id", "not a UUID"),
        (_set("case_id", ""), "envelope.case_id", "not a UUID"),
        (_set("sender", ""), "envelope.sender", "missing"),
        (_set("destination", ""), "envelope.destination", "missing"),
        (_set("sent_at", ""), "envelope.sent_at", "missing"),
        (_set("sent_at", "4 December 2026"), "envelope.sent_at", "not an RFC 3339 time"),
        (_set("sent_at", "2026-12-04T08:30:15"), "envelope.sent_at", "give the time zone (UTC)"),
        (_set("step.origin", ""), "envelope.step.origin", "missing"),
        (_set("step.leaf", b""), "envelope.step.leaf", "missing"),
        (_set("step.hall_key", ""), "envelope.step.hall_key", "missing"),
        (_set("checkpoint", b""), "envelope.checkpoint", "missing"),
        (lambda m: m.after.add(origin="", index=2), "envelope.after.origin", "missing"),
        (
            _set("sealed_personal_sha256", b"\x05" * 31),
            "envelope.sealed_personal_sha256",
            "a SHA-256 (32 bytes), or empty when nothing is sealed",
        ),
    ],
)
def test_an_envelope_missing_or_garbling_a_field_is_refused_naming_it(
    change: Callable[[Any], None], field: str, reason: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_envelope(_envelope_changed(change))
    assert (refused.value.field, refused.value.reason) == (field, reason)


def test_bytes_that_are_no_envelope_or_too_large_for_a_leaf_are_refused() -> None:
    with pytest.raises(InvalidInput, match="not an Envelope") as refused:
        parse_envelope(b"\x08\x01garbage")
    assert refused.value.field == "envelope"
    # An envelope body goes into a leaf of the receiver's log, which must fit 64 KiB.
    padded = _envelope_changed(_set("step.leaf", b"\x00" * MAX_ENVELOPE_BYTES))
    with pytest.raises(InvalidInput, match=f"larger than {MAX_ENVELOPE_BYTES}") as refused:
        parse_envelope(padded)
    assert refused.value.value == f"{len(padded)} bytes"


def _ack_changed(change: Callable[[Any], None]) -> bytes:
    message = federation_pb2.Ack.FromString(build_ack(ACK))
    change(message)
    return message.SerializeToString()


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (_set("status", 0), "ack.status", "STORED or REFUSED"),
        (_set("status", federation_pb2.Ack.REFUSED), "ack.reason", "a refusal says why"),
        (_set("envelope_id", "x"), "ack.envelope_id", "not a UUID"),
        (_set("sender", ""), "ack.sender", "missing"),
        (_set("destination", ""), "ack.destination", "missing"),
        (_set("signed_at", ""), "ack.signed_at", "missing"),
        (_set("signed_at", "2026-12-04 08:30"), "ack.signed_at", "give the time zone (UTC)"),
        (_set("signed_at", "yesterday"), "ack.signed_at", "not an RFC 3339 time"),
    ],
)
def test_an_acknowledgement_missing_or_garbling_a_field_is_refused_naming_it(
    change: Callable[[Any], None], field: str, reason: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_ack(_ack_changed(change))
    assert (refused.value.field, refused.value.reason) == (field, reason)


def test_bytes_that_are_no_acknowledgement_are_refused() -> None:
    with pytest.raises(InvalidInput, match="not an Ack") as refused:
        parse_ack(b"\x08\x01garbage")
    assert refused.value.field == "ack"

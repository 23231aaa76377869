"""Parsing signed command bytes (``hub.commands.wire.parse_command``): the latest parses are
kept, since the same bytes pass through a node several times; refusals are not."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tongban.v1 import case_exchange_pb2, common_pb2

from hub.commands.model import Submit
from hub.commands.signing import CommandSigner
from hub.commands.wire import MAX_COMMAND_BYTES, parse_command
from hub.domain.values import Applicant, id_number_with_check
from hub.errors import InvalidInput

SIGNER = CommandSigner(
    Ed25519PrivateKey.generate(), node="tongban/43", operator="op", hall_id="t-hall",
    region="430902104000",
)  # fmt: skip
APPLICANT = Applicant("张三", id_number_with_check("43090219800101001"), "13800000000")


def _submission(key: str) -> bytes:
    scans = [
        common_pb2.Material(name=name, sha256=hashlib.sha256(name.encode()).hexdigest(),
                            media_type="application/pdf", size=2048)
        for name in ("居民身份证", "户口簿")
    ]  # fmt: skip
    return SIGNER.sign("submit", idempotency_key=key, item_code="070302001000",
                       applicant=APPLICANT, materials=scans).command  # fmt: skip


def test_the_same_bytes_parse_to_the_same_value_once() -> None:
    data = _submission("parse-0001")
    first = parse_command(data)
    assert isinstance(first.action, Submit) and first.raw == data
    assert [m.name for m in first.action.materials] == ["居民身份证", "户口簿"]
    again = parse_command(bytes(bytearray(data)))  # equal bytes, another object
    assert again is first  # kept, not parsed again
    other = parse_command(_submission("parse-0002"))
    assert other is not first and other.header.idempotency_key == "parse-0002"


def test_a_refusal_is_raised_each_time_and_the_expected_action_counts() -> None:
    data = _submission("parse-0003")
    for _ in range(2):
        with pytest.raises(InvalidInput, match="this RPC takes a 'accept' command"):
            parse_command(data, "accept")
        with pytest.raises(InvalidInput, match="not a Command"):
            parse_command(b"\x0a\x03not a command")
    assert isinstance(parse_command(data, "submit").action, Submit)


def _changed(change: Callable[[Any], None]) -> bytes:
    """A submission's command bytes with ``change`` made to the message."""
    message = case_exchange_pb2.Command.FromString(_submission("parse-0004"))
    change(message)
    return message.SerializeToString()


def _booking_without_its_start(message: Any) -> None:
    message.ClearField("submit")
    booking = message.book_appointment
    booking.item_code, booking.kind, booking.hall_id, booking.window = "070302001000", 1, "h", "1"


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (lambda m: m.ClearField("header"), "command.header", "missing"),
        (lambda m: m.header.ClearField("issued_at"), "command.header.issued_at", "missing"),
        (_booking_without_its_start, "command.book_appointment.starts_at",
         "missing: give the time"),
        (lambda m: setattr(m.header, "node", ""), "command.header.node", "name the node"),
        (lambda m: setattr(m.header, "agent", "agent one"), "command.header.agent",
         "a hall's agent id"),
        (lambda m: setattr(m.header, "admin", "root"), "command.header.hall_id",
         "a hall signs 'submit'"),
        (lambda m: setattr(m.header, "operator", ""), "command.header.operator", "must not be empty"),
        (lambda m: m.ClearField("submit"), "command.action", "no action is set"),
        (lambda m: setattr(m.submit.applicant, "phone", b"\x01" * 31),
         "command.submit.applicant.phone", "a commitment is 32 bytes (SHA-256)"),
    ],
)  # fmt: skip
def test_a_command_missing_or_garbling_its_header_or_commitments_is_refused_naming_the_field(
    change: Callable[[Any], None], field: str, reason: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_command(_changed(change))
    assert refused.value.field == field
    assert refused.value.reason.startswith(reason)


def test_empty_and_oversize_bytes_are_refused_before_parsing() -> None:
    with pytest.raises(InvalidInput, match="empty: send a serialised Command"):
        parse_command(b"")
    oversize = b"\x00" * (MAX_COMMAND_BYTES + 1)
    with pytest.raises(InvalidInput, match=f"larger than {MAX_COMMAND_BYTES}"):
        parse_command(oversize)

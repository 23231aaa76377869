"""Parsing signed command bytes (``hub.commands.wire.parse_command``): the latest parses are
kept, since the same bytes pass through a node several times; refusals are not."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tongban.v1 import common_pb2

from hub.commands.model import Submit
from hub.commands.signing import CommandSigner
from hub.commands.wire import parse_command
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

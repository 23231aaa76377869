"""The leaf encoding: golden bytes, round trips, and strict decoding."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import LeafError
from ledger.leaf import MAX_LEAF_SIZE, Leaf
from ledger.merkle import leaf_hash

AGGREGATE = uuid.UUID("12345678-1234-5678-1234-567812345678")
EVENT_HASH = hashlib.sha256(b"event").digest()

SIGNED = Leaf(
    origin="tongban.example/n1",
    index=7,
    aggregate_id=AGGREGATE,
    version=3,
    topic="CaseHandedOff",
    event_hash=EVENT_HASH,
    hall_key_id="hall-370102+0a0b0c0d",
    hall_signature=b"\x01" * 64,
)

# The documented layout, field by field.
GOLDEN = bytes.fromhex(
    "01"  # format version
    "0012"
    + b"tongban.example/n1".hex()  # origin
    + "0000000000000007"  # index
    + "12345678123456781234567812345678"  # aggregate id
    + "0000000000000003"  # version
    + "000d"
    + b"CaseHandedOff".hex()  # topic
    + EVENT_HASH.hex()  # SHA-256 of the event bytes
    + "0014"
    + b"hall-370102+0a0b0c0d".hex()  # hall key id
    + "0040"
    + "01" * 64  # hall signature
)


def test_golden_encoding() -> None:
    assert SIGNED.encode() == GOLDEN
    assert Leaf.decode(GOLDEN) == SIGNED
    assert SIGNED.leaf_hash() == leaf_hash(GOLDEN)
    assert SIGNED.signed_by_hall


def test_unsigned_leaf() -> None:
    leaf = Leaf("o", 0, AGGREGATE, 1, "CaseOpened", EVENT_HASH)
    assert leaf.encode().endswith(EVENT_HASH + b"\x00\x00\x00\x00")
    assert Leaf.decode(leaf.encode()) == leaf
    assert not leaf.signed_by_hall


@given(
    origin=st.text(min_size=1, max_size=40),
    index=st.integers(0, 2**64 - 1),
    aggregate=st.uuids(),
    version=st.integers(0, 2**64 - 1),
    topic=st.text(min_size=1, max_size=40),
    event_hash=st.binary(min_size=32, max_size=32),
    signed=st.booleans(),
    key_id=st.text(min_size=1, max_size=30),
    signature=st.binary(min_size=1, max_size=100),
)
def test_round_trip(
    origin: str,
    index: int,
    aggregate: uuid.UUID,
    version: int,
    topic: str,
    event_hash: bytes,
    signed: bool,
    key_id: str,
    signature: bytes,
) -> None:
    try:
        leaf = Leaf(
            origin,
            index,
            aggregate,
            version,
            topic,
            event_hash,
            key_id if signed else "",
            signature if signed else b"",
        )
    except LeafError:
        # Only lone surrogates (not encodable as UTF-8) are refused here.
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in origin + topic + key_id)
        return
    encoded = leaf.encode()
    assert Leaf.decode(encoded) == leaf
    assert Leaf.decode(encoded).encode() == encoded


def test_every_truncation_is_rejected() -> None:
    for cut in range(len(GOLDEN)):
        with pytest.raises(LeafError):
            Leaf.decode(GOLDEN[:cut])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "format version needs 1 bytes at offset 0, only 0 remain"),
        (b"\x02" + GOLDEN[1:], "leaf format version 2 is not supported"),
        (GOLDEN + b"\x00", "1 unexpected trailing bytes at offset 188"),
        (GOLDEN[:25], "index needs 8 bytes at offset 21, only 4 remain"),
        (b"\x01\x00\x02\xff\xfe", "origin at offset 3 is not valid UTF-8"),
        (b"\x01\x00\x00" + GOLDEN[21:], "origin is empty"),
    ],
)
def test_decoding_errors_are_precise(data: bytes, message: str) -> None:
    with pytest.raises(LeafError, match=message):
        Leaf.decode(data)


def test_signature_without_key_id_is_rejected_when_decoding() -> None:
    # Same bytes as an unsigned leaf but with a 1-byte signature and no key id.
    unsigned = Leaf("o", 0, AGGREGATE, 1, "t", EVENT_HASH).encode()
    with pytest.raises(LeafError, match="both be present or both be empty"):
        Leaf.decode(unsigned[:-2] + b"\x00\x01\x99")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"origin": ""}, "origin is empty"),
        ({"topic": ""}, "topic is empty"),
        ({"index": -1}, "index -1 is outside"),
        ({"index": 2**64}, "outside 0..18446744073709551615"),
        ({"version": True}, "version must be an integer"),
        ({"event_hash": b"\x00" * 31}, "event hash is 31 bytes, expected 32"),
        ({"aggregate_id": "12345678-1234-5678-1234-567812345678"}, "must be a uuid.UUID"),
        ({"hall_key_id": "k"}, "both be present or both be empty"),
        ({"hall_signature": b"s"}, "both be present or both be empty"),
        ({"topic": "\ud800"}, "topic is not encodable as UTF-8"),
        ({"topic": "x" * 70000}, "topic is 70000 bytes in UTF-8, more than 65535"),
        ({"hall_key_id": "k", "hall_signature": b"s" * 65535}, f"longer than {MAX_LEAF_SIZE}"),
    ],
)
def test_invalid_fields(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "origin": "o",
        "index": 0,
        "aggregate_id": AGGREGATE,
        "version": 1,
        "topic": "t",
        "event_hash": EVENT_HASH,
    }
    fields.update(kwargs)
    with pytest.raises(LeafError, match=message):
        Leaf(**fields)  # type: ignore[arg-type]

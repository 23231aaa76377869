"""The leaf encoding v2: golden bytes, round trips, strict decoding, and the authority rules."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import LeafError
from ledger.leaf import MAX_LEAF_SIZE, Authority, Leaf
from ledger.merkle import leaf_hash

AGGREGATE = uuid.UUID("12345678-1234-5678-1234-567812345678")
EVENT_HASH = hashlib.sha256(b"event").digest()

COMMAND = Leaf(
    origin="tongban.example/n1",
    index=7,
    aggregate_id=AGGREGATE,
    version=1,
    topic="CommandRecorded",
    event_hash=EVENT_HASH,
    authority=Authority.HALL_COMMAND,
    signer="hn-shatou-town",
    key_id="0a0b0c0d0e0f1011",
    signature=b"\x01" * 64,
    command=b"\x0a\x02hi",
)

# The documented layout, field by field.
GOLDEN = bytes.fromhex(
    "02"  # format version
    "0012"
    + b"tongban.example/n1".hex()  # origin
    + "0000000000000007"  # index
    + "12345678123456781234567812345678"  # aggregate id
    + "0000000000000001"  # version
    + "000f"
    + b"CommandRecorded".hex()  # topic
    + EVENT_HASH.hex()  # SHA-256 of the event bytes
    + "01"  # authority: HALL_COMMAND
    + "000e"
    + b"hn-shatou-town".hex()  # signer
    + "0010"
    + b"0a0b0c0d0e0f1011".hex()  # key id
    + "0040"
    + "01" * 64  # signature
    + "0004"
    + "0a026869"  # the signed command bytes
)

CAUSED = Leaf("o", 8, AGGREGATE, 2, "CaseAccepted", EVENT_HASH, Authority.CAUSED, cause=7)


def test_golden_encoding() -> None:
    assert COMMAND.encode() == GOLDEN
    assert Leaf.decode(GOLDEN) == COMMAND
    assert COMMAND.leaf_hash() == leaf_hash(GOLDEN)
    assert COMMAND.is_command


def test_node_and_caused_leaves() -> None:
    node = Leaf("o", 0, AGGREGATE, 1, "NodeInitialised", EVENT_HASH)
    assert node.authority is Authority.NODE
    assert node.encode().endswith(EVENT_HASH + b"\x00")
    assert Leaf.decode(node.encode()) == node
    assert not node.is_command
    assert CAUSED.encode().endswith(EVENT_HASH + b"\x03" + (7).to_bytes(8, "big"))
    assert Leaf.decode(CAUSED.encode()) == CAUSED


@given(
    origin=st.text(min_size=1, max_size=40),
    index=st.integers(1, 2**64 - 1),
    aggregate=st.uuids(),
    version=st.integers(0, 2**64 - 1),
    topic=st.text(min_size=1, max_size=40),
    event_hash=st.binary(min_size=32, max_size=32),
    authority=st.sampled_from(list(Authority)),
    signer=st.text(min_size=1, max_size=30),
    signature=st.binary(min_size=1, max_size=100),
    command=st.binary(min_size=1, max_size=200),
    cause=st.integers(0, 2**64 - 2),
)
def test_round_trip(
    origin: str,
    index: int,
    aggregate: uuid.UUID,
    version: int,
    topic: str,
    event_hash: bytes,
    authority: Authority,
    signer: str,
    signature: bytes,
    command: bytes,
    cause: int,
) -> None:
    signed = authority.is_signed
    try:
        leaf = Leaf(
            origin,
            index,
            aggregate,
            version,
            topic,
            event_hash,
            authority,
            signer if signed else "",
            "k1" if signed else "",
            signature if signed else b"",
            command if signed else b"",
            min(cause, index - 1) if authority is Authority.CAUSED else None,
        )
    except LeafError:
        # Only lone surrogates (not encodable as UTF-8) are refused here.
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in origin + topic + signer)
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
        (b"\x01" + GOLDEN[1:], "leaf format version 1 is not supported"),
        (GOLDEN + b"\x00", "1 unexpected trailing bytes"),
        (GOLDEN[:25], "index needs 8 bytes at offset 21, only 4 remain"),
        (b"\x02\x00\x02\xff\xfe", "origin at offset 3 is not valid UTF-8"),
        (b"\x02\x00\x00" + GOLDEN[21:], "origin is empty"),
    ],
)
def test_decoding_errors_are_precise(data: bytes, message: str) -> None:
    with pytest.raises(LeafError, match=message):
        Leaf.decode(data)


def test_unknown_authority_is_rejected_when_decoding() -> None:
    node = Leaf("o", 0, AGGREGATE, 1, "t", EVENT_HASH).encode()
    with pytest.raises(LeafError, match="authority 9 at offset"):
        Leaf.decode(node[:-1] + b"\x09")


def test_a_caused_leaf_cites_an_earlier_leaf() -> None:
    with pytest.raises(LeafError, match="cause 8 must be below the leaf's index 8"):
        Leaf("o", 8, AGGREGATE, 2, "t", EVENT_HASH, Authority.CAUSED, cause=8)
    # Forged bytes with a forward cause are refused when decoding too.
    forged = CAUSED.encode()[:-8] + (9).to_bytes(8, "big")
    with pytest.raises(LeafError, match="must be below"):
        Leaf.decode(forged)


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
        ({"authority": 7}, "authority 7 is not one of 0-5"),
        ({"signer": "k"}, "a NODE leaf carries no signer"),
        ({"signature": b"s"}, "a NODE leaf carries no signer"),
        ({"cause": 0}, "a NODE leaf has no cause"),
        ({"authority": Authority.CAUSED}, "names the index of its command's leaf"),
        ({"authority": Authority.HALL_COMMAND}, "signer is empty"),
        (
            {"authority": Authority.ADMIN_COMMAND, "signer": "a", "key_id": "k", "signature": b"s"},
            "command is empty",
        ),
        ({"topic": "\ud800"}, "topic is not encodable as UTF-8"),
        ({"topic": "x" * 70000}, "topic is 70000 bytes in UTF-8, more than 65535"),
        (
            {
                "authority": Authority.HALL_COMMAND,
                "signer": "h",
                "key_id": "k",
                "signature": b"s",
                "command": b"c" * 65535,
            },
            f"longer than {MAX_LEAF_SIZE}",
        ),
    ],
)
def test_invalid_fields(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "origin": "o",
        "index": 1,
        "aggregate_id": AGGREGATE,
        "version": 1,
        "topic": "t",
        "event_hash": EVENT_HASH,
    }
    fields.update(kwargs)
    with pytest.raises(LeafError, match=message):
        Leaf(**fields)  # type: ignore[arg-type]

"""The ledger's leaf data: what one log entry commits to, and its canonical binary encoding.

One leaf per stored event. It commits to the *hash* of the stored event bytes rather than the
bytes, so proofs stay valid after personal data is crypto-shredded. Encoding (all integers
big-endian, all strings UTF-8, every variable-length field prefixed by its uint16 length)::

    uint8   format version (1)
    uint16  len, origin            log origin, 1..65535 bytes
    uint64  index                  position of the leaf in the log
    16 B    aggregate id           UUID, RFC 4122 byte order
    uint64  version                aggregate version of the event
    uint16  len, topic             event topic, 1..65535 bytes
    32 B    event hash             SHA-256 of the stored event bytes
    uint16  len, hall key id       empty when no hall signed
    uint16  len, hall signature    empty when no hall signed

Every field has exactly one encoding, so equal leaves encode to equal bytes and decoding rejects
anything else (unknown version, truncation, trailing bytes, invalid UTF-8). The whole encoding is
at most 65535 bytes so it fits a C2SP tlog-tiles entry bundle.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from ledger.errors import LeafError
from ledger.merkle import leaf_hash

LEAF_FORMAT_VERSION = 1
MAX_LEAF_SIZE = 0xFFFF
"""Largest encoded leaf; tile entry bundles prefix each entry with a uint16 length."""

_U16 = 0xFFFF
_U64 = (1 << 64) - 1


def _check_uint(value: object, limit: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LeafError(f"{what} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= limit:
        raise LeafError(f"{what} {value} is outside 0..{limit}")
    return value


def _utf8(value: object, what: str, *, allow_empty: bool) -> bytes:
    if not isinstance(value, str):
        raise LeafError(f"{what} must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise LeafError(f"{what} is empty")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LeafError(f"{what} is not encodable as UTF-8 (position {exc.start})") from None
    if len(raw) > _U16:
        raise LeafError(f"{what} is {len(raw)} bytes in UTF-8, more than {_U16}")
    return raw


@dataclass(frozen=True)
class Leaf:
    """The data one ledger leaf commits to (see the module docstring for the encoding)."""

    origin: str
    index: int
    aggregate_id: uuid.UUID
    version: int
    topic: str
    event_hash: bytes
    hall_key_id: str = ""
    hall_signature: bytes = b""

    def __post_init__(self) -> None:
        """Validate every field so an invalid leaf can never be encoded."""
        _utf8(self.origin, "origin", allow_empty=False)
        _check_uint(self.index, _U64, "index")
        if not isinstance(self.aggregate_id, uuid.UUID):
            raise LeafError(
                f"aggregate id must be a uuid.UUID, got {type(self.aggregate_id).__name__}"
            )
        _check_uint(self.version, _U64, "version")
        _utf8(self.topic, "topic", allow_empty=False)
        if not isinstance(self.event_hash, bytes) or len(self.event_hash) != 32:
            size = len(self.event_hash) if isinstance(self.event_hash, bytes) else "not"
            raise LeafError(f"event hash is {size} bytes, expected 32 (SHA-256)")
        _utf8(self.hall_key_id, "hall key id", allow_empty=True)
        if not isinstance(self.hall_signature, bytes):
            raise LeafError("hall signature must be bytes")
        if len(self.hall_signature) > _U16:
            raise LeafError(f"hall signature is {len(self.hall_signature)} bytes, more than {_U16}")
        # A signature without the key that made it cannot be checked, and a key without a
        # signature claims an act that did not happen: both or neither.
        if bool(self.hall_key_id) != bool(self.hall_signature):
            raise LeafError(
                "hall key id and hall signature must both be present or both be empty "
                f"(key id {'present' if self.hall_key_id else 'empty'}, signature "
                f"{'present' if self.hall_signature else 'empty'})"
            )
        encoded = self._build()
        if len(encoded) > MAX_LEAF_SIZE:
            raise LeafError(f"encoded leaf is longer than {MAX_LEAF_SIZE} bytes")
        # Kept beside the fields (not one of them, so equality is unchanged): a leaf is encoded
        # for its hash and again for storage, and the integrator makes thousands a second.
        object.__setattr__(self, "_encoded", encoded)

    @property
    def signed_by_hall(self) -> bool:
        """Whether a hall signature is committed to."""
        return bool(self.hall_signature)

    def encode(self) -> bytes:
        """Return the canonical encoding."""
        encoded: bytes = self.__dict__["_encoded"]
        return encoded

    def _build(self) -> bytes:
        origin = self.origin.encode("utf-8")
        topic = self.topic.encode("utf-8")
        key_id = self.hall_key_id.encode("utf-8")
        return b"".join(
            (
                bytes([LEAF_FORMAT_VERSION]),
                len(origin).to_bytes(2, "big"),
                origin,
                self.index.to_bytes(8, "big"),
                self.aggregate_id.bytes,
                self.version.to_bytes(8, "big"),
                len(topic).to_bytes(2, "big"),
                topic,
                self.event_hash,
                len(key_id).to_bytes(2, "big"),
                key_id,
                len(self.hall_signature).to_bytes(2, "big"),
                self.hall_signature,
            )
        )

    def leaf_hash(self) -> bytes:
        """Return the RFC 9162 leaf hash of the encoding (the value in the Merkle tree)."""
        return leaf_hash(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> Leaf:
        """Decode a canonical encoding; raise :class:`LeafError` naming the byte offset at fault."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise LeafError(f"encoded leaf must be bytes, got {type(data).__name__}")
        reader = _Reader(bytes(data))
        version = reader.fixed(1, "format version")[0]
        if version != LEAF_FORMAT_VERSION:
            raise LeafError(
                f"leaf format version {version} is not supported (expected {LEAF_FORMAT_VERSION})"
            )
        origin = reader.text("origin")
        index = int.from_bytes(reader.fixed(8, "index"), "big")
        aggregate_id = uuid.UUID(bytes=reader.fixed(16, "aggregate id"))
        event_version = int.from_bytes(reader.fixed(8, "version"), "big")
        topic = reader.text("topic")
        event_hash = reader.fixed(32, "event hash")
        hall_key_id = reader.text("hall key id")
        hall_signature = reader.fixed(reader.u16("hall signature length"), "hall signature")
        if reader.remaining:
            raise LeafError(
                f"encoded leaf has {reader.remaining} unexpected trailing bytes at offset "
                f"{reader.offset}"
            )
        return cls(
            origin=origin,
            index=index,
            aggregate_id=aggregate_id,
            version=event_version,
            topic=topic,
            event_hash=event_hash,
            hall_key_id=hall_key_id,
            hall_signature=hall_signature,
        )


class _Reader:
    """Bounds-checked cursor over an encoded leaf, producing offset-precise errors."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.offset = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self.offset

    def fixed(self, size: int, what: str) -> bytes:
        if size > self.remaining:
            raise LeafError(
                f"encoded leaf is truncated: {what} needs {size} bytes at offset {self.offset}, "
                f"only {self.remaining} remain"
            )
        out = self._data[self.offset : self.offset + size]
        self.offset += size
        return out

    def u16(self, what: str) -> int:
        return int.from_bytes(self.fixed(2, what), "big")

    def text(self, what: str) -> str:
        start = self.offset
        raw = self.fixed(self.u16(f"{what} length"), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LeafError(
                f"{what} at offset {start + 2 + exc.start} is not valid UTF-8"
            ) from None

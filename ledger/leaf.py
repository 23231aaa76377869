"""The ledger's leaf data: what one log entry commits to, and its canonical binary encoding.

One leaf per stored event. It commits to the *hash* of the stored event bytes rather than the
bytes, so proofs stay valid after personal data is crypto-shredded. It also says who is
accountable for the event, so that an auditor holding only public keys can check that every
event was authorised:

* ``NODE`` — the node made the event itself (its genesis, later its own supervision acts); the
  node's checkpoint signature is the only signature.
* ``HALL_COMMAND`` / ``ADMIN_COMMAND`` — the event records a command a hall or an admin signed:
  the leaf carries the signer, its key id, the signature and the exact signed bytes, so the
  signature can be checked from the leaf alone.
* ``CAUSED`` — the event was produced by the command recorded at leaf ``cause`` (an earlier
  index); the auditor checks that this command really asks for this event.
* ``PEER_COMMAND`` — the event records a hall's command that another node's log holds, received
  in a signed envelope: the leaf carries that hall's signature and signed bytes (the signer is
  the hall qualified by its region, ``hall@region``), so the signature is checkable here; the
  stored event carries the other log's leaf, its inclusion proof and checkpoint.
* ``PEER_ACK`` — the event records another node's signed acknowledgement of an envelope: the
  leaf carries that node's origin as signer, its log key id, its signature and the signed bytes.

Encoding v2 (all integers big-endian, all strings UTF-8, ``str16``/``bytes16`` prefixed by a
uint16 length)::

    uint8    format version (2)
    str16    origin                 log origin, non-empty
    uint64   index                  position of the leaf in the log
    16 B     aggregate id           UUID, RFC 4122 byte order
    uint64   version                aggregate version of the event
    str16    topic                  event topic, non-empty
    32 B     event hash             SHA-256 of the stored event bytes
    uint8    authority              0 NODE, 1 HALL_COMMAND, 2 ADMIN_COMMAND, 3 CAUSED,
                                    4 PEER_COMMAND, 5 PEER_ACK
    then, for the signed authorities (1, 2, 4, 5):
      str16    signer               hall id or admin name, non-empty
      str16    key id               the signer's key id, non-empty
      bytes16  signature            non-empty
      bytes16  command              the signed bytes, non-empty
    or, for CAUSED:
      uint64   cause                index of the command's leaf, below this leaf's index

Every field has exactly one encoding, so equal leaves encode to equal bytes and decoding rejects
anything else (unknown version or authority, truncation, trailing bytes, invalid UTF-8). The whole
encoding is at most 65535 bytes so it fits a C2SP tlog-tiles entry bundle.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from ledger.errors import LeafError
from ledger.merkle import leaf_hash

LEAF_FORMAT_VERSION = 2
MAX_LEAF_SIZE = 0xFFFF
"""Largest encoded leaf; tile entry bundles prefix each entry with a uint16 length."""

_U16 = 0xFFFF
_U64 = (1 << 64) - 1


class Authority(enum.IntEnum):
    """Who is accountable for a leaf's event (see the module docstring)."""

    NODE = 0
    HALL_COMMAND = 1
    ADMIN_COMMAND = 2
    CAUSED = 3
    PEER_COMMAND = 4
    PEER_ACK = 5

    @property
    def is_command(self) -> bool:
        """Whether the leaf carries a signed command whose events follow it (CAUSED by it)."""
        return self in (Authority.HALL_COMMAND, Authority.ADMIN_COMMAND, Authority.PEER_COMMAND)

    @property
    def is_signed(self) -> bool:
        """Whether the leaf carries a signer, key id, signature and signed bytes."""
        return self.is_command or self is Authority.PEER_ACK


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


def _blob(value: object, what: str, *, allow_empty: bool) -> bytes:
    if not isinstance(value, bytes):
        raise LeafError(f"{what} must be bytes, got {type(value).__name__}")
    if not value and not allow_empty:
        raise LeafError(f"{what} is empty")
    if len(value) > _U16:
        raise LeafError(f"{what} is {len(value)} bytes, more than {_U16}")
    return value


@dataclass(frozen=True)
class Leaf:
    """The data one ledger leaf commits to (see the module docstring for the encoding)."""

    origin: str
    index: int
    aggregate_id: uuid.UUID
    version: int
    topic: str
    event_hash: bytes
    authority: Authority = Authority.NODE
    signer: str = ""
    key_id: str = ""
    signature: bytes = b""
    command: bytes = b""
    cause: int | None = None

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
        try:
            authority = Authority(self.authority)
        except ValueError:
            raise LeafError(f"authority {self.authority!r} is not one of 0-5") from None
        object.__setattr__(self, "authority", authority)
        signed = authority.is_signed
        # What is present must be exactly what the authority says: a command leaf carries the
        # whole signed command, a caused leaf its cause, a node leaf nothing else.
        _utf8(self.signer, "signer", allow_empty=not signed)
        _utf8(self.key_id, "key id", allow_empty=not signed)
        _blob(self.signature, "signature", allow_empty=not signed)
        _blob(self.command, "command", allow_empty=not signed)
        if not signed and (self.signer or self.key_id or self.signature or self.command):
            raise LeafError(f"a {authority.name} leaf carries no signer, key, signature or command")
        if authority is Authority.CAUSED:
            if self.cause is None:
                raise LeafError("a CAUSED leaf names the index of its command's leaf")
            _check_uint(self.cause, _U64, "cause")
            if self.cause >= self.index:
                raise LeafError(f"cause {self.cause} must be below the leaf's index {self.index}")
        elif self.cause is not None:
            raise LeafError(f"a {authority.name} leaf has no cause")
        encoded = self._build()
        if len(encoded) > MAX_LEAF_SIZE:
            raise LeafError(f"encoded leaf is longer than {MAX_LEAF_SIZE} bytes")
        # Kept beside the fields (not one of them, so equality is unchanged): a leaf is encoded
        # for its hash and again for storage, and the integrator makes thousands a second.
        object.__setattr__(self, "_encoded", encoded)

    @property
    def is_command(self) -> bool:
        """Whether this leaf records a signed command."""
        return self.authority.is_command

    def encode(self) -> bytes:
        """Return the canonical encoding."""
        encoded: bytes = self.__dict__["_encoded"]
        return encoded

    def _build(self) -> bytes:
        origin = self.origin.encode("utf-8")
        topic = self.topic.encode("utf-8")
        parts = [
            bytes([LEAF_FORMAT_VERSION]),
            len(origin).to_bytes(2, "big"),
            origin,
            self.index.to_bytes(8, "big"),
            self.aggregate_id.bytes,
            self.version.to_bytes(8, "big"),
            len(topic).to_bytes(2, "big"),
            topic,
            self.event_hash,
            bytes([self.authority]),
        ]
        if self.authority.is_signed:
            for field in (self.signer.encode("utf-8"), self.key_id.encode("utf-8")):
                parts += [len(field).to_bytes(2, "big"), field]
            for blob in (self.signature, self.command):
                parts += [len(blob).to_bytes(2, "big"), blob]
        elif self.authority is Authority.CAUSED:
            assert self.cause is not None  # checked in __post_init__
            parts.append(self.cause.to_bytes(8, "big"))
        return b"".join(parts)

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
        code = reader.fixed(1, "authority")[0]
        try:
            authority = Authority(code)
        except ValueError:
            raise LeafError(f"authority {code} at offset {reader.offset - 1} is unknown") from None
        signer = key_id = ""
        signature = command = b""
        cause: int | None = None
        if authority.is_signed:
            signer = reader.text("signer")
            key_id = reader.text("key id")
            signature = reader.fixed(reader.u16("signature length"), "signature")
            command = reader.fixed(reader.u16("command length"), "command")
        elif authority is Authority.CAUSED:
            cause = int.from_bytes(reader.fixed(8, "cause"), "big")
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
            authority=authority,
            signer=signer,
            key_id=key_id,
            signature=signature,
            command=command,
            cause=cause,
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

"""Ed25519 witness cosignatures (c2sp.org/tlog-cosignature, ``cosignature/v1``).

A cosignature is a note signature line on a checkpoint, by a witness key of signature type
``0x04``. Its signature bytes are ``uint64 timestamp (big-endian) || Ed25519 signature`` over::

    cosignature/v1
    time <timestamp in decimal>
    <the whole checkpoint note text>

and it states that, as of that time, this is the largest consistent tree head the witness has seen
for the origin. Key ids are ``SHA-256(name || 0x0A || 0x04 || public key)[:4]``; verifier keys use
the same ``<name>+<hex id>+<base64(0x04 || key)>`` form as plain note keys.

The message format is written by hand (no maintained Python library implements it); Ed25519 is
the ``cryptography`` package's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.checkpoint import Checkpoint
from ledger.errors import CheckpointError, CosignatureError, KeyFormatError, NoteError
from ledger.note import (
    Note,
    NoteSignature,
    NoteVerifier,
    Verifier,
    b64encode,
    check_key_name,
    compute_key_id,
    format_verifier_key,
    parse_note,
    parse_signer_key,
    sign_note,
)

KEY_TYPE_COSIGNATURE_V1 = 0x04
"""Signature type byte of timestamped Ed25519 cosignatures."""

COSIGNATURE_HEADER = "cosignature/v1"
MAX_TIMESTAMP = (1 << 63) - 1
"""The spec caps timestamps at 2**63 - 1 so they fit signed 64-bit integers everywhere."""

_SIGNATURE_SIZE = 8 + 64


def _now() -> int:
    return int(time.time())


def _check_timestamp(timestamp: object) -> int:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise CosignatureError(f"timestamp must be an integer, got {type(timestamp).__name__}")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise CosignatureError(f"timestamp {timestamp} is outside 0..2**63-1")
    return timestamp


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    """Return the exact bytes a cosignature/v1 signs for ``checkpoint_text`` at ``timestamp``.

    The text must be a valid checkpoint body: witnesses only ever vouch for checkpoints.
    """
    _check_timestamp(timestamp)
    try:
        Checkpoint.parse(checkpoint_text)
    except CheckpointError as exc:
        raise CosignatureError(f"witnesses only cosign checkpoints: {exc}") from None
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n{checkpoint_text}".encode()


def cosignature_timestamp(signature: NoteSignature | bytes) -> int:
    """Return the timestamp embedded in a cosignature (signature bytes without the key id)."""
    raw = signature.signature if isinstance(signature, NoteSignature) else bytes(signature)
    if len(raw) != _SIGNATURE_SIZE:
        raise CosignatureError(
            f"cosignature is {len(raw)} bytes, expected {_SIGNATURE_SIZE} "
            "(8-byte timestamp and 64-byte Ed25519 signature)"
        )
    timestamp = int.from_bytes(raw[:8], "big")
    if timestamp > MAX_TIMESTAMP:
        raise CosignatureError(f"cosignature timestamp {timestamp} exceeds 2**63-1")
    return timestamp


class CosignatureVerifier(Verifier):
    """Verifies cosignature/v1 lines by one witness key (implements ``NoteVerifier``).

    A :class:`~ledger.note.Verifier` in everything (name, key id, key string, parsing) but its
    key type 0x04 and what it verifies: a timestamped cosignature/v1 message, not the note text.
    """

    key_type = KEY_TYPE_COSIGNATURE_V1

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is a valid cosignature/v1 over checkpoint ``message``."""
        if len(signature) != _SIGNATURE_SIZE:
            return False
        timestamp = int.from_bytes(signature[:8], "big")
        try:
            signed = cosignature_message(message.decode("utf-8"), timestamp)
        except (CosignatureError, UnicodeDecodeError):
            return False
        try:
            self._public.verify(signature[8:], signed)
        except InvalidSignature:
            return False
        return True


class Cosigner:
    """Produces cosignature/v1 signatures with a witness key (implements ``NoteSigner``).

    ``clock`` returns the current POSIX time in seconds; inject one in tests for reproducible
    signatures.
    """

    key_type = KEY_TYPE_COSIGNATURE_V1

    def __init__(
        self,
        name: str,
        private_key: Ed25519PrivateKey,
        clock: Callable[[], int] = _now,
    ) -> None:
        """Create a cosigner for witness ``name``."""
        check_key_name(name)
        self._name = name
        self._private = private_key
        self._public_bytes = private_key.public_key().public_bytes_raw()
        self._key_id = compute_key_id(name, self.key_type, self._public_bytes)
        self._clock = clock

    @classmethod
    def generate(cls, name: str, clock: Callable[[], int] = _now) -> Cosigner:
        """Create a cosigner with a fresh random key."""
        return cls(name, Ed25519PrivateKey.generate(), clock)

    @classmethod
    def from_seed(cls, name: str, seed: bytes, clock: Callable[[], int] = _now) -> Cosigner:
        """Create a cosigner from a 32-byte Ed25519 seed."""
        if len(seed) != 32:
            raise KeyFormatError(f"witness {name!r}: Ed25519 seed is {len(seed)} bytes")
        return cls(name, Ed25519PrivateKey.from_private_bytes(bytes(seed)), clock)

    @classmethod
    def from_key(cls, skey: str, clock: Callable[[], int] = _now) -> Cosigner:
        """Parse a signer key ``PRIVATE+KEY+<name>+<hex id>+<base64(0x04 || seed)>``."""
        parsed = parse_signer_key(skey)
        where = f"signer key for {parsed.name!r}"
        if parsed.key_type != cls.key_type:
            raise KeyFormatError(
                f"{where} has key type 0x{parsed.key_type:02x}, expected 0x04 (cosignature/v1)"
            )
        cosigner = cls.from_seed(parsed.name, parsed.private_key, clock)
        if cosigner.key_id != parsed.key_id:
            raise KeyFormatError(
                f"{where}: key id {parsed.key_id:08x} does not match the key "
                f"(computed {cosigner.key_id:08x})"
            )
        return cosigner

    @property
    def name(self) -> str:
        """The witness name."""
        return self._name

    @property
    def key_id(self) -> int:
        """The 32-bit key id (computed with type 0x04)."""
        return self._key_id

    def sign(self, message: bytes) -> bytes:
        """Cosign checkpoint text ``message`` at the clock's current time."""
        return self.sign_at(message, self._clock())

    def sign_at(self, message: bytes, timestamp: int) -> bytes:
        """Cosign checkpoint text ``message`` with an explicit timestamp."""
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            raise CosignatureError("checkpoint text is not valid UTF-8") from None
        signed = cosignature_message(text, timestamp)
        return timestamp.to_bytes(8, "big") + self._private.sign(signed)

    def key_string(self) -> str:
        """Return the secret signer key string. Keep it secret."""
        seed = self._private.private_bytes_raw()
        return (
            f"PRIVATE+KEY+{self._name}+{self._key_id:08x}+"
            f"{b64encode(bytes([self.key_type]) + seed)}"
        )

    def verifier_key(self) -> str:
        """Return the public witness verifier key string."""
        return format_verifier_key(self._name, self.key_type, self._public_bytes)

    def verifier(self) -> CosignatureVerifier:
        """Return the matching :class:`CosignatureVerifier`."""
        return CosignatureVerifier(self._name, self._public_bytes)

    def signature_line(self, checkpoint_text: str, timestamp: int | None = None) -> str:
        """Return one note signature line cosigning ``checkpoint_text``."""
        ts = self._clock() if timestamp is None else timestamp
        sig = self.sign_at(checkpoint_text.encode("utf-8"), ts)
        return NoteSignature(self._name, self._key_id, sig).line()

    def __repr__(self) -> str:
        return f"Cosigner({self.verifier_key()!r})"


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: which witness, which key, and when it vouched for the checkpoint."""

    name: str
    key_id: int
    timestamp: int


def cosign(note: bytes, cosigner: Cosigner) -> bytes:
    """Return ``note`` (a signed checkpoint) with ``cosigner``'s cosignature added or replaced.

    The note's existing signatures are not verified here; a witness must verify the log's
    signature and consistency first (see :class:`ledger.witness.Witness`).
    """
    return sign_note(parse_note(note), cosigner)


def attach_cosignatures(note: bytes, signature_lines: bytes) -> bytes:
    """Append signature lines (for example a witness's response) to a signed note.

    Both parts are checked for structure; duplicate lines are dropped.
    """
    base = parse_note(note)
    if not signature_lines.endswith(b"\n"):
        raise NoteError("signature lines must end with a newline")
    extra = parse_note(b"x\n\n" + bytes(signature_lines))
    merged = list(base.unverified)
    for sig in extra.unverified:
        if sig not in merged:
            merged.append(sig)
    return Note(base.text, (), tuple(merged)).to_bytes()


def verified_cosignatures(note: Note, witnesses: Iterable[NoteVerifier]) -> list[Cosignature]:
    """Return the cosignatures among ``note``'s *verified* signatures that belong to witnesses."""
    keys = {(w.name, w.key_id) for w in witnesses}
    result = []
    for sig in note.signatures:
        if (sig.name, sig.key_id) in keys:
            result.append(Cosignature(sig.name, sig.key_id, cosignature_timestamp(sig)))
    return result

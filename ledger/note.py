"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys.

A note is UTF-8 text ending in a newline, a blank line, then one or more signature lines
``— <key name> <base64(4-byte key id || signature)>``. Keys are published as *verifier keys*
``<name>+<hex key id>+<base64(type || public key)>`` and kept secret as *signer keys*
``PRIVATE+KEY+<name>+<hex key id>+<base64(type || private key)>``, the encodings of
golang.org/x/mod/sumdb/note, so keys and notes interoperate with the Go ecosystem.

The text format is written by hand because no maintained Python library implements C2SP notes;
all cryptography (Ed25519 signing and verification) comes from the ``cryptography`` package.

Opening a note ignores signatures from unknown keys (so key rotation and witness cosignatures
work), rejects the note if a known key's signature fails, and rejects it if no known key signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import (
    InvalidSignatureError,
    KeyFormatError,
    NoteError,
    UnverifiedNoteError,
)

KEY_TYPE_ED25519 = 0x01
"""Signature type byte of plain Ed25519 note signatures (c2sp.org/signed-note)."""

MAX_NOTE_SIZE = 1 << 20
"""Largest note accepted, in bytes. Checkpoints are a few hundred bytes; this only bounds work."""

MAX_SIGNATURES = 100
"""Most signature lines accepted in one note (the spec requires at least 16; Go allows 100)."""

EM_DASH = "\u2014"
_SIG_PREFIX = EM_DASH + " "
_PRIVATE_PREFIX = "PRIVATE+KEY+"
# C2SP: notes MUST NOT contain ASCII control characters other than newline.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")


@runtime_checkable
class NoteSigner(Protocol):
    """Anything that can add one signature line to a note."""

    @property
    def name(self) -> str:
        """Key name written on the signature line."""
        ...

    @property
    def key_id(self) -> int:
        """32-bit key id written before the signature bytes."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Return the signature bytes (without key id) over ``message``, the note text."""
        ...


@runtime_checkable
class NoteVerifier(Protocol):
    """Anything that can check one signature line of a note."""

    @property
    def name(self) -> str:
        """Key name this verifier answers to."""
        ...

    @property
    def key_id(self) -> int:
        """32-bit key id this verifier answers to."""
        ...

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` (without key id) is valid over ``message``; never raise."""
        ...


def compute_key_id(name: str, key_type: int, public_key: bytes) -> int:
    """Return ``SHA-256(name || 0x0A || type || public key)[:4]`` as a big-endian integer."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([key_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def check_key_name(name: object) -> str:
    """Return ``name`` if it is a valid key name, else raise :class:`NoteError` saying why.

    Key names must be non-empty and contain no Unicode space, no plus sign and (because they
    appear inside notes) no control character.
    """
    if not isinstance(name, str):
        raise NoteError(f"key name must be a string, got {type(name).__name__}")
    if not name:
        raise NoteError("key name is empty")
    for i, ch in enumerate(name):
        if ch == "+":
            raise NoteError(f"key name {name!r} contains '+' at position {i}")
        if ch.isspace():
            raise NoteError(f"key name {name!r} contains a space (U+{ord(ch):04X}) at position {i}")
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise NoteError(f"key name {name!r} contains control character U+{ord(ch):04X}")
    return name


def b64decode_strict(text: str, what: str) -> bytes:
    """Decode standard padded base64, rejecting anything but its canonical encoding.

    Canonical-only decoding keeps encodings unique, so two byte-different notes or receipts never
    carry the same data and comparisons of stored text are meaningful.
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NoteError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def b64encode(data: bytes) -> str:
    """Encode ``data`` as standard padded base64 text."""
    return base64.b64encode(data).decode("ascii")


class VerifierKey(NamedTuple):
    """The parts of a verifier key string ``<name>+<hex id>+<base64(type || public key)>``."""

    name: str
    key_id: int
    key_type: int
    public_key: bytes


def _parse_key_id(text: str, where: str) -> int:
    if len(text) != 8 or any(c not in "0123456789abcdef" for c in text):
        raise KeyFormatError(f"{where}: key id {text!r} must be exactly 8 lowercase hex digits")
    return int(text, 16)


def parse_verifier_key(vkey: str) -> VerifierKey:
    """Split and check a verifier key string; the key id must match the name and key."""
    if not isinstance(vkey, str):
        raise KeyFormatError(f"verifier key must be a string, got {type(vkey).__name__}")
    name, sep1, rest = vkey.partition("+")
    id_text, sep2, key64 = rest.partition("+")
    if not sep1 or not sep2:
        raise KeyFormatError(
            f"verifier key {vkey!r} must have the form <name>+<hex key id>+<base64 key>"
        )
    try:
        check_key_name(name)
    except NoteError as exc:
        raise KeyFormatError(f"verifier key {vkey!r}: {exc}") from None
    key_id = _parse_key_id(id_text, f"verifier key {vkey!r}")
    try:
        raw = b64decode_strict(key64, "key data")
    except NoteError as exc:
        raise KeyFormatError(f"verifier key {vkey!r}: {exc}") from None
    if len(raw) < 2:
        raise KeyFormatError(f"verifier key {vkey!r}: key data is {len(raw)} bytes, too short")
    expected = compute_key_id(name, raw[0], raw[1:])
    if expected != key_id:
        raise KeyFormatError(
            f"verifier key {vkey!r}: key id {key_id:08x} does not match the name and key "
            f"(computed {expected:08x})"
        )
    return VerifierKey(name, key_id, raw[0], raw[1:])


def format_verifier_key(name: str, key_type: int, public_key: bytes) -> str:
    """Return the verifier key string for ``name`` and a typed public key."""
    check_key_name(name)
    kid = compute_key_id(name, key_type, public_key)
    return f"{name}+{kid:08x}+{b64encode(bytes([key_type]) + public_key)}"


class SignerKey(NamedTuple):
    """The parts of a signer key ``PRIVATE+KEY+<name>+<hex id>+<base64(type || private key)>``.

    The key id is not checked here: that needs the public key, which only the algorithm can derive.
    """

    name: str
    key_id: int
    key_type: int
    private_key: bytes


def parse_signer_key(skey: str) -> SignerKey:
    """Split a signer key string. Error messages never echo the secret key material."""
    if not isinstance(skey, str):
        raise KeyFormatError(f"signer key must be a string, got {type(skey).__name__}")
    if not skey.startswith(_PRIVATE_PREFIX):
        raise KeyFormatError("signer key must start with 'PRIVATE+KEY+'")
    name, sep1, rest = skey[len(_PRIVATE_PREFIX) :].partition("+")
    id_text, sep2, key64 = rest.partition("+")
    if not sep1 or not sep2:
        raise KeyFormatError(
            "signer key must have the form PRIVATE+KEY+<name>+<hex key id>+<base64 key>"
        )
    try:
        check_key_name(name)
        raw = b64decode_strict(key64, "signer key data")
    except NoteError as exc:
        raise KeyFormatError(f"signer key for {name!r}: {exc}") from None
    key_id = _parse_key_id(id_text, f"signer key for {name!r}")
    if len(raw) < 2:
        raise KeyFormatError(f"signer key for {name!r}: key data is {len(raw)} bytes, too short")
    return SignerKey(name, key_id, raw[0], raw[1:])


def _ed25519_public_from_bytes(raw: bytes, where: str) -> Ed25519PublicKey:
    if len(raw) != 32:
        raise KeyFormatError(f"{where}: Ed25519 public key is {len(raw)} bytes, expected 32")
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise KeyFormatError(f"{where}: invalid Ed25519 public key: {exc}") from None


def _ed25519_private_from_seed(seed: bytes, where: str) -> Ed25519PrivateKey:
    if len(seed) != 32:
        raise KeyFormatError(f"{where}: Ed25519 private key is {len(seed)} bytes, expected 32")
    return Ed25519PrivateKey.from_private_bytes(seed)


class Verifier:
    """Verifies plain Ed25519 note signatures (signature type 0x01) by one named key."""

    key_type = KEY_TYPE_ED25519

    def __init__(self, name: str, public_key: bytes) -> None:
        """Create a verifier for ``name`` and a raw 32-byte Ed25519 public key."""
        check_key_name(name)
        self._name = name
        self._public_bytes = bytes(public_key)
        self._public = _ed25519_public_from_bytes(self._public_bytes, f"key {name!r}")
        self._key_id = compute_key_id(name, self.key_type, self._public_bytes)

    @classmethod
    def from_key(cls, vkey: str) -> Verifier:
        """Parse a verifier key string ``<name>+<hex id>+<base64(0x01 || key)>``."""
        parsed = parse_verifier_key(vkey)
        if parsed.key_type != cls.key_type:
            raise KeyFormatError(
                f"verifier key {vkey!r} has key type 0x{parsed.key_type:02x}, "
                f"expected 0x{cls.key_type:02x}"
            )
        return cls(parsed.name, _check_len(parsed.public_key, 32, f"verifier key {vkey!r}"))

    @property
    def name(self) -> str:
        """The key name."""
        return self._name

    @property
    def key_id(self) -> int:
        """The 32-bit key id."""
        return self._key_id

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self._public_bytes

    def key_string(self) -> str:
        """Return the verifier key string to publish."""
        return format_verifier_key(self._name, self.key_type, self._public_bytes)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is a valid Ed25519 signature of ``message``."""
        if len(signature) != 64:
            return False
        try:
            self._public.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Verifier):
            return NotImplemented
        return (self.key_type, self._name, self._public_bytes) == (
            other.key_type,
            other._name,
            other._public_bytes,
        )

    def __hash__(self) -> int:
        return hash((self.key_type, self._name, self._public_bytes))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key_string()!r})"


def _check_len(raw: bytes, size: int, where: str) -> bytes:
    if len(raw) != size:
        raise KeyFormatError(f"{where}: key is {len(raw)} bytes, expected {size}")
    return raw


class Signer:
    """Signs notes with an Ed25519 key (signature type 0x01)."""

    key_type = KEY_TYPE_ED25519

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        """Create a signer for ``name`` from a ``cryptography`` Ed25519 private key."""
        check_key_name(name)
        self._name = name
        self._private = private_key
        self._public_bytes = private_key.public_key().public_bytes_raw()
        self._key_id = compute_key_id(name, self.key_type, self._public_bytes)

    @classmethod
    def generate(cls, name: str) -> Signer:
        """Create a signer with a fresh random key."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Signer:
        """Create a signer from a 32-byte Ed25519 seed (RFC 8032 private key)."""
        return cls(name, _ed25519_private_from_seed(bytes(seed), f"key {name!r}"))

    @classmethod
    def from_key(cls, skey: str) -> Signer:
        """Parse a signer key ``PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>``."""
        parsed = parse_signer_key(skey)
        where = f"signer key for {parsed.name!r}"
        if parsed.key_type != cls.key_type:
            raise KeyFormatError(
                f"{where} has key type 0x{parsed.key_type:02x}, expected 0x{cls.key_type:02x}"
            )
        signer = cls(parsed.name, _ed25519_private_from_seed(parsed.private_key, where))
        if signer.key_id != parsed.key_id:
            raise KeyFormatError(
                f"{where}: key id {parsed.key_id:08x} does not match the key "
                f"(computed {signer.key_id:08x})"
            )
        return signer

    @property
    def name(self) -> str:
        """The key name."""
        return self._name

    @property
    def key_id(self) -> int:
        """The 32-bit key id."""
        return self._key_id

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self._public_bytes

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message``."""
        return self._private.sign(message)

    def key_string(self) -> str:
        """Return the secret signer key string. Keep it secret."""
        seed = self._private.private_bytes_raw()
        body = b64encode(bytes([self.key_type]) + seed)
        return f"{_PRIVATE_PREFIX}{self._name}+{self._key_id:08x}+{body}"

    def verifier_key(self) -> str:
        """Return the public verifier key string."""
        return format_verifier_key(self._name, self.key_type, self._public_bytes)

    def verifier(self) -> Verifier:
        """Return the matching :class:`Verifier`."""
        return Verifier(self._name, self._public_bytes)

    def __repr__(self) -> str:
        # Never show key material; the verifier key is public and identifies the signer.
        return f"{type(self).__name__}({self.verifier_key()!r})"


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, key id and the signature bytes (without the key id)."""

    name: str
    key_id: int
    signature: bytes

    @property
    def key(self) -> str:
        """``name+hexid``, the way keys are named in messages and in Go's tooling."""
        return f"{self.name}+{self.key_id:08x}"

    def line(self) -> str:
        """Return the signature line, including its final newline."""
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{_SIG_PREFIX}{self.name} {b64encode(blob)}\n"


@dataclass(frozen=True)
class Note:
    """A parsed note: its text and its signatures.

    After :func:`open_note`, ``signatures`` holds the verified signatures and ``unverified`` those
    from unknown keys. After :func:`parse_note`, everything is in ``unverified`` and the text
    MUST NOT be trusted.
    """

    text: str
    signatures: tuple[NoteSignature, ...] = ()
    unverified: tuple[NoteSignature, ...] = field(default=())

    def to_bytes(self) -> bytes:
        """Serialise: text, blank line, verified then unverified signature lines."""
        lines = "".join(s.line() for s in (*self.signatures, *self.unverified))
        return (self.text + "\n" + lines).encode("utf-8")


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise NoteError(f"note text must be a string, got {type(text).__name__}")
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    _check_characters(text, "note text")
    if len(text.encode("utf-8")) > MAX_NOTE_SIZE:
        raise NoteError(f"note text is longer than {MAX_NOTE_SIZE} bytes")
    return text


def _check_characters(text: str, what: str) -> None:
    bad = _CONTROL.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        raise NoteError(
            f"{what} contains control character U+{ord(bad.group()):04X} on line {line}"
        )


def parse_note(data: bytes) -> Note:
    """Parse a note's structure without verifying anything; every signature is ``unverified``.

    Use it to inspect a note (for example to read a checkpoint before choosing keys). The text is
    untrusted until :func:`open_note` verifies a signature.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise NoteError(f"note must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_NOTE_SIZE:
        raise NoteError(f"note is {len(data)} bytes, larger than the {MAX_NOTE_SIZE}-byte limit")
    try:
        msg = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError(f"note is not valid UTF-8 (byte offset {exc.start})") from None
    _check_characters(msg, "note")
    split = msg.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line separating the text from the signatures")
    text, block = msg[: split + 1], msg[split + 2 :]
    if not block:
        raise NoteError("note has no signature lines after the blank line")
    if not block.endswith("\n"):
        raise NoteError("note's last signature line does not end with a newline")
    first_line = text.count("\n") + 2  # 1-based number of the first signature line
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has {len(lines)} signature lines, more than {MAX_SIGNATURES}")
    sigs = tuple(_parse_signature_line(line, first_line + i) for i, line in enumerate(lines))
    return Note(text=text, signatures=(), unverified=sigs)


def _parse_signature_line(line: str, number: int) -> NoteSignature:
    where = f"note line {number}"
    if not line.startswith(_SIG_PREFIX):
        raise NoteError(
            f"{where} is not a signature line: it must start with an em dash (U+2014) and a space"
        )
    name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    if not sep or not b64:
        raise NoteError(f"{where}: expected '— <key name> <base64 signature>'")
    try:
        check_key_name(name)
        blob = b64decode_strict(b64, "signature")
    except NoteError as exc:
        raise NoteError(f"{where}: {exc}") from None
    if len(blob) < 5:
        raise NoteError(
            f"{where}: signature is {len(blob)} bytes; it needs a 4-byte key id and at least "
            "one signature byte"
        )
    return NoteSignature(name, int.from_bytes(blob[:4], "big"), blob[4:])


def open_note(data: bytes, verifiers: Iterable[NoteVerifier]) -> Note:
    """Parse ``data`` and verify its signatures against the known ``verifiers``.

    * Signatures whose (name, key id) matches no verifier are kept in ``Note.unverified``.
    * A signature by a known key that fails verification rejects the whole note
      (:class:`InvalidSignatureError`).
    * A note with no verified signature is rejected (:class:`UnverifiedNoteError`).
    * Two different verifiers with the same name and key id make that key ambiguous
      (:class:`NoteError`) as soon as a signature uses it.
    """
    note = parse_note(data)
    known: dict[tuple[str, int], list[NoteVerifier]] = {}
    for v in verifiers:
        group = known.setdefault((v.name, v.key_id), [])
        if not any(v is w or v == w for w in group):
            group.append(v)
    message = note.text.encode("utf-8")
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    seen: set[tuple[str, int]] = set()
    for sig in note.unverified:
        matches = known.get((sig.name, sig.key_id))
        if matches is None:
            if sig not in unverified:  # identical unknown lines are dropped, as Go does
                unverified.append(sig)
            continue
        if len(matches) > 1:
            raise NoteError(f"ambiguous key {sig.key}: {len(matches)} different verifiers match it")
        if (sig.name, sig.key_id) in seen:
            continue  # a repeated signature by a key that already verified adds nothing
        if not matches[0].verify(message, sig.signature):
            raise InvalidSignatureError(
                f"signature by known key {sig.key} does not verify", sig.name, sig.key_id
            )
        seen.add((sig.name, sig.key_id))
        verified.append(sig)
    if not verified:
        present = ", ".join(s.key for s in unverified) or "none"
        expected = ", ".join(f"{n}+{k:08x}" for n, k in known) or "none"
        raise UnverifiedNoteError(
            f"note has no valid signature from a known key (signed by: {present}; "
            f"known keys: {expected})",
            tuple(s.key for s in unverified),
        )
    return Note(note.text, tuple(verified), tuple(unverified))


def sign_note(note: str | Note, signers: NoteSigner | Iterable[NoteSigner]) -> bytes:
    """Sign a note text (or re-sign a parsed :class:`Note`, keeping its other signatures).

    Existing signatures by the same key as a new signer are replaced, so re-signing is
    idempotent. Existing lines come first, new ones after, as in golang.org/x/mod/sumdb/note.
    """
    if isinstance(note, Note):
        text, existing = note.text, (*note.signatures, *note.unverified)
    else:
        text, existing = note, ()
    _check_text(text)
    signer_list: list[NoteSigner] = [signers] if isinstance(signers, NoteSigner) else list(signers)
    if not signer_list and not existing:
        raise NoteError("a note needs at least one signer")
    message = text.encode("utf-8")
    new: list[NoteSignature] = []
    for s in signer_list:
        check_key_name(s.name)
        key_id = s.key_id
        if not 0 <= key_id <= 0xFFFFFFFF:
            raise NoteError(f"signer {s.name!r} has key id {key_id} outside the uint32 range")
        new.append(NoteSignature(s.name, key_id, bytes(s.sign(message))))
    replaced = {(s.name, s.key_id) for s in new}
    kept = [sig for sig in existing if (sig.name, sig.key_id) not in replaced]
    for sig in kept:
        check_key_name(sig.name)
    all_sigs = [*kept, *new]
    if len(all_sigs) > MAX_SIGNATURES:
        raise NoteError(f"note would have {len(all_sigs)} signatures, more than {MAX_SIGNATURES}")
    out = (text + "\n" + "".join(sig.line() for sig in all_sigs)).encode("utf-8")
    if len(out) > MAX_NOTE_SIZE:
        raise NoteError(f"signed note would be {len(out)} bytes, more than {MAX_NOTE_SIZE}")
    return out

"""C2SP transparency log checkpoints (c2sp.org/tlog-checkpoint) inside signed notes.

A checkpoint is the note text::

    <origin>
    <tree size in decimal, no leading zeros>
    <base64 root hash>
    [extension lines...]

signed by the log's key (and, when witnessed, cosigned by witnesses). Parsing is strict: an origin
that is empty, a size with a sign, leading zero or non-ASCII digit, a root that is not canonical
base64 of exactly 32 bytes, or an empty extension line is rejected with the line it is on. Written
by hand because no maintained Python library implements C2SP checkpoints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ledger.errors import CheckpointError, NoteError, UnverifiedNoteError
from ledger.merkle import EMPTY_ROOT, HASH_SIZE, MAX_TREE_SIZE
from ledger.note import (
    Note,
    NoteSigner,
    NoteVerifier,
    b64decode_strict,
    b64encode,
    open_note,
    parse_note,
    sign_note,
)

_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _check_line(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise CheckpointError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise CheckpointError(f"{what} is empty")
    bad = _CONTROL.search(value)
    if bad is not None:
        raise CheckpointError(
            f"{what} contains control character U+{ord(bad.group()):04X} at position {bad.start()}"
        )
    return value


@dataclass(frozen=True)
class Checkpoint:
    """A log's signed tree head: origin, tree size and root hash, plus opaque extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Reject values that cannot be formatted into a valid checkpoint."""
        _check_line(self.origin, "checkpoint origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise CheckpointError(f"tree size must be an integer, got {type(self.size).__name__}")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"tree size {self.size} is outside the uint64 range")
        if not isinstance(self.root, bytes):
            raise CheckpointError(f"root hash must be bytes, got {type(self.root).__name__}")
        if len(self.root) != HASH_SIZE:
            raise CheckpointError(f"root hash is {len(self.root)} bytes, expected {HASH_SIZE}")
        if self.size == 0 and self.root != EMPTY_ROOT:
            # RFC 9162 fixes the empty tree's root; any other value is a forged or buggy head.
            raise CheckpointError(
                f"a checkpoint of size 0 must have the empty-tree root {EMPTY_ROOT.hex()}, "
                f"got {self.root.hex()}"
            )
        if not isinstance(self.extensions, tuple):
            raise CheckpointError("extensions must be a tuple of strings")
        for i, ext in enumerate(self.extensions):
            _check_line(ext, f"extension line {i + 4}")

    def format(self) -> str:
        """Return the checkpoint note text (every line newline-terminated)."""
        lines = [self.origin, str(self.size), b64encode(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse checkpoint note text strictly; raise :class:`CheckpointError` naming the line."""
        if not isinstance(text, str):
            raise CheckpointError(f"checkpoint text must be a string, got {type(text).__name__}")
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(
                f"checkpoint has {len(lines)} lines; it needs origin, tree size and root hash"
            )
        origin = _check_line(lines[0], "checkpoint line 1 (origin)")
        size_text = lines[1]
        if not _DECIMAL.fullmatch(size_text):
            raise CheckpointError(
                f"checkpoint line 2 (tree size) {size_text!r} is not a decimal number without "
                "sign or leading zeros"
            )
        size = int(size_text)
        if size > MAX_TREE_SIZE:
            raise CheckpointError(f"checkpoint line 2: tree size {size} exceeds the uint64 range")
        try:
            root = b64decode_strict(lines[2], "checkpoint line 3 (root hash)")
        except NoteError as exc:
            raise CheckpointError(str(exc)) from None
        if len(root) != HASH_SIZE:
            raise CheckpointError(
                f"checkpoint line 3: root hash is {len(root)} bytes, expected {HASH_SIZE}"
            )
        extensions = tuple(lines[3:])
        for i, ext in enumerate(extensions):
            if not ext:
                raise CheckpointError(f"checkpoint line {i + 4} (extension) is empty")
        return cls(origin, size, root, extensions)


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint whose log signature has been verified, with its note and exact bytes."""

    checkpoint: Checkpoint
    note: Note
    raw: bytes


def sign_checkpoint(checkpoint: Checkpoint, signers: NoteSigner | Iterable[NoteSigner]) -> bytes:
    """Return the signed note bytes of ``checkpoint``."""
    return sign_note(checkpoint.format(), signers)


def peek_checkpoint(data: bytes) -> Checkpoint:
    """Parse a signed checkpoint *without verifying any signature*.

    Only for choosing keys or for consistency checks against values that are verified elsewhere;
    never trust the result on its own.
    """
    try:
        note = parse_note(data)
    except NoteError as exc:
        raise CheckpointError(f"checkpoint note is malformed: {exc}") from None
    return Checkpoint.parse(note.text)


def open_checkpoint(
    data: bytes,
    log_verifiers: NoteVerifier | Iterable[NoteVerifier],
    *,
    origin: str | None = None,
    witnesses: Iterable[NoteVerifier] = (),
) -> SignedCheckpoint:
    """Verify a signed checkpoint: a valid log signature is required, then the body is parsed.

    ``witnesses`` are cosignature verifiers whose lines should be checked too (a bad cosignature
    from a known witness rejects the note; unknown ones are ignored). A note signed only by a
    witness and not by the log is rejected. ``origin`` (if given) must match the origin line.
    """
    logs = [log_verifiers] if isinstance(log_verifiers, NoteVerifier) else list(log_verifiers)
    if not logs:
        raise CheckpointError("at least one log verifier is needed to open a checkpoint")
    note = open_note(data, [*logs, *witnesses])
    log_keys = {(v.name, v.key_id) for v in logs}
    if not any((s.name, s.key_id) in log_keys for s in note.signatures):
        signed_by = ", ".join(s.key for s in (*note.signatures, *note.unverified))
        raise UnverifiedNoteError(
            f"checkpoint carries no valid signature from the log key(s) "
            f"{', '.join(f'{n}+{k:08x}' for n, k in sorted(log_keys))} (signed by: {signed_by})",
            tuple(s.key for s in note.unverified),
        )
    checkpoint = Checkpoint.parse(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(
            f"checkpoint origin {checkpoint.origin!r} is not the expected origin {origin!r}"
        )
    return SignedCheckpoint(checkpoint, note, bytes(data))

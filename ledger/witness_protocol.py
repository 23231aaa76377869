"""The C2SP tlog-witness HTTP protocol's bodies (c2sp.org/tlog-witness), without the HTTP.

``POST <prefix>/add-checkpoint`` carries::

    old <size of the checkpoint the witness last cosigned, decimal, "0" if none>
    <base64 consistency proof hash>        (zero to 63 lines)
    <empty line>
    <the signed checkpoint note>

and is answered by

* ``200`` with one or more note signature lines (``— <name> <base64>``, each ending in a
  newline): the witness's cosignatures of the checkpoint;
* ``409`` with ``Content-Type: text/x.tlog.size`` and the size the witness last cosigned, in
  decimal followed by a newline: the client retries with a proof from that size;
* ``400`` (malformed), ``403`` (no valid signature of a key the witness trusts for the origin),
  ``404`` (unknown origin), ``422`` (the proof does not verify, or equal sizes with other roots).

This module formats and parses those bodies strictly, and maps the ledger's witness errors to
the response a witness must give (:func:`handle_add_checkpoint`). It does no I/O, so any
transport (an ASGI app, a test client) can use it. Written by hand: no maintained Python library
implements tlog-witness (its reference implementations are in Go).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.checkpoint import peek_checkpoint
from ledger.errors import (
    ConsistencyError,
    LedgerError,
    NoteError,
    RollbackError,
    WitnessConflictError,
    WitnessError,
)
from ledger.merkle import HASH_SIZE
from ledger.note import EM_DASH, NoteSignature, parse_note
from ledger.witness import MAX_PROOF_HASHES, Witness

ADD_CHECKPOINT_PATH = "/add-checkpoint"
"""The path of the add-checkpoint call below the witness's submission prefix."""

SIZE_CONTENT_TYPE = "text/x.tlog.size"
"""Content type of a 409 response: the witness's latest cosigned size and a newline."""

COSIGNATURE_CONTENT_TYPE = "text/plain; charset=utf-8"
"""Content type of a 200 response (the spec names none; signature lines are UTF-8 text)."""

ERROR_CONTENT_TYPE = "text/plain; charset=utf-8"

MAX_REQUEST_SIZE = 64 * 1024
"""Largest add-checkpoint body accepted, in bytes.

63 proof lines take 2.8 kB and a checkpoint with a few dozen signatures a few kB more; the
bound only stops a client from making the witness buffer and parse megabytes.
"""

_DECIMAL = re.compile(rb"0|[1-9][0-9]{0,19}")
_OLD_PREFIX = b"old "


class WitnessProtocolError(WitnessError):
    """A tlog-witness body does not follow the protocol (HTTP 400 in a request)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, status)


@dataclass(frozen=True)
class AddCheckpointRequest:
    """One add-checkpoint request: the old size, the consistency proof and the signed note."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: bytes

    def format(self) -> bytes:
        """The request body, byte for byte as the spec lays it out."""
        return format_add_checkpoint(self.old_size, self.proof, self.checkpoint)


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
    """Return the add-checkpoint request body for ``note`` with a proof from ``old_size``."""
    if isinstance(old_size, bool) or not isinstance(old_size, int) or old_size < 0:
        raise WitnessProtocolError(f"old size must be a non-negative integer, got {old_size!r}")
    if len(proof) > MAX_PROOF_HASHES:
        raise WitnessProtocolError(
            f"a consistency proof has at most {MAX_PROOF_HASHES} hashes, got {len(proof)}"
        )
    lines = [b"old %d\n" % old_size]
    for number, hashed in enumerate(proof):
        if len(hashed) != HASH_SIZE:
            raise WitnessProtocolError(
                f"consistency proof hash {number} is {len(hashed)} bytes, expected {HASH_SIZE}"
            )
        lines.append(base64.b64encode(hashed) + b"\n")
    lines.append(b"\n")
    return b"".join(lines) + bytes(note)


def parse_add_checkpoint(body: bytes) -> AddCheckpointRequest:
    """Parse an add-checkpoint request body strictly.

    Raises :class:`WitnessProtocolError` (400) naming the line at fault: a missing or malformed
    ``old`` line, a proof line that is not canonical base64 of 32 bytes, more than 63 proof
    lines, no empty line, or a body larger than :data:`MAX_REQUEST_SIZE`. The checkpoint note
    itself is only split off here; the witness parses and verifies it.
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise WitnessProtocolError(f"request body must be bytes, got {type(body).__name__}")
    body = bytes(body)
    if len(body) > MAX_REQUEST_SIZE:
        raise WitnessProtocolError(
            f"request body is {len(body)} bytes, more than the {MAX_REQUEST_SIZE} accepted"
        )
    end = body.find(b"\n")
    if end < 0:
        raise WitnessProtocolError("line 1 (old size) does not end with a newline")
    first = body[:end]
    if not first.startswith(_OLD_PREFIX) or not _DECIMAL.fullmatch(first[len(_OLD_PREFIX) :]):
        shown = first[:40].decode("utf-8", "replace")
        raise WitnessProtocolError(
            f"line 1 must be 'old <size>' (decimal, no leading zeros), got {shown!r}"
        )
    old_size = int(first[len(_OLD_PREFIX) :])
    if old_size >= 1 << 64:
        raise WitnessProtocolError(f"line 1: old size {old_size} exceeds the uint64 range")
    proof: list[bytes] = []
    position = end + 1
    while True:
        end = body.find(b"\n", position)
        if end < 0:
            raise WitnessProtocolError(
                "no empty line after the consistency proof (the checkpoint must follow one)"
            )
        line = body[position:end]
        position = end + 1
        if not line:
            break
        number = len(proof) + 2
        if len(proof) == MAX_PROOF_HASHES:
            raise WitnessProtocolError(
                f"line {number}: more than {MAX_PROOF_HASHES} consistency proof lines"
            )
        proof.append(_proof_hash(line, number))
    note = body[position:]
    if not note:
        raise WitnessProtocolError("the checkpoint after the empty line is missing")
    return AddCheckpointRequest(old_size, tuple(proof), note)


def _proof_hash(line: bytes, number: int) -> bytes:
    try:
        hashed = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise WitnessProtocolError(f"line {number}: a proof line must be base64") from None
    if base64.b64encode(hashed) != line:
        raise WitnessProtocolError(f"line {number}: proof hash is not canonical base64")
    if len(hashed) != HASH_SIZE:
        raise WitnessProtocolError(
            f"line {number}: proof hash is {len(hashed)} bytes, expected {HASH_SIZE}"
        )
    return hashed


def format_size(size: int) -> bytes:
    """The body of a 409 response: ``<size>\\n``."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise WitnessProtocolError(f"a tree size must be a non-negative integer, got {size!r}")
    return b"%d\n" % size


def parse_size(body: bytes) -> int:
    """Parse a 409 response body (``text/x.tlog.size``): a decimal size and a newline."""
    if not body.endswith(b"\n") or not _DECIMAL.fullmatch(body[:-1]):
        shown = body[:40].decode("utf-8", "replace")
        raise WitnessProtocolError(f"a tlog size body must be '<decimal>\\n', got {shown!r}")
    return int(body[:-1])


def parse_cosignatures(body: bytes) -> list[NoteSignature]:
    """Parse a 200 response body: one or more note signature lines, each ending in a newline.

    The signatures are not verified here (the client checks them against the witness keys it
    trusts, ignoring unknown ones: see :func:`ledger.cosignature.attach_cosignatures`).
    """
    if not body:
        raise WitnessProtocolError("the response holds no signature line")
    if not body.endswith(b"\n"):
        raise WitnessProtocolError("the last signature line does not end with a newline")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WitnessProtocolError("the response is not UTF-8") from None
    for number, line in enumerate(text[:-1].split("\n"), 1):
        if not line.startswith(EM_DASH + " "):
            raise WitnessProtocolError(
                f"response line {number} is not a signature line (it must start with '{EM_DASH} ')"
            )
    try:
        # A note with a placeholder text parses the lines with the signed-note rules.
        return list(parse_note(b"x\n\n" + body).unverified)
    except NoteError as exc:
        raise WitnessProtocolError(f"malformed signature line: {exc}") from None


@dataclass(frozen=True)
class WitnessResponse:
    """An HTTP response a witness gives: status, content type and body bytes."""

    status: int
    content_type: str
    body: bytes


def response_for(error: LedgerError) -> WitnessResponse:
    """Map a refusal from :meth:`ledger.witness.Witness.add_checkpoint` to its response.

    Every 409 carries the witness's latest cosigned size as ``text/x.tlog.size``, as the spec
    requires, whether it came from a stale old size or from a rolled-back checkpoint.
    """
    message = (str(error) + "\n").encode("utf-8")
    if isinstance(error, WitnessConflictError):
        return WitnessResponse(409, SIZE_CONTENT_TYPE, format_size(error.latest_size))
    if isinstance(error, RollbackError) and error.status == 409:
        cosigned = peek_checkpoint(error.evidence.cosigned_note)
        return WitnessResponse(409, SIZE_CONTENT_TYPE, format_size(cosigned.size))
    if isinstance(error, WitnessError | ConsistencyError):
        return WitnessResponse(error.status, ERROR_CONTENT_TYPE, message)
    return WitnessResponse(400, ERROR_CONTENT_TYPE, message)


def handle_add_checkpoint(witness: Witness, body: bytes) -> WitnessResponse:
    """Parse ``body``, let ``witness`` check and cosign, and return the response to send.

    Split-view evidence is recorded by the witness's store before the refusal is returned.
    """
    try:
        request = parse_add_checkpoint(body)
        lines = witness.add_checkpoint(request.checkpoint, request.old_size, request.proof)
    except LedgerError as error:
        return response_for(error)
    return WitnessResponse(200, COSIGNATURE_CONTENT_TYPE, lines)


__all__ = [
    "ADD_CHECKPOINT_PATH",
    "COSIGNATURE_CONTENT_TYPE",
    "MAX_REQUEST_SIZE",
    "SIZE_CONTENT_TYPE",
    "AddCheckpointRequest",
    "WitnessProtocolError",
    "WitnessResponse",
    "format_add_checkpoint",
    "format_size",
    "handle_add_checkpoint",
    "parse_add_checkpoint",
    "parse_cosignatures",
    "parse_size",
    "response_for",
]

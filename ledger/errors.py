"""The single error hierarchy of the ``ledger`` package.

Every failure the ledger can detect is a :class:`LedgerError`. Callers that only want to know
"is this valid?" catch ``LedgerError``; callers that act on the reason (a witness keeping split-view
evidence, an auditor naming a bad tile) catch the subclass and read its attributes.

Messages are written for the person reading an audit report: each one names the thing at fault
(which line, which index, which path) and, where it helps, the expected and the actual value.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class LedgerError(Exception):
    """Base class of every error raised by the ledger package."""


class ProofError(LedgerError):
    """A Merkle inclusion or consistency proof is malformed, or does not verify."""


class NoteError(LedgerError):
    """A signed note, or a key string used to sign or verify one, is malformed."""


class KeyFormatError(NoteError):
    """A verifier key or signer key string is malformed or inconsistent (wrong key id, type...)."""


class SignatureError(NoteError):
    """A note's signatures do not satisfy the verifier."""


class UnverifiedNoteError(SignatureError):
    """A well-formed note carries no valid signature from any of the known keys.

    ``unknown_keys`` lists the ``name+keyid`` of every signature that was ignored because its key
    was not among the verifiers, which is usually what an operator needs to fix the configuration.
    """

    def __init__(self, message: str, unknown_keys: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.unknown_keys = unknown_keys


class InvalidSignatureError(SignatureError):
    """A signature by a known key (name and key id match) fails cryptographic verification."""

    def __init__(self, message: str, key_name: str, key_id: int) -> None:
        super().__init__(message)
        self.key_name = key_name
        self.key_id = key_id


class CheckpointError(LedgerError):
    """A checkpoint body is malformed or does not match what the caller expected."""


class CosignatureError(LedgerError):
    """A witness cosignature (tlog-cosignature/v1) is malformed or cannot be produced."""


class LeafError(LedgerError):
    """An encoded leaf is malformed, or leaf fields are out of range."""


class ReceiptError(LedgerError):
    """An offline receipt (tlog-proof) is malformed or does not verify."""


class PolicyError(LedgerError):
    """A cosigned checkpoint does not meet the witness policy (too few valid cosignatures)."""


class WitnessError(LedgerError):
    """A witness refuses a checkpoint for a reason that is not evidence of log misbehaviour.

    ``status`` mirrors the HTTP status the C2SP tlog-witness protocol assigns to the refusal
    (400, 403, 404, 409, 422), so a transport can map it without re-deriving the reason.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class WitnessConflictError(WitnessError):
    """The submitter's ``old`` size is not the size the witness last cosigned (HTTP 409).

    ``latest_size`` is what the submitter should retry with.
    """

    def __init__(self, message: str, latest_size: int) -> None:
        super().__init__(message, 409)
        self.latest_size = latest_size


class ConsistencyError(LedgerError):
    """A checkpoint conflicts with one already cosigned; ``evidence`` holds both notes.

    ``status`` is the C2SP tlog-witness HTTP status for the refusal (400, 409 or 422).
    """

    def __init__(self, message: str, evidence: SplitViewEvidence, status: int = 409) -> None:
        super().__init__(message)
        self.evidence = evidence
        self.status = status


class SplitViewError(ConsistencyError):
    """The log signed two checkpoints that are not consistent (a fork / split view)."""


class RollbackError(ConsistencyError):
    """The log presented a checkpoint smaller than one the witness already cosigned."""


@dataclass(frozen=True)
class TileProblem:
    """One thing wrong with an exported tile directory.

    ``path`` is relative to the export root (``tile/0/x001/234`` or ``checkpoint``); ``indices``
    names the affected leaf indices when they are known, so an auditor can report them.
    """

    path: str
    message: str
    indices: tuple[int, ...] = ()

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class TileError(LedgerError):
    """An exported tile directory is missing files, or files do not match the signed tree.

    ``problems`` lists every problem found (the reader does not stop at the first one).
    """

    def __init__(self, message: str, problems: tuple[TileProblem, ...] = ()) -> None:
        detail = "".join(f"\n  {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(message + detail + more)
        self.problems = problems


# The evidence a witness keeps travels inside SplitViewError, so it is defined here with the
# errors: the package's error module then imports no other ledger module.


class EvidenceKind(StrEnum):
    """What a :class:`SplitViewEvidence` shows."""

    FORK = "fork"
    """Two log-signed checkpoints of the same size with different roots: proof of a split view."""

    INCONSISTENT_PROOF = "inconsistent-proof"
    """A log-signed checkpoint arrived with a consistency proof that does not verify from the
    cosigned one. If the log cannot produce a valid proof between the two, it forked."""

    ROLLBACK = "rollback"
    """A log-signed checkpoint smaller than the cosigned one (a stale replay or a rollback)."""


@dataclass(frozen=True)
class SplitViewEvidence:
    """Everything a witness saw when it refused a conflicting checkpoint.

    ``cosigned_note`` is the log-signed checkpoint the witness had cosigned, ``new_note`` the
    log-signed checkpoint it refused (its log signature verified), ``proof`` the consistency proof
    that came with it, ``observed_at`` the witness's clock (POSIX seconds).
    """

    origin: str
    kind: EvidenceKind
    reason: str
    cosigned_note: bytes
    new_note: bytes
    old_size: int
    proof: tuple[bytes, ...]
    observed_at: int

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable form (bytes as base64) for storage or reporting."""
        return {
            "origin": self.origin,
            "kind": self.kind.value,
            "reason": self.reason,
            "cosigned_note": base64.b64encode(self.cosigned_note).decode(),
            "new_note": base64.b64encode(self.new_note).decode(),
            "old_size": self.old_size,
            "proof": [base64.b64encode(p).decode() for p in self.proof],
            "observed_at": self.observed_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitViewEvidence:
        """Inverse of :meth:`to_dict`; raises :class:`LedgerError` on malformed input."""
        try:
            return cls(
                origin=str(data["origin"]),
                kind=EvidenceKind(data["kind"]),
                reason=str(data["reason"]),
                cosigned_note=base64.b64decode(data["cosigned_note"], validate=True),
                new_note=base64.b64decode(data["new_note"], validate=True),
                old_size=int(data["old_size"]),
                proof=tuple(base64.b64decode(p, validate=True) for p in data["proof"]),
                observed_at=int(data["observed_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerError(f"malformed split-view evidence record: {exc!r}") from None

"""The single error hierarchy of the ``ledger`` package.

Every failure the ledger can detect is a :class:`LedgerError`. Callers that only want to know
"is this valid?" catch ``LedgerError``; callers that act on the reason (a witness keeping split-view
evidence, an auditor naming a bad tile) catch the subclass and read its attributes.

Messages are written for the person reading an audit report: each one names the thing at fault
(which line, which index, which path) and, where it helps, the expected and the actual value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported only for annotations, to keep this module free of import cycles
    from ledger.witness import SplitViewEvidence


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

    ``status`` is the C2SP tlog-witness HTTP status for the refusal (409 or 422).
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

"""Witnessing, as this node's database records it: cosignatures of its own checkpoints and their
finality, checkpoints of other logs it has seen (split views caught, evidence kept), and a status
for the operator.

Everything goes through a :class:`~hub.integrity.integrator.LedgerView` (the ledger's tables and
the witnessing tables of :mod:`ledger.witness_storage`, in the node's own database), so every
layer that federates — the witness endpoint, the checkpoint publisher, the relay — reads and
writes the same records:

* :func:`record_cosignatures` keeps the cosignatures a witness returned for one of this node's
  checkpoints (from an ``add-checkpoint`` response or from a peer's acknowledgement), after
  verifying them;
* :func:`final_checkpoint` is the checkpoint a receipt cites: the latest of this node's
  checkpoints covering a leaf whose cosignatures meet the witness policy (k of n), as a signed
  note carrying the log's signature and the cosignatures;
* :func:`observe_checkpoint` checks a peer's checkpoint against every one seen from that log
  before and keeps it; a contradiction is kept as evidence (both signed notes and the proof)
  and raised;
* :func:`witnessing_status` is what ``tongban federation witness`` prints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hub.integrity.integrator import LedgerView
from ledger import (
    LedgerError,
    NoteVerifier,
    SignedCheckpoint,
    SplitViewError,
    SplitViewEvidence,
    WitnessPolicy,
    WitnessState,
    attach_cosignatures,
    cosignature_timestamp,
    open_checkpoint,
)
from ledger.cosignature import CosignatureVerifier
from ledger.observer import CheckpointObserver
from ledger.storage import Cursor, StoredCheckpoint
from ledger.witness_storage import (
    CANDIDATE_PAGE,
    MAX_SIZE,
    SQLWitnessStore,
    StoredCosignature,
    Submission,
)

log = logging.getLogger("tongban.witnessing")


@dataclass(frozen=True)
class FinalCheckpoint:
    """A checkpoint of this node's log whose witness policy is met."""

    #: The signed note: the log's signature and the witnesses' cosignatures.
    note: bytes
    size: int
    root: bytes
    #: The policy witnesses whose cosignatures verified, and how many the policy needs.
    witnesses: tuple[str, ...]
    required: int


def _checkpoint_at(view: LedgerView, cursor: Cursor, size: int) -> StoredCheckpoint | None:
    stored = view.tables.checkpoint_at_least(cursor, size)
    return stored if stored is not None and stored.size == size else None


def record_cosignatures(
    view: LedgerView,
    size: int,
    lines: bytes,
    witnesses: Sequence[CosignatureVerifier],
    log_verifiers: NoteVerifier | Iterable[NoteVerifier],
) -> list[str]:
    """Keep the cosignatures in ``lines`` (note signature lines) of this node's checkpoint of
    ``size``; return the names of the witnesses whose cosignature was kept.

    Only cosignatures by ``witnesses`` are kept; a signature line by one of them that does not
    verify over this node's checkpoint is refused (:class:`~ledger.errors.LedgerError`), as are
    lines that are not note signatures. Raises :class:`LookupError` when this node never signed
    a checkpoint of ``size``.
    """
    known = {(w.name, w.key_id) for w in witnesses}

    def work(cursor: Cursor) -> list[str]:
        stored = _checkpoint_at(view, cursor, size)
        if stored is None:
            raise LookupError(f"this node signed no checkpoint of size {size}")
        note = attach_cosignatures(stored.note, lines)
        signed = open_checkpoint(note, log_verifiers, witnesses=witnesses)
        kept: list[str] = []
        now = time.time()
        for signature in signed.note.signatures:
            if (signature.name, signature.key_id) not in known:
                continue
            view.tables.witness.record_cosignature(
                cursor,
                StoredCosignature(
                    size=size,
                    root=stored.root,
                    witness=signature.name,
                    key_id=signature.key_id,
                    line=signature.line().rstrip("\n"),
                    timestamp=cosignature_timestamp(signature),
                    received_at=now,
                ),
            )
            kept.append(signature.name)
        return kept

    result: list[str] = view.write(work)
    return result


def final_checkpoint(
    view: LedgerView,
    index: int,
    policy: WitnessPolicy,
    log_verifiers: NoteVerifier | Iterable[NoteVerifier],
) -> FinalCheckpoint | None:
    """The latest final checkpoint of this node's log that covers leaf ``index``, or None.

    With ``policy.k == 0`` (a node without peers) every signed checkpoint is final. Otherwise
    only checkpoints with cosignatures from at least k distinct policy witnesses qualify, and the
    candidate is re-verified (log signature and every cosignature) before it is returned: a
    row altered in the database never yields a "final" checkpoint.
    """
    verifiers = [log_verifiers] if isinstance(log_verifiers, NoteVerifier) else list(log_verifiers)

    def work(cursor: Cursor) -> FinalCheckpoint | None:
        if policy.k == 0:
            latest = view.tables.latest_checkpoint(cursor)
            if latest is None or latest.size <= index:
                return None
            return FinalCheckpoint(latest.note, latest.size, latest.root, (), 0)
        # Page by page from the latest: the first that verifies is the answer, and the table
        # holds every checkpoint ever cosigned.
        below = MAX_SIZE
        while True:
            sizes = view.tables.witness.candidate_sizes(cursor, index + 1, policy.k, below=below)
            for size in sizes:
                final = _final_at(view, cursor, size, policy, verifiers)
                if final is not None:
                    return final
            if len(sizes) < CANDIDATE_PAGE:
                return None
            below = sizes[-1]

    found: FinalCheckpoint | None = view.read(work)
    return found


def _final_at(
    view: LedgerView,
    cursor: Cursor,
    size: int,
    policy: WitnessPolicy,
    verifiers: list[NoteVerifier],
) -> FinalCheckpoint | None:
    """The checkpoint of ``size`` with its stored cosignatures, if they verify and meet the
    policy (None otherwise)."""
    stored = _checkpoint_at(view, cursor, size)
    if stored is None:
        return None
    cosignatures = view.tables.witness.cosignatures(cursor, size)
    lines = "".join(c.line + "\n" for c in cosignatures if c.root == stored.root)
    if not lines:
        return None
    try:
        note = attach_cosignatures(stored.note, lines.encode("utf-8"))
        result = policy.evaluate(note, verifiers)
    except LedgerError as error:
        log.warning("stored cosignatures of checkpoint %d do not verify: %s", size, error)
        return None
    if not result.final:
        return None
    return FinalCheckpoint(note, size, stored.root, result.witnesses, policy.k)


def observe_checkpoint(
    view: LedgerView,
    logs: Mapping[str, NoteVerifier | Iterable[NoteVerifier]],
    note: bytes,
    *,
    old_size: int | None = None,
    proof: Sequence[bytes] = (),
) -> SignedCheckpoint:
    """Check another log's checkpoint against every one seen from that log before; keep it.

    For the relay (checkpoints inside envelopes) and anything else that
    sees a peer's checkpoint: ``logs`` maps each origin to its log verifier(s); ``old_size`` and
    ``proof`` are a consistency proof that came with the checkpoint, if any. Raises
    :class:`~ledger.errors.WitnessError` (not a checkpoint signed by a known log: nothing kept)
    or :class:`~ledger.errors.SplitViewError` (a contradiction: the evidence is committed before
    the error is raised).
    """

    def work(cursor: Cursor) -> SignedCheckpoint | SplitViewError:
        observer = CheckpointObserver(logs, SQLWitnessStore(view.tables, cursor))
        try:
            return observer.observe(note, old_size=old_size, proof=proof)
        except SplitViewError as split:
            return split  # returned, so the transaction commits the evidence

    outcome: SignedCheckpoint | SplitViewError = view.write(work)
    if isinstance(outcome, SplitViewError):
        log.error("split view of %s: %s", outcome.evidence.origin, outcome)
        raise outcome
    return outcome


@dataclass(frozen=True)
class WitnessingStatus:
    """Everything ``tongban federation witness`` shows."""

    #: This node's latest signed checkpoint size (0 before any).
    latest_size: int
    #: Its latest final checkpoint (None: none yet).
    final: FinalCheckpoint | None
    #: For each witness of this log: the largest size it cosigned and when that arrived.
    cosigned_by: dict[str, tuple[int, float]]
    #: The last request to each witness and its outcome.
    submissions: list[Submission]
    #: The latest checkpoint this node cosigned for each log it witnesses.
    witnessed: list[WitnessState]
    #: Split-view evidence kept, oldest first.
    evidence: list[SplitViewEvidence]


def witnessing_status(
    view: LedgerView,
    policy: WitnessPolicy,
    log_verifiers: NoteVerifier | Iterable[NoteVerifier],
) -> WitnessingStatus:
    """Read the witnessing records of this node."""
    verifiers = [log_verifiers] if isinstance(log_verifiers, NoteVerifier) else list(log_verifiers)

    def work(cursor: Cursor) -> dict[str, Any]:
        latest = view.tables.latest_checkpoint(cursor)
        return {
            "latest_size": latest.size if latest is not None else 0,
            "cosigned_by": view.tables.witness.latest_cosignatures(cursor),
            "submissions": view.tables.witness.submissions(cursor),
            "witnessed": view.tables.witness.witnessed(cursor),
            "evidence": SQLWitnessStore(view.tables, cursor).evidence(),
        }

    values: dict[str, Any] = view.read(work)
    return WitnessingStatus(final=final_checkpoint(view, 0, policy, verifiers), **values)


def evidence_count(view: LedgerView) -> int:
    """How many pieces of split-view evidence this node keeps."""
    count: int = view.read(view.tables.witness.evidence_count)
    return count


__all__ = [
    "FinalCheckpoint",
    "WitnessingStatus",
    "evidence_count",
    "final_checkpoint",
    "observe_checkpoint",
    "record_cosignatures",
    "witnessing_status",
]

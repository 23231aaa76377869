"""Split-view detection for checkpoints seen outside a witness request.

A node sees other logs' checkpoints in more places than its witness endpoint: inside handoff
envelopes, in acknowledgements, from an auditor. Every one of them is a statement signed by the
log, so two that cannot both be true prove the log lied to someone. A
:class:`CheckpointObserver` keeps each log-signed checkpoint it is shown (the first one per
origin and size) and refuses, keeping :class:`~ledger.errors.SplitViewEvidence`:

* a checkpoint whose size was seen before with another root (:attr:`EvidenceKind.FORK`): two
  signed checkpoints that cannot both be heads of one append-only log;
* a checkpoint that comes with a consistency proof from a size seen before, where the proof does
  not verify between the two (:attr:`EvidenceKind.INCONSISTENT_PROOF`).

Checkpoints of different sizes without a proof cannot be compared; they are kept, so a later
checkpoint of the same size, or a proof between them, is checked against them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from ledger.checkpoint import SignedCheckpoint, open_checkpoint, peek_checkpoint
from ledger.errors import (
    CheckpointError,
    EvidenceKind,
    NoteError,
    ProofError,
    SignatureError,
    SplitViewError,
    SplitViewEvidence,
    WitnessError,
)
from ledger.merkle import HASH_SIZE, verify_consistency
from ledger.note import NoteVerifier, parse_note


def _now() -> int:
    return int(time.time())


class ObservationStore(Protocol):
    """Where an observer keeps the checkpoints it saw and the evidence it found."""

    def observe_once(self, origin: str, size: int, root: bytes, note: bytes) -> bytes:
        """Keep ``note`` as the checkpoint of ``origin`` at ``size`` unless one is kept already
        (atomically); return the note kept for that size (``note`` or the earlier one)."""
        ...

    def observed(self, origin: str, size: int) -> bytes | None:
        """The note kept for ``origin`` at ``size``, or ``None``."""
        ...

    def record_evidence(self, evidence: SplitViewEvidence) -> None:
        """Keep ``evidence`` durably."""
        ...


class InMemoryObservationStore:
    """An :class:`ObservationStore` in memory (tests)."""

    def __init__(self) -> None:
        """Create an empty store."""
        self.notes: dict[tuple[str, int], bytes] = {}
        self.evidence: list[SplitViewEvidence] = []

    def observe_once(self, origin: str, size: int, root: bytes, note: bytes) -> bytes:
        """Keep the first note per (origin, size)."""
        return self.notes.setdefault((origin, size), note)

    def observed(self, origin: str, size: int) -> bytes | None:
        """The note kept for (origin, size)."""
        return self.notes.get((origin, size))

    def record_evidence(self, evidence: SplitViewEvidence) -> None:
        """Keep ``evidence``."""
        self.evidence.append(evidence)


class CheckpointObserver:
    """Checks log-signed checkpoints against every earlier one seen from the same log.

    ``logs`` maps each origin to its log verifier(s); only checkpoints with a valid log
    signature are considered (anyone can write an unsigned one, and it proves nothing).
    """

    def __init__(
        self,
        logs: Mapping[str, NoteVerifier | Iterable[NoteVerifier]],
        store: ObservationStore,
        clock: Callable[[], int] = _now,
    ) -> None:
        """Observe the logs in ``logs``, keeping what is seen in ``store``."""
        self._logs = {
            origin: [v] if isinstance(v, NoteVerifier) else list(v) for origin, v in logs.items()
        }
        self._store = store
        self._clock = clock

    def observe(
        self,
        note: bytes,
        *,
        old_size: int | None = None,
        proof: Sequence[bytes] = (),
    ) -> SignedCheckpoint:
        """Check ``note`` (and, if given, the consistency ``proof`` from ``old_size``); keep it.

        Raises :class:`~ledger.errors.WitnessError` when the note is not a checkpoint signed by
        a known log (400 malformed, 403 bad signature, 404 unknown origin; nothing kept) and
        :class:`~ledger.errors.SplitViewError` (with the evidence, already kept) when it
        contradicts a checkpoint seen before.
        """
        try:
            origin = parse_note(note).text.split("\n", 1)[0]
        except NoteError as exc:
            raise WitnessError(f"malformed checkpoint: {exc}", 400) from None
        verifiers = self._logs.get(origin)
        if verifiers is None:
            raise WitnessError(f"unknown log origin {origin!r}", 404)
        try:
            signed = open_checkpoint(note, verifiers, origin=origin)
        except SignatureError as exc:
            raise WitnessError(f"checkpoint for {origin!r} rejected: {exc}", 403) from None
        except (CheckpointError, NoteError) as exc:
            raise WitnessError(f"malformed checkpoint: {exc}", 400) from None
        new = signed.checkpoint
        proof = tuple(proof)
        kept = self._store.observe_once(new.origin, new.size, new.root, signed.raw)
        if peek_checkpoint(kept).root != new.root:
            self._refuse(
                EvidenceKind.FORK,
                f"two checkpoints of size {new.size} for {new.origin!r} with different roots: "
                f"seen {peek_checkpoint(kept).root.hex()}, now {new.root.hex()}",
                kept,
                signed,
                new.size if old_size is None else old_size,
                proof,
            )
        if old_size is not None and 0 < old_size < new.size:
            earlier = self._store.observed(new.origin, old_size)
            if earlier is not None:
                try:
                    if any(len(h) != HASH_SIZE for h in proof):
                        raise ProofError("a proof hash is not 32 bytes")
                    verify_consistency(
                        old_size, new.size, proof, peek_checkpoint(earlier).root, new.root
                    )
                except ProofError as exc:
                    self._refuse(
                        EvidenceKind.INCONSISTENT_PROOF,
                        f"checkpoint of size {new.size} for {new.origin!r} is not proven "
                        f"consistent with the one of size {old_size} seen before: {exc}",
                        earlier,
                        signed,
                        old_size,
                        proof,
                    )
        return signed

    def _refuse(
        self,
        kind: EvidenceKind,
        reason: str,
        earlier: bytes,
        signed: SignedCheckpoint,
        old_size: int,
        proof: tuple[bytes, ...],
    ) -> None:
        evidence = SplitViewEvidence(
            origin=signed.checkpoint.origin,
            kind=kind,
            reason=reason,
            cosigned_note=earlier,
            new_note=signed.raw,
            old_size=old_size,
            proof=proof,
            observed_at=self._clock(),
        )
        self._store.record_evidence(evidence)
        raise SplitViewError(reason, evidence, 422)


__all__ = ["CheckpointObserver", "InMemoryObservationStore", "ObservationStore"]

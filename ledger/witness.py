"""Witness logic (c2sp.org/tlog-witness semantics) and the k-of-n witness policy.

A :class:`Witness` cosigns a log's checkpoint only after

1. verifying the log's signature with the keys it trusts for that origin, and
2. verifying a consistency proof from the last checkpoint it cosigned for that origin,

then atomically records the new checkpoint in its :class:`WitnessStore`. A checkpoint that
conflicts with what it cosigned before is refused and the evidence (both signed notes and the
proof) is kept as a :class:`SplitViewEvidence`. The transport (HTTP, Kafka...) is not here: the
errors carry the tlog-witness HTTP status so any transport can map them.

A :class:`WitnessPolicy` decides whether a cosigned checkpoint is *final*: at least ``k`` of the
named witnesses cosigned it (``k = 0`` for a single node, where the log signature alone counts).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol

from ledger.checkpoint import Checkpoint, SignedCheckpoint, open_checkpoint, peek_checkpoint
from ledger.cosignature import (
    Cosignature,
    CosignatureVerifier,
    Cosigner,
    attach_cosignatures,
    verified_cosignatures,
)
from ledger.errors import (
    CheckpointError,
    EvidenceKind,
    NoteError,
    PolicyError,
    ProofError,
    RollbackError,
    SignatureError,
    SplitViewError,
    SplitViewEvidence,
    WitnessConflictError,
    WitnessError,
)
from ledger.merkle import HASH_SIZE, verify_consistency
from ledger.note import NoteVerifier, parse_note

MAX_PROOF_HASHES = 63
"""tlog-witness: clients MUST NOT send more than 63 consistency proof lines."""


def _now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class WitnessState:
    """The latest checkpoint a witness cosigned for one origin.

    ``note`` is the log-signed note with the witness's own cosignature attached.
    """

    origin: str
    size: int
    root: bytes
    note: bytes


class WitnessStore(Protocol):
    """Persistence for a witness: its latest state per origin and the evidence it kept.

    ``swap`` must be atomic (a database transaction or a lock): tlog-witness requires the check of
    the old size and the update to happen together, or two racing requests could roll it back.
    """

    def latest(self, origin: str) -> WitnessState | None:
        """Return the latest cosigned state for ``origin``, or ``None`` if there is none."""
        ...

    def swap(self, expected: WitnessState | None, new: WitnessState) -> bool:
        """Store ``new`` iff the current state for ``new.origin`` still has ``expected``'s size
        and root (``None``: no state yet). Return whether it was stored."""
        ...

    def record_evidence(self, evidence: SplitViewEvidence) -> None:
        """Keep ``evidence`` durably."""
        ...

    def evidence(self, origin: str | None = None) -> list[SplitViewEvidence]:
        """Return the kept evidence, oldest first, optionally for one origin only."""
        ...


class InMemoryWitnessStore:
    """A thread-safe :class:`WitnessStore` in memory, for tests and embedded single nodes."""

    def __init__(self) -> None:
        """Create an empty store."""
        self._lock = threading.Lock()
        self._states: dict[str, WitnessState] = {}
        self._evidence: list[SplitViewEvidence] = []

    def latest(self, origin: str) -> WitnessState | None:
        """Return the latest cosigned state for ``origin``."""
        with self._lock:
            return self._states.get(origin)

    def swap(self, expected: WitnessState | None, new: WitnessState) -> bool:
        """Atomically compare (size, root) with ``expected`` and store ``new``."""
        with self._lock:
            current = self._states.get(new.origin)
            if (current is None) != (expected is None):
                return False
            if (
                current is not None
                and expected is not None
                and (current.size, current.root) != (expected.size, expected.root)
            ):
                return False
            self._states[new.origin] = new
            return True

    def record_evidence(self, evidence: SplitViewEvidence) -> None:
        """Keep ``evidence``."""
        with self._lock:
            self._evidence.append(evidence)

    def evidence(self, origin: str | None = None) -> list[SplitViewEvidence]:
        """Return kept evidence, oldest first."""
        with self._lock:
            return [e for e in self._evidence if origin is None or e.origin == origin]


class Witness:
    """Cosigns checkpoints of known logs after checking signature and consistency.

    ``logs`` maps each origin the witness serves to the log's verifier(s) (several during key
    rotation). ``clock`` gives POSIX seconds for cosignature timestamps and evidence records.
    """

    def __init__(
        self,
        cosigner: Cosigner,
        logs: Mapping[str, NoteVerifier | Iterable[NoteVerifier]],
        store: WitnessStore | None = None,
        clock: Callable[[], int] = _now,
    ) -> None:
        """Create a witness signing with ``cosigner`` for the logs in ``logs``."""
        self._cosigner = cosigner
        self._logs: dict[str, list[NoteVerifier]] = {}
        for origin, verifiers in logs.items():
            vs = [verifiers] if isinstance(verifiers, NoteVerifier) else list(verifiers)
            if not vs:
                raise WitnessError(f"no log verifier configured for origin {origin!r}", 500)
            self._logs[origin] = vs
        self._store: WitnessStore = store if store is not None else InMemoryWitnessStore()
        self._clock = clock

    @property
    def name(self) -> str:
        """The witness name (its cosigner key name)."""
        return self._cosigner.name

    @property
    def store(self) -> WitnessStore:
        """The state store (latest checkpoints and kept evidence)."""
        return self._store

    def verifier_key(self) -> str:
        """The witness's public cosignature verifier key string."""
        return self._cosigner.verifier_key()

    def latest(self, origin: str) -> WitnessState | None:
        """The latest checkpoint cosigned for ``origin``."""
        return self._store.latest(origin)

    def add_checkpoint(self, note: bytes, old_size: int, proof: Sequence[bytes] = ()) -> bytes:
        """Check and cosign a signed checkpoint; return the cosignature line(s) as bytes.

        ``old_size`` is the size the submitter believes the witness last cosigned (0 if never)
        and ``proof`` the consistency proof from that size. Raises:

        * :class:`WitnessError` (400 malformed, 403 bad or missing log signature, 404 unknown
          origin, 422 a proof with old size 0 or a size-0 checkpoint without the empty root)
          — nothing recorded;
        * :class:`WitnessConflictError` (409) — ``old_size`` is stale, retry with
          ``latest_size``;
        * :class:`SplitViewError` / :class:`RollbackError` — the checkpoint conflicts with the
          cosigned one; the evidence is recorded in the store and attached to the error.
        """
        if isinstance(old_size, bool) or not isinstance(old_size, int) or old_size < 0:
            raise WitnessError(f"old size must be a non-negative integer, got {old_size!r}", 400)
        proof = tuple(proof)
        if len(proof) > MAX_PROOF_HASHES:
            raise WitnessError(
                f"consistency proof has {len(proof)} hashes, more than {MAX_PROOF_HASHES}", 400
            )
        for i, h in enumerate(proof):
            if not isinstance(h, bytes) or len(h) != HASH_SIZE:
                size = f"{len(h)} bytes" if isinstance(h, bytes) else type(h).__name__
                raise WitnessError(f"consistency proof hash {i} is {size}, expected 32 bytes", 400)
        # The spec's order: the origin must be known (404) and the log's signature valid (403)
        # before anything in the checkpoint body is judged, so the origin is read from the
        # note's first line without parsing the rest.
        try:
            parsed = parse_note(note)
        except NoteError as exc:
            raise WitnessError(f"malformed checkpoint: {exc}", 400) from None
        origin = parsed.text.split("\n", 1)[0]
        verifiers = self._logs.get(origin)
        if verifiers is None:
            raise WitnessError(f"unknown log origin {origin!r}", 404)
        try:
            signed = open_checkpoint(note, verifiers, origin=origin)
        except SignatureError as exc:
            raise WitnessError(f"checkpoint for {origin!r} rejected: {exc}", 403) from None
        except (CheckpointError, NoteError) as exc:
            # tlog-witness: a checkpoint of size 0 must carry the empty tree's root, else 422.
            lines = parsed.text.split("\n")
            status = 422 if len(lines) > 1 and lines[1] == "0" else 400
            raise WitnessError(f"malformed checkpoint: {exc}", status) from None
        new = signed.checkpoint
        latest = self._store.latest(new.origin)
        latest_size = latest.size if latest is not None else 0

        if latest is not None and new.size < latest.size:
            self._refuse(
                RollbackError,
                EvidenceKind.ROLLBACK,
                f"checkpoint size {new.size} is smaller than the size {latest.size} already "
                f"cosigned for {new.origin!r}",
                latest,
                signed,
                old_size,
                proof,
                # tlog-witness: an old size above the checkpoint's is a bad request (400);
                # otherwise the old size cannot match the cosigned one (409, with that size).
                400 if old_size > new.size else 409,
            )
        if old_size > new.size:
            raise WitnessError(
                f"old size {old_size} is larger than checkpoint size {new.size}", 400
            )
        if old_size != latest_size:
            raise WitnessConflictError(
                f"old size {old_size} does not match the latest cosigned size {latest_size} "
                f"for {new.origin!r}",
                latest_size,
            )
        if latest is None:
            if proof:
                raise WitnessError(
                    f"a consistency proof from size 0 must be empty, got {len(proof)} hashes", 422
                )
        elif new.size == latest.size:
            if new.root != latest.root:
                self._refuse(
                    SplitViewError,
                    EvidenceKind.FORK,
                    f"two checkpoints of size {new.size} for {new.origin!r} with different "
                    f"roots: cosigned {latest.root.hex()}, new {new.root.hex()}",
                    latest,
                    signed,
                    old_size,
                    proof,
                    422,  # tlog-witness: equal sizes with different roots
                )
            if proof:
                raise WitnessError("a consistency proof between equal sizes must be empty", 422)
        else:
            try:
                verify_consistency(latest.size, new.size, proof, latest.root, new.root)
            except ProofError as exc:
                self._refuse(
                    SplitViewError,
                    EvidenceKind.INCONSISTENT_PROOF,
                    f"checkpoint of size {new.size} for {new.origin!r} is not proven "
                    f"consistent with the cosigned size {latest.size}: {exc}",
                    latest,
                    signed,
                    old_size,
                    proof,
                    422,
                )

        timestamp = self._clock()
        line = self._cosigner.signature_line(new.format(), timestamp)
        # Kept with this witness's cosignature: what it serves to monitors (tlog-witness "GET
        # <origin hash>/checkpoint"), and the note later evidence shows it vouched for.
        cosigned = attach_cosignatures(signed.raw, line.encode("utf-8"))
        state = WitnessState(new.origin, new.size, new.root, cosigned)
        # Persist before answering, atomically with the size check (tlog-witness requirement).
        if not self._store.swap(latest, state):
            current = self._store.latest(new.origin)
            current_size = current.size if current is not None else 0
            raise WitnessConflictError(
                f"the witness state for {new.origin!r} changed concurrently (now size "
                f"{current_size}); retry",
                current_size,
            )
        return line.encode("utf-8")

    def _refuse(
        self,
        error: type[SplitViewError] | type[RollbackError],
        kind: EvidenceKind,
        reason: str,
        latest: WitnessState,
        signed: SignedCheckpoint,
        old_size: int,
        proof: tuple[bytes, ...],
        status: int,
    ) -> NoReturn:
        evidence = SplitViewEvidence(
            origin=signed.checkpoint.origin,
            kind=kind,
            reason=reason,
            cosigned_note=latest.note,
            new_note=signed.raw,
            old_size=old_size,
            proof=proof,
            observed_at=self._clock(),
        )
        self._store.record_evidence(evidence)
        raise error(reason, evidence, status)


@dataclass(frozen=True)
class PolicyResult:
    """The outcome of applying a :class:`WitnessPolicy` to a signed checkpoint."""

    checkpoint: SignedCheckpoint
    final: bool
    required: int
    cosignatures: tuple[Cosignature, ...]

    @property
    def witnesses(self) -> tuple[str, ...]:
        """Names of the policy witnesses whose cosignatures verified."""
        return tuple(c.name for c in self.cosignatures)


class WitnessPolicy:
    """``k`` of the named witnesses must cosign a checkpoint before it is final.

    ``k = 0`` (the default, for a single node) makes every log-signed checkpoint final. A witness
    may be listed with several keys (rotation); it still counts once.
    """

    def __init__(self, k: int = 0, witnesses: Iterable[CosignatureVerifier] = ()) -> None:
        """Create a policy requiring ``k`` of ``witnesses`` (cosignature/v1 verifiers)."""
        self._witnesses = tuple(witnesses)
        for w in self._witnesses:
            # A plain note key (type 0x01) would accept a log-style signature without a
            # timestamp, i.e. without the witness's statement; only cosignature keys count.
            if not isinstance(w, CosignatureVerifier):
                raise PolicyError(
                    f"witness {getattr(w, 'name', w)!r} must be given as a cosignature/v1 "
                    f"verifier (key type 0x04), got {type(w).__name__}"
                )
        names = {w.name for w in self._witnesses}
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise PolicyError(f"witness policy threshold must be a non-negative integer, got {k!r}")
        if k > len(names):
            raise PolicyError(
                f"witness policy needs {k} cosignatures but names only {len(names)} witnesses; "
                "it could never be met"
            )
        self._k = k
        self._names = frozenset(names)

    @property
    def k(self) -> int:
        """How many distinct witnesses must cosign."""
        return self._k

    @property
    def witnesses(self) -> tuple[CosignatureVerifier, ...]:
        """The witness verifiers."""
        return self._witnesses

    @property
    def names(self) -> frozenset[str]:
        """The distinct witness names."""
        return self._names

    def evaluate(
        self,
        note: bytes,
        log_verifiers: NoteVerifier | Iterable[NoteVerifier],
        *,
        origin: str | None = None,
    ) -> PolicyResult:
        """Verify the log signature and the witnesses' cosignatures; report finality.

        Raises (rather than returning ``final=False``) when the note itself is not acceptable: no
        valid log signature, a malformed checkpoint, or a known witness's cosignature that fails
        to verify (a tampered cosignature is never silently skipped).
        """
        signed = open_checkpoint(note, log_verifiers, origin=origin, witnesses=self._witnesses)
        counted: dict[str, Cosignature] = {}
        for cosig in verified_cosignatures(signed.note, self._witnesses):
            counted.setdefault(cosig.name, cosig)
        return PolicyResult(
            checkpoint=signed,
            final=len(counted) >= self._k,
            required=self._k,
            cosignatures=tuple(counted.values()),
        )

    def require_final(
        self,
        note: bytes,
        log_verifiers: NoteVerifier | Iterable[NoteVerifier],
        *,
        origin: str | None = None,
    ) -> PolicyResult:
        """Like :meth:`evaluate` but raise :class:`PolicyError` unless the checkpoint is final."""
        return self.ensure_final(self.evaluate(note, log_verifiers, origin=origin))

    def ensure_final(self, result: PolicyResult) -> PolicyResult:
        """Return ``result`` if it is final, else raise :class:`PolicyError` saying what lacks."""
        if not result.final:
            have = ", ".join(result.witnesses) or "none"
            raise PolicyError(
                f"checkpoint of size {result.checkpoint.checkpoint.size} has "
                f"{len(result.cosignatures)} of the {self._k} required witness cosignatures "
                f"(valid: {have}; policy witnesses: {', '.join(sorted(self._names))})"
            )
        return result


def checkpoint_of(evidence: SplitViewEvidence) -> tuple[Checkpoint, Checkpoint]:
    """Return the (cosigned, refused) checkpoints of ``evidence`` (signatures not re-checked)."""
    return peek_checkpoint(evidence.cosigned_note), peek_checkpoint(evidence.new_note)

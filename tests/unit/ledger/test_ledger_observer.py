"""Split views caught from checkpoints seen anywhere (not only in witness requests)."""

from __future__ import annotations

import pytest

from ledger.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from ledger.errors import EvidenceKind, SplitViewError, WitnessError
from ledger.merkle import MerkleTree
from ledger.note import Signer
from ledger.observer import CheckpointObserver, InMemoryObservationStore

ORIGIN = "tongban/42"


def note(signer: Signer, tree: MerkleTree, size: int) -> bytes:
    return sign_checkpoint(Checkpoint(ORIGIN, size, tree.root(size)), signer)


@pytest.fixture
def signer() -> Signer:
    return Signer.generate(ORIGIN)


def test_a_fork_at_one_size_is_evidence_signed_by_the_log(signer: Signer) -> None:
    store = InMemoryObservationStore()
    observer = CheckpointObserver({ORIGIN: signer.verifier()}, store, clock=lambda: 7)
    honest = MerkleTree(b"a%d" % i for i in range(9))
    forked = MerkleTree(b"b%d" % i for i in range(9))
    observer.observe(note(signer, honest, 9))
    observer.observe(note(signer, honest, 9))  # the same checkpoint again is fine
    with pytest.raises(SplitViewError, match="two checkpoints of size 9") as caught:
        observer.observe(note(signer, forked, 9))
    evidence = caught.value.evidence
    assert evidence.kind is EvidenceKind.FORK and evidence.observed_at == 7
    assert store.evidence == [evidence]
    first = open_checkpoint(evidence.cosigned_note, signer.verifier()).checkpoint
    second = open_checkpoint(evidence.new_note, signer.verifier()).checkpoint
    assert first.size == second.size and first.root != second.root
    # The first one seen stays the one kept.
    assert store.observed(ORIGIN, 9) == note(signer, honest, 9)


def test_a_proof_from_a_size_seen_before_must_verify(signer: Signer) -> None:
    store = InMemoryObservationStore()
    observer = CheckpointObserver({ORIGIN: [signer.verifier()]}, store)
    honest = MerkleTree(b"a%d" % i for i in range(20))
    observer.observe(note(signer, honest, 8))
    observer.observe(note(signer, honest, 20), old_size=8, proof=honest.consistency_proof(8, 20))
    forked = MerkleTree([*(b"a%d" % i for i in range(8)), *(b"x%d" % i for i in range(20))])
    with pytest.raises(SplitViewError, match="two checkpoints of size 20") as caught:
        # Consistent with 8, but the observer saw another 20: a fork.
        observer.observe(
            note(signer, forked, 20), old_size=8, proof=forked.consistency_proof(8, 20)
        )
    assert caught.value.evidence.kind is EvidenceKind.FORK
    # A proof valid inside the forked view does not connect it to the 20 seen before.
    with pytest.raises(SplitViewError, match="not proven consistent") as bad:
        observer.observe(
            note(signer, forked, 24), old_size=20, proof=forked.consistency_proof(20, 24)
        )
    assert bad.value.evidence.kind is EvidenceKind.INCONSISTENT_PROOF
    assert bad.value.status == 422
    assert len(store.evidence) == 2


def test_only_log_signed_checkpoints_count(signer: Signer) -> None:
    store = InMemoryObservationStore()
    observer = CheckpointObserver({ORIGIN: signer.verifier()}, store)
    tree = MerkleTree(b"a%d" % i for i in range(3))
    with pytest.raises(WitnessError) as forged:
        observer.observe(note(Signer.generate(ORIGIN), tree, 3))
    assert forged.value.status == 403
    stranger = Signer.generate("tongban/61")
    with pytest.raises(WitnessError) as unknown:
        observer.observe(sign_checkpoint(Checkpoint("tongban/61", 1, tree.root(1)), stranger))
    assert unknown.value.status == 404
    with pytest.raises(WitnessError) as malformed:
        observer.observe(b"garbage")
    assert malformed.value.status == 400
    assert store.notes == {} and store.evidence == []

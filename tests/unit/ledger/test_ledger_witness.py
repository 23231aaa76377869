"""Witness cosigning, split-view detection with evidence, and the k-of-n witness policy."""

from __future__ import annotations

import pytest

from ledger.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from ledger.cosignature import CosignatureVerifier, Cosigner, attach_cosignatures
from ledger.errors import (
    InvalidSignatureError,
    LedgerError,
    PolicyError,
    RollbackError,
    SplitViewError,
    UnverifiedNoteError,
    WitnessConflictError,
    WitnessError,
)
from ledger.merkle import MerkleTree, verify_consistency
from ledger.note import NoteSignature, Signer, parse_note
from ledger.witness import (
    EvidenceKind,
    InMemoryWitnessStore,
    SplitViewEvidence,
    Witness,
    WitnessPolicy,
    WitnessState,
    checkpoint_of,
)

ORIGIN = "tongban.example/node-1"
NOW = 1_700_000_000


def make_tree(prefix: str, size: int) -> MerkleTree:
    return MerkleTree(f"{prefix}{i}".encode() for i in range(size))


class Log:
    """A log that can sign anything, including checkpoints it should never sign."""

    def __init__(self) -> None:
        self.signer = Signer.generate(ORIGIN)

    def note(self, tree: MerkleTree, size: int | None = None) -> bytes:
        size = tree.size if size is None else size
        return sign_checkpoint(Checkpoint(ORIGIN, size, tree.root(size)), self.signer)


@pytest.fixture
def log() -> Log:
    return Log()


def make_witness(log: Log, name: str = "witness.example/w1") -> Witness:
    return Witness(Cosigner.generate(name), {ORIGIN: log.signer.verifier()}, clock=lambda: NOW)


def test_cosigns_first_checkpoint_then_consistent_growth(log: Log) -> None:
    witness = make_witness(log)
    tree = make_tree("leaf", 5)
    first = log.note(tree)
    line = witness.add_checkpoint(first, 0, [])
    assert line.startswith("— witness.example/w1 ".encode())
    latest = witness.latest(ORIGIN)
    assert latest is not None
    assert (latest.size, latest.root) == (5, tree.root())
    for i in range(5, 12):
        tree.append(f"leaf{i}".encode())
    second = log.note(tree)
    line2 = witness.add_checkpoint(second, 5, tree.consistency_proof(5))
    cosigned = attach_cosignatures(second, line2)
    policy = WitnessPolicy(1, [CosignatureVerifier.from_key(witness.verifier_key())])
    result = policy.require_final(cosigned, log.signer.verifier())
    assert result.final
    assert result.witnesses == ("witness.example/w1",)
    assert result.cosignatures[0].timestamp == NOW
    # Re-submitting the same checkpoint is idempotent: it is cosigned again.
    assert witness.add_checkpoint(second, 12, [])


def test_log_signing_two_inconsistent_checkpoints_is_caught(log: Log) -> None:
    """The log forks after leaf 5: view A and view B share 5 leaves then differ."""
    witness = make_witness(log)
    view_a, view_b = make_tree("leaf", 5), make_tree("leaf", 5)
    witness.add_checkpoint(log.note(view_a), 0)
    for i in range(5, 8):
        view_a.append(f"leaf{i}".encode())
        view_b.append(f"forged{i}".encode())
    note_a = log.note(view_a)
    line_a = witness.add_checkpoint(note_a, 5, view_a.consistency_proof(5))

    # Same size, different root: irrefutable evidence of a split view.
    note_b = log.note(view_b)
    with pytest.raises(SplitViewError, match="two checkpoints of size 8") as fork:
        witness.add_checkpoint(note_b, 8, [])
    evidence = fork.value.evidence
    assert evidence.kind is EvidenceKind.FORK
    # The evidence holds what the witness vouched for (with its cosignature) and the fork.
    assert (evidence.cosigned_note, evidence.new_note) == (
        attach_cosignatures(note_a, line_a),
        note_b,
    )
    assert fork.value.status == 422  # tlog-witness: same size, other root
    # Both notes in the evidence verify with the log's own key: the log cannot deny them.
    a = open_checkpoint(evidence.cosigned_note, log.signer.verifier()).checkpoint
    b = open_checkpoint(evidence.new_note, log.signer.verifier()).checkpoint
    assert a.size == b.size and a.root != b.root
    assert checkpoint_of(evidence) == (a, b)

    # Growing the forked view with a proof valid inside view B is refused too.
    for i in range(8, 11):
        view_b.append(f"forged{i}".encode())
    proof_b = view_b.consistency_proof(8)
    verify_consistency(8, 11, proof_b, view_b.root(8), view_b.root())  # valid for B...
    with pytest.raises(SplitViewError, match="not proven consistent") as grown:
        witness.add_checkpoint(log.note(view_b), 8, proof_b)  # ...but not from A
    assert grown.value.evidence.kind is EvidenceKind.INCONSISTENT_PROOF
    assert grown.value.evidence.proof == tuple(proof_b)
    assert grown.value.status == 422

    # Nothing changed; all the evidence is kept.
    latest = witness.latest(ORIGIN)
    assert latest is not None and latest.root == view_a.root()
    kinds = [e.kind for e in witness.store.evidence(ORIGIN)]
    assert kinds == [EvidenceKind.FORK, EvidenceKind.INCONSISTENT_PROOF]


def test_rollback_is_refused_with_evidence(log: Log) -> None:
    witness = make_witness(log)
    tree = make_tree("leaf", 9)
    witness.add_checkpoint(log.note(tree), 0)
    with pytest.raises(RollbackError, match="size 4 is smaller than the size 9") as info:
        witness.add_checkpoint(log.note(tree, 4), 9)
    assert info.value.evidence.kind is EvidenceKind.ROLLBACK
    assert witness.store.evidence()[0].new_note == log.note(tree, 4)


def test_refusals_that_are_not_evidence(log: Log) -> None:
    witness = make_witness(log)
    tree = make_tree("leaf", 6)
    note = log.note(tree)
    with pytest.raises(WitnessError, match="a consistency proof from size 0 must be empty") as e:
        witness.add_checkpoint(note, 0, [tree.root()])
    assert e.value.status == 422  # tlog-witness: a proof from size 0 is unprocessable
    witness.add_checkpoint(note, 0)
    tree.append(b"more")
    newer = log.note(tree)
    with pytest.raises(WitnessConflictError, match="old size 3 does not match") as conflict:
        witness.add_checkpoint(newer, 3, tree.consistency_proof(3))
    assert (conflict.value.latest_size, conflict.value.status) == (6, 409)
    with pytest.raises(WitnessError, match="old size 8 is larger than checkpoint size 7"):
        witness.add_checkpoint(newer, 8)
    with pytest.raises(WitnessError, match="unknown log origin 'other.example/log'") as unknown:
        other = Signer.generate("other.example/log")
        witness.add_checkpoint(
            sign_checkpoint(Checkpoint("other.example/log", 1, tree.root(1)), other), 0
        )
    assert unknown.value.status == 404
    with pytest.raises(WitnessError, match="rejected") as forbidden:
        witness.add_checkpoint(Log().note(tree), 6, tree.consistency_proof(6))
    assert forbidden.value.status == 403
    with pytest.raises(WitnessError, match="malformed checkpoint") as malformed:
        witness.add_checkpoint(b"not a note", 6)
    assert malformed.value.status == 400
    with pytest.raises(WitnessError, match="hash 0 is 31 bytes"):
        witness.add_checkpoint(newer, 6, [b"\x00" * 31])
    with pytest.raises(WitnessError, match="64 hashes, more than 63"):
        witness.add_checkpoint(newer, 6, [b"\x00" * 32] * 64)
    with pytest.raises(WitnessError, match="non-negative integer"):
        witness.add_checkpoint(newer, -1)
    assert witness.store.evidence() == []
    latest = witness.latest(ORIGIN)
    assert latest is not None and latest.size == 6


def test_concurrent_update_is_a_conflict(log: Log) -> None:
    class RacingStore(InMemoryWitnessStore):
        def swap(self, expected: WitnessState | None, new: WitnessState) -> bool:
            # Another request wins the race just before this one stores its state.
            super().swap(expected, WitnessState(new.origin, 99, b"\x00" * 32, b""))
            return super().swap(expected, new)

    witness = Witness(
        Cosigner.generate("w"), {ORIGIN: [log.signer.verifier()]}, RacingStore(), clock=lambda: NOW
    )
    with pytest.raises(WitnessConflictError, match="changed concurrently") as info:
        witness.add_checkpoint(log.note(make_tree("x", 3)), 0)
    assert info.value.latest_size == 99


def test_evidence_round_trips_as_json(log: Log) -> None:
    evidence = SplitViewEvidence(
        origin=ORIGIN,
        kind=EvidenceKind.FORK,
        reason="r",
        cosigned_note=log.note(make_tree("a", 2)),
        new_note=log.note(make_tree("b", 2)),
        old_size=2,
        proof=(b"\x01" * 32,),
        observed_at=NOW,
    )
    assert SplitViewEvidence.from_dict(evidence.to_dict()) == evidence
    with pytest.raises(LedgerError, match="malformed split-view evidence"):
        SplitViewEvidence.from_dict({"origin": ORIGIN})


def test_witness_configuration_errors(log: Log) -> None:
    with pytest.raises(WitnessError, match="no log verifier configured"):
        Witness(Cosigner.generate("w"), {ORIGIN: []})
    assert make_witness(log).verifier_key().startswith("witness.example/w1+")
    assert make_witness(log).name == "witness.example/w1"


class Network:
    """A log plus three witnesses, to exercise the k-of-n policy."""

    def __init__(self) -> None:
        self.log = Log()
        self.cosigners = [Cosigner.generate(f"w{i}.example", clock=lambda: NOW) for i in range(3)]
        self.tree = make_tree("leaf", 4)
        self.note = self.log.note(self.tree)

    def cosigned(self, *which: int) -> bytes:
        note = self.note
        for i in which:
            witness = Witness(self.cosigners[i], {ORIGIN: self.log.signer.verifier()})
            note = attach_cosignatures(note, witness.add_checkpoint(self.note, 0))
        return note

    def policy(self, k: int) -> WitnessPolicy:
        return WitnessPolicy(k, [c.verifier() for c in self.cosigners])


def test_policy_k_of_n() -> None:
    net = Network()
    log_key = net.log.signer.verifier()
    assert WitnessPolicy(0).require_final(net.note, log_key).final  # single node
    one = net.cosigned(0)
    result = net.policy(2).evaluate(one, log_key)
    assert not result.final and result.witnesses == ("w0.example",)
    with pytest.raises(PolicyError, match="has 1 of the 2 required witness cosignatures"):
        net.policy(2).require_final(one, log_key)
    two = net.cosigned(0, 2)
    assert net.policy(2).require_final(two, log_key).witnesses == ("w0.example", "w2.example")
    assert net.policy(3).evaluate(two, log_key).final is False


def test_policy_rejects_forgeries_and_ignores_strangers() -> None:
    net = Network()
    log_key = net.log.signer.verifier()
    stranger = Cosigner.generate("stranger.example")
    with_stranger = attach_cosignatures(
        net.cosigned(0), stranger.signature_line(parse_note(net.note).text).encode()
    )
    assert net.policy(1).evaluate(with_stranger, log_key).witnesses == ("w0.example",)
    # A cosignature line that claims to be w1's key but does not verify is never ignored.
    forged = NoteSignature(
        "w1.example", net.cosigners[1].key_id, NOW.to_bytes(8, "big") + b"\x00" * 64
    )
    with pytest.raises(InvalidSignatureError, match="w1.example"):
        net.policy(1).evaluate(attach_cosignatures(net.note, forged.line().encode()), log_key)
    # Cosignatures without the log's own signature are not enough.
    only_witness = net.cosigned(0).replace(parse_note(net.note).unverified[0].line().encode(), b"")
    with pytest.raises(UnverifiedNoteError):
        net.policy(1).evaluate(only_witness, log_key)


def test_policy_counts_a_rotated_witness_once() -> None:
    net = Network()
    rotated = Cosigner.generate("w0.example", clock=lambda: NOW)
    witness_new = Witness(rotated, {ORIGIN: net.log.signer.verifier()})
    note = attach_cosignatures(net.cosigned(0), witness_new.add_checkpoint(net.note, 0))
    policy = WitnessPolicy(1, [net.cosigners[0].verifier(), rotated.verifier()])
    result = policy.evaluate(note, net.log.signer.verifier())
    assert result.witnesses == ("w0.example",)
    with pytest.raises(PolicyError, match="could never be met"):
        WitnessPolicy(2, [net.cosigners[0].verifier(), rotated.verifier()])


def test_policy_validation() -> None:
    with pytest.raises(PolicyError, match="must be given as a cosignature/v1 verifier"):
        WitnessPolicy(1, [Signer.generate("w0.example").verifier()])  # type: ignore[list-item]
    with pytest.raises(PolicyError, match="non-negative integer"):
        WitnessPolicy(-1)
    with pytest.raises(PolicyError, match="needs 1 cosignatures but names only 0"):
        WitnessPolicy(1)
    assert WitnessPolicy(0).names == frozenset()
    assert WitnessPolicy(0).k == 0

"""The node's witness endpoint over real HTTP, on SQLite and PostgreSQL: attacks first.

A peer's log (``tongban/42``) is made here with ledger primitives, as its own node would; the
witness under test is this node's (``tongban/43``), keeping its state in this node's database.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hub.bootstrap import build_application, initialise
from hub.integrity.integrator import open_ledger_view
from hub.integrity.witnessed import observe_checkpoint
from hub.settings import Settings
from hub.witnessing.service import NodeWitness, origin_hash
from ledger import (
    Checkpoint,
    CosignatureVerifier,
    Cosigner,
    EvidenceKind,
    MerkleTree,
    Signer,
    SplitViewError,
    WitnessPolicy,
    attach_cosignatures,
    sign_checkpoint,
)
from ledger.witness_protocol import MAX_REQUEST_SIZE, format_add_checkpoint
from ledger.witness_storage import SQLWitnessStore
from tests.harness.witness import ServedWitness

PEER = "tongban/42"


@pytest.fixture
def settings(store_url: str | None, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "node", node_region="43", database_url=store_url)


class PeerLog:
    """The peer's log: its key, its leaves, and checkpoints it signs (honest or not)."""

    def __init__(self) -> None:
        self.signer = Signer.generate(PEER)
        self.tree = MerkleTree()

    def grow(self, count: int) -> None:
        for _ in range(count):
            self.tree.append(b"peer event %d" % self.tree.size)

    def note(self, size: int | None = None, tree: MerkleTree | None = None) -> bytes:
        tree = tree or self.tree
        size = tree.size if size is None else size
        return sign_checkpoint(Checkpoint(PEER, size, tree.root(size)), self.signer)


@dataclass
class Node:
    settings: Settings
    cosigner: Cosigner
    peer: PeerLog

    def witness(self) -> tuple[NodeWitness, object]:
        app = build_application(self.settings)
        view = open_ledger_view(app)
        return NodeWitness(view, self.cosigner, {PEER: [self.peer.signer.verifier()]}), app


@pytest.fixture
def node(settings: Settings) -> Node:
    initialise(settings)
    peer = PeerLog()
    peer.grow(10)
    return Node(settings, Cosigner.generate("tongban/43/witness"), peer)


@pytest.fixture
def served(node: Node) -> Iterator[ServedWitness]:
    witness, app = node.witness()
    try:
        with ServedWitness(witness) as running:
            yield running
    finally:
        app.close()  # type: ignore[attr-defined]


def post(served: ServedWitness, body: bytes) -> httpx.Response:
    return httpx.post(served.url + "/add-checkpoint", content=body, timeout=10)


def test_a_peer_checkpoint_is_cosigned_and_the_cosignature_verifies(
    node: Node, served: ServedWitness
) -> None:
    note = node.peer.note()
    response = post(served, format_add_checkpoint(0, (), note))
    assert response.status_code == 200, response.text
    cosigned = attach_cosignatures(note, response.content)
    verifier = CosignatureVerifier.from_key(node.cosigner.verifier_key())
    result = WitnessPolicy(1, [verifier]).require_final(cosigned, node.peer.signer.verifier())  # type: ignore[list-item]
    assert result.witnesses == ("tongban/43/witness",)
    # Monitoring: the latest cosigned checkpoint of that log, with the cosignature.
    monitored = httpx.get(f"{served.url}/{origin_hash(PEER)}/checkpoint", timeout=10)
    assert monitored.status_code == 200
    assert monitored.content == cosigned
    assert httpx.get(f"{served.url}/{'0' * 64}/checkpoint", timeout=10).status_code == 404


def test_attacks_are_refused_with_the_specs_statuses(node: Node, served: ServedWitness) -> None:
    peer = node.peer
    first = format_add_checkpoint(0, (), peer.note())
    assert post(served, first).status_code == 200
    peer.grow(5)
    proof = peer.tree.consistency_proof(10)

    # A checkpoint with a forged log signature: 403.
    forger = Signer.generate(PEER)
    forged = sign_checkpoint(Checkpoint(PEER, 15, peer.tree.root()), forger)
    assert post(served, format_add_checkpoint(10, proof, forged)).status_code == 403
    # A proof that does not connect the cosigned checkpoint to the new one: 422, kept.
    wrong = format_add_checkpoint(10, [bytes(32)] * len(proof), peer.note())
    assert post(served, wrong).status_code == 422
    # Rolled back: an older size, 409 naming the size the witness has.
    rollback = post(served, format_add_checkpoint(0, (), peer.note(6)))
    assert rollback.status_code == 409
    assert rollback.headers["content-type"] == "text/x.tlog.size"
    assert rollback.content == b"10\n"
    # A fork: same size, another root. Refused (422), evidence kept.
    forked_tree = MerkleTree(b"forged %d" % i for i in range(10))
    fork = post(served, format_add_checkpoint(10, (), peer.note(tree=forked_tree)))
    assert fork.status_code == 422
    # An unknown log: 404.
    stranger = Signer.generate("tongban/61")
    unknown = sign_checkpoint(Checkpoint("tongban/61", 3, peer.tree.root(3)), stranger)
    assert post(served, format_add_checkpoint(0, (), unknown)).status_code == 404
    # Malformed and oversize bodies: 400, without reading past the limit.
    assert post(served, b"old ten\n\n" + peer.note()).status_code == 400
    assert post(served, b"old 10\n" + peer.note()).status_code == 400
    assert post(served, b"old 10\n\n" + b"x" * (MAX_REQUEST_SIZE + 1)).status_code == 400
    # Only POST.
    assert httpx.get(served.url + "/add-checkpoint", timeout=10).status_code == 405
    # A replay of the first request, byte for byte: the witness has moved on (409, size 10).
    replay = post(served, first)
    assert (replay.status_code, replay.content) == (409, b"10\n")

    # The honest growth is still cosigned, after all that.
    assert post(served, format_add_checkpoint(10, proof, peer.note())).status_code == 200

    witness = served.witness
    kinds = witness.view.read(
        lambda cursor: [e.kind for e in SQLWitnessStore(witness.view.tables, cursor).evidence()]
    )
    assert kinds == [EvidenceKind.INCONSISTENT_PROOF, EvidenceKind.ROLLBACK, EvidenceKind.FORK]


def test_a_restarted_witness_remembers_what_it_cosigned_and_the_evidence(node: Node) -> None:
    peer = node.peer
    witness, app = node.witness()
    try:
        with ServedWitness(witness) as served:
            assert post(served, format_add_checkpoint(0, (), peer.note())).status_code == 200
            forked = MerkleTree(b"forged %d" % i for i in range(10))
            assert (
                post(served, format_add_checkpoint(10, (), peer.note(tree=forked))).status_code
                == 422
            )
    finally:
        app.close()  # type: ignore[attr-defined]

    # Another process, another connection: the same database.
    witness, app = node.witness()
    try:
        with ServedWitness(witness) as served:
            stale = post(served, format_add_checkpoint(0, (), peer.note(4)))
            assert (stale.status_code, stale.content) == (409, b"10\n")
            peer.grow(3)
            proof = peer.tree.consistency_proof(10)
            assert post(served, format_add_checkpoint(10, proof, peer.note())).status_code == 200
            evidence = witness.view.read(
                lambda cursor: SQLWitnessStore(witness.view.tables, cursor).evidence(PEER)
            )
            assert [e.kind for e in evidence] == [EvidenceKind.FORK, EvidenceKind.ROLLBACK]
    finally:
        app.close()  # type: ignore[attr-defined]


def test_a_checkpoint_seen_in_an_envelope_forks_a_later_witness_request(
    node: Node, served: ServedWitness
) -> None:
    """The relay hands over a checkpoint it saw (observe_checkpoint); a witness request for the
    same size with another root is a fork, even though the witness never cosigned that size."""
    peer = node.peer
    view = served.witness.view
    logs = {PEER: [peer.signer.verifier()]}
    seen = observe_checkpoint(view, logs, peer.note(7))
    assert seen.checkpoint.size == 7
    forked = MerkleTree(b"forged %d" % i for i in range(7))
    response = post(served, format_add_checkpoint(0, (), peer.note(tree=forked)))
    assert response.status_code == 422
    # And the other way round: the relay is shown a checkpoint contradicting one cosigned here.
    assert post(served, format_add_checkpoint(0, (), peer.note())).status_code == 200
    other = MerkleTree(b"other %d" % i for i in range(10))
    with pytest.raises(SplitViewError) as caught:
        observe_checkpoint(view, logs, peer.note(tree=other))
    assert caught.value.evidence.kind is EvidenceKind.FORK
    # Both are kept, with both signed notes.
    evidence = view.read(lambda cursor: SQLWitnessStore(view.tables, cursor).evidence(PEER))
    assert [e.kind for e in evidence] == [EvidenceKind.FORK, EvidenceKind.FORK]
    assert base64.b64encode(evidence[1].new_note)  # the log-signed note that contradicts

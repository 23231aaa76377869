"""This node's checkpoints published to witnesses over HTTP until they are final, and receipts
that cite final checkpoints. One witness is another Tongban node's, the other a standard witness
made from the spec with tlog-scales and cryptography only (tests/harness/standard_witness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tlog_scales.signing import Vkey
from tlog_scales.tlog import Checkpoint as OutsideCheckpoint
from tongban.v1 import audit_pb2

from hub.api.audit import AuditServicer
from hub.bootstrap import build_application, initialise, witnessing_config
from hub.integrity.integrator import open_ledger_view
from hub.integrity.witnessed import final_checkpoint, witnessing_status
from hub.pki import Role, init_ca
from hub.settings import Settings
from hub.witnessing.config import WitnessingConfig, WitnessTarget
from hub.witnessing.publisher import CheckpointPublisher
from hub.witnessing.service import NodeWitness
from ledger import Cosigner, Receipt, Verifier, WitnessPolicy, verify_receipt
from tests.harness.inprocess import InProcessNode
from tests.harness.processes import free_tcp_port
from tests.harness.standard_witness import StandardWitness
from tests.harness.witness import ServedWitness


@pytest.fixture
def node(store_url: str | None, tmp_path: Path) -> Iterator[InProcessNode]:
    settings = Settings(data_dir=tmp_path / "hunan", node_region="43", database_url=store_url)
    running = InProcessNode.start(settings)
    running.add_hall("hn-town", "430902104000")
    running.integrator().catch_up()
    yield running
    running.close()


@pytest.fixture
def peer_witness(tmp_path: Path, node: InProcessNode) -> Iterator[ServedWitness]:
    """Node 42's witness (its own SQLite store), trusting node 43's log key."""
    settings = Settings(data_dir=tmp_path / "hubei", node_region="42")
    initialise(settings)
    app = build_application(settings)
    cosigner = Cosigner.generate("tongban/42/witness")
    log_key = Verifier.from_key(node.integrator().signer.verifier_key())
    try:
        with ServedWitness(
            NodeWitness(open_ledger_view(app), cosigner, {"tongban/43": [log_key]})
        ) as served:
            served.cosigner = cosigner  # type: ignore[attr-defined]
            yield served
    finally:
        app.close()


@pytest.fixture
def standard_witness(node: InProcessNode) -> Iterator[StandardWitness]:
    log_key = node.integrator().signer.verifier_key()
    with StandardWitness("witness.example/w9", {"tongban/43": log_key}) as witness:
        yield witness


def config(node: InProcessNode, k: int, *targets: WitnessTarget) -> WitnessingConfig:
    return WitnessingConfig(
        origin="tongban/43",
        log_key=node.integrator().signer.verifier_key(),
        witness_k=k,
        targets=targets,
        logs=(),
    )


def test_checkpoints_become_final_and_receipts_cite_them(
    node: InProcessNode, peer_witness: ServedWitness, standard_witness: StandardWitness
) -> None:
    peer = WitnessTarget(
        "tongban/42/witness",
        peer_witness.cosigner.verifier_key(),  # type: ignore[attr-defined]
        peer_witness.url,
    )
    outside = WitnessTarget(
        "witness.example/w9", standard_witness.verifier_key, standard_witness.url
    )
    settings = config(node, 2, peer, outside)
    view = node.integrator().view
    publisher = CheckpointPublisher(view, settings, interval=3600)
    policy, log_key = settings.policy(), settings.log_verifier()
    try:
        assert final_checkpoint(view, 0, policy, log_key) is None
        first = publisher.publish()
        assert [(o.witness, o.status) for o in first] == [
            ("tongban/42/witness", 200),
            ("witness.example/w9", 200),
        ]
        size = node.log_size()
        final = final_checkpoint(view, 0, policy, log_key)
        assert final is not None and final.size == size
        assert sorted(final.witnesses) == ["tongban/42/witness", "witness.example/w9"]
        # The final note verifies outside the project too: tlog-scales checks the log's
        # signature and both cosignatures.
        outside_note = OutsideCheckpoint.from_text(final.note.decode())
        outside_note.verify(Vkey.from_string(settings.log_key))
        outside_note.verify(Vkey.from_string(standard_witness.verifier_key))
        outside_note.verify(Vkey.from_string(peer.verifier_key))

        # Nothing new: nothing is sent again before the interval.
        assert publisher.publish() == []

        # The log grows: the new checkpoint goes out with a consistency proof from the size
        # each witness cosigned, and becomes the latest final one.
        node.add_hall("hn-village", "430902104201")
        node.integrator().catch_up()
        grown = publisher.publish()
        assert [o.status for o in grown] == [200, 200]
        assert standard_witness.requests[-1][1].startswith(b"old %d\n" % size)
        latest = final_checkpoint(view, 0, policy, log_key)
        assert latest is not None and latest.size == node.log_size() > size

        # A receipt for the first leaf cites the final checkpoint and verifies under k = 2.
        leaf = view.read(lambda cursor: view.tables.leaves(cursor, 0, 1))[0]
        proof = view.read(lambda cursor: view.tables.inclusion_proof(cursor, 0, latest.size))
        receipt = Receipt.for_leaf(leaf, proof, latest.note)
        verified = verify_receipt(receipt.format(), log_key, policy)
        assert verified.leaf == leaf
        with pytest.raises(Exception, match="cosignatures"):
            verify_receipt(
                Receipt.for_leaf(
                    leaf, proof, view.read(view.tables.latest_checkpoint).note
                ).format(),
                log_key,
                policy,
            )
    finally:
        publisher.close()


def test_a_409_is_followed_and_failures_are_recorded(
    node: InProcessNode, peer_witness: ServedWitness, standard_witness: StandardWitness
) -> None:
    peer = WitnessTarget(
        "tongban/42/witness",
        peer_witness.cosigner.verifier_key(),  # type: ignore[attr-defined]
        peer_witness.url,
    )
    view = node.integrator().view
    first = CheckpointPublisher(view, config(node, 1, peer), interval=3600)
    assert [o.status for o in first.publish()] == [200]
    first.close()
    cosigned = node.log_size()

    # This node loses its record of what the witness cosigned (restored from an old backup):
    # it asks with old size 0, the witness answers 409 with its size, and the retry succeeds.
    view.write(
        lambda cursor: cursor.execute(f"DELETE FROM {view.tables.witness.cosignatures_table}")
    )
    node.add_hall("hn-village", "430902104201")
    node.integrator().catch_up()
    again = CheckpointPublisher(view, config(node, 1, peer), interval=3600)
    try:
        (outcome,) = again.publish()
        assert (outcome.status, outcome.cosigned_size) == (200, node.log_size())
        assert node.log_size() > cosigned
    finally:
        again.close()

    # A witness answering with another key's cosignature, and one that does not answer.
    impostor = WitnessTarget(
        "witness.example/w9",
        Cosigner.generate("witness.example/w9").verifier_key(),
        standard_witness.url,
    )
    closed = WitnessTarget(
        "tongban/61/witness",
        Cosigner.generate("tongban/61/witness").verifier_key(),
        "http://127.0.0.1:9",
    )
    failing = CheckpointPublisher(view, config(node, 1, impostor, closed), interval=3600)
    try:
        outcomes = {o.witness: o for o in failing.publish()}
    finally:
        failing.close()
    assert outcomes["witness.example/w9"].status == 200
    assert "no cosignature by this witness's key" in outcomes["witness.example/w9"].message
    assert outcomes["tongban/61/witness"].status == 0
    status = witnessing_status(
        view, config(node, 1, impostor, closed).policy(), config(node, 1, peer).log_verifier()
    )
    assert "witness.example/w9" not in status.cosigned_by  # nothing unverified was kept
    recorded = {s.witness: s.status for s in status.submissions}
    assert recorded == {
        "tongban/42/witness": 200,
        "witness.example/w9": 200,
        "tongban/61/witness": 0,
    }
    assert status.final is None  # k = 1 of (impostor, closed): neither cosigned
    assert WitnessPolicy(0).k == 0


def test_a_witness_that_cosigned_more_of_this_log_than_it_holds_says_the_log_lost_leaves(
    node: InProcessNode, standard_witness: StandardWitness
) -> None:
    """A witness remembers the largest tree of this log it cosigned. If it answers 409 with a
    size above this node's latest checkpoint, this node has lost leaves it signed (a backup
    restored, a log cut short): the publisher does not retry from that size, and the outcome
    says so, in the record ``tongban federation witness`` shows. A 409 whose size is not a
    number, and any other refusal, are recorded with what the witness said."""
    outside = WitnessTarget(
        "witness.example/w9", standard_witness.verifier_key, standard_witness.url
    )
    view = node.integrator().view
    settings = config(node, 1, outside)
    publisher = CheckpointPublisher(view, settings, interval=3600)
    try:
        assert [o.status for o in publisher.publish()] == [200]
        size, root = standard_witness.state["tongban/43"]
        standard_witness.state["tongban/43"] = (size + 5, root)  # cosigned before a restore
        (ahead,) = publisher.publish(force=True)
        assert ahead.status == 409 and ahead.cosigned_size is None
        assert ahead.message == (
            f"the witness has cosigned size {size + 5} of this log, more than its latest "
            f"checkpoint ({size}): this log lost leaves it signed"
        )
        assert len(standard_witness.requests) == 2  # not retried from the witness's size

        answers = iter([(409, "text/x.tlog.size", b"many\n"), (403, "text/plain", b"bad key\n")])
        standard_witness.add_checkpoint = lambda _body: next(answers)  # type: ignore[method-assign]
        (garbled,) = publisher.publish(force=True)
        assert garbled.status == 409 and garbled.message.startswith("409 with a malformed size")
        (refused,) = publisher.publish(force=True)
        assert (refused.status, refused.message) == (403, "bad key")
    finally:
        publisher.close()
    status = witnessing_status(view, settings.policy(), settings.log_verifier())
    assert [(s.witness, s.status, s.message) for s in status.submissions] == [
        ("witness.example/w9", 403, "bad key")
    ]


def test_a_witness_over_https_is_checked_against_the_peers_ca(
    tmp_path: Path, node: InProcessNode
) -> None:
    """TONGBAN_WITNESS_TLS: the endpoint serves the node certificate; the publisher verifies it
    with the CA the federation file names for that peer, and refuses any other."""
    hubei_ca = init_ca(tmp_path / "pki-42", "hubei")
    certificate, key = hubei_ca.issue(
        Role.NODE, "node", dns_names=("localhost",), ip_addresses=("127.0.0.1",)
    ).write(tmp_path / "pki-42")
    init_ca(tmp_path / "pki-other", "other")  # a CA that did not certify the witness
    settings = Settings(data_dir=tmp_path / "hubei", node_region="42")
    initialise(settings)
    app = build_application(settings)
    cosigner = Cosigner.generate("tongban/42/witness")
    log_key = Verifier.from_key(node.integrator().signer.verifier_key())
    witness = NodeWitness(open_ledger_view(app), cosigner, {"tongban/43": [log_key]})
    view = node.integrator().view
    try:
        with ServedWitness(witness, tls=(certificate, key)) as served:
            assert served.url.startswith("https://")
            trusted = WitnessTarget(
                "tongban/42/witness",
                cosigner.verifier_key(),
                served.url,
                tmp_path / "pki-42" / "ca.pem",
            )
            publisher = CheckpointPublisher(view, config(node, 1, trusted), interval=3600)
            try:
                assert [o.status for o in publisher.publish()] == [200]
            finally:
                publisher.close()
            assert final_checkpoint(view, 0, config(node, 1, trusted).policy(), log_key) is not None
            stranger = WitnessTarget(
                "tongban/42/witness",
                cosigner.verifier_key(),
                served.url,
                tmp_path / "pki-other" / "ca.pem",
            )
            doubting = CheckpointPublisher(view, config(node, 1, stranger), interval=3600)
            try:
                (outcome,) = doubting.publish(force=True)
            finally:
                doubting.close()
            assert outcome.status == 0 and "CERTIFICATE_VERIFY_FAILED" in outcome.message
    finally:
        app.close()


def test_a_witness_from_outside_the_federation_is_named_in_the_federation_file(
    node: InProcessNode, standard_witness: StandardWitness, tmp_path: Path
) -> None:
    """``[[witnesses]]``: an operator names a standard witness in the federation file; the
    node asks it to cosign, and its cosignature alone makes a checkpoint final under k = 1."""
    federation = tmp_path / "federation.toml"
    federation.write_text(
        '[kafka]\nbootstrap = ["127.0.0.1:9"]\n\n[relay]\nwitness_k = 1\n\n'
        f'[[witnesses]]\nwitness_key = "{standard_witness.verifier_key}"\n'
        f'url = "{standard_witness.url}"\nname = "an outside witness"\n',
        "utf-8",
    )
    settings = witnessing_config(node.settings.with_changes(federation=federation))
    assert settings is not None
    assert [(t.name, t.url) for t in settings.targets] == [
        ("witness.example/w9", standard_witness.url)
    ]
    view = node.integrator().view
    publisher = CheckpointPublisher(view, settings, interval=3600)
    try:
        assert [(o.witness, o.status) for o in publisher.publish()] == [("witness.example/w9", 200)]
        final = final_checkpoint(view, 0, settings.policy(), settings.log_verifier())
        assert final is not None and final.size == node.log_size()
        assert final.witnesses == ("witness.example/w9",)
    finally:
        publisher.close()


def test_a_case_historys_receipts_cite_the_final_checkpoint(
    node: InProcessNode, peer_witness: ServedWitness
) -> None:
    """``Audit.GetCaseHistory``: once a final checkpoint covers a case's leaves, their receipts
    cite it (its cosignatures in the note), so they verify under the witness policy too; a leaf
    after it cites the first checkpoint over it, which verifies under the log key alone."""
    peer = WitnessTarget(
        "tongban/42/witness",
        peer_witness.cosigner.verifier_key(),  # type: ignore[attr-defined]
        peer_witness.url,
    )
    settings = config(node, 1, peer)
    policy, log_key = settings.policy(), settings.log_verifier()
    view = node.integrator().view
    result = node.submit(node.halls["hn-town"])
    node.integrator().catch_up()
    publisher = CheckpointPublisher(view, settings, interval=3600)
    try:
        assert [o.status for o in publisher.publish()] == [200]
    finally:
        publisher.close()
    node.run(node.halls["hn-town"], "accept", case_id=str(result.case_id))
    node.integrator().catch_up()  # a checkpoint over the accept, not cosigned

    audit = AuditServicer(
        node.app, view, lambda _context: None, lambda index: final_checkpoint(
            view, index, policy, log_key
        ),
    )  # fmt: skip
    history = audit.GetCaseHistory(audit_pb2.AuditCaseRequest(case_id=str(result.case_id)), None)
    submitted, accepted = history.events
    assert verify_receipt(submitted.receipt.encode(), log_key, policy).leaf.index == submitted.index
    (command,) = [c for c in history.commands if c.index == submitted.command_index]
    verify_receipt(command.receipt.encode(), log_key, policy)
    # The accept came after the final checkpoint: its receipt has the log's signature only.
    verify_receipt(accepted.receipt.encode(), log_key, WitnessPolicy(0, []))
    with pytest.raises(Exception, match="cosignatures"):
        verify_receipt(accepted.receipt.encode(), log_key, policy)


def test_the_latest_checkpoint_is_sent_again_every_interval_and_a_failed_witness_after_5_s(
    node: InProcessNode, standard_witness: StandardWitness
) -> None:
    """``TONGBAN_WITNESS_INTERVAL_S``: a witness that cosigned the latest checkpoint is asked
    again once the interval is up (its cosignature's timestamp stays fresh); one that did not
    answer is asked again after 5 seconds, not at every round."""
    now = [0.0]
    outside = WitnessTarget(
        "witness.example/w9", standard_witness.verifier_key, standard_witness.url
    )
    down = WitnessTarget(
        "tongban/42/witness",
        Cosigner.generate("tongban/42/witness").verifier_key(),
        f"http://127.0.0.1:{free_tcp_port()}",  # nothing listens there
    )
    publisher = CheckpointPublisher(
        node.integrator().view, config(node, 1, outside, down), interval=60, clock=lambda: now[0]
    )
    try:
        first = publisher.publish()
        assert [(o.witness, o.status) for o in first] == [
            ("witness.example/w9", 200),
            ("tongban/42/witness", 0),
        ]
        now[0] = 4.0
        assert publisher.publish() == []  # nothing new; the failed witness waits
        now[0] = 5.0
        assert [o.witness for o in publisher.publish()] == ["tongban/42/witness"]
        now[0] = 59.0
        assert [o.witness for o in publisher.publish()] == ["tongban/42/witness"]
        now[0] = 61.0  # the interval is up for the witness that cosigned
        again = publisher.publish()
        assert ("witness.example/w9", 200) in [(o.witness, o.status) for o in again]
    finally:
        publisher.close()

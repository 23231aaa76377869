"""Cases shared between nodes over a real Kafka-protocol broker: 异地代收代办 end to end.

Two nodes in this process (湖南 43 and 陕西 61), each with its own SQLite store, keys, CA,
integrator and relay, exchanging signed envelopes through the test broker.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import Tracking
from kafka import KafkaConsumer
from tongban.v1 import common_pb2, federation_pb2

from hub import telemetry
from hub.application.peers import Applied, IncomingStep, NotYet, StepRefused, apply_peer_step
from hub.bootstrap import federation_identity, open_node_projections
from hub.cli import main as cli_main
from hub.commands.federation import parse_envelope
from hub.commands.model import PersonalValue
from hub.commands.signing import CommandSigner
from hub.domain.federation import PeerStep, acknowledgement_id, peer_step_id
from hub.domain.supervision import warning_due
from hub.domain.values import CaseState, CrossRegionMode, WarningKind
from hub.errors import IntegrityViolation, InvalidInput, NotFound, StorageUnavailable
from hub.integrity.audit import audit_store
from hub.integrity.citations import check_citations
from hub.integrity.store import ReadOnlyStore
from hub.integrity.witnessed import evidence_count
from hub.projections.queries import Names, rank_windows, statistics
from hub.relay.envelope import seal_personal, sign_ack, sign_envelope
from hub.relay.outbound import (
    OUTBOX_PROJECTION,
    LeafMemory,
    RecordMemory,
    refusal,
    stored_after,
)
from hub.settings import Settings
from hub.witnessing.service import NodeWitness
from ledger import (
    Checkpoint,
    Cosigner,
    EvidenceKind,
    Leaf,
    Signer,
    Verifier,
    peek_checkpoint,
    sign_checkpoint,
)
from ledger.witness_protocol import format_add_checkpoint
from ledger.witness_storage import SQLWitnessStore
from tests.harness.availability import service_unavailable
from tests.harness.broker import TansuBroker
from tests.harness.errors import ServiceUnavailable
from tests.harness.federation import Federation, Member
from tests.harness.inprocess import APPLICANT, InProcessNode, material
from tests.harness.postgres import PostgresCluster
from tests.harness.tamper import integrate_without_the_gate, rewrite_last_event

ID_CARD = "070302001000"  # 居民身份证换领: county level, 异地代收代办 from every province
BAIHE = "610929000000"  # 白河县, 陕西
SHATOU = "430902104000"  # 沙头镇, 湖南


@pytest.fixture
def federation(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Federation]:
    with Federation.start(tmp_path, kafka_bootstrap, regions=("43", "61")) as started:
        yield started


def _state(member: Any, case_id: Any) -> CaseState:
    return member.app.get_case(case_id).state


def test_offsite_intake_reaches_the_competent_node_and_the_result_comes_back(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hunan, shaanxi = federation.nodes["43"], federation.nodes["61"]
    town = hunan.node.add_hall("hn-shatou-town", SHATOU, "沙头镇便民服务中心")
    county = shaanxi.node.add_hall("sx-baihe-county", BAIHE, "白河县政务服务中心")

    submitted = hunan.node.run(
        town, "submit", idempotency_key="offsite-0001", item_code=ID_CARD,
        applicant=APPLICANT, materials=[material()], competent_region=BAIHE,
    )  # fmt: skip
    case_id = submitted.case_id
    # The competent node gets its copy of the case, with the applicant sealed to it.
    federation.wait(lambda: shaanxi.app.get_case(case_id), "the case reached 61")
    copy = shaanxi.app.get_case(case_id)
    assert copy.intake_hall == f"hn-shatou-town@{SHATOU}"
    opened = shaanxi.app.open_applicant(copy)
    assert opened is not None and opened.applicant == APPLICANT

    hunan.node.run(town, "accept", idempotency_key="offsite-0002", case_id=str(case_id))
    hunan.node.run(
        town, "hand_off", idempotency_key="offsite-0003", case_id=str(case_id),
        to_hall=f"sx-baihe-county@{BAIHE}", reason="异地代收: 转户籍地办理",
    )  # fmt: skip
    federation.wait(
        lambda: _state(shaanxi, case_id) is CaseState.HANDED_OFF, "the handoff reached 61"
    )
    for number, (action, extra) in enumerate(
        [
            ("acknowledge_handoff", {}),  # the county holds it and handles it from here
            ("decide", {"approved": True, "reason": "材料齐全, 准予换领"}),
            ("conclude", {}),
            # 白河县 issues the electronic certificate (a signed step that reaches 43 too).
            (
                "issue_certificate",
                {
                    "type_code": "110001",
                    "issuer_code": "11610929MB0000001X",
                    "authority": "白河县公安局",
                    "valid_until": "2046-03-01",
                },
            ),
        ]
    ):
        shaanxi.node.run(
            county, action, idempotency_key=f"baihe-{number:04d}", case_id=str(case_id), **extra
        )
    federation.wait(
        lambda: _state(hunan, case_id) is CaseState.CERTIFICATE_ISSUED, "the result reached 43"
    )
    issued = shaanxi.app.get_case(case_id).certificate_id
    assert issued.startswith("1.2.156.3005.2.110001.11610929MB0000001X.")
    assert hunan.app.get_case(case_id).certificate_id == issued  # the same identifier at 43
    # 一窗发证 at the Hunan window: 白河县's signed certificate, checked at 43 offline with the
    # trust bundle 61 exported (named in 43's federation file), without calling 61.
    token = _certificate_token(federation, shaanxi, case_id)
    _check_the_token_at_the_window(federation, hunan, town, case_id, token)
    # Anyone, offline, with the bundles of the nodes they trust (merged): valid; without 61's,
    # 61's certificate is of an unknown issuer.
    card = tmp_path / "card.jws"
    card.write_text(token + "\n")
    bundles = [str(tmp_path / f"trust-{region}.json") for region in ("43", "61")]
    verify = ["cert", "verify", str(card)]
    assert cli_main([*verify, "--trust", bundles[0], "--trust", bundles[1]]) == 0
    assert capsys.readouterr().out.startswith("valid: ")
    assert cli_main([*verify, "--trust", bundles[0]]) != 0
    assert capsys.readouterr().out.startswith("unknown issuer")
    # Two bundles that say different things of one log are refused, naming the second.
    log = {"origin": "tongban/61", "log_keys": [shaanxi.node.app.genesis().log_key]}
    witness = federation_identity(hunan.node.settings)["witness_key"]
    for name, extra in (("one", {}), ("other", {"witness_keys": [witness], "witness_k": 1})):
        document = {**json.loads(Path(bundles[1]).read_text()), "logs": [{**log, **extra}]}
        (tmp_path / f"{name}.json").write_text(json.dumps(document))
    altered = tmp_path / "other.json"
    assert cli_main([*verify, "--trust", str(tmp_path / "one.json"), "--trust", str(altered)]) != 0
    assert f"{altered}: logs: tongban/61 differs" in capsys.readouterr().err
    hunan.node.run(
        town, "deliver", idempotency_key="offsite-0004", case_id=str(case_id),
        method=common_pb2.DELIVERY_METHOD_OFFSITE_WINDOW, note="本人到沙头镇窗口领取",
        certificate_token=token,
    )  # fmt: skip
    hunan.node.run(
        town, "rate", idempotency_key="offsite-0005", case_id=str(case_id),
        rating=common_pb2.RATING_VERY_SATISFIED, comment="不用回白河",
    )  # fmt: skip
    federation.wait(lambda: _state(shaanxi, case_id) is CaseState.RATED, "the rating reached 61")
    assert _state(hunan, case_id) is CaseState.RATED
    assert hunan.app.get_case(case_id).version == shaanxi.app.get_case(case_id).version

    # Every envelope is acknowledged, and both logs verify with public keys alone.
    federation.wait(
        lambda: not hunan.relay.store.backlog() and not shaanxi.relay.store.backlog(),
        "every envelope acknowledged",
    )
    for member in (hunan, shaanxi):
        federation.halt(member)  # its integrator and relay stop; the log is complete
    for member in (hunan, shaanxi):
        other = shaanxi if member is hunan else hunan
        member.node.integrator().catch_up()
        report = _audit(member, {other.origin: _log_verifier(other)})
        assert report.ok, [str(finding) for finding in report.findings]
    # Each log's citations of the other, followed into the other's store.
    citations = _citations(hunan, shaanxi)
    assert citations.ok, citations.problems
    assert citations.checked >= 10 and citations.unchecked == 0
    # The same from the command line, as an auditor with copies of both stores runs it.
    stores = [str(m.node.settings.sqlite_path) for m in (hunan, shaanxi)]
    assert cli_main(["audit", "citations", *stores]) == 0
    assert cli_main(["audit", "citations", stores[0]]) == 0  # the other log: counted, unchecked
    for member in (hunan, shaanxi):
        # Without the peer's key the steps it sent cannot be checked: the auditor says so.
        blind = _audit(member, {})
        assert not blind.ok
        assert any("peer key unknown" in str(finding) for finding in blind.findings)
    # Each node's statistics count the shared case from its side: taken in at 43 for a region
    # of Shaanxi (out), and at 61 a case taken in elsewhere for its province (in).
    for member, counter in ((hunan, "cross_province_out"), (shaanxi, "cross_province_in")):
        assert _statistics(member, region=SHATOU)[counter] == 1
    # At 61 the case counts where 61 handles it: in Shaanxi's figures, under 安康市 (6109),
    # and in no window ranking of Shaanxi's.
    shaanxi_figures = _statistics(shaanxi, region="61")
    assert (shaanxi_figures["cross_province_in"], shaanxi_figures["received"]) == (1, 1)
    (row,) = _statistics(shaanxi, region="61", rows=True)
    assert (row.key, row.figures["cross_province_in"]) == ("6109", 1)
    assert _statistics(shaanxi, region="61", ranking=True) == []  # 43's window is not 61's
    assert [w.hall_id for w in _statistics(hunan, region="43", ranking=True)] == ["hn-shatou-town"]
    assert _statistics(hunan, region="43")["cross_province_out"] == 1


def _certificate_token(federation: Federation, issuer: Member, case_id: Any) -> str:
    """The certificate as the issuing node writes it (`tongban cert issue` there), once the
    node's running integrator has put the issuing event into its log."""
    from hub.bootstrap import load_certificate_issuer
    from hub.certificates import claims_for, sign_certificate
    from hub.domain.case import Case

    app = issuer.app
    event = [e for e in app.case_history(case_id) if isinstance(e, Case.CertificateIssued)][-1]
    view = issuer.node.integrator().view  # read only: the node's own integrator writes
    leaf = federation.wait(
        lambda: view.read(
            lambda cursor: view.tables.leaf_for(cursor, case_id, event.originator_version)
        ),
        "the issuing event in the issuer's log",
    )
    claims = claims_for(app.get_case(case_id), event, leaf.index, issuer.origin)
    return sign_certificate(claims, load_certificate_issuer(issuer.node.settings))


def _check_the_token_at_the_window(
    federation: Federation, hunan: Member, town: Any, case_id: Any, token: str
) -> None:
    """Hunan's clerk verifies 61's certificate with 61's bundle alone; the window refuses a
    forged token, another case's and none at all, storing nothing."""
    import dataclasses
    import json

    from hub.bootstrap import load_certificate_issuer
    from hub.certificates import CertificateClaims, sign_certificate

    bundle = hunan.node.settings.federation.parent / "trust-61.json"  # type: ignore[union-attr]
    card = bundle.parent / "card-61.jws"
    card.write_text(token + "\n", encoding="ascii")
    assert cli_main(["cert", "verify", str(card), "--trust", str(bundle)]) == 0
    shaanxi = federation.nodes["61"]
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    claims = CertificateClaims.from_payload(payload)
    genuine_other = sign_certificate(
        dataclasses.replace(claims, case="00000000-0000-4000-8000-000000000000"),
        load_certificate_issuer(shaanxi.node.settings),
    )
    head, body, signature = token.split(".")
    tampered = ".".join([head, body[:-4] + ("AAAA" if body[-4:] != "AAAA" else "BBBB"), signature])
    size = hunan.node.log_size()
    for bad, expected in ((tampered, "forged"), (genuine_other, "not this case's"),
                          ("", "attach the issuing node's certificate")):  # fmt: skip
        with pytest.raises(InvalidInput, match=expected) as refused:
            hunan.node.run(
                town, "deliver", case_id=str(case_id), certificate_token=bad,
                method=common_pb2.DELIVERY_METHOD_OFFSITE_WINDOW,
            )  # fmt: skip
        assert refused.value.field == "command.deliver.certificate_token"
    assert hunan.node.log_size() == size


def _statistics(member: Any, *, region: str, rows: bool = False, ranking: bool = False) -> Any:
    """The member's statistics projection, caught up, summed over ``region`` (or its rows by
    child region, or this month's window ranking)."""
    projections = open_node_projections(member.node.settings, member.app)
    try:
        projections.create_tables()
        projections.catch_up()
        names = Names(member.app.regions, member.app.catalogue)
        if ranking:
            month = datetime.now(timezone(timedelta(hours=8))).strftime("%Y-%m")
            return rank_windows(projections.store, names, region=region, month=month)
        found = statistics(projections.store, names, region=region, by="region")
        return found[0] if rows else found[1]
    finally:
        projections.close()


def _citations(*members: Any) -> Any:
    with contextlib.ExitStack() as stack:
        stores = {m.origin: stack.enter_context(_read_only(m)) for m in members}
        return check_citations(stores)


def _log_verifier(member: Any) -> Verifier:
    return Verifier.from_key(member.node.app.genesis().log_key)


def _halt_and_audit(federation: Federation, *members: Member) -> None:
    """Stop the nodes' followers, log everything stored, and audit each log (citing the
    others)."""
    for member in members:
        federation.halt(member)
    for member in members:
        member.node.integrator().catch_up()
        peers = {o.origin: _log_verifier(o) for o in members if o is not member}
        report = _audit(member, peers)
        assert report.ok, [str(finding) for finding in report.findings]


def _read_only(member: Any) -> ReadOnlyStore:
    url = member.node.settings.database_url
    if url is not None:
        return ReadOnlyStore(database_url=url)
    return ReadOnlyStore(sqlite_path=member.node.settings.sqlite_path)


def _audit(member: Any, peers: dict[str, Verifier]) -> Any:
    with _read_only(member) as store:
        return audit_store(store, [_log_verifier(member)], origin=member.origin, peers=peers)


def _audited_past_the_gate(member: Member, peer: Member) -> Any:
    """As a rogue operator holding ``member``'s log key: what is stored logged without the
    gate's checks; then the auditor's report of ``member``'s log, with ``peer``'s public key."""
    integrate_without_the_gate(member.node.integrator())
    return _audit(member, {peer.origin: _log_verifier(peer)})


# ---------------------------------------------------------------------------------- attacks


@pytest.fixture
def manual(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Federation]:
    """Two nodes whose messages the test carries by hand (no relay threads)."""
    with Federation.start(tmp_path, kafka_bootstrap, regions=("43", "61"), run=False) as started:
        yield started


def _offsite_submission(federation: Federation) -> tuple[Any, bytes]:
    """A submission at 43 for 61, and the envelope 43 would send for it."""
    hunan, shaanxi = federation.nodes["43"], federation.nodes["61"]
    town = hunan.node.add_hall("hn-shatou-town", SHATOU)
    shaanxi.node.add_hall("sx-baihe-county", BAIHE)
    hunan.node.run(
        town, "submit", idempotency_key="attack-0001", item_code=ID_CARD,
        applicant=APPLICANT, materials=[material()], competent_region=BAIHE,
    )  # fmt: skip
    (row, message), *_ = [m for m in federation.outgoing(hunan) if m[0].kind == "envelope"]
    return row, message


def _each_held(member: Member, genuine: bytes, attacks: list[Any], sender: Member) -> None:
    """Each of ``attacks`` — (reason, detail, a change to ``genuine``'s body, which ``sender``
    signs again with its log key) — is quarantined at ``member`` with that reason and detail,
    naming ``sender``."""
    inbox, store = member.relay.inbox, member.relay.store
    signer = sender.relay.publisher.signer
    for reason, detail, change in attacks:
        assert inbox.handle(_resigned(genuine, change, signer)) == "quarantined", detail
        held = store.quarantined("held")[-1]
        assert (held.reason, held.sender) == (reason, sender.origin), held
        assert detail in held.detail, held.detail


def _resigned(message: bytes, change: Any, signer: Any) -> bytes:
    """The envelope with its body changed by ``change`` and signed again by ``signer``."""
    wrapper = federation_pb2.FederationMessage.FromString(message)
    body = federation_pb2.Envelope.FromString(wrapper.envelope.body)
    change(body)
    raw = body.SerializeToString()
    return sign_envelope(raw, signer, bytes(wrapper.envelope.sealed_personal))


def test_forged_misaddressed_and_unverifiable_envelopes_are_quarantined(
    manual: Federation,
) -> None:
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    row, genuine = _offsite_submission(manual)
    inbox, store = shaanxi.relay.inbox, shaanxi.relay.store
    size = shaanxi.node.log_size()
    hunan_key = hunan.relay.publisher.signer
    stranger = Signer.generate("tongban/99")

    wrapper = federation_pb2.FederationMessage.FromString(genuine)
    flipped = bytearray(wrapper.envelope.signature)
    flipped[0] ^= 1
    wrapper.envelope.signature = bytes(flipped)
    attacks = {
        "forged": wrapper.SerializeToString(),  # a signature that is not the sender's
        "misaddressed": _resigned(
            genuine, lambda body: setattr(body, "destination", "tongban/42"), hunan_key
        ),
        "unknown sender": _resigned(
            genuine, lambda body: setattr(body, "sender", "tongban/99"), stranger
        ),
        # The sender's own key, but a step its log does not hold: the proof fails.
        "unverifiable": _resigned(
            genuine, lambda body: body.step.inclusion_proof.append(b"\x00" * 32), hunan_key
        ),
        "malformed": b"\x08\x01garbage",
    }
    for reason, message in attacks.items():
        assert inbox.handle(message) == "quarantined", reason
    held = store.quarantined("held")
    assert [q.reason for q in held] == list(attacks)
    assert shaanxi.node.log_size() == size  # nothing of them was stored
    with pytest.raises(NotFound):
        shaanxi.app.get_case(row.case_id)
    # The genuine envelope still goes through.
    assert inbox.handle(genuine) == "stored"
    assert shaanxi.app.get_case(row.case_id).state is CaseState.RECEIVED


def test_a_sender_whose_checkpoints_contradict_each_other_is_quarantined_and_the_evidence_kept(
    manual: Federation,
) -> None:
    """Each checkpoint a sender's envelope carries is checked against the sender's checkpoints
    this node saw. Signed with the sender's own log key, each of these is quarantined with its
    reason, stores nothing, and changes nothing the node saw: a second tree of a size already
    seen (a fork), a consistency proof that does not connect a seen tree to the new one, an
    older tree offered as the newer, a proof from a size never seen here, and an envelope from
    the future. A fork and a proof that does not connect are signed statements that cannot both
    be true, so both signed notes are kept as split-view evidence (``tongban federation
    witness`` shows it), as from a witness request."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    _row, genuine = _offsite_submission(manual)
    inbox = shaanxi.relay.inbox
    assert inbox.handle(genuine) == "stored"
    hunan_key = hunan.relay.publisher.signer
    body = federation_pb2.Envelope.FromString(
        federation_pb2.FederationMessage.FromString(genuine).envelope.body
    )
    seen = peek_checkpoint(body.checkpoint).size
    size, evidence = shaanxi.node.log_size(), evidence_count(shaanxi.relay.inbox.view)

    def tree(tree_size: int, root: bytes = b"\x07" * 32) -> bytes:
        return sign_checkpoint(Checkpoint(hunan.origin, tree_size, root), hunan_key)

    def carrying(note: bytes, start: int, proof: list[bytes]) -> Any:
        def change(changed: Any) -> None:
            changed.checkpoint, changed.consistency_from = note, start
            del changed.consistency_proof[:]
            changed.consistency_proof.extend(proof)

        return change

    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    attacks = [
        ("fork", f"{hunan.origin} signed two trees of size {seen}", carrying(tree(seen), 0, [])),
        ("fork", f"not consistent with the checkpoint of size {seen}",
         carrying(tree(seen + 3), seen, [b"\x01" * 32])),
        ("stale", f"checkpoint of size {seen - 1} is older than {seen}",
         carrying(tree(seen - 1), seen, [])),
        ("unverifiable", f"a proof from size {seen + 4}, which this node never saw",
         carrying(tree(seen + 5), seen + 4, [])),
        ("stale", "in the future", lambda changed: setattr(changed, "sent_at", future)),
    ]  # fmt: skip
    _each_held(shaanxi, genuine, attacks, hunan)
    assert shaanxi.node.log_size() == size
    # The fork and the proof that does not connect are evidence, with both signed notes.
    view = shaanxi.relay.inbox.view
    kept = view.read(lambda cursor: SQLWitnessStore(view.tables, cursor).evidence(hunan.origin))
    assert [e.kind for e in kept][evidence:] == [EvidenceKind.FORK, EvidenceKind.INCONSISTENT_PROOF]
    assert evidence_count(view) == evidence + 2
    # What the node saw of 43 is what it saw before: the genuine envelope is a duplicate.
    assert inbox.handle(genuine) == "duplicate"


def test_a_checkpoint_that_contradicts_one_the_witness_endpoint_saw_is_a_fork_at_the_relay(
    manual: Federation,
) -> None:
    """A node sees a peer's checkpoints on two channels: in the peer's envelopes, and in the
    peer's requests to this node's witness endpoint (C2SP tlog-witness). 43 asks 61's witness
    to cosign one tree, and sends 61 envelopes under another tree of the same size: whichever
    comes second is a split view. The envelope is held as a fork, and both signed notes are
    kept as evidence (``tongban federation witness``)."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    row, genuine = _offsite_submission(manual)
    body = federation_pb2.Envelope.FromString(
        federation_pb2.FederationMessage.FromString(genuine).envelope.body
    )
    size = peek_checkpoint(body.checkpoint).size
    other_tree = sign_checkpoint(
        Checkpoint(hunan.origin, size, b"\x07" * 32), hunan.relay.publisher.signer
    )
    view = shaanxi.relay.inbox.view
    witness = NodeWitness(
        view, Cosigner.generate(f"{shaanxi.origin}/witness"), {hunan.origin: [_log_verifier(hunan)]}
    )
    assert witness.add_checkpoint(format_add_checkpoint(0, [], other_tree)).status == 200
    before = evidence_count(view)
    assert shaanxi.relay.inbox.handle(genuine) == "quarantined"
    (held,) = shaanxi.relay.store.quarantined("held")
    assert (held.reason, held.sender) == ("fork", hunan.origin)
    assert evidence_count(view) == before + 1
    kept = view.read(lambda cursor: SQLWitnessStore(view.tables, cursor).evidence(hunan.origin))
    assert kept[-1].kind is EvidenceKind.FORK
    with pytest.raises(NotFound):
        shaanxi.app.get_case(row.case_id)


def test_a_step_its_sender_cannot_prove_is_quarantined(manual: Federation) -> None:
    """Signed with the sender's own log key, an envelope whose step is not what it says is
    quarantined with its reason, and nothing is stored: a leaf that does not decode, a leaf at
    another index than the step names, a hall key that is not the one the leaf names, a step
    said to be of a node that is no peer (or of this node itself), and a hall's signature that
    does not verify, in a log the sender signed a checkpoint over."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    _row, genuine = _offsite_submission(manual)
    inbox = shaanxi.relay.inbox
    hunan_key = hunan.relay.publisher.signer
    body = federation_pb2.Envelope.FromString(
        federation_pb2.FederationMessage.FromString(genuine).envelope.body
    )
    leaf = Leaf.decode(body.step.leaf)
    # A log of one leaf, the genuine command with its signature broken, under a checkpoint the
    # sender signs: the proof holds, the hall's signature does not.
    broken = dataclasses.replace(leaf, index=0, signature=bytes(64)).encode()
    one_leaf = sign_checkpoint(
        Checkpoint(hunan.origin, 1, Leaf.decode(broken).leaf_hash()), hunan_key
    )

    def unsigned_leaf(changed: Any) -> None:
        changed.checkpoint, changed.consistency_from = one_leaf, 0
        changed.step.index, changed.step.leaf = 0, broken
        del changed.step.inclusion_proof[:]

    other_key = base64.b64encode(bytes(range(32))).decode()
    attacks = [
        ("malformed", "the step's leaf", lambda changed: setattr(changed.step, "leaf", b"junk")),
        ("unverifiable", "the leaf is not a hall's command at the step's index",
         lambda changed: setattr(changed.step, "index", leaf.index + 1)),
        ("forged", "the hall key does not match the leaf's key id",
         lambda changed: setattr(changed.step, "hall_key", other_key)),
        ("unverifiable", "a step of 'tongban/99', which is not a peer",
         lambda changed: setattr(changed.step, "origin", "tongban/99")),
        ("unverifiable", f"a step of {shaanxi.origin!r}, which is not a peer",
         lambda changed: setattr(changed.step, "origin", shaanxi.origin)),
        ("forged", f"the hall's signature does not verify with key {leaf.key_id}", unsigned_leaf),
    ]  # fmt: skip
    size = shaanxi.node.log_size()
    _each_held(shaanxi, genuine, attacks, hunan)
    assert shaanxi.node.log_size() == size
    assert inbox.handle(genuine) == "stored"


def _messages_counted(outcome: str) -> float:
    counted = telemetry.REGISTRY.get_sample_value(
        "tongban_relay_messages_total", {"outcome": outcome}
    )
    return counted or 0.0


def test_a_message_whose_handling_raises_is_quarantined_and_handled_again_when_released(
    manual: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault of the node while it handles a message (here: applying the step raises) does
    not stop the relay, nor hold the messages after it for good: the message is quarantined
    with reason ``failed`` and the error, counted like any quarantined one, and handled again
    once released (what ``tongban federation release`` calls)."""
    shaanxi = manual.nodes["61"]
    row, genuine = _offsite_submission(manual)
    inbox, store = shaanxi.relay.inbox, shaanxi.relay.store
    size = shaanxi.node.log_size()

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug in applying steps")

    monkeypatch.setattr("hub.relay.inbound.apply_peer_step", broken)
    before = _messages_counted("quarantined")
    assert inbox.handle_or_hold(genuine) == "quarantined"
    (held,) = store.quarantined("held")
    assert held.reason == "failed"
    assert held.detail == "handling it raised RuntimeError: a bug in applying steps"
    assert _messages_counted("quarantined") == before + 1
    assert shaanxi.node.log_size() == size
    # A malformed message is counted as quarantined too.
    assert inbox.handle_or_hold(b"\x08\x01garbage") == "quarantined"
    assert _messages_counted("quarantined") == before + 2

    monkeypatch.undo()  # the fault fixed
    store.resolve(held.number, "released")
    assert inbox.handle_or_hold(held.message) == "stored"
    assert shaanxi.app.get_case(row.case_id).state is CaseState.RECEIVED
    # The store being away is no fault of the message: it is raised, for the relay to retry.
    monkeypatch.setattr(
        "hub.relay.inbound.apply_peer_step",
        lambda *a, **k: (_ for _ in ()).throw(StorageUnavailable("the store is away")),
    )
    with pytest.raises(StorageUnavailable):
        inbox.handle_or_hold(genuine)
    assert [q.reason for q in store.quarantined("held")] == ["malformed"]


def test_a_peer_cannot_speak_for_a_hall_outside_its_region(manual: Federation) -> None:
    """Each node registers halls of its own region only, so a step a peer relays must be of a
    hall of that peer's region: one of another node's region is a node speaking for halls not
    its own, refused with a signed refusal. (Here 61 is told 43 keeps 44: 43's genuine step,
    of a hall of 43, is then a hall outside the region 43 keeps.)"""
    shaanxi = manual.nodes["61"]
    row, genuine = _offsite_submission(manual)
    policy = shaanxi.app.policy
    assert ("tongban/43", "43") in policy.peers
    shaanxi.app.policy = dataclasses.replace(
        policy, peers=tuple((o, "44" if o == "tongban/43" else r) for o, r in policy.peers)
    )
    sent: list[bytes] = []
    shaanxi.relay.inbox.send = lambda topic, key, value: sent.append(value)
    try:
        assert shaanxi.relay.inbox.handle(genuine) == "refused"
    finally:
        shaanxi.app.policy = policy
    (refusal,) = [federation_pb2.FederationMessage.FromString(m) for m in sent]
    reason = federation_pb2.Ack.FromString(refusal.ack.body).reason
    assert reason == (
        "the command's hall is of region 430902104000, which tongban/43 does not keep"
    )
    with pytest.raises(NotFound):
        shaanxi.app.get_case(row.case_id)


def test_a_sealed_applicant_moved_to_another_envelope_does_not_open(manual: Federation) -> None:
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    _row, genuine = _offsite_submission(manual)
    moved = _resigned(
        genuine,
        lambda body: setattr(body, "envelope_id", "6f1c9d0e-0000-4000-8000-000000000001"),
        hunan.relay.publisher.signer,
    )
    assert shaanxi.relay.inbox.handle(moved) == "quarantined"
    (held,) = shaanxi.relay.store.quarantined("held")
    assert held.reason == "unverifiable" and "personal" in held.detail


def test_a_submission_whose_sealed_applicant_is_dropped_or_replaced_on_the_way_is_held(
    manual: Federation,
) -> None:
    """The sealed applicant travels beside the signed body, and anyone may seal values to a
    node's public key, so anyone who can write to the topic could drop it from a copy or put
    other values in its place. The sender signs its SHA-256 in the body: such a copy is held
    as unverifiable, never answered with a signed refusal (which would end the handoff at the
    sender for good), and the sender's genuine copy still goes in."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    row, genuine = _offsite_submission(manual)
    envelope_id = UUID(
        federation_pb2.Envelope.FromString(
            federation_pb2.FederationMessage.FromString(genuine).envelope.body
        ).envelope_id
    )
    strangers = (  # other values, sealed to 61 for this very envelope
        PersonalValue("name", "李四", b"\x00" * 16),
        PersonalValue("id_number", APPLICANT.id_number, b"\x01" * 16),
        PersonalValue("phone", "13900000000", b"\x02" * 16),
    )
    to_shaanxi = hunan.relay.publisher.config.peer_by_origin(shaanxi.origin)
    assert to_shaanxi is not None
    replaced = seal_personal(strangers, to_shaanxi.encryption_public_key(), envelope_id)
    sent: list[bytes] = []
    shaanxi.relay.inbox.send = lambda topic, key, value: sent.append(value)
    for sealed, detail in (
        (b"", "the sealed applicant its sender signed for is missing"),
        (replaced, "the sealed applicant is not the one its sender signed for"),
    ):
        copy = federation_pb2.FederationMessage.FromString(genuine)
        copy.envelope.sealed_personal = sealed
        assert shaanxi.relay.inbox.handle(copy.SerializeToString()) == "quarantined", detail
        held = shaanxi.relay.store.quarantined("held")[-1]
        assert (held.reason, held.sender, held.detail) == ("unverifiable", hunan.origin, detail)
    assert sent == []  # nothing answered
    with pytest.raises(NotFound):
        shaanxi.app.get_case(row.case_id)
    assert shaanxi.relay.inbox.handle(genuine) == "stored"
    assert shaanxi.app.get_case(row.case_id).state is CaseState.RECEIVED
    # 61's record of the step keeps the signed body, with the digest, never the sealed values.
    sealed = bytes(federation_pb2.FederationMessage.FromString(genuine).envelope.sealed_personal)
    (stored,) = [
        n for n in shaanxi.app.recorder.select_notifications(start=1, limit=1000)
        if n.topic.endswith("PeerStep.Recorded")
    ]  # fmt: skip
    record = shaanxi.app.mapper.to_domain_event(stored)
    assert parse_envelope(record.envelope).sealed_personal_sha256 == hashlib.sha256(sealed).digest()
    assert sealed not in stored.state and _b64(sealed) not in stored.state


def test_duplicates_are_stored_once_and_acknowledged_again(manual: Federation) -> None:
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    row, genuine = _offsite_submission(manual)
    assert shaanxi.relay.inbox.handle(genuine) == "stored"
    size = shaanxi.node.log_size()
    sent: list[bytes] = []
    shaanxi.relay.inbox.send = lambda topic, key, value: sent.append(value)
    shaanxi.node.integrator().catch_up()
    for _ in range(3):
        assert shaanxi.relay.inbox.handle(genuine) == "duplicate"
    assert shaanxi.node.log_size() == size
    assert len(sent) == 3  # each copy is answered, so a sender whose ack was lost stops
    assert hunan.relay.inbox.handle(sent[0]) == "acknowledged"
    assert hunan.relay.inbox.handle(sent[1]) == "acknowledged"  # stored once at 43 too
    acknowledged = hunan.relay.store.row("envelope", row.envelope_id)
    assert acknowledged is not None and acknowledged.outcome == "stored"


def test_a_step_of_another_node_takes_effect_here_when_this_node_applies_it(
    manual: Federation,
) -> None:
    """A peer step's events carry the time this node applied it (after the hall signed it at
    the origin, no later than this node's record of it), not the origin's business time."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    row, genuine = _offsite_submission(manual)
    taken_in = hunan.app.case_history(row.case_id)[0]
    assert shaanxi.relay.inbox.handle(genuine) == "stored"
    copied = shaanxi.app.case_history(row.case_id)[0]
    (record,) = [
        shaanxi.app.mapper.to_domain_event(notification)
        for notification in shaanxi.app.recorder.select_notifications(start=1, limit=1000)
        if notification.topic.endswith("PeerStep.Recorded")
    ]
    assert taken_in.timestamp < copied.timestamp <= record.timestamp


def test_a_step_applied_after_the_clock_was_set_back_takes_effect_at_the_previous_step(
    manual: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps of a case never go back in time: when this node's clock was set back between two
    steps of a case, the later step's events take the case's previous step's time, its record
    the clock's, and the log verifies."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    row, submission = _offsite_submission(manual)
    assert shaanxi.relay.inbox.handle(submission) == "stored"
    copied_at = shaanxi.app.get_case(row.case_id).last_step_at
    assert copied_at is not None
    town = hunan.node.halls["hn-shatou-town"]
    hunan.node.run(town, "accept", idempotency_key="attack-0002", case_id=str(row.case_id))
    (accept,) = [m for r, m in manual.outgoing(hunan) if r.envelope_id != row.envelope_id]
    set_back = copied_at - timedelta(minutes=1)
    monkeypatch.setattr(PeerStep.Recorded, "create_timestamp", staticmethod(lambda: set_back))
    assert shaanxi.relay.inbox.handle(accept) == "stored"
    accepted = shaanxi.app.case_history(row.case_id)[-1]
    assert accepted.timestamp == copied_at  # not before the copy
    records = [
        shaanxi.app.mapper.to_domain_event(n)
        for n in shaanxi.app.recorder.select_notifications(start=1, limit=1000)
        if n.topic.endswith("PeerStep.Recorded")
    ]
    assert records[-1].timestamp == set_back
    monkeypatch.undo()
    shaanxi.node.integrator().catch_up()
    report = _audit(shaanxi, {hunan.origin: _log_verifier(hunan)})
    assert report.ok, report.summary()


def _redate_the_step_at_61(shaanxi: Member, shift: timedelta, *, events: bool = True) -> None:
    """As a rogue writer at 61, before 61's integrator logs it: date 61's record of the step
    (and, with ``events``, the case event the step made) by ``shift``."""
    app = shaanxi.app
    stored = [
        app.mapper.to_domain_event(notification)
        for notification in app.recorder.select_notifications(start=1, limit=1000)
    ]
    (record,) = [e for e in stored if type(e).__qualname__ == "PeerStep.Recorded"]
    (copied,) = [e for e in stored if type(e).__qualname__ == "Case.Submitted"]
    assert copied.timestamp == record.timestamp  # one moment: when 61 applied the step
    for suffix, event in (("PeerStep.Recorded", record), ("Case.Submitted", copied)):
        if suffix == "PeerStep.Recorded" or events:
            old = event.timestamp.isoformat().encode()
            rewrite_last_event(
                shaanxi.node.settings, suffix, old, (event.timestamp + shift).isoformat().encode()
            )


def test_a_peer_step_recorded_before_its_envelope_was_sent_is_refused_and_named(
    manual: Federation,
) -> None:
    """A rogue writer at 61 dates its receipt of 43's case three days back (its record and the
    case's events, consistently): the envelope 43 signed says when it was sent, and no node
    applies an envelope sent further ahead of its clock than the skew it allows. The gate
    refuses the record; logged past the gate, the auditor names it, at that leaf alone."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    _row, submission = _offsite_submission(manual)
    assert shaanxi.relay.inbox.handle(submission) == "stored"
    _redate_the_step_at_61(shaanxi, -timedelta(days=3))
    with pytest.raises(IntegrityViolation, match="backdated receipt"):
        shaanxi.node.integrator().catch_up()
    report = _audited_past_the_gate(shaanxi, hunan)
    (finding,) = report.findings
    assert finding.kind == "backdated receipt", report.summary()
    assert re.search(r"applied at .*, 2 d 86\d\d\d s before tongban/43 sent it", finding.detail)


def test_a_peer_steps_event_dated_apart_from_its_record_is_named(manual: Federation) -> None:
    """The events a peer's step makes carry the moment this node applied it, the record's
    time: a rogue writer at 61 who dates the case's copy a day earlier than its record (so
    supervision counts from then) is named by the auditor."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    _row, submission = _offsite_submission(manual)
    assert shaanxi.relay.inbox.handle(submission) == "stored"
    _redate_the_step_at_61(shaanxi, timedelta(days=1))  # both a day later: consistent
    (shaanxi_copy,) = [
        n for n in shaanxi.app.recorder.select_notifications(start=1, limit=1000)
        if n.topic.endswith("Case.Submitted")
    ]  # fmt: skip
    event = shaanxi.app.mapper.to_domain_event(shaanxi_copy)
    rewrite_last_event(
        shaanxi.node.settings, "Case.Submitted", event.timestamp.isoformat().encode(),
        (event.timestamp - timedelta(days=1)).isoformat().encode(),
    )  # fmt: skip
    with pytest.raises(IntegrityViolation, match="the time this node applied"):
        shaanxi.node.integrator().catch_up()
    report = _audited_past_the_gate(shaanxi, hunan)
    assert [(f.kind, "the time this node applied the peer's step" in f.detail)
            for f in report.findings] == [("content mismatch", True)], report.summary()  # fmt: skip


def _answered_each_log_verifying(federation: Federation, answer: bytes) -> Any:
    """43 takes 61's signed ``answer``; each log then verifies alone (with the other's public
    key): what following the citations between them finds."""
    hunan, shaanxi = federation.nodes["43"], federation.nodes["61"]
    hunan.node.integrator().catch_up()
    assert hunan.relay.inbox.handle(answer) == "acknowledged"
    for member, other in ((hunan, shaanxi), (shaanxi, hunan)):
        member.node.integrator().catch_up()
        report = _audit(member, {other.origin: _log_verifier(other)})
        assert report.ok, report.summary()
    return _citations(hunan, shaanxi)


def test_a_peer_that_dates_its_receipt_after_its_acknowledgement_is_caught_by_the_citations(
    manual: Federation,
) -> None:
    """61 dates its receipt of 43's case three days later than it was (its handling would look
    three days quicker): its own log is consistent, and its audit passes. But 61 signed its
    acknowledgement of the step, with the time, and 43 keeps it: a step cannot be applied after
    it was acknowledged, so following the citation names 61, by its own signature."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    row, submission = _offsite_submission(manual)
    assert shaanxi.relay.inbox.handle(submission) == "stored"
    _redate_the_step_at_61(shaanxi, timedelta(days=3))
    shaanxi.node.integrator().catch_up()  # nothing in 61's log alone says otherwise
    record = peer_step_id(hunan.origin, _leaf_index_of_first_step(hunan, row))
    ack = shaanxi.relay.publisher.ack_message(record, row.envelope_id, hunan.origin)
    assert ack is not None
    citations = _answered_each_log_verifying(manual, ack)
    (problem,) = citations.problems
    assert problem.startswith(f"tongban/61: the step of envelope {row.envelope_id} is recorded")
    assert "after tongban/61 signed its acknowledgement of it" in problem


def test_an_acknowledgement_recorded_before_the_peer_signed_it_is_named(
    manual: Federation,
) -> None:
    """A rogue writer at 43 dates its record of 61's acknowledgement three days back (a
    handoff made to look delivered earlier): 61 signed the time it acknowledged, and 43 refuses
    one signed further ahead of its clock. The gate refuses the record; logged past the gate,
    the auditor, with 61's public key, names it."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    _row, message, _body = _acknowledged_submission(manual)
    at = hunan.node.integrator().catch_up()
    assert hunan.relay.inbox.handle(message) == "acknowledged"
    stored = [
        hunan.app.mapper.to_domain_event(n)
        for n in hunan.app.recorder.select_notifications(start=1, limit=1000)
        if n.topic.endswith("PeerAcknowledgement.Recorded")
    ][-1]
    rewrite_last_event(
        hunan.node.settings, "PeerAcknowledgement.Recorded",
        stored.timestamp.isoformat().encode(),
        (stored.timestamp - timedelta(days=3)).isoformat().encode(),
    )  # fmt: skip
    with pytest.raises(IntegrityViolation, match="backdated receipt"):
        hunan.node.integrator().catch_up()
    report = _audited_past_the_gate(hunan, shaanxi)
    assert _findings_at(report) == {(at, "backdated receipt")}, report.summary()
    assert "before tongban/61 signed it" in report.findings[0].detail


def test_an_acknowledgement_signed_in_the_future_is_held(manual: Federation) -> None:
    """An acknowledgement signed further ahead of the sender's clock than the clock skew would
    let the peer date its receipt of the step that late: it is held, with the reason, and the
    envelope stays not done until a timely one comes."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    row, genuine, body = _acknowledged_submission(manual)
    ahead = federation_pb2.Ack()
    ahead.CopyFrom(body)
    ahead.signed_at = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    future = sign_ack(ahead.SerializeToString(), shaanxi.relay.publisher.signer)
    hunan.node.integrator().catch_up()
    assert hunan.relay.inbox.handle(future) == "quarantined"
    (held,) = hunan.relay.store.quarantined("held")
    assert (held.reason, held.sender) == ("stale", shaanxi.origin)
    assert "in the future" in held.detail
    assert hunan.relay.store.backlog()  # not delivered
    assert hunan.relay.inbox.handle(genuine) == "acknowledged"
    done = hunan.relay.store.row("envelope", row.envelope_id)
    assert done is not None and done.outcome == "stored"


def test_a_proven_step_whose_command_breaks_this_nodes_rules_is_refused_and_nothing_stored(
    manual: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay proves a step is in its origin's log; what the command says is this node's to
    judge, as for a local command: a rogue origin can log anything under its own key. Each of
    these is refused with its reason (which the sender gets, signed), and nothing is stored."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    _row, submission = _offsite_submission(manual)
    captured: list[IncomingStep] = []

    def capture(app: Any, step: IncomingStep) -> NotYet:
        captured.append(step)
        return NotYet("held by the test")

    monkeypatch.setattr("hub.relay.inbound.apply_peer_step", capture)
    shaanxi.relay.inbox.handle(submission)
    (genuine,) = captured
    town = hunan.node.halls["hn-shatou-town"]

    def signed_by(*, node: str = hunan.origin, region: str = SHATOU) -> dict[str, Any]:
        signer = CommandSigner(town.key, node=node, operator="op", hall_id=town.hall_id,
                               region=region)  # fmt: skip
        command = signer.sign("submit", item_code=ID_CARD, applicant=APPLICANT,
                              materials=[material()], competent_region=BAIHE)  # fmt: skip
        return {"signed_bytes": command.command, "signature": command.signature}

    admin = hunan.node.admin.sign("retire_hall", hall_id="hn-shatou-town", reason="x")
    other_key = base64.b64encode(bytes(range(32))).decode()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"signed_bytes": b"\x0a\x03not a command"}, "the hall's command does not parse"),
        (signed_by(node="tongban/42"), "signed for 'tongban/42', not 'tongban/43'"),
        ({"signed_bytes": admin.command, "signature": admin.signature}, "not a hall's command"),
        ({"hall_key": other_key}, "the hall key does not match the key id in the origin's leaf"),
        (signed_by(region=BAIHE), "cannot be in this node's region 61"),
        (signed_by(region="420106000000"), "of region 420106000000, which tongban/43 does not"),
    ]
    size = shaanxi.node.log_size()
    for change, reason in cases:
        with pytest.raises(StepRefused, match=re.escape(reason)):
            apply_peer_step(shaanxi.app, dataclasses.replace(genuine, **change))
        assert shaanxi.node.log_size() == size, reason
    assert isinstance(apply_peer_step(shaanxi.app, genuine), Applied)  # the genuine step


def _step_of(message: bytes) -> tuple[Any, ...]:
    body = federation_pb2.Envelope.FromString(
        federation_pb2.FederationMessage.FromString(message).envelope.body
    )
    return (body.envelope_id, body.step.SerializeToString(), tuple(body.after), body.checkpoint)


def test_the_publisher_builds_from_the_records_the_projection_kept_as_from_the_log(
    manual: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outbox projection keeps the creation events of the records it queued rows for, and
    the publisher builds each envelope and acknowledgement from them without reading the record
    again; a record it does not hold (a restart, a full memory) is read, to the same message."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    row, kept = _offsite_submission(manual)  # queued by the projection, built from its memory
    publisher = hunan.relay.publisher
    assert publisher.records.get(row.record_id) is not None
    publisher.records = RecordMemory()  # as after a restart: the record is read from the log
    read = publisher.message_for(row)
    assert read is not None and _step_of(read) == _step_of(kept)

    def no_reads(record_id: Any) -> Any:
        raise AssertionError("the record was read again")

    publisher.records.remember(hunan.app.record_event(row.record_id))
    monkeypatch.setattr(hunan.app, "record_event", no_reads)
    remembered = publisher.message_for(row)
    assert remembered is not None and _step_of(remembered) == _step_of(kept)
    assert shaanxi.relay.inbox.handle(kept) == "stored"
    shaanxi.relay.project_pending()
    shaanxi.node.integrator().catch_up()
    (ack_row,) = [r for r in shaanxi.relay.store.due(0, limit=10) if r.kind == "ack"]
    monkeypatch.setattr(shaanxi.app, "peer_step_evidence", no_reads)
    acknowledgement = shaanxi.relay.publisher.message_for(ack_row)
    assert acknowledgement is not None
    assert hunan.relay.inbox.handle(acknowledgement) == "acknowledged"


def test_a_waiting_message_is_not_looked_up_again_until_the_integrator_logs_its_record(
    manual: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the integrator in the relay's process (Relay.attach), an acknowledgement whose
    record is not in the log yet is looked up once, then waits without reading until the
    integrator logs the record; it is then built from the leaf the integrator told, the same
    acknowledgement as from the log."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    _row, envelope = _offsite_submission(manual)
    assert shaanxi.relay.inbox.handle(envelope) == "stored"
    shaanxi.relay.project_pending()
    (ack_row,) = [r for r in shaanxi.relay.store.due(0, limit=10) if r.kind == "ack"]
    integrator = shaanxi.node.integrator()
    shaanxi.relay.attach(integrator)
    publisher = shaanxi.relay.publisher
    lookups: list[Any] = []
    tables = publisher.view.tables
    leaf_for = tables.leaf_for

    def counted(cursor: Any, aggregate_id: Any, version: int) -> Any:
        lookups.append(aggregate_id)
        return leaf_for(cursor, aggregate_id, version)

    monkeypatch.setattr(tables, "leaf_for", counted)
    assert publisher.message_for(ack_row) is None  # not logged yet
    assert lookups == [ack_row.record_id]
    for _ in range(3):  # rounds meanwhile (the integrator logged other things)
        assert publisher.message_for(ack_row) is None
    assert len(lookups) == 1
    integrator.catch_up()  # logs the record; the relay hears of its leaf
    told = publisher.message_for(ack_row)
    assert told is not None and len(lookups) == 1
    publisher.leaves = None  # as without the integrator in the process: read from the log
    read = publisher.message_for(ack_row)
    assert read is not None and len(lookups) == 2
    index_of = {  # the index of the record in 61's log, as each acknowledgement cites it
        name: federation_pb2.Ack.FromString(
            federation_pb2.FederationMessage.FromString(message).ack.body
        ).index
        for name, message in (("told", told), ("read", read))
    }
    assert index_of["told"] == index_of["read"] > 0
    assert hunan.relay.inbox.handle(told) == "acknowledged"


def test_a_step_the_leaf_memory_has_not_heard_of_yet_goes_out_in_order(
    manual: Federation,
) -> None:
    """The integrator tells the relay's leaf memory of the leaves it logged once it committed
    them: for a moment the store, and a checkpoint read from it, are ahead of the memory. A
    record found not logged just before may then be under the round's checkpoint already: it
    is looked up again rather than taken as not logged, so a case's 受理 goes out, and its
    hand-off names the 受理 as the step before it (before, the hand-off went out alone and 61
    took it before the 受理, which it then refused)."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    _row, submission = _offsite_submission(manual)
    assert shaanxi.relay.inbox.handle(submission) == "stored"
    town = hunan.node.halls["hn-shatou-town"]
    case_id = str(_row.case_id)
    relay, publisher = hunan.relay, hunan.relay.publisher
    assert relay is not None
    publisher.leaves = LeafMemory()  # the integrator below never tells it: the moment, held
    known = {row.envelope_id for row in relay.store.due(0, limit=100)}

    def new_envelope_row() -> Any:
        relay.project_pending()
        (row,) = [
            r for r in relay.store.due(0, limit=100)
            if r.kind == "envelope" and r.envelope_id not in known
        ]  # fmt: skip
        known.add(row.envelope_id)
        return row

    hunan.node.run(town, "accept", idempotency_key="order-0002", case_id=case_id)
    accept = new_envelope_row()
    assert publisher.message_for(accept) is None  # not logged yet: the memory notes it
    hunan.node.run(
        town, "hand_off", idempotency_key="order-0003", case_id=case_id,
        to_hall=f"sx-baihe-county@{BAIHE}", reason="异地代收: 转户籍地办理",
    )  # fmt: skip
    hand_off = new_envelope_row()
    hunan.node.integrator().catch_up()  # logged and under a checkpoint; the memory not told
    accept_message = publisher.message_for(accept)
    hand_off_message = publisher.message_for(hand_off)
    assert accept_message is not None and hand_off_message is not None
    accept_index = federation_pb2.Envelope.FromString(
        federation_pb2.FederationMessage.FromString(accept_message).envelope.body
    ).step.index
    assert ("tongban/43", accept_index) in [
        (after.origin, after.index) for after in _step_of(hand_off_message)[2]
    ]
    # Taken by 61 the wrong way round, the hand-off waits for the 受理.
    assert shaanxi.relay.inbox.handle(hand_off_message) == "waiting"
    assert shaanxi.relay.inbox.handle(accept_message) == "stored"
    assert shaanxi.relay.inbox.handle(hand_off_message) == "stored"
    assert shaanxi.app.get_case(_row.case_id).state is CaseState.HANDED_OFF


def test_an_envelope_not_ready_holds_back_its_cases_later_envelopes_that_round(
    manual: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round sends a case's envelopes to a peer in their order: one that cannot be built yet
    holds back the later ones of its case (the envelopes of other cases, and acknowledgements,
    still go)."""
    hunan = manual.nodes["43"]
    _row, _submission = _offsite_submission(manual)
    town = hunan.node.halls["hn-shatou-town"]
    relay = hunan.relay
    assert relay is not None
    hunan.node.run(town, "accept", idempotency_key="hold-0002", case_id=str(_row.case_id))
    hunan.node.run(
        town, "submit", idempotency_key="hold-0003", item_code=ID_CARD,
        applicant=APPLICANT, materials=[material()], competent_region=BAIHE,
    )  # fmt: skip
    hunan.node.integrator().catch_up()
    relay.project_pending()
    due = [r for r in relay.store.due(0, limit=100) if r.kind == "envelope"]
    first, later = [r for r in due if r.case_id == _row.case_id]
    (other_case,) = [r for r in due if r.case_id != _row.case_id]
    publisher = relay.publisher
    build = publisher._message
    monkeypatch.setattr(
        publisher, "_message",
        lambda row, peer, shared: (
            None if row.envelope_id == first.envelope_id else build(row, peer, shared)
        ),
    )  # fmt: skip
    produced: list[bytes] = []

    class _Sent:
        def get(self, timeout: float) -> None:
            return None

    def produce(topic: str, key: bytes, message: bytes) -> _Sent:
        produced.append(message)
        return _Sent()

    monkeypatch.setattr(publisher, "produce", produce)
    publisher.builders = None  # built in this thread, where the patch is seen
    assert publisher.publish_due() == 1
    assert [_step_of(m)[0] for m in produced] == [str(other_case.envelope_id)]
    still_due = {r.envelope_id for r in relay.store.due(0, limit=100)}
    assert {first.envelope_id, later.envelope_id} <= still_due


def test_the_record_memory_is_bounded() -> None:
    memory = RecordMemory(size=2)
    events = [type("Created", (), {"originator_id": number})() for number in range(3)]
    for event in events:
        memory.remember(event)  # type: ignore[arg-type]
    assert memory.get(2) is events[2]  # type: ignore[arg-type]
    assert memory.get(0) is None  # emptied when full: read from the log again


@contextlib.contextmanager
def _marking_the_row_fails(store: Any) -> Iterator[None]:
    """Inside: marking an outbox row done raises right after it wrote, so the transaction it
    shares is rolled back; the handling raises that error (checked here)."""
    mark = store.write_acknowledged

    def mark_then_fail(curs: Any, *args: Any, **kwargs: Any) -> None:
        mark(curs, *args, **kwargs)
        raise RuntimeError("the store failed after marking the row")

    store.write_acknowledged = mark_then_fail
    try:
        with pytest.raises(RuntimeError, match="after marking"):
            yield
    finally:
        store.write_acknowledged = mark


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_an_acknowledgement_is_stored_with_its_outbox_row_or_not_at_all(
    store: str, tmp_path: Path, kafka_bootstrap: str, request: pytest.FixtureRequest
) -> None:
    """43 stores 61's acknowledgement and marks its envelope done in one transaction: when the
    second part fails, neither is kept (the lane reads the message again), and the retry
    stores both."""
    urls = {"43": request.getfixturevalue("fresh_postgres_db")} if store == "postgres" else None
    with Federation.start(
        tmp_path, kafka_bootstrap, regions=("43", "61"), run=False, database_urls=urls
    ) as federation:
        hunan, shaanxi = federation.nodes["43"], federation.nodes["61"]
        row, envelope = _offsite_submission(federation)
        sent: list[bytes] = []
        shaanxi.relay.inbox.send = lambda topic, key, value: sent.append(value)
        assert shaanxi.relay.inbox.handle(envelope) == "stored"
        shaanxi.node.integrator().catch_up()
        assert shaanxi.relay.inbox.handle(envelope) == "duplicate"  # answered: the ack
        (acknowledgement,) = sent
        store_of_43 = hunan.relay.store
        with _marking_the_row_fails(store_of_43):
            hunan.relay.inbox.handle(acknowledgement)
        record = acknowledgement_id(row.envelope_id)
        assert not hunan.app.has_aggregate(record)
        pending = store_of_43.row("envelope", row.envelope_id)
        assert pending is not None and pending.done_at is None
        assert hunan.relay.inbox.handle(acknowledgement) == "acknowledged"
        assert hunan.app.has_aggregate(record)
        done = store_of_43.row("envelope", row.envelope_id)
        assert done is not None and done.done_at is not None and done.outcome == "stored"
        assert hunan.relay.inbox.handle(acknowledgement) == "acknowledged"  # again: no change
        assert store_of_43.row("envelope", row.envelope_id) == done


def _handed_to_a_missing_hall(federation: Federation, key: str) -> Any:
    """43 takes in a case for 61, accepts it and hands it to a hall 61 does not have (which
    61 refuses); the submission's result."""
    hunan, shaanxi = federation.nodes["43"], federation.nodes["61"]
    town = hunan.node.add_hall("hn-shatou-town", SHATOU)
    shaanxi.node.add_hall("sx-baihe-county", BAIHE)
    result = hunan.node.run(
        town, "submit", idempotency_key=f"{key}-1", item_code=ID_CARD,
        applicant=APPLICANT, materials=[material()], competent_region=BAIHE,
    )  # fmt: skip
    case_id = str(result.case_id)
    hunan.node.run(town, "accept", idempotency_key=f"{key}-2", case_id=case_id)
    hunan.node.run(
        town, "hand_off", idempotency_key=f"{key}-3", case_id=case_id,
        to_hall=f"sx-no-such-hall@{BAIHE}", reason="转户籍地",
    )  # fmt: skip
    return result


def test_a_refusal_takes_the_case_back_with_its_outbox_row_or_not_at_all(
    manual: Federation,
) -> None:
    """A refused hand-off comes back as a signed refusal: 43 takes the case back and marks the
    envelope's row done in one transaction. When the second part fails, neither is kept (the
    refusal is read again); the retry stores both."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    result = _handed_to_a_missing_hall(manual, "takeback")
    sent: list[bytes] = []
    shaanxi.relay.inbox.send = lambda topic, key, value: sent.append(value)
    refusals: list[bytes] = []
    for _round in range(3):  # each step once the one before it is in 61's log
        for _row, message in manual.outgoing(hunan):
            shaanxi.relay.inbox.handle(message)
            shaanxi.node.integrator().catch_up()
        refusals = [m for m in sent if b"no such hall" in m]
        if refusals:
            break
    (refusal, *_) = refusals
    refused = federation_pb2.Ack.FromString(
        federation_pb2.FederationMessage.FromString(refusal).ack.body
    )
    handoff = hunan.relay.store.row("envelope", UUID(refused.envelope_id))
    assert handoff is not None and handoff.done_at is None
    store_of_43 = hunan.relay.store
    with _marking_the_row_fails(store_of_43):
        hunan.relay.inbox.handle(refusal)
    assert _state(hunan, result.case_id) is CaseState.HANDED_OFF  # not taken back
    pending = store_of_43.row("envelope", handoff.envelope_id)
    assert pending is not None and pending.done_at is None
    assert hunan.relay.inbox.handle(refusal) == "acknowledged"
    assert _state(hunan, result.case_id) is CaseState.ACCEPTED
    done = store_of_43.row("envelope", handoff.envelope_id)
    assert done is not None and done.done_at is not None and done.outcome == "refused"


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_the_outbox_queues_a_batch_of_steps_in_one_transaction_or_not_at_all(
    store: str, tmp_path: Path, kafka_bootstrap: str, request: pytest.FixtureRequest
) -> None:
    """The outbox projection queues the envelopes of every step of a batch and their tracking
    records in one transaction: when a later step of the batch fails, nothing of the batch is
    queued and the position stays, so the batch is read again; then every step is queued once."""
    urls = {"43": request.getfixturevalue("fresh_postgres_db")} if store == "postgres" else None
    with Federation.start(
        tmp_path, kafka_bootstrap, regions=("43", "61"), run=False, database_urls=urls
    ) as federation:
        hunan, shaanxi = federation.nodes["43"], federation.nodes["61"]
        town = hunan.node.add_hall("hn-shatou-town", SHATOU)
        shaanxi.node.add_hall("sx-baihe-county", BAIHE)
        for n in range(3):
            hunan.node.run(
                town, "submit", idempotency_key=f"batch-{n:04d}", item_code=ID_CARD,
                applicant=APPLICANT, materials=[material()], competent_region=BAIHE,
            )  # fmt: skip
        relay = hunan.relay
        assert relay is not None
        projection, outbox = relay.projection, relay.store
        before = outbox.max_tracking_id(OUTBOX_PROJECTION) or 0
        batch = [
            (event, Tracking(OUTBOX_PROJECTION, tracking.notification_id))
            for event, tracking in stored_after(hunan.app, before)
        ]
        assert len(batch) == 4  # the hall's registration, then the three submissions
        queue = outbox.enqueue
        calls = 0

        def fail_third(*args: Any, **kwargs: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 3:  # the second submission: the first one's rows are written by now
                raise RuntimeError("the store failed at the third step")
            queue(*args, **kwargs)

        outbox.enqueue = fail_third  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="third step"):
            projection.process_batch(batch)
        assert calls == 3
        assert outbox.rows_for("tongban/61") == []
        assert (outbox.max_tracking_id(OUTBOX_PROJECTION) or 0) == before
        outbox.enqueue = queue  # type: ignore[method-assign]
        projection.process_batch(batch)
        rows = outbox.rows_for("tongban/61")
        assert len(rows) == 3 and len({row.envelope_id for row in rows}) == 3
        assert outbox.max_tracking_id(OUTBOX_PROJECTION) == batch[-1][1].notification_id


def test_lanes_verify_at_once_but_keep_a_senders_checkpoints_one_at_a_time(
    manual: Federation,
) -> None:
    """Envelopes of four cases, each carrying a newer checkpoint of 43, handled by four lanes
    at once: all are stored and every checkpoint is kept, and no two lanes were ever inside
    the keeping (the observer's consistency check and the store's second-root check) at once."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    town = hunan.node.add_hall("hn-shatou-town", SHATOU)
    shaanxi.node.add_hall("sx-baihe-county", BAIHE)
    envelopes: list[bytes] = []
    seen: set[int] = set()
    for n in range(4):
        hunan.node.run(
            town, "submit", idempotency_key=f"lanes-{n:04d}", item_code=ID_CARD,
            applicant=APPLICANT, materials=[material()], competent_region=BAIHE,
        )  # fmt: skip
        (new,) = [
            (r, m) for r, m in manual.outgoing(hunan) if r.kind == "envelope" and r.seq not in seen
        ]
        seen.add(new[0].seq)
        envelopes.append(new[1])
    checkpoints = [
        federation_pb2.Envelope.FromString(
            federation_pb2.FederationMessage.FromString(m).envelope.body
        ).checkpoint
        for m in envelopes
    ]
    assert len(set(checkpoints)) == 4  # four different checkpoints
    inbox = shaanxi.relay.inbox
    keep = inbox._keep_checkpoint
    inside: list[int] = []
    overlapped = threading.Event()
    guard = threading.Lock()
    lanes_done: dict[int, threading.Event] = {}  # lane thread → finished

    def others_wait_or_are_done() -> bool:
        """Every other lane has finished, or stands at the keeping lock (in ``_verified``)."""
        frames = sys._current_frames()
        me = threading.get_ident()
        return all(
            done.is_set() or getattr(frames.get(ident), "f_code", None) is verified_code
            for ident, done in lanes_done.items()
            if ident != me
        )

    verified_code = type(inbox)._verified.__code__

    def keep_alone(verified: Any, data: bytes) -> str | None:
        with guard:
            inside.append(1)
            if len(inside) > 1:
                overlapped.set()
        try:
            # Until every other lane is either done or waiting to keep (or came in: overlap).
            deadline = time.monotonic() + 30
            while not (overlapped.is_set() or others_wait_or_are_done()):
                assert time.monotonic() < deadline, "the other lanes never came"
                overlapped.wait(0.005)
            return keep(verified, data)
        finally:
            with guard:
                inside.pop()

    inbox._keep_checkpoint = keep_alone  # type: ignore[method-assign]
    start = threading.Barrier(4)

    def lane(message: bytes) -> str:
        done = threading.Event()
        with guard:
            lanes_done[threading.get_ident()] = done
        start.wait(30)
        try:
            return inbox.handle(message)
        finally:
            done.set()

    with ThreadPoolExecutor(4) as lanes:
        outcomes = list(lanes.map(lane, envelopes))
    assert outcomes == ["stored"] * 4
    assert not overlapped.is_set()
    assert shaanxi.relay.store.held_count() == 0


def test_a_step_before_its_case_waits_for_the_resend(manual: Federation) -> None:
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    row, submission = _offsite_submission(manual)
    town = hunan.node.halls["hn-shatou-town"]
    hunan.node.run(town, "accept", idempotency_key="attack-0002", case_id=str(row.case_id))
    accept = [m for r, m in manual.outgoing(hunan) if r.envelope_id != row.envelope_id]
    assert len(accept) == 1
    assert shaanxi.relay.inbox.handle(accept[0]) == "waiting"  # stores nothing, answers nothing
    assert shaanxi.relay.inbox.handle(submission) == "stored"
    assert shaanxi.relay.inbox.handle(accept[0]) == "stored"
    assert shaanxi.app.get_case(row.case_id).state is CaseState.ACCEPTED


def test_the_applicant_never_travels_in_clear(tmp_path: Path, kafka_bootstrap: str) -> None:
    with Federation.start(tmp_path, kafka_bootstrap, regions=("43", "61")) as federation:
        hunan, shaanxi = federation.nodes["43"], federation.nodes["61"]
        town = hunan.node.add_hall("hn-shatou-town", SHATOU)
        shaanxi.node.add_hall("sx-baihe-county", BAIHE)
        result = hunan.node.run(
            town, "submit", idempotency_key="clear-0001", item_code=ID_CARD,
            applicant=APPLICANT, materials=[material()], competent_region=BAIHE,
        )  # fmt: skip
        federation.wait(lambda: shaanxi.app.get_case(result.case_id), "the case reached 61")
        federation.wait(lambda: not hunan.relay.store.backlog(), "acknowledged")
        topics = [hunan.relay.topic, shaanxi.relay.topic]
    # An independent client reads every message on both inboxes.
    consumer = KafkaConsumer(
        *topics, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
        consumer_timeout_ms=3000, group_id=None,
    )  # fmt: skip
    payloads = [bytes(record.value) for record in consumer]
    consumer.close()
    assert payloads, "the inboxes hold the envelopes and acknowledgements"
    for value in (APPLICANT.name, APPLICANT.id_number, APPLICANT.phone):
        assert not any(value.encode("utf-8") in payload for payload in payloads)


# ---------------------------------------------------------------------------------- faults


def test_a_broker_that_loses_everything_loses_no_handoff(tmp_path: Path) -> None:
    """The broker keeps messages in memory: stopping it loses every one. Envelopes that were
    never acknowledged are sent again (same ids) once it is back, and arrive once."""
    broker = TansuBroker().start()
    port = broker.port
    try:
        with Federation.start(
            tmp_path, broker.bootstrap, regions=("43", "61"), resend_after_s=1.0
        ) as federation:
            hunan, shaanxi = federation.nodes["43"], federation.nodes["61"]
            town = hunan.node.add_hall("hn-shatou-town", SHATOU)
            shaanxi.node.add_hall("sx-baihe-county", BAIHE)
            federation.halt(shaanxi)  # 61 is not reading: the envelope waits on the broker
            result = hunan.node.run(
                town, "submit", idempotency_key="loss-0001", item_code=ID_CARD,
                applicant=APPLICANT, materials=[material()], competent_region=BAIHE,
            )  # fmt: skip
            federation.wait(
                lambda: (row := _only_row(hunan)) is not None and row.attempts >= 1,
                "the envelope went to the broker",
            )
            broker.stop()  # everything it held is gone
            # The backlog metric is counted while the broker is down too (reset here, so only
            # a count made now passes).
            backlog = telemetry.RELAY_BACKLOG.labels("tongban/61")
            backlog.set(-1)
            federation.wait(lambda: _backlog_metric("tongban/61") == 1, "counted while down")
            broker = TansuBroker(port=port).start()
            federation.run(shaanxi)
            federation.wait(lambda: shaanxi.app.get_case(result.case_id), "the case reached 61")
            federation.wait(lambda: not hunan.relay.store.backlog(), "acknowledged at 43")
            federation.wait(lambda: _backlog_metric("tongban/61") == 0, "the metric drained")
            assert shaanxi.app.get_case(result.case_id).version == 1
            row = _only_row(hunan)
            assert row is not None and row.attempts >= 2 and row.outcome == "stored"
    finally:
        broker.stop()


def _backlog_metric(destination: str) -> float | None:
    return telemetry.REGISTRY.get_sample_value(
        "tongban_relay_backlog", {"destination": destination}
    )


def test_a_relay_rides_out_its_database_going_away(
    tmp_path: Path, kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """43's PostgreSQL stops for a while: its relay's loops find the store unavailable and
    start again once it is back (as the node's commands do), instead of stopping the relay for
    good; its ledger integrator, whose batch failed, forgets that batch rather than taking it
    for a replay when it is stored again; a handoff made afterwards goes through."""
    try:
        cluster = PostgresCluster().start()
    except ServiceUnavailable as error:
        service_unavailable(error)
    try:
        with Federation.start(
            tmp_path, kafka_bootstrap, regions=("43", "61"), database_urls={"43": cluster.dsn}
        ) as federation:
            hunan, shaanxi = federation.nodes["43"], federation.nodes["61"]
            town = hunan.node.add_hall("hn-shatou-town", SHATOU)
            shaanxi.node.add_hall("sx-baihe-county", BAIHE)
            cluster.halt()
            federation.wait(
                lambda: "the store is unavailable" in caplog.text, "a relay loop met the outage"
            )
            cluster.resume()

            def submit() -> Any:
                return hunan.node.run(
                    town, "submit", idempotency_key="outage-0001", item_code=ID_CARD,
                    applicant=APPLICANT, materials=[material()], competent_region=BAIHE,
                )  # fmt: skip

            result = federation.wait(submit, "43 stores commands again", timeout=90)
            federation.wait(lambda: shaanxi.app.get_case(result.case_id), "the case reached 61")
            federation.wait(lambda: not hunan.relay.store.backlog(), "acknowledged at 43")
            assert hunan.relay is not None and hunan.relay.failure is None
            assert shaanxi.app.get_case(result.case_id).version == 1  # stored once
            _halt_and_audit(federation, hunan, shaanxi)
            assert _citations(hunan, shaanxi).ok
    finally:
        cluster.stop()


def _only_row(member: Any) -> Any:
    rows = member.relay.store.rows_for("tongban/61")
    return rows[0] if len(rows) == 1 else None


def test_a_handoff_to_a_hall_the_peer_does_not_have_comes_back_with_its_signed_refusal(
    federation: Federation,
) -> None:
    hunan, shaanxi = federation.nodes["43"], federation.nodes["61"]
    result = _handed_to_a_missing_hall(federation, "refuse")
    town, case_id = hunan.node.halls["hn-shatou-town"], str(result.case_id)
    federation.wait(
        lambda: _state(hunan, result.case_id) is CaseState.ACCEPTED, "the case came back to 43"
    )
    # The envelope's row records the refusal once 43 has stored the signed answer (the case
    # may come back a moment before the row is marked: wait for it, never sleep).
    federation.wait(
        lambda: any(
            row.outcome == "refused" and "no such hall" in row.reason
            for row in hunan.relay.store.rows_for(shaanxi.origin)
        ),
        "43 recorded 61's signed refusal",
    )
    # Both copies agree: accepted at the intake hall, which may hand it off again.
    assert _state(shaanxi, result.case_id) is CaseState.ACCEPTED
    hunan.node.run(
        town, "hand_off", idempotency_key="refuse-0004", case_id=case_id,
        to_hall=f"sx-baihe-county@{BAIHE}", reason="转户籍地",
    )  # fmt: skip
    federation.wait(
        lambda: _state(shaanxi, result.case_id) is CaseState.HANDED_OFF, "the second handoff"
    )
    federation.wait(lambda: not hunan.relay.store.backlog(), "acknowledged at 43")
    _halt_and_audit(federation, hunan, shaanxi)


def test_a_refusal_brings_the_case_back_after_the_senders_own_supervision_warning(
    manual: Federation,
) -> None:
    """Each node's 电子监察 supervisor records warnings in its own copy of a shared case; a
    warning recorded while a hand-off was on its way does not keep the refusal from taking the
    case back."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    row, submission = _offsite_submission(manual)
    town = hunan.node.halls["hn-shatou-town"]
    case_id = str(row.case_id)
    hunan.node.run(town, "accept", idempotency_key="warned-0001", case_id=case_id)
    hunan.node.run(
        town, "hand_off", idempotency_key="warned-0002", case_id=case_id,
        to_hall=f"sx-no-such-hall@{BAIHE}", reason="转户籍地",
    )  # fmt: skip
    accept, hand_off = [m for r, m in manual.outgoing(hunan) if r.envelope_id != row.envelope_id]
    answers: list[bytes] = []
    shaanxi.relay.inbox.send = lambda _topic, _key, message: answers.append(message)
    inbox = shaanxi.relay.inbox
    assert [inbox.handle(m) for m in (submission, accept, hand_off)] == [
        "stored",
        "stored",
        "refused",
    ]
    # Meanwhile the case's yellow mark passed at 43, whose supervisor recorded it.
    due = warning_due(hunan.app.get_case(row.case_id), WarningKind.YELLOW)
    assert due is not None
    hunan.app.clock = lambda: due + timedelta(minutes=1)
    hunan.app.record_warning(row.case_id, WarningKind.YELLOW)
    refusal = answers[-1]
    assert hunan.relay.inbox.handle(refusal) == "acknowledged"
    case = hunan.app.get_case(row.case_id)
    assert case.state is CaseState.ACCEPTED
    assert WarningKind.YELLOW in case.warnings


# ---------------------------------------------------------------------------------- 多地联办

RETIREMENT = "200406001000YJS01"  # 退休“一件事”: city level, joint tasks
YIYANG, WUHAN, ANKANG = "430900000000", "420100000000", "610900000000"


def test_a_joint_case_across_three_provinces_concludes_when_every_region_reported(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    with Federation.start(tmp_path, kafka_bootstrap, regions=("43", "42", "61")) as federation:
        hunan, hubei, shaanxi = (federation.nodes[r] for r in ("43", "42", "61"))
        city = hunan.node.add_hall("hn-yiyang-city", YIYANG, "益阳市政务服务中心")
        wuhan = hubei.node.add_hall("hb-wuhan-social", WUHAN, "武汉市社保中心")
        ankang = shaanxi.node.add_hall("sx-ankang-social", ANKANG, "安康市社保中心")
        result = hunan.node.run(
            city, "submit", idempotency_key="joint-0001", item_code=RETIREMENT,
            applicant=APPLICANT, materials=[material("养老保险缴费凭证")],
        )  # fmt: skip
        case_id = str(result.case_id)
        hunan.node.run(city, "accept", idempotency_key="joint-0002", case_id=case_id)
        hunan.node.run(
            city, "open_joint_tasks", idempotency_key="joint-0003", case_id=case_id,
            tasks=[
                common_pb2.JointTask(task_id="hubei", hall_id=f"hb-wuhan-social@{WUHAN}",
                                     department="湖北社保: 参保年限"),
                common_pb2.JointTask(task_id="shaanxi", hall_id=f"sx-ankang-social@{ANKANG}",
                                     department="陕西社保: 参保年限"),
            ],
        )  # fmt: skip
        # The task regions get the case from its submission on (catch-up), then report.
        for member, hall, task in ((hubei, wuhan, "hubei"), (shaanxi, ankang, "shaanxi")):
            federation.wait(
                lambda m=member: _state(m, result.case_id) is CaseState.JOINT,
                f"the joint case reached {member.origin}",
            )
            member.node.run(
                hall, "complete_joint_task", idempotency_key=f"joint-{task}",
                case_id=case_id, task_id=task, approved=True, note="年限已核",
            )  # fmt: skip
        for member in (hunan, hubei, shaanxi):
            federation.wait(
                lambda m=member: _state(m, result.case_id) is CaseState.HANDLING,
                f"every report reached {member.origin}",
            )
        hunan.node.run(
            city, "decide", idempotency_key="joint-0004", case_id=case_id,
            approved=True, reason="各地年限合并计算",
        )  # fmt: skip
        hunan.node.run(city, "conclude", idempotency_key="joint-0005", case_id=case_id)
        for member in (hubei, shaanxi):
            federation.wait(
                lambda m=member: _state(m, result.case_id) is CaseState.CONCLUDED,
                f"the conclusion reached {member.origin}",
            )
        versions = {m.app.get_case(result.case_id).version for m in (hunan, hubei, shaanxi)}
        assert len(versions) == 1
        federation.wait(
            lambda: not any(m.relay.store.backlog() for m in (hunan, hubei, shaanxi)),
            "every envelope acknowledged",
        )
        members = (hunan, hubei, shaanxi)
        _halt_and_audit(federation, *members)
        citations = _citations(*members)
        assert citations.ok and citations.checked > 0, citations.problems


# ---------------------------------------------------------------------------------- 全程网办

LICENCE = "070404001000"  # 机动车驾驶证有效期满换证: city level, 全程网办


def test_fully_online_intake_records_the_applicants_home_region(tmp_path: Path) -> None:
    node = InProcessNode.start(Settings(data_dir=tmp_path / "node", node_region="61"))
    try:
        online = node.add_hall("sx-ankang-online", ANKANG, "安康市网上办事大厅")
        result = node.run(
            online, "submit", idempotency_key="online-0001", item_code=LICENCE,
            applicant=APPLICANT, materials=[material("驾驶证")], home_region=SHATOU,
        )  # fmt: skip
        case = node.app.get_case(result.case_id)
        assert (case.mode, case.home_region) == (CrossRegionMode.FULLY_ONLINE, SHATOU)
        # An item that is not 全程网办 is refused, naming the field, and nothing is stored.
        size = node.log_size()
        with pytest.raises(InvalidInput) as refused:
            node.run(
                online, "submit", idempotency_key="online-0002", item_code=ID_CARD,
                applicant=APPLICANT, materials=[material()], competent_region=BAIHE,
                home_region=SHATOU,
            )  # fmt: skip
        assert refused.value.field == "command.submit.home_region"
        assert node.log_size() == size
        node.integrator().catch_up()
        report = _audit(Member("61", node), {})
        assert report.ok, [str(finding) for finding in report.findings]
    finally:
        node.close()


def test_a_step_waits_for_the_steps_its_sender_applied_before_it(manual: Federation) -> None:
    """Resends can reorder a case's envelopes: a hand-off that overtakes the accept it followed
    waits (nothing stored, nothing answered) instead of being refused, so no copy diverges."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    row, submission = _offsite_submission(manual)
    town = hunan.node.halls["hn-shatou-town"]
    case_id = str(row.case_id)
    hunan.node.run(town, "accept", idempotency_key="order-0001", case_id=case_id)
    hunan.node.run(
        town, "hand_off", idempotency_key="order-0002", case_id=case_id,
        to_hall=f"sx-baihe-county@{BAIHE}", reason="转户籍地",
    )  # fmt: skip
    later = [m for r, m in manual.outgoing(hunan) if r.envelope_id != row.envelope_id]
    accept, hand_off = later
    inbox = shaanxi.relay.inbox
    assert inbox.handle(submission) == "stored"
    size = shaanxi.node.log_size()
    assert inbox.handle(hand_off) == "waiting"
    assert shaanxi.node.log_size() == size
    assert inbox.handle(accept) == "stored"
    assert inbox.handle(hand_off) == "stored"
    assert shaanxi.app.get_case(row.case_id).state is CaseState.HANDED_OFF


def _acknowledged_submission(manual: Federation) -> tuple[Any, bytes, Any]:
    """43's submission for 61, stored at 61; its envelope's row at 43, 61's genuine
    acknowledgement (the message) and that acknowledgement's body."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    row, submission = _offsite_submission(manual)
    assert shaanxi.relay.inbox.handle(submission) == "stored"
    shaanxi.node.integrator().catch_up()
    record = peer_step_id(hunan.origin, _leaf_index_of_first_step(hunan, row))
    genuine = shaanxi.relay.publisher.ack_message(record, row.envelope_id, hunan.origin)
    assert genuine is not None
    body = federation_pb2.Ack.FromString(
        federation_pb2.FederationMessage.FromString(genuine).ack.body
    )
    return row, genuine, body


def test_a_peer_that_signs_a_wrong_citation_is_caught_by_following_it(manual: Federation) -> None:
    """A peer's acknowledgement is signed, so the sender's audit accepts it; only the peer's log
    shows that the index it cites is not the envelope's step. Following the citation finds it."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    _row, _genuine, body = _acknowledged_submission(manual)
    body.index = 0  # the genesis, not the step record
    lying = sign_ack(body.SerializeToString(), shaanxi.relay.publisher.signer)
    hunan.node.integrator().catch_up()
    assert hunan.relay.inbox.handle(lying) == "acknowledged"
    for member in (hunan, shaanxi):
        member.node.integrator().catch_up()
    citations = _citations(hunan, shaanxi)
    assert not citations.ok
    assert any("not that envelope's step" in problem for problem in citations.problems)


def test_a_peer_that_refuses_a_step_it_stored_is_caught_by_following_the_refusal(
    manual: Federation,
) -> None:
    """61 stores 43's step and yet answers with a signed refusal. 43 accepts the refusal (it
    is signed), and each log alone verifies; following the refusal into 61's log finds the
    step stored there."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    row, submission = _offsite_submission(manual)
    assert shaanxi.relay.inbox.handle(submission) == "stored"
    lying = refusal(
        shaanxi.relay.publisher.signer, own_origin=shaanxi.origin, envelope_id=row.envelope_id,
        destination=hunan.origin, reason="不予受理",
    )  # fmt: skip
    citations = _answered_each_log_verifying(manual, lying)
    assert citations.problems == [
        f"tongban/43: tongban/61 refused envelope {row.envelope_id}, but its log holds it"
    ]


def _leaf_index_of_first_step(member: Any, row: Any) -> int:
    with ReadOnlyStore(sqlite_path=member.node.settings.sqlite_path) as store:
        leaf = store.tables.leaf_for(store.cursor(), row.record_id, 1)
        assert leaf is not None
        return leaf.index


def test_an_acknowledgement_for_an_envelope_never_sent_there_or_with_a_bad_cosignature_is_held(
    manual: Federation,
) -> None:
    """The sender checks an acknowledgement before it stores it: signed by the peer's log key
    (as any message), for an envelope it sent to that peer (else ``unverifiable``), with a
    cosignature that verifies over its own checkpoint (else ``forged``). Either is held, and
    the envelope stays not done; the genuine one then goes through."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    row, genuine, body = _acknowledged_submission(manual)
    signer = shaanxi.relay.publisher.signer

    def altered(change: Any) -> bytes:
        copy = federation_pb2.Ack()
        copy.CopyFrom(body)
        change(copy)
        return sign_ack(copy.SerializeToString(), signer)

    never_sent = altered(lambda ack: setattr(ack, "envelope_id", str(UUID(int=7))))
    bad_line = body.cosignature.rstrip("\n")
    flipped = bad_line[:-2] + ("A" if bad_line[-2] != "A" else "B") + bad_line[-1]
    bad_cosignature = altered(lambda ack: setattr(ack, "cosignature", flipped + "\n"))
    misaddressed = altered(lambda ack: setattr(ack, "destination", "tongban/42"))
    stranger = Signer.generate("tongban/99")
    unknown = federation_pb2.Ack()
    unknown.CopyFrom(body)
    unknown.sender = "tongban/99"
    from_a_stranger = sign_ack(unknown.SerializeToString(), stranger)
    wrapper = federation_pb2.FederationMessage.FromString(genuine)
    wrapper.ack.signature = bytes(64)  # not the peer's signature
    inbox, store = hunan.relay.inbox, hunan.relay.store
    for message in (never_sent, bad_cosignature, misaddressed, from_a_stranger):
        assert inbox.handle(message) == "quarantined"
    assert inbox.handle(wrapper.SerializeToString()) == "quarantined"
    assert inbox.handle(federation_pb2.FederationMessage().SerializeToString()) == "quarantined"
    held = store.quarantined("held")
    assert [(q.reason, q.sender) for q in held] == [
        ("unverifiable", shaanxi.origin),
        ("forged", shaanxi.origin),
        ("misaddressed", shaanxi.origin),
        ("unknown sender", "tongban/99"),
        ("forged", shaanxi.origin),
        ("malformed", ""),
    ]
    assert "never sent there" in held[0].detail and "cosignature" in held[1].detail
    assert held[2].detail == f"addressed to 'tongban/42', this is {hunan.origin!r}"
    assert held[4].detail == f"not signed by {shaanxi.origin}'s log key"
    assert held[5].detail == "neither an envelope nor an acknowledgement"
    pending = store.row("envelope", row.envelope_id)
    assert pending is not None and pending.done_at is None
    assert inbox.handle(genuine) == "acknowledged"
    done = store.row("envelope", row.envelope_id)
    assert done is not None and done.done_at is not None


def test_a_node_made_a_party_gets_the_earlier_steps_forwarded_whoever_took_them(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """43 takes in a case for 61 and hands it there; 61 hands it on to a hall of 42. 42 had
    none of the case: 61 sends it every earlier step, 43's too (forwarded, with 43's own
    checkpoint and proofs), then its own. Every copy ends in the same state, and every log,
    with the citations between them, audits clean."""
    with Federation.start(tmp_path, kafka_bootstrap, regions=("43", "42", "61")) as federation:
        hunan, hubei, shaanxi = (federation.nodes[r] for r in ("43", "42", "61"))
        town = hunan.node.add_hall("hn-shatou-town", SHATOU)
        baihe = shaanxi.node.add_hall("sx-baihe-county", BAIHE)
        wuhan = hubei.node.add_hall("hb-wuhan-county", WUHAN)
        result = hunan.node.run(
            town, "submit", idempotency_key="forward-1", item_code=ID_CARD,
            applicant=APPLICANT, materials=[material()], competent_region=BAIHE,
        )  # fmt: skip
        case_id = str(result.case_id)
        hunan.node.run(town, "accept", idempotency_key="forward-2", case_id=case_id)
        hunan.node.run(
            town, "hand_off", idempotency_key="forward-3", case_id=case_id,
            to_hall=f"sx-baihe-county@{BAIHE}", reason="异地代收",
        )  # fmt: skip
        federation.wait(
            lambda: _state(shaanxi, result.case_id) is CaseState.HANDED_OFF, "the case at 61"
        )
        shaanxi.node.run(baihe, "acknowledge_handoff", idempotency_key="forward-4",
                         case_id=case_id)  # fmt: skip
        shaanxi.node.run(
            baihe, "hand_off", idempotency_key="forward-5", case_id=case_id,
            to_hall=f"hb-wuhan-county@{WUHAN}", reason="户籍在湖北",
        )  # fmt: skip
        federation.wait(  # (43's hand-off to 61, forwarded first, is HANDED_OFF too)
            lambda: hubei.app.get_case(result.case_id).version == 5, "61's hand-off at 42"
        )
        assert _state(hubei, result.case_id) is CaseState.HANDED_OFF
        hubei.node.run(wuhan, "acknowledge_handoff", idempotency_key="forward-6",
                       case_id=case_id)  # fmt: skip
        members = (hunan, hubei, shaanxi)
        for member in members:
            federation.wait(
                lambda m=member: (
                    _state(m, result.case_id) is CaseState.HANDLING
                    and m.app.get_case(result.case_id).version == 6
                ),
                f"every step at {member.origin}",
            )
        federation.wait(
            lambda: not any(m.relay.store.backlog() for m in members), "every envelope acked"
        )
        # 61 sent 42 five steps: 43's three, forwarded, then its own two.
        to_hubei = [r for r in shaanxi.relay.store.rows_for(hubei.origin) if r.kind == "envelope"]
        assert len(to_hubei) == 5 and {r.outcome for r in to_hubei} == {"stored"}
        _halt_and_audit(federation, *members)
        citations = _citations(*members)
        assert citations.ok and citations.checked > 0, citations.problems


# -------------------------------------------------------- a rogue operator with the log key


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _flipped(signature: bytes) -> bytes:
    return signature[:-1] + bytes([signature[-1] ^ 1])


@pytest.mark.parametrize(
    ("field", "kind", "detail"),
    [
        ("envelope_signature", "peer envelope", "did not sign this envelope"),
        ("origin_index", "peer proof", "the origin's leaf is not this command"),
        ("signature", "signature", "does not verify with the key"),
        ("hall_key", "signature", "does not verify with the key"),
        ("target_id", "mis-bound signature", "the record acts on"),
        ("origin_leaf", "peer proof", "the origin's leaf does not decode"),
        ("checkpoint", "peer proof", "note has no valid signature from a known key"),
        ("sender", "peer key unknown", "no log key of 'tongban/99' to check with"),
    ],
)
def test_a_peer_step_logged_with_altered_evidence_is_named_by_the_auditor(
    manual: Federation, field: str, kind: str, detail: str
) -> None:
    """A rogue operator at 61 holding 61's log key alters the evidence 61 stored of 43's step
    (the envelope's signature, where the step stands in 43's log, the hall's signature or key,
    the case it acts on, the origin's leaf, the checkpoint it is proved under, the node that
    sent it) and logs it past the gate.
    The auditor, with 43's public log key, names the step's leaf and nothing else (a step moved
    to another index is also a record under the wrong id: ``peer step replayed``)."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    _row, submission = _offsite_submission(manual)
    assert shaanxi.relay.inbox.handle(submission) == "stored"
    wrapper = federation_pb2.FederationMessage.FromString(submission)
    step = federation_pb2.Envelope.FromString(wrapper.envelope.body).step
    if field == "envelope_signature":
        signature = bytes(wrapper.envelope.signature)
        old, new = _b64(signature), _b64(_flipped(signature))
    elif field == "signature":  # the hall's signature of the command
        signature = Leaf.decode(step.leaf).signature
        old, new = _b64(signature), _b64(_flipped(signature))
    elif field == "hall_key":  # another key than the one that signed
        old, new = step.hall_key.encode(), base64.b64encode(bytes(range(32)))
    elif field == "target_id":  # another case than the command's
        case_id = federation_pb2.Envelope.FromString(wrapper.envelope.body).case_id
        old, new = UUID(case_id).hex.encode(), UUID(int=7).hex.encode()  # (stored as hex)
    elif field == "origin_leaf":  # bytes that are no leaf
        old, new = _b64(step.leaf), _b64(b"junk")
    elif field == "checkpoint":  # the origin's tree, signed by a key not the origin's
        genuine = federation_pb2.Envelope.FromString(wrapper.envelope.body).checkpoint
        stranger = Signer.generate(hunan.origin)
        old, new = _b64(genuine), _b64(sign_checkpoint(peek_checkpoint(genuine), stranger))
    elif field == "sender":  # a node whose key the auditor was not given
        old, new = b'"sender":"tongban/43"', b'"sender":"tongban/99"'
    else:
        old = f'"origin_index":{step.index},'.encode()
        new = f'"origin_index":{step.index - 1},'.encode()
    rewrite_last_event(shaanxi.node.settings, "PeerStep.Recorded", old, new)
    report = _audited_past_the_gate(shaanxi, hunan)
    assert any(f.kind == kind and detail in f.detail for f in report.findings), report.summary()
    assert len({finding.index for finding in report.findings}) == 1, report.summary()


def test_peer_records_changed_after_they_were_logged_are_named_by_the_auditor(
    manual: Federation,
) -> None:
    """A rogue writer changes a peer's step record at 61 (the hall it names), and a peer's
    acknowledgement at 43 (its signature), after each was logged honestly. Each leaf commits to
    its record's stored bytes, so the auditor names the record's leaf as modified, and checks
    nothing further from a record it cannot trust."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    _row, message, _body = _acknowledged_submission(manual)
    at_shaanxi = _first_leaf_of(shaanxi, "PeerStep.Recorded")
    at_hunan = hunan.node.integrator().catch_up()
    assert hunan.relay.inbox.handle(message) == "acknowledged"
    hunan.node.integrator().catch_up()
    rewrite_last_event(
        shaanxi.node.settings, "PeerStep.Recorded",
        f'"signer":"hn-shatou-town@{SHATOU}"'.encode(),
        f'"signer":"hn-other-town@{SHATOU}"'.encode(),
    )  # fmt: skip
    ack_signature = bytes(federation_pb2.FederationMessage.FromString(message).ack.signature)
    rewrite_last_event(
        hunan.node.settings, "PeerAcknowledgement.Recorded",
        _b64(ack_signature), _b64(_flipped(ack_signature)),
    )  # fmt: skip
    for member, peer, at in ((shaanxi, hunan, at_shaanxi), (hunan, shaanxi, at_hunan)):
        report = _audit(member, {peer.origin: _log_verifier(peer)})
        assert (at, "event modified") in _findings_at(report), report.summary()
        assert "signature" not in {f.kind for f in report.findings}, report.summary()


def _first_leaf_of(member: Member, topic_suffix: str) -> int:
    """The leaf index of ``member``'s first logged event of ``topic_suffix``."""
    view = member.node.integrator().view
    leaves = view.read(lambda cursor: view.tables.leaves(cursor, 0, member.node.log_size()))
    return next(i for i, leaf in enumerate(leaves) if leaf.topic.endswith(topic_suffix))


def test_a_replayed_peer_step_is_refused_by_a_restarted_gate_and_named_by_the_auditor(
    manual: Federation,
) -> None:
    """A rogue writer at 61 stores 43's step a second time: the same record (its id, its next
    version). The gate of a node restarted since the step (which remembers no step) refuses it
    at its own leaf (a restarted gate re-checks only the log's tail from its last command);
    logged past the gate with 61's log key, the auditor names the replay."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    _row, submission = _offsite_submission(manual)
    assert shaanxi.relay.inbox.handle(submission) == "stored"
    shaanxi.node.add_hall("sx-later-hall", BAIHE)  # a command of 61's own after the step
    at, report = _replayed_past_the_gate(shaanxi, hunan, "PeerStep.Recorded")
    assert (at, "peer step replayed") in {(f.index, f.kind) for f in report.findings}
    # (It announces the step's events again, which do not follow: named at the same leaf.)
    assert {f.index for f in report.findings} == {at}, report.summary()


def test_a_replayed_peer_acknowledgement_is_named_by_the_auditor(manual: Federation) -> None:
    """A rogue writer at 43 stores 61's acknowledgement a second time (its record's next
    version), as if the peer had acknowledged again: the gate refuses it, and logged past the
    gate with 43's log key, the auditor names the replay."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    _row, message, _body = _acknowledged_submission(manual)
    assert hunan.relay.inbox.handle(message) == "acknowledged"
    at, report = _replayed_past_the_gate(hunan, shaanxi, "PeerAcknowledgement.Recorded")
    assert _findings_at(report) == {(at, "peer acknowledgement replayed")}, report.summary()


def _replayed_past_the_gate(member: Member, peer: Member, topic_suffix: str) -> tuple[int, Any]:
    """As a rogue writer at ``member``: its first record of ``topic_suffix`` stored again. The
    gate (restarted) refuses it at its own leaf as a replay; logged past the gate with the
    member's log key: that leaf, and the auditor's report (with ``peer``'s public key)."""
    node = member.node
    at = node.integrator().catch_up()
    _store_again(node.app, topic_suffix)
    with pytest.raises(IntegrityViolation, match="replayed") as refused:
        node.integrator().catch_up()
    assert refused.value.index == at
    return at, _audited_past_the_gate(member, peer)


def _store_again(app: Any, topic_suffix: str) -> None:
    """As a rogue writer: store the first record of ``topic_suffix`` again, as its version 2."""
    genuine = next(
        app.mapper.to_domain_event(notification)
        for notification in app.recorder.select_notifications(start=1, limit=1000)
        if notification.topic.endswith(topic_suffix)
    )
    again = dataclasses.replace(genuine, originator_version=2)
    app.recorder.insert_events([app.mapper.to_stored_event(again)])


def _findings_at(report: Any) -> set[tuple[int | None, str]]:
    return {(finding.index, finding.kind) for finding in report.findings}


@pytest.mark.parametrize(
    ("field", "kind", "detail"),
    [
        ("signature", "signature", "did not sign this acknowledgement"),
        ("peer_index", "peer acknowledgement", "the record is not what the peer signed"),
        ("stored", "peer acknowledgement", "the record is not what the peer signed"),
        ("peer", "peer key unknown", "no log key of 'tongban/99' to check with"),
    ],
)
def test_a_peer_acknowledgement_logged_with_altered_evidence_is_named_by_the_auditor(
    manual: Federation, field: str, kind: str, detail: str
) -> None:
    """A rogue operator at 43 holding 43's log key stores 61's acknowledgement altered (another
    signature, another leaf of 61's log cited, a refusal recorded as stored or the other way,
    another node as its signer) and logs it past the gate: the auditor, with 61's public log
    key, names it and nothing else."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    _row, genuine, body = _acknowledged_submission(manual)
    hunan.node.integrator().catch_up()
    assert hunan.relay.inbox.handle(genuine) == "acknowledged"
    if field == "signature":
        signature = bytes(federation_pb2.FederationMessage.FromString(genuine).ack.signature)
        old, new = _b64(signature), _b64(_flipped(signature))
    elif field == "peer_index":
        old = f'"peer_index":{body.index},'.encode()
        new = f'"peer_index":{body.index + 1},'.encode()
    elif field == "stored":
        old, new = b'"stored":true', b'"stored":false'
    else:
        old, new = b'"peer":"tongban/61"', b'"peer":"tongban/99"'
    rewrite_last_event(hunan.node.settings, "PeerAcknowledgement.Recorded", old, new)
    report = _audited_past_the_gate(hunan, shaanxi)
    assert [finding.kind for finding in report.findings] == [kind], report.summary()
    assert detail in report.findings[0].detail


def test_the_auditor_told_the_regions_names_a_step_of_a_hall_its_origin_does_not_keep(
    manual: Federation, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A node registers halls of its own region only, so a peer's step must be of a hall of the
    region that peer keeps. The node refuses any other; an auditor told the peers' regions
    (``--peer-region``, from their ``[[peers]]`` entries) names one in a log as well. Here the
    auditor is told 43 keeps 44: 43's genuine step, of a hall of 43, is then out of its region."""
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    _row, submission = _offsite_submission(manual)
    assert shaanxi.relay.inbox.handle(submission) == "stored"
    shaanxi.node.integrator().catch_up()
    peers = {hunan.origin: _log_verifier(hunan)}
    with _read_only(shaanxi) as store:
        told = audit_store(
            store, [_log_verifier(shaanxi)], origin=shaanxi.origin, peers=peers,
            peer_regions={hunan.origin: "43"},
        )  # fmt: skip
        misled = audit_store(
            store, [_log_verifier(shaanxi)], origin=shaanxi.origin, peers=peers,
            peer_regions={hunan.origin: "44"},
        )  # fmt: skip
    assert told.ok, told.summary()
    assert [(f.kind, f.detail) for f in misled.findings] == [
        (
            "hall of another region",
            f"the hall is of region {SHATOU}, which 'tongban/43' does not keep (44)",
        )
    ]
    # The same from the command line; a malformed --peer-region is a usage error.
    monkeypatch.setenv("TONGBAN_DATA_DIR", str(shaanxi.node.settings.data_dir))
    monkeypatch.setenv("TONGBAN_NODE_REGION", "61")
    audit = ["audit", "verify", "--log-key", shaanxi.node.app.genesis().log_key]
    audit += ["--peer-key", hunan.node.app.genesis().log_key]
    assert cli_main([*audit, "--peer-region", "tongban/43=43"]) == 0
    assert cli_main([*audit, "--peer-region", "tongban/43=44"]) != 0
    assert "hall of another region" in capsys.readouterr().out
    assert cli_main([*audit, "--peer-region", "tongban/43"]) != 0
    assert "--peer-region 'tongban/43': expected ORIGIN=REGION" in capsys.readouterr().err

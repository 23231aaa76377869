"""Agents (代办员) who sign their own steps: the attacks first.

An agent registered with a public key of their own signs every step that names them; the
node refuses any other signature on such a step (the hall's, another agent's, a forger's),
refuses the key of a retired agent and the key of an agent of another hall, and the log's
binding check (the integrity gate, the auditor) holds the same rule over the stored log.
Each test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tongban.v1 import common_pb2, federation_pb2

from hub.api.errors import status_code_for, to_status
from hub.application.hub import HubApplication
from hub.bootstrap import public_key_b64
from hub.domain.hall import key_id
from hub.domain.values import Applicant, CaseState, id_number_with_check
from hub.errors import (
    AlreadyExists,
    IntegrityViolation,
    InvalidInput,
    PermissionRefused,
    SignatureRefused,
)
from hub.integrity.audit import audit_store
from hub.integrity.binding import LogChecker
from hub.integrity.store import ReadOnlyStore
from hub.relay.envelope import sign_envelope
from hub.settings import Settings
from ledger import Authority, Verifier
from tests.harness.federation import Federation
from tests.harness.inprocess import APPLICANT, InProcessNode, material, read_only_store

VILLAGE = "430902104201"
TOWNSHIP = "430902104000"
AGENT = Applicant("王代办", id_number_with_check("43090219800101003"), "13907370007")
LETTER = common_pb2.AgentAuthorisation(
    agent_id="dby-07", role=common_pb2.AGENT_ROLE_ACTING, letter_sha256="ab" * 32
)
AGENT_KEY = Ed25519PrivateKey.generate()
OTHER_AGENT_KEY = Ed25519PrivateKey.generate()


@pytest.fixture
def settings(store_url: str | None, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "node", checkpoint_every=8, database_url=store_url)


@pytest.fixture
def node(settings: Settings) -> Iterator[InProcessNode]:
    started = InProcessNode.start(settings)
    village = started.add_hall("v-room", VILLAGE)
    started.add_hall("t-hall", TOWNSHIP)
    started.run(village, "register_agent", agent_id="dby-07", person=AGENT,
                public_key=public_key_b64(AGENT_KEY))  # fmt: skip
    started.run(village, "register_agent", agent_id="dby-08", person=AGENT,
                public_key=public_key_b64(OTHER_AGENT_KEY))  # fmt: skip
    yield started
    started.close()


def _submit_by_agent(node: InProcessNode, key: Ed25519PrivateKey | None, idem: str) -> Any:
    """The agent's submission at the village room, signed by ``key`` (None: the hall's)."""
    return node.halls["v-room"].sign(
        "submit", idempotency_key=idem, acting_agent="dby-07", agent_key=key,
        item_code="200202001000", applicant=APPLICANT, materials=[material()],
        channel=common_pb2.INTAKE_CHANNEL_AGENT, agent=LETTER,
    )  # fmt: skip


def _refused_with(node: InProcessNode, signed: Any, error: type[Exception], match: str) -> None:
    size = node.log_size()
    with pytest.raises(error, match=match):
        node.app.execute(signed)
    assert node.log_size() == size  # nothing stored


def _store(node: InProcessNode) -> ReadOnlyStore:
    return read_only_store(node.settings)


def _command_leaves(node: InProcessNode) -> list[Any]:
    """The log's hall-command leaves, in order (what the auditor checks signatures of)."""
    with _store(node) as store:
        leaves = store.tables.leaves(store.cursor(), 0, node.log_size())
    return [leaf for leaf in leaves if leaf.authority is Authority.HALL_COMMAND]


def _audit(node: InProcessNode) -> Any:
    settings = node.settings
    verifier = Verifier.from_key((settings.data_dir / "log.vkey").read_text().strip())
    with _store(node) as store:
        return audit_store(store, [verifier], origin=settings.origin)


def test_an_agents_own_signature_is_what_the_log_keeps(node: InProcessNode) -> None:
    case_id = node.app.execute(_submit_by_agent(node, AGENT_KEY, "agent-own-0001")).case_id
    node.run(node.halls["v-room"], "accept", acting_agent="dby-07", agent_key=AGENT_KEY,
             case_id=str(case_id))  # fmt: skip
    node.run(
        node.halls["v-room"], "hand_off", case_id=str(case_id), to_hall="t-hall", reason="送乡镇"
    )  # fmt: skip  (the hall's own step: its key)
    agent = node.app.get_agent("v-room", "dby-07")
    assert agent.signs_own_steps and agent.key_id == key_id(public_key_b64(AGENT_KEY))
    node.integrator().catch_up()
    signed_by = [(leaf.signer, leaf.key_id) for leaf in _command_leaves(node)[-3:]]
    hall_key = key_id(public_key_b64(node.halls["v-room"].key))
    assert signed_by == [
        ("v-room", agent.key_id),  # the submission: the agent's key
        ("v-room", agent.key_id),  # the acceptance
        ("v-room", hall_key),  # the hand-off: the hall's
    ]
    report = _audit(node)
    assert report.ok, report.summary()


def test_the_halls_signature_on_a_step_of_an_agent_with_a_key_is_refused(
    node: InProcessNode,
) -> None:
    _refused_with(node, _submit_by_agent(node, None, "agent-hall-0001"), SignatureRefused,
                  "agent dby-07's own key")  # fmt: skip


def test_another_agents_key_and_a_forged_key_are_refused(node: InProcessNode) -> None:
    _refused_with(node, _submit_by_agent(node, OTHER_AGENT_KEY, "agent-other-001"),
                  SignatureRefused, "agent dby-07's own key")  # fmt: skip
    forger = Ed25519PrivateKey.generate()
    _refused_with(node, _submit_by_agent(node, forger, "agent-forge-001"), SignatureRefused,
                  "agent dby-07's own key")  # fmt: skip
    # An agent without a key cannot be spoofed by signing with a key of one's own either.
    village = node.halls["v-room"]
    node.run(village, "register_agent", agent_id="dby-09", person=AGENT)
    spoof = village.sign("retire_agent", agent_id="dby-08", reason="x",
                         acting_agent="dby-09", agent_key=forger)  # fmt: skip
    _refused_with(node, spoof, SignatureRefused, "the signer's current key")


def test_a_retired_agents_key_acts_no_more_but_old_steps_replay(node: InProcessNode) -> None:
    first = _submit_by_agent(node, AGENT_KEY, "agent-ret-0001")
    case_id = node.app.execute(first).case_id
    node.run(node.halls["v-room"], "retire_agent", agent_id="dby-07", reason="调离")
    later = node.halls["v-room"].sign("accept", acting_agent="dby-07", agent_key=AGENT_KEY,
                                      case_id=str(case_id))  # fmt: skip
    _refused_with(node, later, PermissionRefused, "dby-07 is retired")
    # A retry of the step the agent signed before retiring gets its first result.
    again = node.app.execute(first)
    assert again.replayed and again.case_id == case_id


def test_an_agents_key_does_not_act_for_another_hall(node: InProcessNode) -> None:
    township = node.halls["t-hall"]
    # The township has its own dby-07 (another person), with its own key.
    own = Ed25519PrivateKey.generate()
    node.run(township, "register_agent", agent_id="dby-07", person=AGENT,
             public_key=public_key_b64(own))  # fmt: skip
    moved = township.sign(
        "submit", acting_agent="dby-07", agent_key=AGENT_KEY, item_code="200202001000",
        applicant=APPLICANT, materials=[material()], channel=common_pb2.INTAKE_CHANNEL_AGENT,
        agent=LETTER,
    )  # fmt: skip
    _refused_with(node, moved, SignatureRefused, "agent dby-07's own key")
    # A hall where the agent is not registered at all: the hall's key would be needed, and the
    # agent's key is not it.
    node.add_hall("t-hall-2", TOWNSHIP)
    elsewhere = node.halls["t-hall-2"].sign(
        "submit", acting_agent="dby-07", agent_key=AGENT_KEY, item_code="200202001000",
        applicant=APPLICANT, materials=[material()], agent=LETTER,
    )  # fmt: skip
    _refused_with(node, elsewhere, SignatureRefused, "the signer's current key")


def test_a_registration_with_a_bad_key_or_the_halls_own_is_refused(node: InProcessNode) -> None:
    village = node.halls["v-room"]
    for key, match in [
        ("bm90IGEga2V5", "an Ed25519 public key has 32 bytes"),
        ("???", "not base64"),
        (public_key_b64(village.key), "one of the hall's keys"),
    ]:
        size = node.log_size()
        with pytest.raises(InvalidInput, match=match) as refused:
            node.run(village, "register_agent", agent_id="dby-10", person=AGENT, public_key=key)
        assert refused.value.field == "command.register_agent.public_key"
        assert node.log_size() == size


def test_a_hall_signed_step_of_an_agent_with_a_key_never_enters_the_log(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose software took the hall's signature for a keyed agent's step cannot sign
    the step into its log, and an auditor names it."""
    node.integrator().catch_up()
    hall_key = node.app.get_hall("v-room").current_key
    with monkeypatch.context() as patched:
        patched.setattr(HubApplication, "_signer_key",
                        lambda self, parsed: (hall_key, self.get_hall("v-room")))  # fmt: skip
        node.app.execute(_submit_by_agent(node, None, "agent-bad-00001"))
    with pytest.raises(IntegrityViolation, match="signs their own steps with key"):
        node.integrator().catch_up()


def test_a_hall_signed_step_of_an_agent_with_a_key_past_the_gate_is_named_by_the_auditor(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    node.integrator().catch_up()
    hall_key = node.app.get_hall("v-room").current_key
    # A node whose rule and gate both took the hall's signature for the agent's step.
    with monkeypatch.context() as patched:
        patched.setattr(HubApplication, "_signer_key",
                        lambda self, parsed: (hall_key, self.get_hall("v-room")))  # fmt: skip
        patched.setattr(LogChecker, "_check_agent_signature", lambda *args: [])
        node.app.execute(_submit_by_agent(node, None, "agent-bad-00002"))
        node.integrator().catch_up()
    report = _audit(node)
    assert not report.ok
    findings = [str(finding) for finding in report.findings]
    assert len(findings) == 1 and "agent dby-07 of 'v-room' signs their own steps" in findings[0]


def test_an_agents_signed_step_travels_to_the_competent_node_and_verifies_there(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """异地代收代办 taken in by an agent with a key: the envelope carries the agent's key, the
    competent node verifies the agent's signature with it, and a forged key is quarantined."""
    with Federation.start(tmp_path, kafka_bootstrap, regions=("43", "61"), run=False) as fed:
        hunan, shaanxi = fed.nodes["43"], fed.nodes["61"]
        town = hunan.node.add_hall("hn-shatou-town", "430902104000")
        shaanxi.node.add_hall("sx-baihe-county", "610929000000")
        hunan.node.run(town, "register_agent", agent_id="dby-07", person=AGENT,
                       public_key=public_key_b64(AGENT_KEY))  # fmt: skip
        hunan.node.run(
            town, "submit", idempotency_key="agent-offsite-1", acting_agent="dby-07",
            agent_key=AGENT_KEY, item_code="070302001000", applicant=APPLICANT,
            materials=[material()], competent_region="610929000000",
            channel=common_pb2.INTAKE_CHANNEL_AGENT, agent=LETTER,
        )  # fmt: skip
        (row, message), *_ = [m for m in fed.outgoing(hunan) if m[0].kind == "envelope"]
        body = federation_pb2.Envelope.FromString(
            federation_pb2.FederationMessage.FromString(message).envelope.body
        )
        assert body.step.hall_key == public_key_b64(AGENT_KEY)
        # The same step claiming the hall's key instead (re-signed by 43's own node key): the
        # key does not match the leaf's key id, so the competent node quarantines it as forged.
        wrapper = federation_pb2.FederationMessage.FromString(message)
        body.step.hall_key = hunan.node.app.get_hall("hn-shatou-town").current_key
        forged = sign_envelope(
            body.SerializeToString(),
            hunan.relay.publisher.signer,
            bytes(wrapper.envelope.sealed_personal),
        )
        assert shaanxi.relay.inbox.handle(forged) == "quarantined"
        assert [q.reason for q in shaanxi.relay.store.quarantined("held")] == ["forged"]
        assert shaanxi.relay.inbox.handle(message) == "stored"
        copy = shaanxi.app.get_case(row.case_id)
        assert copy.state is CaseState.RECEIVED


def test_the_refusal_of_the_halls_signature_reads_as_documented(node: InProcessNode) -> None:
    size = node.log_size()
    with pytest.raises(SignatureRefused) as refused:
        node.app.execute(_submit_by_agent(node, None, "agent-hall-0002"))
    assert status_code_for(refused.value) is grpc.StatusCode.UNAUTHENTICATED
    assert to_status(refused.value).message == (
        "hall v-room: signature refused: does not verify over the command bytes with agent "
        "dby-07's own key (the agent signs their steps, not the hall)"
    )
    assert node.log_size() == size


def test_no_key_the_hall_ever_had_is_an_agents_key(node: InProcessNode) -> None:
    """A key the hall rotated away from is still one of the hall's own keys (its old steps
    verify with it): no agent may be registered with it."""
    village = node.halls["v-room"]
    old = village.key
    new = Ed25519PrivateKey.generate()
    node.app.execute(node.admin.sign("rotate_hall_key", hall_id="v-room",
                                     public_key=public_key_b64(new)))  # fmt: skip
    village.key = new
    size = node.log_size()
    with pytest.raises(InvalidInput, match="one of the hall's keys") as refused:
        node.run(village, "register_agent", agent_id="dby-10", person=AGENT,
                 public_key=public_key_b64(old))  # fmt: skip
    assert refused.value.field == "command.register_agent.public_key"
    assert node.log_size() == size


def test_a_lost_device_means_a_new_agent_id_and_the_old_steps_still_verify(
    node: InProcessNode,
) -> None:
    village = node.halls["v-room"]
    case_id = node.app.execute(_submit_by_agent(node, AGENT_KEY, "agent-lost-0001")).case_id
    replacement = Ed25519PrivateKey.generate()
    # The agent's key cannot be changed: registering the id again is refused, key or not.
    with pytest.raises(AlreadyExists):
        node.run(village, "register_agent", agent_id="dby-07", person=AGENT,
                 public_key=public_key_b64(replacement))  # fmt: skip
    node.run(village, "retire_agent", agent_id="dby-07", reason="设备丢失")
    node.run(village, "register_agent", agent_id="dby-07b", person=AGENT,
             public_key=public_key_b64(replacement))  # fmt: skip
    # The old key acts no more; the new id acts with the new key (authorised on the case).
    with pytest.raises(PermissionRefused, match="dby-07 is retired"):
        node.run(village, "accept", acting_agent="dby-07", agent_key=AGENT_KEY,
                 case_id=str(case_id))  # fmt: skip
    again = common_pb2.AgentAuthorisation()
    again.CopyFrom(LETTER)
    again.agent_id = "dby-07b"
    node.run(village, "authorise_agent", case_id=str(case_id), agent=again)
    node.run(village, "accept", acting_agent="dby-07b", agent_key=replacement,
             case_id=str(case_id))  # fmt: skip
    node.integrator().catch_up()
    report = _audit(node)  # the old steps verify with the old key, the new with the new
    assert report.ok, report.summary()
    keys = [leaf.key_id for leaf in _command_leaves(node)]
    assert key_id(public_key_b64(AGENT_KEY)) in keys
    assert key_id(public_key_b64(replacement)) in keys

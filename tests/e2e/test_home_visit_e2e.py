"""End to end: a 代办员's home visit (上门办) with a 生存认证, taken offline in a village and
forwarded later, against a real node process over mutual TLS.

The room's agent is registered at the node first (their name, ID number and phone as
commitments). Then, with no network (the outbox only queues, it forwards nothing), the agent
queues at an elderly pensioner's home: the
application for the yearly 养老金领取资格认证 (an oral authorisation before the village
committee's director as witness), the 生存认证 done with the room's phone app (its outcome
only), and the acceptance. The node comes up, the outbox forwards, and the node has every step
with the agent, at the times the agent acted, each bound in its signed log.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from tongban.v1 import common_pb2

from adapters.sdk import HallCredentials
from hub.bootstrap import public_key_b64
from tests.e2e.conftest import TOWNSHIP, VILLAGE
from tests.e2e.test_adapters_support import (
    audited_history,
    check_audited_commands,
    closed_port,
    id_number,
)
from tests.e2e.test_adapters_village_e2e import FixedPortNode, Room

pytestmark = pytest.mark.e2e

PENSION = "040323001000"  # 养老金领取资格认证: a yearly 生存认证 (LIVENESS)
AGENT = common_pb2.Applicant(
    name="王代办", id_number=id_number("43090219800101003"), phone="13907370007"
)
PENSIONER = common_pb2.Applicant(
    name="李奶奶", id_number=id_number("43090219400101002"), phone="13700000001"
)
LIVENESS_PASSED = json.dumps(
    {
        "method": "IDENTITY_CHECK_METHOD_LIVENESS",
        "device_id": "sb-app-0042",
        "result": "CHECK_RESULT_PASSED",
        "score_band": "SCORE_BAND_HIGH",
    }
)


def test_a_home_visit_with_proof_of_life_taken_offline_and_forwarded(tmp_path: Path) -> None:
    card = tmp_path / "社保卡.jpg"
    card.write_bytes(b"\xff\xd8\xff\xe0 social security card " * 64)
    with FixedPortNode(tmp_path / "node", closed_port()) as node:
        for hall_id, region in (VILLAGE, TOWNSHIP):
            node.add_hall(hall_id, region)
        node.start()
        # The agent signs their own steps with a key of their own (on the room's phone).
        agent_key = Ed25519PrivateKey.generate()
        agent_key_file = tmp_path / "dby-07.pem"
        agent_key_file.write_bytes(
            agent_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        )
        with node.client(VILLAGE[0]) as client:
            client.send("register_agent", idempotency_key="agent-dby-07", applicant=AGENT,
                        agent_id="dby-07", public_key=public_key_b64(agent_key))  # fmt: skip
        signs = ("--agent-key", f"dby-07={agent_key_file}")
        # --- at the pensioner's home: no network; the outbox only queues -----------------

        room = Room(node, tmp_path / "room" / "outbox.sqlite3")
        out = room.run(
            "submit", "--ref", "HV-001", "--item", PENSION, "--name", PENSIONER.name,
            "--id-number", PENSIONER.id_number, "--phone", PENSIONER.phone,
            "--material", f"社会保障卡={card}", "--channel", "HOME_VISIT",
            "--agent", "dby-07", "--witness-role", "村委会主任", "--witness-name", "张主任", *signs,
        )  # fmt: skip
        assert "witness commitment salt" in out and "张主任" not in out
        # The proof of life comes before the acceptance (which would be refused without it).
        room.run("act", "record_identity_check", "--ref", "HV-001", "--agent", "dby-07",
                 "--json", LIVENESS_PASSED, *signs)  # fmt: skip
        room.run("act", "accept", "--ref", "HV-001", "--agent", "dby-07", *signs)
        queued = room.by_ref("HV-001")
        assert [c["status"] for c in queued] == ["pending"] * 3

        # --- back in range: the outbox forwards, with the times the agent acted ----------
        # Steps queued before the case had an id are signed now: the agent's key is needed.
        assert "sent 3, failed 0;" in room.run("forward", "--once", *signs)
        sent = room.by_ref("HV-001")
        case_id = sent[0]["case_id"]
        with node.client(VILLAGE[0]) as client:
            events = client.history(case_id).events
            view = client.get_case(case_id)
        assert [e.WhichOneof("event") for e in events] == [
            "submitted",
            "identity_checked",
            "accepted",
        ]
        assert {e.actor.agent for e in events} == {"dby-07"}  # who acted for whom
        submitted = events[0].submitted
        assert submitted.channel == common_pb2.INTAKE_CHANNEL_HOME_VISIT
        assert submitted.agent.agent_id == "dby-07"
        assert submitted.agent.role == common_pb2.AGENT_ROLE_ACTING
        assert submitted.agent.witness_role == "村委会主任"
        assert len(submitted.agent.witness_commitment) == 64
        assert list(submitted.required_checks) == [common_pb2.IDENTITY_CHECK_METHOD_LIVENESS]
        checked = events[1].identity_checked
        assert (checked.method, checked.result, checked.score_band, checked.device_id) == (
            common_pb2.IDENTITY_CHECK_METHOD_LIVENESS, common_pb2.CHECK_RESULT_PASSED,
            common_pb2.SCORE_BAND_HIGH, "sb-app-0042",
        )  # fmt: skip
        assert view.state == common_pb2.CASE_STATE_ACCEPTED

        # The auditor's view: deferred commands at the agent's own times, each naming the agent,
        # verifying with the agent's public key alone (not the room's), with no personal value
        # and no witness name.
        hall_key = HallCredentials.load_signing_key(node.halls[VILLAGE[0]].signing_key).public_key()
        history = audited_history(node, case_id)
        commands = check_audited_commands(history, agent_key.public_key(), PENSIONER)
        for audited in history.commands:
            with pytest.raises(InvalidSignature):
                hall_key.verify(audited.signature, audited.command)
        assert [c.WhichOneof("action") for c in commands] == [
            "submit", "record_identity_check", "accept",
        ]  # fmt: skip
        assert all(c.header.deferred and c.header.agent == "dby-07" for c in commands)
        assert [c.header.issued_at.ToDatetime(tzinfo=UTC) for c in commands] == [
            datetime.fromisoformat(x["created_at"]) for x in sent
        ]
        for audited in history.commands:
            assert "张主任".encode() not in audited.command
            for value in (AGENT.name, AGENT.id_number):
                assert value.encode() not in audited.command

"""Agents (代办员) through the node: registered with sealed personal data, acting only for
applicants who authorised them, every step recorded and bound in the log, every refusal named.

Each test runs on SQLite and on PostgreSQL; every command is signed by its hall's key.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import grpc
import psycopg
import pytest
from tongban.v1 import common_pb2

from hub.api.errors import status_code_for, to_status
from hub.application.hub import HubApplication
from hub.cli import main
from hub.domain.agent import Agent
from hub.domain.case import Case
from hub.domain.values import Applicant, id_number_with_check
from hub.errors import AlreadyExists, IntegrityViolation, InvalidInput, PermissionRefused
from hub.settings import Settings
from tests.harness.inprocess import APPLICANT, InProcessNode, audit_node, material
from tests.harness.tamper import rewrite_last_event

VILLAGE_REGION = "430902104201"
TOWNSHIP_REGION = "430902104000"
AGENT = Applicant("王代办", id_number_with_check("43090219800101003"), "13907370007")
LETTER = common_pb2.AgentAuthorisation(
    agent_id="dby-07", role=common_pb2.AGENT_ROLE_ACTING, letter_sha256="ab" * 32
)


@pytest.fixture
def settings(store_url: str | None, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "node", checkpoint_every=8, database_url=store_url)


@pytest.fixture
def node(settings: Settings) -> Iterator[InProcessNode]:
    started = InProcessNode.start(settings)
    started.add_hall("v-room", VILLAGE_REGION)
    started.add_hall("t-hall", TOWNSHIP_REGION)
    started.run(started.halls["v-room"], "register_agent", idempotency_key="agent-reg-07",
                agent_id="dby-07", person=AGENT)  # fmt: skip
    yield started
    started.close()


def _stored_states(settings: Settings) -> list[bytes]:
    if settings.database_url is None:
        with sqlite3.connect(settings.sqlite_path) as connection:
            return [bytes(r[0]) for r in connection.execute("SELECT state FROM stored_events")]
    with psycopg.connect(settings.database_url) as connection:
        return [bytes(r[0]) for r in connection.execute("SELECT state FROM tongban_events")]


def _audit_ok(settings: Settings) -> None:
    report = audit_node(settings)
    assert report.ok, report.summary()


def test_an_agents_personal_data_is_committed_and_sealed(node: InProcessNode) -> None:
    agent = node.app.get_agent("v-room", "dby-07")
    assert isinstance(agent, Agent) and not agent.retired
    assert agent.person is not None and agent.person.ciphertext
    for state in _stored_states(node.settings):
        for value in (AGENT.name, AGENT.id_number, AGENT.phone):
            assert value.encode() not in state
    opened = node.app.vault.open(
        agent.id,
        agent.person,
        node.app.keys.personal_key(agent.id)[1],  # type: ignore[index]
    )
    assert opened is not None and opened.applicant == AGENT
    # Erasing an applicant's cases by ID number never finds the agent's record.
    assert node.app.cases_of_person(AGENT.id_number) == []
    with pytest.raises(AlreadyExists):
        node.run(node.halls["v-room"], "register_agent", idempotency_key="agent-reg-07b",
                 agent_id="dby-07", person=AGENT)  # fmt: skip
    with pytest.raises(InvalidInput) as refused:  # a value that does not open its commitment
        signed = node.halls["v-room"].sign("register_agent", agent_id="dby-08", person=AGENT)
        bad = signed.personal[0].__class__(
            signed.personal[0].field, "李四", signed.personal[0].salt
        )
        node.app.execute(signed.__class__(signed.command, signed.signature,
                                          (bad, *signed.personal[1:])))  # fmt: skip
    assert refused.value.field == "personal[0].value"


def _refused(node: InProcessNode, hall: str, action: str, match: str, **fields: Any) -> None:
    size = node.log_size()
    with pytest.raises(PermissionRefused, match=match):
        node.run(node.halls[hall], action, **fields)
    assert node.log_size() == size  # nothing stored


def test_each_refusal_of_an_agent_is_named_and_stores_nothing(node: InProcessNode) -> None:
    village, township = node.halls["v-room"], node.halls["t-hall"]
    node.run(township, "register_agent", idempotency_key="agent-reg-t1", agent_id="dby-t1",
             person=AGENT)  # fmt: skip
    case = str(node.submit(village, "key-case-0001").case_id)
    # An unknown agent, and an agent of another hall.
    _refused(node, "v-room", "accept", "'dby-99' is not registered at this hall",
             acting_agent="dby-99", case_id=case)  # fmt: skip
    _refused(node, "v-room", "accept", "'dby-t1' is not registered at this hall",
             acting_agent="dby-t1", case_id=case)  # fmt: skip
    # A registered agent acting without the applicant's authorisation.
    _refused(node, "v-room", "accept", "no authorisation", acting_agent="dby-07", case_id=case)
    # A submission naming an unknown agent as authorised.
    other = common_pb2.AgentAuthorisation()
    other.CopyFrom(LETTER)
    other.agent_id = "dby-t1"
    _refused(node, "v-room", "submit", "not registered", idempotency_key="key-case-0002",
             item_code="200202001000", applicant=APPLICANT, materials=[material()],
             agent=other)  # fmt: skip
    # A retired agent.
    node.run(village, "retire_agent", agent_id="dby-07", reason="调离")
    _refused(node, "v-room", "submit", "retired", idempotency_key="key-case-0003",
             item_code="200202001000", applicant=APPLICANT, materials=[material()],
             agent=LETTER)  # fmt: skip
    _audit_after_integration(node)


def _audit_after_integration(node: InProcessNode) -> None:
    node.integrator().catch_up()
    _audit_ok(node.settings)


def test_an_agent_run_case_shows_who_acted_for_whom(node: InProcessNode) -> None:
    village, township = node.halls["v-room"], node.halls["t-hall"]
    result = node.app.execute(_agent_submit(village))
    case = str(result.case_id)
    node.run(village, "accept", acting_agent="dby-07", case_id=case)
    node.run(
        village, "hand_off", acting_agent="dby-07", case_id=case, to_hall="t-hall", reason="送乡镇"
    )
    node.run(township, "acknowledge_handoff", case_id=case)
    node.run(township, "decide", case_id=case, approved=True, reason="符合条件")
    history = node.app.case_history(UUID(case))
    acts = [(type(e).__name__, e.actor.hall_id, e.actor.agent) for e in history]  # type: ignore[attr-defined]
    assert acts == [
        ("Submitted", "v-room", "dby-07"),
        ("Accepted", "v-room", "dby-07"),
        ("HandedOff", "v-room", "dby-07"),
        ("HandoffAcknowledged", "t-hall", ""),
        ("Decided", "t-hall", ""),
    ]
    submitted = history[0]
    assert submitted.agent.letter_sha256 == "ab" * 32  # type: ignore[attr-defined]
    _audit_after_integration(node)


def _agent_submit(village: Any) -> Any:
    return village.sign(
        "submit", idempotency_key="key-agent-0001", acting_agent="dby-07", item_code="200202001000",
        applicant=APPLICANT, materials=[material(), material("委托书")],
        channel=common_pb2.INTAKE_CHANNEL_AGENT, agent=LETTER,
    )  # fmt: skip


def test_a_retired_agents_step_never_enters_the_log(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose software let a retired agent act cannot sign the step into its log."""
    village = node.halls["v-room"]
    case = str(node.app.execute(_agent_submit(village)).case_id)
    node.run(village, "retire_agent", agent_id="dby-07", reason="调离")
    node.integrator().catch_up()
    with monkeypatch.context() as patched:
        patched.setattr(HubApplication, "acting_agent", lambda self, *args: None)
        node.run(village, "accept", acting_agent="dby-07", case_id=case)
    with pytest.raises(IntegrityViolation, match="unauthorised agent"):
        node.integrator().catch_up()


def test_an_agent_rewritten_in_a_stored_event_is_refused_by_the_gate(node: InProcessNode) -> None:
    village = node.halls["v-room"]
    node.integrator().catch_up()
    node.app.execute(_agent_submit(village))
    rewrite_last_event(node.settings, "Submitted", b'"dby-07"', b'"dby-08"')
    with pytest.raises(IntegrityViolation, match="content mismatch|unauthorised agent"):
        node.integrator().catch_up()


def test_an_agent_takes_in_only_for_an_applicant_who_named_them(node: InProcessNode) -> None:
    village = node.halls["v-room"]
    node.run(village, "register_agent", idempotency_key="agent-reg-08", agent_id="dby-08",
             person=AGENT)  # fmt: skip
    for_other = common_pb2.AgentAuthorisation()
    for_other.CopyFrom(LETTER)
    for_other.agent_id = "dby-08"
    wanted = "agent dby-07 acts for the applicant without an authorisation recorded"
    for number, authorisation in enumerate((for_other, None)):
        fields = {"agent": authorisation} if authorisation is not None else {}
        _refused(node, "v-room", "submit", wanted, idempotency_key=f"key-agent-000{number}",
                 acting_agent="dby-07", item_code="200202001000", applicant=APPLICANT,
                 materials=[material()], channel=common_pb2.INTAKE_CHANNEL_AGENT,
                 **fields)  # fmt: skip


def test_each_refusal_of_an_agent_reads_as_documented(node: InProcessNode) -> None:
    """PERMISSION_DENIED with the documented message, nothing stored; and an agent does not
    record their own authority."""
    village = node.halls["v-room"]
    case = str(node.submit(village, "key-case-0001").case_id)
    for agent, message in [
        ("dby-99", "command.header.agent: agent 'dby-99' is not registered at this hall"),
        ("dby-07", "agent dby-07 has no authorisation of the applicant recorded on this case"),
    ]:
        size = node.log_size()
        with pytest.raises(PermissionRefused) as refused:
            node.run(village, "accept", acting_agent=agent, case_id=case)
        assert status_code_for(refused.value) is grpc.StatusCode.PERMISSION_DENIED
        assert to_status(refused.value).message == f"hall v-room: {message}"
        assert node.log_size() == size
    # Authorised by the hall's staff, the agent acts; recording an authority themselves, not.
    node.run(village, "authorise_agent", case_id=case, agent=LETTER)
    other = common_pb2.AgentAuthorisation()
    other.CopyFrom(LETTER)
    other.role = common_pb2.AGENT_ROLE_GUIDING
    _refused(node, "v-room", "authorise_agent", "does not record their own authority",
             acting_agent="dby-07", case_id=case, agent=other)  # fmt: skip
    node.run(village, "accept", acting_agent="dby-07", case_id=case)
    node.run(village, "retire_agent", agent_id="dby-07", reason="调离")
    size = node.log_size()
    with pytest.raises(PermissionRefused) as refused:
        node.run(village, "start_handling", acting_agent="dby-07", case_id=case)
    assert to_status(refused.value).message == "hall v-room: agent dby-07 is retired"
    assert node.log_size() == size
    _audit_after_integration(node)


def test_erasing_a_persons_cases_leaves_their_agent_record(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The agent also applied for something: ``tongban erase --id-number`` shreds that case,
    never the agent's record (sealed under a key not found by the ID number)."""
    own = node.submit(node.halls["v-room"], "key-own-0001", applicant=AGENT).case_id
    assert node.app.cases_of_person(AGENT.id_number) == [own]
    for name in list(os.environ):
        if name.startswith("TONGBAN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TONGBAN_DATA_DIR", str(node.settings.data_dir))
    if node.settings.database_url:
        monkeypatch.setenv("TONGBAN_DATABASE_URL", node.settings.database_url)
    assert main(["erase", "--id-number", AGENT.id_number, "--reason", "本人要求删除"]) == 0
    out = capsys.readouterr().out
    assert f"erased the personal data of case {own}" in out and "agent" not in out
    assert node.app.open_applicant(node.app.get_case(own)) is None
    agent = node.app.get_agent("v-room", "dby-07")
    stored = node.app.keys.personal_key(agent.id)
    assert stored is not None and agent.person is not None
    opened = node.app.vault.open(agent.id, agent.person, stored[1])
    assert opened is not None and opened.applicant == AGENT


def test_an_agents_step_without_the_applicants_authorisation_never_enters_the_log(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose software let an agent act on a case that holds no authorisation of them
    cannot sign the step into its log."""
    case = str(node.submit(node.halls["v-room"], "key-case-0001").case_id)
    node.integrator().catch_up()
    with monkeypatch.context() as patched:
        patched.setattr(Case, "check_agent", lambda self, actor: None)
        node.run(node.halls["v-room"], "accept", acting_agent="dby-07", case_id=case)
    with pytest.raises(IntegrityViolation, match="unauthorised agent"):
        node.integrator().catch_up()


def test_a_step_of_an_agent_the_hall_never_registered_never_enters_the_log(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    node.integrator().catch_up()
    unknown = common_pb2.AgentAuthorisation()
    unknown.CopyFrom(LETTER)
    unknown.agent_id = "dby-99"
    with monkeypatch.context() as patched:
        patched.setattr(HubApplication, "acting_agent", lambda self, *args: None)
        node.run(node.halls["v-room"], "submit", idempotency_key="key-agent-0099",
                 acting_agent="dby-99", item_code="200202001000", applicant=APPLICANT,
                 materials=[material()], agent=unknown)  # fmt: skip
    with pytest.raises(IntegrityViolation, match="unauthorised agent"):
        node.integrator().catch_up()


def test_an_authorisation_rewritten_in_a_stored_event_is_refused_by_the_gate(
    node: InProcessNode,
) -> None:
    village = node.halls["v-room"]
    node.run(village, "register_agent", idempotency_key="agent-reg-08", agent_id="dby-08",
             person=AGENT)  # fmt: skip
    case = str(node.submit(village, "key-case-0001").case_id)
    node.integrator().catch_up()
    node.run(village, "authorise_agent", case_id=case, agent=LETTER)
    rewrite_last_event(node.settings, "AgentAuthorised", b'"dby-07"', b'"dby-08"')
    with pytest.raises(IntegrityViolation, match="content mismatch"):
        node.integrator().catch_up()

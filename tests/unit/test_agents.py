"""Agents (代办员): their registry, the applicant's authorisation, and every step they take."""

from __future__ import annotations

import base64
import json
from uuid import uuid4

import pytest
from factories import (
    TOWNSHIP,
    TOWNSHIP_HALL,
    VILLAGE,
    VILLAGE_HALL,
    applicant,
    material,
    new_case,
)

from hub.domain.agent import Agent, agent_aggregate_id
from hub.domain.case import Case
from hub.domain.codec import event_mapper
from hub.domain.regions import RegionCode
from hub.domain.values import (
    Actor,
    AgentAuthorisation,
    AgentRole,
    CaseKind,
    CaseState,
    CrossRegionMode,
)
from hub.errors import InvalidInput, PermissionRefused, TransitionRefused

LETTER = AgentAuthorisation("dby-07", AgentRole.ACTING, letter_sha256="ab" * 32)
ORAL = AgentAuthorisation(
    "dby-07", AgentRole.GUIDING, witness_role="村委会主任", witness_commitment="cd" * 32
)
AGENT_AT_VILLAGE = Actor(VILLAGE_HALL.hall_id, VILLAGE_HALL.operator, VILLAGE, agent="dby-07")


def test_an_authorisation_is_a_letter_or_a_witnessed_oral_one() -> None:
    assert LETTER and ORAL and not AgentAuthorisation()
    with pytest.raises(InvalidInput, match="exactly one"):
        AgentAuthorisation("a", AgentRole.ACTING, "ab" * 32, "村委会主任", "cd" * 32)
    with pytest.raises(InvalidInput, match="exactly one"):
        AgentAuthorisation("a", AgentRole.ACTING)
    with pytest.raises(InvalidInput) as refused:
        AgentAuthorisation("a", AgentRole.UNSPECIFIED, "ab" * 32)
    assert refused.value.field == "agent.role"
    with pytest.raises(InvalidInput) as refused:
        AgentAuthorisation("a", AgentRole.ACTING, witness_commitment="cd" * 32)
    assert refused.value.field == "agent.witness_role"
    with pytest.raises(InvalidInput) as refused:
        AgentAuthorisation("a", AgentRole.ACTING, letter_sha256="scan.pdf")
    assert refused.value.field == "agent.letter_sha256"


def test_an_oral_authorisation_holds_a_commitment_to_the_witness_never_the_name() -> None:
    for commitment in ("张三", ""):
        with pytest.raises(InvalidInput) as refused:
            AgentAuthorisation("dby-07", AgentRole.GUIDING, witness_role="村委会主任",
                               witness_commitment=commitment)  # fmt: skip
        assert refused.value.field == "agent.witness_commitment"
        assert refused.value.value == "<redacted>" and "张三" not in str(refused.value)


def test_only_the_holding_halls_staff_record_an_authorisation() -> None:
    case = new_case()  # held by the village room
    with pytest.raises(PermissionRefused, match="does not hold the case"):
        case.authorise_agent(TOWNSHIP_HALL, LETTER)
    assert case.agents == {} and len(case.collect_events()) == 1


def test_an_agent_is_registered_at_a_hall_and_retired_by_it() -> None:
    agent = Agent.register(actor=VILLAGE_HALL, agent_id="dby-07", person=applicant())
    assert agent.id == agent_aggregate_id(VILLAGE_HALL.hall_id, "dby-07")
    assert agent.id != agent_aggregate_id(TOWNSHIP_HALL.hall_id, "dby-07")  # per hall
    agent.check_active()
    with pytest.raises(PermissionRefused):
        agent.retire(TOWNSHIP_HALL, "调离")  # not its hall
    with pytest.raises(PermissionRefused):
        agent.retire(AGENT_AT_VILLAGE, "调离")  # an agent does not retire agents
    agent.retire(VILLAGE_HALL, "调离")
    with pytest.raises(PermissionRefused, match="retired"):
        agent.check_active()
    with pytest.raises(TransitionRefused):
        agent.retire(VILLAGE_HALL, "again")
    with pytest.raises(PermissionRefused):
        Agent.register(actor=AGENT_AT_VILLAGE, agent_id="dby-08", person=applicant())


def test_an_agent_may_have_a_signing_key_of_their_own() -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    keyed = Agent.register(actor=VILLAGE_HALL, agent_id="dby-07", person=applicant(),
                           public_key=key)  # fmt: skip
    assert keyed.signs_own_steps and keyed.public_key == key and len(keyed.key_id) == 16
    plain = Agent.register(actor=VILLAGE_HALL, agent_id="dby-08", person=applicant())
    assert not plain.signs_own_steps and plain.key_id == ""
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(InvalidInput) as refused:
            Agent.register(actor=VILLAGE_HALL, agent_id="dby-09", person=applicant(),
                           public_key=bad)  # fmt: skip
        assert refused.value.field == "public_key"
    # The key is in the event (public, in the log: the auditor learns it there).
    mapper = event_mapper()
    (event,) = keyed.collect_events()
    assert mapper.to_domain_event(mapper.to_stored_event(event)).public_key == key


def _agent_case(authorisation: AgentAuthorisation, actor: Actor = AGENT_AT_VILLAGE) -> Case:
    return Case.submit(
        case_id=uuid4(),
        actor=actor,
        item_code="200202001000",
        item_name="老年人优待证办理",
        kind=CaseKind.PROMISED,
        mode=CrossRegionMode.LOCAL,
        intake_region=RegionCode(VILLAGE),
        competent_region=RegionCode(TOWNSHIP),
        applicant=applicant(),
        materials=(material(),),
        promised_days=5,
        statutory_days=20,
        produces_certificate=True,
        agent=authorisation,
    )


def test_an_agent_taking_a_case_in_needs_the_authorisation_in_it() -> None:
    with pytest.raises(PermissionRefused, match="without an authorisation recorded"):
        _agent_case(AgentAuthorisation())
    with pytest.raises(PermissionRefused):
        _agent_case(AgentAuthorisation("dby-99", AgentRole.ACTING, "ab" * 32))  # another agent
    case = _agent_case(ORAL)
    submitted = case.collect_events()[0]
    assert isinstance(submitted, Case.Submitted)
    assert submitted.actor.agent == "dby-07" and submitted.agent == ORAL


def test_every_step_an_agent_takes_needs_the_authorisation_and_records_the_agent() -> None:
    case = new_case()
    with pytest.raises(PermissionRefused, match="no authorisation"):
        case.accept(AGENT_AT_VILLAGE)
    assert case.state is CaseState.RECEIVED
    with pytest.raises(PermissionRefused):
        case.authorise_agent(AGENT_AT_VILLAGE, LETTER)  # not their own
    case.authorise_agent(VILLAGE_HALL, LETTER)
    case.accept(AGENT_AT_VILLAGE)
    case.hand_off(AGENT_AT_VILLAGE, TOWNSHIP_HALL.hall_id, RegionCode(TOWNSHIP), "送乡镇")
    events = case.collect_events()
    assert [(type(e).__name__, e.actor.agent) for e in events[1:]] == [
        ("AgentAuthorised", ""),
        ("Accepted", "dby-07"),
        ("HandedOff", "dby-07"),
    ]
    # The township's own agent of the same id is not the village's: not authorised.
    case.acknowledge_handoff(TOWNSHIP_HALL)
    township_agent = Actor(TOWNSHIP_HALL.hall_id, "op-t", TOWNSHIP, agent="dby-07")
    with pytest.raises(PermissionRefused, match="no authorisation"):
        case.start_handling(township_agent)


def test_the_actor_of_a_step_without_an_agent_is_stored_as_before() -> None:
    """Events that name no agent keep their exact stored bytes (no empty "agent" key)."""
    mapper = event_mapper()
    case = new_case()
    case.accept(VILLAGE_HALL)
    case.authorise_agent(VILLAGE_HALL, ORAL)
    case.start_handling(AGENT_AT_VILLAGE)
    stored = [mapper.to_stored_event(e) for e in case.collect_events()]
    accepted, handling = json.loads(stored[1].state), json.loads(stored[3].state)
    assert "agent" not in json.dumps(accepted["actor"])
    assert "dby-07" in json.dumps(handling["actor"])
    again = [mapper.to_domain_event(s) for s in stored]
    assert again[3].actor == AGENT_AT_VILLAGE and again[1].actor == VILLAGE_HALL
    assert again[2].agent == ORAL

"""``tongban agents`` and the ``agents`` projection on SQLite and PostgreSQL: each hall's 代办员,
registered and retired, with the distinct cases they acted in and the home visits among them;
no personal data unless the operator asks for the masked name; a rebuild gives the same rows."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tongban.v1 import common_pb2

from hub.cli import main
from hub.domain.values import Applicant, id_number_with_check
from hub.projections.agents import agents
from hub.projections.node import open_projections
from hub.settings import Settings
from tests.harness.inprocess import APPLICANT, InProcessNode, material

VILLAGE_REGION = "430902104201"
TOWNSHIP_REGION = "430902104000"
AGENT = Applicant("王代办", id_number_with_check("43090219800101003"), "13907370007")
OTHER = Applicant("刘秀英", id_number_with_check("43090219850101004"), "13907370008")


def _letter(agent_id: str) -> common_pb2.AgentAuthorisation:
    return common_pb2.AgentAuthorisation(
        agent_id=agent_id, role=common_pb2.AGENT_ROLE_ACTING, letter_sha256="ab" * 32
    )


@pytest.fixture
def settings(store_url: str | None, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "node", database_url=store_url)


@pytest.fixture
def node(settings: Settings) -> Iterator[InProcessNode]:
    started = InProcessNode.start(settings)
    village = started.add_hall("v-room", VILLAGE_REGION)
    township = started.add_hall("t-hall", TOWNSHIP_REGION)
    started.run(village, "register_agent", idempotency_key="agent-reg-07", agent_id="dby-07",
                person=AGENT)  # fmt: skip
    started.run(village, "register_agent", idempotency_key="agent-reg-08", agent_id="dby-08",
                person=OTHER)  # fmt: skip
    started.run(township, "register_agent", idempotency_key="agent-reg-t1", agent_id="dby-t1",
                person=OTHER)  # fmt: skip
    yield started
    started.close()


def _agent_case(node: InProcessNode, key: str, agent_id: str, channel: int) -> str:
    village = node.halls["v-room"]
    case = node.run(
        village, "submit", idempotency_key=key, acting_agent=agent_id, item_code="200202001000",
        applicant=APPLICANT, materials=[material(), material("委托书")], channel=channel,
        agent=_letter(agent_id),
    ).case_id  # fmt: skip
    return str(case)


def test_tongban_agents_lists_each_halls_agents_with_their_cases_and_home_visits(
    node: InProcessNode,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    village = node.halls["v-room"]
    # dby-07: a home visit (taken in, then accepted by the agent: one case, two steps) and an
    # agent-run case at the room; dby-08 acts in nothing and is retired.
    visit = _agent_case(node, "agent-case-0001", "dby-07", common_pb2.INTAKE_CHANNEL_HOME_VISIT)
    node.run(village, "accept", idempotency_key="agent-case-0002", acting_agent="dby-07",
             case_id=visit)  # fmt: skip
    _agent_case(node, "agent-case-0003", "dby-07", common_pb2.INTAKE_CHANNEL_AGENT)
    node.run(village, "retire_agent", idempotency_key="agent-ret-0008", agent_id="dby-08",
             reason="调离本村")  # fmt: skip
    # A case without an agent counts for nobody.
    node.submit(village, key="no-agent-0001")

    for name in list(os.environ):
        if name.startswith("TONGBAN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TONGBAN_DATA_DIR", str(settings.data_dir))
    if settings.database_url:
        monkeypatch.setenv("TONGBAN_DATABASE_URL", settings.database_url)

    assert main(["agents", "--all", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    seen = {(e["hall_id"], e["agent_id"]): e for e in document["entries"]}
    assert list(seen) == [("t-hall", "dby-t1"), ("v-room", "dby-07"), ("v-room", "dby-08")]
    assert (seen["v-room", "dby-07"]["cases"], seen["v-room", "dby-07"]["home_visits"]) == (2, 1)
    assert seen["v-room", "dby-07"]["retired_at"] is None
    retired = seen["v-room", "dby-08"]
    assert (retired["cases"], retired["retired_reason"]) == (0, "调离本村")
    assert retired["retired_at"] is not None and retired["registered_at"] is not None
    # No personal data of the agents, unless asked.
    text = json.dumps(document, ensure_ascii=False)
    for person in (AGENT, OTHER):
        for value in (person.name, person.id_number, person.phone):
            assert value not in text

    # Without --all, the retired agent is left out; --hall narrows to one hall.
    assert main(["agents", "--hall", "v-room"]) == 0
    header, rule, *rows, footer = capsys.readouterr().out.splitlines()
    assert header.split()[:5] == ["hall", "agent", "signs", "with", "registered"]
    assert set(rule) == {"-"}
    assert len(rows) == 1 and rows[0].split()[:2] == ["v-room", "dby-07"]
    assert footer.startswith("1 agents, 2 cases, 1 home visits")

    # --names: the masked name only (never the ID number or phone).
    assert main(["agents", "--hall", "v-room", "--all", "--names", "--json"]) == 0
    named = {e["agent_id"]: e for e in json.loads(capsys.readouterr().out)["entries"]}
    assert (named["dby-07"]["name_masked"], named["dby-08"]["name_masked"]) == ("王**", "刘**")
    assert AGENT.name not in json.dumps(named, ensure_ascii=False)

    # CSV for spreadsheets.
    assert main(["agents", "--csv"]) == 0
    assert "dby-t1" in capsys.readouterr().out

    # `tongban projections rebuild agents` gives the same rows.
    projections = open_projections(node.app, node_region="43")
    try:
        projections.create_tables()
        projections.catch_up()
        before = agents(projections.store, include_retired=True)
        projections.runner("agents").rebuild()
        assert agents(projections.store, include_retired=True) == before
    finally:
        projections.close()
    assert main(["projections", "rebuild", "agents"]) == 0
    assert "rebuilt agents" in capsys.readouterr().out


def test_an_agent_counts_a_case_they_acted_in_at_any_step_and_an_erased_name_shows_so(
    node: InProcessNode,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    village = node.halls["v-room"]
    # The room takes a home visit in itself; later the applicant authorises dby-08, who takes
    # the next step: a case dby-08 acted in, and a home visit (its signed channel).
    visit = node.submit(
        village, key="visit-case-0001", channel=common_pb2.INTAKE_CHANNEL_HOME_VISIT
    )
    node.run(village, "authorise_agent", idempotency_key="visit-auth-0001",
             case_id=str(visit.case_id), agent=_letter("dby-08"))  # fmt: skip
    node.run(village, "accept", idempotency_key="visit-acc-00001", acting_agent="dby-08",
             case_id=str(visit.case_id))  # fmt: skip
    # dby-07's record loses its key, as an erasure's does: its name can no longer be opened.
    agent = node.app.get_agent("v-room", "dby-07")
    recorder: Any = node.app.recorder
    with recorder.datastore.transaction(commit=True) as cursor:
        recorder._keys.write(cursor, {"erase_keys": [agent.id]})

    for name in list(os.environ):
        if name.startswith("TONGBAN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TONGBAN_DATA_DIR", str(settings.data_dir))
    if settings.database_url:
        monkeypatch.setenv("TONGBAN_DATABASE_URL", settings.database_url)
    assert main(["agents", "--hall", "v-room", "--names", "--json"]) == 0
    seen = {e["agent_id"]: e for e in json.loads(capsys.readouterr().out)["entries"]}
    assert (seen["dby-08"]["cases"], seen["dby-08"]["home_visits"]) == (1, 1)
    assert (seen["dby-07"]["cases"], seen["dby-07"]["home_visits"]) == (0, 0)
    assert (seen["dby-07"]["name_masked"], seen["dby-08"]["name_masked"]) == ("(erased)", "刘**")

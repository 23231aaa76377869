"""The YZ gateway's mapping of identity checks (身份核验) and intake channels (申请渠道)."""

from __future__ import annotations

from typing import Any

import pytest
from tongban.v1 import case_exchange_pb2, common_pb2

from adapters.gateway import (
    ACTIONS,
    BIOMETRIC_FIELDS,
    FSDJ_TO_BAND,
    HYJG_TO_RESULT,
    HYLX_TO_METHOD,
    SQQD_TO_CHANNEL,
    VendorInputError,
    agent_of,
    parse_action,
    parse_submit,
)
from tests.unit.test_adapters_gateway import enum_values, submit_body

CHECK = {"hylx": 3, "sbbh": "sb-app-0042", "hyjg": 1, "fsdj": "1", "jbr": "代办员王"}


@pytest.mark.parametrize(
    ("table", "enum"),
    [
        (HYLX_TO_METHOD, common_pb2.IdentityCheckMethod),
        (HYJG_TO_RESULT, common_pb2.CheckResult),
        (FSDJ_TO_BAND, common_pb2.ScoreBand),
    ],
)
def test_check_tables_cover_every_wire_value_once(table: dict[int, int], enum: Any) -> None:
    assert sorted(table.values()) == sorted(enum_values(enum))


def test_a_proof_of_life_maps_to_the_wire_command() -> None:
    action, message, operator = parse_action("sfhy", "c", CHECK)
    assert ACTIONS["sfhy"].action == action == "record_identity_check"
    assert message == case_exchange_pb2.RecordIdentityCheck(
        case_id="c",
        method=common_pb2.IDENTITY_CHECK_METHOD_LIVENESS,
        device_id="sb-app-0042",
        result=common_pb2.CHECK_RESULT_PASSED,
        score_band=common_pb2.SCORE_BAND_HIGH,
    )
    assert operator == "代办员王"


@pytest.mark.parametrize("name", BIOMETRIC_FIELDS)
def test_a_photo_template_or_raw_score_is_refused_by_name(name: str) -> None:
    with pytest.raises(VendorInputError) as refused:
        parse_action("sfhy", "c", {**CHECK, name: "0.93"})
    assert [e.field for e in refused.value.errors] == [name]
    assert "0.93" not in str(refused.value)  # never echoed


def test_a_check_without_its_fields_names_each() -> None:
    with pytest.raises(VendorInputError) as refused:
        parse_action("sfhy", "c", {"hylx": 9})
    assert {e.field for e in refused.value.errors} == {"hylx", "sbbh", "hyjg", "fsdj"}


def test_the_channel_and_window_of_a_submission_are_mapped() -> None:
    # Every channel a platform can say; an imported register and another node are not the
    # platform's (the importer and the relay set those).
    assert set(SQQD_TO_CHANNEL.values()) == enum_values(common_pb2.IntakeChannel) - {
        common_pb2.INTAKE_CHANNEL_IMPORTED,
        common_pb2.INTAKE_CHANNEL_PEER_NODE,
    }
    request = parse_submit(submit_body(sqqd="3", ckmc="社保窗口"))
    assert request.submit.channel == common_pb2.INTAKE_CHANNEL_PHONE
    assert request.submit.window == "社保窗口"
    assert parse_submit(submit_body()).submit.channel == common_pb2.INTAKE_CHANNEL_UNSPECIFIED
    with pytest.raises(VendorInputError) as refused:
        parse_submit(submit_body(sqqd=8))
    assert [e.field for e in refused.value.errors] == ["sqqd"]


LETTER = "ab" * 32


def test_an_agent_run_submission_carries_the_authorisation_and_the_agent() -> None:
    request = parse_submit(submit_body(sqqd=5, dbrbh="dby-07", dbjs="2", wtshash=LETTER.upper()))
    assert request.agent == "dby-07"
    assert request.submit.agent == common_pb2.AgentAuthorisation(
        agent_id="dby-07", role=common_pb2.AGENT_ROLE_ACTING, letter_sha256=LETTER
    )
    assert request.submit.channel == common_pb2.INTAKE_CHANNEL_AGENT
    assert parse_submit(submit_body()).agent == ""
    # An agent without the role or the 委托书 is refused by the vendor's field names.
    with pytest.raises(VendorInputError) as refused:
        parse_submit(submit_body(dbrbh="dby-07"))
    assert {e.field for e in refused.value.errors} == {"dbjs", "wtshash"}


def test_an_authorisation_and_an_agents_step_map_to_the_wire() -> None:
    action, message, _operator = parse_action(
        "dbsq", "c", {"dbrbh": "dby-07", "dbjs": 1, "wtshash": LETTER}
    )
    assert action == "authorise_agent"
    assert message.agent.role == common_pb2.AGENT_ROLE_GUIDING
    assert agent_of(action, {"dbrbh": "dby-07"}) == ""  # the authorised, not the actor
    assert agent_of("accept", {"dbrbh": "dby-07"}) == "dby-07"
    assert agent_of("accept", {}) == ""
    with pytest.raises(VendorInputError):
        agent_of("accept", {"dbrbh": "代办员"})

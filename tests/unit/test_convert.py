"""Every domain event round-trips to protobuf and back unchanged."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from factories import COUNTY, COUNTY_HALL, material, new_case
from tongban.v1 import common_pb2, events_pb2

from hub.api.convert import EVENT_CLASSES, event_from_proto, event_to_proto
from hub.commands.wire import enum_from_proto, enum_to_proto, snake_case
from hub.domain.regions import Level, RegionCode
from hub.domain.values import (
    Actor,
    AgentAuthorisation,
    AgentRole,
    CaseKind,
    CaseState,
    CheckResult,
    CrossRegionMode,
    DeliveryMethod,
    IdentityCheckMethod,
    IntakeChannel,
    JointTask,
    Rating,
    RatingChannel,
    ScoreBand,
    SuspensionReason,
    WarningKind,
)
from hub.errors import InvalidInput

DEPT = Actor("c-dept", "op-d", COUNTY)


def _one_of_every_event() -> list[Any]:
    """Drive cases through every event type at least once."""
    events: list[Any] = []
    a = new_case(actor=COUNTY_HALL, competent=COUNTY, kind=CaseKind.JOINT)
    a.request_correction(COUNTY_HALL, ("户口簿", "证明"), "一次性告知")
    a.resubmit(COUNTY_HALL, (material("户口簿", b"h"), material("证明", b"p")))
    a.start_handling(COUNTY_HALL)
    a.suspend(COUNTY_HALL, SuspensionReason.EXPERT_REVIEW, "专家评审")
    a.resume(COUNTY_HALL)
    a.open_joint_tasks(COUNTY_HALL, (JointTask("t1", DEPT.hall_id, "市场监管"),
                                     JointTask("t2", DEPT.hall_id, "税务")))  # fmt: skip
    a.complete_joint_task(DEPT, "t1", True, "ok")
    a.complete_joint_task(DEPT, "t2", False, "补充")
    a.hand_off(COUNTY_HALL, DEPT.hall_id, RegionCode(COUNTY), "转办")
    a.acknowledge_handoff(DEPT, "综合窗口")
    a.decide(DEPT, approved=True, reason="准予")
    a.conclude(DEPT)
    a.record_certificate(DEPT, "1.2.156.3005.2.1")
    a.deliver(DEPT, DeliveryMethod.POST, "EMS")
    a.rate(DEPT, Rating.VERY_DISSATISFIED, "慢", RatingChannel.ONLINE)
    a.complete_rectification(DEPT, "整改", "回访满意")
    a.archive(DEPT)
    a.record_warning(
        WarningKind.RED, datetime(2026, 3, 2, 16, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)
    )
    a.erase_personal_data("operator", "申请人要求删除")
    events += a.collect_events()
    b = new_case()
    b.accept(b_actor := Actor("v-room", "op-v", "430902104201"))
    b.escalate(b_actor, "c-hall", RegionCode(COUNTY), "上报")
    b.withdraw(b_actor, "撤回")
    events += b.collect_events()
    c = new_case()
    c.authorise_agent(
        Actor("v-room", "op-v", "430902104201"),
        AgentAuthorisation("dby-1", AgentRole.ACTING, "", "村委会主任", "ef" * 32),
    )
    c.record_identity_check(
        Actor("v-room", "op-v", "430902104201", agent="dby-1"), IdentityCheckMethod.FACE_MATCH, "cam-07",
        CheckResult.FAILED, ScoreBand.LOW,
    )  # fmt: skip
    c.reject_at_intake(Actor("v-room", "op-v", "430902104201"), "不符合条件")
    events += c.collect_events()
    d = new_case()
    d.hand_off(d_actor := Actor("v-room", "op-v", "430902104201"), "sx-hall@610929000000",
               RegionCode("610929000000"), "转户籍地")  # fmt: skip
    d.transfer_refused(
        envelope_id=uuid.UUID(int=7), peer="tongban/61", key_id="0a1b2c3d", body=b"\x08\x02",
        signature=b"s" * 64, reason="no such hall",
    )  # fmt: skip
    del d_actor
    events += d.collect_events()
    e = new_case(actor=COUNTY_HALL, competent=COUNTY)
    e.accept(COUNTY_HALL)
    e.start_handling(COUNTY_HALL)
    e.decide(COUNTY_HALL, approved=True, reason="准予")
    e.conclude(COUNTY_HALL)
    e.issue_certificate(COUNTY_HALL, "150001", "11430902MB0000001X", "资阳区民政局", "2099-12-31")
    e.suspend_certificate(COUNTY_HALL, "核查")
    e.reinstate_certificate(COUNTY_HALL, "核查完毕")
    e.revoke_certificate(COUNTY_HALL, "撤销")
    events += e.collect_events()
    f = new_case(actor=COUNTY_HALL, competent=COUNTY)
    for step in ("accept", "start_handling"):
        getattr(f, step)(COUNTY_HALL)
    f.decide(COUNTY_HALL, approved=False, reason="不予")
    f.conclude(COUNTY_HALL)
    f.dispatch_by_post(COUNTY_HALL, "EMS", "1190000000001")
    f.return_to_window(COUNTY_HALL, "退件", "综合窗口")
    f.deposit_in_locker(COUNTY_HALL, "L-01", "A3", "ab" * 32, 48)
    f.refuse_locker_code(COUNTY_HALL, "L-01", "A3")
    f.pick_up_from_locker(COUNTY_HALL, "L-01", "A3")
    events += f.collect_events()
    return events


EVENTS = _one_of_every_event()


def test_the_sample_covers_every_event_type_and_every_oneof_field() -> None:
    assert {type(e) for e in EVENTS} == set(EVENT_CLASSES)
    oneof = events_pb2.CaseEvent.DESCRIPTOR.oneofs_by_name["event"]
    assert {f.name for f in oneof.fields} == {snake_case(c.__name__) for c in EVENT_CLASSES}


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_event_round_trips_unchanged(event: Any) -> None:
    message = event_to_proto(event)
    assert message.WhichOneof("event") == snake_case(type(event).__name__)
    wire = message.SerializeToString()
    decoded = event_from_proto(events_pb2.CaseEvent.FromString(wire))
    assert decoded == event
    assert type(decoded) is type(event)


@pytest.mark.parametrize(
    "enum_type", [CaseKind, CaseState, CrossRegionMode, DeliveryMethod, Level, Rating,
                  SuspensionReason, IntakeChannel, RatingChannel, WarningKind]
)  # fmt: skip
def test_every_enum_member_has_a_wire_value(enum_type: Any) -> None:
    proto_enum = getattr(common_pb2, enum_type.__name__)
    # plus UNSPECIFIED, unless the domain has it too (a channel a hall did not say)
    unspecified = 0 if "UNSPECIFIED" in enum_type.__members__ else 1
    assert len(proto_enum.keys()) == len(enum_type) + unspecified
    for member in enum_type:
        number = enum_to_proto(member)
        assert enum_from_proto(enum_type, number, "f") is member


def test_unspecified_and_unknown_enum_values_are_invalid() -> None:
    with pytest.raises(InvalidInput, match="must be given"):
        enum_from_proto(CaseKind, 0, "submitted.kind")
    with pytest.raises(InvalidInput, match="not a CaseKind value") as caught:
        enum_from_proto(CaseKind, 99, "submitted.kind")
    assert caught.value.field == "submitted.kind"


def test_an_event_without_type_or_with_bad_fields_is_invalid() -> None:
    with pytest.raises(InvalidInput, match="no event type"):
        event_from_proto(events_pb2.CaseEvent(case_id="x"))
    message = event_to_proto(EVENTS[0])
    message.case_id = "not-a-uuid"
    with pytest.raises(InvalidInput, match="not a UUID"):
        event_from_proto(message)
    message = event_to_proto(EVENTS[0])
    message.submitted.materials[0].sha256 = "00"
    with pytest.raises(InvalidInput) as caught:
        event_from_proto(message)
    assert caught.value.field == "submitted.materials[0].sha256"


def test_the_applicant_goes_out_as_commitments_and_in_clear_only_when_given() -> None:
    from hub.domain.values import Applicant, id_number_with_check

    submitted = EVENTS[0]
    message = event_to_proto(submitted)
    assert message.submitted.applicant_commitments.name == bytes.fromhex(
        submitted.applicant.commitments.name
    )
    assert not message.submitted.HasField("applicant")
    clear = Applicant("李秀英", id_number_with_check("43090219560312002"), "13807370001")
    shown = event_to_proto(submitted, applicant=clear)
    assert shown.submitted.applicant.name == "李秀英"
    erased = event_to_proto(submitted, applicant=clear, erased=True)
    assert not erased.submitted.HasField("applicant")
    assert erased.submitted.personal_data_erased


def test_personal_fields_are_marked_in_the_wire_contract() -> None:
    from tongban.v1 import options_pb2

    fields = common_pb2.Applicant.DESCRIPTOR.fields
    marked = {f.name for f in fields if f.GetOptions().Extensions[options_pb2.personal]}
    assert marked == {"name", "id_number", "phone"}
    material_fields = common_pb2.Material.DESCRIPTOR.fields
    assert not any(f.GetOptions().Extensions[options_pb2.personal] for f in material_fields)

"""The case state machine: transitions, refusals, holders, levels, clocks."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from eventsourcing.domain import CanCreateTimestamp
from factories import (
    COUNTY,
    COUNTY_HALL,
    OTHER_COUNTY_DEPT,
    TOWNSHIP,
    TOWNSHIP_HALL,
    VILLAGE,
    VILLAGE_HALL,
    material,
    new_case,
)

from hub.domain.case import ALLOWED_FROM, Case
from hub.domain.regions import RegionCode
from hub.domain.values import (
    Actor,
    AgentAuthorisation,
    AgentRole,
    CaseKind,
    CaseState,
    CheckResult,
    DeliveryMethod,
    IdentityCheckMethod,
    JointTask,
    Rating,
    ScoreBand,
    SuspensionReason,
)
from hub.errors import InvalidInput, PermissionRefused, TransitionRefused

S = CaseState


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[datetime]]:
    """Event timestamps from a controllable clock: append to move time on."""
    now = [datetime(2026, 3, 2, 9, 0, tzinfo=UTC)]
    monkeypatch.setattr(CanCreateTimestamp, "create_timestamp", staticmethod(lambda: now[-1]))
    yield now


def _at_township() -> Case:
    case = new_case()
    case.hand_off(VILLAGE_HALL, TOWNSHIP_HALL.hall_id, RegionCode(TOWNSHIP), "代办")
    case.acknowledge_handoff(TOWNSHIP_HALL)
    return case


def test_whole_lifecycle_to_archive() -> None:
    case = _at_township()
    assert case.state is S.RECEIVED
    assert case.holder == TOWNSHIP_HALL.hall_id
    case.accept(TOWNSHIP_HALL)
    case.start_handling(TOWNSHIP_HALL)
    case.decide(TOWNSHIP_HALL, approved=True, reason="符合条件")
    case.conclude(TOWNSHIP_HALL)
    case.record_certificate(TOWNSHIP_HALL, "CERT-1")
    case.deliver(TOWNSHIP_HALL, DeliveryMethod.WINDOW, "")
    case.rate(VILLAGE_HALL, Rating.SATISFIED, "好")  # the intake hall may collect the rating
    case.archive(TOWNSHIP_HALL)
    assert case.state is S.ARCHIVED
    assert case.state.is_final
    assert case.allowed_commands() == []
    names = [type(e).__name__ for e in case.collect_events()]
    assert names == [
        "Submitted", "HandedOff", "HandoffAcknowledged", "Accepted", "HandlingStarted",
        "Decided", "Concluded", "CertificateRecorded", "Delivered", "Rated", "Archived",
    ]  # fmt: skip


def test_every_event_names_the_actor() -> None:
    case = _at_township()
    for event in case.collect_events():
        assert event.actor.hall_id  # type: ignore[attr-defined]
        assert event.actor.operator  # type: ignore[attr-defined]
        assert event.actor.region  # type: ignore[attr-defined]
        assert event.timestamp.tzinfo is not None


@pytest.mark.parametrize("command", sorted(ALLOWED_FROM))
def test_forbidden_transition_names_state_and_command_and_changes_nothing(command: str) -> None:
    case = new_case()
    case.collect_events()
    # RECEIVED allows some commands; archive a case to get a state that allows none.
    case.withdraw(VILLAGE_HALL, "申请人撤回")
    before = dict(vars(case))
    if command in ("acknowledge_handoff", "complete_joint_task"):
        # Who may act is decided first: a hall not addressed learns nothing of the state.
        with pytest.raises(PermissionRefused) as refused:
            _run_any(case, command, VILLAGE_HALL)
        assert "WITHDRAWN" not in str(refused.value)
        assert dict(vars(case)) == before
        return
    with pytest.raises(TransitionRefused) as caught:
        _run_any(case, command, VILLAGE_HALL)
    assert caught.value.command == command
    assert caught.value.state == "WITHDRAWN"
    assert command in str(caught.value)
    assert "WITHDRAWN" in str(caught.value)
    after = dict(vars(case))
    assert before == after
    assert [type(e).__name__ for e in case.collect_events()] == ["Withdrawn"]


def _run_any(case: Case, command: str, actor: Actor) -> None:
    """Call ``command`` with plausible arguments (the state check comes first anyway)."""
    args: dict[str, tuple[object, ...]] = {
        "request_correction": (("户口簿",), "补齐"),
        "resubmit": ((material(),),),
        "reject_at_intake": ("理由",),
        "hand_off": ("t-hall", RegionCode(TOWNSHIP), "r"),
        "escalate": ("c-hall", RegionCode(COUNTY), "r"),
        "suspend": (SuspensionReason.HEARING, ""),
        "open_joint_tasks": ((JointTask("a", "x", "d1"), JointTask("b", "y", "d2")),),
        "complete_joint_task": ("a", True, ""),
        "decide": (True, "理由"),
        "record_certificate": ("C-1",),
        "issue_certificate": ("150001", "11430902MB0000001X", "资阳区民政局", ""),
        "suspend_certificate": ("核查",),
        "reinstate_certificate": ("核查完毕",),
        "revoke_certificate": ("撤销",),
        "deliver": (DeliveryMethod.WINDOW, ""),
        "rate": (Rating.SATISFIED, ""),
        "complete_rectification": ("报告", "回访"),
        "withdraw": ("理由",),
        "dispatch_by_post": ("EMS", "1190000000001"),
        "deposit_in_locker": ("L-01", "A3", "ab" * 32, 48),
        "pick_up_from_locker": ("L-01", "A3"),
        "return_to_window": ("退件",),
        "authorise_agent": (AgentAuthorisation("a1", AgentRole.ACTING, "ab" * 32),),
        "record_identity_check": (
            IdentityCheckMethod.LIVENESS,
            "app-1",
            CheckResult.PASSED,
            ScoreBand.HIGH,
        ),
    }
    getattr(case, command)(actor, *args.get(command, ()))


def test_only_the_holder_acts() -> None:
    case = new_case()
    with pytest.raises(PermissionRefused, match="does not hold the case") as refused:
        case.accept(TOWNSHIP_HALL)
    assert "v-room" not in str(refused.value)  # a refusal never names another hall
    assert case.state is S.RECEIVED


def test_only_the_addressee_acknowledges() -> None:
    case = new_case()
    case.hand_off(VILLAGE_HALL, TOWNSHIP_HALL.hall_id, RegionCode(TOWNSHIP), "代办")
    with pytest.raises(PermissionRefused, match="not addressed to this hall") as refused:
        case.acknowledge_handoff(COUNTY_HALL)
    assert "t-hall" not in str(refused.value)
    assert case.state is S.HANDED_OFF
    assert case.holder == VILLAGE_HALL.hall_id


@pytest.mark.parametrize("target", ["430902104000", "430902000000", "430900000000", "430000000000"])
def test_a_village_escalates_to_any_higher_level_containing_it(target: str) -> None:
    case = new_case(competent=COUNTY)
    case.accept(VILLAGE_HALL)
    case.escalate(VILLAGE_HALL, "higher", RegionCode(target), "上报")
    assert case.state is S.ESCALATED
    assert case.pending_receiver == "higher"


@pytest.mark.parametrize(
    "target",
    [
        "430902104202",  # sideways: another village
        "430902105000",  # another township
        "430903000000",  # another county
        "420000000000",  # another province
        "430902104201",  # itself
    ],
)
def test_escalation_never_goes_sideways_or_down(target: str) -> None:
    case = new_case(competent=COUNTY)
    case.accept(VILLAGE_HALL)
    with pytest.raises(InvalidInput) as caught:
        case.escalate(VILLAGE_HALL, "elsewhere", RegionCode(target), "上报")
    assert caught.value.field == "to_region"
    assert case.state is S.ACCEPTED


def test_escalation_down_from_county_is_refused() -> None:
    case = new_case(actor=COUNTY_HALL, competent=COUNTY)
    case.accept(COUNTY_HALL)
    with pytest.raises(InvalidInput, match="never sideways or down"):
        case.escalate(COUNTY_HALL, "t-hall", RegionCode(TOWNSHIP), "下放")


def test_a_hall_outside_the_competent_level_cannot_decide() -> None:
    case = new_case(competent=COUNTY)
    case.accept(VILLAGE_HALL)
    case.start_handling(VILLAGE_HALL)
    with pytest.raises(PermissionRefused) as caught:
        case.decide(VILLAGE_HALL, approved=True, reason="越级")
    assert "VILLAGE hall" in str(caught.value)
    assert "COUNTY" in str(caught.value)
    assert case.state is S.HANDLING


def test_escalated_case_is_decided_by_the_county() -> None:
    case = new_case(competent=COUNTY, kind=CaseKind.ESCALATED)
    case.accept(VILLAGE_HALL)
    case.start_handling(VILLAGE_HALL)
    case.escalate(VILLAGE_HALL, COUNTY_HALL.hall_id, RegionCode(COUNTY), "上报")
    case.acknowledge_handoff(COUNTY_HALL)
    assert case.state is S.HANDLING
    case.decide(COUNTY_HALL, approved=False, reason="收入超标")
    case.conclude(COUNTY_HALL)
    with pytest.raises(TransitionRefused, match="denied"):
        case.record_certificate(COUNTY_HALL, "C")
    case.deliver(COUNTY_HALL, DeliveryMethod.POST, "不予决定书")
    assert case.state is S.DELIVERED


def test_joint_tasks_join_when_all_are_done() -> None:
    case = new_case(actor=COUNTY_HALL, competent=COUNTY, kind=CaseKind.JOINT)
    case.accept(COUNTY_HALL)
    case.start_handling(COUNTY_HALL)
    tasks = (
        JointTask("amr", OTHER_COUNTY_DEPT.hall_id, "市场监管"),
        JointTask("tax", "tax", "税务"),
    )
    case.open_joint_tasks(COUNTY_HALL, tasks)
    assert case.state is S.JOINT
    with pytest.raises(PermissionRefused, match="not this hall's task") as refused:
        case.complete_joint_task(OTHER_COUNTY_DEPT, "tax", True, "")
    assert "'tax' is not" in str(refused.value) and "hall tax" not in str(refused.value)
    # No such task: the same answer as another hall's task.
    with pytest.raises(PermissionRefused, match="not this hall's task"):
        case.complete_joint_task(OTHER_COUNTY_DEPT, "no-such-task", True, "")
    case.complete_joint_task(OTHER_COUNTY_DEPT, "amr", True, "ok")
    assert case.state is S.JOINT
    with pytest.raises(TransitionRefused, match="amr is done"):
        case.complete_joint_task(OTHER_COUNTY_DEPT, "amr", True, "again")
    case.complete_joint_task(Actor("tax", "op", COUNTY), "tax", True, "ok")
    assert case.state is S.HANDLING
    assert type(case.pending_events[-1]).__name__ == "JointTasksJoined"


def test_joint_tasks_need_a_joint_item_and_two_distinct_tasks() -> None:
    case = new_case(actor=COUNTY_HALL, competent=COUNTY, kind=CaseKind.JOINT)
    case.accept(COUNTY_HALL)
    with pytest.raises(InvalidInput, match="at least two"):
        case.open_joint_tasks(COUNTY_HALL, (JointTask("a", "x", "d"),))
    with pytest.raises(InvalidInput, match="unique"):
        case.open_joint_tasks(COUNTY_HALL, (JointTask("a", "x", "d"), JointTask("a", "y", "e")))
    promised = new_case(actor=COUNTY_HALL, competent=COUNTY)
    promised.accept(COUNTY_HALL)
    with pytest.raises(InvalidInput, match="PROMISED item has no joint tasks"):
        promised.open_joint_tasks(COUNTY_HALL, (JointTask("a", "x", "d"), JointTask("b", "y", "e")))


def test_correction_pauses_the_clock_until_resubmission(clock: list[datetime]) -> None:
    case = new_case(actor=COUNTY_HALL, competent=COUNTY)
    clock.append(clock[-1] + timedelta(hours=1))
    case.request_correction(COUNTY_HALL, ("居民户口簿", "迁入证明"), "一次性告知")
    assert case.state is S.AWAITING_CORRECTION
    assert not case.clock_running
    clock.append(clock[-1] + timedelta(days=3))
    assert case.clock_seconds(clock[-1]) == 3600
    case.resubmit(COUNTY_HALL, (material("居民户口簿", b"hukou"),))
    assert case.state is S.ACCEPTED
    assert case.clock_running
    assert case.paused_seconds == 3 * 86400
    clock.append(clock[-1] + timedelta(hours=2))
    assert case.clock_seconds(clock[-1]) == 3 * 3600
    assert len(case.materials) == 2


def test_suspension_pauses_and_conclusion_stops_the_clock(clock: list[datetime]) -> None:
    case = new_case(actor=COUNTY_HALL, competent=COUNTY)
    case.accept(COUNTY_HALL)
    case.start_handling(COUNTY_HALL)
    clock.append(clock[-1] + timedelta(hours=1))
    case.suspend(COUNTY_HALL, SuspensionReason.EXPERT_REVIEW, "专家评审")
    clock.append(clock[-1] + timedelta(hours=5))
    case.resume(COUNTY_HALL)
    clock.append(clock[-1] + timedelta(hours=1))
    case.decide(COUNTY_HALL, approved=True, reason="ok")
    case.conclude(COUNTY_HALL)
    clock.append(clock[-1] + timedelta(days=10))
    assert case.clock_seconds(clock[-1]) == 2 * 3600
    assert not case.clock_running


def test_bad_rating_opens_rectification() -> None:
    case = new_case(actor=COUNTY_HALL, competent=COUNTY, produces_certificate=False)
    for step in ("accept", "start_handling"):
        getattr(case, step)(COUNTY_HALL)
    case.decide(COUNTY_HALL, approved=True, reason="ok")
    case.conclude(COUNTY_HALL)
    case.deliver(COUNTY_HALL, DeliveryMethod.ONLINE, "")
    case.rate(COUNTY_HALL, Rating.NOT_SATISFIED, "排队太久")
    assert case.state is S.RECTIFYING
    with pytest.raises(TransitionRefused):
        case.archive(COUNTY_HALL)
    with pytest.raises(InvalidInput, match="follow_up"):
        case.complete_rectification(COUNTY_HALL, "增设窗口", " ")
    case.complete_rectification(COUNTY_HALL, "增设窗口", "回访满意")
    case.archive(COUNTY_HALL)
    assert case.state is S.ARCHIVED


def test_certificate_item_must_issue_before_delivery() -> None:
    case = new_case(actor=COUNTY_HALL, competent=COUNTY)
    case.accept(COUNTY_HALL)
    case.start_handling(COUNTY_HALL)
    case.decide(COUNTY_HALL, approved=True, reason="ok")
    case.conclude(COUNTY_HALL)
    with pytest.raises(TransitionRefused, match="issue the certificate first"):
        case.deliver(COUNTY_HALL, DeliveryMethod.WINDOW, "")
    case.record_certificate(COUNTY_HALL, "C-1")
    with pytest.raises(InvalidInput, match="only a cross-region case"):
        case.deliver(COUNTY_HALL, DeliveryMethod.OFFSITE_WINDOW, "")
    case.deliver(COUNTY_HALL, DeliveryMethod.WINDOW, "")
    assert case.state is S.DELIVERED


@pytest.mark.parametrize("state_setup", ["submitted", "accepted", "suspended", "joint"])
def test_withdrawal_from_open_states(state_setup: str) -> None:
    case = new_case(actor=COUNTY_HALL, competent=COUNTY, kind=CaseKind.JOINT)
    if state_setup != "submitted":
        case.accept(COUNTY_HALL)
    if state_setup == "suspended":
        case.start_handling(COUNTY_HALL)
        case.suspend(COUNTY_HALL, SuspensionReason.HEARING, "")
    if state_setup == "joint":
        case.open_joint_tasks(COUNTY_HALL, (JointTask("a", "x", "d"), JointTask("b", "y", "e")))
    case.withdraw(COUNTY_HALL, "申请人撤回")
    assert case.state is S.WITHDRAWN
    assert case.clock_stopped_at is not None


def test_submission_requires_materials_and_the_actor_region() -> None:
    with pytest.raises(InvalidInput, match="at least one material"):
        Case.submit(**{**_submit_args(), "materials": ()})
    with pytest.raises(PermissionRefused, match="at its own region only"):
        Case.submit(**{**_submit_args(), "intake_region": RegionCode(COUNTY)})


def _submit_args() -> dict[str, object]:
    case = new_case()
    event = case.collect_events()[0]
    assert isinstance(event, Case.Submitted)
    return {
        "case_id": event.originator_id,
        "actor": event.actor,
        "item_code": event.item_code,
        "item_name": event.item_name,
        "kind": event.kind,
        "mode": event.mode,
        "intake_region": RegionCode(VILLAGE),
        "competent_region": RegionCode(event.competent_region),
        "applicant": event.applicant,
        "materials": event.materials,
        "promised_days": event.promised_days,
        "statutory_days": event.statutory_days,
        "produces_certificate": event.produces_certificate,
    }


def test_allowed_table_covers_every_public_command() -> None:
    commands = {
        name
        for name in vars(Case)
        if not name.startswith("_") and callable(getattr(Case, name)) and name[0].islower()
    }
    queries = {"submit", "state_is", "allowed_commands", "clock_seconds", "collect_events",
               "trigger_event", "create_id", "involves", "regions",
               "certificate_facts", "check_status_change", "check_actor",
               # delivery checks; a wrong locker code is the other outcome of a pickup
               "check_delivery", "check_pickup", "check_return", "locker_expired", "check_ready",
               "refuse_locker_code",
               "missing_checks", "check_required_checks", "check_agent"}  # fmt: skip
    # Erasure is an admin's act, and a supervision warning the node's, allowed in every state
    # (each once); a peer's refusal of a transfer takes a case back from HANDED_OFF/ESCALATED:
    # none is in the hall's lifecycle table.
    assert commands - queries == set(ALLOWED_FROM) | {
        "erase_personal_data",
        "record_warning",
        "transfer_refused",
    }
    # Every state except the final ones allows at least one command.
    allowed_somewhere = set(itertools.chain.from_iterable(ALLOWED_FROM.values()))
    assert {s for s in S if not s.is_final} <= allowed_somewhere


def test_steps_that_name_nothing_are_refused_and_change_nothing() -> None:
    """A 一次性告知 names every missing material, a 补正 brings at least one, an authorisation
    names its agent, joint tasks open once, and a peer's refusal takes back only a case that
    waits for another node."""
    case = new_case(actor=COUNTY_HALL, competent=COUNTY)
    for missing in ((), ("迁入证明", " ")):
        with pytest.raises(InvalidInput, match="name at least one missing material"):
            case.request_correction(COUNTY_HALL, missing, "一次性告知")
    case.request_correction(COUNTY_HALL, ("迁入证明",), "一次性告知")
    with pytest.raises(InvalidInput, match="a resubmission brings at least one material"):
        case.resubmit(COUNTY_HALL, ())
    with pytest.raises(InvalidInput, match="name the agent"):
        case.authorise_agent(COUNTY_HALL, AgentAuthorisation())
    with pytest.raises(TransitionRefused, match="nothing to take back"):
        case.transfer_refused(
            envelope_id=uuid4(), peer="tongban/61", key_id="k", body=b"", signature=b"", reason="x"
        )
    assert case.state is S.AWAITING_CORRECTION
    assert [type(e).__name__ for e in case.pending_events] == ["Submitted", "CorrectionRequested"]

    joint = new_case(actor=COUNTY_HALL, competent=COUNTY, kind=CaseKind.JOINT)
    joint.accept(COUNTY_HALL)
    tasks = (JointTask("a", "x", "市场监管"), JointTask("b", "y", "税务"))
    joint.open_joint_tasks(COUNTY_HALL, tasks)
    joint.complete_joint_task(Actor("x", "op", COUNTY), "a", True, "")
    joint.complete_joint_task(Actor("y", "op", COUNTY), "b", True, "")
    with pytest.raises(TransitionRefused, match="tasks were already run"):
        joint.open_joint_tasks(COUNTY_HALL, tasks)

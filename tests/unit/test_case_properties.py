"""Property tests: random command sequences keep the case valid, and replay reproduces it."""

from __future__ import annotations

import copy
from functools import reduce
from typing import Any

from factories import COUNTY, COUNTY_HALL, TOWNSHIP, TOWNSHIP_HALL, VILLAGE_HALL, material, new_case
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.domain.case import ALLOWED_FROM, Case
from hub.domain.codec import event_mapper
from hub.domain.regions import RegionCode
from hub.domain.values import (
    OPEN_STATES,
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
from hub.errors import PermissionRefused, TongbanError

DEPT = Actor("c-dept", "op-d", COUNTY)
ACTORS = (VILLAGE_HALL, TOWNSHIP_HALL, COUNTY_HALL, DEPT)
TASKS = (JointTask("amr", DEPT.hall_id, "市场监管"), JointTask("tax", COUNTY_HALL.hall_id, "税务"))

# Each command with a strategy for its arguments (after the actor).
ARGUMENTS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "request_correction": st.just((("户口簿",), "补齐")),
    "resubmit": st.just(((material("补正", b"x"),),)),
    "accept": st.just(()),
    "reject_at_intake": st.just(("不符合条件",)),
    "hand_off": st.sampled_from(
        [
            (TOWNSHIP_HALL.hall_id, RegionCode(TOWNSHIP), "转"),
            (COUNTY_HALL.hall_id, RegionCode(COUNTY), "转"),
        ]
    ),
    "acknowledge_handoff": st.just(()),
    "start_handling": st.just(()),
    "suspend": st.sampled_from([(reason, "") for reason in SuspensionReason]),
    "resume": st.just(()),
    "escalate": st.sampled_from(
        [
            (TOWNSHIP_HALL.hall_id, RegionCode(TOWNSHIP), "上报"),
            (COUNTY_HALL.hall_id, RegionCode(COUNTY), "上报"),
        ]
    ),
    "open_joint_tasks": st.just((TASKS,)),
    "complete_joint_task": st.tuples(
        st.sampled_from(["amr", "tax", "nope"]), st.booleans(), st.just("")
    ),
    "decide": st.tuples(st.sampled_from([True, True, True, False]), st.just("理由")),
    "conclude": st.just(()),
    "record_certificate": st.just(("C-1",)),
    "issue_certificate": st.just(("150001", "11430902MB0000001X", "资阳区民政局", "")),
    "suspend_certificate": st.just(("核查",)),
    "reinstate_certificate": st.just(("核查完毕",)),
    "revoke_certificate": st.just(("撤销",)),
    "deliver": st.sampled_from([(method, "") for method in DeliveryMethod]),
    "rate": st.sampled_from([(rating, "") for rating in Rating]),
    "complete_rectification": st.just(("整改", "回访")),
    "archive": st.just(()),
    "withdraw": st.just(("撤回",)),
    "dispatch_by_post": st.just(("EMS", "1190000000001")),
    "deposit_in_locker": st.sampled_from([("L-01", "A3", "ab" * 32, hours) for hours in (1, 48)]),
    "pick_up_from_locker": st.sampled_from([("L-01", "A3"), ("L-01", "B1")]),
    "return_to_window": st.just(("退件",)),
    "authorise_agent": st.just((AgentAuthorisation("a1", AgentRole.GUIDING, "cd" * 32),)),
    "record_identity_check": st.tuples(
        st.sampled_from(list(IdentityCheckMethod)),
        st.just("reader-01"),
        st.sampled_from(list(CheckResult)),
        st.sampled_from(list(ScoreBand)),
    ),
}
assert set(ARGUMENTS) == set(ALLOWED_FROM)

steps = st.lists(
    st.tuples(
        st.sampled_from(sorted(ARGUMENTS)).flatmap(
            lambda name: st.tuples(st.just(name), ARGUMENTS[name])
        ),
        st.sampled_from(ACTORS),
    ),
    max_size=40,
)


def _state(case: Case) -> dict[str, Any]:
    return {k: v for k, v in vars(case).items() if k != "_pending_events"}


def _check_invariants(case: Case) -> None:
    assert isinstance(case.state, CaseState)
    transferring = case.state in {CaseState.HANDED_OFF, CaseState.ESCALATED}
    assert (case.pending_receiver is not None) == transferring
    assert (case.paused_since is not None) == (
        case.state in {CaseState.AWAITING_CORRECTION, CaseState.SUSPENDED}
    )
    if case.state in OPEN_STATES:
        assert case.clock_stopped_at is None
    if case.state in {CaseState.DECIDED, CaseState.CONCLUDED}:
        assert case.approved is not None
    if case.state is CaseState.CERTIFICATE_ISSUED:
        assert case.approved and case.produces_certificate and case.certificate_id
    if case.state is CaseState.JOINT:
        assert case.joint_tasks and not all(s.done for s in case.joint_tasks.values())
    assert (case.locker is not None) == (case.state is CaseState.IN_LOCKER)
    if case.state in {CaseState.IN_POST, CaseState.IN_LOCKER}:
        assert case.state_before_custody in {CaseState.CONCLUDED, CaseState.CERTIFICATE_ISSUED}
    if case.state is CaseState.RECTIFYING:
        assert case.rating is not None and case.rating.is_bad


STATES_REACHED: set[CaseState] = set()
BY_HALL = {actor.hall_id: actor for actor in ACTORS}


def _likely_actor(case: Case) -> Actor:
    """The hall the state machine expects to act next (random walks get further this way)."""
    if case.pending_receiver:
        return BY_HALL[case.pending_receiver]
    open_tasks = [s.task.hall_id for s in case.joint_tasks.values() if not s.done]
    if case.state is CaseState.JOINT and open_tasks:
        return BY_HALL[open_tasks[0]]
    return BY_HALL[case.holder]


def _walk(kind: CaseKind, competent: str, certificate: bool, data: st.DataObject) -> None:
    case = new_case(kind=kind, competent=competent, produces_certificate=certificate)
    final_seen: CaseState | None = None
    for _ in range(data.draw(st.integers(5, 60), label="length")):
        # Mostly commands the state allows (to get deep into the lifecycle), some that it does not.
        allowed = case.allowed_commands()
        pool = allowed if allowed and data.draw(st.integers(0, 9)) < 9 else sorted(ARGUMENTS)
        command = data.draw(st.sampled_from(pool), label="command")
        args = data.draw(ARGUMENTS[command], label="args")
        likely = [_likely_actor(case)] if data.draw(st.integers(0, 9)) < 9 else list(ACTORS)
        actor = data.draw(st.sampled_from(likely), label="actor")
        before = copy.deepcopy(_state(case))
        pending = len(case.pending_events)
        # The auditor's question of who may act (Case.check_actor) agrees with the command's:
        # every step the case takes is one the binding check lets through.
        try:
            task_id = args[0] if command == "complete_joint_task" else ""
            case.check_actor(command, actor, task_id=task_id)
            may_act = True
        except PermissionRefused:
            may_act = False
        try:
            getattr(case, command)(actor, *args)
        except TongbanError:
            # A refused command changes nothing and records nothing.
            assert _state(case) == before
            assert len(case.pending_events) == pending
        else:
            assert final_seen is None, f"{command} changed a case in final state {final_seen}"
            # (A delivery's rules depend on its channel: the auditor asks check_delivery.)
            assert may_act or command == "deliver", f"{actor.hall_id} may not {command}"
        _check_invariants(case)
        STATES_REACHED.add(case.state)
        if case.state.is_final:
            final_seen = case.state
    events = case.collect_events()
    replayed = reduce(lambda aggregate, event: event.mutate(aggregate), events, None)
    assert isinstance(replayed, Case)
    assert _state(replayed) == _state(case)


WALK_ARGS = {
    "kind": st.sampled_from(list(CaseKind)),
    "competent": st.sampled_from([TOWNSHIP, COUNTY]),
    "certificate": st.booleans(),
    "data": st.data(),
}


@settings(max_examples=300, deadline=None)
@given(**WALK_ARGS)
def test_random_commands_keep_the_case_valid_and_replayable(
    kind: CaseKind, competent: str, certificate: bool, data: st.DataObject
) -> None:
    _walk(kind, competent, certificate, data)


@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(**WALK_ARGS)
def _fixed_walks(kind: CaseKind, competent: str, certificate: bool, data: st.DataObject) -> None:
    _walk(kind, competent, certificate, data)


def test_fixed_walks_keep_the_case_valid_and_reach_every_state() -> None:
    """The same property on a fixed set of walks, which must get through the whole lifecycle.

    Guards the random test above against exploring only the first few states.
    """
    STATES_REACHED.clear()
    _fixed_walks()
    assert set(CaseState) == STATES_REACHED


MAPPER = event_mapper()  # the stored events' own codec: serialisation only


@settings(max_examples=100, deadline=None)
@given(sequence=steps)
def test_events_survive_serialisation_unchanged(sequence: list[Any]) -> None:
    case = new_case(kind=CaseKind.JOINT, competent=COUNTY)
    for (command, args), actor in sequence:
        try:
            getattr(case, command)(actor, *args)
        except TongbanError:
            pass
    events = case.collect_events()
    decoded = [MAPPER.to_domain_event(MAPPER.to_stored_event(event)) for event in events]
    assert decoded == events
    # Equal is not enough: an IntEnum read back as a bare int compares equal but loses its type.
    for original, again in zip(events, decoded, strict=True):
        for name, value in vars(original).items():
            assert type(vars(again)[name]) is type(value), (type(original).__name__, name)
    replayed = reduce(lambda aggregate, event: event.mutate(aggregate), decoded, None)
    assert isinstance(replayed, Case)
    assert _state(replayed) == _state(case)

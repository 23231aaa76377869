"""Identity checks through the node: signed, stored, bound in the log, and every tampering named.

Each test runs on SQLite and on PostgreSQL. A county hall takes in a 养老金领取资格认证 (which
requires a passed 生存认证), records the check with signed commands, and the ledger integrator's
binding check (the same one the auditor runs) decides what may enter the log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import Notification
from tongban.v1 import common_pb2

from hub.domain.case import Case
from hub.domain.values import (
    Applicant,
    CaseState,
    CheckResult,
    IdentityCheckMethod,
    ScoreBand,
    id_number_with_check,
)
from hub.errors import CheckMissing, IntegrityViolation
from hub.integrity.binding import LogChecker
from hub.settings import Settings
from tests.harness.inprocess import APPLICANT, InProcessNode, audit_node, material
from tests.harness.tamper import rewrite_last_event

COUNTY_REGION = "430902000000"
PENSION = "040323001000"
LIVENESS = common_pb2.IDENTITY_CHECK_METHOD_LIVENESS


@pytest.fixture
def settings(store_url: str | None, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "node", checkpoint_every=8, database_url=store_url)


@pytest.fixture
def node(settings: Settings) -> Iterator[InProcessNode]:
    started = InProcessNode.start(settings)
    started.add_hall("c-hall", COUNTY_REGION)
    yield started
    started.close()


def _check(node: InProcessNode, case: str, key: str, result: int) -> Any:
    return node.run(
        node.halls["c-hall"], "record_identity_check", idempotency_key=key, case_id=case,
        method=LIVENESS, device_id="sb-app-0042", result=result,
        score_band=common_pb2.SCORE_BAND_HIGH,
    )  # fmt: skip


def _pension_case(node: InProcessNode) -> str:
    result = node.submit(
        node.halls["c-hall"], "key-pension-01", item_code=PENSION, applicant=APPLICANT,
        materials=[material("社会保障卡")],
    )  # fmt: skip
    return str(result.case_id)


def _audit_ok(settings: Settings) -> None:
    report = audit_node(settings)
    assert report.ok, report.summary()


def test_accept_waits_for_a_passed_proof_of_life_and_the_log_verifies(
    node: InProcessNode,
) -> None:
    hall = node.halls["c-hall"]
    case = _pension_case(node)
    size = node.log_size()
    with pytest.raises(CheckMissing) as refused:
        node.run(hall, "accept", idempotency_key="key-accept-01", case_id=case)
    assert refused.value.check == "LIVENESS"
    assert node.log_size() == size  # nothing stored
    _check(node, case, "key-check-01", common_pb2.CHECK_RESULT_FAILED)
    with pytest.raises(CheckMissing, match="LIVENESS"):
        node.run(hall, "accept", idempotency_key="key-accept-02", case_id=case)
    _check(node, case, "key-check-02", common_pb2.CHECK_RESULT_PASSED)
    node.run(hall, "accept", idempotency_key="key-accept-03", case_id=case)
    stored = node.app.get_case(UUID(case))
    assert stored.state is CaseState.ACCEPTED
    assert stored.passed_checks == (IdentityCheckMethod.LIVENESS,)
    checks = [e for e in node.app.case_history(stored.id) if isinstance(e, Case.IdentityChecked)]
    assert [(e.result, e.device_id, e.actor.operator) for e in checks] == [
        (CheckResult.FAILED, "sb-app-0042", "op-c-hall"),
        (CheckResult.PASSED, "sb-app-0042", "op-c-hall"),
    ]
    node.integrator().catch_up()  # the gate lets every event in
    _audit_ok(node.settings)


def _notifications(node: InProcessNode) -> list[Notification]:
    return list(node.app.recorder.select_notifications(start=1, limit=1000))


def _problems(notifications: list[Notification], origin: str) -> list[tuple[str, str]]:
    """Feed the events, in this order, through a fresh binding check."""
    checker = LogChecker(origin)
    found = []
    for index, notification in enumerate(notifications):
        _leaf, problems = checker.leaf_for(origin, index, notification)
        found += [(notification.topic.rsplit(".", 1)[-1], str(p)) for p in problems]
    return found


def test_an_acceptance_without_the_check_never_enters_the_log(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose software skipped the rule (or a rogue build) stores an acceptance with no
    passed 生存认证: the gate refuses to sign it, naming the missing check."""
    case = _pension_case(node)
    _check(node, case, "key-check-01", common_pb2.CHECK_RESULT_FAILED)
    node.integrator().catch_up()
    with monkeypatch.context() as patched:
        patched.setattr(Case, "check_required_checks", lambda self, command: None)
        node.run(node.halls["c-hall"], "accept", idempotency_key="key-accept-01", case_id=case)
    with pytest.raises(IntegrityViolation) as refused:
        node.integrator().catch_up()
    assert "invalid transition" in str(refused.value)
    assert "LIVENESS" in str(refused.value)
    # Fed to a fresh checker (as the auditor reads the store), the same finding at the same event.
    problems = _problems(_notifications(node), node.settings.origin)
    assert [t for t, p in problems if "LIVENESS" in p] == ["Accepted"], problems


def test_a_check_moved_to_another_case_is_named(node: InProcessNode) -> None:
    case = _pension_case(node)
    other = node.submit(
        node.halls["c-hall"], "key-pension-02", item_code=PENSION, applicant=APPLICANT,
        materials=[material("社会保障卡")],
    ).case_id  # fmt: skip
    _check(node, case, "key-check-01", common_pb2.CHECK_RESULT_PASSED)
    events = _notifications(node)
    checked = next(i for i, n in enumerate(events) if n.topic.endswith("IdentityChecked"))
    events[checked] = dataclasses.replace(events[checked], originator_id=other)
    problems = _problems(events, node.settings.origin)
    assert any(t == "IdentityChecked" and "mis-bound event" in p for t, p in problems), problems


@pytest.mark.parametrize(
    ("old", "new"),
    [(b'"FAILED"', b'"PASSED"'), (b"sb-app-0042", b"sb-app-9999"), (b'"HIGH"', b'"LOW"')],
)
def test_an_altered_check_is_refused_by_the_gate(
    node: InProcessNode, old: bytes, new: bytes
) -> None:
    """A failed check rewritten as passed (or another device, another band) before the
    integrator reaches it does not enter the log: it is not what the hall signed."""
    case = _pension_case(node)
    node.integrator().catch_up()
    _check(node, case, "key-check-01", common_pb2.CHECK_RESULT_FAILED)
    rewrite_last_event(node.settings, "IdentityChecked", old, new)
    with pytest.raises(IntegrityViolation, match="content mismatch"):
        node.integrator().catch_up()


def test_a_check_records_who_did_it_and_when_it_was_signed(node: InProcessNode) -> None:
    """Who did it is the command's operator (and agent), when is its signed time: an agent's
    生存认证 at the applicant's home, signed there and forwarded hours later."""
    hall = node.halls["c-hall"]
    node.run(hall, "register_agent", idempotency_key="key-agent-01", agent_id="dby-07",
             person=Applicant("王代办", id_number_with_check("43090219800101003"), "13907370007"))  # fmt: skip
    letter = common_pb2.AgentAuthorisation(
        agent_id="dby-07", role=common_pb2.AGENT_ROLE_GUIDING, letter_sha256="ab" * 32
    )
    taken_in = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    case = str(node.submit(hall, "key-pension-01", item_code=PENSION, agent=letter,
                           materials=[material("社会保障卡")], acting_agent="dby-07",
                           issued_at=taken_in, deferred=True).case_id)  # fmt: skip
    signed_at = taken_in + timedelta(minutes=10)
    node.run(
        hall, "record_identity_check", idempotency_key="key-check-01", case_id=case,
        method=LIVENESS, device_id="sb-app-0042", result=common_pb2.CHECK_RESULT_PASSED,
        score_band=common_pb2.SCORE_BAND_MEDIUM, acting_agent="dby-07", issued_at=signed_at,
        deferred=True,
    )  # fmt: skip
    history = node.app.case_history(UUID(case))
    assert history[0].required_checks == (IdentityCheckMethod.LIVENESS,)  # type: ignore[attr-defined]
    (checked,) = [e for e in history if isinstance(e, Case.IdentityChecked)]
    assert (checked.actor.hall_id, checked.actor.operator, checked.actor.agent) == (
        "c-hall", "op-c-hall", "dby-07",
    )  # fmt: skip
    assert checked.timestamp == signed_at
    assert (checked.method, checked.result, checked.score_band, checked.device_id) == (
        IdentityCheckMethod.LIVENESS, CheckResult.PASSED, ScoreBand.MEDIUM, "sb-app-0042",
    )  # fmt: skip
    node.integrator().catch_up()
    _audit_ok(node.settings)

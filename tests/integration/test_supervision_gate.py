"""Attacks on 电子监察 warnings: a warning is the node's own act (a NODE leaf), so the ledger's
gate and the auditor re-derive it from the case's history and refuse every forged one.

A rogue writer stores warnings the supervisor never would — a wrong due time, one recorded
before the case was due, one for a case concluded in time, a second one of a kind — straight
into the event store (bypassing :meth:`HubApplication.record_warning`). The integrator refuses
each, naming the notification and why; integrated past the gate with the node's own log key
(a rogue operator), the auditor names each with public keys alone. Runs on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import Notification

from hub.domain.case import Case
from hub.domain.values import WarningKind
from hub.errors import IntegrityViolation, InvalidInput, TransitionRefused
from hub.integrity.audit import AuditReport, audit_case, audit_store
from hub.integrity.integrator import LedgerIntegrator
from hub.integrity.store import ReadOnlyStore
from hub.settings import Settings
from ledger import Leaf, Verifier
from tests.harness.inprocess import read_only_store
from tests.harness.story import FOOD_LICENCE, HOUSEHOLD_MOVE, SupervisionStory, cst
from tests.harness.tamper import integrate_without_the_gate


@pytest.fixture
def settings(store_url: str | None, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "node", checkpoint_every=8, database_url=store_url)


@pytest.fixture
def story(settings: Settings) -> Iterator[SupervisionStory]:
    started = SupervisionStory.start(settings)
    yield started
    started.close()


def _case(story: SupervisionStory) -> UUID:
    """A 5-working-day case received on Monday, March 9th (counted from Tuesday): yellow on
    Monday the 16th at noon, due at the end of that day (March 17th 00:00)."""
    story.at(cst(2026, 3, 9, 10))
    case = story.submit("county", HOUSEHOLD_MOVE, cst(2026, 3, 9, 10))
    story.run("county", "accept", cst(2026, 3, 9, 10, 5), case_id=case)
    return UUID(case)


def _forge(story: SupervisionStory, case_id: UUID, kind: WarningKind, due: datetime,
           at: datetime) -> None:  # fmt: skip
    """Store a warning as a rogue writer would: no check of the case's history."""
    case = story.app.get_case(case_id)
    case.trigger_event(Case.SupervisionWarned, kind=kind, due_at=due, timestamp=at)
    story.app.save(case)


def _refused(story: SupervisionStory) -> IntegrityViolation:
    integrator = story.node.integrator()
    with pytest.raises(IntegrityViolation) as caught:
        integrator.catch_up()
    return caught.value


def test_a_genuine_warning_passes_and_the_node_refuses_early_or_repeated_ones(
    story: SupervisionStory, settings: Settings
) -> None:
    case = _case(story)
    story.at(cst(2026, 3, 16, 11, 59))
    with pytest.raises(InvalidInput, match="not due for it before 2026-03-16T12:00:00"):
        story.app.record_warning(case, WarningKind.YELLOW)
    story.at(cst(2026, 3, 16, 12))
    story.app.record_warning(case, WarningKind.YELLOW)
    with pytest.raises(TransitionRefused, match="YELLOW is recorded"):
        story.app.record_warning(case, WarningKind.YELLOW)
    story.node.integrator().catch_up()
    assert _audit(settings).ok
    # `tongban audit case` shows the warning as the node's own act, proven in the log.
    with _store(settings) as store:
        entries = audit_case(store, case, [_verifier(settings)], origin=settings.origin)
    warning = entries[-1]
    assert warning.topic == "SupervisionWarned" and warning.ok
    assert warning.signer == "the node (电子监察 warning)" and "proven" in warning.status


def test_a_warning_with_a_due_time_the_history_does_not_give_is_refused(
    story: SupervisionStory,
) -> None:
    case = _case(story)
    _forge(story, case, WarningKind.RED, cst(2026, 3, 12), cst(2026, 3, 12, 9))
    refused = _refused(story)
    assert "the RED warning says due at 2026-03-12T00:00:00+08:00" in str(refused)
    assert "the case's history says 2026-03-17T00:00:00+08:00" in str(refused)


def test_a_warning_recorded_before_the_case_was_due_is_refused(story: SupervisionStory) -> None:
    case = _case(story)
    # The right instant, but recorded a day early: the case was not overdue yet.
    _forge(story, case, WarningKind.RED, cst(2026, 3, 17), cst(2026, 3, 16, 0, 1))
    assert "recorded at 2026-03-16T00:01:00+08:00, before the case was due" in str(_refused(story))


def test_a_warning_for_a_case_concluded_in_time_is_refused(story: SupervisionStory) -> None:
    story.at(cst(2026, 3, 9, 10))
    case = UUID(story.submit("county", FOOD_LICENCE, cst(2026, 3, 9, 10)))
    for action, fields in [("accept", {}), ("start_handling", {}),
                           ("decide", {"approved": False, "reason": "不符合条件"}),
                           ("conclude", {})]:  # fmt: skip
        story.run("county", action, cst(2026, 3, 10, 9), case_id=str(case), **fields)
    _forge(story, case, WarningKind.RED, cst(2026, 3, 24), cst(2026, 3, 25))
    assert "a RED warning for a case whose history never reaches that mark" in str(_refused(story))


def test_a_second_warning_of_a_kind_is_refused(story: SupervisionStory) -> None:
    case = _case(story)
    story.at(cst(2026, 3, 16, 12, 30))
    story.app.record_warning(case, WarningKind.YELLOW)
    _forge(story, case, WarningKind.YELLOW, cst(2026, 3, 16, 12), cst(2026, 3, 16, 12, 31))
    assert "a second YELLOW warning for the case" in str(_refused(story))


def _verifier(settings: Settings) -> Verifier:
    return Verifier.from_key((settings.data_dir / "log.vkey").read_text().strip())


def _store(settings: Settings) -> ReadOnlyStore:
    return read_only_store(settings)


def _audit(settings: Settings) -> AuditReport:
    with _store(settings) as store:
        return audit_store(store, [_verifier(settings)], origin=settings.origin)


def _without_the_gate(integrator: LedgerIntegrator) -> int:
    """Integrate as a rogue operator with the log key would: the binding check skipped."""
    honest: Callable[..., Any] = integrator.checker.leaf_for

    def lax(origin: str, index: int, notification: Notification) -> tuple[Leaf, list[Any]]:
        leaf, _problems = honest(origin, index, notification)
        return leaf, []

    integrator.checker.leaf_for = lax  # type: ignore[method-assign]
    return integrator.catch_up()


def test_the_auditor_names_a_forged_warning_integrated_past_the_gate(
    story: SupervisionStory, settings: Settings
) -> None:
    case = _case(story)
    story.node.integrator().catch_up()
    assert _audit(settings).ok
    size = story.node.log_size()
    _forge(story, case, WarningKind.RED, cst(2026, 3, 17), cst(2026, 3, 10))
    _without_the_gate(story.node.integrator())
    report = _audit(settings)
    assert not report.ok
    assert [(f.index, f.kind) for f in report.findings] == [(size, "unauthorised event")]
    assert "before the case was due" in report.findings[0].detail


def test_a_warning_for_a_case_not_in_the_log_is_refused_and_named(
    story: SupervisionStory, settings: Settings
) -> None:
    """A rogue writer stores a warning under an id no case has: there is no history to justify
    it. The gate refuses it; logged past the gate with the node's key, the auditor names it."""
    case = story.app.get_case(_case(story))
    story.node.integrator().catch_up()
    case.trigger_event(
        Case.SupervisionWarned, kind=WarningKind.RED, due_at=cst(2026, 3, 17),
        timestamp=cst(2026, 3, 17, 9),
    )  # fmt: skip
    (warning,) = case.collect_events()
    stray = dataclasses.replace(warning, originator_id=uuid4(), originator_version=1)
    story.app.recorder.insert_events([story.app.mapper.to_stored_event(stray)])
    assert "a warning for a case not in the log" in str(_refused(story))
    integrate_without_the_gate(story.node.integrator())
    report = _audit(settings)
    assert [(f.kind, f.detail) for f in report.findings] == [
        ("unauthorised event", "a warning for a case not in the log")
    ], report.summary()

"""预约办 in the log: an appointment's event carries its step's business time, as a case's does.

A rogue writer moves a cancellation to another time (a late cancellation made to look early),
rewrites its reason, or makes a reception name another case: the ledger's gate refuses it,
and once it is logged past the gate with the node's own log key (a rogue operator), the
auditor names it with the public key alone. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from hub.domain.appointments import Appointment
from hub.errors import IntegrityViolation
from hub.integrity.audit import AuditReport
from hub.settings import Settings
from tests.harness.inprocess import APPLICANT, audit_node
from tests.harness.story import ELDER_CARD, SupervisionStory, cst
from tests.harness.tamper import integrate_without_the_gate, rewrite_last_event

#: Booked on Monday 2026-03-09 09:00 for Tuesday 10:00-10:30 (China Standard Time).
BOOKED_AT = cst(2026, 3, 9, 9)
SLOT = cst(2026, 3, 10, 10)


@pytest.fixture
def settings(store_url: str | None, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "node", checkpoint_every=8, database_url=store_url)


@pytest.fixture
def story(settings: Settings) -> Iterator[SupervisionStory]:
    started = SupervisionStory.start(settings, BOOKED_AT - timedelta(hours=1))
    yield started
    started.close()


def _audit(settings: Settings) -> AuditReport:
    return audit_node(settings)


def _book(story: SupervisionStory) -> Any:
    """The town hall books the window slot for the applicant, on Monday at 09:00."""
    return story.run(
        "town", "book_appointment", BOOKED_AT, item_code=ELDER_CARD,
        kind="APPOINTMENT_KIND_WINDOW", hall_id=story.hall("town").hall_id, window="综合窗口2",
        starts_at=SLOT, ends_at=SLOT + timedelta(minutes=30), applicant=APPLICANT,
        channel="BOOKING_CHANNEL_ONLINE",
    )  # fmt: skip


def test_a_cancellation_moved_to_another_time_is_refused_and_named(
    story: SupervisionStory, settings: Settings
) -> None:
    booked = _book(story)
    at = story.node.integrator().catch_up() + 1  # the cancellation's record, then its event
    story.run("town", "cancel_appointment", SLOT - timedelta(minutes=10),
              appointment_id=str(booked.case_id), reason="申请人改期")  # fmt: skip
    stored = story.app.recorder.select_events(booked.case_id)[-1]
    cancelled = story.app.mapper.to_domain_event(stored)
    assert isinstance(cancelled, Appointment.Cancelled)
    early = (BOOKED_AT + timedelta(minutes=5)).astimezone(UTC)
    rewrite_last_event(settings, "Appointment.Cancelled", cancelled.timestamp.isoformat().encode(),
                       early.isoformat().encode())  # fmt: skip
    with pytest.raises(IntegrityViolation) as refused:
        story.node.integrator().catch_up()
    assert refused.value.index == at
    assert refused.value.problems == [
        "content mismatch: the event's time is not the step's business time"
    ]
    integrate_without_the_gate(story.node.integrator())
    report = _audit(settings)
    assert [(f.index, f.kind) for f in report.findings] == [(at, "content mismatch")]


def test_a_cancellation_reason_rewritten_is_refused_and_named(
    story: SupervisionStory, settings: Settings
) -> None:
    """A rogue writer makes a cancellation say another reason than the hall signed (a
    no-show blamed on the hall made to read as the applicant's own change): the gate refuses
    it, and the auditor names it once it is logged past the gate."""
    booked = _book(story)
    at = story.node.integrator().catch_up() + 1  # the cancellation's record, then its event
    story.run("town", "cancel_appointment", SLOT - timedelta(minutes=10),
              appointment_id=str(booked.case_id), reason="窗口临时关闭")  # fmt: skip
    for old, new in (("窗口临时关闭", "申请人改期"),):
        # The stored JSON may hold the text as UTF-8 or as escapes: rewrite whichever it is.
        for form in (str.encode, lambda text: json.dumps(text)[1:-1].encode()):
            rewrite_last_event(settings, "Appointment.Cancelled", form(old), form(new))
    with pytest.raises(IntegrityViolation) as refused:
        story.node.integrator().catch_up()
    assert refused.value.index == at
    assert refused.value.problems == ["content mismatch: reason differs from the command"]
    integrate_without_the_gate(story.node.integrator())
    report = _audit(settings)
    assert [(f.index, f.kind) for f in report.findings] == [(at, "content mismatch")]


def test_a_reception_naming_another_case_is_refused_and_named(
    story: SupervisionStory, settings: Settings
) -> None:
    """A submission that cites an appointment marks it received, by that case. A rogue writer
    makes the reception name another case (the applicant "came" for something else): the gate
    refuses it, and the auditor names it once it is logged past the gate."""
    booked = _book(story)
    story.node.integrator().catch_up()
    case_id = story.submit("town", ELDER_CARD, SLOT, appointment_id=str(booked.case_id))
    rewrite_last_event(settings, "Appointment.Received", UUID(case_id).hex.encode(),
                       uuid4().hex.encode())  # fmt: skip
    with pytest.raises(IntegrityViolation) as refused:
        story.node.integrator().catch_up()
    assert refused.value.problems == [
        "content mismatch: the reception is not of the submitted case"
    ]
    integrate_without_the_gate(story.node.integrator())
    report = _audit(settings)
    assert [(f.index, f.kind) for f in report.findings] == [
        (refused.value.index, "content mismatch")
    ]


def test_a_booking_moved_to_another_slot_is_refused_and_named(
    story: SupervisionStory, settings: Settings
) -> None:
    """A rogue writer moves a booking to another time than the hall signed (a slot taken for
    someone else, or a booking made to look like one the hall never gave): the gate refuses
    it, and the auditor names it once it is logged past the gate."""
    at = story.node.integrator().catch_up() + 1  # the booking's record, then its event
    booked = _book(story)
    stored = story.app.mapper.to_domain_event(story.app.recorder.select_events(booked.case_id)[0])
    assert isinstance(stored, Appointment.Booked)
    later = stored.starts_at + timedelta(hours=2)
    rewrite_last_event(settings, "Appointment.Booked", stored.starts_at.isoformat().encode(),
                       later.isoformat().encode())  # fmt: skip
    with pytest.raises(IntegrityViolation) as refused:
        story.node.integrator().catch_up()
    assert refused.value.index == at
    assert refused.value.problems == [
        "content mismatch: the booking differs from the command",
        "mis-bound event: the appointment is not of its slot",
    ]
    integrate_without_the_gate(story.node.integrator())
    report = _audit(settings)
    assert {(f.index, f.kind) for f in report.findings} == {
        (at, "content mismatch"),
        (at, "mis-bound event"),
    }

"""The ``Appointment`` aggregate (预约办): booking, reception, cancellation, expiry, refusals."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from hub.domain.appointments import (
    HOME_VISIT_SLOT,
    Appointment,
    AppointmentCommitments,
    AppointmentKind,
    AppointmentState,
    BookingChannel,
    appointment_id,
)
from hub.domain.codec import event_mapper
from hub.errors import InvalidInput, PermissionRefused, TransitionRefused
from tests.unit.factories import TOWNSHIP_HALL, VILLAGE_HALL, applicant

NOW = datetime(2026, 3, 9, 1, 0, tzinfo=UTC)  # Monday 09:00 in China
START = NOW + timedelta(days=1)
END = START + timedelta(minutes=30)
DIGEST = hashlib.sha256(b"address").hexdigest()


def _book(**changes: object) -> Appointment:
    arguments: dict[str, object] = {
        "actor": TOWNSHIP_HALL,
        "item_code": "200202001000",
        "item_name": "老年人优待证办理",
        "kind": AppointmentKind.WINDOW,
        "window": "综合窗口1",
        "starts_at": START,
        "ends_at": END,
        "applicant": applicant(),
        "address": "",
        "channel": BookingChannel.ONLINE,
        "agent": "",
        "ordinal": 1,
        "now": NOW,
        "timestamp": NOW,
    }
    arguments.update(changes)
    return Appointment.book(**arguments)  # type: ignore[arg-type]


def test_a_booking_is_named_by_its_slot_and_ordinal() -> None:
    booked = _book()
    assert booked.state is AppointmentState.BOOKED
    assert booked.id == appointment_id(TOWNSHIP_HALL.hall_id, "综合窗口1", START, 1)
    assert _book().id == booked.id  # the same slot collides
    assert _book(ordinal=2).id != booked.id  # a booking after a cancellation does not
    visit = _book(kind=AppointmentKind.HOME_VISIT, window="", address=DIGEST)
    assert visit.id == appointment_id(TOWNSHIP_HALL.hall_id, HOME_VISIT_SLOT, START, 1)


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"starts_at": NOW - timedelta(minutes=1)}, "starts_at", "the slot begins in the past"),
        ({"starts_at": NOW}, "starts_at", "the slot begins in the past"),
        ({"ends_at": START}, "ends_at", "end after it starts"),
        ({"ends_at": START + timedelta(days=2)}, "ends_at", "at most one day"),
        ({"kind": AppointmentKind.HOME_VISIT}, "applicant.address", "needs the address"),
        ({"address": DIGEST}, "applicant.address", "only a home visit"),
        ({"channel": BookingChannel.AGENT}, "agent", "name the agent"),
    ],
)
def test_a_booking_is_refused_naming_the_field(
    changes: dict[str, object], field: str, reason: str
) -> None:
    with pytest.raises(InvalidInput, match=reason) as caught:
        _book(**changes)
    assert caught.value.field == field


def test_reception_records_the_case_once() -> None:
    booked = _book()
    case_id = uuid4()
    booked.receive(TOWNSHIP_HALL, case_id, "200202001000", NOW + timedelta(days=1))
    assert booked.state is AppointmentState.RECEIVED and booked.case_id == case_id
    with pytest.raises(TransitionRefused):
        booked.receive(TOWNSHIP_HALL, uuid4(), "200202001000", NOW)
    with pytest.raises(TransitionRefused):
        booked.cancel(TOWNSHIP_HALL, "申请人改期", NOW)


def test_reception_is_refused_for_another_item_or_hall() -> None:
    booked = _book()
    with pytest.raises(InvalidInput, match="for item 200202001000"):
        booked.receive(TOWNSHIP_HALL, uuid4(), "070303001000", NOW)
    with pytest.raises(PermissionRefused):
        booked.receive(VILLAGE_HALL, uuid4(), "200202001000", NOW)
    assert booked.state is AppointmentState.BOOKED and len(booked.collect_events()) == 1


def test_cancellation_needs_a_reason() -> None:
    booked = _book()
    with pytest.raises(InvalidInput) as caught:
        booked.cancel(TOWNSHIP_HALL, " ", NOW)
    assert caught.value.field == "reason"
    booked.cancel(TOWNSHIP_HALL, "申请人改期", NOW)
    assert booked.state is AppointmentState.CANCELLED


def test_expiry_only_after_the_slot_and_only_when_booked() -> None:
    booked = _book()
    with pytest.raises(InvalidInput, match="not over yet"):
        booked.expire(END - timedelta(seconds=1))
    late = END + timedelta(hours=3)
    booked.expire(late)
    expired = booked.collect_events()[-1]
    assert isinstance(expired, Appointment.Expired)
    assert expired.due_at == END and expired.timestamp == late
    with pytest.raises(TransitionRefused):
        booked.expire(late)
    cancelled = _book()
    cancelled.cancel(TOWNSHIP_HALL, "申请人改期", NOW)
    with pytest.raises(TransitionRefused):
        cancelled.expire(late)


def test_an_expiry_is_checked_against_the_history() -> None:
    booked = _book()
    genuine = Appointment.Expired(
        originator_id=booked.id, originator_version=2, timestamp=END, due_at=END
    )
    assert booked.check_expiry(genuine) is None
    early = Appointment.Expired(
        originator_id=booked.id, originator_version=2, timestamp=START, due_at=END
    )
    assert "before the slot ended" in str(booked.check_expiry(early))
    wrong = Appointment.Expired(
        originator_id=booked.id, originator_version=2, timestamp=END, due_at=START
    )
    assert "says due at" in str(booked.check_expiry(wrong))


def test_events_round_trip_through_the_stored_form() -> None:
    booked = _book(kind=AppointmentKind.HOME_VISIT, window="", address=DIGEST)
    booked.receive(TOWNSHIP_HALL, uuid4(), "200202001000", NOW)
    mapper = event_mapper()
    events = booked.collect_events()
    decoded = [mapper.to_domain_event(mapper.to_stored_event(event)) for event in events]
    assert decoded == events
    rebuilt = None
    for event in decoded:
        rebuilt = event.mutate(rebuilt)
    assert isinstance(rebuilt, Appointment) and rebuilt.state is AppointmentState.RECEIVED


def test_commitments_are_32_byte_digests_and_the_address_is_optional() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    assert AppointmentCommitments(digest, digest, digest, "").applicant.name == digest
    with pytest.raises(InvalidInput) as caught:
        AppointmentCommitments(digest, digest, digest, "abc")
    assert caught.value.field == "applicant.address"

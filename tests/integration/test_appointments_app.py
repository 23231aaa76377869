"""预约办 through the node's application, on SQLite and PostgreSQL: booking, the refusals, a
retry, a cancellation, the case that cites its appointment, the node's expiry — and the ledger's
gate and the auditor, which accept the genuine log and name every altered or moved record.

Every command is signed by its hall's key and executed as one arriving over gRPC would be
(:class:`tests.harness.story.SupervisionStory`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import grpc
import pytest

from hub.api.convert import event_to_proto
from hub.api.errors import status_code_for, to_status
from hub.application import appointments as appts
from hub.domain.appointments import (
    Appointment,
    AppointmentKind,
    AppointmentState,
    BookingChannel,
)
from hub.errors import (
    IdempotencyConflict,
    IntegrityViolation,
    InvalidInput,
    NotFound,
    PermissionRefused,
    SlotTaken,
    TransitionRefused,
)
from hub.integrity import audit as audit_module
from hub.integrity.audit import AuditReport
from hub.integrity.binding import LogChecker
from hub.settings import Settings
from tests.harness.inprocess import APPLICANT, audit_node, material
from tests.harness.story import ELDER_CARD, HOUSEHOLD_MOVE, SupervisionStory, cst
from tests.harness.tamper import integrate_without_the_gate

#: Booked on Monday 2026-03-09 09:00 for Tuesday 10:00-10:30 (China Standard Time).
BOOKED_AT = cst(2026, 3, 9, 9)
SLOT = cst(2026, 3, 10, 10)
SLOT_END = SLOT + timedelta(minutes=30)
ADDRESS = "沙头镇201村3组12号"
VILLAGE_ITEM = "200101001000"  # 居民居住情况证明出具: decided by the village
EMPLOYMENT_CARD = "200203001000"  # 就业创业证申领: the township's, like the elder card


@pytest.fixture
def settings(store_url: str | None, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "node", checkpoint_every=8, database_url=store_url)


@pytest.fixture
def story(settings: Settings) -> Iterator[SupervisionStory]:
    started = SupervisionStory.start(settings, BOOKED_AT - timedelta(hours=1))
    yield started
    started.close()


def book(
    story: SupervisionStory,
    *,
    hall: str = "town",
    at: datetime = BOOKED_AT,
    key: str | None = None,
    **changes: Any,
) -> Any:
    """Book the Tuesday 10:00 slot at the township's second window (changes override)."""
    fields: dict[str, Any] = {
        "item_code": ELDER_CARD,
        "kind": "APPOINTMENT_KIND_WINDOW",
        "hall_id": story.hall(hall).hall_id,
        "window": "综合窗口2",
        "starts_at": SLOT,
        "ends_at": SLOT_END,
        "applicant": APPLICANT,
        "channel": "BOOKING_CHANNEL_ONLINE",
    }
    fields.update(changes)
    story.clock.now = max(story.clock.now, at + timedelta(seconds=1))
    signed = story.hall(hall).sign("book_appointment", idempotency_key=key, issued_at=at, **fields)
    return story.app.execute(signed, expected="book_appointment")


def _audit(settings: Settings) -> AuditReport:
    return audit_node(settings)


def _refused(story: SupervisionStory) -> IntegrityViolation:
    with pytest.raises(IntegrityViolation) as caught:
        story.node.integrator().catch_up()
    return caught.value


# ---------------------------------------------------------------------------- the genuine path


def test_a_booking_becomes_a_case_and_the_log_proves_it(
    story: SupervisionStory, settings: Settings
) -> None:
    booked = book(story, key="appt-0000001")
    appointment = story.app.get_appointment(booked.case_id)
    assert appointment.state is AppointmentState.BOOKED
    assert (appointment.window, appointment.starts_at, appointment.ends_at) == (
        "综合窗口2",
        SLOT,
        SLOT_END,
    )
    # The applicant is sealed, opened only by the node; the event holds commitments alone.
    opened = story.app.open_appointment(appointment)
    assert opened is not None and opened.applicant == APPLICANT
    assert APPLICANT.id_number.encode() not in bytes(appointment.applicant.ciphertext)
    # A retry (signed again: fresh salts) returns the first result.
    again = book(story, key="appt-0000001")
    assert (again.case_id, again.replayed) == (booked.case_id, True)
    # The applicant is received on Tuesday: the case cites the appointment, which records it.
    case_id = story.submit("town", ELDER_CARD, SLOT, appointment_id=str(booked.case_id))
    case = story.app.get_case(UUID(case_id))
    assert case.appointment_id == str(booked.case_id)
    received = story.app.get_appointment(booked.case_id)
    assert received.state is AppointmentState.RECEIVED and str(received.case_id) == case_id
    # The person's cases (for `tongban erase --id-number`) are the cases, not the appointment.
    assert story.app.cases_of_person(APPLICANT.id_number) == [UUID(case_id)]
    # A second case cannot cite it.
    with pytest.raises(TransitionRefused):
        story.submit("town", ELDER_CARD, SLOT, appointment_id=str(booked.case_id))
    story.node.integrator().catch_up()
    report = _audit(settings)
    assert report.ok, report


def test_a_home_visit_seals_the_address(story: SupervisionStory, settings: Settings) -> None:
    booked = book(
        story,
        kind="APPOINTMENT_KIND_HOME_VISIT",
        window="",
        address=ADDRESS,
        channel="BOOKING_CHANNEL_AGENT",
        agent="代办员-刘",
    )
    appointment = story.app.get_appointment(booked.case_id)
    assert appointment.kind is AppointmentKind.HOME_VISIT
    assert appointment.channel is BookingChannel.AGENT and appointment.agent == "代办员-刘"
    assert len(appointment.address) == 64  # the commitment, never the address
    opened = story.app.open_appointment(appointment)
    assert opened is not None and opened.extra == {"address": ADDRESS}
    story.node.integrator().catch_up()
    assert _audit(settings).ok


def test_a_cancelled_slot_can_be_booked_again(story: SupervisionStory, settings: Settings) -> None:
    first = book(story)
    with pytest.raises(SlotTaken, match="already booked"):
        book(story)
    story.run("town", "cancel_appointment", BOOKED_AT + timedelta(minutes=5),
              appointment_id=str(first.case_id), reason="申请人改期")  # fmt: skip
    assert story.app.get_appointment(first.case_id).state is AppointmentState.CANCELLED
    second = book(story, at=BOOKED_AT + timedelta(minutes=10))
    assert second.case_id != first.case_id
    with pytest.raises(TransitionRefused):
        story.run("town", "cancel_appointment", BOOKED_AT + timedelta(minutes=15),
                  appointment_id=str(first.case_id), reason="again")  # fmt: skip
    story.node.integrator().catch_up()
    assert _audit(settings).ok


def test_a_no_show_expires_by_the_node_after_its_slot(
    story: SupervisionStory, settings: Settings
) -> None:
    booked = book(story)
    story.at(SLOT_END - timedelta(seconds=1))
    with pytest.raises(InvalidInput, match="not over yet"):
        story.app.record_appointment_expiry(booked.case_id)
    story.at(SLOT_END + timedelta(minutes=1))
    story.app.record_appointment_expiry(booked.case_id)
    assert story.app.get_appointment(booked.case_id).state is AppointmentState.EXPIRED
    with pytest.raises(TransitionRefused):
        story.app.record_appointment_expiry(booked.case_id)
    # An applicant arriving later is taken in without it.
    with pytest.raises(TransitionRefused):
        story.submit("town", ELDER_CARD, SLOT_END + timedelta(minutes=2),
                     appointment_id=str(booked.case_id))  # fmt: skip
    story.node.integrator().catch_up()
    assert _audit(settings).ok


def test_a_window_booking_without_a_window_takes_the_halls_first(
    story: SupervisionStory,
) -> None:
    booked = book(story, window="")
    assert story.app.get_appointment(booked.case_id).window == "综合窗口1"
    # It is that window's slot: naming the window books the same slot.
    with pytest.raises(SlotTaken, match="综合窗口1") as taken:
        book(story, window="综合窗口1")
    assert status_code_for(taken.value) is grpc.StatusCode.ALREADY_EXISTS


def test_the_applicant_may_come_before_or_after_the_slot_until_the_no_show(
    story: SupervisionStory,
) -> None:
    early = book(story, key="appt-early-001")
    late = book(story, key="appt-late-0001", window="综合窗口1")
    # Monday, the day before the slot.
    first = story.submit("town", ELDER_CARD, BOOKED_AT + timedelta(minutes=10),
                         appointment_id=str(early.case_id))  # fmt: skip
    # Tuesday afternoon, hours after the slot ended: no no-show was recorded yet.
    second = story.submit("town", ELDER_CARD, SLOT_END + timedelta(hours=4),
                          appointment_id=str(late.case_id))  # fmt: skip
    for booked, case_id in ((early, first), (late, second)):
        appointment = story.app.get_appointment(booked.case_id)
        assert appointment.state is AppointmentState.RECEIVED
        assert str(appointment.case_id) == case_id


def test_every_event_of_an_agents_step_names_the_agent(story: SupervisionStory) -> None:
    """An agent books the slot and takes the applicant in: the booking, the case's submission
    and the appointment's reception each record the agent (``docs/agents.md``)."""
    from tongban.v1 import common_pb2

    from hub.domain.values import Applicant, id_number_with_check

    agent = Applicant("王代办", id_number_with_check("43090219800101003"), "13907370007")
    story.run("town", "register_agent", BOOKED_AT, agent_id="dby-07", person=agent)
    booked = book(story, acting_agent="dby-07", channel="BOOKING_CHANNEL_AGENT", agent="dby-07")
    letter = common_pb2.AgentAuthorisation(
        agent_id="dby-07", role=common_pb2.AGENT_ROLE_ACTING, letter_sha256="ab" * 32
    )
    case_id = story.submit("town", ELDER_CARD, SLOT, acting_agent="dby-07", agent=letter,
                           channel="INTAKE_CHANNEL_AGENT",
                           appointment_id=str(booked.case_id))  # fmt: skip
    events = [
        *story.app.events.get(booked.case_id),
        *story.app.case_history(UUID(case_id))[:1],
    ]
    assert [(type(e).__name__, e.actor.hall_id, e.actor.agent) for e in events] == [
        ("Booked", "hn-shatou-town", "dby-07"),
        ("Received", "hn-shatou-town", "dby-07"),
        ("Submitted", "hn-shatou-town", "dby-07"),
    ]
    # GetCaseHistory's Submitted names the appointment (and the agent who took it in).
    wire = event_to_proto(events[-1])
    assert wire.submitted.appointment_id == str(booked.case_id)
    assert wire.actor.agent == "dby-07"
    story.node.integrator().catch_up()


# ---------------------------------------------------------------------------- refusals


def test_a_slot_in_the_past_is_refused_naming_the_field(story: SupervisionStory) -> None:
    before = story.node.log_size()
    with pytest.raises(InvalidInput) as caught:
        book(story, starts_at=BOOKED_AT - timedelta(hours=1), ends_at=BOOKED_AT)
    assert caught.value.field == "command.book_appointment.starts_at"
    assert "in the past" in caught.value.reason
    with pytest.raises(InvalidInput) as caught:
        book(story, ends_at=SLOT)
    assert caught.value.field == "command.book_appointment.ends_at"
    assert story.node.log_size() == before  # nothing stored


def test_an_item_the_hall_does_not_take_in_is_refused(story: SupervisionStory) -> None:
    # 居民居住情况证明 is the village's own item: the township does not take it in.
    with pytest.raises(InvalidInput, match="decided at VILLAGE level") as caught:
        book(story, item_code=VILLAGE_ITEM)
    assert caught.value.field == "command.book_appointment.item_code"
    with pytest.raises(InvalidInput) as caught:
        book(story, item_code="999999999999")
    assert caught.value.field == "command.book_appointment.item_code"


def test_a_hall_below_the_deciding_level_is_booked_for_what_it_takes_in(
    story: SupervisionStory,
) -> None:
    # The village room takes the township's elder card in: it may be booked for it.
    booked = book(story, hall="village", hall_id="hn-shatou-v201", window="代办窗口")
    assert story.app.get_appointment(booked.case_id).hall_id == "hn-shatou-v201"
    # The county is above the township that decides it: it does not take it in.
    before = story.node.log_size()
    with pytest.raises(InvalidInput, match="decided at TOWNSHIP level") as caught:
        book(story, hall="county", hall_id="hn-ziyang-hall", window="综合窗口")
    assert caught.value.field == "command.book_appointment.item_code"
    assert story.node.log_size() == before


def test_a_hall_books_its_own_windows_only(story: SupervisionStory) -> None:
    county = story.hall("county").hall_id
    with pytest.raises(PermissionRefused, match="its own windows only") as caught:
        book(story, hall_id=county)
    assert county not in str(caught.value)
    with pytest.raises(InvalidInput) as refused:
        book(story, window="出件窗口")  # the county's window, not the township's
    assert refused.value.field == "command.book_appointment.window"


def test_each_bad_booking_is_refused_naming_its_field_and_stores_nothing(
    story: SupervisionStory,
) -> None:
    home_visit = {"kind": "APPOINTMENT_KIND_HOME_VISIT", "window": ""}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**home_visit, "window": "综合窗口1", "address": ADDRESS}, "window"),
        (home_visit, "applicant.address"),  # a home visit without the address
        ({"address": ADDRESS}, "applicant.address"),  # a window booking with one
        ({"channel": "BOOKING_CHANNEL_AGENT"}, "agent"),  # an agent's, naming no agent
        ({"ends_at": SLOT + timedelta(days=1, minutes=1)}, "ends_at"),  # more than a day
        ({"ends_at": SLOT - timedelta(minutes=30)}, "ends_at"),  # ends before it starts
    ]
    before = story.node.log_size()
    for changes, field in cases:
        with pytest.raises(InvalidInput) as caught:
            book(story, **changes)
        assert caught.value.field == f"command.book_appointment.{field}", changes
        assert status_code_for(caught.value) is grpc.StatusCode.INVALID_ARGUMENT
        assert ADDRESS not in to_status(caught.value).message  # never echoed
    # A clear value beside the bytes that does not open the commitment the hall signed.
    story.clock.now = BOOKED_AT + timedelta(seconds=1)
    signed = story.hall("town").sign(
        "book_appointment", issued_at=BOOKED_AT, item_code=ELDER_CARD,
        kind="APPOINTMENT_KIND_WINDOW", hall_id="hn-shatou-town", window="综合窗口2",
        starts_at=SLOT, ends_at=SLOT_END, applicant=APPLICANT, channel="BOOKING_CHANNEL_ONLINE",
    )  # fmt: skip
    name = signed.personal[0]
    forged = dataclasses.replace(name, value="李四")
    with pytest.raises(InvalidInput) as caught:
        story.app.execute(dataclasses.replace(signed, personal=(forged, *signed.personal[1:])))
    assert caught.value.field == "personal[0].value"
    assert story.node.log_size() == before  # nothing stored for any of them
    # The same booking with its values as committed is taken.
    assert story.app.execute(signed).replayed is False


def test_a_retired_hall_books_nothing(story: SupervisionStory) -> None:
    signed = story.node.admin.sign(
        "retire_hall", hall_id="hn-ziyang-hall", reason="撤并", issued_at=story.clock.now
    )
    story.app.execute(signed)
    before = story.node.log_size()
    with pytest.raises(PermissionRefused, match="the hall is retired") as caught:
        book(story, hall="county", item_code=HOUSEHOLD_MOVE, hall_id="hn-ziyang-hall",
             window="综合窗口")  # fmt: skip
    assert status_code_for(caught.value) is grpc.StatusCode.PERMISSION_DENIED
    assert story.node.log_size() == before


def test_a_duplicate_booking_of_a_slot_is_refused_and_a_reused_key_conflicts(
    story: SupervisionStory,
) -> None:
    book(story, key="appt-dup-0001")
    with pytest.raises(SlotTaken):
        book(story, key="appt-dup-0002")
    with pytest.raises(IdempotencyConflict):
        book(story, key="appt-dup-0001", window="综合窗口1")
    # The other window at the same time is free.
    assert book(story, key="appt-dup-0003", window="综合窗口1").replayed is False


def test_a_booking_that_loses_the_race_for_a_slot_is_refused_as_taken(
    story: SupervisionStory, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = book(story, key="appt-race-0001")
    # The loser read the slot as free just before the winner saved it: its save collides.
    monkeypatch.setattr(appts, "free_ordinal", lambda *args: 1)
    before = story.node.log_size()
    with pytest.raises(SlotTaken, match="was just booked"):
        book(story, key="appt-race-0002")
    assert story.node.log_size() == before
    assert story.app.get_appointment(first.case_id).state is AppointmentState.BOOKED


def test_another_halls_appointment_is_not_found(story: SupervisionStory) -> None:
    booked = book(story)
    with pytest.raises(NotFound):
        story.run("county", "cancel_appointment", BOOKED_AT + timedelta(minutes=1),
                  appointment_id=str(booked.case_id), reason="x")  # fmt: skip
    with pytest.raises(NotFound):
        story.submit("county", HOUSEHOLD_MOVE, BOOKED_AT + timedelta(minutes=2),
                     appointment_id=str(booked.case_id))  # fmt: skip


def test_a_case_for_another_item_or_applicant_cannot_cite_it(story: SupervisionStory) -> None:
    from hub.domain.values import Applicant, id_number_with_check

    booked = book(story)
    before = story.node.log_size()
    other = Applicant("王五", id_number_with_check("43090219700101001"), "13800000000")
    with pytest.raises(InvalidInput, match="another applicant") as caught:
        story.run("town", "submit", SLOT, item_code=ELDER_CARD, applicant=other,
                  materials=[material()], appointment_id=str(booked.case_id))  # fmt: skip
    assert caught.value.field == "command.submit.appointment_id"
    # The node compares the ID numbers on the sealed values and echoes neither.
    message = to_status(caught.value).message + str(caught.value)
    assert other.id_number not in message and APPLICANT.id_number not in message
    # The booked applicant, for another item (one the township takes in too).
    with pytest.raises(InvalidInput, match=f"for item {ELDER_CARD}") as caught:
        story.submit("town", EMPLOYMENT_CARD, SLOT, appointment_id=str(booked.case_id))
    assert caught.value.field == "command.submit.appointment_id"
    assert status_code_for(caught.value) is grpc.StatusCode.INVALID_ARGUMENT
    assert story.node.log_size() == before  # nothing stored: no case, no reception
    assert story.app.get_appointment(booked.case_id).state is AppointmentState.BOOKED


def test_an_unknown_appointment_is_not_found_worded_as_another_halls(
    story: SupervisionStory,
) -> None:
    booked = book(story)
    unknown = uuid4()
    refusals = []
    for hall, appointment in (("county", booked.case_id), ("town", unknown)):
        with pytest.raises(NotFound) as caught:
            story.run(hall, "cancel_appointment", BOOKED_AT + timedelta(minutes=1),
                      appointment_id=str(appointment), reason="x")  # fmt: skip
        refusals.append(to_status(caught.value).message.replace(str(appointment), "<id>"))
    assert refusals[0] == refusals[1]
    with pytest.raises(InvalidInput) as malformed:
        story.submit("town", ELDER_CARD, SLOT, appointment_id="not-an-id")
    assert malformed.value.field == "command.submit.appointment_id"


def test_a_cancellation_needs_a_reason_and_a_booked_appointment(story: SupervisionStory) -> None:
    booked = book(story)
    before = story.node.log_size()
    with pytest.raises(InvalidInput) as caught:
        story.run("town", "cancel_appointment", BOOKED_AT + timedelta(minutes=1),
                  appointment_id=str(booked.case_id), reason=" ")  # fmt: skip
    assert caught.value.field == "command.cancel_appointment.reason"
    assert story.node.log_size() == before
    story.submit("town", ELDER_CARD, SLOT, appointment_id=str(booked.case_id))
    with pytest.raises(TransitionRefused) as refused:
        story.run("town", "cancel_appointment", SLOT + timedelta(minutes=1),
                  appointment_id=str(booked.case_id), reason="申请人改期")  # fmt: skip
    assert status_code_for(refused.value) is grpc.StatusCode.FAILED_PRECONDITION
    assert story.app.get_appointment(booked.case_id).state is AppointmentState.RECEIVED


# ---------------------------------------------------------------------------- attacks


def test_a_forged_early_expiry_is_refused_by_the_gate(story: SupervisionStory) -> None:
    booked = book(story)
    appointment = story.app.get_appointment(booked.case_id)
    # A rogue writer records the no-show before the slot even began.
    appointment.trigger_event(Appointment.Expired, due_at=SLOT_END, timestamp=SLOT)
    story.app.save(appointment)
    assert "before the slot ended" in str(_refused(story))


def test_an_expiry_of_a_received_appointment_is_refused_by_the_gate(
    story: SupervisionStory,
) -> None:
    booked = book(story)
    story.submit("town", ELDER_CARD, SLOT, appointment_id=str(booked.case_id))
    appointment = story.app.get_appointment(booked.case_id)
    appointment.trigger_event(Appointment.Expired, due_at=SLOT_END, timestamp=SLOT_END)
    story.app.save(appointment)
    assert "an expiry of an appointment that is RECEIVED" in str(_refused(story))


def test_a_cancellation_moved_to_another_appointment_is_caught(
    story: SupervisionStory, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = book(story)
    second = book(story, window="综合窗口1")
    real = appts.appointment_for_hall

    def moved(load: Any, text: str, hall_id: str, field: str) -> Appointment:
        # The hall signed the cancellation of the first; the writer applies it to the second.
        return real(load, str(second.case_id), hall_id, field)

    monkeypatch.setattr(appts, "appointment_for_hall", moved)
    story.run("town", "cancel_appointment", BOOKED_AT + timedelta(minutes=5),
              appointment_id=str(first.case_id), reason="申请人改期")  # fmt: skip
    assert "mis-bound" in str(_refused(story))


def test_a_booking_altered_after_signing_is_caught(
    story: SupervisionStory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Appointment.book.__func__  # type: ignore[attr-defined]

    def altered(cls: type[Appointment], **fields: Any) -> Appointment:
        fields["starts_at"] += timedelta(hours=1)  # not the slot the hall signed
        fields["ends_at"] += timedelta(hours=1)
        return real(cls, **fields)  # type: ignore[no-any-return]

    monkeypatch.setattr(Appointment, "book", classmethod(altered))
    book(story)
    assert "the booking differs from the command" in str(_refused(story))


def test_a_second_booking_of_a_taken_slot_is_caught(
    story: SupervisionStory, monkeypatch: pytest.MonkeyPatch
) -> None:
    book(story)
    monkeypatch.setattr(appts, "free_ordinal", lambda *args: 2)  # the writer skips the check
    book(story, at=BOOKED_AT + timedelta(minutes=1))
    assert "the slot was booked already" in str(_refused(story))


def test_a_second_booking_past_a_restarted_gate_is_caught(
    story: SupervisionStory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slot's first booking is integrated, and another command after it: a gate started
    afresh re-checks only from the last command on, yet still knows the slot is taken."""
    book(story)
    book(story, window="综合窗口1")
    story.node.integrator().catch_up()
    monkeypatch.setattr(appts, "free_ordinal", lambda *args: 2)  # the writer skips the check
    book(story, at=BOOKED_AT + timedelta(minutes=1))
    assert "the slot was booked already" in str(_refused(story))


def test_a_booking_past_a_gate_is_named_by_an_auditor_that_remembers_no_case(
    story: SupervisionStory, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Booked twice past the gate (a rogue operator with the log key): the auditor names the
    second booking however few cases it keeps in memory."""
    book(story)
    monkeypatch.setattr(appts, "free_ordinal", lambda *args: 2)
    book(story, at=BOOKED_AT + timedelta(minutes=1))
    integrate_without_the_gate(story.node.integrator())
    monkeypatch.setattr(audit_module, "LogChecker", functools.partial(LogChecker, cache_size=0))
    findings = [str(finding) for finding in _audit(settings).findings]
    assert any("the slot was booked already" in finding for finding in findings), findings


def test_a_booking_under_an_ordinal_never_booked_is_caught(
    story: SupervisionStory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slot's second booking with no first one in the log: ordinals are taken in turn."""
    monkeypatch.setattr(appts, "free_ordinal", lambda *args: 2)
    book(story)
    assert "booking 1 of the slot is not in the log" in str(_refused(story))


def test_a_reception_dropped_from_a_submission_is_caught(
    story: SupervisionStory, monkeypatch: pytest.MonkeyPatch
) -> None:
    booked = book(story)
    monkeypatch.setattr(type(story.app), "_booked_for", lambda *args: None)
    story.submit("town", ELDER_CARD, SLOT, appointment_id=str(booked.case_id))
    # The next command shows what the submission left out.
    day = timedelta(days=1)
    book(story, at=SLOT + timedelta(minutes=1), starts_at=SLOT + day, ends_at=SLOT_END + day)
    assert "events missing" in str(_refused(story))

"""Erasure reaches 预约办: ``tongban erase --id-number`` crypto-shreds the person's appointments
as it does their cases, on SQLite and PostgreSQL.

The attacks first: after the erasure, someone holding the whole store *and* the node's at-rest
key ring cannot open the appointment's sealed applicant or address with any key the store still
holds; the operator's views never showed them; a rogue writer's erasure event that no admin
signed, an admin's erasure moved to another appointment and one stored with another reason are
each refused by the ledger's gate. And the genuine log — an erased appointment, an erased case —
still passes the gate and the auditor.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import grpc
import pytest

from hub.api.errors import status_code_for
from hub.application.cipher import DecryptionError
from hub.application.recorders import PERSONAL_KEYS
from hub.cli import main
from hub.domain.appointments import Appointment, AppointmentState
from hub.domain.values import Applicant, id_number_with_check
from hub.errors import IntegrityViolation, TransitionRefused
from hub.integrity.audit import AuditReport
from hub.projections.appointments import appointment_counts, appointments_of_day
from hub.projections.node import open_projections
from hub.settings import Settings
from tests.harness.inprocess import APPLICANT, audit_node
from tests.harness.story import ELDER_CARD, SupervisionStory, cst

TOWN = "hn-shatou-town"
BOOKED_AT = cst(2026, 3, 9, 9)
SLOT = cst(2026, 3, 10, 10)
ADDRESS = "沙头镇201村3组12号"
#: Another person, whose appointment must stay readable.
NEIGHBOUR = Applicant("李四", id_number_with_check("43090219600101003"), "13800000001")


@pytest.fixture
def settings(store_url: str | None, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "node", checkpoint_every=8, database_url=store_url)


@pytest.fixture
def story(settings: Settings) -> Iterator[SupervisionStory]:
    started = SupervisionStory.start(settings, BOOKED_AT - timedelta(hours=1))
    yield started
    started.close()


def _book(
    story: SupervisionStory, hour: int, applicant: Applicant = APPLICANT, **more: Any
) -> UUID:
    starts = SLOT.replace(hour=hour)
    fields: dict[str, Any] = {
        "item_code": ELDER_CARD, "kind": "APPOINTMENT_KIND_WINDOW", "hall_id": TOWN,
        "window": "综合窗口1", "starts_at": starts, "ends_at": starts + timedelta(minutes=30),
        "applicant": applicant, "channel": "BOOKING_CHANNEL_ONLINE",
    }  # fmt: skip
    fields.update(more)
    return story.run("town", "book_appointment", BOOKED_AT, **fields).case_id  # type: ignore[no-any-return]


def _home_visit(story: SupervisionStory, hour: int = 15) -> UUID:
    return _book(
        story, hour, kind="APPOINTMENT_KIND_HOME_VISIT", window="", address=ADDRESS,
        channel="BOOKING_CHANNEL_AGENT", agent="代办员-刘",
    )  # fmt: skip


def _erase(story: SupervisionStory, appointment: UUID, reason: str = "申请人要求删除") -> Any:
    signed = story.node.admin.sign(
        "erase_personal_data", case_id=str(appointment), reason=reason, issued_at=story.clock.now
    )
    return story.app.execute(signed)


def _cli(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    for name in list(os.environ):
        if name.startswith("TONGBAN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TONGBAN_DATA_DIR", str(settings.data_dir))
    if settings.database_url:
        monkeypatch.setenv("TONGBAN_DATABASE_URL", settings.database_url)


def _audit(settings: Settings) -> AuditReport:
    return audit_node(settings)


def _refused(story: SupervisionStory) -> IntegrityViolation:
    with pytest.raises(IntegrityViolation) as caught:
        story.node.integrator().catch_up()
    return caught.value


def _every_wrapped_key(story: SupervisionStory) -> list[bytes]:
    """Every per-record key the store still holds, read as an intruder would (raw SQL)."""
    with story.app.recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute(f"SELECT wrapped FROM {PERSONAL_KEYS} WHERE wrapped IS NOT NULL")
        return [bytes(row["wrapped"]) for row in cursor.fetchall()]


def _opens(story: SupervisionStory, appointment: Appointment) -> list[Any]:
    """What the sealed applicant opens to under each key the store holds (with the node's own
    at-rest key ring: the strongest reader there is)."""
    assert appointment.applicant is not None
    opened = []
    for wrapped in _every_wrapped_key(story):
        try:
            found = story.app.vault.open(appointment.id, appointment.applicant, wrapped)
        except DecryptionError:
            continue  # another record's key: AES-GCM refuses it
        opened.append(found)
    return opened


# ---------------------------------------------------------------------------- attacks first


def test_after_erasure_nothing_of_the_person_can_be_read_from_the_store(
    story: SupervisionStory,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    visit = _home_visit(story)
    window = _book(story, 9)
    kept = _book(story, 10, NEIGHBOUR)
    case = story.submit("town", ELDER_CARD, BOOKED_AT + timedelta(minutes=3))
    # Before: the node opens the person's appointments, the address included.
    opened = story.app.open_appointment(story.app.get_appointment(visit))
    assert opened is not None and (opened.applicant, opened.extra) == (
        APPLICANT,
        {"address": ADDRESS},
    )
    assert len(_opens(story, story.app.get_appointment(visit))) == 1
    assert set(story.app.appointments_of_person(APPLICANT.id_number)) == {visit, window}

    _cli(monkeypatch, settings)
    assert main(["erase", "--id-number", APPLICANT.id_number, "--reason", "申请人要求删除"]) == 0
    out = capsys.readouterr().out
    assert f"erased the personal data of appointment {visit}" in out
    assert f"erased the personal data of appointment {window}" in out
    assert f"erased the personal data of case {case}" in out

    for erased in (visit, window):
        appointment = story.app.get_appointment(erased)
        assert appointment.personal_data_erased
        assert appointment.state is AppointmentState.BOOKED  # the slot itself is kept
        assert story.app.open_appointment(appointment) is None
        # The intruder with the whole store and the node's key ring opens it with no key.
        assert _opens(story, appointment) == []
        assert story.app.keys.personal_key(erased) is None
    assert story.app.appointments_of_person(APPLICANT.id_number) == []
    assert story.app.cases_of_person(APPLICANT.id_number) == []
    # The neighbour's appointment is untouched.
    neighbour = story.app.open_appointment(story.app.get_appointment(kept))
    assert neighbour is not None and neighbour.applicant == NEIGHBOUR
    assert story.app.appointments_of_person(NEIGHBOUR.id_number) == [kept]

    # The operator's views never show the person; the erased slots are still listed.
    assert main(["appointments", "--hall", TOWN, "--day", "2026-03-10", "--json"]) == 0
    listing = capsys.readouterr().out
    assert {entry["appointment_id"] for entry in json.loads(listing)["entries"]} == {
        str(visit), str(window), str(kept),
    }  # fmt: skip
    for value in (APPLICANT.name, APPLICANT.id_number, APPLICANT.phone, ADDRESS):
        assert value not in listing

    # Again: nothing left of that person to erase (and an admin's second erasure is refused).
    assert main(["erase", "--id-number", APPLICANT.id_number, "--reason", "再次"]) == 0
    assert "no case with personal data" in capsys.readouterr().out
    with pytest.raises(TransitionRefused, match="already erased"):
        _erase(story, visit, "again")

    # The log still verifies: the gate takes every erasure, the auditor with the log key alone.
    story.node.integrator().catch_up()
    report = _audit(settings)
    assert report.ok, report
    assert report.shredded == 3  # two appointments and one case


def test_an_erasure_no_admin_signed_is_refused_by_the_gate(story: SupervisionStory) -> None:
    visit = _home_visit(story)
    appointment = story.app.get_appointment(visit)
    # A rogue writer records an erasure (to hide that the node still holds the key, or to
    # pretend a person's data is gone) without any admin's signed command.
    appointment.trigger_event(
        Appointment.PersonalDataErased, admin="admin", reason="forged", timestamp=BOOKED_AT
    )
    story.app.save(appointment)
    assert "unauthorised event" in str(_refused(story))


def test_an_erasure_moved_to_another_appointment_is_refused_by_the_gate(
    story: SupervisionStory, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed_for = _book(story, 9)
    moved_to = _book(story, 10, NEIGHBOUR)
    real = type(story.app)._aggregate_or_none

    def moved(app: Any, aggregate_id: UUID) -> Any:
        # The admin signed the erasure of one person's appointment; the writer shreds another's.
        return real(app, moved_to if aggregate_id == signed_for else aggregate_id)

    monkeypatch.setattr(type(story.app), "_aggregate_or_none", moved)
    _erase(story, signed_for)
    assert "mis-bound" in str(_refused(story))


def test_an_erasure_stored_with_another_reason_is_refused_by_the_gate(
    story: SupervisionStory, monkeypatch: pytest.MonkeyPatch
) -> None:
    visit = _home_visit(story)
    real = Appointment.erase_personal_data

    def altered(self: Appointment, admin: str, reason: str, timestamp: Any) -> None:
        real(self, admin, "依法删除", timestamp)  # not the reason the admin signed

    monkeypatch.setattr(Appointment, "erase_personal_data", altered)
    _erase(story, visit)
    assert "the erasure is not the signed command's" in str(_refused(story))


# ---------------------------------------------------------------------------- in every state


def test_an_erasure_in_any_state_keeps_the_slot_which_is_still_received_and_counted(
    story: SupervisionStory, settings: Settings
) -> None:
    received, cancelled, expired = _book(story, 9), _book(story, 10), _book(story, 11)
    visit = _home_visit(story)
    story.run("town", "cancel_appointment", BOOKED_AT + timedelta(minutes=5),
              appointment_id=str(cancelled), reason="申请人改期")  # fmt: skip
    case = story.submit("town", ELDER_CARD, cst(2026, 3, 10, 9, 5), appointment_id=str(received))
    story.at(cst(2026, 3, 10, 11, 31))
    story.app.record_appointment_expiry(expired)
    states = {
        received: AppointmentState.RECEIVED,
        cancelled: AppointmentState.CANCELLED,
        expired: AppointmentState.EXPIRED,
        visit: AppointmentState.BOOKED,
    }
    for appointment_id, state in states.items():
        _erase(story, appointment_id)
        appointment = story.app.get_appointment(appointment_id)
        assert appointment.personal_data_erased and appointment.state is state
        assert story.app.open_appointment(appointment) is None
    assert str(story.app.get_appointment(received).case_id) == case
    # Once: a second erasure is FAILED_PRECONDITION, whatever the state.
    with pytest.raises(TransitionRefused, match="already erased") as again:
        _erase(story, cancelled, "again")
    assert status_code_for(again.value) is grpc.StatusCode.FAILED_PRECONDITION
    # The booked home visit is still received when the applicant comes (nothing left to compare
    # the arriving applicant with).
    arrived = story.submit("town", ELDER_CARD, cst(2026, 3, 10, 15), appointment_id=str(visit))
    after = story.app.get_appointment(visit)
    assert after.state is AppointmentState.RECEIVED and str(after.case_id) == arrived
    # Still listed and counted.
    projections = open_projections(story.app, node_region="43")
    try:
        projections.create_tables()
        projections.catch_up()
        rows = appointments_of_day(projections.store, TOWN, SLOT.date())
        assert {UUID(row.appointment_id): row.state for row in rows} == {
            received: "RECEIVED", cancelled: "CANCELLED", expired: "EXPIRED", visit: "RECEIVED",
        }  # fmt: skip
        (counts,) = appointment_counts(projections.store, first=SLOT.date(), last=SLOT.date())
        assert (counts.booked, counts.received, counts.cancelled, counts.no_show) == (4, 2, 1, 1)
    finally:
        projections.close()
    story.node.integrator().catch_up()
    report = _audit(settings)
    assert report.ok, report
    assert report.shredded == 4

"""``CaseExchange.ListAppointments`` in this process, on SQLite and PostgreSQL: who reads which
hall's appointments of a day, and who sees the applicant in clear (``docs/appointments.md``,
"Seeing the appointments").

The handler is the servicer's own (:func:`hub.api.appointments.list_appointments`), called with
the caller's certificate identity and a servicer context that records the status it ends with,
so every refusal leaves through the one error table exactly as over gRPC. The same over mutual
TLS against a real node: ``tests/e2e/test_appointments_e2e.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from tongban.v1 import case_exchange_pb2, common_pb2

from hub.api.appointments import list_appointments
from hub.api.supervision import ChangeFeed, ProjectionAccess
from hub.pki import Identity, Role
from hub.projections.node import Projections, open_projections
from hub.projections.queries import Names
from hub.settings import Settings
from tests.harness.inprocess import APPLICANT
from tests.harness.story import ELDER_CARD, SupervisionStory, cst

TOWN = "hn-shatou-town"
COUNTY = "hn-ziyang-hall"
BOOKED_AT = cst(2026, 3, 9, 9)
DAY = "2026-03-10"
ADDRESS = "沙头镇201村3组12号"


class Refused(Exception):
    """The status a call ended with: its code, message and ``google.rpc.Status`` details."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Any) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details
        (packed,) = [value for key, value in trailing if key == "grpc-status-details-bin"]
        self.status = status_pb2.Status.FromString(packed)

    def field_violations(self) -> list[str]:
        bad = error_details_pb2.BadRequest()
        return [v.field for d in self.status.details if d.Unpack(bad) for v in bad.field_violations]


class _Context:
    """A servicer context: ``abort`` ends the call with the status (raising, as grpc does)."""

    def abort(self, code: grpc.StatusCode, details: str, trailing: Any = ()) -> None:
        raise Refused(code, details, trailing)

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


@pytest.fixture
def settings(store_url: str | None, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "node", checkpoint_every=8, database_url=store_url)


@pytest.fixture
def story(settings: Settings) -> Iterator[SupervisionStory]:
    started = SupervisionStory.start(settings, BOOKED_AT - timedelta(hours=1))
    yield started
    started.close()


@pytest.fixture
def projections(story: SupervisionStory) -> Iterator[Projections]:
    opened = open_projections(story.app, node_region="43")
    opened.create_tables()
    yield opened
    opened.close()


def _access(story: SupervisionStory, projections: Projections) -> ProjectionAccess:
    return ProjectionAccess(
        projections.store,
        Names(story.app.regions, story.app.catalogue),
        lambda: None,
        ChangeFeed(story.node.settings.database_url),
        lambda: story.clock.now,
    )


def _list(
    story: SupervisionStory,
    projections: Projections,
    caller: Identity,
    hall_id: str = "",
    day: str = DAY,
    state: int = 0,
) -> list[Any]:
    request = case_exchange_pb2.ListAppointmentsRequest(hall_id=hall_id, day=day, state=state)
    reply = list_appointments(
        story.app, _access(story, projections), lambda _context: caller, request, _Context()
    )
    return list(reply.appointments)


def _refused(story: SupervisionStory, projections: Projections, caller: Identity,
             hall_id: str = "", day: str = DAY) -> Refused:  # fmt: skip
    with pytest.raises(Refused) as caught:
        _list(story, projections, caller, hall_id, day)
    return caught.value


def _book_the_township(story: SupervisionStory) -> tuple[str, str]:
    """Tuesday at the township: a window booking at 09:00 and a home visit at 15:00."""

    def book(hour: int, **changes: Any) -> str:
        starts = cst(2026, 3, 10, hour)
        fields: dict[str, Any] = {
            "item_code": ELDER_CARD, "kind": "APPOINTMENT_KIND_WINDOW", "hall_id": TOWN,
            "window": "综合窗口1", "starts_at": starts, "ends_at": starts + timedelta(minutes=30),
            "applicant": APPLICANT, "channel": "BOOKING_CHANNEL_ONLINE",
        }  # fmt: skip
        fields.update(changes)
        return str(story.run("town", "book_appointment", BOOKED_AT, **fields).case_id)

    window = book(9)
    visit = book(15, kind="APPOINTMENT_KIND_HOME_VISIT", window="", address=ADDRESS,
                 channel="BOOKING_CHANNEL_AGENT", agent="代办员-刘")  # fmt: skip
    return window, visit


def _personal(view: Any) -> tuple[str, str, str]:
    return view.applicant_name, view.applicant_phone, view.address


def test_a_hall_reads_its_own_day_in_clear_and_nothing_of_another_halls(
    story: SupervisionStory, projections: Projections
) -> None:
    window, visit = _book_the_township(story)
    projections.catch_up()
    town = Identity(Role.HALL, TOWN)
    # Its own (hall_id empty: the caller's), by start time, the applicant in clear.
    mine = _list(story, projections, town)
    assert [v.appointment_id for v in mine] == [window, visit]
    assert _personal(mine[0]) == (APPLICANT.name, APPLICANT.phone, "")
    assert _personal(mine[1]) == (APPLICANT.name, APPLICANT.phone, ADDRESS)
    assert _list(story, projections, town, TOWN) == mine
    expired = common_pb2.APPOINTMENT_STATE_EXPIRED
    assert _list(story, projections, town, state=expired) == []
    # Another hall's day is NOT_FOUND, worded as for a hall that does not exist.
    county = Identity(Role.HALL, COUNTY)
    other = _refused(story, projections, county, TOWN)
    none = _refused(story, projections, county, "no-such-hall")
    assert other.code is none.code is grpc.StatusCode.NOT_FOUND
    assert other.details == none.details.replace("no-such-hall", TOWN)
    assert _list(story, projections, county) == []  # its own day: empty


def test_a_retired_hall_reads_no_appointments(
    story: SupervisionStory, projections: Projections
) -> None:
    """Retiring a hall revokes its access (``docs/pki.md``): its certificate still names it, but
    it reads nothing of its appointments, least of all the applicants in clear."""
    _book_the_township(story)
    projections.catch_up()
    signed = story.node.admin.sign(
        "retire_hall", hall_id=TOWN, reason="撤并", issued_at=story.clock.now
    )
    story.app.execute(signed)
    refused = _refused(story, projections, Identity(Role.HALL, TOWN))
    assert refused.code is grpc.StatusCode.PERMISSION_DENIED
    assert "the hall is retired" in refused.details
    assert APPLICANT.name not in refused.details


def test_supervisors_read_their_region_and_auditors_every_hall_without_personal_data(
    story: SupervisionStory, projections: Projections
) -> None:
    window, visit = _book_the_township(story)
    projections.catch_up()
    city = Identity(Role.SUPERVISOR, "jiancha.4309")
    seen = _list(story, projections, city, TOWN)
    assert [v.appointment_id for v in seen] == [window, visit]
    assert all(_personal(v) == ("", "", "") for v in seen)
    assert seen[1].agent == "代办员-刘" and seen[1].kind == common_pb2.APPOINTMENT_KIND_HOME_VISIT
    # Another region's supervisor: NOT_FOUND, as for a hall that does not exist.
    elsewhere = Identity(Role.SUPERVISOR, "jiancha.4307")
    outside = _refused(story, projections, elsewhere, TOWN)
    assert outside.code is grpc.StatusCode.NOT_FOUND
    assert outside.details == _refused(story, projections, city, "no-such-hall").details.replace(
        "no-such-hall", TOWN
    )
    # An auditor reads every hall, without personal data.
    auditor = Identity(Role.AUDITOR, "audit-01")
    audited = _list(story, projections, auditor, TOWN)
    assert [v.appointment_id for v in audited] == [window, visit]
    assert all(_personal(v) == ("", "", "") for v in audited)
    assert _list(story, projections, auditor, COUNTY) == []
    # Neither names a hall by default: INVALID_ARGUMENT on hall_id.
    unnamed = _refused(story, projections, auditor)
    assert unnamed.code is grpc.StatusCode.INVALID_ARGUMENT
    assert unnamed.field_violations() == ["hall_id"]
    # Other roles may not call it.
    peer = _refused(story, projections, Identity(Role.PEER, "hubei"), TOWN)
    assert peer.code is grpc.StatusCode.PERMISSION_DENIED


def test_a_malformed_day_is_invalid_naming_the_field(
    story: SupervisionStory, projections: Projections
) -> None:
    for day in ("tomorrow", "2026-3-10", "2026-02-30", ""):
        refused = _refused(story, projections, Identity(Role.HALL, TOWN), day=day)
        assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
        assert refused.field_violations() == ["day"]
        assert "YYYY-MM-DD" in refused.details

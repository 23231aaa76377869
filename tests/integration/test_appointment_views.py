"""预约办 views on SQLite and PostgreSQL: the ``appointments`` projection, the supervisor's
expiry of no-shows (and the gate's acceptance of it), the no-show counts, ``tongban
appointments`` (a headed table, ``--json``, ``--stats``), and a rebuild equal to the live view."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from hub.cli import main
from hub.projections.appointments import appointment_counts, appointments_of_day
from hub.projections.node import open_projections
from hub.projections.queries import Names
from hub.projections.supervisor import Supervisor
from hub.settings import Settings
from hub.web.app import WebContext, dashboard_data
from tests.harness.inprocess import APPLICANT
from tests.harness.story import ELDER_CARD, SupervisionStory, cst

TOWN = "hn-shatou-town"
BOOKED_AT = cst(2026, 3, 9, 9)
TUESDAY = date(2026, 3, 10)


@pytest.fixture
def settings(store_url: str | None, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "node", checkpoint_every=8, database_url=store_url)


@pytest.fixture
def story(settings: Settings) -> Iterator[SupervisionStory]:
    started = SupervisionStory.start(settings, BOOKED_AT - timedelta(hours=1))
    yield started
    started.close()


def _book(story: SupervisionStory, hour: int, minute: int = 0, **changes: Any) -> str:
    starts = cst(2026, 3, 10, hour, minute)
    fields: dict[str, Any] = {
        "item_code": ELDER_CARD, "kind": "APPOINTMENT_KIND_WINDOW", "hall_id": TOWN,
        "window": "综合窗口1", "starts_at": starts, "ends_at": starts + timedelta(minutes=30),
        "applicant": APPLICANT, "channel": "BOOKING_CHANNEL_ONLINE",
    }  # fmt: skip
    fields.update(changes)
    return str(story.run("town", "book_appointment", BOOKED_AT, **fields).case_id)


def _day(story: SupervisionStory) -> dict[str, str]:
    """Tuesday at the township: one received, one cancelled, one no-show, one home visit ahead."""
    received = _book(story, 9)
    cancelled = _book(story, 10)
    no_show = _book(story, 11)
    visit = _book(story, 15, kind="APPOINTMENT_KIND_HOME_VISIT", window="",
                  address="沙头镇201村3组12号", channel="BOOKING_CHANNEL_AGENT",
                  agent="代办员-刘")  # fmt: skip
    story.run("town", "cancel_appointment", BOOKED_AT + timedelta(minutes=5),
              appointment_id=cancelled, reason="申请人改期")  # fmt: skip
    case = story.submit("town", ELDER_CARD, cst(2026, 3, 10, 9, 10), appointment_id=received)
    return {"received": received, "cancelled": cancelled, "no_show": no_show, "visit": visit,
            "case": case}  # fmt: skip


def test_the_supervisor_expires_no_shows_and_the_views_count_them(
    story: SupervisionStory, settings: Settings
) -> None:
    ids = _day(story)
    projections = open_projections(story.app, node_region="43")
    try:
        projections.create_tables()
        projections.catch_up()
        supervisor = Supervisor(story.app, projections.store)
        # At 11:29 nothing is over but the received and cancelled ones: nothing to expire.
        story.at(cst(2026, 3, 10, 11, 29))
        assert supervisor.record_due() == 0
        assert supervisor.next_due(story.clock.now) == cst(2026, 3, 10, 11, 30)
        story.at(cst(2026, 3, 10, 11, 31))
        assert supervisor.record_due() == 1  # the 11:00 no-show
        projections.catch_up()
        assert supervisor.record_due() == 0  # once only
        rows = appointments_of_day(projections.store, TOWN, TUESDAY)
        states = {row.appointment_id: row.state for row in rows}
        assert states == {ids["received"]: "RECEIVED", ids["cancelled"]: "CANCELLED",
                          ids["no_show"]: "EXPIRED", ids["visit"]: "BOOKED"}  # fmt: skip
        assert [row.starts_at for row in rows] == sorted(row.starts_at for row in rows)
        received = next(row for row in rows if row.state == "RECEIVED")
        assert received.case_id == ids["case"]
        visit = next(row for row in rows if row.kind == "HOME_VISIT")
        assert (visit.window, visit.channel, visit.agent) == ("", "AGENT", "代办员-刘")
        (counts,) = appointment_counts(projections.store, first=TUESDAY, last=TUESDAY)
        assert (counts.booked, counts.received, counts.cancelled, counts.no_show, counts.open) == (
            4, 1, 1, 1, 1,
        )  # fmt: skip
        assert appointments_of_day(projections.store, "hn-ziyang-hall", TUESDAY) == []
        # The supervisors' dashboard shows the month's appointments and no-shows of its region.
        context = WebContext(
            projections.store, Names(story.app.regions, story.app.catalogue),
            story.app.catalogue, "43", lambda: story.clock.now,
        )  # fmt: skip
        cards = dashboard_data(context, "430902", story.clock.now)["cards"]
        assert (cards["appointments"], cards["no_shows"]) == (4, 1)
        assert dashboard_data(context, "4307", story.clock.now)["cards"]["appointments"] == 0
        # A rebuild from the log gives the same rows.
        projections.runner("appointments").rebuild()
        assert appointments_of_day(projections.store, TOWN, TUESDAY) == rows
    finally:
        projections.close()
    # The node's expiry passes the gate and the auditor's check.
    story.node.integrator().catch_up()


def test_tongban_appointments_shows_the_day_and_the_no_shows(
    story: SupervisionStory,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = _day(story)
    projections = open_projections(story.app, node_region="43")
    try:
        projections.create_tables()
        projections.catch_up()
        story.at(cst(2026, 3, 10, 18))
        assert Supervisor(story.app, projections.store).record_due() == 2  # 11:00 and 15:00
    finally:
        projections.close()
    for name in list(os.environ):
        if name.startswith("TONGBAN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TONGBAN_DATA_DIR", str(settings.data_dir))
    if settings.database_url:
        monkeypatch.setenv("TONGBAN_DATABASE_URL", settings.database_url)

    assert main(["appointments", "--hall", TOWN, "--day", "2026-03-10"]) == 0
    header, rule, *rows, footer = capsys.readouterr().out.splitlines()
    assert header.split()[:2] == ["slot", "window"] and set(rule) == {"-"}
    assert len(rows) == 4 and rows[0].startswith("2026-03-10 09:00-09:30")
    assert "RECEIVED 已受理" in rows[0] and ids["case"] in rows[0]
    assert "CANCELLED 已取消" in rows[1] and "EXPIRED 爽约" in rows[2]
    assert "上门办" in rows[3] and "代办员-刘" in rows[3]
    assert footer.startswith("4 appointments, 0 已预约, 1 已受理, 1 已取消, 2 爽约")
    assert APPLICANT.name not in "\n".join(rows)  # the operator's table shows no personal data

    assert main(["appointments", "--hall", TOWN, "--day", "2026-03-10", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [entry["state"] for entry in document["entries"]] == [
        "RECEIVED", "CANCELLED", "EXPIRED", "EXPIRED",
    ]  # fmt: skip

    assert main(["appointments", "--stats", "--from", "2026-03-01", "--to", "2026-03-31"]) == 0
    header, _rule, day_row, total, footer = capsys.readouterr().out.splitlines()
    assert "爽约" in header and "爽约率" in header
    assert day_row.split()[:7] == ["2026-03-10", TOWN, "4", "1", "1", "2", "0"]
    assert total.split()[-1] == "66.7%" and "爽约率" in footer

    assert main(["appointments", "--day", "2026-03-10"]) == 2
    assert "--hall" in capsys.readouterr().err


def test_supervisors_late_restarted_or_racing_record_each_no_show_once(
    story: SupervisionStory,
) -> None:
    """The application re-checks the appointment's stored history, so two supervisors reading
    the same (stale) view, or one restarted on another application, record one expiry."""
    ids = _day(story)
    projections = open_projections(story.app, node_region="43")
    try:
        projections.create_tables()
        projections.catch_up()
        story.at(cst(2026, 3, 11, 9))  # a late supervisor: both no-shows are long over
        first = Supervisor(story.app, projections.store)
        racing = Supervisor(story.app, projections.store)
        assert first.expire_due(story.clock.now) == 2  # 11:00 and the 15:00 home visit
        assert racing.expire_due(story.clock.now) == 0  # its view still says BOOKED
        restarted = story.node.reopen()
        try:
            restarted.app.clock = story.clock
            assert Supervisor(restarted.app, projections.store).expire_due(story.clock.now) == 0
        finally:
            restarted.close()
        projections.catch_up()
        assert first.expire_due(story.clock.now) == 0  # the view has caught up: none due
    finally:
        projections.close()
    for lapsed in (ids["no_show"], ids["visit"]):
        history = list(story.app.events.get(UUID(lapsed)))
        assert [type(e).__name__ for e in history] == ["Booked", "Expired"]
    story.node.integrator().catch_up()


def test_tongban_appointments_filters_by_state_and_counts_a_region_as_csv(
    story: SupervisionStory,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = _day(story)
    projections = open_projections(story.app, node_region="43")
    try:
        projections.create_tables()
        projections.catch_up()
        story.at(cst(2026, 3, 10, 12))
        assert Supervisor(story.app, projections.store).record_due() == 1  # the 11:00 no-show
    finally:
        projections.close()
    for name in list(os.environ):
        if name.startswith("TONGBAN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TONGBAN_DATA_DIR", str(settings.data_dir))
    if settings.database_url:
        monkeypatch.setenv("TONGBAN_DATABASE_URL", settings.database_url)

    # --state EXPIRED: the no-shows only.
    args = ["appointments", "--hall", TOWN, "--day", "2026-03-10", "--state", "EXPIRED", "--json"]
    assert main(args) == 0
    entries = json.loads(capsys.readouterr().out)["entries"]
    assert [(e["appointment_id"], e["state"]) for e in entries] == [(ids["no_show"], "EXPIRED")]
    # --stats --region R --csv: per day and hall of the region, for a spreadsheet.
    args = ["appointments", "--stats", "--from", "2026-03-01", "--to", "2026-03-31",
            "--region", "430902", "--csv"]  # fmt: skip
    assert main(args) == 0
    header, *rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert len(header) >= 8 and "爽约" in header and "爽约率" in header
    (day_row,) = [row for row in rows if row[:2] == ["2026-03-10", TOWN]]
    assert day_row[2:7] == ["4", "1", "1", "1", "1"]  # booked, received, cancelled, no-show, open
    assert APPLICANT.name not in "".join(",".join(row) for row in rows)
    # Another region has none of them.
    args[-2:] = ["4307", "--csv"]
    assert main(args) == 0
    assert not [row for row in csv.reader(io.StringIO(capsys.readouterr().out)) if TOWN in row]

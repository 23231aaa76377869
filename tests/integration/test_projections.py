"""Projections on a real store (SQLite and PostgreSQL): business time, working-day clocks, queues
with AB岗, the supervisor's warnings through the ledger's gate, ratings with rectification,
statistics, rebuild equal to the live tables row for row, and a projection that stops at an
event it cannot apply without skipping it.

The story runs in March 2026 (a year the calendar knows) on the node's own clock, which the
story sets: every command is signed at its business time and checked by the node's time rules.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from hub.domain.values import CaseState, WarningKind
from hub.errors import ProjectionFailed
from hub.projections import queries
from hub.projections.node import Projections, open_projections
from hub.projections.queries import CaseFilter, Names
from hub.projections.store import from_iso, iso
from hub.projections.supervisor import Supervisor
from hub.settings import Settings
from tests.harness.inprocess import audit_node
from tests.harness.story import (
    ELDER_CARD,
    FOOD_LICENCE,
    HOUSEHOLD_MOVE,
    SupervisionStory,
    cst,
)

COUNTY = "hn-ziyang-hall"


@pytest.fixture
def settings(store_url: str | None, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "node", database_url=store_url)


@pytest.fixture
def story(settings: Settings) -> Iterator[SupervisionStory]:
    started = SupervisionStory.start(settings)
    yield started
    started.close()


@pytest.fixture
def projections(story: SupervisionStory) -> Iterator[Projections]:
    opened = open_projections(story.app, node_region="43")
    opened.create_tables()
    yield opened
    opened.close()


def _queue_story(story: SupervisionStory) -> dict[str, str]:
    """Four cases in the county hall's queue (see each line)."""
    ids: dict[str, str] = {}
    # A: taken in at the village room on Friday 16:00 while offline (帮代办); its outbox syncs
    # on Monday morning. The county acknowledges it at 综合窗口 and accepts it.
    story.at(cst(2026, 3, 9, 8, 30))
    ids["A"] = story.submit("village", HOUSEHOLD_MOVE, cst(2026, 3, 6, 16), deferred=True,
                            channel="INTAKE_CHANNEL_AGENT")  # fmt: skip
    story.run("village", "hand_off", cst(2026, 3, 6, 16, 5), deferred=True, case_id=ids["A"],
              to_hall=COUNTY, reason="县级事项")  # fmt: skip
    story.run("county", "acknowledge_handoff", cst(2026, 3, 9, 9), case_id=ids["A"],
              window="综合窗口")  # fmt: skip
    story.run("county", "accept", cst(2026, 3, 9, 9, 10), case_id=ids["A"])
    # B: the county's own intake at 出件窗口, a 10-working-day item.
    ids["B"] = story.submit("county", FOOD_LICENCE, cst(2026, 3, 9, 10), window="出件窗口")
    # C: the county's intake (no window named: its first), paused by a one-time notice.
    ids["C"] = story.submit("county", HOUSEHOLD_MOVE, cst(2026, 3, 9, 11))
    story.run("county", "request_correction", cst(2026, 3, 9, 11, 5), case_id=ids["C"],
              missing=["户口簿"], notice="一次性告知")  # fmt: skip
    # D: taken in at the township and handed to the county, not yet acknowledged.
    ids["D"] = story.submit("town", HOUSEHOLD_MOVE, cst(2026, 3, 9, 12))
    story.run("town", "hand_off", cst(2026, 3, 9, 12, 5), case_id=ids["D"], to_hall=COUNTY,
              reason="县级事项")  # fmt: skip
    return ids


def test_a_deferred_case_is_clocked_from_when_the_village_took_it(
    story: SupervisionStory, projections: Projections
) -> None:
    ids = _queue_story(story)
    projections.catch_up()
    row = queries.case_by_id(projections.store, ids["A"])
    assert row is not None
    # Received on Friday 16:00, not when the outbox synced on Monday.
    assert row.time("received_at") == cst(2026, 3, 6, 16)
    # The weekend does not count: Mon-Fri is five working days, due at the end of Friday 13th.
    assert row.time("due_at") == cst(2026, 3, 14)
    assert row.time("yellow_at") == cst(2026, 3, 13, 12)
    assert row.time("statutory_due_at") == cst(2026, 4, 4)  # 20 days, 清明 on April 6th later
    assert row.holder == COUNTY and row.holder_window == "综合窗口"
    assert row.intake_hall == "hn-shatou-v201" and row.channel == "AGENT"
    assert row.working_days_used(cst(2026, 3, 11, 12)) == 2.5


def test_the_queue_is_ordered_by_deadline_with_filters_paging_and_ab_posts(
    story: SupervisionStory, projections: Projections
) -> None:
    ids = _queue_story(story)
    projections.catch_up()
    store, monday = projections.store, cst(2026, 3, 9, 13)

    def listed(**options: Any) -> list[str]:
        page = queries.queue(store, COUNTY, as_of=options.pop("as_of", monday), **options)
        names = {value: key for key, value in ids.items()}
        return [names[row.case_id] for row in page.entries]

    # A due 3/14, D due 3/17 (awaiting acknowledgement), B due 3/24, C paused (no deadline).
    assert listed() == ["A", "D", "B", "C"]
    first = queries.queue(store, COUNTY, as_of=monday, page_size=2)
    assert [r.case_id for r in first.entries] == [ids["A"], ids["D"]] and first.next_token
    second = queries.queue(store, COUNTY, as_of=monday, page_size=2, page_token=first.next_token)
    assert [r.case_id for r in second.entries] == [ids["B"], ids["C"]]
    assert second.next_token == ""
    # By window: C named no window, so it is at the hall's first one.
    assert listed(window="综合窗口") == ["A", "C"]
    assert listed(window="出件窗口") == ["B"]
    assert listed(wanted=CaseFilter(states=(CaseState.AWAITING_CORRECTION,))) == ["C"]
    assert listed(wanted=CaseFilter(item_code=FOOD_LICENCE)) == ["B"]
    # Views "as of now" take now from the request: nothing new happened, yet A is overdue later.
    assert listed(wanted=CaseFilter(overdue=True)) == []
    assert listed(wanted=CaseFilter(overdue=True), as_of=cst(2026, 3, 16, 10)) == ["A"]
    paused = [r for r in queries.queue(store, COUNTY, as_of=monday).entries if r.paused]
    assert [r.case_id for r in paused] == [ids["C"]]
    # AB岗: 综合窗口 is served by its A post; when the A post is absent, by its B post. The
    # handoff awaiting acknowledgement is shown to every operator.
    story.run("county", "staff_window", cst(2026, 3, 9, 13), window="综合窗口",
              a_post="op-zhang", b_post="op-li")  # fmt: skip
    projections.catch_up()
    assert listed(operator="op-zhang") == ["A", "D", "C"]
    assert listed(operator="op-li") == ["D"]
    story.run("county", "staff_window", cst(2026, 3, 9, 14), window="综合窗口",
              a_post="op-zhang", b_post="op-li", a_post_absent=True)  # fmt: skip
    projections.catch_up()
    assert listed(operator="op-li") == ["A", "D", "C"]
    assert listed(operator="op-zhang") == ["D"]
    # The township's queue still shows D as its own (held until the county acknowledges).
    town = queries.queue(store, "hn-shatou-town", as_of=monday)
    assert [r.case_id for r in town.entries] == [ids["D"]]


def _audit_ok(settings: Settings) -> None:
    report = audit_node(settings)
    assert report.ok, report.summary()


def test_the_supervisor_records_each_warning_once_and_the_gate_checks_it(
    story: SupervisionStory, projections: Projections, settings: Settings
) -> None:
    ids = _queue_story(story)
    projections.catch_up()
    supervisor = Supervisor(story.app, projections.store)
    assert supervisor.record_due() == 0  # nothing due on Monday
    assert supervisor.next_due(story.clock.now) == cst(2026, 3, 13, 12)  # A's yellow mark
    story.at(cst(2026, 3, 13, 12, 0, 1))
    assert supervisor.record_due() == 1
    projections.catch_up()
    assert supervisor.record_due() == 0  # recorded, and the projection knows
    story.at(cst(2026, 3, 14, 0, 0, 5))
    assert supervisor.record_due() == 1  # A's red
    # A restarted supervisor (and the projection behind it) records nothing twice.
    assert Supervisor(story.app, projections.store).record_due() == 0
    projections.catch_up()
    warned = queries.warnings(projections.store, region="43").entries
    assert [(w.case_id, w.kind) for w in warned] == [
        (ids["A"], WarningKind.RED), (ids["A"], WarningKind.YELLOW)
    ]  # fmt: skip
    assert warned[0].due_at == cst(2026, 3, 14) and warned[0].recorded_at == cst(
        2026, 3, 14, 0, 0, 5
    )
    case = story.app.get_case(UUID(ids["A"]))
    assert case.warnings == (WarningKind.YELLOW, WarningKind.RED)
    # Each warning passes the ledger's gate and the auditor's check with public keys only.
    story.node.integrator().catch_up()
    _audit_ok(settings)


def test_a_late_conclusion_is_still_warned_a_stopped_clock_never_and_an_immediate_item_red_only(
    story: SupervisionStory, projections: Projections
) -> None:
    """``docs/projections.md``: a case that crossed a mark before it was concluded gets the
    warning even when the supervisor looks later; a case withdrawn or rejected at intake stops
    its clock (no warning after); a 即办件 (0 promised days) has no yellow mark, only red."""
    story.at(cst(2026, 3, 9, 9))
    late = story.submit("county", HOUSEHOLD_MOVE, cst(2026, 3, 9, 9))  # due end of 3-13
    withdrawn = story.submit("county", HOUSEHOLD_MOVE, cst(2026, 3, 9, 9, 5))
    rejected = story.submit("county", HOUSEHOLD_MOVE, cst(2026, 3, 9, 9, 10))
    immediate = story.submit("town", ELDER_CARD, cst(2026, 3, 9, 9, 15))
    story.run("county", "withdraw", cst(2026, 3, 10, 9), case_id=withdrawn, reason="申请人撤回")
    story.run("county", "reject_at_intake", cst(2026, 3, 10, 9), case_id=rejected,
              reason="不属于受理范围")  # fmt: skip
    for action, fields in [("accept", {}), ("start_handling", {}),
                           ("decide", {"approved": True, "reason": "符合条件"})]:  # fmt: skip
        story.run("county", action, cst(2026, 3, 10, 10), case_id=late, **fields)
    story.run("county", "conclude", cst(2026, 3, 20, 10), case_id=late)  # a week late
    projections.catch_up()
    story.at(cst(2026, 3, 20, 11))  # the supervisor's first look since Monday
    Supervisor(story.app, projections.store).record_due()
    projections.catch_up()
    warned = {(w.case_id, w.kind) for w in queries.warnings(projections.store, region="43").entries}
    assert warned == {
        (late, WarningKind.YELLOW), (late, WarningKind.RED), (immediate, WarningKind.RED)
    }  # fmt: skip


#: The next mark after ``now`` as the supervisor read it before its looks took one statement:
#: each kind's first unwarned mark after ``now``, read on its own (the reference for look()).
_EACH_KIND_AFTER = (
    "SELECT MIN(yellow_at) FROM projection_cases WHERE warned_yellow = 0 AND yellow_at > %s",
    "SELECT MIN(due_at) FROM projection_cases WHERE warned_red = 0 AND due_at > %s",
    "SELECT MIN(rectification_due_at) FROM projection_ratings WHERE warned = 0 "
    "AND rectification_due_at > %s",
    "SELECT MIN(ends_at) FROM projection_appointments WHERE state = 'BOOKED' AND ends_at > %s",
)


def _next_mark_kind_by_kind(projections: Projections, now: datetime) -> datetime | None:
    store = projections.store

    def read(cursor: Any) -> list[str]:
        marks = []
        for statement in _EACH_KIND_AFTER:
            cursor.execute(store.dialect.sql(statement), (iso(now),))
            row = cursor.fetchone()
            if row and row[0]:
                marks.append(row[0])
        return marks

    found = [from_iso(mark) for mark in store.read(read)]
    return min((mark for mark in found if mark is not None), default=None)


def test_a_look_that_finds_nothing_due_is_one_read_and_names_the_next_mark(
    story: SupervisionStory, projections: Projections, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _queue_story(story)
    projections.catch_up()
    supervisor = Supervisor(story.app, projections.store)
    reads: list[Any] = []
    read = projections.store.read

    def counted(work: Any) -> Any:
        reads.append(work)
        return read(work)

    monkeypatch.setattr(projections.store, "read", counted)
    # Monday: nothing due. One read names A's yellow mark as the next.
    assert supervisor.look() == (0, cst(2026, 3, 13, 12))
    assert len(reads) == 1
    assert _next_mark_kind_by_kind(projections, story.clock.now) == cst(2026, 3, 13, 12)
    # A's yellow mark passed: recorded; the projection has not seen it yet, and the next mark
    # is still the first one after now (not the passed mark it still lists).
    story.at(cst(2026, 3, 13, 12, 0, 1))
    recorded, upcoming = supervisor.look()
    assert recorded == 1
    assert upcoming is not None and upcoming > story.clock.now
    assert upcoming == _next_mark_kind_by_kind(projections, story.clock.now)
    assert upcoming == supervisor.next_due(story.clock.now)
    projections.catch_up()
    assert supervisor.look() == (0, upcoming)
    # Friday midnight: A's red, then the marks of the others, each when it falls due.
    story.at(cst(2026, 3, 14, 0, 0, 5))
    assert supervisor.record_due() == 1
    projections.catch_up()
    case = story.app.get_case(UUID(ids["A"]))
    assert case.warnings == (WarningKind.YELLOW, WarningKind.RED)
    recorded, upcoming = supervisor.look()
    assert recorded == 0
    assert upcoming == _next_mark_kind_by_kind(projections, story.clock.now)


def test_a_bad_rating_opens_a_rectification_with_its_own_overdue_warning(
    story: SupervisionStory, projections: Projections
) -> None:
    story.at(cst(2026, 3, 10, 9))
    case = story.submit("town", ELDER_CARD, cst(2026, 3, 10, 9), channel="INTAKE_CHANNEL_ONLINE")
    for action, fields in [
        ("accept", {}), ("start_handling", {}),
        ("decide", {"approved": True, "reason": "符合条件"}), ("conclude", {}),
        ("record_certificate", {"certificate_id": "1.2.156.3005.2.1"}),
        ("deliver", {"method": "DELIVERY_METHOD_WINDOW", "note": ""}),
    ]:  # fmt: skip
        story.run("town", action, cst(2026, 3, 10, 10), case_id=case, **fields)
    story.run("town", "rate", cst(2026, 3, 10, 15), case_id=case, rating="RATING_NOT_SATISFIED",
              comment="等候太久", channel="RATING_CHANNEL_ONLINE")  # fmt: skip
    projections.catch_up()
    (rating,) = queries.ratings(projections.store, region="4309", bad_only=True).entries
    assert rating.channel == "ONLINE" and rating.comment == "等候太久" and rating.rectification
    # 15 working days (the default) from the day after the rating: due at the end of March 31.
    assert rating.rectification_due_at == cst(2026, 4, 1)
    assert not rating.overdue(cst(2026, 3, 31, 23)) and rating.overdue(cst(2026, 4, 1, 9))
    supervisor = Supervisor(story.app, projections.store)
    story.at(cst(2026, 4, 1, 9))
    assert supervisor.record_due() == 1
    projections.catch_up()
    (warning,) = queries.warnings(projections.store, region="4309").entries
    assert warning.kind is WarningKind.RECTIFICATION_OVERDUE
    story.run("town", "complete_rectification", cst(2026, 4, 2, 10), case_id=case,
              report="增加窗口", follow_up="回访满意")  # fmt: skip
    projections.catch_up()
    (done,) = queries.ratings(projections.store, region="4309").entries
    assert done.rectified_at == cst(2026, 4, 2, 10) and done.follow_up == "回访满意"
    assert queries.ratings(projections.store, region="4309", open_only=True).entries == []


def test_statistics_count_by_business_day_hall_window_region_and_item(
    story: SupervisionStory, projections: Projections
) -> None:
    _queue_story(story)
    story.at(cst(2026, 3, 10, 9))
    online = story.submit("town", ELDER_CARD, cst(2026, 3, 10, 9), channel="INTAKE_CHANNEL_ONLINE")
    for action in ("accept", "start_handling"):
        story.run("town", action, cst(2026, 3, 10, 9, 30), case_id=online)
    story.run("town", "decide", cst(2026, 3, 10, 10), case_id=online, approved=False,
              reason="不符合条件")  # fmt: skip
    story.run("town", "conclude", cst(2026, 3, 10, 10), case_id=online)
    projections.catch_up()
    names = Names(story.app.regions, story.app.catalogue)
    by_hall, total = queries.statistics(projections.store, names, region="4309", by="hall")
    assert {row.key: row.figures["received"] for row in by_hall} == {
        "hn-shatou-v201": 1, "hn-shatou-town": 2, COUNTY: 2
    }  # fmt: skip
    assert total["received"] == 5 and total["promised"] == 4 and total["immediate"] == 1
    assert total["nearby"] == 2  # village and township intake of county items (就近办)
    assert total["agent"] == 1 and total["online"] == 1 and total.online_rate == 0.2
    assert total["concluded"] == 1 and total.on_time_rate == 1.0
    by_day, _ = queries.statistics(projections.store, names, region="43", by="day")
    # The village's case counts on Friday, when it was taken in (not on Monday, when it synced).
    assert [(row.key, row.figures["received"]) for row in by_day] == [
        ("2026-03-06", 1), ("2026-03-09", 3), ("2026-03-10", 1)
    ]  # fmt: skip
    by_window, _ = queries.statistics(projections.store, names, region="4309", by="window")
    assert {row.key for row in by_window} == {
        "hn-shatou-v201/代办窗口", "hn-shatou-town/综合窗口1", f"{COUNTY}/综合窗口",
        f"{COUNTY}/出件窗口",
    }  # fmt: skip
    by_region, _ = queries.statistics(projections.store, names, region="430902", by="region")
    assert [(row.key, row.label) for row in by_region] == [
        ("430902", "资阳区"), ("430902104", "沙头镇")
    ]  # fmt: skip
    by_level, _ = queries.statistics(projections.store, names, region="43", by="level")
    assert {row.key: row.figures["received"] for row in by_level} == {
        "VILLAGE": 1, "TOWNSHIP": 2, "COUNTY": 2
    }  # fmt: skip
    ranking = queries.rank_windows(projections.store, names, region="43", month="2026-03")
    assert ranking[0].hall_id == "hn-shatou-town" and ranking[0].window == "综合窗口1"


def test_statistics_count_on_time_ratings_and_their_rates_as_documented(
    story: SupervisionStory, projections: Projections
) -> None:
    """The definitions of ``docs/projections.md`` ("Statistics"): 按期办结 only when concluded by
    the promised deadline, satisfied = 基本满意 or better, 差评 = 不满意 or worse, and the rates
    of them; a rating counts on the day it is given."""
    steps = [("accept", {}), ("start_handling", {}),
             ("decide", {"approved": True, "reason": "符合条件"})]  # fmt: skip
    cases = {}
    for name in ("late", "on time", "unrated"):  # 户口迁移: 5 working days promised
        story.at(cst(2026, 3, 9, 9))
        cases[name] = story.submit("county", HOUSEHOLD_MOVE, cst(2026, 3, 9, 9))
        for action, fields in steps:
            story.run("county", action, cst(2026, 3, 9, 10), case_id=cases[name], **fields)
    concluded = {"late": cst(2026, 3, 20, 10), "on time": cst(2026, 3, 10, 10),
                 "unrated": cst(2026, 3, 11, 10)}  # fmt: skip
    for name, at in sorted(concluded.items(), key=lambda item: item[1]):
        story.run("county", "conclude", at, case_id=cases[name])
        story.run("county", "record_certificate", at, case_id=cases[name],
                  certificate_id=f"1.2.156.3005.2.{len(name)}")  # fmt: skip
        story.run("county", "deliver", at, case_id=cases[name],
                  method="DELIVERY_METHOD_WINDOW", note="本人领取")  # fmt: skip
    for name, rating in (("late", "RATING_BASICALLY_SATISFIED"),
                         ("on time", "RATING_NOT_SATISFIED")):  # fmt: skip
        story.run("county", "rate", cst(2026, 3, 20, 11), case_id=cases[name], rating=rating,
                  channel="RATING_CHANNEL_WINDOW")  # fmt: skip
    projections.catch_up()
    names = Names(story.app.regions, story.app.catalogue)
    _rows, total = queries.statistics(projections.store, names, region="4309", by="day")
    counted = {name: total[name] for name in ("concluded", "on_time", "delivered", "rated",
                                              "satisfied", "bad")}  # fmt: skip
    assert counted == {"concluded": 3, "on_time": 2, "delivered": 3, "rated": 2,
                       "satisfied": 1, "bad": 1}  # fmt: skip
    assert total.on_time_rate == pytest.approx(2 / 3)
    assert total.satisfaction_rate == 0.5 and total.active_rating_rate == pytest.approx(2 / 3)
    by_day, _ = queries.statistics(projections.store, names, region="4309", by="day",
                                   from_day="2026-03-20", to_day="2026-03-20")  # fmt: skip
    (day,) = by_day
    assert (day.figures["rated"], day.figures["concluded"], day.figures["on_time"]) == (2, 1, 0)


def _tables(projections: Projections) -> dict[str, list[tuple[Any, ...]]]:
    contents = {}
    for runner in projections.runners.values():
        for table in runner.projection.tables:

            def read(cursor: Any, table: str = table) -> list[tuple[Any, ...]]:
                cursor.execute(f"SELECT * FROM {table}")
                return sorted(tuple(row) for row in cursor.fetchall())

            contents[table] = projections.store.read(read)
    return contents


def test_a_rebuilt_projection_equals_the_live_one_row_for_row(
    story: SupervisionStory, projections: Projections
) -> None:
    _queue_story(story)
    projections.catch_up()
    supervisor = Supervisor(story.app, projections.store)
    story.at(cst(2026, 3, 16, 12, 30))
    assert supervisor.record_due() == 3  # A yellow and red, D yellow
    projections.catch_up()
    live = _tables(projections)
    assert all(live[table] for table in ("projection_cases", "projection_stats_daily"))
    positions = {}
    for name, runner in projections.runners.items():
        positions[name] = runner.rebuild()
        assert positions[name] == runner.position
    assert _tables(projections) == live
    # A rebuilt projection goes on following the log from where the rebuild ended.
    story.run("county", "start_handling", cst(2026, 3, 16, 13), case_id=queries.queue(
        projections.store, COUNTY, as_of=story.clock.now).entries[0].case_id)  # fmt: skip
    assert projections.runner("cases").step() == 1


def test_a_statistics_table_of_an_earlier_version_is_rebuilt_at_start_up(
    story: SupervisionStory, projections: Projections, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade: the daily table of a version before the competent region was one of its
    keys (its rows, its tracking position kept) is rebuilt from the log when the tables are
    made, so every figure stays, now with the new column."""
    _queue_story(story)
    projections.catch_up()
    live = _tables(projections)["projection_stats_daily"]
    runner = projections.runner("statistics")
    position = runner.position

    def earlier_shape(cursor: Any) -> None:
        cursor.execute("ALTER TABLE projection_stats_daily RENAME TO stats_now")
        cursor.execute(
            "CREATE TABLE projection_stats_daily AS SELECT day, intake_hall, intake_window, "
            "intake_region, item_code, level, received FROM stats_now WHERE 1 = 0"
        )
        cursor.execute("DROP TABLE stats_now")

    projections.store.write(earlier_shape)
    assert projections.store.read(runner.projection.outdated)
    with caplog.at_level("WARNING", logger="tongban.projections"):
        projections.create_tables()
    assert not projections.store.read(runner.projection.outdated)
    assert [r.getMessage() for r in caplog.records if r.name == "tongban.projections"] == [
        "the statistics projection's tables are of an earlier version: rebuilding it from the log"
    ]
    assert _tables(projections)["projection_stats_daily"] == live
    assert runner.position == position


def _insert_rogue_event(settings: Settings, topic: str) -> int:
    """Store an event no projection can decode, as a broken writer could; its notification id."""
    import uuid

    if settings.database_url is None:
        with sqlite3.connect(settings.sqlite_path) as connection:
            cursor = connection.execute(
                "INSERT INTO stored_events (originator_id, originator_version, topic, state) "
                "VALUES (?, 1, ?, ?)", (uuid.uuid4().hex, topic, b"{not json"),
            )  # fmt: skip
            return int(cursor.lastrowid or 0)
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        row = connection.execute(
            "INSERT INTO tongban_events (originator_id, originator_version, topic, state) "
            "VALUES (%s, 1, %s, %s) RETURNING notification_id",
            (uuid.uuid4(), topic, b"{not json"),
        ).fetchone()
        assert row is not None
        return int(row[0])


def test_a_projection_stops_at_an_event_it_cannot_apply_and_never_skips_it(
    story: SupervisionStory, projections: Projections, settings: Settings
) -> None:
    ids = _queue_story(story)
    rogue = _insert_rogue_event(settings, "hub.domain.case:Case.Accepted")
    story.run("county", "start_handling", cst(2026, 3, 9, 15), case_id=ids["A"])
    runner = projections.runner("cases")
    with pytest.raises(ProjectionFailed) as caught:
        runner.catch_up()
    assert caught.value.notification_id == rogue and caught.value.projection == "cases"
    assert f"notification {rogue}" in str(caught.value)
    # Everything before it was applied, nothing after it: it stays stopped at the same event.
    assert runner.position < rogue
    row = queries.case_by_id(projections.store, ids["A"])
    assert row is not None and row.state == "ACCEPTED"
    with pytest.raises(ProjectionFailed) as again:
        runner.step()
    assert again.value.notification_id == rogue and runner.position < rogue


def test_a_rebuild_meanwhile_makes_the_live_follower_go_on_from_the_rebuilt_position(
    story: SupervisionStory, projections: Projections
) -> None:
    """A rebuild (another process) and the node's follower never apply an event twice."""
    ids = _queue_story(story)
    live = projections.runner("statistics")
    live.step()  # the live follower is part-way
    story.run("county", "start_handling", cst(2026, 3, 9, 15), case_id=ids["A"])
    other = open_projections(story.app, node_region="43", names=("statistics",))
    try:
        other.runner("statistics").rebuild()  # `tongban projections rebuild`, elsewhere
    finally:
        other.close()
    rebuilt = _tables(projections)
    assert live.step() == 0  # its position moved under it: it reads again from there
    live.catch_up()
    assert _tables(projections) == rebuilt


def test_the_followers_are_woken_by_the_store_on_postgresql(
    story: SupervisionStory, projections: Projections, settings: Settings
) -> None:
    import threading

    from hub.application.log_watch import LogWatch

    runner = projections.runner("cases")
    watch = LogWatch(runner.recorder)
    try:
        # PostgreSQL notifies (LISTEN/NOTIFY through the recorder's subscribe); SQLite cannot.
        assert watch.add(threading.Event()) == (settings.database_url is not None)
    finally:
        watch.stop()
    stop = threading.Event()
    advanced = threading.Event()
    runner.on_advance = lambda _position: advanced.set()
    follower = threading.Thread(target=runner.run, args=(stop,))
    follower.start()
    try:
        case = story.submit("county", HOUSEHOLD_MOVE, cst(2026, 3, 9, 10))
        while True:
            advanced.clear()  # before looking: a batch committed from now on is seen by wait()
            if queries.case_by_id(projections.store, case) is not None:
                break
            assert advanced.wait(30)  # the batch that projects it (or one before it)
    finally:
        stop.set()
        follower.join(10)
    assert not follower.is_alive()


@pytest.fixture
def province_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "node", rectification_days=10)


def test_each_province_sets_its_rectification_deadline(province_settings: Settings) -> None:
    story = SupervisionStory.start(province_settings)
    try:
        story.at(cst(2026, 3, 10, 9))
        case = story.submit("town", ELDER_CARD, cst(2026, 3, 10, 9))
        for action, fields in [
            ("accept", {}), ("start_handling", {}),
            ("decide", {"approved": False, "reason": "不符合条件"}), ("conclude", {}),
            ("deliver", {"method": "DELIVERY_METHOD_WINDOW", "note": ""}),
        ]:  # fmt: skip
            story.run("town", action, cst(2026, 3, 10, 10), case_id=case, **fields)
        story.run("town", "rate", cst(2026, 3, 10, 15), case_id=case,
                  rating="RATING_VERY_DISSATISFIED", comment="态度差")  # fmt: skip
        aggregate = story.app.get_case(UUID(case))
        assert aggregate.rectification_deadline_days == 10
        projections = open_projections(story.app, node_region="43")
        projections.create_tables()
        projections.catch_up()
        (rating,) = queries.ratings(projections.store, region="43").entries
        assert rating.rectification_due_at == cst(2026, 3, 25)  # 10 working days from the 11th
        projections.close()
    finally:
        story.close()


def test_a_rebuild_may_stay_idle_in_its_transaction(
    projections: Projections, settings: Settings
) -> None:
    """The library's PostgreSQL connections end a transaction idle for a few seconds; a rebuild
    keeps its rows back between writes, so its transaction lifts that limit for itself."""

    def timeout(cursor: Any) -> Any:
        projections.store.long_transaction(cursor)
        if not projections.store.dialect.postgres:
            return None
        cursor.execute("SHOW idle_in_transaction_session_timeout")
        return cursor.fetchone()[0]

    assert projections.store.write(timeout) == ("0" if settings.database_url else None)

    def after(cursor: Any) -> Any:
        cursor.execute("SHOW idle_in_transaction_session_timeout")
        return cursor.fetchone()[0]

    if settings.database_url:  # only that transaction: the next one has the library's limit
        assert projections.store.read(after) != "0"


def test_deadlines_beyond_the_calendar_are_noted_and_computed_after_an_update(
    story: SupervisionStory, projections: Projections, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import date

    from hub.domain import workdays

    first, last = workdays.known_years()
    story.at(cst(last, 12, 21, 10))
    case = story.submit("county", FOOD_LICENCE, cst(last, 12, 21, 10))  # 10 days: into next year
    projections.catch_up()
    row = queries.case_by_id(projections.store, case)
    assert row is not None and row.due_at is None
    assert (
        f"knows {first}-{last} only" in row.calendar_note
        and "chinese-calendar" in row.calendar_note
    )
    assert row.yellow_at is None  # 9 days from December 22nd also reach the new year
    # A calendar that knows the next year (as the package's next release will): on restart the
    # projection computes the noted deadlines again.
    known = workdays._is_workday

    def next_year(day: date) -> bool:
        return day.weekday() < 5 if day.year == last + 1 else known(day)

    monkeypatch.setattr(workdays, "known_years", lambda: (first, last + 1))
    monkeypatch.setattr(workdays, "_is_workday", next_year)
    assert projections.runner("cases").refresh() == 1
    row = queries.case_by_id(projections.store, case)
    assert row is not None and row.calendar_note == "" and row.due_at is not None
    assert row.time("due_at") is not None and row.time("due_at").year == last + 1  # type: ignore[union-attr]

"""The ``statistics`` projection: daily counters of the figures the seed regions report.

One table, ``projection_stats_daily``: a row per (business day, intake hall, intake window,
intake region, item, competent region), with one counter per figure. Each event adds to the row
of the day it happened (China Standard Time), for the case's intake hall, window, region, item
and competent region (which places a case taken in in another province for this node's province
— 跨省通办 in — in the region that handles it):

=========================  ====================================================================
counter                    counted when
=========================  ====================================================================
received                   收件 (办件量)
immediate ... joint        收件, by the item's kind (即办件, 承诺件, 上报件, 联办件)
online, agent, home_visit  收件, by channel (网上办, 帮代办, 上门办)
nearby                     收件 at a hall below the level that decides (就近办)
cross_province_out         收件 for a region of another province
cross_province_in          收件 elsewhere for a region of this node's province
concluded, on_time         办结; on time when no later than the promised deadline
concluded_at_village       办结 by a village hall
delivered                  送达
rated, satisfied, bad      评价; satisfied: 基本满意 or better; bad: 差评
rectified                  整改 completed
=========================  ====================================================================

Rates are computed when asked (:mod:`hub.projections.queries`): 按期办结率 = on_time/concluded,
满意率 = satisfied/rated, 主动评价率 = rated/delivered, 网上办件率 = online/received. Months are
sums of days.
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from typing import Any, ClassVar

from eventsourcing.persistence import Tracking

from hub.domain.case import Case
from hub.domain.regions import Level, RegionCode
from hub.domain.supervision import case_clock
from hub.domain.values import CaseKind, IntakeChannel
from hub.domain.workdays import china_day
from hub.errors import CalendarUnknown
from hub.projections.cases import _event_topics, intake_channel
from hub.projections.runner import BUSY_SETTLE, CaseHistories, ViewProjection
from hub.projections.store import ProjectionStore

#: The counters of a day's row, in column order.
COUNTERS = (
    "received",
    "immediate",
    "promised",
    "escalated",
    "joint",
    "online",
    "agent",
    "home_visit",
    "nearby",
    "cross_province_in",
    "cross_province_out",
    "concluded",
    "on_time",
    "concluded_at_village",
    "delivered",
    "rated",
    "satisfied",
    "bad",
    "rectified",
)
KEYS = ("day", "intake_hall", "intake_window", "intake_region", "item_code", "competent_region")

#: How many day rows a rebuild keeps in memory before it writes them.
_KEEP_BACK = 50_000

_KIND_COUNTER = {
    CaseKind.IMMEDIATE: "immediate",
    CaseKind.PROMISED: "promised",
    CaseKind.ESCALATED: "escalated",
    CaseKind.JOINT: "joint",
}
_CHANNEL_COUNTER = {
    IntakeChannel.ONLINE: "online",
    IntakeChannel.AGENT: "agent",
    IntakeChannel.HOME_VISIT: "home_visit",
}


class StatisticsProjection(ViewProjection):
    """Daily counters per hall, window, region and item (see the module docstring)."""

    name = "statistics"
    topics: tuple[str, ...] = _event_topics(Case)
    tables: ClassVar[tuple[str, ...]] = ("projection_stats_daily",)
    #: Read by supervisors and operators, never by a step: a busy node's steps in few batches.
    settle: ClassVar[float] = BUSY_SETTLE

    def __init__(self, view: ProjectionStore, histories: CaseHistories, node_region: str) -> None:
        super().__init__(view)
        self.histories = histories
        #: The province this node keeps the books of (for cross-province figures).
        self.province = node_region[:2]
        self._counts: dict[tuple[str, ...], Counter[str]] = {}

    def create_statements(self) -> list[str]:
        counters = ", ".join(f"{name} INTEGER NOT NULL" for name in COUNTERS)
        keys = ", ".join(f"{name} TEXT NOT NULL" for name in KEYS)
        return [
            f"CREATE TABLE IF NOT EXISTS projection_stats_daily ({keys}, level TEXT NOT NULL, "
            f"{counters}, PRIMARY KEY ({', '.join(KEYS)}))",
            "CREATE INDEX IF NOT EXISTS projection_stats_region ON projection_stats_daily "
            "(intake_region, day)",
        ]

    def outdated(self, cursor: Any) -> bool:
        # Before the competent region was a key, a case taken in in another province could not
        # be found under the region of this node that handles it.
        cursor.execute("SELECT * FROM projection_stats_daily LIMIT 0")
        return "competent_region" not in {column[0] for column in cursor.description}

    def start_batch(self, cursor: Any) -> None:
        super().start_batch(cursor)
        if not self.rebuilding:
            self._counts = {}

    def finish_batch(self) -> None:
        # A rebuild keeps the counters back (up to a bound): every batch would otherwise update
        # the same few day rows again, and one transaction keeps every version of them.
        if not self.rebuilding or len(self._counts) > _KEEP_BACK:
            self._write_counts()
        super().finish_batch()

    def finish_rebuild(self, cursor: Any) -> None:
        self._cursor = cursor
        self._write_counts()
        self._cursor = None

    def _write_counts(self) -> None:
        if self._counts:
            columns = (*KEYS, "level", *COUNTERS)
            marks = ", ".join(["%s"] * len(columns))
            updates = ", ".join(
                f"{name} = projection_stats_daily.{name} + excluded.{name}" for name in COUNTERS
            )
            rows = [
                (*key, RegionCode(key[3]).level.name, *(counts[name] for name in COUNTERS))
                for key, counts in self._counts.items()
            ]
            self.cursor.executemany(
                self.sql(
                    f"INSERT INTO projection_stats_daily ({', '.join(columns)}) "
                    f"VALUES ({marks}) ON CONFLICT ({', '.join(KEYS)}) DO UPDATE SET {updates}"
                ),
                rows,
            )
        self._counts = {}

    def forget(self) -> None:
        super().forget()
        self._counts = {}
        self.histories.forget()

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        if not isinstance(domain_event, Case.Submitted | Case.Event):
            return
        case = self.histories.apply(domain_event)
        counts: Counter[str] = Counter()
        if isinstance(domain_event, Case.Submitted):
            self._received(case, counts)
        elif isinstance(domain_event, Case.Concluded):
            counts["concluded"] += 1
            clock = case_clock(case)
            assert clock is not None
            try:
                due = clock.crossing(Fraction(case.promised_days))
            except CalendarUnknown:
                due = None  # cannot be late by a deadline the calendar cannot place
            stopped = case.clock_stopped_at
            counts["on_time"] += int(due is None or stopped is None or stopped <= due)
            if RegionCode(domain_event.actor.region).level is Level.VILLAGE:
                counts["concluded_at_village"] += 1
        elif isinstance(domain_event, Case.Delivered):
            counts["delivered"] += 1
        elif isinstance(domain_event, Case.Rated):
            counts["rated"] += 1
            counts["bad" if domain_event.rating.is_bad else "satisfied"] += 1
        elif isinstance(domain_event, Case.RectificationCompleted):
            counts["rectified"] += 1
        if counts:  # other events (a warning, a handoff ...) count nothing
            self._day(case, domain_event).update(counts)

    def _day(self, case: Case, event: Any) -> Counter[str]:
        key = (
            china_day(event.timestamp).isoformat(),
            case.intake_hall,
            case.intake_window,
            case.intake_region,
            case.item_code,
            case.competent_region,
        )
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = Counter()
        return counts

    def _received(self, case: Case, counts: Counter[str]) -> None:
        counts["received"] += 1
        counts[_KIND_COUNTER[case.kind]] += 1
        # A copy another node forwarded counts as PEER_NODE here (no 网办/帮代办/上门办 of this
        # node's): the node that took it in counts its channel.
        channel = _CHANNEL_COUNTER.get(intake_channel(case))
        if channel is not None:
            counts[channel] += 1
        intake, competent = RegionCode(case.intake_region), RegionCode(case.competent_region)
        if intake.level > competent.level:
            counts["nearby"] += 1
        intake_here = intake.value.startswith(self.province)
        competent_here = competent.value.startswith(self.province)
        if intake_here and not competent_here:
            counts["cross_province_out"] += 1
        elif competent_here and not intake_here:
            counts["cross_province_in"] += 1


__all__ = ["COUNTERS", "KEYS", "StatisticsProjection"]

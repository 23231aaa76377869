"""The projections for people: headed tables (and JSON documents) of queues, cases, warnings,
ratings, statistics, the window ranking and the projections' own state.

Each function returns a :class:`Report`: column headers, rows of cells (times in China Standard
Time, ``2026-03-14 00:00``), and the same entries as JSON-ready documents (times in ISO 8601
with their offset). The command line prints it as a table, JSON or CSV (:mod:`hub.output`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hub.domain.values import IntakeChannel
from hub.domain.workdays import CHINA_TIME
from hub.projections.queries import (
    CHANNEL_LABELS,
    CaseRow,
    Figures,
    RatingRow,
    StatisticsRow,
    WarningRow,
    WindowRank,
)
from hub.projections.store import from_iso

#: A table cell (as hub.output prints them).
Cell = str | int | float | None


@dataclass
class Report:
    """What one listing shows."""

    headers: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    #: A line under the table (counts, the projection's position).
    footer: str = ""


def when(moment: datetime | str | None) -> str:
    """A time as people read it here: ``2026-03-14 00:00`` (China Standard Time)."""
    if isinstance(moment, str):
        moment = from_iso(moment)
    if moment is None:
        return ""
    return moment.astimezone(CHINA_TIME).strftime("%Y-%m-%d %H:%M")


def _iso(moment: datetime | str | None) -> str | None:
    if isinstance(moment, str):
        moment = from_iso(moment)
    return None if moment is None else moment.astimezone(CHINA_TIME).isoformat()


def _used(row: CaseRow, as_of: datetime) -> float | None:
    used = row.working_days_used(as_of)
    return None if math.isnan(used) else round(used, 2)


def _deadline(row: CaseRow) -> str:
    if row.due_at:
        return when(row.due_at)
    if row.calendar_note:
        return "calendar unknown"
    if row.paused:
        return "paused"
    return ""


def cases_report(rows: Sequence[CaseRow], as_of: datetime, *, hall_id: str = "") -> Report:
    """Cases (a queue when ``hall_id`` is given), most urgent first."""
    report = Report(
        ["case id", "state", "item", "window", "received", "due", "days used", "warnings", "note"]
    )
    for row in rows:
        awaiting = hall_id and row.pending_receiver == hall_id
        flags = []
        if awaiting:
            flags.append("awaiting acknowledgement")
        if row.overdue(as_of):
            flags.append("OVERDUE")
        elif row.near_deadline(as_of):
            flags.append("near deadline")
        if row.paused:
            flags.append("paused")
        used = _used(row, as_of)
        report.rows.append(
            [
                row.case_id,
                row.state,
                row.item_name,
                "" if awaiting else row.holder_window,
                when(row.received_at),
                _deadline(row),
                f"{used:g}/{row.promised_days}" if used is not None else "",
                ",".join(kind.name for kind in row.warnings),
                "; ".join(flags),
            ]
        )
        report.documents.append(
            {
                "case_id": row.case_id,
                "state": row.state,
                "item_code": row.item_code,
                "item_name": row.item_name,
                "kind": row.kind,
                "mode": row.mode,
                "channel": row.channel,
                "origin_channel": row.origin_channel,
                "intake_region": row.intake_region,
                "competent_region": row.competent_region,
                "intake_hall": row.intake_hall,
                "intake_window": row.intake_window,
                "holder": row.holder,
                "window": row.holder_window,
                "pending_receiver": row.pending_receiver,
                "received_at": _iso(row.received_at),
                "due_at": _iso(row.due_at),
                "yellow_at": _iso(row.yellow_at),
                "statutory_due_at": _iso(row.statutory_due_at),
                "working_days_used": used,
                "promised_days": row.promised_days,
                "overdue": row.overdue(as_of),
                "near_deadline": row.near_deadline(as_of),
                "paused": row.paused,
                "warnings": [kind.name for kind in row.warnings],
                "calendar_note": row.calendar_note,
                "concluded_at": _iso(row.concluded_at),
                "rating": row.rating,
            }
        )
    return report


def warnings_report(rows: Sequence[WarningRow]) -> Report:
    """Recorded 电子监察 warnings, newest first."""
    report = Report(["case id", "warning", "due", "recorded", "hall", "window", "item"])
    for w in rows:
        report.rows.append(
            [w.case_id, w.kind.name, when(w.due_at), when(w.recorded_at), w.hall_id, w.window,
             w.item_name]
        )  # fmt: skip
        report.documents.append(
            {
                "case_id": w.case_id,
                "kind": w.kind.name,
                "due_at": _iso(w.due_at),
                "recorded_at": _iso(w.recorded_at),
                "hall_id": w.hall_id,
                "window": w.window,
                "item_code": w.item_code,
                "item_name": w.item_name,
                "region": w.region,
            }
        )
    return report


def ratings_report(rows: Sequence[RatingRow], as_of: datetime) -> Report:
    """Ratings and their rectifications, newest first."""
    report = Report(
        ["case id", "rating", "channel", "rated", "hall", "window", "rectify by", "rectified",
         "follow-up", "note"]
    )  # fmt: skip
    for r in rows:
        note = "OVERDUE" if r.overdue(as_of) else ""
        report.rows.append(
            [r.case_id, r.rating, r.channel, when(r.rated_at), r.hall_id, r.window,
             when(r.rectification_due_at), when(r.rectified_at), r.follow_up, note]
        )  # fmt: skip
        report.documents.append(
            {
                "case_id": r.case_id,
                "rating": r.rating,
                "channel": r.channel,
                "rated_at": _iso(r.rated_at),
                "comment": r.comment,
                "hall_id": r.hall_id,
                "window": r.window,
                "item_code": r.item_code,
                "item_name": r.item_name,
                "bad": r.bad,
                "rectification": r.rectification,
                "rectification_due_at": _iso(r.rectification_due_at),
                "rectified_at": _iso(r.rectified_at),
                "report": r.report,
                "follow_up": r.follow_up,
                "overdue": r.overdue(as_of),
            }
        )
    return report


#: The figures shown in the statistics table (the JSON has them all).
_TABLE_FIGURES = (
    ("办件量", "received"),
    ("即办", "immediate"),
    ("承诺", "promised"),
    ("上报", "escalated"),
    ("联办", "joint"),
    ("办结", "concluded"),
    ("网办", "online"),
    ("就近", "nearby"),
    ("帮代办", "agent"),
    ("上门", "home_visit"),
    ("村办结", "concluded_at_village"),
    ("跨省入", "cross_province_in"),
    ("跨省出", "cross_province_out"),
    ("评价", "rated"),
    ("差评", "bad"),
)


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def statistics_report(rows: Sequence[StatisticsRow], total: Figures, by: str) -> Report:
    """The figures of each group and their total."""
    report = Report(
        [by, "name", *(label for label, _ in _TABLE_FIGURES), "按期办结率", "满意率",
         "主动评价率", "网上办件率"]
    )  # fmt: skip
    for key, label, figures in [*((r.key, r.label, r.figures) for r in rows), ("total", "", total)]:
        rates = [
            _percent(figures.rate(part, whole))
            for part, whole in (("on_time", "concluded"), ("satisfied", "rated"),
                                ("rated", "delivered"), ("online", "received"))
        ]  # fmt: skip
        report.rows.append([key, label, *(figures[name] for _, name in _TABLE_FIGURES), *rates])
        report.documents.append({"key": key, "label": label, **figures.as_dict()})
    return report


def channels_report(counts: Mapping[IntakeChannel, int]) -> Report:
    """Cases taken in per intake channel (收件渠道)."""
    report = Report(["channel", "name", "received"])
    for channel, count in counts.items():
        label = CHANNEL_LABELS.get(channel, channel.name)
        report.rows.append([channel.name, label, count])
        report.documents.append({"channel": channel.name, "label": label, "received": count})
    report.footer = f"{sum(counts.values())} cases taken in"
    return report


def ranking_report(ranked: Sequence[WindowRank], month: str) -> Report:
    """The month's window ranking (红旗窗口)."""
    report = Report(["rank", "hall", "window", "办件量", "按期办结率", "满意率", "score"])
    for w in ranked:
        report.rows.append(
            [w.rank, w.hall_name, w.window, w.received, _percent(w.on_time_rate),
             _percent(w.satisfaction_rate), w.score]
        )  # fmt: skip
        report.documents.append({"month": month, **w.__dict__})
    report.footer = f"windows ranked for {month} by volume (40 %), on-time rate and satisfaction"
    return report


__all__ = [
    "Report",
    "cases_report",
    "channels_report",
    "ranking_report",
    "ratings_report",
    "statistics_report",
    "warnings_report",
    "when",
]

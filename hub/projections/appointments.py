"""The ``appointments`` projection (预约办): each hall's appointments by day, and their counts.

One table, ``projection_appointments``: a row per appointment — its hall and region, the day of
its slot (China Standard Time), item, kind (window or home visit), window, slot, state, who asked
(channel, agent), the case taken in for it, and when it was booked and closed. No personal data:
the applicant stays sealed in the log, and only the hall itself sees it in clear (opened by the
application when it answers ``ListAppointments``).

It serves the hall's list of the day (``CaseExchange.ListAppointments``, ``tongban
appointments``), the counts per day and hall — booked, received, cancelled and no-shows (爽约:
expired without a case) — and the node's supervisor, which records the expiry of each
appointment whose slot is over (:func:`due_expiries`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar

from eventsourcing.persistence import Tracking

from hub.domain.appointments import Appointment, AppointmentState
from hub.domain.workdays import china_day
from hub.projections.cases import _event_topics
from hub.projections.runner import ViewProjection
from hub.projections.store import Cursor, ProjectionStore, from_iso, iso

COLUMNS = (
    "appointment_id",
    "hall_id",
    "region",
    "day",
    "item_code",
    "item_name",
    "kind",
    "window_name",
    "starts_at",
    "ends_at",
    "state",
    "channel",
    "agent",
    "case_id",
    "booked_at",
    "closed_at",
    "position",
)

#: The states an appointment ends in, and the counter of each.
COUNTERS = {
    AppointmentState.RECEIVED.name: "received",
    AppointmentState.CANCELLED.name: "cancelled",
    AppointmentState.EXPIRED.name: "no_show",
}


@dataclass(frozen=True)
class AppointmentRow:
    """One appointment as the view holds it (no personal data)."""

    appointment_id: str
    hall_id: str
    region: str
    day: str
    item_code: str
    item_name: str
    kind: str
    window: str
    starts_at: datetime
    ends_at: datetime
    state: str
    channel: str
    agent: str
    case_id: str
    booked_at: datetime | None
    closed_at: datetime | None


@dataclass(frozen=True)
class AppointmentCounts:
    """How a hall's appointments of one day ended (爽约 ``no_show``: expired, no case)."""

    day: str
    hall_id: str
    booked: int
    received: int
    cancelled: int
    no_show: int

    @property
    def open(self) -> int:
        """Still booked (the slot is ahead, or its expiry not recorded yet)."""
        return self.booked - self.received - self.cancelled - self.no_show


class AppointmentsProjection(ViewProjection):
    """Appointments by hall and day (see the module docstring)."""

    name = "appointments"
    topics: tuple[str, ...] = _event_topics(Appointment)
    tables: ClassVar[tuple[str, ...]] = ("projection_appointments",)

    def create_statements(self) -> list[str]:
        big = "BIGINT" if self.dialect.postgres else "INTEGER"
        text = "TEXT NOT NULL"
        return [
            "CREATE TABLE IF NOT EXISTS projection_appointments ("
            f"appointment_id TEXT PRIMARY KEY, hall_id {text}, region {text}, day {text}, "
            f"item_code {text}, item_name {text}, kind {text}, window_name {text}, "
            f"starts_at {text}, ends_at {text}, state {text}, channel {text}, agent {text}, "
            f"case_id {text}, booked_at {text}, closed_at TEXT, position {big} NOT NULL)",
            "CREATE INDEX IF NOT EXISTS projection_appointments_day ON projection_appointments "
            "(hall_id, day, starts_at)",
            "CREATE INDEX IF NOT EXISTS projection_appointments_due ON projection_appointments "
            "(state, ends_at)",
        ]

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        position = tracking.notification_id
        if isinstance(domain_event, Appointment.Booked):
            event = domain_event
            marks = ", ".join(["%s"] * len(COLUMNS))
            self.cursor.execute(
                self.sql(
                    f"INSERT INTO projection_appointments ({', '.join(COLUMNS)}) "
                    f"VALUES ({marks}) ON CONFLICT (appointment_id) DO NOTHING"
                ),
                (
                    str(event.originator_id),
                    event.actor.hall_id,
                    event.actor.region,
                    china_day(event.starts_at).isoformat(),
                    event.item_code,
                    event.item_name,
                    event.kind.name,
                    event.window,
                    iso(event.starts_at),
                    iso(event.ends_at),
                    AppointmentState.BOOKED.name,
                    event.channel.name,
                    event.agent,
                    "",
                    iso(event.timestamp),
                    None,
                    position,
                ),
            )
            return
        if isinstance(domain_event, Appointment.Received):
            state, case_id = AppointmentState.RECEIVED, str(domain_event.case_id)
        elif isinstance(domain_event, Appointment.Cancelled):
            state, case_id = AppointmentState.CANCELLED, ""
        elif isinstance(domain_event, Appointment.Expired):
            state, case_id = AppointmentState.EXPIRED, ""
        else:
            return
        self.cursor.execute(
            self.sql(
                "UPDATE projection_appointments SET state = %s, case_id = %s, closed_at = %s, "
                "position = %s WHERE appointment_id = %s"
            ),
            (state.name, case_id, iso(domain_event.timestamp), position,
             str(domain_event.originator_id)),
        )  # fmt: skip


def _row(values: Any) -> AppointmentRow:
    (appointment_id, hall_id, region, day, item_code, item_name, kind, window, starts_at,
     ends_at, state, channel, agent, case_id, booked_at, closed_at) = values  # fmt: skip
    starts, ends = from_iso(starts_at), from_iso(ends_at)
    assert starts is not None
    assert ends is not None
    return AppointmentRow(
        appointment_id, hall_id, region, day, item_code, item_name, kind, window, starts, ends,
        state, channel, agent, case_id, from_iso(booked_at), from_iso(closed_at),
    )  # fmt: skip


def appointments_of_day(
    store: ProjectionStore, hall_id: str, day: date, state: str = ""
) -> list[AppointmentRow]:
    """``hall_id``'s appointments whose slot is on ``day`` (China time), by start and window."""
    columns = ", ".join(COLUMNS[:-1])
    query = f"SELECT {columns} FROM projection_appointments WHERE hall_id = %s AND day = %s"
    params: list[Any] = [hall_id, day.isoformat()]
    if state:
        query += " AND state = %s"
        params.append(state)
    query += " ORDER BY starts_at, window_name, appointment_id"

    def read(cursor: Cursor) -> list[AppointmentRow]:
        cursor.execute(store.dialect.sql(query), tuple(params))
        return [_row(values) for values in cursor.fetchall()]

    return store.read(read)


def appointment_counts(
    store: ProjectionStore, *, first: date, last: date, hall_id: str = "", region: str = ""
) -> list[AppointmentCounts]:
    """Per day and hall from ``first`` to ``last``: booked, received, cancelled, no-shows
    (for one hall, or the halls of ``region`` and below)."""
    query = (
        "SELECT day, hall_id, COUNT(*), "
        + ", ".join(f"SUM(CASE WHEN state = '{state}' THEN 1 ELSE 0 END)" for state in COUNTERS)
        + " FROM projection_appointments WHERE day >= %s AND day <= %s"
    )
    params: list[Any] = [first.isoformat(), last.isoformat()]
    if hall_id:
        query += " AND hall_id = %s"
        params.append(hall_id)
    if region:
        query += " AND region LIKE %s"
        params.append(region + "%")  # a short code (RegionCode.short): its regions and below
    query += " GROUP BY day, hall_id ORDER BY day, hall_id"

    def read(cursor: Cursor) -> list[AppointmentCounts]:
        cursor.execute(store.dialect.sql(query), tuple(params))
        return [
            AppointmentCounts(day, hall, int(booked), int(received), int(cancelled), int(no_show))
            for day, hall, booked, received, cancelled, no_show in cursor.fetchall()
        ]

    return store.read(read)


def due_expiries(store: ProjectionStore, now: datetime, limit: int = 500) -> list[str]:
    """Booked appointments whose slot ended by ``now``: their expiry is due."""

    def read(cursor: Cursor) -> list[str]:
        cursor.execute(
            store.dialect.sql(
                "SELECT appointment_id FROM projection_appointments WHERE state = %s "
                f"AND ends_at <= %s ORDER BY ends_at LIMIT {int(limit)}"
            ),
            (AppointmentState.BOOKED.name, iso(now)),
        )
        return [row[0] for row in cursor.fetchall()]

    return store.read(read)


def next_expiry(store: ProjectionStore, now: datetime) -> datetime | None:
    """When the next booked appointment's slot ends after ``now`` (None: none)."""

    def read(cursor: Cursor) -> Any:
        cursor.execute(
            store.dialect.sql(
                "SELECT MIN(ends_at) FROM projection_appointments WHERE state = %s AND ends_at > %s"
            ),
            (AppointmentState.BOOKED.name, iso(now)),
        )
        row = cursor.fetchone()
        return row[0] if row else None

    return from_iso(store.read(read))


__all__ = [
    "AppointmentCounts",
    "AppointmentRow",
    "AppointmentsProjection",
    "appointment_counts",
    "appointments_of_day",
    "appointments_report",
    "counts_report",
    "due_expiries",
    "next_expiry",
]


# ---------------------------------------------------------------------------- for people


_STATE_NAMES = {"BOOKED": "已预约", "RECEIVED": "已受理", "CANCELLED": "已取消", "EXPIRED": "爽约"}
_KIND_NAMES = {"WINDOW": "窗口", "HOME_VISIT": "上门办"}
_CHANNEL_NAMES = {
    "ONLINE": "网上预约",
    "PHONE": "电话预约",
    "AGENT": "代办员",
    "WINDOW": "现场预约",
}


def appointments_report(rows: list[AppointmentRow]) -> Any:
    """A hall's appointments of a day, by start time (``tongban appointments``)."""
    from hub.projections.report import Report, when

    report = Report(
        ["slot", "window", "item", "state", "booked via", "agent", "case", "appointment id"]
    )
    for row in rows:
        slot = f"{when(row.starts_at)}-{when(row.ends_at)[11:]}"
        report.rows.append([
            slot,
            row.window or _KIND_NAMES[row.kind],
            f"{row.item_code} {row.item_name}",
            f"{row.state} {_STATE_NAMES[row.state]}",
            _CHANNEL_NAMES[row.channel],
            row.agent,
            row.case_id,
            row.appointment_id,
        ])  # fmt: skip
        report.documents.append({
            "appointment_id": row.appointment_id, "hall_id": row.hall_id, "day": row.day,
            "item_code": row.item_code, "item_name": row.item_name, "kind": row.kind,
            "window": row.window, "starts_at": row.starts_at.isoformat(),
            "ends_at": row.ends_at.isoformat(), "state": row.state, "channel": row.channel,
            "agent": row.agent, "case_id": row.case_id,
        })  # fmt: skip
    states = [row.state for row in rows]
    report.footer = f"{len(rows)} appointments, " + ", ".join(
        f"{states.count(state)} {_STATE_NAMES[state]}" for state in _STATE_NAMES
    )
    return report


def counts_report(counts: list[AppointmentCounts]) -> Any:
    """Booked, received, cancelled, no-shows (爽约) and still open, per day and hall."""
    from hub.projections.report import Report

    report = Report(["day", "hall", "预约", "已受理", "已取消", "爽约", "待到", "爽约率"])
    total = AppointmentCounts(
        "total", "", *(sum(getattr(c, name) for c in counts)
                       for name in ("booked", "received", "cancelled", "no_show")),
    )  # fmt: skip
    for entry in [*counts, total]:
        closed = entry.received + entry.no_show
        rate = f"{100 * entry.no_show / closed:.1f}%" if closed else "—"
        report.rows.append([entry.day, entry.hall_id, entry.booked, entry.received,
                            entry.cancelled, entry.no_show, entry.open, rate])  # fmt: skip
        report.documents.append({
            "day": entry.day, "hall_id": entry.hall_id, "booked": entry.booked,
            "received": entry.received, "cancelled": entry.cancelled,
            "no_show": entry.no_show, "open": entry.open,
        })  # fmt: skip
    report.footer = "爽约率 = no-shows / (received + no-shows)"
    return report

"""The ``cases`` projection: case state, hall and window queues, supervision clocks, warnings,
ratings and rectifications, and the halls with their windows (AB岗).

Tables (PostgreSQL: beside the event store; SQLite: in ``projections.sqlite3``):

``projection_cases``
    one row per case: its state, item, kind, mode and intake channel (``PEER_NODE`` for a copy
    another node forwarded, :func:`intake_channel`; ``origin_channel`` is the channel its hall
    signed, at whichever node); intake and competent
    region; intake hall and window; holder, its window and the hall that must acknowledge a
    handoff; the business time it was received and of its last step; its clock (pauses, stop)
    and the instants of its marks (90 %, promised and statutory limit) in working days; the
    warnings recorded; its rating. ``position`` is the notification that last changed the row
    (queue watchers read changes after a position).
``projection_warnings``
    one row per 电子监察 warning recorded in the log.
``projection_ratings``
    one row per rating, with its rectification (deadline, completion, follow-up).
``projection_halls`` / ``projection_windows``
    the halls (name, region, level, windows) and who serves each window (AB岗).

Every row is derived from the :class:`~hub.domain.case.Case` aggregate as it stands after the
event (:class:`~hub.projections.runner.CaseHistories`), so the projection never re-implements
the lifecycle. Times are business times (:mod:`hub.domain.case`).
"""

from __future__ import annotations

import json
from datetime import datetime
from fractions import Fraction
from typing import Any, ClassVar

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Tracking
from eventsourcing.utils import get_topic

from hub.domain.case import Case
from hub.domain.federation import split_name
from hub.domain.hall import Hall, hall_aggregate_id
from hub.domain.regions import RegionCode
from hub.domain.supervision import case_clock, clock_of, deadlines, rectification_clock
from hub.domain.values import CaseState, IntakeChannel, WarningKind
from hub.errors import CalendarUnknown
from hub.projections.runner import CaseHistories, ViewProjection
from hub.projections.store import Cursor, ProjectionStore, from_iso, iso

S = CaseState

#: States in which a case has left every queue for good.
FINAL_STATES = frozenset({S.REJECTED_AT_INTAKE, S.ARCHIVED, S.WITHDRAWN})
#: States a case is in once it was concluded (办结).
CONCLUDED_STATES = frozenset(
    {S.CONCLUDED, S.CERTIFICATE_ISSUED, S.IN_POST, S.IN_LOCKER, S.DELIVERED, S.RATED}
    | {S.RECTIFYING, S.ARCHIVED}
)

CASE_COLUMNS = (
    "case_id",
    "version",
    "position",
    "state",
    "item_code",
    "item_name",
    "kind",
    "mode",
    "channel",
    "intake_region",
    "competent_region",
    "intake_hall",
    "intake_window",
    "holder",
    "holder_window",
    "pending_receiver",
    "received_at",
    "last_step_at",
    "promised_days",
    "statutory_days",
    "pauses",
    "paused_since",
    "stopped_at",
    "yellow_at",
    "due_at",
    "statutory_due_at",
    "calendar_note",
    "concluded_at",
    "approved",
    "on_time",
    "open",
    "warned_yellow",
    "warned_red",
    "rating",
    "origin_channel",
)


def _create(big: str) -> list[str]:
    text = "TEXT NOT NULL"
    return [
        "CREATE TABLE IF NOT EXISTS projection_cases ("
        f"case_id TEXT PRIMARY KEY, version INTEGER NOT NULL, position {big} NOT NULL, "
        f"state {text}, item_code {text}, item_name {text}, kind {text}, mode {text}, "
        f"channel {text}, intake_region {text}, competent_region {text}, intake_hall {text}, "
        f"intake_window {text}, holder {text}, holder_window {text}, pending_receiver {text}, "
        f"received_at {text}, last_step_at {text}, promised_days INTEGER NOT NULL, "
        f"statutory_days INTEGER NOT NULL, pauses {text}, paused_since TEXT, stopped_at TEXT, "
        "yellow_at TEXT, due_at TEXT, statutory_due_at TEXT, calendar_note TEXT NOT NULL, "
        "concluded_at TEXT, approved INTEGER, on_time INTEGER, open INTEGER NOT NULL, "
        "warned_yellow INTEGER NOT NULL, warned_red INTEGER NOT NULL, rating TEXT, "
        f"origin_channel {text})",
        "CREATE INDEX IF NOT EXISTS projection_cases_holder ON projection_cases (holder)",
        "CREATE INDEX IF NOT EXISTS projection_cases_pending ON projection_cases "
        "(pending_receiver)",
        "CREATE INDEX IF NOT EXISTS projection_cases_region ON projection_cases (intake_region)",
        "CREATE INDEX IF NOT EXISTS projection_cases_position ON projection_cases (position)",
        "CREATE INDEX IF NOT EXISTS projection_cases_due ON projection_cases (warned_red, due_at)",
        "CREATE INDEX IF NOT EXISTS projection_cases_yellow ON projection_cases "
        "(warned_yellow, yellow_at)",
        "CREATE TABLE IF NOT EXISTS projection_warnings ("
        f"case_id TEXT NOT NULL, kind {text}, due_at {text}, recorded_at {text}, "
        f"position {big} NOT NULL, hall_id {text}, hall_window {text}, item_code {text}, "
        f"item_name {text}, intake_region {text}, PRIMARY KEY (case_id, kind))",
        "CREATE INDEX IF NOT EXISTS projection_warnings_recorded ON projection_warnings "
        "(recorded_at)",
        "CREATE TABLE IF NOT EXISTS projection_ratings ("
        f"case_id TEXT PRIMARY KEY, rating {text}, channel {text}, rated_at {text}, "
        f"comment {text}, intake_hall {text}, intake_window {text}, item_code {text}, "
        f"item_name {text}, intake_region {text}, bad INTEGER NOT NULL, "
        "rectification INTEGER NOT NULL, rectification_opened_at TEXT, "
        "rectification_days INTEGER, rectification_due_at TEXT, rectified_at TEXT, "
        f"report TEXT, follow_up TEXT, warned INTEGER NOT NULL, calendar_note {text}, "
        f"position {big} NOT NULL)",
        "CREATE INDEX IF NOT EXISTS projection_ratings_rated ON projection_ratings (rated_at)",
        "CREATE INDEX IF NOT EXISTS projection_ratings_due ON projection_ratings "
        "(warned, rectification_due_at)",
        "CREATE TABLE IF NOT EXISTS projection_halls ("
        f"hall_id TEXT PRIMARY KEY, name {text}, region {text}, level {text}, windows {text}, "
        "retired INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS projection_windows ("
        f"hall_id TEXT NOT NULL, window_name {text}, a_post {text}, b_post {text}, "
        "a_post_absent INTEGER NOT NULL, PRIMARY KEY (hall_id, window_name))",
    ]


def _event_topics(*aggregates: type[Any]) -> tuple[str, ...]:
    """The topics of every event class of ``aggregates`` (new ones included automatically)."""
    return tuple(
        get_topic(value)
        for aggregate in aggregates
        for value in vars(aggregate).values()
        if isinstance(value, type) and issubclass(value, Aggregate.Event)
    )


#: What the cases projection reads of the log: every case and hall event (not the command
#: records, which are half of it).
TOPICS = _event_topics(Case, Hall)


#: How many case rows a rebuild keeps in memory before it writes them.
_KEEP_BACK = 20_000

#: The side tables' writes a batch gathers, in the order they are made at its end.
_SIDE_WRITES = {
    "rated": (
        "INSERT INTO projection_ratings (case_id, rating, channel, rated_at, comment, "
        "intake_hall, intake_window, item_code, item_name, intake_region, bad, "
        "rectification, warned, calendar_note, position) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0, 0, '', %s)"
    ),
    "rectification_opened": (
        "UPDATE projection_ratings SET rectification = 1, rectification_opened_at = %s, "
        "rectification_days = %s, rectification_due_at = %s, calendar_note = %s, "
        "position = %s WHERE case_id = %s"
    ),
    "rectified": (
        "UPDATE projection_ratings SET rectified_at = %s, report = %s, "
        "follow_up = %s, rectification_due_at = %s, calendar_note = %s, "
        "position = %s WHERE case_id = %s"
    ),
    "warning": (
        "INSERT INTO projection_warnings (case_id, kind, due_at, recorded_at, position, "
        "hall_id, hall_window, item_code, item_name, intake_region) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    ),
    "rectification_warned": "UPDATE projection_ratings SET warned = 1 WHERE case_id = %s",
}


class CasesProjection(ViewProjection):
    """Case state, queues, clocks, warnings, ratings, halls (see the module docstring)."""

    name = "cases"
    topics: tuple[str, ...] = TOPICS
    tables: ClassVar[tuple[str, ...]] = (
        "projection_cases",
        "projection_warnings",
        "projection_ratings",
        "projection_halls",
        "projection_windows",
    )

    def __init__(self, view: ProjectionStore, histories: CaseHistories) -> None:
        super().__init__(view)
        self.histories = histories
        #: The cases the batch changed (their rows are written once, at the batch's end).
        self._rows: dict[str, tuple[Case, int]] = {}
        #: Other rows the batch writes, by statement, in the order of _SIDE_WRITES.
        self._side: dict[str, list[tuple[Any, ...]]] = {}
        #: hall id -> its windows (to name a case's window when the command left it empty).
        self._windows: dict[str, tuple[str, ...]] | None = None

    def create_statements(self) -> list[str]:
        big = "BIGINT" if self.dialect.postgres else "INTEGER"
        return _create(big)

    # ------------------------------------------------------------------ batches

    def start_batch(self, cursor: Cursor) -> None:
        super().start_batch(cursor)
        if not self.rebuilding:
            self._rows = {}
            self._side = {}
        if self._windows is None:
            cursor.execute("SELECT hall_id, windows FROM projection_halls")
            self._windows = {row[0]: tuple(json.loads(row[1])) for row in cursor.fetchall()}

    def finish_batch(self) -> None:
        # A rebuild (one transaction) keeps the rows back, up to a bound, and writes each case
        # once rather than once per batch that touched it.
        if not self.rebuilding or len(self._rows) > _KEEP_BACK:
            self._write()
        super().finish_batch()

    def finish_rebuild(self, cursor: Cursor) -> None:
        self._cursor = cursor
        self._write()
        self._cursor = None

    def _write(self) -> None:
        if self._rows:
            columns = ", ".join(CASE_COLUMNS)
            updates = ", ".join(f"{c} = excluded.{c}" for c in CASE_COLUMNS[1:])
            marks = ", ".join(["%s"] * len(CASE_COLUMNS))
            self.cursor.executemany(
                self.sql(
                    f"INSERT INTO projection_cases ({columns}) VALUES ({marks}) "
                    f"ON CONFLICT (case_id) DO UPDATE SET {updates}"
                ),
                [self._row(case, position) for case, position in self._rows.values()],
            )
        # Fixed order: a case's rating is inserted before its rectification is updated, opened
        # before completed (events of one case come in that order too).
        for name, statement in _SIDE_WRITES.items():
            rows = self._side.get(name)
            if rows:
                self.cursor.executemany(self.sql(statement), rows)
        self._rows = {}
        self._side = {}

    def _later(self, name: str, values: tuple[Any, ...]) -> None:
        self._side.setdefault(name, []).append(values)

    def forget(self) -> None:
        super().forget()
        self._rows = {}
        self._side = {}
        self._windows = None
        self.histories.forget()

    # ------------------------------------------------------------------ events

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        if isinstance(domain_event, Case.Submitted | Case.Event):
            self._case_event(domain_event, tracking.notification_id)
        elif isinstance(domain_event, Hall.Registered):
            self._hall_registered(domain_event)
        elif isinstance(domain_event, Hall.Retired):
            assert self._windows is not None
            hall_id = next(
                (h for h in self._windows if hall_aggregate_id(h) == domain_event.originator_id),
                "",
            )
            self.cursor.execute(
                self.sql("UPDATE projection_halls SET retired = 1 WHERE hall_id = %s"), (hall_id,)
            )
        elif isinstance(domain_event, Hall.WindowStaffed):
            self.cursor.execute(
                self.sql(
                    "INSERT INTO projection_windows (hall_id, window_name, a_post, b_post, "
                    "a_post_absent) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (hall_id, "
                    "window_name) DO UPDATE SET a_post = excluded.a_post, "
                    "b_post = excluded.b_post, a_post_absent = excluded.a_post_absent"
                ),
                (
                    domain_event.actor.hall_id,
                    domain_event.window,
                    domain_event.a_post,
                    domain_event.b_post,
                    int(domain_event.a_post_absent),
                ),
            )

    def _hall_registered(self, event: Hall.Registered) -> None:
        self.cursor.execute(
            self.sql(
                "INSERT INTO projection_halls (hall_id, name, region, level, windows, retired) "
                "VALUES (%s, %s, %s, %s, %s, 0)"
            ),
            (
                event.hall_id,
                event.name,
                event.region,
                RegionCode(event.region).level.name,
                json.dumps(list(event.windows), ensure_ascii=False),
            ),
        )
        assert self._windows is not None
        self._windows[event.hall_id] = tuple(event.windows)

    def window_of(self, hall_id: str, window: str) -> str:
        """The window's name; an empty one is the hall's first window."""
        if window:
            return window
        assert self._windows is not None
        windows = self._windows.get(hall_id, ())
        return windows[0] if windows else ""

    def _case_event(self, event: Any, position: int) -> None:
        case = self.histories.apply(event)
        self._rows[str(case.id)] = (case, position)
        if isinstance(event, Case.SupervisionWarned):
            self._warning(case, event, position)
        elif isinstance(event, Case.Rated):
            self._rated(case, event, position)
        elif isinstance(event, Case.RectificationOpened):
            self._rectification_opened(case, position)
        elif isinstance(event, Case.RectificationCompleted):
            self._later(
                "rectified",
                (
                    iso(event.timestamp),
                    event.report,
                    event.follow_up,
                    *_iso_first(rectification_due(case)),
                    position,
                    str(case.id),
                ),
            )

    def _row(self, case: Case, position: int) -> tuple[Any, ...]:
        clock = case_clock(case)
        assert clock is not None
        assert case.clock_started_at is not None
        marks = deadlines(clock, case.promised_days, case.statutory_days)
        concluded = case.state in CONCLUDED_STATES
        on_time = None
        if concluded:
            # On time: concluded no later than the promised deadline (never crossed it).
            stopped = case.clock_stopped_at
            on_time = int(marks.due_at is None or stopped is None or marks.due_at >= stopped)
        values = {
            "case_id": str(case.id),
            "version": case.version,
            "position": position,
            "state": case.state.name,
            "item_code": case.item_code,
            "item_name": case.item_name,
            "kind": case.kind.name,
            "mode": case.mode.name,
            "channel": intake_channel(case).name,
            "intake_region": case.intake_region,
            "competent_region": case.competent_region,
            "intake_hall": case.intake_hall,
            "intake_window": self.window_of(case.intake_hall, case.intake_window),
            "holder": case.holder,
            "holder_window": self.window_of(case.holder, case.window),
            "pending_receiver": case.pending_receiver or "",
            "received_at": iso(case.clock_started_at),
            "last_step_at": iso(case.last_step_at),
            "promised_days": case.promised_days,
            "statutory_days": case.statutory_days,
            "pauses": json.dumps([[iso(a), iso(b)] for a, b in case.pauses]),
            "paused_since": iso(case.paused_since),
            "stopped_at": iso(case.clock_stopped_at),
            "yellow_at": iso(marks.yellow_at),
            "due_at": iso(marks.due_at),
            "statutory_due_at": iso(marks.statutory_due_at),
            "calendar_note": marks.calendar_note,
            "concluded_at": iso(case.clock_stopped_at) if concluded else None,
            "approved": None if case.approved is None else int(case.approved),
            "on_time": on_time,
            "open": int(case.clock_stopped_at is None),
            "warned_yellow": int(WarningKind.YELLOW in case.warnings),
            "warned_red": int(WarningKind.RED in case.warnings),
            "rating": case.rating.name if case.rating is not None else None,
            "origin_channel": case.channel.name,
        }
        return tuple(values[column] for column in CASE_COLUMNS)

    def _warning(self, case: Case, event: Case.SupervisionWarned, position: int) -> None:
        self._later(
            "warning",
            (
                str(case.id),
                event.kind.name,
                iso(event.due_at),
                iso(event.timestamp),
                position,
                case.holder,
                self.window_of(case.holder, case.window),
                case.item_code,
                case.item_name,
                case.intake_region,
            ),
        )
        if event.kind is WarningKind.RECTIFICATION_OVERDUE:
            self._later("rectification_warned", (str(case.id),))

    def _rated(self, case: Case, event: Case.Rated, position: int) -> None:
        self._later(
            "rated",
            (
                str(case.id),
                event.rating.name,
                event.channel.name,
                iso(event.timestamp),
                event.comment,
                case.intake_hall,
                self.window_of(case.intake_hall, case.intake_window),
                case.item_code,
                case.item_name,
                case.intake_region,
                int(event.rating.is_bad),
                position,
            ),
        )

    def _rectification_opened(self, case: Case, position: int) -> None:
        self._later(
            "rectification_opened",
            (
                iso(case.rectification_opened_at),
                case.rectification_deadline_days,
                *_iso_first(rectification_due(case)),
                position,
                str(case.id),
            ),
        )

    # ------------------------------------------------------------------ the calendar

    def refresh(self, cursor: Cursor) -> int:
        """Compute again the marks a calendar update may now know (rows with a note)."""
        cursor.execute(
            "SELECT case_id, received_at, pauses, paused_since, stopped_at, promised_days, "
            "statutory_days FROM projection_cases WHERE calendar_note <> ''"
        )
        rows = cursor.fetchall()
        for case_id, received, pauses, paused_since, stopped, promised, statutory in rows:
            clock = clock_of(
                _required(from_iso(received)),
                tuple(
                    (_required(from_iso(a)), _required(from_iso(b))) for a, b in json.loads(pauses)
                ),
                from_iso(paused_since),
                from_iso(stopped),
            )
            marks = deadlines(clock, promised, statutory)
            cursor.execute(
                self.sql(
                    "UPDATE projection_cases SET yellow_at = %s, due_at = %s, "
                    "statutory_due_at = %s, calendar_note = %s WHERE case_id = %s"
                ),
                (
                    iso(marks.yellow_at),
                    iso(marks.due_at),
                    iso(marks.statutory_due_at),
                    marks.calendar_note,
                    case_id,
                ),
            )
        cursor.execute(
            "SELECT case_id, rectification_opened_at, rectification_days, rectified_at "
            "FROM projection_ratings WHERE calendar_note <> ''"
        )
        ratings = cursor.fetchall()
        for case_id, opened, days, rectified in ratings:
            clock = clock_of(_required(from_iso(opened)), (), None, from_iso(rectified))
            due, note = _crossing(clock, days)
            cursor.execute(
                self.sql(
                    "UPDATE projection_ratings SET rectification_due_at = %s, calendar_note = %s "
                    "WHERE case_id = %s"
                ),
                (iso(due), note, case_id),
            )
        return len(rows) + len(ratings)


def intake_channel(case: Case) -> IntakeChannel:
    """The channel this node counts a case under: ``PEER_NODE`` for a copy another node of the
    federation forwarded, else the channel its hall took it in by (``Submitted.channel``).

    A copy came from a peer exactly when its intake hall is another node's: the node that
    applied the peer's step wrote that hall as ``hall@region`` (:func:`hub.domain.federation.
    local_name`), which a hall of this node never is. So it is derived from what the log says —
    the signed ``Submitted`` event of the peer's hall stays as that hall signed it.
    """
    if split_name(case.intake_hall)[1] is not None:
        return IntakeChannel.PEER_NODE
    return case.channel


def rectification_due(case: Case) -> tuple[datetime | None, str]:
    """The rectification deadline of ``case`` and, if the calendar cannot tell, why."""
    clock = rectification_clock(case)
    if clock is None:
        return None, ""
    return _crossing(clock, case.rectification_deadline_days)


def _crossing(clock: Any, days: int) -> tuple[datetime | None, str]:
    try:
        return clock.crossing(Fraction(days)), ""
    except CalendarUnknown as error:
        return None, str(error)


def _iso_first(pair: tuple[datetime | None, str]) -> tuple[str | None, str]:
    return iso(pair[0]), pair[1]


def _required(moment: datetime | None) -> datetime:
    assert moment is not None
    return moment

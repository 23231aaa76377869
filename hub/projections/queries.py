"""Reading the projections: queues, case lists, warnings, ratings, statistics, window ranking.

Every function takes the moment "now" from its caller (``as_of``): a view computed "as of now"
uses the request's time, never the time of the last event, so a case that became overdue an hour
ago with no event since is shown overdue. Paging is by key (the last entry's sort key in an
opaque token), so entries that change between pages are neither lost nor repeated.

Nothing personal is read here: the projections hold no applicant data.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from fractions import Fraction
from typing import Any

from hub.domain.items import Catalogue
from hub.domain.regions import Level, RegionCode, RegionRegistry
from hub.domain.supervision import clock_of
from hub.domain.values import CaseState, IntakeChannel, WarningKind
from hub.domain.workdays import CHINA_TIME
from hub.errors import CalendarUnknown, InvalidInput
from hub.projections.cases import CASE_COLUMNS, FINAL_STATES
from hub.projections.runner import SOURCE
from hub.projections.statistics import COUNTERS
from hub.projections.store import Cursor, ProjectionStore, from_iso, iso

#: Largest page a caller may ask for.
MAX_PAGE = 500
DEFAULT_PAGE = 50
#: Sorts after every time (cases without a known deadline come last).
_NO_DEADLINE = "9999"


# ---------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class CaseRow:
    """One row of ``projection_cases`` (see :mod:`hub.projections.cases`)."""

    case_id: str
    version: int
    position: int
    state: str
    item_code: str
    item_name: str
    kind: str
    mode: str
    channel: str
    intake_region: str
    competent_region: str
    intake_hall: str
    intake_window: str
    holder: str
    holder_window: str
    pending_receiver: str
    received_at: str
    last_step_at: str
    promised_days: int
    statutory_days: int
    pauses: str
    paused_since: str | None
    stopped_at: str | None
    yellow_at: str | None
    due_at: str | None
    statutory_due_at: str | None
    calendar_note: str
    concluded_at: str | None
    approved: int | None
    on_time: int | None
    open: int
    warned_yellow: int
    warned_red: int
    rating: str | None
    #: The channel the intake hall signed (``channel`` is PEER_NODE for another node's copy).
    origin_channel: str
    warnings: tuple[WarningKind, ...] = ()

    @property
    def paused(self) -> bool:
        """The clock is paused (补正, 特别程序)."""
        return self.paused_since is not None and self.open == 1

    def overdue(self, as_of: datetime) -> bool:
        """Open and past its promised deadline at ``as_of``."""
        return bool(self.open and self.due_at is not None and self.due_at <= _text(as_of))

    def near_deadline(self, as_of: datetime) -> bool:
        """Open, past its 90 % mark and not yet overdue at ``as_of``."""
        return bool(
            self.open
            and self.yellow_at is not None
            and self.yellow_at <= _text(as_of)
            and not self.overdue(as_of)
        )

    def working_days_used(self, as_of: datetime) -> float:
        """Working days the clock has counted at ``as_of`` (NaN beyond the known calendar)."""
        clock = clock_of(
            _time(self.received_at),
            tuple((_time(a), _time(b)) for a, b in json.loads(self.pauses)),
            from_iso(self.paused_since),
            from_iso(self.stopped_at),
        )
        try:
            return float(clock.elapsed(as_of))
        except CalendarUnknown:
            return float("nan")

    def time(self, column: str) -> datetime | None:
        """A time column as a datetime."""
        value: str | None = getattr(self, column)
        return from_iso(value)


def _text(moment: datetime) -> str:
    text = iso(moment)
    assert text is not None
    return text


def _time(text: str | None) -> datetime:
    moment = from_iso(text)
    assert moment is not None
    return moment


@dataclass(frozen=True)
class Page:
    """One page of entries, the token of the next page (empty: last page) and the position of
    the projection the entries come from."""

    entries: list[Any]
    next_token: str
    position: int


def _limit(page_size: int) -> int:
    if page_size < 0 or page_size > MAX_PAGE:
        raise InvalidInput("page_size", page_size, f"1-{MAX_PAGE} (0: {DEFAULT_PAGE})")
    return page_size or DEFAULT_PAGE


def _token(key: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode("ascii")


def _after(token: str, size: int) -> list[Any] | None:
    if not token:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InvalidInput("page_token", token, "not a token this node gave") from None
    if not isinstance(key, list) or len(key) != size:
        raise InvalidInput("page_token", token, "not a token this node gave")
    return key


def position(store: ProjectionStore, name: str) -> int:
    """The last notification projection ``name`` has processed."""
    return store.max_tracking_id(f"{SOURCE}:{name}") or 0


def _warnings_of(cursor: Cursor, store: ProjectionStore, ids: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    if not ids:
        return found
    marks = ", ".join(["%s"] * len(ids))
    cursor.execute(
        store.dialect.sql(
            f"SELECT case_id, kind FROM projection_warnings WHERE case_id IN ({marks}) "
            "ORDER BY case_id, due_at"
        ),
        ids,
    )
    for case_id, kind in cursor.fetchall():
        found.setdefault(case_id, []).append(kind)
    return found


def _case_rows(store: ProjectionStore, where: str, params: list[Any], limit: int) -> Any:
    columns = ", ".join(CASE_COLUMNS)
    order = f"COALESCE(due_at, '{_NO_DEADLINE}'), received_at, case_id"

    def read(cursor: Cursor) -> list[CaseRow]:
        cursor.execute(
            store.dialect.sql(
                f"SELECT {columns} FROM projection_cases WHERE {where} ORDER BY {order} LIMIT %s"
            ),
            [*params, limit],
        )
        rows = [CaseRow(*row) for row in cursor.fetchall()]
        kinds = _warnings_of(cursor, store, [row.case_id for row in rows])
        return [_with_warnings(row, kinds.get(row.case_id, [])) for row in rows]

    return read


def _with_warnings(row: CaseRow, kinds: list[str]) -> CaseRow:
    from dataclasses import replace

    return replace(row, warnings=tuple(WarningKind[kind] for kind in kinds))


@dataclass(frozen=True)
class CaseFilter:
    """Which cases to list (every field optional)."""

    states: tuple[CaseState, ...] = ()
    overdue: bool = False
    near_deadline: bool = False
    item_code: str = ""
    #: Only cases taken in by these channels (WINDOW includes cases that did not say).
    channels: tuple[IntakeChannel, ...] = ()


def _filters(where: list[str], params: list[Any], wanted: CaseFilter, as_of: datetime) -> None:
    now = _text(as_of)
    if wanted.states:
        where.append(f"state IN ({', '.join(['%s'] * len(wanted.states))})")
        params += [state.name for state in wanted.states]
    if wanted.overdue:
        where.append("open = 1 AND due_at IS NOT NULL AND due_at <= %s")
        params.append(now)
    if wanted.near_deadline:
        where.append(
            "open = 1 AND yellow_at IS NOT NULL AND yellow_at <= %s "
            "AND (due_at IS NULL OR due_at > %s)"
        )
        params += [now, now]
    if wanted.item_code:
        where.append("item_code = %s")
        params.append(wanted.item_code)
    if wanted.channels:
        names = {channel.name for channel in wanted.channels}
        if IntakeChannel.WINDOW.name in names:
            names.add(IntakeChannel.UNSPECIFIED.name)  # unsaid counts as the window
        where.append(f"channel IN ({', '.join(['%s'] * len(names))})")
        params += sorted(names)


def _keyset(where: list[str], params: list[Any], after: list[Any] | None) -> None:
    if after is not None:
        where.append("(COALESCE(due_at, %s), received_at, case_id) > (%s, %s, %s)")
        params += [_NO_DEADLINE, *after]


def _page(rows: list[CaseRow], limit: int, store: ProjectionStore, name: str) -> Page:
    more = len(rows) > limit
    rows = rows[:limit]
    token = ""
    if more:
        last = rows[-1]
        token = _token([last.due_at or _NO_DEADLINE, last.received_at, last.case_id])
    return Page(list(rows), token, position(store, name))


@dataclass(frozen=True)
class Roster:
    """Who serves one window of a hall (AB岗)."""

    hall_id: str
    window: str
    a_post: str
    b_post: str
    a_post_absent: bool

    @property
    def serving(self) -> str:
        """The operator serving now: the A post, or the B post while the A post is absent."""
        return self.b_post if self.a_post_absent else self.a_post


def rosters(store: ProjectionStore, hall_id: str) -> list[Roster]:
    """The staffed windows of ``hall_id``."""

    def read(cursor: Cursor) -> list[Roster]:
        cursor.execute(
            store.dialect.sql(
                "SELECT hall_id, window_name, a_post, b_post, a_post_absent FROM "
                "projection_windows WHERE hall_id = %s ORDER BY window_name"
            ),
            (hall_id,),
        )
        return [Roster(h, w, a, b, bool(absent)) for h, w, a, b, absent in cursor.fetchall()]

    return store.read(read)


def windows_served(store: ProjectionStore, hall_id: str, operator: str) -> list[str]:
    """The windows of ``hall_id`` that ``operator`` serves now (AB岗)."""
    return [r.window for r in rosters(store, hall_id) if r.serving == operator]


def queue(
    store: ProjectionStore,
    hall_id: str,
    *,
    as_of: datetime,
    window: str = "",
    operator: str = "",
    wanted: CaseFilter = CaseFilter(),
    page_size: int = 0,
    page_token: str = "",
) -> Page:
    """The cases ``hall_id`` holds (not final) or must acknowledge, most urgent first.

    ``window``: only the cases held at that window. ``operator``: only the windows that operator
    serves now (AB岗), and the handoffs awaiting the hall's acknowledgement.
    """
    limit = _limit(page_size)
    after = _after(page_token, 3)
    finals = [state.name for state in FINAL_STATES]
    held = f"holder = %s AND state NOT IN ({', '.join(['%s'] * len(finals))})"
    where: list[str] = []
    params: list[Any] = []
    if window or operator:
        windows = [window] if window else windows_served(store, hall_id, operator)
        clauses = []
        if windows:
            clauses.append(f"({held} AND holder_window IN ({', '.join(['%s'] * len(windows))}))")
            params += [hall_id, *finals, *windows]
        if operator and not window:
            clauses.append("pending_receiver = %s")
            params.append(hall_id)
        if not clauses:
            return Page([], "", position(store, "cases"))
        where.append(f"({' OR '.join(clauses)})")
    else:
        where.append(f"(({held}) OR pending_receiver = %s)")
        params += [hall_id, *finals, hall_id]
    _filters(where, params, wanted, as_of)
    _keyset(where, params, after)
    rows = store.read(_case_rows(store, " AND ".join(where), params, limit + 1))
    return _page(rows, limit, store, "cases")


def in_queue(row: CaseRow, hall_id: str) -> bool:
    """Whether ``row`` belongs to ``hall_id``'s queue (held, not final; or awaiting it)."""
    final = {state.name for state in FINAL_STATES}
    return (row.holder == hall_id and row.state not in final) or row.pending_receiver == hall_id


def region_prefix(region: str) -> str:
    """The digits every code inside ``region`` starts with (``4309`` for 益阳市)."""
    return RegionCode.parse(region).short


def cases(
    store: ProjectionStore,
    *,
    region: str,
    as_of: datetime,
    hall_id: str = "",
    wanted: CaseFilter = CaseFilter(),
    page_size: int = 0,
    page_token: str = "",
) -> Page:
    """Cases taken in or decided in ``region`` (or below), most urgent deadline first."""
    limit = _limit(page_size)
    after = _after(page_token, 3)
    prefix = region_prefix(region)
    where = ["(intake_region LIKE %s OR competent_region LIKE %s)"]
    params: list[Any] = [f"{prefix}%", f"{prefix}%"]
    if hall_id:
        where.append("(holder = %s OR intake_hall = %s)")
        params += [hall_id, hall_id]
    _filters(where, params, wanted, as_of)
    _keyset(where, params, after)
    rows = store.read(_case_rows(store, " AND ".join(where), params, limit + 1))
    return _page(rows, limit, store, "cases")


def case_by_id(store: ProjectionStore, case_id: str) -> CaseRow | None:
    """One case's row (None when the projection has none)."""
    rows = store.read(_case_rows(store, "case_id = %s", [case_id], 1))
    return rows[0] if rows else None


def changed_since(
    store: ProjectionStore, hall_id: str, after: int, known: Iterable[str]
) -> list[CaseRow]:
    """Rows changed after ``after`` that are (or were, ``known``) in ``hall_id``'s queue."""
    ids = list(known)
    where = "position > %s AND (holder = %s OR pending_receiver = %s"
    params: list[Any] = [after, hall_id, hall_id]
    if ids:
        where += f" OR case_id IN ({', '.join(['%s'] * len(ids))})"
        params += ids
    where += ")"
    columns = ", ".join(CASE_COLUMNS)

    def read(cursor: Cursor) -> list[CaseRow]:
        cursor.execute(
            store.dialect.sql(
                f"SELECT {columns} FROM projection_cases WHERE {where} ORDER BY position"
            ),
            params,
        )
        rows = [CaseRow(*row) for row in cursor.fetchall()]
        kinds = _warnings_of(cursor, store, [row.case_id for row in rows])
        return [_with_warnings(row, kinds.get(row.case_id, [])) for row in rows]

    return store.read(read)


@dataclass(frozen=True)
class CaseCounts:
    """How many cases of a region are in each condition "now"."""

    open: int
    overdue: int
    near_deadline: int
    paused: int
    open_rectifications: int


def counts(store: ProjectionStore, *, region: str, as_of: datetime) -> CaseCounts:
    """Open, overdue, near-deadline and paused cases of ``region`` (or below) at ``as_of``."""
    prefix = f"{region_prefix(region)}%"
    now = _text(as_of)

    def read(cursor: Cursor) -> CaseCounts:
        cursor.execute(
            store.dialect.sql(
                "SELECT COUNT(*), "
                "SUM(CASE WHEN due_at IS NOT NULL AND due_at <= %s THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN yellow_at IS NOT NULL AND yellow_at <= %s "
                "AND (due_at IS NULL OR due_at > %s) THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN paused_since IS NOT NULL THEN 1 ELSE 0 END) "
                "FROM projection_cases WHERE open = 1 "
                "AND (intake_region LIKE %s OR competent_region LIKE %s)"
            ),
            (now, now, now, prefix, prefix),
        )
        total, overdue, near, paused = cursor.fetchone()
        cursor.execute(
            store.dialect.sql(
                "SELECT COUNT(*) FROM projection_ratings WHERE rectification = 1 "
                "AND rectified_at IS NULL AND intake_region LIKE %s"
            ),
            (prefix,),
        )
        (rectifying,) = cursor.fetchone()
        return CaseCounts(
            int(total or 0), int(overdue or 0), int(near or 0), int(paused or 0),
            int(rectifying or 0),
        )  # fmt: skip

    return store.read(read)


# ---------------------------------------------------------------------------- warnings, ratings


@dataclass(frozen=True)
class WarningRow:
    """One recorded 电子监察 warning."""

    case_id: str
    kind: WarningKind
    due_at: datetime
    recorded_at: datetime
    hall_id: str
    window: str
    item_code: str
    item_name: str
    region: str


def warnings(
    store: ProjectionStore,
    *,
    region: str,
    kind: WarningKind | None = None,
    page_size: int = 0,
    page_token: str = "",
) -> Page:
    """Warnings of cases taken in in ``region`` (or below), newest first."""
    limit = _limit(page_size)
    after = _after(page_token, 3)
    where = ["intake_region LIKE %s"]
    params: list[Any] = [f"{region_prefix(region)}%"]
    if kind is not None:
        where.append("kind = %s")
        params.append(kind.name)
    if after is not None:
        where.append("(recorded_at, case_id, kind) < (%s, %s, %s)")
        params += after

    def read(cursor: Cursor) -> list[Any]:
        cursor.execute(
            store.dialect.sql(
                "SELECT case_id, kind, due_at, recorded_at, hall_id, hall_window, item_code, "
                f"item_name, intake_region FROM projection_warnings WHERE {' AND '.join(where)} "
                "ORDER BY recorded_at DESC, case_id DESC, kind DESC LIMIT %s"
            ),
            [*params, limit + 1],
        )
        return list(cursor.fetchall())

    rows = store.read(read)
    entries = [WarningRow(r[0], WarningKind[r[1]], _time(r[2]), _time(r[3]), *r[4:]) for r in rows]
    token = ""
    if len(entries) > limit:
        entries = entries[:limit]
        last = rows[limit - 1]
        token = _token([last[3], last[0], last[1]])
    return Page(entries, token, position(store, "cases"))


@dataclass(frozen=True)
class RatingRow:
    """One rating (好差评) and its rectification."""

    case_id: str
    rating: str
    channel: str
    rated_at: datetime
    comment: str
    hall_id: str
    window: str
    item_code: str
    item_name: str
    region: str
    bad: bool
    rectification: bool
    rectification_due_at: datetime | None
    rectified_at: datetime | None
    report: str
    follow_up: str
    calendar_note: str

    def overdue(self, as_of: datetime) -> bool:
        """A rectification past its deadline at ``as_of`` and not completed."""
        return bool(
            self.rectification
            and self.rectified_at is None
            and self.rectification_due_at is not None
            and self.rectification_due_at <= as_of
        )


def ratings(
    store: ProjectionStore,
    *,
    region: str,
    bad_only: bool = False,
    open_only: bool = False,
    page_size: int = 0,
    page_token: str = "",
) -> Page:
    """Ratings of cases taken in in ``region`` (or below), newest first."""
    limit = _limit(page_size)
    after = _after(page_token, 2)
    where = ["intake_region LIKE %s"]
    params: list[Any] = [f"{region_prefix(region)}%"]
    if bad_only:
        where.append("bad = 1")
    if open_only:
        where.append("rectification = 1 AND rectified_at IS NULL")
    if after is not None:
        where.append("(rated_at, case_id) < (%s, %s)")
        params += after

    def read(cursor: Cursor) -> list[Any]:
        cursor.execute(
            store.dialect.sql(
                "SELECT case_id, rating, channel, rated_at, comment, intake_hall, intake_window, "
                "item_code, item_name, intake_region, bad, rectification, "
                "rectification_due_at, rectified_at, report, follow_up, calendar_note "
                f"FROM projection_ratings WHERE {' AND '.join(where)} "
                "ORDER BY rated_at DESC, case_id DESC LIMIT %s"
            ),
            [*params, limit + 1],
        )
        return list(cursor.fetchall())

    rows = store.read(read)
    entries = [
        RatingRow(
            r[0],
            r[1],
            r[2],
            _time(r[3]),
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            r[9],
            bool(r[10]),
            bool(r[11]),
            from_iso(r[12]),
            from_iso(r[13]),
            r[14] or "",
            r[15] or "",
            r[16],
        )
        for r in rows
    ]
    token = ""
    if len(entries) > limit:
        entries = entries[:limit]
        token = _token([rows[limit - 1][3], rows[limit - 1][0]])
    return Page(entries, token, position(store, "cases"))


# ---------------------------------------------------------------------------- statistics


@dataclass
class Figures:
    """The counters of :mod:`hub.projections.statistics` summed, and their rates."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))

    def add(self, values: Sequence[int]) -> None:
        """Add one row of counters (in COUNTERS order)."""
        for name, value in zip(COUNTERS, values, strict=True):
            self.counts[name] += int(value)

    def merge(self, other: Figures) -> None:
        """Add another's counters."""
        for name in COUNTERS:
            self.counts[name] += other.counts[name]

    def __getitem__(self, name: str) -> int:
        return self.counts[name]

    @staticmethod
    def _rate(part: int, whole: int) -> float:
        return part / whole if whole else 0.0

    @property
    def on_time_rate(self) -> float:
        """按期办结率: concluded on time / concluded."""
        return self._rate(self["on_time"], self["concluded"])

    @property
    def satisfaction_rate(self) -> float:
        """满意率: ratings of 基本满意 or better / ratings."""
        return self._rate(self["satisfied"], self["rated"])

    @property
    def active_rating_rate(self) -> float:
        """主动评价率: ratings / delivered cases."""
        return self._rate(self["rated"], self["delivered"])

    @property
    def online_rate(self) -> float:
        """网上办件率: cases taken in online / cases taken in."""
        return self._rate(self["online"], self["received"])

    def rate(self, part: str, whole: str) -> float | None:
        """``part / whole``, or None when there is no ``whole`` (no data, not 0 %)."""
        return self[part] / self[whole] if self[whole] else None

    def as_dict(self) -> dict[str, Any]:
        """Counters and rates, for JSON."""
        return {
            **self.counts,
            "on_time_rate": round(self.on_time_rate, 4),
            "satisfaction_rate": round(self.satisfaction_rate, 4),
            "active_rating_rate": round(self.active_rating_rate, 4),
            "online_rate": round(self.online_rate, 4),
        }


@dataclass(frozen=True)
class StatisticsRow:
    """Figures of one group."""

    key: str
    label: str
    figures: Figures


#: The ways statistics can be grouped.
DIMENSIONS = ("hall", "window", "region", "level", "item", "day", "month")


@dataclass(frozen=True)
class Names:
    """How keys are named for people: regions, items, halls."""

    regions: RegionRegistry
    catalogue: Catalogue

    def region(self, code: str) -> str:
        """The region's name (its code when unknown)."""
        try:
            return self.regions.get(code).name
        except InvalidInput:
            return code

    def item(self, code: str) -> str:
        """The item's name (its code when unknown)."""
        try:
            return self.catalogue.get(code).name
        except InvalidInput:
            return code


def halls(store: ProjectionStore) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """hall id -> (name, region, windows)."""

    def read(cursor: Cursor) -> dict[str, tuple[str, str, tuple[str, ...]]]:
        cursor.execute("SELECT hall_id, name, region, windows FROM projection_halls")
        return {h: (n, r, tuple(json.loads(w))) for h, n, r, w in cursor.fetchall()}

    return store.read(read)


def _day(text: str, field: str) -> str:
    if not text:
        return ""
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise InvalidInput(field, text, "a day is YYYY-MM-DD") from None


#: Channel names as the seed regions count them (窗口 includes intakes that did not say).
CHANNEL_LABELS = {
    IntakeChannel.WINDOW: "窗口",
    IntakeChannel.ONLINE: "网上办",
    IntakeChannel.PHONE: "电话办",
    IntakeChannel.HOME_VISIT: "上门办",
    IntakeChannel.AGENT: "帮代办",
    IntakeChannel.KIOSK: "自助办",
    IntakeChannel.IMPORTED: "台账导入",
    IntakeChannel.PEER_NODE: "外省转入",
}


def channel_counts(
    store: ProjectionStore, *, region: str, from_day: str = "", to_day: str = ""
) -> dict[IntakeChannel, int]:
    """Cases taken in in ``region`` (or below) per intake channel — and, as PEER_NODE, the
    copies other nodes forwarded whose competent region is there — received from ``from_day``
    to ``to_day`` (China Standard Time, inclusive); every channel is listed, zeros included."""
    start, end = _day(from_day, "from_day"), _day(to_day, "to_day")
    requested = RegionCode.parse(region)
    # A copy another node forwarded counts in the region of this node it was forwarded to (its
    # competent region), as ``tongban cases`` lists it there; its intake region is elsewhere.
    where = [
        f"(intake_region LIKE %s OR (channel = '{IntakeChannel.PEER_NODE.name}' "
        "AND competent_region LIKE %s))"
    ]
    params: list[Any] = [f"{requested.short}%", f"{requested.short}%"]
    if start:
        where.append("received_at >= %s")
        params.append(_text(datetime.combine(date.fromisoformat(start), time(), CHINA_TIME)))
    if end:
        where.append("received_at < %s")
        following = date.fromisoformat(end) + timedelta(days=1)
        params.append(_text(datetime.combine(following, time(), CHINA_TIME)))

    def read(cursor: Cursor) -> list[Any]:
        cursor.execute(
            store.dialect.sql(
                f"SELECT channel, COUNT(*) FROM projection_cases WHERE {' AND '.join(where)} "
                "GROUP BY channel"
            ),
            params,
        )
        return list(cursor.fetchall())

    counts = dict.fromkeys(CHANNEL_LABELS, 0)
    for name, count in store.read(read):
        channel = IntakeChannel[name] if name else IntakeChannel.UNSPECIFIED
        if channel is IntakeChannel.UNSPECIFIED:
            channel = IntakeChannel.WINDOW
        counts[channel] += int(count)
    return counts


def statistics(
    store: ProjectionStore,
    names: Names,
    *,
    region: str,
    by: str,
    from_day: str = "",
    to_day: str = "",
    from_elsewhere: bool = True,
) -> tuple[list[StatisticsRow], Figures]:
    """The figures of cases taken in in ``region`` (or below), grouped ``by`` a dimension —
    and, unless ``from_elsewhere`` is False, of the cases taken in in another province for a
    region there (跨省通办 in: the node handles them), grouped by that region where the
    dimension is a region's."""
    if by not in DIMENSIONS:
        raise InvalidInput("by", by, f"one of {', '.join(DIMENSIONS)}")
    start, end = _day(from_day, "from_day"), _day(to_day, "to_day")
    requested = RegionCode.parse(region)
    where = ["intake_region LIKE %s"]
    params: list[Any] = [f"{requested.short}%"]
    if from_elsewhere:
        # Taken in in a province other than the one of the region that decides it.
        where = [
            "(intake_region LIKE %s OR (competent_region LIKE %s AND "
            "substr(intake_region, 1, 2) <> substr(competent_region, 1, 2)))"
        ]
        params.append(f"{requested.short}%")
    if start:
        where.append("day >= %s")
        params.append(start)
    if end:
        where.append("day <= %s")
        params.append(end)
    sums = ", ".join(f"SUM({name})" for name in COUNTERS)

    def read(cursor: Cursor) -> list[Any]:
        cursor.execute(
            store.dialect.sql(
                "SELECT day, intake_hall, intake_window, intake_region, item_code, level, "
                f"competent_region, {sums} "
                f"FROM projection_stats_daily WHERE {' AND '.join(where)} GROUP BY day, "
                "intake_hall, intake_window, intake_region, item_code, level, competent_region"
            ),
            params,
        )
        return list(cursor.fetchall())

    known_halls = halls(store)
    groups: dict[str, Figures] = {}
    labels: dict[str, str] = {}
    total = Figures()
    for day, hall, window, intake_region, item, level, competent, *values in store.read(read):
        # A case taken in elsewhere counts, by region, where it is handled.
        where_counted = intake_region if intake_region.startswith(requested.short) else competent
        key, label = _group(by, day, hall, window, where_counted, item, level, requested,
                            known_halls, names)  # fmt: skip
        figures = groups.setdefault(key, Figures())
        figures.add(values)
        total.add(values)
        labels[key] = label
    rows = [StatisticsRow(key, labels[key], groups[key]) for key in sorted(groups)]
    return rows, total


def _group(
    by: str,
    day: str,
    hall: str,
    window: str,
    region: str,  # the intake region, or the competent one of a case from elsewhere
    item: str,
    level: str,
    requested: RegionCode,
    known_halls: dict[str, tuple[str, str, tuple[str, ...]]],
    names: Names,
) -> tuple[str, str]:
    hall_name, _region, windows = known_halls.get(hall, (hall, "", ()))
    if by == "hall":
        return hall, hall_name
    if by == "window":
        name = window or (windows[0] if windows else "")
        return f"{hall}/{name}", f"{hall_name} {name}"
    if by == "region":
        code = RegionCode(region)
        child_level = Level(min(requested.level + 1, code.level, Level.VILLAGE))
        child = code.ancestor_at(child_level) if child_level >= requested.level else requested
        return child.short, names.region(child.value)
    if by == "level":
        return level, Level[level].label
    if by == "item":
        return item, names.item(item)
    if by == "day":
        return day, day
    return day[:7], day[:7]


@dataclass(frozen=True)
class WindowRank:
    """One window's place in the monthly ranking (红旗窗口)."""

    rank: int
    hall_id: str
    hall_name: str
    window: str
    received: int
    on_time_rate: float
    satisfaction_rate: float
    score: float


def rank_windows(
    store: ProjectionStore, names: Names, *, region: str, month: str, limit: int = 10
) -> list[WindowRank]:
    """The month's windows by score: 40 % volume (relative to the busiest window), 30 % on-time
    rate, 30 % satisfaction rate; ties by volume, then by name."""
    try:
        first = date.fromisoformat(f"{month}-01")
    except ValueError:
        raise InvalidInput("month", month, "a month is YYYY-MM") from None
    if limit < 0 or limit > MAX_PAGE:
        raise InvalidInput("limit", limit, f"0-{MAX_PAGE} (0: 10)")
    last = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    rows, _ = statistics(
        store, names, region=region, by="window", from_day=first.isoformat(),
        to_day=date.fromordinal(last.toordinal() - 1).isoformat(),
        from_elsewhere=False,  # the windows of this region, not another province's
    )  # fmt: skip
    busiest = max((row.figures["received"] for row in rows), default=0)
    known = halls(store)
    ranked = []
    for row in rows:
        hall_id, window = row.key.split("/", 1)
        figures = row.figures
        volume = Fraction(figures["received"], busiest) if busiest else Fraction(0)
        score = 0.4 * float(volume) + 0.3 * figures.on_time_rate + 0.3 * figures.satisfaction_rate
        ranked.append((score, figures["received"], hall_id, window, figures))
    ranked.sort(key=lambda entry: (-entry[0], -entry[1], entry[2], entry[3]))
    return [
        WindowRank(
            number,
            hall_id,
            known.get(hall_id, (hall_id, "", ()))[0],
            window,
            figures["received"],
            figures.on_time_rate,
            figures.satisfaction_rate,
            round(score, 4),
        )
        for number, (score, _received, hall_id, window, figures) in enumerate(
            ranked[: limit or 10], start=1
        )
    ]


__all__ = [
    "DIMENSIONS",
    "CaseCounts",
    "CaseFilter",
    "CaseRow",
    "Figures",
    "Names",
    "Page",
    "RatingRow",
    "Roster",
    "StatisticsRow",
    "WarningRow",
    "WindowRank",
    "case_by_id",
    "cases",
    "changed_since",
    "counts",
    "halls",
    "in_queue",
    "position",
    "queue",
    "rank_windows",
    "ratings",
    "region_prefix",
    "rosters",
    "statistics",
    "warnings",
    "windows_served",
]

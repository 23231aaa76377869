"""Reading the projections over gRPC: hall queues (CaseExchange.ListQueue, WatchQueue) and the
Supervision service (cases, warnings, ratings, statistics, window ranking).

Who may read what:

* a **hall** reads its own queue only;
* a **supervisor** (certificate role ``supervisor``, its region in its name) reads the queues of
  the halls in its region and the Supervision service for its region and below; asking for any
  other region is PERMISSION_DENIED;
* an **auditor** reads everything (the whole node);
* without TLS (demo mode) every call is answered.

Every answer comes from the projections and says their position; "now" (for overdue marks and
the working days used) is the request's ``as_of`` or the node's time, never the time of the
last event. When the projections have stopped (an event they could not apply), queries answer
UNAVAILABLE with the reason.

``WatchQueue`` runs on the server's event loop: it reads through a small pool of its own and
sleeps until the projection commits a batch (PostgreSQL NOTIFY) or, on SQLite, a short poll, so
an open watch holds no worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from tongban.v1 import case_exchange_pb2, supervision_pb2

from hub.api.convert import timestamp_to_proto
from hub.api.errors import guard
from hub.api.handlers import StreamLimit, add_service
from hub.api.servicer import Authenticator, Caller
from hub.commands.wire import enum_from_proto, enum_to_proto
from hub.domain.regions import RegionCode
from hub.domain.values import (
    CaseKind,
    CaseState,
    CrossRegionMode,
    IntakeChannel,
    Rating,
    RatingChannel,
    WarningKind,
)
from hub.domain.workdays import CHINA_TIME
from hub.errors import InvalidInput, NotFound, PermissionRefused, StorageUnavailable
from hub.pki import Role
from hub.projections import queries
from hub.projections.queries import CaseFilter, CaseRow, Names
from hub.projections.store import CHANNEL, ProjectionStore, from_iso

log = logging.getLogger("tongban.queries")

SUPERVISION = supervision_pb2.DESCRIPTOR.services_by_name["Supervision"]

#: How often a watch looks for changes where the store cannot notify (SQLite).
POLL_SECONDS = 0.5
#: The longest a watch sleeps without looking (a safety net when notified).
IDLE_SECONDS = 5.0


class ChangeFeed:
    """Wakes queue watchers when a projection commits (see the module docstring)."""

    def __init__(self, database_url: str | None) -> None:
        self.database_url = database_url
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._stop = threading.Event()

    @property
    def notifies(self) -> bool:
        """Whether commits wake the watchers (PostgreSQL) rather than a poll (SQLite)."""
        return self.database_url is not None

    def start(self) -> None:
        """Listen for commits (call from the event loop that serves)."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        if self.database_url is not None:
            threading.Thread(target=self._listen, name="queue-listen", daemon=True).start()

    def stop(self) -> None:
        """Stop listening."""
        self._stop.set()

    def _listen(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                assert self.database_url is not None
                with psycopg.connect(self.database_url, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        for _notify in connection.notifies(timeout=1.0, stop_after=1):
                            self._wake()
            except Exception as error:  # the store is down: watchers fall back to their timeout
                log.warning("queue listener: %s; retrying", str(error).splitlines()[0])
                self._stop.wait(1.0)

    def _wake(self) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        event, self._event = self._event, asyncio.Event()
        if event is not None:
            event.set()

    async def wait(self) -> None:
        """Until the next commit (or a poll interval on SQLite, or the idle safety net)."""
        if self._event is None:
            self._event = asyncio.Event()
        event = self._event
        timeout = IDLE_SECONDS if self.notifies else POLL_SECONDS
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


@dataclass
class ProjectionAccess:
    """What the serving side needs to read the projections."""

    store: ProjectionStore
    names: Names
    #: Why the projections stopped, if they did (shared by the follower process).
    failure: Callable[[], str | None]
    feed: ChangeFeed
    clock: Callable[[], datetime]

    def check(self) -> None:
        """UNAVAILABLE, with the reason, when the projections have stopped."""
        reason = self.failure()
        if reason:
            raise StorageUnavailable(f"the projections stopped: {reason}")

    def now(self, as_of: Timestamp, has_as_of: bool) -> datetime:
        """The request's "now": its ``as_of``, or the node's time."""
        return as_of.ToDatetime(tzinfo=UTC) if has_as_of else self.clock()


def _region_scope(caller: Caller, requested: str, node_region: str) -> str:
    """The region a caller reads: the requested one, which must lie inside a supervisor's."""
    caller.require(Role.SUPERVISOR, Role.AUDITOR)
    own = caller.identity.region if caller.identity is not None else ""
    region = requested or own or node_region
    code = RegionCode.parse(region, "region")
    if own and not RegionCode.parse(own).contains(code):
        raise PermissionRefused(
            caller.name or "", f"a supervisor of {own} reads {own} and the regions inside it"
        )
    return code.short


def _hall_scope(caller: Caller, hall_id: str, access: Any) -> str:
    """The hall whose queue a caller reads (a hall: its own; a supervisor: one in its region)."""
    caller.require(Role.HALL, Role.SUPERVISOR, Role.AUDITOR)
    if caller.role is Role.HALL:
        if hall_id and hall_id != caller.name:
            raise PermissionRefused(caller.name or "", "a hall reads its own queue only")
        if caller.name is not None:
            access.app.reading_hall(caller.name)  # a retired hall reads nothing
        return caller.name or ""
    if not hall_id:
        raise InvalidInput("hall_id", hall_id, "name the hall whose queue to list")
    if caller.role is Role.SUPERVISOR and caller.identity is not None:
        region = access.hall_region(hall_id)
        own = RegionCode.parse(caller.identity.region)
        if region is None or not own.contains(RegionCode(region)):
            raise PermissionRefused(
                caller.name or "", f"hall {hall_id} is not in region {own.short}"
            )
    return hall_id


def _states(numbers: Any, field: str) -> tuple[CaseState, ...]:
    return tuple(
        enum_from_proto(CaseState, number, f"{field}[{i}]") for i, number in enumerate(numbers)
    )


def _stamp(text: str | None) -> Timestamp | None:
    if text is None:
        return None
    moment = from_iso(text)
    return None if moment is None else timestamp_to_proto(moment)


def queue_entry(row: CaseRow, hall_id: str, as_of: datetime) -> case_exchange_pb2.QueueEntry:
    """A queue entry from a case row, "now" being ``as_of``."""
    used = row.working_days_used(as_of)
    entry = case_exchange_pb2.QueueEntry(
        case_id=row.case_id,
        state=enum_to_proto(CaseState[row.state]),
        item_code=row.item_code,
        item_name=row.item_name,
        awaiting_acknowledgement=row.pending_receiver == hall_id,
        window="" if row.pending_receiver == hall_id else row.holder_window,
        kind=enum_to_proto(CaseKind[row.kind]),
        overdue=row.overdue(as_of),
        paused=row.paused,
        working_days_used=0.0 if math.isnan(used) else round(used, 4),
        promised_days=row.promised_days,
        warnings=[enum_to_proto(kind) for kind in row.warnings],
        calendar_note=row.calendar_note,
    )
    for name, column in (("since", "last_step_at"), ("received_at", "received_at"),
                         ("due_at", "due_at")):  # fmt: skip
        stamp = _stamp(getattr(row, column))
        if stamp is not None:
            getattr(entry, name).CopyFrom(stamp)
    return entry


class QueueQueries:
    """ListQueue and WatchQueue of the CaseExchange service."""

    def __init__(self, app: Any, access: ProjectionAccess, authenticate: Authenticator) -> None:
        self.app = app
        self.access = access
        self.authenticate = authenticate
        self._reads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="queue-read")

    def hall_region(self, hall_id: str) -> str | None:
        """The region of a registered hall (None: no such hall)."""
        try:
            return str(self.app.get_hall(hall_id).region)
        except NotFound:
            return None

    def list_queue(self, request: Any, context: Any) -> case_exchange_pb2.ListQueueResponse:
        """ListQueue (see the .proto)."""

        def run() -> case_exchange_pb2.ListQueueResponse:
            caller = Caller(self.authenticate(context))
            hall_id = _hall_scope(caller, request.hall_id, self)
            self.access.check()
            as_of = self.access.now(request.as_of, request.HasField("as_of"))
            page = queries.queue(
                self.access.store,
                hall_id,
                as_of=as_of,
                window=request.window,
                operator=request.operator,
                wanted=CaseFilter(
                    states=_states(request.states, "states"),
                    overdue=request.overdue,
                    item_code=request.item_code,
                    channels=_channels(request.channels),
                ),
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return case_exchange_pb2.ListQueueResponse(
                entries=[queue_entry(row, hall_id, as_of) for row in page.entries],
                next_page_token=page.next_token,
                position=page.position,
            )

        return guard(context, run)

    async def watch_queue(self, request: Any, context: Any) -> AsyncIterator[Any]:
        """WatchQueue (see the .proto): the listing, then each change."""
        loop = asyncio.get_running_loop()
        caller = Caller(self.authenticate(context))
        hall_id = await loop.run_in_executor(
            self._reads, _hall_scope, caller, request.hall_id, self
        )
        self.access.check()
        store, window, operator = self.access.store, request.window, request.operator

        def listing() -> tuple[list[CaseRow], int]:
            entries: list[CaseRow] = []
            token = ""
            position = queries.position(store, "cases")
            while True:
                page = queries.queue(
                    store, hall_id, as_of=self.access.clock(), window=window,
                    operator=operator, page_size=queries.MAX_PAGE, page_token=token,
                )  # fmt: skip
                entries += page.entries
                token = page.next_token
                if not token:
                    return entries, position

        rows, position = await loop.run_in_executor(self._reads, listing)
        known = {row.case_id for row in rows}
        now = self.access.clock()
        for row in rows:
            yield case_exchange_pb2.QueueUpdate(
                entry=queue_entry(row, hall_id, now), snapshot=True, position=position
            )
        yield case_exchange_pb2.QueueUpdate(snapshot_done=True, position=position)
        by_operator = bool(operator) and not window
        served = await self._served(hall_id, operator) if by_operator else None
        while True:
            await self.access.feed.wait()
            self.access.check()
            now = self.access.clock()
            if by_operator:
                serving = await self._served(hall_id, operator)
                if serving != served:
                    # The AB posts changed: the operator's windows are others now.
                    served = serving
                    rows, listed_at = await loop.run_in_executor(self._reads, listing)
                    position = max(position, listed_at)
                    listed = {row.case_id for row in rows}
                    for case_id in sorted(known - listed):
                        yield _removed(case_id, position)
                    for row in rows:
                        if row.case_id not in known:
                            yield case_exchange_pb2.QueueUpdate(
                                entry=queue_entry(row, hall_id, now), position=position
                            )
                    known = listed
                    continue
            changed = await loop.run_in_executor(
                self._reads, queries.changed_since, store, hall_id, position, set(known)
            )
            for row in changed:
                position = max(position, row.position)
                if queries.in_queue(row, hall_id) and _at_windows(row, hall_id, window, served):
                    known.add(row.case_id)
                    yield case_exchange_pb2.QueueUpdate(
                        entry=queue_entry(row, hall_id, now), position=row.position
                    )
                elif row.case_id in known:
                    known.discard(row.case_id)
                    yield _removed(row.case_id, row.position)

    async def _served(self, hall_id: str, operator: str) -> set[str]:
        loop = asyncio.get_running_loop()
        windows = await loop.run_in_executor(
            self._reads, queries.windows_served, self.access.store, hall_id, operator
        )
        return set(windows)


def _removed(case_id: str, position: int) -> case_exchange_pb2.QueueUpdate:
    return case_exchange_pb2.QueueUpdate(
        entry=case_exchange_pb2.QueueEntry(case_id=case_id), removed=True, position=position
    )


def _at_windows(row: CaseRow, hall_id: str, window: str, served: set[str] | None) -> bool:
    """Whether ``row`` is at the watched windows (or awaiting the hall, for an operator)."""
    if window:
        return row.holder == hall_id and row.holder_window == window
    if served is not None:
        return row.pending_receiver == hall_id or (
            row.holder == hall_id and row.holder_window in served
        )
    return True


class SupervisionServicer:
    """The Supervision service (see supervision.proto)."""

    def __init__(
        self, app: Any, access: ProjectionAccess, authenticate: Authenticator, node_region: str
    ) -> None:
        self.app = app
        self.access = access
        self.authenticate = authenticate
        self.node_region = node_region

    def _region(self, context: Any, requested: str) -> str:
        region = _region_scope(Caller(self.authenticate(context)), requested, self.node_region)
        self.app.regions.validate(region, "region")  # a code the registry knows
        self.access.check()
        return region

    def ListCases(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> supervision_pb2.ListCasesResponse:
            region = self._region(context, request.region)
            as_of = self.access.now(request.as_of, request.HasField("as_of"))
            page = queries.cases(
                self.access.store,
                region=region,
                as_of=as_of,
                hall_id=request.hall_id,
                wanted=CaseFilter(
                    states=_states(request.states, "states"),
                    overdue=request.overdue,
                    near_deadline=request.near_deadline,
                    item_code=request.item_code,
                    channels=_channels(request.channels),
                ),
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return supervision_pb2.ListCasesResponse(
                cases=[case_summary(row, as_of) for row in page.entries],
                next_page_token=page.next_token,
                position=page.position,
            )

        return guard(context, run)

    def ListWarnings(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> supervision_pb2.ListWarningsResponse:
            region = self._region(context, request.region)
            kind = enum_from_proto(WarningKind, request.kind, "kind") if request.kind else None
            page = queries.warnings(
                self.access.store, region=region, kind=kind, page_size=request.page_size,
                page_token=request.page_token,
            )  # fmt: skip
            return supervision_pb2.ListWarningsResponse(
                warnings=[
                    supervision_pb2.WarningEntry(
                        case_id=w.case_id,
                        kind=enum_to_proto(w.kind),
                        due_at=timestamp_to_proto(w.due_at),
                        recorded_at=timestamp_to_proto(w.recorded_at),
                        hall_id=w.hall_id,
                        window=w.window,
                        item_code=w.item_code,
                        item_name=w.item_name,
                        region=w.region,
                    )
                    for w in page.entries
                ],
                next_page_token=page.next_token,
                position=page.position,
            )

        return guard(context, run)

    def ListRatings(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> supervision_pb2.ListRatingsResponse:
            region = self._region(context, request.region)
            as_of = self.access.now(request.as_of, request.HasField("as_of"))
            page = queries.ratings(
                self.access.store, region=region, bad_only=request.bad_only,
                open_only=request.open_only, page_size=request.page_size,
                page_token=request.page_token,
            )  # fmt: skip
            entries = []
            for r in page.entries:
                entry = supervision_pb2.RatingEntry(
                    case_id=r.case_id, rating=enum_to_proto(Rating[r.rating]),
                    channel=enum_to_proto(RatingChannel[r.channel]),
                    rated_at=timestamp_to_proto(r.rated_at), hall_id=r.hall_id, window=r.window,
                    item_code=r.item_code, item_name=r.item_name, comment=r.comment,
                    rectification=r.rectification, report=r.report, follow_up=r.follow_up,
                    overdue=r.overdue(as_of),
                )  # fmt: skip
                if r.rectification_due_at is not None:
                    entry.rectification_due_at.CopyFrom(timestamp_to_proto(r.rectification_due_at))
                if r.rectified_at is not None:
                    entry.rectified_at.CopyFrom(timestamp_to_proto(r.rectified_at))
                entries.append(entry)
            return supervision_pb2.ListRatingsResponse(
                ratings=entries, next_page_token=page.next_token, position=page.position
            )

        return guard(context, run)

    def GetStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> supervision_pb2.StatisticsResponse:
            region = self._region(context, request.region)
            by = supervision_pb2.Dimension.Name(request.by).removeprefix("DIMENSION_").lower()
            if by == "unspecified":
                raise InvalidInput("by", "DIMENSION_UNSPECIFIED", "choose how to group")
            rows, total = queries.statistics(
                self.access.store, self.access.names, region=region, by=by,
                from_day=request.from_day, to_day=request.to_day,
            )  # fmt: skip
            return supervision_pb2.StatisticsResponse(
                rows=[
                    supervision_pb2.StatisticsRow(
                        key=row.key, label=row.label, figures=figures_to_proto(row.figures)
                    )
                    for row in rows
                ],
                total=figures_to_proto(total),
                position=queries.position(self.access.store, "statistics"),
            )

        return guard(context, run)

    def RankWindows(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> supervision_pb2.RankWindowsResponse:
            region = self._region(context, request.region)
            month = request.month or self.access.clock().astimezone(CHINA_TIME).strftime("%Y-%m")
            ranked = queries.rank_windows(
                self.access.store, self.access.names, region=region, month=month,
                limit=request.limit,
            )  # fmt: skip
            return supervision_pb2.RankWindowsResponse(
                windows=[
                    supervision_pb2.WindowRank(
                        rank=w.rank,
                        hall_id=w.hall_id,
                        hall_name=w.hall_name,
                        window=w.window,
                        received=w.received,
                        on_time_rate=w.on_time_rate,
                        satisfaction_rate=w.satisfaction_rate,
                        score=w.score,
                    )
                    for w in ranked
                ],
                month=month,
                position=queries.position(self.access.store, "statistics"),
            )

        return guard(context, run)


#: Counters whose wire name says more than the column's.
_FIGURE_FIELDS = {"on_time": "concluded_on_time", "bad": "bad_ratings"}


def figures_to_proto(figures: queries.Figures) -> supervision_pb2.Figures:
    """Counters and rates on the wire."""
    counts = {_FIGURE_FIELDS.get(name, name): value for name, value in figures.counts.items()}
    return supervision_pb2.Figures(
        **counts,
        on_time_rate=figures.on_time_rate,
        satisfaction_rate=figures.satisfaction_rate,
        active_rating_rate=figures.active_rating_rate,
        online_rate=figures.online_rate,
    )


def _channels(numbers: Sequence[int]) -> tuple[IntakeChannel, ...]:
    """The intake channels a request filters by (each named by its field when unknown)."""
    return tuple(
        enum_from_proto(IntakeChannel, number, f"channels[{index}]")
        for index, number in enumerate(numbers)
    )


def case_summary(row: CaseRow, as_of: datetime) -> supervision_pb2.CaseSummary:
    """A case as supervision sees it, "now" being ``as_of``."""
    used = row.working_days_used(as_of)
    summary = supervision_pb2.CaseSummary(
        case_id=row.case_id, state=enum_to_proto(CaseState[row.state]), item_code=row.item_code,
        item_name=row.item_name, kind=enum_to_proto(CaseKind[row.kind]),
        mode=enum_to_proto(CrossRegionMode[row.mode]), intake_region=row.intake_region,
        competent_region=row.competent_region, intake_hall=row.intake_hall, holder=row.holder,
        window=row.holder_window, overdue=row.overdue(as_of), paused=row.paused,
        working_days_used=0.0 if math.isnan(used) else round(used, 4),
        promised_days=row.promised_days, warnings=[enum_to_proto(k) for k in row.warnings],
        calendar_note=row.calendar_note,
        channel=enum_to_proto(IntakeChannel[row.channel or IntakeChannel.UNSPECIFIED.name]),
        origin_channel=enum_to_proto(
            IntakeChannel[row.origin_channel or IntakeChannel.UNSPECIFIED.name]
        ),
    )  # fmt: skip
    if row.rating:
        summary.rating = enum_to_proto(Rating[row.rating])
    for name, column in (("received_at", "received_at"), ("due_at", "due_at"),
                         ("statutory_due_at", "statutory_due_at"),
                         ("concluded_at", "concluded_at")):  # fmt: skip
        stamp = _stamp(getattr(row, column))
        if stamp is not None:
            getattr(summary, name).CopyFrom(stamp)
    return summary


def add_supervision_service(
    app: Any, access: ProjectionAccess, node_region: str
) -> Callable[[Any, Authenticator, StreamLimit], str]:
    """A NodeServer extra service: registers Supervision on the server."""

    def add(server: Any, authenticate: Authenticator, streams: StreamLimit) -> str:
        servicer = SupervisionServicer(app, access, authenticate, node_region)
        return add_service(server, servicer, SUPERVISION, streams)

    return add


__all__ = [
    "SUPERVISION",
    "ChangeFeed",
    "ProjectionAccess",
    "QueueQueries",
    "SupervisionServicer",
    "add_supervision_service",
    "case_summary",
    "figures_to_proto",
    "queue_entry",
]

"""Running a projection: follow the notification log in batches, exactly once, woken by the store.

Each projection is an ``eventsourcing`` :class:`~eventsourcing.projection.Projection`: a
``process_event(domain_event, tracking)`` per event type over a tracking-recorder view
(:mod:`hub.projections.store`). The library's ``ProjectionRunner`` processes one event per
transaction; :class:`ProjectionRunner` here runs the same projections in batches (up to
``batch_size`` events, their rows and the batch's tracking record in one transaction), because
one commit per event would make a rebuild of a large log many times slower than reading it (see
``benchmarks/projections.py``). It uses the library's parts for the rest: the recorder's
``select_notifications`` to read, its ``subscribe`` (PostgreSQL LISTEN/NOTIFY) to be woken when
events are stored, the tracking recorders to record positions.

Guarantees:

* **Exactly once, in order.** The rows a batch writes and its position commit together; a batch
  that fails writes nothing.
* **Never skips.** An event the projection cannot apply stops it: the events before it in the
  batch are committed, the runner records a :class:`~hub.errors.ProjectionFailed` naming the
  notification id, reports it in the metrics, and the node's health says why.
* **One writer.** Each batch takes the projection's lock and checks, inside its transaction,
  that the position is still the one it read from; a rebuild that ran meanwhile makes it start
  again from the rebuilt position.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import typing
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import (
    Mapper,
    Notification,
    Tracking,
)
from eventsourcing.projection import Projection

from hub import telemetry
from hub.application.log_watch import LogWatch
from hub.application.storage import passing
from hub.domain.case import Case
from hub.domain.codec import event_mapper
from hub.errors import ProjectionFailed
from hub.projections.store import Cursor, Dialect, ProjectionStore

log = logging.getLogger("tongban.projections")

#: The application whose log the projections follow (its notification log's name).
SOURCE = "Tongban"

#: Seconds between two measures of a busy projection's lag (the follower-lag metric).
LAG_EVERY = 0.5

#: The ``settle`` time of the projections nobody waits on while a case moves (statistics, 代办
#: agents): up to a quarter second of a busy node's steps in one batch (ViewProjection.settle).
BUSY_SETTLE = 0.25
#: A settling projection takes its next batch at once when no event arrived for this long: a
#: node that goes quiet has its views caught up within it, however long the settle time.
SETTLE_QUIET = 0.05


class CaseHistories:
    """Each case as it stands after an event, kept in memory for the cases seen recently.

    A projection derives its rows from the :class:`~hub.domain.case.Case` aggregate itself, so
    the lifecycle's rules live in one place (the aggregate's ``apply`` methods). A case not in
    memory is rebuilt from its own stored events below the event's version: versions never
    change, so this is the same state the log gives at that point.
    """

    def __init__(self, load: Callable[[UUID, int], Sequence[Any]], size: int = 10_000) -> None:
        self._load = load
        self._size = size
        self._cases: OrderedDict[UUID, Case] = OrderedDict()

    def apply(self, event: Any) -> Case:
        """The case after ``event`` (a Case event)."""
        case_id, version = event.originator_id, event.originator_version
        case = self._cases.get(case_id)
        if case is None or case.version != version - 1:
            case = None
            for stored in self._load(case_id, version - 1):
                case = stored.mutate(case)
        case = typing.cast(Case, event.mutate(case))
        self._cases[case_id] = case
        self._cases.move_to_end(case_id)
        while len(self._cases) > self._size:
            self._cases.popitem(last=False)
        return case

    def forget(self) -> None:
        """Drop everything (after a batch was rolled back, memory may be ahead of the rows)."""
        self._cases.clear()


class ViewProjection(Projection[Any]):
    """A projection into tables: :meth:`process_event` per event inside a batch's transaction.

    Subclasses name their tables and write their rows through ``self.cursor`` (valid between
    :meth:`start_batch` and :meth:`finish_batch`).
    """

    name = ""
    #: The projection's tables (dropped and created again by a rebuild).
    tables: ClassVar[tuple[str, ...]] = ()
    #: At most this many seconds from the start of one batch to the next while events keep
    #: arriving (0: each batch as soon as events arrive). A projection off the path of a case's
    #: steps, read by nobody waiting on a step (statistics, 代办 agents), gathers a busy node's
    #: events into a few batches this way: each batch is a transaction with its own position
    #: checks and tracking write, whatever its size, and one per stored step was about a fifth
    #: of a busy node's statements (``benchmarks/README.md``). The wait ends as soon as no
    #: event arrived for SETTLE_QUIET seconds, and the first event after a quiet spell is taken
    #: at once: a view lags the log by at most ``settle`` while the node is busy, and by at
    #: most SETTLE_QUIET once it is not. Only where the store notifies (PostgreSQL).
    settle: ClassVar[float] = 0.0

    def __init__(self, view: ProjectionStore) -> None:
        super().__init__(view)
        #: Where the projection's rows and tracking record are written.
        self.store = view
        self.dialect: Dialect = view.dialect
        #: True during a rebuild: all its batches are one transaction, so a projection may keep
        #: rows back across batches and write them once, in finish_rebuild.
        self.rebuilding = False
        self._cursor: Cursor | None = None

    @property
    def cursor(self) -> Cursor:
        """The open batch's cursor."""
        assert self._cursor is not None, "process_event outside a batch"
        return self._cursor

    def sql(self, text: str) -> str:
        """``text`` with the store's placeholders."""
        return self.dialect.sql(text)

    def create_statements(self) -> list[str]:
        """The projection's CREATE TABLE / CREATE INDEX statements (IF NOT EXISTS)."""
        raise NotImplementedError

    def outdated(self, cursor: Cursor) -> bool:
        """Whether the stored tables have an older shape than this version writes (then the
        node rebuilds the projection from the log when it starts: ``Projections.create_tables``).
        """
        return False

    def start_batch(self, cursor: Cursor) -> None:
        """Begin a batch inside the transaction of ``cursor``."""
        self._cursor = cursor

    def finish_batch(self) -> None:
        """Write what the batch gathered (still inside its transaction)."""
        self._cursor = None

    def finish_rebuild(self, cursor: Cursor) -> None:
        """Write whatever the batches of a rebuild kept back (see ``rebuilding``)."""

    def forget(self) -> None:
        """Drop in-memory state: the batch's transaction was rolled back."""
        self._cursor = None

    def refresh(self, cursor: Cursor) -> int:
        """Recompute what depends on the installed library versions (e.g. the calendar)."""
        return 0

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Apply one event (subclasses dispatch on its type; others are ignored)."""


class ProjectionRunner:
    """Follows the node's log into one projection (see the module docstring)."""

    def __init__(
        self,
        projection: ViewProjection,
        recorder: Any,
        *,
        batch_size: int = 500,
        mapper: Mapper[Any] | None = None,
    ) -> None:
        self.projection = projection
        self.store = projection.store
        self.recorder = recorder
        self.batch_size = batch_size
        self.mapper = mapper or event_mapper()
        self.name = projection.name
        #: The tracking name: the log followed, and the projection.
        self.tracking_name = f"{SOURCE}:{projection.name}"
        #: Why the projection stopped for good, if it did.
        self.failure: ProjectionFailed | None = None
        #: Called (from the runner's thread) after each committed batch, with the position.
        self.on_advance: Callable[[int], None] | None = None
        #: The position as of this runner's last commit (None: read it from the store). Each
        #: batch's transaction checks it against the stored one, so a rebuild elsewhere is
        #: noticed; keeping it saves a read transaction for every look at the log.
        self._known: int | None = None
        self._lag_at = 0.0  # when the lag was last measured (_report)

    @property
    def position(self) -> int:
        """The last notification id the projection has processed (0 before the first)."""
        return self.store.max_tracking_id(self.tracking_name) or 0

    # ------------------------------------------------------------------ batches

    def step(self) -> int:
        """Process the next batch; returns how many notifications it read (0: caught up).

        Raises :class:`~hub.errors.ProjectionFailed` at an event that cannot be applied, after
        committing the ones before it.
        """
        expected = self._known if self._known is not None else self.position
        notifications = list(
            self.recorder.select_notifications(
                start=expected,
                limit=self.batch_size,
                topics=self.projection.topics,
                inclusive_of_start=False,
            )
        )
        if not notifications:
            return 0
        self._known = None  # until the batch commits: a failure reads the position again
        try:
            self._commit(expected, notifications)
        except _Moved:
            self.projection.forget()
            return 0
        except Exception as error:
            self.projection.forget()
            if transient(error):
                raise
            self._find_failure(expected, notifications)
        self._known = notifications[-1].id
        if self.on_advance is not None:
            self.on_advance(notifications[-1].id)
        return len(notifications)

    def _find_failure(self, expected: int, notifications: list[Notification]) -> None:
        """Apply a failed batch one event per transaction: commit the events before the one
        that fails, then stop there (ProjectionFailed)."""
        position = expected
        for notification in notifications:
            try:
                self._commit(position, [notification])
            except Exception as error:
                self.projection.forget()
                if transient(error) or isinstance(error, _Moved):
                    raise
                cause = error.error if isinstance(error, _EventFailed) else error
                self.failure = ProjectionFailed(
                    self.name, notification.id, f"{type(cause).__name__}: {cause}"
                )
                raise self.failure from cause
            position = notification.id
            if self.on_advance is not None:
                self.on_advance(position)

    def _commit(self, expected: int, notifications: list[Notification]) -> None:
        def work(cursor: Cursor) -> None:
            self.store.lock(cursor, self.name)
            if self.store.position_in(cursor, self.tracking_name) != expected:
                raise _Moved  # rebuilt meanwhile: read again from the new position
            self._apply(cursor, notifications)

        self.store.write(work, Tracking(self.tracking_name, notifications[-1].id))

    def _apply(self, cursor: Cursor, notifications: list[Notification]) -> None:
        self.projection.start_batch(cursor)
        for notification in notifications:
            try:
                event = self.mapper.to_domain_event(notification)
                self.projection.process_event(event, Tracking(self.tracking_name, notification.id))
            except Exception as error:
                if transient(error):
                    raise
                raise _EventFailed(notification.id, error) from error
        self.projection.finish_batch()

    def catch_up(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Process everything stored so far; returns the position reached."""
        total = self.recorder.max_notification_id() or 0
        while self.step():
            if progress is not None:
                progress(self.position, total)
        return self.position

    def refresh(self) -> int:
        """Recompute what depends on the installed calendar (see ViewProjection.refresh)."""

        def work(cursor: Cursor) -> int:
            self.store.lock(cursor, self.name)
            return self.projection.refresh(cursor)

        return self.store.write(work)

    # ------------------------------------------------------------------ rebuild

    def rebuild(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Drop the projection's tables and build them again from the whole log, in one
        transaction (readers see the old tables until it commits); returns the position."""
        total = self.recorder.max_notification_id() or 0
        reached = 0
        self._known = None

        def work(cursor: Cursor) -> None:
            nonlocal reached
            self.store.long_transaction(cursor)
            self.store.lock(cursor, self.name)
            for table in self.projection.tables:
                cursor.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in self.projection.create_statements():
                cursor.execute(statement)
            self.store.forget_position(cursor, self.tracking_name)
            self.projection.forget()
            self.projection.rebuilding = True
            while True:
                batch = list(
                    self.recorder.select_notifications(
                        start=reached,
                        limit=self.batch_size,
                        topics=self.projection.topics,
                        inclusive_of_start=False,
                    )
                )
                if not batch:
                    break
                self._apply(cursor, batch)
                reached = batch[-1].id
                if progress is not None:
                    progress(reached, total)
            self.projection.finish_rebuild(cursor)

        def tracking() -> Tracking | None:
            return Tracking(self.tracking_name, reached) if reached else None

        try:
            self.store.write(work, tracking)
        except _EventFailed as failed:
            self.projection.forget()
            raise ProjectionFailed(self.name, failed.notification_id, failed.reason) from None
        except BaseException:
            self.projection.forget()
            raise
        finally:
            self.projection.rebuilding = False
        self.failure = None
        return reached

    # ------------------------------------------------------------------ following

    def run(
        self, stop: threading.Event, idle_wait: float = 0.05, watch: LogWatch | None = None
    ) -> None:
        """Follow the log until ``stop`` is set or an event cannot be applied.

        Woken by the store's notifications on PostgreSQL (``watch``, shared by the followers of
        a process; one of its own when none is given); on SQLite, which notifies nobody, it
        looks every ``idle_wait`` seconds. A projection with a ``settle`` time holds its next
        batch back while events keep arriving (:meth:`_settle`), except to work off a backlog.
        Reports its lag and failure in the metrics.
        """
        with contextlib.suppress(Exception):
            self.refresh()
        arrived = threading.Event()
        own = watch is None
        watch = watch or LogWatch(self.recorder)
        telemetry.FOLLOWER_FAILED.labels(self.name).set(0)
        try:
            with watch.watching(arrived, stop, self.projection.topics) as notifies:
                next_batch_at = 0.0  # monotonic: not after (settle)
                while not stop.is_set():
                    if notifies and self._settle(next_batch_at, arrived, stop):
                        return
                    arrived.clear()
                    next_batch_at = time.monotonic() + self.projection.settle
                    try:
                        read = self.step()
                    except ProjectionFailed as failure:
                        telemetry.FOLLOWER_FAILED.labels(self.name).set(1)
                        log.error("projection stopped: %s", failure)
                        return
                    except Exception as error:  # the store is down: retried from the position
                        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                        log.warning("projection %s: step failed (%s); retrying", self.name, reason)
                        stop.wait(1.0)
                        continue
                    self._report(read)
                    if read >= self.batch_size:
                        next_batch_at = 0.0  # a backlog: the next batch at once
                    if read:
                        continue
                    if notifies:
                        arrived.wait()
                    else:
                        stop.wait(idle_wait)
        finally:
            if own:
                watch.stop()

    def _settle(self, until: float, arrived: threading.Event, stop: threading.Event) -> bool:
        """Hold the next batch back until ``until`` (monotonic) while events keep arriving:
        no event for SETTLE_QUIET seconds ends the wait at once. True when ``stop`` was set
        (it sets ``arrived`` too)."""
        while not stop.is_set():
            left = until - time.monotonic()
            if left <= 0:
                return False
            arrived.clear()
            if not arrived.wait(min(SETTLE_QUIET, left)):
                return False  # quiet: take what is there now
        return True

    def _report(self, read: int) -> None:
        if not read:
            telemetry.FOLLOWER_LAG.labels(self.name).set(0)
            return
        # The lag costs a read of the log's end: while the projection is busy, at most every
        # LAG_EVERY seconds (a read per batch was a round trip per stored step).
        now = time.monotonic()
        if now - self._lag_at < LAG_EVERY:
            return
        self._lag_at = now
        try:
            position = self._known if self._known is not None else self.position
            lag = max(0, (self.recorder.max_notification_id() or 0) - position)
        except Exception:  # the metric is best effort
            lag = 0
        telemetry.FOLLOWER_LAG.labels(self.name).set(lag)


def transient(error: BaseException) -> bool:
    """Whether ``error`` means the store was unreachable or busy (retry), rather than an event
    the projection cannot apply (stop)."""
    return not isinstance(error, _EventFailed) and passing(error)


class _Moved(Exception):
    """The tracked position changed under the batch (a rebuild ran): start again."""


class _EventFailed(Exception):
    def __init__(self, notification_id: int, error: Exception) -> None:
        super().__init__(notification_id, error)
        self.notification_id = notification_id
        self.error = error
        self.reason = f"{type(error).__name__}: {error}"


__all__ = [
    "BUSY_SETTLE",
    "SETTLE_QUIET",
    "SOURCE",
    "CaseHistories",
    "ProjectionRunner",
    "ViewProjection",
]

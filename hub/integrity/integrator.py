"""The ledger integrator: follows the notification log and appends one leaf per stored event —
a gate, not a scribe.

The event store's notification log is the node's sequencer. The integrator reads it in batches
and, before an event becomes a leaf, puts it through the same binding check an auditor runs
(:class:`~hub.integrity.binding.LogChecker`): a command record must carry a valid signature of
the signer's current key over a command for this node; every other event must be produced by
the command recorded just before it, as that command asks, from a state that allows it. An
event that fails is **not** integrated: the integrator stops, says which notification and why
(:class:`~hub.errors.IntegrityViolation`), and the node's health turns NOT_SERVING.

Leaves are appended **in the same database transaction** as the tracking record (the
``eventsourcing`` library's tracking, as for any projection), so a crash keeps both or neither.
A checkpoint is signed every ``checkpoint_every`` leaves or ``checkpoint_interval`` seconds, or
sooner when a follower in the same process asks for one
(:meth:`LedgerIntegrator.request_checkpoint`: the relay's envelopes wait for a checkpoint over
their step), at most every ``REQUESTED_CHECKPOINT_GAP`` seconds.

The node remembers the last checkpoint it signed in its data directory (:class:`HeadGuard`),
where a database restore does not reach: it refuses to start or to sign when the stored log is
behind that checkpoint or disagrees with it, so a restored backup can never make it sign a
second, inconsistent checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from eventsourcing.persistence import Notification, StoredEvent, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import get_topic
from psycopg.rows import tuple_row
from psycopg.sql import SQL

from hub import telemetry
from hub.application.hub import HubApplication
from hub.application.log_watch import LogWatch
from hub.application.postgres_store import uses_postgres
from hub.domain.hall import Hall
from hub.domain.status_lists import CERTIFICATE_TOPICS
from hub.errors import IntegrityViolation, StoreMismatch
from hub.integrity.binding import AGENT_TOPICS, BOOKING_TOPICS, NODE_TOPICS, LogChecker
from ledger import (
    Checkpoint,
    Leaf,
    LedgerError,
    Signer,
    Verifier,
    open_checkpoint,
    sign_checkpoint,
)
from ledger.storage import Cursor, LedgerTables

log = logging.getLogger("tongban.integrator")

#: The shortest time between two checkpoints signed because a follower asked for one: an
#: envelope waits at most this long for a checkpoint over its step (beyond integration), while a
#: node that relays continuously signs at most 1 / REQUESTED_CHECKPOINT_GAP checkpoints a second.
REQUESTED_CHECKPOINT_GAP = 0.05

#: Seconds between two reports of the integrator's lag while it integrates without a pause.
REPORT_EVERY = 0.5

T = TypeVar("T")

#: A tracking record, or a function that gives it after the transaction's work has run.
TrackingSource = Tracking | Callable[[], Tracking | None] | None

#: Topics whose events define who may sign (replayed at start-up to rebuild the key history),
#: and which agents (代办员) each hall has.
_KEY_TOPICS = [
    *NODE_TOPICS,
    *(get_topic(c) for c in (Hall.Registered, Hall.KeyRotated, Hall.Retired)),
    *AGENT_TOPICS,
]


class LedgerView(Protocol):
    """A tracking recorder that also holds the ledger's tables."""

    tables: LedgerTables

    def write(self, work: Callable[[Cursor], T], tracking: TrackingSource = None) -> T:
        """Run ``work`` in one committed transaction, recording ``tracking`` in it too.

        ``tracking`` may be a function called after ``work``, when the position to record is
        only known once ``work`` has run.
        """

    def read(self, work: Callable[[Cursor], T]) -> T:
        """Run ``work`` in a read-only transaction."""

    def reading(self) -> contextlib.AbstractContextManager[None]:
        """Within it, this thread's :meth:`read` calls share one transaction (fewer round trips
        for a follower that reads many things at once, as the relay's publisher does)."""

    def max_tracking_id(self, application_name: str) -> int | None:
        """The last notification id integrated."""

    def position_in(self, cursor: Cursor, application_name: str) -> int:
        """The last notification id integrated, as this transaction sees it (0 before any)."""


class PostgresLedgerView(PostgresTrackingRecorder):
    """Ledger tables and tracking in the node's PostgreSQL database."""

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.tables = LedgerTables("postgres")
        self._shared = threading.local()  # a thread's shared read transaction (reading())
        self.sql_create_statements.extend(
            SQL(statement).format() for statement in self.tables.create_statements()
        )

    def write(self, work: Callable[[Cursor], T], tracking: TrackingSource = None) -> T:
        with self.datastore.transaction(commit=True) as curs:
            # The library's cursors return dict rows; the ledger reads tuples. Same connection,
            # so the same transaction.
            result = work(curs.connection.cursor(row_factory=tuple_row))
            record = tracking() if callable(tracking) else tracking
            if record is not None:
                self._insert_tracking(curs, record)
        return result

    def position_in(self, cursor: Cursor, application_name: str) -> int:
        # The library's statement, as text: the ledger's cursors take plain SQL strings.
        cursor.execute(self.max_tracking_id_statement.as_string(None), (application_name,))
        row = cursor.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def read(self, work: Callable[[Cursor], T]) -> T:
        shared: Cursor | None = getattr(self._shared, "cursor", None)
        if shared is not None:
            return work(shared)
        with self.datastore.transaction(commit=False) as curs:
            return work(curs.connection.cursor(row_factory=tuple_row))

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        # Each BEGIN/COMMIT is a round trip to the server: a publisher's round of envelopes
        # reads leaves and proofs for each, and spent half its time on them. Reads only (READ
        # COMMITTED, as separate transactions would see), and only this thread's.
        if getattr(self._shared, "cursor", None) is not None:
            yield
            return
        with self.datastore.transaction(commit=False) as curs:
            self._shared.cursor = curs.connection.cursor(row_factory=tuple_row)
            try:
                yield
            finally:
                self._shared.cursor = None


class SQLiteLedgerView(SQLiteTrackingRecorder):
    """Ledger tables and tracking in the node's SQLite file."""

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        self.tables = LedgerTables("sqlite")
        super().__init__(datastore, **kwargs)

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *self.tables.create_statements()]

    def write(self, work: Callable[[Cursor], T], tracking: TrackingSource = None) -> T:
        with self.datastore.transaction(commit=True) as curs:
            result = work(curs.sqlite_cursor)
            record = tracking() if callable(tracking) else tracking
            if record is not None:
                self._insert_tracking(curs, record)
        return result

    def position_in(self, cursor: Cursor, application_name: str) -> int:
        cursor.execute(self.select_max_tracking_id_statement, (application_name,))
        row = cursor.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def read(self, work: Callable[[Cursor], T]) -> T:
        with self.datastore.transaction(commit=False) as curs:
            return work(curs.sqlite_cursor)

    def reading(self) -> contextlib.AbstractContextManager[None]:
        # SQLite reads are local calls, not round trips: nothing to share.
        return contextlib.nullcontext()


def open_ledger_view(app: HubApplication) -> LedgerView:
    """The ledger view in the application's own database (tables created if missing)."""
    view_class: type[Any] = PostgresLedgerView if uses_postgres(app.env) else SQLiteLedgerView
    view: Any = app.factory.tracking_recorder(view_class)
    return typing.cast(LedgerView, view)


def event_hash(state: bytes) -> bytes:
    """SHA-256 of the stored event bytes, exactly as stored."""
    return hashlib.sha256(state).digest()


class HeadGuard:
    """The last checkpoint this node signed, kept in its data directory (outside the database).

    :meth:`check` refuses a stored log that is behind that checkpoint (a database restored from
    an older backup) or that has another root at its size (a forked log): signing again would
    make two inconsistent checkpoints. :meth:`record` replaces the file atomically after each
    checkpoint has been committed.
    """

    def __init__(self, path: Path, signer: Signer) -> None:
        self.path = path
        self._verifier = signer.verifier()
        self._origin = signer.name

    def last(self) -> Checkpoint | None:
        """The last checkpoint this node signed, or None before its first."""
        if not self.path.exists():
            return None
        try:
            signed = open_checkpoint(self.path.read_bytes(), [self._verifier], origin=self._origin)
        except (LedgerError, OSError) as error:
            raise StoreMismatch(
                f"{self.path}: not a checkpoint this node signed: {error}"
            ) from None
        return signed.checkpoint

    def check(self, tables: LedgerTables, cursor: Cursor) -> None:
        """Refuse a stored log that does not extend the last checkpoint this node signed."""
        head = self.last()
        if head is None:
            return
        size, _ = tables.state(cursor)
        if size < head.size:
            raise StoreMismatch(
                f"the stored log has {size} leaves but this node signed a checkpoint of "
                f"{head.size} ({self.path}): the database was restored from an older backup or "
                "rolled back. Restore the newest backup (or replay the write-ahead log) so that "
                "nothing the node signed is lost; it will not sign a second, inconsistent log"
            )
        if tables.tree_root(cursor, head.size) != head.root:
            raise StoreMismatch(
                f"the stored log's root at size {head.size} is not the one this node signed "
                f"({self.path}): the database holds another history (a fork or a foreign store)"
            )

    def record(self, note: bytes) -> None:
        """Remember ``note`` (atomically: a temporary file, fsync, rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("wb") as handle:
            handle.write(note)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)


@dataclass(frozen=True)
class BatchResult:
    """What one integration step did."""

    leaves: int
    size: int
    checkpoint: int | None
    note: bytes | None = None
    #: The leaves the step logged (committed by the time listeners hear of them).
    logged: tuple[Leaf, ...] = ()


class _Moved(Exception):
    """The tracked position changed under the batch (another integrator ran): read again."""


class LedgerIntegrator:
    """Appends a checked leaf for every stored event, in notification order; signs checkpoints."""

    def __init__(
        self,
        app: HubApplication,
        view: LedgerView,
        signer: Signer,
        *,
        origin: str,
        head: HeadGuard | None = None,
        batch_size: int = 1000,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 1.0,
        peers: dict[str, Verifier] | None = None,
    ) -> None:
        self.app = app
        #: The federation's log keys, by origin: the gate checks peers' proofs with them.
        self.peers = dict(peers or {})
        self.view = view
        self.signer = signer
        self.origin = origin
        self.head = head
        self.batch_size = batch_size
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self._last_checkpoint_at = time.monotonic()
        self._reported_at = 0.0  # when the lag was last reported (_report)
        #: A follower asked for a checkpoint of what is integrated (request_checkpoint).
        self._checkpoint_wanted = threading.Event()
        #: Wakes the running loop (set while ``run`` runs).
        self._wakeup: threading.Event | None = None
        self._listeners: list[Callable[[BatchResult], None]] = []
        #: Why the integrator stopped for good (an event that may not enter the log), if it did.
        self.failure: str | None = None
        #: The position and the signed checkpoint's size as of this integrator's last step
        #: (None: read them from the store). Kept, they save read transactions for each look at
        #: the log. The position is checked in each batch's transaction (another integrator
        #: that went on meanwhile, such as ``tongban ledger integrate``, is noticed: both are
        #: read again and the checker rebuilt); a stale size only makes the loop look again
        #: when no checkpoint is pending (one is signed over a size not signed yet, as read
        #: in the signing transaction).
        self._known: int | None = None
        self._signed: int | None = None
        if head is not None:
            view.read(lambda cursor: head.check(view.tables, cursor))
        self.checker = self._rebuild_checker()
        #: The checker saw a batch that was not stored: rebuilt before the next step (when the
        #: store is back; rebuilding it right after the failure would fail as well, and the
        #: checker would go on remembering the commands of a batch that was never logged).
        self._checker_stale = False

    @property
    def position(self) -> int:
        """The last notification id integrated (0 before the first)."""
        return self.view.max_tracking_id(self.app.name) or 0

    def request_checkpoint(self) -> None:
        """Sign a checkpoint of what is integrated soon — ``REQUESTED_CHECKPOINT_GAP`` after the
        last one at the latest — rather than when ``checkpoint_interval`` is up. Thread-safe: the
        relay calls it while an envelope waits for a checkpoint over its step."""
        self._checkpoint_wanted.set()
        wakeup = self._wakeup
        if wakeup is not None:
            wakeup.set()

    def add_listener(self, listener: Callable[[BatchResult], None]) -> None:
        """Call ``listener`` after each step that integrated leaves or signed a checkpoint,
        once it committed (the relay wakes its publisher: a message may be ready now)."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ the checker's state

    def _history(self, aggregate_id: Any, version: int) -> list[StoredEvent]:
        return list(self.app.recorder.select_events(aggregate_id, lte=version - 1))

    def _rebuild_checker(self) -> LogChecker:
        """The binding checker as it stood after the last integrated leaf.

        It needs who could sign with which key at which index (the node's genesis and the hall
        registry's events, with their leaf indices) and the command open at the end of the log
        (a command's events may straddle two batches): re-checking the leaves from the last
        command leaf on restores it.
        """
        checker = LogChecker(
            self.origin,
            load_history=self._history,
            peers=self.peers,
            peer_regions=dict(self.app.policy.peers),  # the regions the federation file names
            clock_window=self.app.policy.clock_window,
        )

        def _learn_leaves(cursor: Cursor) -> None:
            # The certificate leaves so far (a published status list is checked against them)
            # and the appointments booked and cancelled (a slot is booked once at a time).
            start = None
            while True:
                batch = self.app.recorder.select_notifications(
                    start=start, limit=500, topics=sorted(CERTIFICATE_TOPICS | BOOKING_TOPICS),
                    inclusive_of_start=start is None,
                )  # fmt: skip
                for note in batch:
                    leaf = self.view.tables.leaf_for(
                        cursor,
                        note.originator_id,  # type: ignore[arg-type]
                        note.originator_version,
                    )
                    if leaf is not None:
                        checker.learn_certificate_leaf(leaf.index, leaf.aggregate_id, leaf.topic)
                        checker.learn_booking(leaf.aggregate_id, leaf.topic)
                if len(batch) < 500:
                    break
                start = batch[-1].id

        def load(cursor: Cursor) -> None:
            size, _ = self.view.tables.state(cursor)
            if size == 0:
                return
            start = None
            while True:
                batch = self.app.recorder.select_notifications(
                    start=start, limit=500, topics=_KEY_TOPICS, inclusive_of_start=start is None
                )
                for note in batch:
                    leaf = self.view.tables.leaf_for(
                        cursor,
                        note.originator_id,  # type: ignore[arg-type]
                        note.originator_version,
                    )
                    if leaf is not None:
                        checker.learn(leaf.index, note)
                if len(batch) < 500:
                    break
                start = batch[-1].id
            _learn_leaves(cursor)
            tail = self.view.tables.leaves(cursor, max(0, size - 64), size)
            last_command = max((leaf.index for leaf in tail if leaf.is_command), default=None)
            if last_command is None:
                return
            for leaf in tail:
                if leaf.index >= last_command:
                    stored = self.app.recorder.select_events(
                        leaf.aggregate_id, gt=leaf.version - 1, lte=leaf.version
                    )
                    checker.check(leaf, stored[0] if stored else None)

        self.view.read(load)
        return checker

    # ------------------------------------------------------------------ integration

    def step(self) -> BatchResult:
        """Integrate the next batch (possibly empty); sign a checkpoint when one is due.

        Raises :class:`~hub.errors.IntegrityViolation` at the first event that may not enter
        the log, after integrating the ones before it.
        """
        if self._checker_stale:
            self.checker = self._rebuild_checker()
            self._checker_stale = False
        # A batch never spans more than checkpoint_every leaves, so a checkpoint is signed at
        # least every checkpoint_every leaves however far behind the integrator is.
        start = self._known if self._known is not None else self.position
        notifications = self.app.recorder.select_notifications(
            start=start,
            limit=min(self.batch_size, self.checkpoint_every),
            inclusive_of_start=False,
        )
        violation: IntegrityViolation | None = None
        integrated: list[Notification] = []

        def work(cursor: Cursor) -> BatchResult:
            nonlocal violation
            size, _ = self.view.tables.state(cursor)
            if self.view.position_in(cursor, self.app.name) != start:
                raise _Moved  # another integrator (``tongban ledger integrate``) went on
            leaves: list[Leaf] = []
            for notification in notifications:
                index = size + len(leaves)
                leaf, problems = self.checker.leaf_for(self.origin, index, notification)
                if problems:
                    violation = IntegrityViolation(
                        index, notification.id, [str(problem) for problem in problems]
                    )
                    break
                leaves.append(leaf)
                integrated.append(notification)
            if leaves:
                size = self.view.tables.append(cursor, leaves)
            signed = self._maybe_checkpoint(cursor, size, crossed=len(leaves))
            if signed is None:
                return BatchResult(len(leaves), size, None, logged=tuple(leaves))
            return BatchResult(len(leaves), size, signed[0], signed[1], logged=tuple(leaves))

        def tracking() -> Tracking | None:
            # Known only once the gate has run: the last notification that became a leaf.
            return Tracking(self.app.name, integrated[-1].id) if integrated else None

        try:
            result = self.view.write(work, tracking)
        except _Moved:
            # What the other integrator logged is unknown here: the checker is rebuilt from the
            # log before the next step.
            self._known = self._signed = None
            self._checker_stale = True
            return BatchResult(
                0, self.view.read(lambda cursor: self.view.tables.state(cursor)[0]), None
            )
        except Exception:
            # Nothing of the batch was stored; the checker must forget what it saw of it.
            self._known = self._signed = None
            self._checker_stale = True
            raise
        self._known = integrated[-1].id if integrated else start
        if result.checkpoint is not None:
            self._signed = result.checkpoint
        if result.note is not None:
            self._last_checkpoint_at = time.monotonic()
            if self.head is not None:
                self.head.record(result.note)
        if result.leaves or result.checkpoint is not None:
            # Committed: the relay in this process hears of the leaves (LeafMemory) and looks
            # at its outbox again.
            for notify in self._listeners:
                notify(result)
        if violation is not None:
            self.failure = str(violation)
            raise violation
        return result

    def _maybe_checkpoint(
        self, cursor: Cursor, size: int, crossed: int
    ) -> tuple[int, bytes] | None:
        latest = self.view.tables.latest_checkpoint(cursor)
        signed = latest.size if latest else 0
        self._signed = signed
        if size == signed:
            return None
        every = self.checkpoint_every
        due_by_count = size // every > (size - crossed) // every or size - signed >= every
        since = time.monotonic() - self._last_checkpoint_at
        due_by_time = since >= self.checkpoint_interval
        due_by_request = self._checkpoint_wanted.is_set() and since >= REQUESTED_CHECKPOINT_GAP
        if not (due_by_count or due_by_time or due_by_request):
            return None
        # Cleared before signing: a request made from now on asks for a later checkpoint.
        self._checkpoint_wanted.clear()
        return self._sign_checkpoint(cursor, size)

    def _sign_checkpoint(self, cursor: Cursor, size: int) -> tuple[int, bytes]:
        if self.head is not None:
            self.head.check(self.view.tables, cursor)
        root = self.view.tables.tree_root(cursor, size)
        note = sign_checkpoint(Checkpoint(self.origin, size, root), self.signer)
        self.view.tables.store_checkpoint(cursor, size, root, note)
        self._signed = None  # known once the transaction commits (the next step reads it)
        return size, note

    def checkpoint_now(self) -> int | None:
        """Sign a checkpoint of everything integrated so far (if not signed already)."""
        signed = self.view.write(self._force_checkpoint)
        if signed is None:
            return None
        if self.head is not None:
            self.head.record(signed[1])
        return signed[0]

    def _force_checkpoint(self, cursor: Cursor) -> tuple[int, bytes] | None:
        size, _ = self.view.tables.state(cursor)
        latest = self.view.tables.latest_checkpoint(cursor)
        if size == 0 or (latest is not None and latest.size == size):
            return None
        return self._sign_checkpoint(cursor, size)

    def catch_up(self) -> int:
        """Integrate everything stored so far and sign a checkpoint of it; returns the size."""
        while self.step().leaves:
            pass
        self.checkpoint_now()
        size: int = self.view.read(lambda cursor: self.view.tables.state(cursor)[0])
        return size

    def run(
        self, stop: threading.Event, idle_wait: float = 0.05, watch: LogWatch | None = None
    ) -> None:
        """Follow the log until ``stop`` is set or an event may not enter the log.

        On PostgreSQL the store's notifications wake it (``watch``, shared by the followers of
        a process; one of its own when none is given): it does nothing while nothing is stored,
        and it still signs a pending checkpoint when its interval is up. On SQLite, which
        notifies nobody, it looks every ``idle_wait`` seconds. Each step reports the lag (stored
        events not yet integrated) in the metrics.
        """
        arrived = threading.Event()
        self._wakeup = arrived
        telemetry.FOLLOWER_FAILED.labels("integrator").set(0)  # a figure from the start
        own = watch is None
        watch = watch or LogWatch(self.app.recorder)
        try:
            with watch.watching(arrived, stop) as notifies:
                while not stop.is_set():
                    arrived.clear()
                    try:
                        result = self.step()
                    except IntegrityViolation as violation:
                        telemetry.FOLLOWER_FAILED.labels("integrator").set(1)
                        log.error("integration stopped: %s", violation)
                        return
                    except StoreMismatch as mismatch:
                        self.failure = str(mismatch)
                        telemetry.FOLLOWER_FAILED.labels("integrator").set(1)
                        log.error("integration stopped: %s", mismatch)
                        return
                    except Exception:  # retried from the tracking position; health says why
                        log.exception("integration step failed; retrying")
                        stop.wait(1.0)
                        continue
                    try:
                        # Both read the store, which may have gone away since the step: the
                        # loop goes on (the next step meets the outage, and retries), rather
                        # than ending the integrator's thread over a metric or a wait.
                        self._report(result)
                        if result.leaves:
                            continue
                        due = self._until_checkpoint_due(result) if notifies else None
                    except Exception as error:
                        log.warning("integrator: the store is unavailable (%s); retrying", error)
                        stop.wait(1.0)
                        continue
                    if not notifies:
                        stop.wait(idle_wait)
                        continue
                    # Wait for the next stored event, or for the pending checkpoint to fall due.
                    arrived.wait(due)
        finally:
            self._wakeup = None
            if own:
                watch.stop()

    def _until_checkpoint_due(self, result: BatchResult) -> float | None:
        """Seconds until a pending checkpoint is due (None: nothing pending)."""
        signed = self._signed
        if signed is None:
            latest = self.view.read(self.view.tables.latest_checkpoint)
            signed = latest.size if latest is not None else 0
        if signed >= result.size or result.size == 0:
            return None
        interval = self.checkpoint_interval
        if self._checkpoint_wanted.is_set():
            interval = min(interval, REQUESTED_CHECKPOINT_GAP)
        return max(0.0, self._last_checkpoint_at + interval - time.monotonic())

    def _report(self, result: BatchResult) -> None:
        telemetry.LEDGER_SIZE.set(result.size)
        # The lag costs two reads: while the integrator is busy (each step a round trip of its
        # own), at most every REPORT_EVERY seconds; whenever it has caught up.
        now = time.monotonic()
        if result.leaves and now - self._reported_at < REPORT_EVERY:
            return
        self._reported_at = now
        stored = self.app.recorder.max_notification_id() or 0
        position = self._known if self._known is not None else self.position
        telemetry.FOLLOWER_LAG.labels("integrator").set(max(0, stored - position))

"""The ledger integrator: follows the notification log and appends one leaf per stored event.

The event store's notification log is the node's sequencer. The integrator reads it in batches,
turns each stored event into a :class:`ledger.Leaf` (dense index, aggregate id and version, topic,
SHA-256 of the stored bytes, and the hall's signature when the event records a signed command),
and appends the leaves to the Merkle log **in the same database transaction** as its tracking
record (the ``eventsourcing`` library's tracking, as for any projection). So a crash keeps both
or neither: restarted, it continues after the last committed batch, with no gap and no duplicate.

It signs a checkpoint every ``checkpoint_every`` leaves or ``checkpoint_interval`` seconds,
whichever comes first, in the transaction that reaches it.

The views below are the library's tracking recorders extended with the ledger's tables, the
pattern the library documents for materialised views: open a transaction, write the output,
insert the tracking record, commit.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from eventsourcing.persistence import Notification, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import get_topic
from psycopg.rows import tuple_row
from psycopg.sql import SQL

from hub.application.hub import HubApplication
from hub.application.idempotency import CommandRecord
from ledger import Checkpoint, Leaf, Signer, sign_checkpoint
from ledger.storage import Cursor, LedgerTables

log = logging.getLogger("tongban.integrator")

T = TypeVar("T")

#: Stored events of this topic record a hall's signed command.
COMMAND_RECORD_TOPIC = get_topic(CommandRecord.Recorded)


class LedgerView(Protocol):
    """A tracking recorder that also holds the ledger's tables."""

    tables: LedgerTables

    def write(self, work: Callable[[Cursor], T], tracking: Tracking | None = None) -> T:
        """Run ``work`` in one committed transaction, recording ``tracking`` in it too."""

    def read(self, work: Callable[[Cursor], T]) -> T:
        """Run ``work`` in a read-only transaction."""

    def max_tracking_id(self, application_name: str) -> int | None:
        """The last notification id integrated."""


class PostgresLedgerView(PostgresTrackingRecorder):
    """Ledger tables and tracking in the node's PostgreSQL database."""

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.tables = LedgerTables("postgres")
        self.sql_create_statements.extend(
            SQL(statement).format() for statement in self.tables.create_statements()
        )

    def write(self, work: Callable[[Cursor], T], tracking: Tracking | None = None) -> T:
        with self.datastore.transaction(commit=True) as curs:
            # The library's cursors return dict rows; the ledger reads tuples. Same connection,
            # so the same transaction.
            result = work(curs.connection.cursor(row_factory=tuple_row))
            if tracking is not None:
                self._insert_tracking(curs, tracking)
        return result

    def read(self, work: Callable[[Cursor], T]) -> T:
        with self.datastore.transaction(commit=False) as curs:
            return work(curs.connection.cursor(row_factory=tuple_row))


class SQLiteLedgerView(SQLiteTrackingRecorder):
    """Ledger tables and tracking in the node's SQLite file."""

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        self.tables = LedgerTables("sqlite")
        super().__init__(datastore, **kwargs)

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *self.tables.create_statements()]

    def write(self, work: Callable[[Cursor], T], tracking: Tracking | None = None) -> T:
        with self.datastore.transaction(commit=True) as curs:
            result = work(curs.sqlite_cursor)
            if tracking is not None:
                self._insert_tracking(curs, tracking)
        return result

    def read(self, work: Callable[[Cursor], T]) -> T:
        with self.datastore.transaction(commit=False) as curs:
            return work(curs.sqlite_cursor)


def open_ledger_view(app: HubApplication) -> LedgerView:
    """The ledger view in the application's own database (tables created if missing)."""
    view_class: type[Any]
    if app.env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
        view_class = PostgresLedgerView
    else:
        view_class = SQLiteLedgerView
    view: Any = app.factory.tracking_recorder(view_class)
    return typing.cast(LedgerView, view)


@dataclass(frozen=True)
class BatchResult:
    """What one integration step did."""

    leaves: int
    size: int
    checkpoint: int | None


def event_hash(notification: Notification) -> bytes:
    """SHA-256 of the stored event bytes, exactly as stored (ciphertext included)."""
    return hashlib.sha256(notification.state).digest()


class LedgerIntegrator:
    """Appends a leaf for every stored event, in notification order, and signs checkpoints."""

    def __init__(
        self,
        app: HubApplication,
        view: LedgerView,
        signer: Signer,
        *,
        origin: str,
        batch_size: int = 1000,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 1.0,
    ) -> None:
        self.app = app
        self.view = view
        self.signer = signer
        self.origin = origin
        self.batch_size = batch_size
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self._last_checkpoint_at = time.monotonic()

    @property
    def position(self) -> int:
        """The last notification id integrated (0 before the first)."""
        return self.view.max_tracking_id(self.app.name) or 0

    def leaf_for(self, index: int, notification: Notification) -> Leaf:
        """The leaf of one stored event."""
        key_id, signature = "", b""
        if notification.topic == COMMAND_RECORD_TOPIC:
            record = self.app.mapper.to_domain_event(notification)
            assert isinstance(record, CommandRecord.Recorded)
            key_id, signature = record.key_id, record.signature
        return Leaf(
            origin=self.origin,
            index=index,
            aggregate_id=notification.originator_id,  # type: ignore[arg-type]
            version=notification.originator_version,
            topic=notification.topic,
            event_hash=event_hash(notification),
            hall_key_id=key_id,
            hall_signature=signature,
        )

    def step(self) -> BatchResult:
        """Integrate the next batch (possibly empty); sign a checkpoint when one is due."""
        # A batch never spans more than checkpoint_every leaves, so a checkpoint is signed at
        # least every checkpoint_every leaves however far behind the integrator is.
        notifications = self.app.recorder.select_notifications(
            start=self.position,
            limit=min(self.batch_size, self.checkpoint_every),
            inclusive_of_start=False,
        )

        def work(cursor: Cursor) -> BatchResult:
            size, _ = self.view.tables.state(cursor)
            leaves = [self.leaf_for(size + n, note) for n, note in enumerate(notifications)]
            if leaves:
                size = self.view.tables.append(cursor, leaves)
            checkpoint = self._maybe_checkpoint(cursor, size, crossed=len(leaves))
            return BatchResult(len(leaves), size, checkpoint)

        tracking = Tracking(self.app.name, notifications[-1].id) if notifications else None
        result = self.view.write(work, tracking)
        if result.checkpoint is not None:
            self._last_checkpoint_at = time.monotonic()
        return result

    def _maybe_checkpoint(self, cursor: Cursor, size: int, crossed: int) -> int | None:
        latest = self.view.tables.latest_checkpoint(cursor)
        signed = latest.size if latest else 0
        if size == signed:
            return None
        every = self.checkpoint_every
        due_by_count = size // every > (size - crossed) // every or size - signed >= every
        due_by_time = time.monotonic() - self._last_checkpoint_at >= self.checkpoint_interval
        if not (due_by_count or due_by_time):
            return None
        return self._sign_checkpoint(cursor, size)

    def _sign_checkpoint(self, cursor: Cursor, size: int) -> int:
        root = self.view.tables.tree_root(cursor, size)
        note = sign_checkpoint(Checkpoint(self.origin, size, root), self.signer)
        self.view.tables.store_checkpoint(cursor, size, root, note)
        return size

    def checkpoint_now(self) -> int | None:
        """Sign a checkpoint of everything integrated so far (if not signed already)."""
        return self.view.write(self._force_checkpoint)

    def _force_checkpoint(self, cursor: Cursor) -> int | None:
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

    def run(self, stop: threading.Event, idle_wait: float = 0.05) -> None:
        """Follow the log until ``stop`` is set; waits briefly when there is nothing new."""
        while not stop.is_set():
            try:
                result = self.step()
            except Exception:  # keep following; the next step retries from the tracking position
                log.exception("integration step failed; retrying")
                stop.wait(1.0)
                continue
            if not result.leaves:
                stop.wait(idle_wait)

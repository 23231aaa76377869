"""Where projections keep their tables: the library's tracking recorders, extended with views.

A projection's rows and its tracking record (the position it has reached in the node's
notification log) are written **in one transaction** by :meth:`ProjectionStore.write`, with the
``eventsourcing`` library's tracking recorders (``PostgresTrackingRecorder``,
``SQLiteTrackingRecorder``), exactly as the library's own projections do; so a crash keeps both
or neither and no event is ever applied twice or skipped.

* **PostgreSQL**: the views live in the node's database beside the event store, in tables named
  ``projection_*``; the tracking rows in the library's tracking table. Each committed batch also
  sends ``NOTIFY tongban_projections`` (delivered at commit), which wakes the queue watchers.
* **SQLite** (the embedded default): the views live in a file of their own,
  ``projections.sqlite3`` beside ``events.sqlite3``, so a projection's writes (and a long
  rebuild) never hold the event store's write lock.

Each projection records its position under its own name (``Tongban:cases``), so the projections
and the ledger integrator follow the same log independently.

SQL is written once with ``%s`` placeholders; :meth:`Dialect.sql` turns them into SQLite's
``?``. Times are stored as fixed-width UTC text (:func:`iso`), so they compare and sort the same
in both databases.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import Environment
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from hub.application.postgres_store import uses_postgres
from hub.application.sqlite_store import SQLITE_PERSISTENCE

T = TypeVar("T")

#: A tracking record, or a function that gives it once the transaction's work has run.
TrackingSource = Tracking | Callable[[], Tracking | None] | None

#: The PostgreSQL channel a committed projection batch notifies (payload: ``name:position``).
CHANNEL = "tongban_projections"

#: The SQLite file of the projections, beside the event store's.
SQLITE_FILE = "projections.sqlite3"


class Cursor(Protocol):
    """The DB-API cursor subset the projections use (tuple rows)."""

    def execute(self, query: Any, params: Any = ..., /) -> Any:
        """Run one statement."""

    def executemany(self, query: Any, params_seq: Any, /) -> Any:
        """Run one statement for each parameter set."""

    def fetchall(self) -> list[Any]:
        """The remaining rows."""

    def fetchone(self) -> Any:
        """The next row, or None."""


@dataclass(frozen=True)
class Dialect:
    """What differs between the two databases."""

    name: str  # "postgres" or "sqlite"

    @property
    def postgres(self) -> bool:
        """Whether this is PostgreSQL."""
        return self.name == "postgres"

    def sql(self, text: str) -> str:
        """``text`` with this database's placeholders (written with ``%s``)."""
        return text if self.postgres else text.replace("%s", "?")

    @property
    def real(self) -> str:
        """The floating-point column type."""
        return "DOUBLE PRECISION" if self.postgres else "REAL"


def iso(moment: datetime | None) -> str | None:
    """A time as fixed-width UTC text (``2026-03-02T02:00:00.000000Z``), or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_iso(text: str | None) -> datetime | None:
    """The time of :func:`iso` text, or None."""
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


class ProjectionStore(Protocol):
    """A tracking recorder that also holds projection tables (see the module docstring)."""

    dialect: Dialect

    def write(self, work: Callable[[Cursor], T], tracking: TrackingSource = None) -> T:
        """Run ``work`` and record ``tracking`` in one committed transaction."""

    def read(self, work: Callable[[Cursor], T]) -> T:
        """Run ``work`` in a read-only transaction."""

    def max_tracking_id(self, application_name: str) -> int | None:
        """The last notification id recorded under ``application_name``."""

    def position_in(self, cursor: Cursor, name: str) -> int:
        """The tracked position of ``name`` as this transaction sees it (0 before the first)."""

    def forget_position(self, cursor: Cursor, name: str) -> None:
        """Delete the tracking row of ``name`` (a rebuild starts from the log's beginning)."""

    def lock(self, cursor: Cursor, name: str) -> None:
        """Serialise writers of projection ``name`` until this transaction ends."""

    def long_transaction(self, cursor: Cursor) -> None:
        """Let this transaction stay open, idle at times, for as long as it needs (a rebuild)."""

    def close(self) -> None:
        """Release the store's connections."""


class PostgresProjectionStore(PostgresTrackingRecorder):
    """Projection tables and tracking in the node's PostgreSQL database."""

    dialect = Dialect("postgres")

    def write(self, work: Callable[[Cursor], T], tracking: TrackingSource = None) -> T:
        with self.datastore.transaction(commit=True) as curs:
            # The library's cursors give dict rows; the projections read tuples. The same
            # connection, so the same transaction.
            result = work(curs.connection.cursor(row_factory=tuple_row))
            record = tracking() if callable(tracking) else tracking
            if record is not None:
                self._insert_tracking(curs, record)
                curs.execute(
                    "SELECT pg_notify(%s, %s)",
                    (CHANNEL, f"{record.application_name}:{record.notification_id}"),
                )
        return result

    def read(self, work: Callable[[Cursor], T]) -> T:
        with self.datastore.transaction(commit=False) as curs:
            return work(curs.connection.cursor(row_factory=tuple_row))

    def position_in(self, cursor: Cursor, name: str) -> int:
        cursor.execute(self.max_tracking_id_statement, (name,))
        row = cursor.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def forget_position(self, cursor: Cursor, name: str) -> None:
        statement = SQL("DELETE FROM {0}.{1} WHERE application_name = %s").format(
            Identifier(self.datastore.schema), Identifier(self.tracking_table_name)
        )
        cursor.execute(statement, (name,))

    def lock(self, cursor: Cursor, name: str) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"projection:{name}",))

    def long_transaction(self, cursor: Cursor) -> None:
        # The library's connections end a transaction idle for a few seconds; a rebuild's is
        # idle while it reads and computes between its writes.
        cursor.execute("SET LOCAL idle_in_transaction_session_timeout = 0")

    def close(self) -> None:
        """The store shares the application's connection pool: nothing of its own to close."""


class SQLiteProjectionStore(SQLiteTrackingRecorder):
    """Projection tables and tracking in their own SQLite file."""

    dialect = Dialect("sqlite")

    def write(self, work: Callable[[Cursor], T], tracking: TrackingSource = None) -> T:
        with self.datastore.transaction(commit=True) as curs:
            result = work(_tuples(curs.sqlite_cursor))
            record = tracking() if callable(tracking) else tracking
            if record is not None:
                self._insert_tracking(curs, record)
        return result

    def read(self, work: Callable[[Cursor], T]) -> T:
        with self.datastore.transaction(commit=False) as curs:
            return work(_tuples(curs.sqlite_cursor))

    def position_in(self, cursor: Cursor, name: str) -> int:
        cursor.execute("SELECT notification_id FROM tracking WHERE application_name = ?", (name,))
        row = cursor.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def forget_position(self, cursor: Cursor, name: str) -> None:
        cursor.execute("DELETE FROM tracking WHERE application_name = ?", (name,))

    def long_transaction(self, cursor: Cursor) -> None:
        """SQLite ends no transaction on its own."""

    def lock(self, cursor: Cursor, name: str) -> None:
        # SQLite has one writer at a time; taking the write lock now (rather than at the first
        # write) makes the position read next the one this transaction will write after.
        cursor.execute("DELETE FROM tracking WHERE application_name = ?", ("-lock-",))

    def close(self) -> None:
        """Close the projections file's connections."""
        self.datastore.close()


def _tuples(cursor: Any) -> Any:
    """The cursor with plain tuple rows (the library's connections give sqlite3.Row)."""
    cursor.row_factory = None
    return cursor


def open_projection_store(app: Any) -> ProjectionStore:
    """The projection store of the node whose application is ``app`` (tables not created).

    PostgreSQL: the application's own database and connection pool. SQLite: the projections
    file beside the application's event store.
    """
    store: Any
    if uses_postgres(app.env):
        store = app.factory.tracking_recorder(PostgresProjectionStore)
    else:
        events = Path(app.env.get("SQLITE_DBNAME", ""))
        env = Environment(
            app.name,
            {
                "PERSISTENCE_MODULE": SQLITE_PERSISTENCE,
                "SQLITE_DBNAME": str(events.with_name(SQLITE_FILE)),
                "SQLITE_LOCK_TIMEOUT": app.env.get("SQLITE_LOCK_TIMEOUT", "10"),
                "CREATE_TABLE": "y",  # the tracking table (the view tables: see create_tables)
            },
        )
        store = InfrastructureFactory.construct(env).tracking_recorder(SQLiteProjectionStore)
    return typing.cast(ProjectionStore, store)


def create_tables(store: ProjectionStore, statements: Sequence[str]) -> None:
    """Create the projections' tables and indexes if they do not exist (idempotent)."""

    def create(cursor: Cursor) -> None:
        for statement in statements:
            cursor.execute(statement)

    store.write(create)


__all__ = [
    "CHANNEL",
    "SQLITE_FILE",
    "Cursor",
    "Dialect",
    "PostgresProjectionStore",
    "ProjectionStore",
    "SQLiteProjectionStore",
    "create_tables",
    "from_iso",
    "iso",
    "open_projection_store",
]

"""Read-only access to a node's store, for the auditor: nothing here can write or decrypt.

The auditor opens the database itself rather than building the node's application (which would
create tables, need the node's keys and write): SQLite in ``mode=ro`` (a missing file is an error,
never created), PostgreSQL with ``default_transaction_read_only``. It reads the event store's
table as stored (plain JSON events; personal data inside them is sealed), the ledger's tables
through :class:`ledger.storage.LedgerTables`, and the integrator's tracking position.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import StoredEvent

from hub.errors import ConfigurationError, StorageUnavailable
from ledger.storage import Cursor, LedgerTables

#: The application name (and so the table names) of a node's event store.
APPLICATION = "Tongban"


class ReadOnlyStore:
    """A node's database opened read-only (see the module docstring)."""

    def __init__(self, *, sqlite_path: Path | None = None, database_url: str | None = None):
        if (sqlite_path is None) == (database_url is None):
            raise ConfigurationError("give either a SQLite path or a PostgreSQL URL")
        self._connection: sqlite3.Connection | psycopg.Connection[Any]
        if sqlite_path is not None:
            if not sqlite_path.is_file():
                raise ConfigurationError(f"no node store at {sqlite_path}")
            try:
                # A stopped node's database has no write-ahead log: open it immutable, so that
                # SQLite does not even create its -wal and -shm files. A running node's has
                # one, which a read-only connection reads (the files exist already).
                running = Path(f"{sqlite_path}-wal").exists()
                mode = "mode=ro" if running else "mode=ro&immutable=1"
                self._connection = sqlite3.connect(
                    f"file:{sqlite_path}?{mode}", uri=True, isolation_level=None
                )
                # One read transaction: the events, leaves and checkpoints read are one snapshot.
                self._connection.execute("BEGIN")
            except sqlite3.Error as error:
                raise StorageUnavailable(f"{sqlite_path}: {error}") from None
            self.tables = LedgerTables("sqlite")
            self._events_sql = (
                "SELECT rowid, originator_id, originator_version, topic, state "
                "FROM stored_events WHERE rowid > ? ORDER BY rowid LIMIT ?"
            )
            self._history_sql = (
                "SELECT originator_id, originator_version, topic, state FROM stored_events "
                "WHERE originator_id = ? AND originator_version < ? ORDER BY originator_version"
            )
            self._tracking_sql = (
                "SELECT MAX(notification_id) FROM tracking WHERE application_name = ?"
            )
            self._param = "?"
        else:
            assert database_url is not None
            try:
                # One read-only, repeatable-read transaction: a consistent snapshot.
                self._connection = psycopg.connect(
                    database_url,
                    options="-c default_transaction_read_only=on "
                    "-c default_transaction_isolation=repeatable\\ read",
                )
            except psycopg.OperationalError as error:
                raise StorageUnavailable(f"PostgreSQL: {error}") from None
            self.tables = LedgerTables("postgres")
            table = f"{APPLICATION.lower()}_events"
            self._events_sql = (
                f"SELECT notification_id, originator_id, originator_version, topic, state "
                f"FROM {table} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
            )
            self._history_sql = (
                f"SELECT originator_id, originator_version, topic, state FROM {table} "
                "WHERE originator_id = %s AND originator_version < %s ORDER BY originator_version"
            )
            self._tracking_sql = (
                f"SELECT MAX(notification_id) FROM {APPLICATION.lower()}_tracking "
                "WHERE application_name = %s"
            )
            self._param = "%s"
        self._sqlite = sqlite_path is not None

    def cursor(self) -> Cursor:
        """A cursor for the ledger's tables."""
        return self._connection.cursor()

    def _execute(self, sql: str, params: Sequence[Any]) -> list[Any]:
        cursor = self._connection.cursor()
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
        except (sqlite3.Error, psycopg.Error) as error:
            if isinstance(self._connection, psycopg.Connection):
                self._connection.rollback()
            raise StorageUnavailable(f"reading the store: {error}") from None

    def _uuid(self, value: Any) -> UUID:
        return value if isinstance(value, UUID) else UUID(str(value))

    def events(self, batch: int = 1000) -> Iterator[tuple[int, StoredEvent]]:
        """Every stored event with its notification id, in notification order (from the first
        row, whatever its id: a forged row with id 0 or below is read too)."""
        after = -(2**62)
        while True:
            rows = self._execute(self._events_sql, (after, batch))
            for row in rows:
                yield (
                    int(row[0]),
                    StoredEvent(
                        originator_id=self._uuid(row[1]),
                        originator_version=int(row[2]),
                        topic=str(row[3]),
                        state=bytes(row[4]),
                    ),
                )
            if len(rows) < batch:
                return
            after = int(rows[-1][0])

    def history(self, aggregate_id: UUID, version: int) -> list[StoredEvent]:
        """The stored events of one aggregate below ``version``."""
        key: Any = aggregate_id.hex if self._sqlite else aggregate_id
        rows = self._execute(self._history_sql, (key, version))
        return [StoredEvent(self._uuid(r[0]), int(r[1]), str(r[2]), bytes(r[3])) for r in rows]

    def position(self) -> int:
        """The last notification id the integrator passed (0 before any)."""
        try:
            rows = self._execute(self._tracking_sql, (APPLICATION,))
        except StorageUnavailable:
            return 0
        return int(rows[0][0] or 0) if rows else 0

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()

    def __enter__(self) -> ReadOnlyStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

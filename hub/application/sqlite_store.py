"""The embedded SQLite store, made safe for several writing threads and processes at once.

A node on the embedded default has two processes writing one SQLite file (the serving process
stores commands; the follower process runs the ledger integrator and the relay, which stores
peers' steps and acknowledgements), and several threads in each. Two behaviours of the
``eventsourcing`` library's SQLite datastore, right for one writer, fail under that load (the
federation benchmark with ``--store sqlite`` lost handoffs and stopped a node's relay within a
minute; ``tests/integration/test_sqlite_store.py`` reproduces both):

* **Its connection pool lets one thread of a process write at a time, and queues every other
  request behind a waiting writer.** A thread that holds the write connection and then needs a
  *read* connection (the ledger integrator reads a case's earlier events while it checks a
  batch) waits behind a thread that asked for the write connection meanwhile, which waits for
  the first: both time out after five seconds ("Timed out waiting for connection pool
  semaphore" / "... for return of writer"), and a relay loop that met it stopped for good.
  SQLite itself already lets one writer at a time into the file, across processes too; a
  second lock in the process adds nothing but that deadlock. Here the pool hands out
  connections without it.
* **It opens every transaction with a plain ``BEGIN`` (deferred).** A write transaction then
  starts as a reader and takes the write lock at its first write; when another process wrote in
  between, SQLite cannot upgrade it and answers "database is locked" at once, without waiting
  (the busy timeout does not apply). Here a transaction that will write starts with
  ``BEGIN IMMEDIATE``: it takes the write lock first, waiting up to ``SQLITE_LOCK_TIMEOUT``
  seconds for another writer to finish, and then cannot fail for that reason. Read transactions
  stay deferred: in WAL mode they never wait for a writer.

Nothing else changes: the same files, tables, recorders and settings. Written here rather than
found in a library because it is the library's own datastore with those two choices changed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from eventsourcing.persistence import OperationalError
from eventsourcing.sqlite import (
    SQLiteConnection,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteFactory,
    SQLiteTransaction,
)
from eventsourcing.utils import Environment, EnvType

#: ``PERSISTENCE_MODULE`` for the embedded store: the factory below, by its topic.
SQLITE_PERSISTENCE = "hub.application.sqlite_store:TongbanSQLiteFactory"


class _Transaction(SQLiteTransaction):
    """The library's transaction, begun ``IMMEDIATE`` when it will write."""

    def __enter__(self) -> SQLiteCursor:
        cursor = self.connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE" if self.commit else "BEGIN")
        except sqlite3.OperationalError as error:  # locked past the timeout: the store is busy
            cursor.sqlite_cursor.close()
            raise OperationalError(error) from error
        return cursor


class TongbanSQLiteDatastore(SQLiteDatastore):
    """The library's SQLite datastore without the in-process writer lock, with immediate
    write transactions (see the module docstring)."""

    @contextmanager
    def transaction(self, *, commit: bool) -> Iterator[SQLiteCursor]:
        with (
            self.get_connection(commit=commit) as connection,
            _Transaction(connection, commit=commit) as cursor,
            cursor,
        ):
            yield cursor

    @contextmanager
    def get_connection(self, *, commit: bool) -> Iterator[SQLiteConnection]:
        # No reader/writer interlock (is_writer=None): SQLite serialises the writers itself.
        connection = self.pool.get_connection()
        try:
            yield connection
        finally:
            self.pool.put_connection(connection)


class TongbanSQLiteFactory(SQLiteFactory):
    """The library's SQLite factory, whose recorders share a :class:`TongbanSQLiteDatastore`."""

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        built = self.datastore
        self.datastore = TongbanSQLiteDatastore(
            db_name=built.pool.db_name,
            lock_timeout=built.pool.lock_timeout,
            single_row_tracking=built.single_row_tracking,
            originator_id_type=built.originator_id_type,
        )
        built.close()  # it opened no connection yet: connections are made when first asked for


__all__ = ["SQLITE_PERSISTENCE", "TongbanSQLiteDatastore", "TongbanSQLiteFactory"]

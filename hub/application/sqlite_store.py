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

Without the library's lock, the threads of a process that wait to write met SQLite's own wait:
a writer that finds the file locked sleeps and looks again, ever longer (1, 2, 5, 10 … 100 ms),
so one thread that commits again and again kept the file while another waited for seconds
(``python -m benchmarks.sqlite_writers``: of six writers the busiest made 6–13 times the
commits of the least, and one waited 3.8–4.7 s to begin a write; a hall's command is refused
after ten). So a write transaction first takes a lock of
this process for its file, which only writes take (a writer may still read through another
connection: nothing waits for a reader), and each waiting writer is woken as the one before it
ends: writers are now within 1.2–1.7 times of each other's commits, and the longest wait fell
to 1.4–3.3 s, what remains being the other process's turns.

Nothing else changes: the same files, tables, recorders and settings. Written here rather than
found in a library because it is the library's own datastore with those choices changed.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from eventsourcing.persistence import OperationalError
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteConnection,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteFactory,
    SQLiteTransaction,
)
from eventsourcing.utils import Environment, EnvType

#: ``PERSISTENCE_MODULE`` for the embedded store: the factory below, by its topic.
SQLITE_PERSISTENCE = "hub.application.sqlite_store:TongbanSQLiteFactory"


#: One lock per database file, for the writing threads of this process (see _Transaction).
_WRITERS: dict[str, threading.Lock] = {}
_WRITERS_LOCK = threading.Lock()


def _writer_lock(db_name: str) -> threading.Lock:
    with _WRITERS_LOCK:
        return _WRITERS.setdefault(db_name, threading.Lock())


class _Transaction(SQLiteTransaction):
    """The library's transaction, begun ``IMMEDIATE`` when it will write.

    A write transaction first takes its file's lock in this process, so the process's writers
    queue there and each is woken the moment the one before it ends. SQLite makes a writer
    that finds the file locked sleep and look again, ever longer (1, 2, 5, 10 … 100 ms), so
    under load the file stood unlocked while its waiters slept. SQLite's own lock still keeps
    the node's two processes apart.
    """

    def __init__(
        self, connection: SQLiteConnection, *, commit: bool, writers: threading.Lock, timeout: float
    ) -> None:
        super().__init__(connection, commit=commit)
        self._writers = writers if commit else None
        self._timeout = timeout

    def __enter__(self) -> SQLiteCursor:
        if self._writers is not None and not self._writers.acquire(timeout=self._timeout):
            raise OperationalError("database is locked (by a writer of this process)")
        try:
            cursor = self.connection.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE" if self.commit else "BEGIN")
            except sqlite3.OperationalError as error:  # locked past the timeout: store busy
                cursor.sqlite_cursor.close()
                raise OperationalError(error) from error
        except BaseException:
            if self._writers is not None:
                self._writers.release()
            raise
        return cursor

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        try:
            super().__exit__(exc_type, exc_val, exc_tb)
        finally:
            if self._writers is not None:
                self._writers.release()


class TongbanSQLiteDatastore(SQLiteDatastore):
    """The library's SQLite datastore with immediate write transactions, and with a lock of
    the process per file that only writes take, in place of the library's reader/writer
    interlock (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Keyed by the file's name: every datastore of the process that opens the file shares
        # the lock, so two of them never leave each other to SQLite's wait. An in-memory
        # database is no file another datastore could open: it keeps a lock of its own.
        self._writers = (
            threading.Lock() if self.pool.is_sqlite_memory_mode else _writer_lock(self.pool.db_name)
        )

    @contextmanager
    def transaction(self, *, commit: bool) -> Iterator[SQLiteCursor]:
        with (
            self.get_connection(commit=commit) as connection,
            _Transaction(
                connection,
                commit=commit,
                writers=self._writers,
                timeout=self.pool.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT,
            ) as cursor,
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

"""The embedded SQLite store under several writers (``hub.application.sqlite_store``).

Each failure of the library's own datastore is reproduced first (so the test shows what it
guards against), then shown not to happen with the node's. A node on the embedded default has
two processes writing one file and several threads in each: the federation benchmark with
``--store sqlite`` lost handoffs and stopped a relay within a minute before this.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import ConnectionUnavailableError, OperationalError
from eventsourcing.sqlite import SQLiteDatastore

from hub import bootstrap
from hub.application.sqlite_store import (
    SQLITE_PERSISTENCE,
    TongbanSQLiteDatastore,
    TongbanSQLiteFactory,
)
from hub.bootstrap import build_application, persistence_env
from hub.errors import StorageUnavailable
from hub.projections.store import open_projection_store
from hub.settings import Settings
from tests.harness.inprocess import InProcessNode

_WAIT = 30.0  # an upper bound for a loaded machine, not a timing assertion


def _datastore(kind: type[SQLiteDatastore], path: Path) -> SQLiteDatastore:
    store = kind(db_name=str(path), lock_timeout=10, pool_timeout=1.0)
    with store.transaction(commit=True) as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
    return store


@pytest.fixture
def path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "events.sqlite3"


def _done_or_blocked(thread: threading.Thread, done: threading.Event | None = None) -> bool:
    """Wait until ``thread`` is ``done`` or waits inside the store: for the pool's write
    connection (the library's ``get_connection``), for SQLite's write lock (a cursor's
    ``execute`` of BEGIN) or for the process's writer lock (the node's transaction's
    ``__enter__``). False if neither happens in time."""
    deadline = time.monotonic() + _WAIT
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(thread.ident or 0)
        if frame is not None and (
            frame.f_code.co_name in ("get_connection", "execute")
            or (
                frame.f_code.co_name == "__enter__"
                and frame.f_code.co_filename.endswith("sqlite_store.py")
            )
        ):
            return True
        if done is not None and done.wait(0.01):
            return True
        if done is None:
            threading.Event().wait(0.01)
    return False


def _wait_until_blocked(thread: threading.Thread) -> None:
    assert _done_or_blocked(thread), "the other writer never came"


def _inserter(
    store: SQLiteDatastore,
    value: int,
    errors: list[BaseException],
    *,
    after: threading.Event | None = None,
    done: threading.Event | None = None,
) -> Callable[[], None]:
    """A thread's work: wait for ``after`` (if given), insert ``value`` in a write transaction
    of ``store``, keep what it raises in ``errors``, then set ``done`` (if given)."""

    def insert() -> None:
        if after is not None:
            after.wait(_WAIT)
        try:
            with store.transaction(commit=True) as cursor:
                cursor.execute("INSERT INTO t VALUES (?)", (value,))
        except BaseException as error:
            errors.append(error)
        finally:
            if done is not None:
                done.set()

    return insert


def _writer_that_reads(store: SQLiteDatastore) -> list[BaseException]:
    """Thread A writes and, inside its write transaction, reads through another connection (as
    the ledger integrator reads a case's earlier events while it checks a batch); thread B asks
    to write meanwhile. Returns what either raised."""
    errors: list[BaseException] = []
    a_writing = threading.Event()

    def a() -> None:
        try:
            with store.transaction(commit=True) as cursor:
                cursor.execute("INSERT INTO t VALUES (1)")
                a_writing.set()
                _wait_until_blocked(threads[1])  # B waits for the write connection or lock
                with store.transaction(commit=False) as reader:
                    reader.execute("SELECT COUNT(*) FROM t")
        except BaseException as error:
            errors.append(error)

    b = _inserter(store, 2, errors, after=a_writing)
    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(_WAIT)
    return errors


def test_a_writer_that_reads_while_another_waits_to_write_does_not_deadlock(path: Path) -> None:
    library = _datastore(SQLiteDatastore, path)
    try:
        failed = _writer_that_reads(library)
    finally:
        library.close()
    assert failed and all(isinstance(error, ConnectionUnavailableError) for error in failed)
    ours = _datastore(TongbanSQLiteDatastore, path.with_name("ours.sqlite3"))
    try:
        assert _writer_that_reads(ours) == []
        with ours.transaction(commit=False) as cursor:
            cursor.execute("SELECT n FROM t ORDER BY n")
            assert [row[0] for row in cursor.fetchall()] == [1, 2]
    finally:
        ours.close()


def _read_then_write_while_another_process_writes(
    first: SQLiteDatastore, second: SQLiteDatastore
) -> list[BaseException]:
    """``first`` opens a write transaction and reads; ``second`` (another process's store)
    writes meanwhile; then ``first`` writes. Returns what either raised."""
    errors: list[BaseException] = []
    began, second_done = threading.Event(), threading.Event()

    other_process = _inserter(second, 2, errors, after=began, done=second_done)
    thread = threading.Thread(target=other_process)
    thread.start()
    try:
        with first.transaction(commit=True) as cursor:
            cursor.execute("SELECT COUNT(*) FROM t")
            began.set()
            # The library's BEGIN let the other writer in, and it commits; with an immediate
            # transaction it waits for this one instead.
            if not _done_or_blocked(thread, second_done):
                raise AssertionError("the other writer never came")
            cursor.execute("INSERT INTO t VALUES (1)")
    except BaseException as error:
        errors.append(error)
    thread.join(_WAIT)
    return errors


def test_a_write_transaction_is_not_refused_because_another_process_wrote(path: Path) -> None:
    library = [_datastore(SQLiteDatastore, path) for _ in range(2)]
    try:
        failed = _read_then_write_while_another_process_writes(*library)
    finally:
        for store in library:
            store.close()
    assert [type(error) for error in failed] == [OperationalError]
    assert "locked" in str(failed[0])
    ours = [_datastore(TongbanSQLiteDatastore, path.with_name("ours.sqlite3")) for _ in range(2)]
    # Another process has its own writer lock: only SQLite's lock stands between the two.
    ours[1]._writers = threading.Lock()  # type: ignore[attr-defined]
    try:
        assert _read_then_write_while_another_process_writes(*ours) == []
        with ours[0].transaction(commit=False) as cursor:
            cursor.execute("SELECT n FROM t ORDER BY n")
            assert [row[0] for row in cursor.fetchall()] == [1, 2]
    finally:
        for store in ours:
            store.close()


def test_the_node_and_its_projections_use_the_safe_store(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "node")
    assert persistence_env(settings)["PERSISTENCE_MODULE"] == SQLITE_PERSISTENCE
    node = InProcessNode.start(settings)
    try:
        assert isinstance(node.app.factory, TongbanSQLiteFactory)
        assert isinstance(node.app.recorder.datastore, TongbanSQLiteDatastore)
        store: Any = open_projection_store(node.app)
        assert isinstance(store.datastore, TongbanSQLiteDatastore)
    finally:
        node.close()
    again = build_application(settings)  # the same files open again
    again.close()


def test_a_write_that_waits_past_the_lock_timeout_is_unavailable_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer holds the file (a long `tongban projections rebuild`, say): a command
    waits for it up to SQLITE_LOCK_TIMEOUT (ten seconds on a node; one here), then is refused
    as UNAVAILABLE (clients retry it), with nothing stored; once the file is free it goes in."""

    def quick(settings: Settings, *, create_tables: bool = True) -> dict[str, str]:
        return {
            **persistence_env(settings, create_tables=create_tables),
            "SQLITE_LOCK_TIMEOUT": "1",
        }

    monkeypatch.setattr(bootstrap, "persistence_env", quick)
    settings = Settings(data_dir=tmp_path / "node")
    node = InProcessNode.start(settings)
    try:
        hall = node.add_hall("hn-locked", "430902000000")
        size = node.log_size()
        holder = sqlite3.connect(settings.sqlite_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageUnavailable, match="locked"):
                node.submit(hall, key="key-locked-1", item_code="070303001000")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert node.log_size() == size
        node.submit(hall, key="key-locked-1", item_code="070303001000")  # the same command, retried
        assert node.log_size() > size
    finally:
        node.close()


def test_a_processs_writers_queue_on_its_own_lock_and_its_readers_do_not(path: Path) -> None:
    """While one thread writes, another thread's write waits on the process's writer lock of
    that file (not in SQLite's sleep-and-retry), goes in once the first commits, and loses
    nothing; a read meanwhile does not wait, and a write to another file does not either."""
    store = _datastore(TongbanSQLiteDatastore, path)
    other = _datastore(TongbanSQLiteDatastore, path.with_name("projections.sqlite3"))
    errors: list[BaseException] = []
    second_done = threading.Event()

    thread = threading.Thread(target=_inserter(store, 2, errors, done=second_done))
    try:
        with store.transaction(commit=True) as cursor:
            cursor.execute("INSERT INTO t VALUES (1)")
            thread.start()
            _wait_until_blocked(thread)
            frame = sys._current_frames()[thread.ident or 0]
            assert frame.f_code.co_name == "__enter__"  # the process's lock, not SQLite's
            assert not second_done.is_set()
            with store.transaction(commit=False) as reader:  # a read does not wait
                reader.execute("SELECT COUNT(*) FROM t")
                assert reader.fetchone()[0] == 0  # the first write is not committed yet
            with other.transaction(commit=True) as elsewhere:  # nor does another file's write
                elsewhere.execute("INSERT INTO t VALUES (3)")
        thread.join(_WAIT)
        assert not thread.is_alive() and errors == []
        with store.transaction(commit=False) as reader:
            reader.execute("SELECT n FROM t ORDER BY n")
            assert [row[0] for row in reader.fetchall()] == [1, 2]
    finally:
        if thread.ident is not None:
            thread.join(_WAIT)  # never close a connection another thread is still using
        store.close()
        other.close()


def test_a_writer_that_waits_past_the_timeout_on_the_process_lock_stores_nothing(
    path: Path,
) -> None:
    """A write that waits longer than the lock timeout for the process's other writer gives up
    with "locked" (the node answers UNAVAILABLE) and stores nothing; the lock is not kept, so
    the next write goes in."""
    store = TongbanSQLiteDatastore(db_name=str(path), lock_timeout=1, pool_timeout=1.0)
    with store.transaction(commit=True) as cursor:
        cursor.execute("CREATE TABLE t (n INTEGER)")
    errors: list[BaseException] = []
    try:
        with store.transaction(commit=True) as cursor:
            cursor.execute("INSERT INTO t VALUES (1)")
            thread = threading.Thread(target=_inserter(store, 2, errors))
            thread.start()
            thread.join(_WAIT)  # it gives up while this transaction is still open
        assert [type(error) for error in errors] == [OperationalError]
        assert "locked" in str(errors[0])
        with store.transaction(commit=True) as cursor:
            cursor.execute("INSERT INTO t VALUES (3)")
        with store.transaction(commit=False) as reader:
            reader.execute("SELECT n FROM t ORDER BY n")
            assert [row[0] for row in reader.fetchall()] == [1, 3]
    finally:
        store.close()

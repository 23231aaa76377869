"""The node's PostgreSQL store (``hub.application.postgres_store``): reads without BEGIN/ROLLBACK,
writes in transactions, and every store of a node on it."""

from __future__ import annotations

import select
import threading
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from psycopg.pq import TransactionStatus

from hub.application.postgres_store import (
    LIBRARY_POSTGRES,
    POSTGRES_PERSISTENCE,
    TongbanPostgresDatastore,
    TongbanPostgresFactory,
    uses_postgres,
)
from hub.application.recorders import PersonalKey
from hub.bootstrap import persistence_env
from hub.integrity.integrator import open_ledger_view
from hub.materials.store import MaterialStore
from hub.projections.store import open_projection_store
from hub.relay.store import open_relay_store
from hub.settings import Settings
from tests.harness.inprocess import InProcessNode


@pytest.fixture
def node(tmp_path: Path, fresh_postgres_db: str) -> Any:
    started = InProcessNode.start(
        Settings(data_dir=tmp_path / "node", database_url=fresh_postgres_db)
    )
    try:
        yield started
    finally:
        started.close()


def test_a_node_on_postgresql_uses_the_store_in_every_part(
    node: Any, tmp_path: Path, fresh_postgres_db: str
) -> None:
    settings = Settings(data_dir=tmp_path / "node", database_url=fresh_postgres_db)
    env = persistence_env(settings)
    assert env["PERSISTENCE_MODULE"] == POSTGRES_PERSISTENCE
    assert uses_postgres(env) and uses_postgres({"PERSISTENCE_MODULE": LIBRARY_POSTGRES})
    assert not uses_postgres({"PERSISTENCE_MODULE": "eventsourcing.sqlite"})
    assert isinstance(node.app.factory, TongbanPostgresFactory)
    datastore = node.app.recorder.datastore
    assert isinstance(datastore, TongbanPostgresDatastore)
    # The ledger, the projections, the relay and the materials share it (and know it for
    # PostgreSQL: their statements are PostgreSQL's).
    stores: list[Any] = [
        open_ledger_view(node.app),
        open_projection_store(node.app),
        open_relay_store(datastore),
    ]
    assert all(store.datastore is datastore for store in stores)
    assert type(stores[0]).__name__ == "PostgresLedgerView"
    assert type(stores[1]).__name__ == "PostgresProjectionStore"
    assert type(stores[2]).__name__ == "PostgresRelayStore"
    assert MaterialStore.of(node.app).postgres


def test_a_read_is_not_a_transaction_block(node: Any) -> None:
    """No BEGIN before a read, no ROLLBACK after it: the connection stays idle, not in a
    transaction; a write is one."""
    datastore = node.app.recorder.datastore
    with datastore.transaction(commit=False) as cursor:
        cursor.execute("SELECT 1 AS one")
        assert cursor.fetchone()["one"] == 1
        assert cursor.connection.info.transaction_status is TransactionStatus.IDLE
    with datastore.transaction(commit=True) as cursor:
        cursor.execute("SELECT 1 AS one")
        assert cursor.connection.info.transaction_status is TransactionStatus.INTRANS


def test_reads_see_what_is_committed_and_writes_stay_atomic(node: Any) -> None:
    datastore = node.app.recorder.datastore
    with datastore.transaction(commit=True) as cursor:
        cursor.execute("CREATE TABLE t (n INTEGER)")
    # A write that fails stores none of its rows.
    with pytest.raises(RuntimeError), datastore.transaction(commit=True) as cursor:
        cursor.execute("INSERT INTO t VALUES (1)")
        cursor.execute("INSERT INTO t VALUES (2)")
        raise RuntimeError("the writer gave up half way")
    # A write in progress is not seen by a read; once committed, it is.
    inserted, release, committed = threading.Event(), threading.Event(), threading.Event()

    def write() -> None:
        with datastore.transaction(commit=True) as cursor:
            cursor.execute("INSERT INTO t VALUES (3)")
            inserted.set()
            release.wait(30)
        committed.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert inserted.wait(30)
        with datastore.transaction(commit=False) as cursor:
            cursor.execute("SELECT n FROM t ORDER BY n")
            assert cursor.fetchall() == []
            release.set()
            assert committed.wait(30)
            # READ COMMITTED, as inside a transaction block: the next statement sees it.
            cursor.execute("SELECT n FROM t ORDER BY n")
            assert [row["n"] for row in cursor.fetchall()] == [3]
    finally:
        release.set()
        writer.join()


def test_a_failed_read_leaves_the_connection_usable(node: Any) -> None:
    datastore = node.app.recorder.datastore
    with pytest.raises(Exception, match="no_such_table"), datastore.transaction(commit=False) as c:
        c.execute("SELECT * FROM no_such_table")
    for _ in range(datastore.pool.max_size + 1):  # every pooled connection, and one more
        with datastore.transaction(commit=False) as cursor:
            cursor.execute("SELECT 1 AS one")
            assert cursor.fetchone()["one"] == 1


def test_a_conflict_with_personal_keys_is_an_integrity_error_when_its_answer_comes_early(
    node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save whose events conflict (another save stored that version first: the loser of a
    race for an appointment slot) fails with the IntegrityError the application turns into
    "taken", even when PostgreSQL's answer to the events' insert is in before the personal-key
    rows are sent behind it in the pipeline (as on a busy machine). Before, psycopg raised the
    conflict at the key rows, and the commit that followed on the aborted pipeline raised
    "pipeline aborted" in its place: a storage fault, answered UNAVAILABLE."""
    recorder = node.app.recorder
    first = StoredEvent(
        originator_id=uuid4(), originator_version=1, topic="tests:Conflict", state=b"{}"
    )
    recorder.insert_events([first])
    key = PersonalKey(case_id=first.originator_id, subject="s", wrapped=b"w", key_id="k")
    write = recorder._keys.write

    def once_the_conflict_is_answered(curs: Any, kwargs: dict[str, Any]) -> None:
        # The connection's socket turns readable when the server has answered what was sent.
        readable, _, _ = select.select([curs.connection.pgconn.socket], [], [], 10)
        assert readable, "the server did not answer the events' insert"
        write(curs, kwargs)

    monkeypatch.setattr(recorder._keys, "write", once_the_conflict_is_answered)
    with pytest.raises(IntegrityError):
        recorder.insert_events([first], personal_keys=[key])
    assert recorder.personal_key(first.originator_id) is None  # nothing of it was stored

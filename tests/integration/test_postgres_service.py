"""The harness's PostgreSQL really works: commits are durable across connections, fresh
databases are empty and isolated, and the eventsourcing environment helper connects."""

from __future__ import annotations

from uuid import UUID

import psycopg
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from psycopg import sql

from tests.harness.postgres import dsn_with, eventsourcing_env, temporary_database

pytestmark = pytest.mark.timeout(120)


def _user_tables(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        ).fetchall()
    return [row[0] for row in rows]


def _database_exists(dsn: str, name: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
    assert row is not None
    return bool(row[0])


def test_server_is_a_supported_utf8_postgresql(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.info.server_version >= 140000
        row = conn.execute("SHOW server_encoding").fetchone()
    assert row == ("UTF8",)


def test_committed_row_is_read_back_and_seen_by_a_second_connection(
    fresh_postgres_db: str,
) -> None:
    with psycopg.connect(fresh_postgres_db) as writer:
        writer.execute("CREATE TABLE handoff (id bigint PRIMARY KEY, hall text NOT NULL)")
        writer.commit()
        writer.execute("INSERT INTO handoff VALUES (1, %s)", ("沙头镇便民服务中心",))

        # Not committed yet: another connection must not see it (READ COMMITTED).
        with psycopg.connect(fresh_postgres_db) as reader:
            assert reader.execute("SELECT count(*) FROM handoff").fetchone() == (0,)

        writer.commit()
        assert writer.execute("SELECT hall FROM handoff WHERE id = 1").fetchone() == (
            "沙头镇便民服务中心",
        )

    with psycopg.connect(fresh_postgres_db) as reader:
        rows = reader.execute("SELECT id, hall FROM handoff").fetchall()
    assert rows == [(1, "沙头镇便民服务中心")]


def test_rolled_back_row_is_gone(fresh_postgres_db: str) -> None:
    with psycopg.connect(fresh_postgres_db) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.commit()
        conn.execute("INSERT INTO t VALUES (1)")
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    with psycopg.connect(fresh_postgres_db) as other:
        assert other.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_fresh_database_is_empty_isolated_and_dropped_afterwards(
    postgres_dsn: str, fresh_postgres_db: str
) -> None:
    fresh_name = psycopg.conninfo.conninfo_to_dict(fresh_postgres_db)["dbname"]
    assert isinstance(fresh_name, str)
    assert fresh_name != psycopg.conninfo.conninfo_to_dict(postgres_dsn).get("dbname")
    assert _user_tables(fresh_postgres_db) == []

    with psycopg.connect(fresh_postgres_db) as conn:
        conn.execute("CREATE TABLE only_here (v int)")
        conn.commit()

    assert _user_tables(fresh_postgres_db) == ["only_here"]
    assert "only_here" not in _user_tables(postgres_dsn)

    # A second temporary database on the same server does not see the first one's table, and
    # is gone once its block ends.
    with temporary_database(postgres_dsn) as other:
        other_name = psycopg.conninfo.conninfo_to_dict(other)["dbname"]
        assert isinstance(other_name, str)
        assert other_name != fresh_name
        assert _user_tables(other) == []
        with psycopg.connect(other) as conn:
            conn.execute(sql.SQL("CREATE TABLE {} (v int)").format(sql.Identifier("only_there")))
            conn.commit()
        assert _user_tables(fresh_postgres_db) == ["only_here"]
    assert not _database_exists(postgres_dsn, other_name)
    assert _database_exists(postgres_dsn, fresh_name)


def test_dsn_with_replaces_one_parameter(postgres_dsn: str) -> None:
    changed = psycopg.conninfo.conninfo_to_dict(dsn_with(postgres_dsn, dbname="elsewhere"))
    original = psycopg.conninfo.conninfo_to_dict(postgres_dsn)
    assert changed["dbname"] == "elsewhere"
    assert {k: v for k, v in changed.items() if k != "dbname"} == {
        k: v for k, v in original.items() if k != "dbname"
    }


class _Dossier(Aggregate):
    @event("Opened")
    def __init__(self, title: str) -> None:
        self.title = title


def test_eventsourcing_env_drives_the_postgres_recorder(fresh_postgres_db: str) -> None:
    env = eventsourcing_env(fresh_postgres_db)
    assert set(env) >= {
        "POSTGRES_DBNAME",
        "POSTGRES_HOST",
        "POSTGRES_PORT",
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "PERSISTENCE_MODULE",
    }
    app: Application[UUID] = Application(env=env)
    try:
        dossier = _Dossier(title="贫困证明")
        app.save(dossier)
        assert app.repository.get(dossier.id).title == "贫困证明"
    finally:
        app.close()

    # The events really are in PostgreSQL, in the fresh database.
    assert _user_tables(fresh_postgres_db) != []
    reopened: Application[UUID] = Application(env=env)
    try:
        assert reopened.repository.get(dossier.id).title == "贫困证明"
    finally:
        reopened.close()

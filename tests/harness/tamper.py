"""What a rogue operator with SQL access could do to a node's stored events (for attack tests)."""

from __future__ import annotations

import sqlite3

import psycopg

from hub.settings import Settings


def rewrite_last_event(settings: Settings, topic_suffix: str, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` in the JSON of the newest stored event whose topic ends with
    ``topic_suffix``, on the node's SQLite file or PostgreSQL database."""
    if settings.database_url is None:
        with sqlite3.connect(settings.sqlite_path) as connection:
            rowid, state = connection.execute(
                "SELECT rowid, state FROM stored_events WHERE topic LIKE ? "
                "ORDER BY rowid DESC LIMIT 1",
                (f"%{topic_suffix}",),
            ).fetchone()
            connection.execute(
                "UPDATE stored_events SET state = ? WHERE rowid = ?",
                (bytes(state).replace(old, new), rowid),
            )
        return
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT notification_id, state FROM tongban_events WHERE topic LIKE %s "
            "ORDER BY notification_id DESC LIMIT 1",
            (f"%{topic_suffix}",),
        ).fetchone()
        assert row is not None
        connection.execute(
            "UPDATE tongban_events SET state = %s WHERE notification_id = %s",
            (bytes(row[1]).replace(old, new), row[0]),
        )

"""What a rogue operator with SQL access could do to a node's stored events (for attack tests)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import psycopg
from eventsourcing.persistence import Notification

from hub.integrity.integrator import LedgerIntegrator
from hub.settings import Settings
from ledger import Leaf


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


def integrate_without_the_gate(
    integrator: LedgerIntegrator,
    claims: Callable[[int, Notification, Leaf], Leaf] = lambda _index, _notification, leaf: leaf,
) -> int:
    """Integrate what is stored as a rogue operator holding the log key would: no binding
    check, the leaves' claims chosen by ``claims``, checkpoints signed with the real key."""
    honest = integrator.checker.leaf_for

    def lax(origin: str, index: int, notification: Notification) -> Any:
        leaf, _problems = honest(origin, index, notification)
        return claims(index, notification, leaf), []

    integrator.checker.leaf_for = lax  # type: ignore[method-assign]
    return integrator.catch_up()

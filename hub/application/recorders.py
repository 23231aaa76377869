"""The event store's recorders, extended with the node's personal-data keys.

Each case's personal data is sealed under a key of its own (:mod:`hub.application.vault`). Those
keys live outside the append-only event log, in ``tongban_personal_keys``, because erasing a
person's data means destroying their key while every stored event, and so every hash and proof,
stays as it is. The key rows are written **in the same transaction** as the events: the library's
recorders call ``_insert_events(cursor, stored_events, **kwargs)`` inside their transaction with
whatever keyword arguments ``Application.save()`` was given (the extension point its process
recorders use for tracking records), so ``save(case, personal_keys=[...])`` stores both or
neither, and ``save(case, erase_keys=[case_id])`` records the erasure event and destroys the key
together.

``tongban_keyring`` records the id and fingerprint of every at-rest key the node has used, so a
node started with a key ring that does not match its store refuses to start instead of writing
data it cannot read back.

One SQL text per dialect differs only in placeholders; both recorders share :class:`_KeyStore`.

**The events table gets one more index, on (topic, notification id).** Followers that read only
some kinds of events (the projections, the relay's outbox, the integrator's key history) ask
for "the next events of these topics after position P". The library's table has only the
notification id index, so the database walked every event after P until it found enough of the
wanted topics: for a projection of rare events (ratings, agents, appointments) P is the last one
it saw, and each poll walked most of the log again: the costliest statement of a busy
federation (measured with ``pg_stat_statements``; ``benchmarks/README.md``). With the index, a
poll reads only the wanted events after P.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.sql import SQL, Identifier

from hub.application.storage import unreachable

PERSONAL_KEYS = "tongban_personal_keys"
KEYRING = "tongban_keyring"


@dataclass(frozen=True)
class PersonalKey:
    """One case's personal-data key, wrapped under an at-rest key, and whose data it seals."""

    case_id: UUID
    subject: str  # keyed hash of the applicant's ID number: finds a person's cases for erasure
    wrapped: bytes  # KeyRingCipher ciphertext of the 32-byte key (its key id inside)
    key_id: str


def _create_statements(blob: str, uuid: str, real: str) -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS {PERSONAL_KEYS} ("
        f"case_id {uuid} PRIMARY KEY, subject TEXT, key_id TEXT, wrapped {blob}, "
        f"created_at {real} NOT NULL, erased_at {real})",
        f"CREATE INDEX IF NOT EXISTS {PERSONAL_KEYS}_subject ON {PERSONAL_KEYS} (subject)",
        f"CREATE TABLE IF NOT EXISTS {KEYRING} ("
        f"key_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, created_at {real} NOT NULL)",
    ]


class _KeyStore:
    """The personal-key and keyring statements, for one placeholder style."""

    def __init__(self, param: str, uuid: Callable[[UUID], Any]) -> None:
        p = param
        self.uuid = uuid
        self.insert = (
            f"INSERT INTO {PERSONAL_KEYS} (case_id, subject, key_id, wrapped, created_at) "
            f"VALUES ({p}, {p}, {p}, {p}, {p})"
        )
        # Erasure destroys the key and forgets whose it was; the row remembers that it happened.
        self.erase = (
            f"UPDATE {PERSONAL_KEYS} SET wrapped = NULL, key_id = NULL, subject = NULL, "
            f"erased_at = {p} WHERE case_id = {p}"
        )
        self.select = f"SELECT key_id, wrapped FROM {PERSONAL_KEYS} WHERE case_id = {p}"
        self.by_subject = (
            f"SELECT case_id FROM {PERSONAL_KEYS} WHERE subject = {p} AND wrapped IS NOT NULL"
        )
        self.in_use = (
            f"SELECT key_id, COUNT(*) AS n FROM {PERSONAL_KEYS} "
            "WHERE wrapped IS NOT NULL GROUP BY key_id"
        )
        self.all_wrapped = f"SELECT case_id, wrapped FROM {PERSONAL_KEYS} WHERE wrapped IS NOT NULL"
        self.rewrap = f"UPDATE {PERSONAL_KEYS} SET wrapped = {p}, key_id = {p} WHERE case_id = {p}"
        self.keyring = f"SELECT key_id, fingerprint FROM {KEYRING}"
        self.record_key = (
            f"INSERT INTO {KEYRING} (key_id, fingerprint, created_at) VALUES ({p}, {p}, {p}) "
            "ON CONFLICT (key_id) DO NOTHING"
        )

    def write(self, curs: Any, kwargs: dict[str, Any]) -> None:
        now = time.time()
        for key in kwargs.get("personal_keys", ()):
            curs.execute(
                self.insert, (self.uuid(key.case_id), key.subject, key.key_id, key.wrapped, now)
            )
        for case_id in kwargs.get("erase_keys", ()):
            curs.execute(self.erase, (now, self.uuid(case_id)))


def _write_beside(curs: Any, kwargs: dict[str, Any]) -> None:
    """``beside``: writes of other parts of the node (each called with ``curs``) that must
    commit with the events or not at all. The relay marks an envelope acknowledged in the
    transaction that stores the acknowledgement's record."""
    for write in kwargs.get("beside", ()):
        write(curs)


class PersonalKeyAccess:
    """What the application and the CLI do with the key tables (both recorders have it)."""

    _keys: _KeyStore
    datastore: Any

    def personal_key(self, case_id: UUID) -> tuple[str, bytes] | None:
        """``(key id, wrapped key)`` of a case, or None (no personal data, or erased)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._keys.select, (self._keys.uuid(case_id),))
            row = curs.fetchone()
        if row is None or row["wrapped"] is None:
            return None
        return str(row["key_id"]), bytes(row["wrapped"])

    def cases_of_subject(self, subject: str) -> list[UUID]:
        """The cases whose personal data belongs to ``subject`` and is not erased."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._keys.by_subject, (subject,))
            rows = curs.fetchall()
        return [_as_uuid(row["case_id"]) for row in rows]

    def key_ids_in_use(self) -> dict[str, int]:
        """How many personal-data keys each at-rest key wraps."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._keys.in_use)
            return {str(row["key_id"]): int(row["n"]) for row in curs.fetchall()}

    def keyring(self) -> dict[str, str]:
        """The recorded at-rest key ids and their fingerprints."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._keys.keyring)
            return {str(row["key_id"]): str(row["fingerprint"]) for row in curs.fetchall()}

    def record_keys(self, fingerprints: dict[str, str]) -> None:
        """Record at-rest keys (an id once recorded keeps its first fingerprint)."""
        with self.datastore.transaction(commit=True) as curs:
            for key_id, fingerprint in fingerprints.items():
                curs.execute(self._keys.record_key, (key_id, fingerprint, time.time()))

    def rewrap(self, rewrap: Callable[[bytes], tuple[str, bytes]]) -> int:
        """Re-wrap every personal-data key with ``rewrap`` in one transaction; returns how many."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self._keys.all_wrapped)
            rows = [(row["case_id"], bytes(row["wrapped"])) for row in curs.fetchall()]
            for case_id, wrapped in rows:
                key_id, new = rewrap(wrapped)
                curs.execute(self._keys.rewrap, (new, key_id, case_id))
        return len(rows)


def _as_uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _bounded(method: Callable[..., Any]) -> Callable[..., Any]:
    """The library's method with its retries bounded for a store that is down.

    The library retries a failed statement ten times, each time waiting for a pooled connection,
    which keeps a call hanging for ten storage timeouts while the database is down. Here a
    failure to get a connection at all is not retried (the node answers UNAVAILABLE within the
    storage timeout and its clients retry), while a statement that failed on a live connection
    (a serialisation failure, an aborted pipeline) is tried up to three times, as before.
    """
    undecorated = getattr(method, "__wrapped__", method)

    @functools.wraps(undecorated)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(3):
            try:
                return undecorated(*args, **kwargs)
            except (OperationalError, InterfaceError) as error:
                if unreachable(error) or attempt == 2:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    return bounded


class TongbanPostgresRecorder(PersonalKeyAccess, PostgresApplicationRecorder):
    """The library's PostgreSQL application recorder plus the key tables, with retries bounded
    for a store that is down (see :func:`_bounded`)."""

    insert_events = _bounded(PostgresApplicationRecorder.insert_events)
    select_events = _bounded(PostgresApplicationRecorder.select_events)
    select_notifications = _bounded(PostgresApplicationRecorder.select_notifications)
    max_notification_id = _bounded(PostgresApplicationRecorder.max_notification_id)

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self._keys = _KeyStore("%s", lambda case_id: case_id)
        # The topic index of the module docstring.
        self.sql_create_statements.append(
            SQL(
                "CREATE INDEX IF NOT EXISTS {index} ON {schema}.{table} (topic, notification_id)"
            ).format(
                index=Identifier(f"{self.events_table_name}_topic"),
                schema=Identifier(self.datastore.schema),
                table=Identifier(self.events_table_name),
            )
        )
        self.sql_create_statements.extend(
            SQL(statement).format()
            for statement in _create_statements("BYTEA", "UUID", "DOUBLE PRECISION")
        )

    def _insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        # Before the events, where the library lets an error end the transaction: it catches
        # any error of the event insert (and of what follows it, below) inside the transaction
        # block and raises it after, so a Python error there would not roll back what the
        # statements before it wrote (a statement's own error does: it aborts the transaction).
        super()._insert_events(curs, stored_events, **kwargs)
        _write_beside(curs, kwargs)

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        # After the events: a conflicting concurrent duplicate then fails on the events' own
        # (id, version) key first, with the IntegrityError the application expects.
        super()._insert_stored_events(curs, stored_events, **kwargs)
        if not (kwargs.get("personal_keys") or kwargs.get("erase_keys")):
            return
        # Sync the pipeline first (leaving a nested pipeline block does), so a conflict is
        # raised here. Otherwise, when the server's answer to the events is already in as the
        # key rows are sent, psycopg raises the conflict at them, the library's commit then
        # runs on the aborted pipeline, and "pipeline aborted" replaces the IntegrityError
        # (test_a_conflict_with_personal_keys_is_an_integrity_error_when_its_answer_comes_early).
        with curs.connection.pipeline():
            pass  # leaving the nested block is the sync
        # Another cursor of the same connection (same transaction): the library reads the new
        # notification ids back from ``curs``.
        with curs.connection.cursor() as keys:
            self._keys.write(keys, kwargs)


class TongbanSQLiteRecorder(PersonalKeyAccess, SQLiteApplicationRecorder):
    """The library's SQLite application recorder plus the key tables."""

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self._keys = _KeyStore("?", lambda case_id: case_id.hex)

    def construct_create_table_statements(self) -> list[str]:
        own = _create_statements("BLOB", "TEXT", "REAL")
        # The topic index of the module docstring (SQLite orders an index's rows by rowid).
        topics = (
            f"CREATE INDEX IF NOT EXISTS {self.events_table_name}_topic "
            f"ON {self.events_table_name} (topic)"
        )
        return [*super().construct_create_table_statements(), topics, *own]

    def _insert_events(
        self, c: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        self._keys.write(c, kwargs)
        _write_beside(c, kwargs)  # any error here rolls the whole transaction back
        return ids


def recorder_topic(postgres: bool) -> str:
    """The ``APPLICATION_RECORDER_TOPIC`` for the configured store."""
    cls = TongbanPostgresRecorder if postgres else TongbanSQLiteRecorder
    return f"{cls.__module__}:{cls.__qualname__}"

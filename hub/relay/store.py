"""The relay's own tables, beside the event store: outbox, peers' checkpoints, quarantine.

The outbox is a materialised view of the node's log (the library's ``Projection`` with a
``TrackingRecorder``): for every step a peer must receive, one row, written in the same
transaction as the tracking record of the notification that caused it, so a crash never loses
or doubles an envelope. A row stays until the destination's signed acknowledgement is stored;
the publisher sends it again, with the same envelope id, while it is not.

``tongban_relay_peers`` remembers, per peer, the last checkpoint of ours it acknowledged (the
start of the next consistency proof we send it) and the latest checkpoint of its log we saw
(every new one must be consistent with it). ``tongban_relay_quarantine`` keeps every message
the relay would not act on, with the reason, until an operator releases or rejects it.

PostgreSQL and SQLite share the SQL, which differs only in placeholders and a few types.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from psycopg.sql import SQL

OUTBOX = "tongban_relay_outbox"
PEERS = "tongban_relay_peers"
SEEN = "tongban_relay_seen"
STEPS = "tongban_relay_steps"
QUARANTINE = "tongban_relay_quarantine"

#: Outbox row kinds: an envelope carrying a step, an acknowledgement of one we received, and a
#: fetch of a received case's material files from the node where they were uploaded.
ENVELOPE = "envelope"
ACK = "ack"
FETCH = "fetch"

#: Quarantine states.
HELD = "held"
RELEASED = "released"
REJECTED = "rejected"


@dataclass(frozen=True)
class OutboxRow:
    """One message to send."""

    kind: str
    envelope_id: UUID
    destination: str
    case_id: UUID
    record_id: UUID  # the record whose step is sent (envelope), or that was stored (ack)
    seq: int = 0
    attempts: int = 0
    sent_at: float | None = None
    done_at: float | None = None
    outcome: str = ""
    reason: str = ""


@dataclass(frozen=True)
class PeerCheckpoints:
    """What this node knows of one peer's checkpoints."""

    origin: str
    acked_size: int  # our checkpoint size the peer last cosigned (0: none)
    seen_size: int  # the peer's latest checkpoint we verified (0: none)
    seen_root: bytes
    seen_note: bytes


@dataclass(frozen=True)
class Quarantined:
    """A message the relay did not act on."""

    number: int
    received_at: float
    sender: str
    reason: str
    detail: str
    message: bytes
    status: str


def _statements(serial: str, blob: str, real: str) -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS {OUTBOX} ("
        f"seq {serial}, kind TEXT NOT NULL, envelope_id TEXT NOT NULL, "
        "destination TEXT NOT NULL, case_id TEXT NOT NULL, record_id TEXT NOT NULL, "
        f"created_at {real} NOT NULL, sent_at {real}, attempts INTEGER NOT NULL DEFAULT 0, "
        f"done_at {real}, outcome TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '', "
        "UNIQUE (kind, envelope_id))",
        # The rows still waiting (never sent, or sent and not done), by when they were sent:
        # the publisher's two questions, "never sent" (sent_at IS NULL) and "sent before the
        # resend time" (sent_at < t), are each one range of it, and neither walks the rows in
        # flight (hundreds on a busy node) nor the done ones (all the others). An index led by
        # done_at served neither: a generic plan then walked the rows in flight, or the whole
        # table in seq order.
        f"CREATE INDEX IF NOT EXISTS {OUTBOX}_waiting ON {OUTBOX} (sent_at, seq) "
        "WHERE done_at IS NULL",
        f"DROP INDEX IF EXISTS {OUTBOX}_pending",  # its predecessor, in databases made before
        f"CREATE TABLE IF NOT EXISTS {PEERS} ("
        "origin TEXT PRIMARY KEY, acked_size BIGINT NOT NULL DEFAULT 0, "
        f"seen_size BIGINT NOT NULL DEFAULT 0, seen_root {blob}, seen_note {blob})",
        f"CREATE TABLE IF NOT EXISTS {STEPS} ("
        "record_id TEXT PRIMARY KEY, case_id TEXT NOT NULL, origin TEXT NOT NULL, "
        "last_version BIGINT NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {STEPS}_case ON {STEPS} (case_id, last_version)",
        f"CREATE TABLE IF NOT EXISTS {SEEN} ("
        f"origin TEXT NOT NULL, size BIGINT NOT NULL, root {blob} NOT NULL, note {blob} NOT NULL, "
        "PRIMARY KEY (origin, size))",
        f"CREATE TABLE IF NOT EXISTS {QUARANTINE} ("
        f"number {serial}, received_at {real} NOT NULL, sender TEXT NOT NULL, "
        f"reason TEXT NOT NULL, detail TEXT NOT NULL, message {blob} NOT NULL, "
        f"status TEXT NOT NULL, resolved_at {real})",
        # The held ones, counted for the metric: released and rejected messages stay as the
        # record of what was decided, and are not read again to count the others.
        f"CREATE INDEX IF NOT EXISTS {QUARANTINE}_held ON {QUARANTINE} (number) "
        f"WHERE status = '{HELD}'",
    ]


def _due(columns: str, kinds: str, p: str) -> str:
    """Rows of ``kinds`` never sent, or sent before a time (parameters: limit, time, limit,
    limit), oldest first.

    Two branches, not one ``sent_at IS NULL OR sent_at < t``: each branch is one range of
    the ``_waiting`` index, read in that index's order (``sent_at, seq``, which for rows never
    sent is seq order) and cut at the limit there, so neither walks the rows in flight.
    PostgreSQL's plans for the single OR (custom or generic) walked the primary key in seq
    order past every done row instead.
    """
    return (
        f"SELECT {columns} FROM (SELECT {columns} FROM {OUTBOX} WHERE done_at IS NULL "
        f"AND sent_at IS NULL AND {kinds} ORDER BY sent_at, seq LIMIT {p}) AS never_sent "
        f"UNION ALL SELECT {columns} FROM (SELECT {columns} FROM {OUTBOX} WHERE done_at IS NULL "
        f"AND sent_at < {p} AND {kinds} ORDER BY sent_at, seq LIMIT {p}) AS sent_long_ago "
        f"ORDER BY seq LIMIT {p}"
    )


class _RelaySQL:
    """The relay's statements in one placeholder style (``%s`` or ``?``)."""

    def __init__(self, p: str) -> None:
        self.enqueue = (
            f"INSERT INTO {OUTBOX} (kind, envelope_id, destination, case_id, record_id, "
            f"created_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}) "
            "ON CONFLICT (kind, envelope_id) DO NOTHING"
        )
        columns = (
            "seq, kind, envelope_id, destination, case_id, record_id, attempts, sent_at, "
            "done_at, outcome, reason"
        )
        # Messages (envelopes, acknowledgements) and fetches are sent by different loops.
        self.due = _due(columns, f"kind <> '{FETCH}'", p)
        self.due_fetches = _due(columns, f"kind = '{FETCH}'", p)
        self.one = f"SELECT {columns} FROM {OUTBOX} WHERE kind = {p} AND envelope_id = {p}"
        self.all_for = f"SELECT {columns} FROM {OUTBOX} WHERE destination = {p} ORDER BY seq"
        self._p = p
        self.done = (
            f"UPDATE {OUTBOX} SET done_at = {p}, outcome = {p}, reason = {p} "
            f"WHERE kind = {p} AND envelope_id = {p} AND done_at IS NULL"
        )
        self.backlog = (
            f"SELECT destination, COUNT(*) AS waiting FROM {OUTBOX} WHERE done_at IS NULL "
            f"AND kind = '{ENVELOPE}' GROUP BY destination"
        )
        self.peer = (
            f"SELECT origin, acked_size, seen_size, seen_root, seen_note FROM {PEERS} "
            f"WHERE origin = {p}"
        )
        self.peer_insert = f"INSERT INTO {PEERS} (origin) VALUES ({p}) ON CONFLICT DO NOTHING"
        self.acked = f"UPDATE {PEERS} SET acked_size = {p} WHERE origin = {p} AND acked_size < {p}"
        self.seen = (
            f"UPDATE {PEERS} SET seen_size = {p}, seen_root = {p}, seen_note = {p} "
            f"WHERE origin = {p}"
        )
        self.step_add = (
            f"INSERT INTO {STEPS} (record_id, case_id, origin, last_version) "
            f"VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (record_id) DO NOTHING"
        )
        self.steps_of = (
            f"SELECT record_id, origin FROM {STEPS} WHERE case_id = {p} AND last_version <= {p} "
            "ORDER BY last_version"
        )
        self.seen_add = (
            f"INSERT INTO {SEEN} (origin, size, root, note) VALUES ({p}, {p}, {p}, {p}) "
            "ON CONFLICT (origin, size) DO NOTHING"
        )
        self.seen_at = f"SELECT root, note FROM {SEEN} WHERE origin = {p} AND size = {p}"
        self.hold = (
            f"INSERT INTO {QUARANTINE} (received_at, sender, reason, detail, message, status) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, '{HELD}')"
        )
        self.held = (
            f"SELECT number, received_at, sender, reason, detail, message, status "
            f"FROM {QUARANTINE} WHERE ({p} = '' OR status = {p}) ORDER BY number"
        )
        self.resolve = (
            f"UPDATE {QUARANTINE} SET status = {p}, resolved_at = {p} "
            f"WHERE number = {p} AND status = '{HELD}'"
        )
        self.held_count = f"SELECT COUNT(*) AS held FROM {QUARANTINE} WHERE status = '{HELD}'"

    def sent_all(self, count: int) -> str:
        """Rows (``count`` seqs, after two timestamps) sent now; an acknowledgement's row is
        done then too. Every SET reads the row as it was, so ``done_at IS NULL`` is the
        old value in each CASE."""
        p = self._p
        ack_not_done = f"kind = '{ACK}' AND done_at IS NULL"
        return (
            f"UPDATE {OUTBOX} SET sent_at = {p}, attempts = attempts + 1, "
            f"outcome = CASE WHEN {ack_not_done} THEN 'sent' ELSE outcome END, "
            f"reason = CASE WHEN {ack_not_done} THEN '' ELSE reason END, "
            f"done_at = CASE WHEN {ack_not_done} THEN {p} ELSE done_at END "
            f"WHERE seq IN ({', '.join([p] * count)})"
        )


class _RelayTables:
    """What both dialects' relay stores do (see the module docstring)."""

    _sql: _RelaySQL
    _shared: threading.local

    @contextmanager
    def _cursor(self, *, commit: bool) -> Iterator[Any]:
        shared = getattr(self._shared, "cursor", None)
        if shared is not None and (not commit or getattr(self._shared, "writing", False)):
            # This thread's reading() (the reads share one transaction) or writing() (reads
            # and writes share one, committed at its end).
            yield shared
            return
        with self._transaction(commit=commit) as curs:
            yield curs

    @contextmanager
    def _transaction(self, *, commit: bool) -> Iterator[Any]:
        """A transaction of the store's datastore, and its cursor."""
        with self.datastore.transaction(commit=commit) as curs:  # type: ignore[attr-defined]
            yield curs

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Within it, this thread's reads and writes share one transaction, committed when it
        ends (rolled back, all of it, if it raises): one commit for many writes."""
        if getattr(self._shared, "cursor", None) is not None:
            raise RuntimeError("writing() inside reading() or writing()")
        with self._transaction(commit=True) as curs:
            self._shared.cursor = curs
            self._shared.writing = True
            try:
                yield
            finally:
                self._shared.cursor = None
                self._shared.writing = False

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Within it, this thread's reads share one transaction (writes keep their own): one
        BEGIN/COMMIT round trip instead of one per read."""
        if getattr(self._shared, "cursor", None) is not None:
            yield
            return
        with self._transaction(commit=False) as curs:
            self._shared.cursor = curs
            try:
                yield
            finally:
                self._shared.cursor = None

    def enqueue(
        self,
        rows: Sequence[OutboxRow],
        tracking: Tracking,
        step: tuple[UUID, UUID, str, int] | None = None,
    ) -> None:
        """Add ``rows``, remember ``step`` (record id, case id, origin, last version) among
        its case's steps, and advance the tracking position, in one transaction."""
        now = time.time()
        with self._cursor(commit=True) as curs:
            if step is not None:
                record_id, case_id, origin, version = step
                curs.execute(self._sql.step_add, (str(record_id), str(case_id), origin, version))
            for row in rows:
                curs.execute(
                    self._sql.enqueue,
                    (
                        row.kind,
                        str(row.envelope_id),
                        row.destination,
                        str(row.case_id),
                        str(row.record_id),
                        now,
                    ),
                )
            self._insert_tracking(curs, tracking)  # type: ignore[attr-defined]  # the recorder's

    def add(self, rows: Sequence[OutboxRow]) -> None:
        """Add rows outside the log's order (acknowledging a duplicate again)."""
        now = time.time()
        with self._cursor(commit=True) as curs:
            for row in rows:
                curs.execute(
                    self._sql.enqueue,
                    (
                        row.kind,
                        str(row.envelope_id),
                        row.destination,
                        str(row.case_id),
                        str(row.record_id),
                        now,
                    ),
                )

    def steps_of(self, case_id: UUID, upto: int) -> list[tuple[UUID, str]]:
        """``(record id, origin)`` of the case's steps up to its ``upto`` version, in order."""
        with self._cursor(commit=False) as curs:
            curs.execute(self._sql.steps_of, (str(case_id), upto))
            return [(UUID(row["record_id"]), row["origin"]) for row in curs.fetchall()]

    def due(self, resend_after: float, limit: int = 100) -> list[OutboxRow]:
        """Envelopes and acknowledgements never sent, or sent more than ``resend_after``
        seconds ago and not done."""
        with self._cursor(commit=False) as curs:
            curs.execute(self._sql.due, (limit, time.time() - resend_after, limit, limit))
            return [_outbox_row(row) for row in curs.fetchall()]

    def due_fetches(self, retry_after: float, limit: int = 10) -> list[OutboxRow]:
        """Fetches of materials never tried, or tried more than ``retry_after`` seconds ago
        and not done."""
        with self._cursor(commit=False) as curs:
            curs.execute(self._sql.due_fetches, (limit, time.time() - retry_after, limit, limit))
            return [_outbox_row(row) for row in curs.fetchall()]

    def row(self, kind: str, envelope_id: UUID) -> OutboxRow | None:
        """One row, or None."""
        with self._cursor(commit=False) as curs:
            curs.execute(self._sql.one, (kind, str(envelope_id)))
            found = curs.fetchone()
        return None if found is None else _outbox_row(found)

    def rows_for(self, destination: str) -> list[OutboxRow]:
        """Every row for one destination, oldest first."""
        with self._cursor(commit=False) as curs:
            curs.execute(self._sql.all_for, (destination,))
            return [_outbox_row(row) for row in curs.fetchall()]

    def mark_sent(self, rows: Sequence[OutboxRow]) -> None:
        """The rows went to the broker now (once more), in one transaction. An acknowledgement
        row is done then: acknowledgements are not acknowledged (the sender sends its envelope
        again if one is lost)."""
        if not rows:
            return
        now = time.time()
        with self._cursor(commit=True) as curs:
            # One statement for the round's rows (a busy publisher's round holds dozens), not
            # one or two each: every statement is a round trip and a parse at the server.
            curs.execute(self._sql.sent_all(len(rows)), (now, now, *(row.seq for row in rows)))

    def mark_done(self, kind: str, envelope_id: UUID, outcome: str, reason: str = "") -> bool:
        """The row needs no more sending; False when it was done already (or is unknown)."""
        with self._cursor(commit=True) as curs:
            curs.execute(self._sql.done, (time.time(), outcome, reason, kind, str(envelope_id)))
            return bool(curs.rowcount)

    def backlog(self) -> dict[str, int]:
        """Envelopes not yet acknowledged, by destination."""
        with self._cursor(commit=False) as curs:
            curs.execute(self._sql.backlog)
            return {row["destination"]: int(row["waiting"]) for row in curs.fetchall()}

    def peer(self, origin: str) -> PeerCheckpoints:
        """What we know of ``origin``'s checkpoints (zeros for a peer never heard of)."""
        with self._cursor(commit=False) as curs:
            curs.execute(self._sql.peer, (origin,))
            row = curs.fetchone()
        if row is None:  # the first time: a row of its own (a write), then read it back
            with self._cursor(commit=True) as curs:
                curs.execute(self._sql.peer_insert, (origin,))
                curs.execute(self._sql.peer, (origin,))
                row = curs.fetchone()
        return PeerCheckpoints(
            origin=row["origin"],
            acked_size=int(row["acked_size"]),
            seen_size=int(row["seen_size"]),
            seen_root=bytes(row["seen_root"] or b""),
            seen_note=bytes(row["seen_note"] or b""),
        )

    def mark_acknowledged(
        self, envelope_id: UUID, outcome: str, reason: str, origin: str, cosigned_size: int
    ) -> None:
        """The envelope's acknowledgement is stored (outcome ``stored`` or ``refused``): its
        row is done and, when ``origin`` cosigned our checkpoint of ``cosigned_size`` (a stored
        step), that is remembered, in one transaction."""
        with self._cursor(commit=True) as curs:
            self.write_acknowledged(curs, envelope_id, outcome, reason, origin, cosigned_size)

    def write_acknowledged(
        self,
        curs: Any,
        envelope_id: UUID,
        outcome: str,
        reason: str,
        origin: str,
        cosigned_size: int,
    ) -> None:
        """:meth:`mark_acknowledged`'s writes, with ``curs``: in the transaction that stores
        the acknowledgement's record (``record_acknowledgement(beside=...)``), one commit for
        both instead of one each."""
        curs.execute(self._sql.done, (time.time(), outcome, reason, ENVELOPE, str(envelope_id)))
        if cosigned_size:
            curs.execute(self._sql.peer_insert, (origin,))
            curs.execute(self._sql.acked, (cosigned_size, origin, cosigned_size))

    def record_seen(self, origin: str, size: int, root: bytes, note: bytes) -> None:
        """``origin``'s checkpoint of ``size`` verified and consistent with what we saw."""
        with self._cursor(commit=True) as curs:
            curs.execute(self._sql.peer_insert, (origin,))
            curs.execute(self._sql.seen, (size, root, note, origin))

    def seen_root(self, origin: str, size: int) -> tuple[bytes, bytes] | None:
        """The root and note of ``origin``'s checkpoint of ``size`` that we verified, if any."""
        with self._cursor(commit=False) as curs:
            curs.execute(self._sql.seen_at, (origin, size))
            row = curs.fetchone()
        return None if row is None else (bytes(row["root"]), bytes(row["note"]))

    def add_seen(self, origin: str, size: int, root: bytes, note: bytes) -> bytes:
        """Remember a verified checkpoint of ``origin``; returns the root kept for that size
        (another root than ``root`` means the origin signed two trees of one size: a fork)."""
        with self._cursor(commit=True) as curs:
            curs.execute(self._sql.seen_add, (origin, size, root, note))
            curs.execute(self._sql.peer_insert, (origin,))
            curs.execute(self._sql.seen_at, (origin, size))
            kept = bytes(curs.fetchone()["root"])
            if kept == root:
                curs.execute(self._sql.peer, (origin,))
                if int(curs.fetchone()["seen_size"]) < size:
                    curs.execute(self._sql.seen, (size, root, note, origin))
        return kept

    def hold(self, sender: str, reason: str, detail: str, message: bytes) -> None:
        """Quarantine a message with the reason."""
        with self._cursor(commit=True) as curs:
            curs.execute(self._sql.hold, (time.time(), sender, reason, detail, message))

    def quarantined(self, status: str = "") -> list[Quarantined]:
        """Quarantined messages (all, or those in ``status``)."""
        with self._cursor(commit=False) as curs:
            curs.execute(self._sql.held, (status, status))
            return [
                Quarantined(
                    number=int(row["number"]),
                    received_at=float(row["received_at"]),
                    sender=row["sender"],
                    reason=row["reason"],
                    detail=row["detail"],
                    message=bytes(row["message"]),
                    status=row["status"],
                )
                for row in curs.fetchall()
            ]

    def resolve(self, number: int, status: str) -> bool:
        """Release or reject a held message; False if it is not held."""
        if status not in (RELEASED, REJECTED):
            raise ValueError(f"release or reject, not {status!r}")
        with self._cursor(commit=True) as curs:
            curs.execute(self._sql.resolve, (status, time.time(), number))
            return bool(curs.rowcount)

    def held_count(self) -> int:
        """Messages in quarantine now."""
        with self._cursor(commit=False) as curs:
            curs.execute(self._sql.held_count)
            return int(curs.fetchone()["held"])


def _outbox_row(row: Any) -> OutboxRow:
    return OutboxRow(
        kind=row["kind"],
        envelope_id=UUID(row["envelope_id"]),
        destination=row["destination"],
        case_id=UUID(row["case_id"]),
        record_id=UUID(row["record_id"]),
        seq=int(row["seq"]),
        attempts=int(row["attempts"]),
        sent_at=row["sent_at"],
        done_at=row["done_at"],
        outcome=row["outcome"],
        reason=row["reason"],
    )


class PostgresRelayStore(_RelayTables, PostgresTrackingRecorder):
    """The relay's tables in the node's PostgreSQL database."""

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self._sql = _RelaySQL("%s")
        self._shared = threading.local()
        self.sql_create_statements.extend(
            SQL(statement).format()
            for statement in _statements("BIGSERIAL PRIMARY KEY", "BYTEA", "DOUBLE PRECISION")
        )


class SQLiteRelayStore(_RelayTables, SQLiteTrackingRecorder):
    """The relay's tables in the node's SQLite file."""

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self._sql = _RelaySQL("?")
        self._shared = threading.local()

    def construct_create_table_statements(self) -> list[str]:
        own = _statements("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB", "REAL")
        return [*super().construct_create_table_statements(), *own]

    @contextmanager
    def reading(self) -> Iterator[None]:
        yield  # SQLite reads are local calls, not round trips: nothing to share

    @contextmanager
    def _transaction(self, *, commit: bool) -> Iterator[Any]:
        with self.datastore.transaction(commit=commit) as curs:
            # The sqlite3 cursor under the library's wrapper: it has rowcount, and the
            # library's tracking insert needs only execute and fetchone.
            yield curs.sqlite_cursor


RelayStore = PostgresRelayStore | SQLiteRelayStore


def open_relay_store(datastore: Any, *, create: bool = True) -> RelayStore:
    """The relay store on the event store's own datastore (same database, same pool)."""
    from eventsourcing.postgres import PostgresDatastore

    store: RelayStore
    if isinstance(datastore, PostgresDatastore):
        store = PostgresRelayStore(datastore)
    else:
        store = SQLiteRelayStore(datastore)
    if create:
        store.create_table()
    return store


__all__ = [
    "ACK",
    "ENVELOPE",
    "FETCH",
    "HELD",
    "REJECTED",
    "RELEASED",
    "OutboxRow",
    "PeerCheckpoints",
    "Quarantined",
    "RelayStore",
    "open_relay_store",
]

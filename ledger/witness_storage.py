"""SQL storage for witnessing: what a node cosigned, saw, collected and tried (a sibling driver).

Like :mod:`ledger.storage` (which creates these tables with the log's and re-exports
:class:`SQLWitnessStore`), one class serves PostgreSQL (psycopg 3) and SQLite, and **the caller
owns the transaction** unless it asks for ``commit=True``. Nothing in the pure core imports it.

Tables (``<prefix>`` defaults to ``ledger``)::

    <prefix>_witness_state        origin PK, size, root, note: the latest checkpoint this node,
                                  as a witness, cosigned for each log
    <prefix>_witness_evidence     split-view evidence kept, oldest first (both signed notes and
                                  the proof)
    <prefix>_witness_observed     (origin, size) PK, root, note, observed_at: the first
                                  log-signed checkpoint seen per log and size, from any source
    <prefix>_cosignatures         (size, witness, key_id) PK, root, line, timestamp, received_at:
                                  the cosignatures other witnesses gave this node's checkpoints
    <prefix>_witness_submissions  witness PK, url, attempted_at, status, message: the last time
                                  this node asked each witness to cosign, and what it answered
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeAlias

import psycopg

from ledger.errors import EvidenceKind, LedgerError, SplitViewEvidence
from ledger.merkle import HASH_SIZE
from ledger.witness import WitnessState, WitnessStore

if TYPE_CHECKING:
    from ledger.observer import ObservationStore

Cursor: TypeAlias = "psycopg.Cursor[Any] | sqlite3.Cursor"
"""An open DB-API cursor of the dialect the tables were made for."""

Dialect: TypeAlias = Literal["postgres", "sqlite"]

_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,40}")

#: Larger than any log size (a signed 64-bit column holds it in both dialects).
MAX_SIZE = 2**63 - 1
#: How many candidate sizes :meth:`WitnessTables.candidate_sizes` returns at once by default.
CANDIDATE_PAGE = 16


class WitnessStorageError(LedgerError):
    """The witnessing tables cannot be used as asked (wrong cursor, bad prefix or dialect)."""


@dataclass(frozen=True)
class _Dialect:
    param: str
    int_type: str
    blob: str
    real: str
    identity_pk: str
    octet_length: str


_DIALECTS: dict[str, _Dialect] = {
    "postgres": _Dialect(
        param="%s",
        int_type="BIGINT",
        blob="BYTEA",
        real="DOUBLE PRECISION",
        identity_pk="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        octet_length="octet_length",
    ),
    "sqlite": _Dialect(
        param="?",
        int_type="INTEGER",
        blob="BLOB",
        real="REAL",
        identity_pk="INTEGER PRIMARY KEY",
        octet_length="length",
    ),
}


class StoredCosignature(NamedTuple):
    """A cosignature of one of this node's checkpoints, as stored."""

    size: int
    root: bytes
    witness: str
    key_id: int
    line: str
    timestamp: int
    received_at: float


class Submission(NamedTuple):
    """The last add-checkpoint request this node sent one witness, and its outcome."""

    witness: str
    url: str
    attempted_at: float
    status: int
    message: str


class WitnessTables:
    """The witnessing tables in one database, for one dialect (see the module docstring)."""

    def __init__(self, dialect: Dialect, prefix: str = "ledger") -> None:
        """Prepare the statements for ``dialect`` and tables named ``<prefix>_*``."""
        if dialect not in _DIALECTS:
            raise WitnessStorageError(
                f"unknown SQL dialect {dialect!r}; expected 'postgres' or 'sqlite'"
            )
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise WitnessStorageError(
                f"table prefix {prefix!r} must be a lower-case SQL identifier "
                "(letters, digits, underscores; at most 41 characters)"
            )
        self.dialect: Dialect = dialect
        self.prefix = prefix
        d = self._d = _DIALECTS[dialect]
        p = d.param
        self.state_table = f"{prefix}_witness_state"
        self.evidence_table = f"{prefix}_witness_evidence"
        self.observed_table = f"{prefix}_witness_observed"
        self.cosignatures_table = f"{prefix}_cosignatures"
        self.submissions_table = f"{prefix}_witness_submissions"
        cosig_columns = "size, root, witness, key_id, line, timestamp, received_at"
        self._record_cosignature_sql = (
            f"INSERT INTO {self.cosignatures_table} ({cosig_columns}) "
            f"VALUES ({', '.join([p] * 7)}) "
            # A witness cosigns a size again when it is re-submitted: keep the newest.
            "ON CONFLICT (size, witness, key_id) DO UPDATE SET line = excluded.line, "
            "timestamp = excluded.timestamp, received_at = excluded.received_at "
            f"WHERE {self.cosignatures_table}.root = excluded.root"
        )
        self._cosignatures_sql = (
            f"SELECT {cosig_columns} FROM {self.cosignatures_table} WHERE size = {p} "
            "ORDER BY witness, key_id"
        )
        # Read backwards along the primary key (size, witness, key_id) and cut at the limit:
        # the caller wants the latest qualifying sizes, and the table holds every checkpoint
        # ever cosigned (grouping all of it took 0.4 s at 200,000 checkpoints).
        self._candidate_sizes_sql = (
            f"SELECT size FROM {self.cosignatures_table} WHERE size >= {p} AND size < {p} "
            f"GROUP BY size HAVING COUNT(DISTINCT witness) >= {p} ORDER BY size DESC LIMIT {p}"
        )
        self._last_cosigned_sql = (
            f"SELECT MAX(size) FROM {self.cosignatures_table} WHERE witness = {p}"
        )
        self._latest_cosignatures_sql = (
            f"SELECT witness, MAX(size), MAX(received_at) FROM {self.cosignatures_table} "
            "GROUP BY witness ORDER BY witness"
        )
        sub_columns = "witness, url, attempted_at, status, message"
        self._record_submission_sql = (
            f"INSERT INTO {self.submissions_table} ({sub_columns}) "
            f"VALUES ({', '.join([p] * 5)}) ON CONFLICT (witness) DO UPDATE SET "
            "url = excluded.url, attempted_at = excluded.attempted_at, "
            "status = excluded.status, message = excluded.message"
        )
        self._submissions_sql = (
            f"SELECT {sub_columns} FROM {self.submissions_table} ORDER BY witness"
        )
        self._states_sql = (
            f"SELECT origin, size, root, note FROM {self.state_table} ORDER BY origin"
        )
        self._evidence_count_sql = f"SELECT COUNT(*) FROM {self.evidence_table}"

    # ------------------------------------------------------------------ schema

    def create_statements(self) -> list[str]:
        """Return the idempotent DDL (``CREATE TABLE IF NOT EXISTS`` ...) for every table."""
        d = self._d
        root_check = f"CHECK ({d.octet_length}(root) = {HASH_SIZE})"
        return [
            f"CREATE TABLE IF NOT EXISTS {self.state_table} ("
            f"origin TEXT PRIMARY KEY, size {d.int_type} NOT NULL, "
            f"root {d.blob} NOT NULL {root_check}, note {d.blob} NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {self.evidence_table} ("
            f"id {d.identity_pk}, origin TEXT NOT NULL, kind TEXT NOT NULL, "
            f"reason TEXT NOT NULL, cosigned_note {d.blob} NOT NULL, "
            f"new_note {d.blob} NOT NULL, old_size {d.int_type} NOT NULL, "
            f"proof {d.blob} NOT NULL, observed_at {d.int_type} NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {self.observed_table} ("
            f"origin TEXT NOT NULL, size {d.int_type} NOT NULL CHECK (size >= 0), "
            f"root {d.blob} NOT NULL {root_check}, note {d.blob} NOT NULL, "
            f"observed_at {d.int_type} NOT NULL, PRIMARY KEY (origin, size))",
            f"CREATE TABLE IF NOT EXISTS {self.cosignatures_table} ("
            f"size {d.int_type} NOT NULL CHECK (size > 0), "
            f"root {d.blob} NOT NULL {root_check}, witness TEXT NOT NULL, "
            f"key_id {d.int_type} NOT NULL, line TEXT NOT NULL, "
            f"timestamp {d.int_type} NOT NULL, received_at {d.real} NOT NULL, "
            "PRIMARY KEY (size, witness, key_id))",
            f"CREATE TABLE IF NOT EXISTS {self.submissions_table} ("
            f"witness TEXT PRIMARY KEY, url TEXT NOT NULL, attempted_at {d.real} NOT NULL, "
            f"status {d.int_type} NOT NULL, message TEXT NOT NULL)",
        ]

    def create(self, cursor: Cursor) -> None:
        """Run :meth:`create_statements` on ``cursor`` (the caller commits)."""
        self.check_cursor(cursor)
        for statement in self.create_statements():
            cursor.execute(statement)

    def check_cursor(self, cursor: object) -> None:
        """Refuse a cursor of the other dialect with a message saying so."""
        expected: type = sqlite3.Cursor if self.dialect == "sqlite" else psycopg.Cursor
        if not isinstance(cursor, expected):
            raise WitnessStorageError(
                f"WitnessTables({self.dialect!r}) needs a {expected.__module__}."
                f"{expected.__name__}, got {type(cursor).__module__}.{type(cursor).__name__}"
            )

    # ------------------------------------------------------------------ cosignatures received

    def record_cosignature(
        self,
        cursor: Cursor,
        cosignature: StoredCosignature,
    ) -> None:
        """Keep a verified cosignature of this node's checkpoint (a newer one of the same
        witness, key and size replaces it)."""
        self.check_cursor(cursor)
        c = cosignature
        cursor.execute(
            self._record_cosignature_sql,
            (c.size, c.root, c.witness, c.key_id, c.line, c.timestamp, c.received_at),
        )

    def cosignatures(self, cursor: Cursor, size: int) -> list[StoredCosignature]:
        """The cosignatures kept for this node's checkpoint of ``size``."""
        self.check_cursor(cursor)
        cursor.execute(self._cosignatures_sql, (size,))
        return [
            StoredCosignature(
                int(r[0]), bytes(r[1]), str(r[2]), int(r[3]), str(r[4]), int(r[5]), float(r[6])
            )
            for r in cursor.fetchall()
        ]

    def candidate_sizes(
        self,
        cursor: Cursor,
        at_least: int,
        witnesses: int,
        *,
        below: int = MAX_SIZE,
        limit: int = CANDIDATE_PAGE,
    ) -> list[int]:
        """Sizes ``>= at_least`` and ``< below`` with cosignatures of ``witnesses`` distinct
        names or more, largest first, at most ``limit`` of them: the checkpoints that may meet
        a k-of-n policy (still to be verified). For the next page, pass the last size returned
        as ``below``; a page shorter than ``limit`` is the last."""
        self.check_cursor(cursor)
        cursor.execute(self._candidate_sizes_sql, (at_least, below, witnesses, limit))
        return [int(r[0]) for r in cursor.fetchall()]

    def last_cosigned_size(self, cursor: Cursor, witness: str) -> int:
        """The largest size of this node's log that ``witness`` cosigned (0 if none)."""
        self.check_cursor(cursor)
        cursor.execute(self._last_cosigned_sql, (witness,))
        row = cursor.fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0

    def latest_cosignatures(self, cursor: Cursor) -> dict[str, tuple[int, float]]:
        """For every witness that cosigned this log: (largest size, when last received)."""
        self.check_cursor(cursor)
        cursor.execute(self._latest_cosignatures_sql)
        return {str(r[0]): (int(r[1]), float(r[2])) for r in cursor.fetchall()}

    # ------------------------------------------------------------------ submissions

    def record_submission(self, cursor: Cursor, submission: Submission) -> None:
        """Remember the outcome of the last request to one witness."""
        self.check_cursor(cursor)
        s = submission
        cursor.execute(
            self._record_submission_sql, (s.witness, s.url, s.attempted_at, s.status, s.message)
        )

    def submissions(self, cursor: Cursor) -> list[Submission]:
        """The last request to each witness, by witness name."""
        self.check_cursor(cursor)
        cursor.execute(self._submissions_sql)
        return [
            Submission(str(r[0]), str(r[1]), float(r[2]), int(r[3]), str(r[4]))
            for r in cursor.fetchall()
        ]

    # ------------------------------------------------------------------ the witness's side

    def witnessed(self, cursor: Cursor) -> list[WitnessState]:
        """The latest checkpoint this node cosigned for each log, by origin."""
        self.check_cursor(cursor)
        cursor.execute(self._states_sql)
        return [
            WitnessState(str(r[0]), int(r[1]), bytes(r[2]), bytes(r[3])) for r in cursor.fetchall()
        ]

    def evidence_count(self, cursor: Cursor) -> int:
        """How many pieces of split-view evidence are kept."""
        self.check_cursor(cursor)
        cursor.execute(self._evidence_count_sql)
        row = cursor.fetchone()
        return int(row[0]) if row is not None else 0


def _witness_tables(tables: object) -> WitnessTables:
    """Accept a :class:`WitnessTables` or anything holding one as ``.witness`` (LedgerTables)."""
    if isinstance(tables, WitnessTables):
        return tables
    inner = getattr(tables, "witness", None)
    if isinstance(inner, WitnessTables):
        return inner
    raise WitnessStorageError(
        f"expected WitnessTables or LedgerTables, got {type(tables).__name__}"
    )


class SQLWitnessStore:
    """A :class:`~ledger.witness.WitnessStore` and :class:`~ledger.observer.ObservationStore`
    on the witnessing tables.

    :meth:`swap` is a single conditional ``UPDATE`` (or ``INSERT ... ON CONFLICT DO NOTHING``
    for the first checkpoint of an origin), so the size check and the update are atomic in the
    database: a racing writer either waits on the row lock and then finds the condition false, or
    is serialised by SQLite's write lock. :meth:`observe_once` is likewise one
    ``INSERT ... ON CONFLICT DO NOTHING`` and a read.

    With ``commit=False`` (the default) the caller owns the transaction, like everywhere in this
    module, and must commit before releasing the cosignature, and also after a refusal if the
    evidence is to be kept (the witness records it, then raises). With ``commit=True`` every
    successful write is committed at once through the cursor's connection, which is what a
    witness service with a connection of its own wants.

    ``tables`` is a :class:`WitnessTables` or a :class:`ledger.storage.LedgerTables` (whose
    ``witness`` attribute holds them).
    """

    def __init__(self, tables: object, cursor: Cursor, *, commit: bool = False) -> None:
        """Keep witness state in ``tables`` through ``cursor``."""
        witness_tables = _witness_tables(tables)
        witness_tables.check_cursor(cursor)
        self._cursor = cursor
        self._commit = commit
        p = _DIALECTS[witness_tables.dialect].param
        state, evidence = witness_tables.state_table, witness_tables.evidence_table
        observed = witness_tables.observed_table
        self._latest_sql = f"SELECT origin, size, root, note FROM {state} WHERE origin = {p}"
        self._insert_sql = (
            f"INSERT INTO {state} (origin, size, root, note) VALUES ({p}, {p}, {p}, {p}) "
            "ON CONFLICT (origin) DO NOTHING"
        )
        self._update_sql = (
            f"UPDATE {state} SET size = {p}, root = {p}, note = {p} "
            f"WHERE origin = {p} AND size = {p} AND root = {p}"
        )
        columns = "origin, kind, reason, cosigned_note, new_note, old_size, proof, observed_at"
        self._record_sql = f"INSERT INTO {evidence} ({columns}) VALUES ({', '.join([p] * 8)})"
        self._evidence_sql = f"SELECT {columns} FROM {evidence} ORDER BY id"
        self._evidence_of_sql = f"SELECT {columns} FROM {evidence} WHERE origin = {p} ORDER BY id"
        self._observe_sql = (
            f"INSERT INTO {observed} (origin, size, root, note, observed_at) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT (origin, size) DO NOTHING"
        )
        self._observed_sql = f"SELECT note FROM {observed} WHERE origin = {p} AND size = {p}"
        self._latest_observed_sql = (
            f"SELECT note FROM {observed} WHERE origin = {p} ORDER BY size DESC LIMIT 1"
        )

    def _done(self) -> None:
        if self._commit:
            self._cursor.connection.commit()

    def latest(self, origin: str) -> WitnessState | None:
        """Return the latest cosigned state for ``origin``, or ``None``."""
        self._cursor.execute(self._latest_sql, (origin,))
        row = self._cursor.fetchone()
        if row is None:
            return None
        return WitnessState(str(row[0]), int(row[1]), bytes(row[2]), bytes(row[3]))

    def swap(self, expected: WitnessState | None, new: WitnessState) -> bool:
        """Store ``new`` iff ``new.origin``'s state still has ``expected``'s size and root."""
        cursor = self._cursor
        if expected is None:
            cursor.execute(self._insert_sql, (new.origin, new.size, new.root, new.note))
        else:
            cursor.execute(
                self._update_sql,
                (new.size, new.root, new.note, new.origin, expected.size, expected.root),
            )
        stored = cursor.rowcount == 1
        if stored:
            self._done()
        return stored

    def record_evidence(self, evidence: SplitViewEvidence) -> None:
        """Keep ``evidence`` (the proof hashes are stored concatenated)."""
        self._cursor.execute(
            self._record_sql,
            (
                evidence.origin,
                evidence.kind.value,
                evidence.reason,
                evidence.cosigned_note,
                evidence.new_note,
                evidence.old_size,
                b"".join(evidence.proof),
                evidence.observed_at,
            ),
        )
        self._done()

    def evidence(self, origin: str | None = None) -> list[SplitViewEvidence]:
        """Return the kept evidence, oldest first, optionally for one origin only."""
        if origin is None:
            self._cursor.execute(self._evidence_sql)
        else:
            self._cursor.execute(self._evidence_of_sql, (origin,))
        result = []
        for row in self._cursor.fetchall():
            proof = bytes(row[6])
            result.append(
                SplitViewEvidence(
                    origin=str(row[0]),
                    kind=EvidenceKind(row[1]),
                    reason=str(row[2]),
                    cosigned_note=bytes(row[3]),
                    new_note=bytes(row[4]),
                    old_size=int(row[5]),
                    proof=tuple(proof[i : i + HASH_SIZE] for i in range(0, len(proof), HASH_SIZE)),
                    observed_at=int(row[7]),
                )
            )
        return result

    # ------------------------------------------------------------------ observations

    def observe_once(self, origin: str, size: int, root: bytes, note: bytes) -> bytes:
        """Keep ``note`` for (origin, size) unless one is kept; return the kept note."""
        self._cursor.execute(self._observe_sql, (origin, size, root, note, int(time.time())))
        inserted = self._cursor.rowcount == 1
        if inserted:
            self._done()
            return note
        kept = self.observed(origin, size)
        return note if kept is None else kept

    def observed(self, origin: str, size: int) -> bytes | None:
        """The note kept for ``origin`` at ``size``, or ``None``."""
        self._cursor.execute(self._observed_sql, (origin, size))
        row = self._cursor.fetchone()
        return None if row is None else bytes(row[0])

    def latest_observed(self, origin: str) -> bytes | None:
        """The largest checkpoint kept for ``origin``, or ``None``."""
        self._cursor.execute(self._latest_observed_sql, (origin,))
        row = self._cursor.fetchone()
        return None if row is None else bytes(row[0])


if TYPE_CHECKING:

    def _conforms(store: SQLWitnessStore) -> tuple[WitnessStore, ObservationStore]:
        # Checked by mypy only: the SQL store satisfies the pure core's protocols.
        return store, store


__all__ = [
    "CANDIDATE_PAGE",
    "MAX_SIZE",
    "Cursor",
    "SQLWitnessStore",
    "StoredCosignature",
    "Submission",
    "WitnessStorageError",
    "WitnessTables",
]

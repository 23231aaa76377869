"""SQL storage for the log: leaves, interior nodes, tree state, checkpoints and witness state.

One :class:`LedgerTables` class serves PostgreSQL (psycopg 3) and SQLite (the standard library's
``sqlite3``); the differences (placeholders, column types, bulk loading, row locking) live in a
small dialect table, not in two copies of the code.

**The caller owns the transaction.** Every method takes an open DB-API cursor and never commits or
rolls back. The integrator that follows the event store's notification log records its tracking
position in the same transaction as the leaves it appends, so a crash either keeps both or
neither: no gap, no duplicate. :meth:`LedgerTables.append` refuses to run outside a transaction,
because in autocommit mode the leaves, the nodes and the tree state would commit separately.

Tables (``<prefix>`` defaults to ``ledger``)::

    <prefix>_leaves       idx PK, leaf (encoded Leaf), leaf_hash (32 B), aggregate_id, version;
                          UNIQUE (aggregate_id, version)
    <prefix>_nodes        (level, idx) PK, hash: every complete subtree of level >= 4 (16
                          leaves and more), written once, when it completes; level 0 is the
                          leaves' leaf_hash column, levels 1-3 are recomputed from it
    <prefix>_tree_state   one row: size and the CompactRange (right edge) of the tree
    <prefix>_checkpoints  size PK, root, signed note, created_at (POSIX seconds)
    <prefix>_witness_*, <prefix>_cosignatures
                          witnessing: what this node cosigned, saw and collected, and the
                          evidence it kept (defined in the sibling ledger.witness_storage, whose
                          SQLWitnessStore is re-exported here)

So any subtree hash a proof needs is one indexed lookup (or a range of at most 8 leaf hashes),
and :meth:`LedgerTables.inclusion_proof` / :meth:`LedgerTables.consistency_proof` fetch all the
O(log n) hashes of a proof in a single query.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import struct
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeAlias

import psycopg
from psycopg.pq import TransactionStatus

from ledger.checkpoint import peek_checkpoint
from ledger.errors import CheckpointError, LedgerError, ProofError
from ledger.leaf import Leaf
from ledger.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    HashReader,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    tree_root,
)
from ledger.witness_storage import SQLWitnessStore, WitnessTables

Cursor: TypeAlias = "psycopg.Cursor[Any] | sqlite3.Cursor"
"""An open DB-API cursor of the dialect the :class:`LedgerTables` was made for."""

Dialect: TypeAlias = Literal["postgres", "sqlite"]

_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,40}")
_EMPTY_STATE = CompactRange().to_bytes()
_NODE_PREFIX = b"\x01"
_ZERO_HASH = bytes(HASH_SIZE)


class StorageError(LedgerError):
    """The stored log is unusable as asked: wrong cursor, no transaction, corrupt rows."""


class LeafIndexError(StorageError):
    """A batch of leaves does not continue the log densely (a gap, a duplicate or a reorder).

    ``expected`` is the index the leaf at batch position ``position`` must have; ``got`` is the
    index it has.
    """

    def __init__(self, message: str, expected: int, got: int, position: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got
        self.position = position


class DuplicateLeafError(StorageError):
    """The database refused a leaf row: its index or its (aggregate id, version) is stored."""


class CheckpointConflictError(StorageError):
    """A checkpoint disagrees with the stored tree (a log never signs two inconsistent ones)."""


class StoredCheckpoint(NamedTuple):
    """A checkpoint as stored: ``size``, ``root``, the signed ``note``, ``created_at`` (POSIX s)."""

    size: int
    root: bytes
    note: bytes
    created_at: float


@dataclass(frozen=True)
class _Dialect:
    """What differs between PostgreSQL and SQLite, and nothing else."""

    param: str
    int_type: str
    small_int: str
    index_pk: str  # the leaves' and checkpoints' integer primary key column type
    blob: str
    uuid: str
    real: str
    identity_pk: str  # an auto-numbered primary key, for evidence order
    octet_length: str
    nodes_options: str
    blob_literal: str
    # How append takes the write lock before it reads the tree state, so two appenders are
    # serialised instead of both computing the tree from the same size: PostgreSQL locks the row
    # (SELECT ... FOR UPDATE); SQLite has no row locks, so a no-op UPDATE takes the database's
    # write lock (and opens the implicit transaction of Python's sqlite3) before the read.
    lock_statement: str | None
    state_lock_suffix: str


_DIALECTS: dict[str, _Dialect] = {
    "postgres": _Dialect(
        param="%s",
        int_type="BIGINT",
        small_int="SMALLINT",
        index_pk="BIGINT",
        blob="BYTEA",
        uuid="UUID",
        real="DOUBLE PRECISION",
        identity_pk="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        octet_length="octet_length",
        nodes_options="",
        blob_literal="decode('{hex}', 'hex')",
        lock_statement=None,
        state_lock_suffix=" FOR UPDATE",
    ),
    "sqlite": _Dialect(
        param="?",
        int_type="INTEGER",
        small_int="INTEGER",
        # Exactly "INTEGER PRIMARY KEY" makes the column SQLite's rowid: no separate index.
        index_pk="INTEGER",
        blob="BLOB",
        uuid="BLOB",
        real="REAL",
        identity_pk="INTEGER PRIMARY KEY",
        octet_length="length",
        # The nodes are looked up by their whole primary key only: store them in its B-tree.
        nodes_options=" WITHOUT ROWID",
        blob_literal="X'{hex}'",
        lock_statement="UPDATE {state} SET size = size WHERE id = 1",
        state_lock_suffix="",
    ),
}


def _grow(
    compact: CompactRange, leaf_hashes: Sequence[bytes]
) -> tuple[CompactRange, list[tuple[int, int, list[bytes]]]]:
    """Append ``leaf_hashes`` to ``compact`` level by level.

    Returns the new compact range and, for every level >= 1, the run of subtrees the batch
    completed as ``(level, first index, hashes)``. Equivalent to :meth:`CompactRange.extend`
    (the tests check both against :class:`MerkleTree`) but it hashes a whole level in one list
    comprehension instead of creating a ``Node`` per subtree: about 8x less Python work per leaf,
    which matters because the goal is to append at a good fraction of PostgreSQL's COPY rate.
    """
    old = {node.level: node.hash for node in compact.nodes()}
    new_size = compact.size + len(leaf_hashes)
    edge: dict[int, bytes] = {}
    completed: list[tuple[int, int, list[bytes]]] = []
    sha256 = hashlib.sha256
    level, first, row = 0, compact.size, list(leaf_hashes)
    # Invariant: ``row`` holds the subtrees of ``level`` that the batch completed, with indices
    # [first, new_size >> level).
    while new_size >> level:
        count = new_size >> level
        if count & 1:
            # The new right edge has a subtree at this level: the last one, new or old.
            edge[level] = row[count - 1 - first] if count - 1 >= first else old[level]
        if first & 1 and row:
            # The first new subtree's left sibling completed earlier and waits on the old edge.
            # (A new list: ``row`` is also referenced from ``completed``.)
            row = [old[level], *row]
            first -= 1
        row = [
            sha256(_NODE_PREFIX + row[i] + row[i + 1]).digest() for i in range(0, len(row) - 1, 2)
        ]
        level += 1
        first >>= 1
        if row:
            completed.append((level, first, row))
    hashes = [edge[lv] for lv in sorted(edge, reverse=True)]
    return CompactRange(new_size, hashes), completed


NODE_MIN_LEVEL = 4
"""Lowest level of the subtrees kept in the nodes table.

Storing every subtree costs one node row per leaf, which measured at about a quarter of an
append's time on PostgreSQL; storing only subtrees of 16 leaves and more costs one row per 16
leaves. A proof then reads at most 8 leaf hashes instead of one row for each of its hashes
below that level (all in the same query), and recomputes at most 7 node hashes. Part of the
storage format: changing it needs a migration of the nodes table.
"""

_CHUNK = 512
"""Leaves encoded, hashed and sent per step of an append (about 150 kB of COPY data)."""

_MAX_PARAMS = 900
"""Bound on the parameters of one read statement (older SQLite builds allow 999)."""

# PostgreSQL binary COPY: an 11-byte signature, int32 flags, int32 header extension length;
# then per row an int16 field count and each field as int32 length + bytes; int16 -1 at the end.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"
_LEAF_HEAD = struct.Struct(">hiqi")  # 5 fields; idx int8; length of the encoded leaf
_LEAF_TAIL = struct.Struct(">i32si16siq")  # leaf_hash, aggregate_id (uuid), version int8
_NODE_ROW = struct.Struct(">hihiqi32s")  # 3 fields: level int2, idx int8, hash


def _chunks(leaves: Sequence[Leaf]) -> Iterator[Sequence[Leaf]]:
    for start in range(0, len(leaves), _CHUNK):
        yield leaves[start : start + _CHUNK]


class _Growth:
    """The tree as an append proceeds chunk by chunk: its compact range and the new nodes."""

    def __init__(self, compact: CompactRange) -> None:
        self.compact = compact
        self.completed: list[tuple[int, int, list[bytes]]] = []

    def add(self, leaves: Sequence[Leaf]) -> tuple[list[bytes], list[bytes]]:
        """Encode and hash ``leaves``, grow the tree; return (encodings, leaf hashes)."""
        encoded = [leaf.encode() for leaf in leaves]
        hashes = [leaf_hash(data) for data in encoded]
        self.compact, completed = _grow(self.compact, hashes)
        self.completed.extend(completed)
        return encoded, hashes

    def node_rows(self) -> list[tuple[int, int, bytes]]:
        """Every completed subtree to store (level >= NODE_MIN_LEVEL) as a (level, idx, hash)."""
        return [
            (level, first + offset, h)
            for level, first, run in self.completed
            if level >= NODE_MIN_LEVEL
            for offset, h in enumerate(run)
        ]


class _Recorder:
    """A HashReader that only notes which subtrees are asked for (answering zeros).

    Proof code asks for a data-independent set of subtrees, so one dry run tells which rows to
    fetch; the real run then reads them from memory. That gives one query per proof without
    copying the proof-planning logic of :mod:`ledger.merkle`.
    """

    def __init__(self) -> None:
        self.wanted: list[tuple[int, int]] = []

    def subtree_hash(self, level: int, index: int) -> bytes:
        self.wanted.append((level, index))
        return _ZERO_HASH


class StoredHashReader:
    """A :class:`~ledger.merkle.HashReader` over the stored tree, with a read cache.

    Level 0 comes from the leaves' ``leaf_hash`` column and levels from
    ``NODE_MIN_LEVEL`` up from the nodes table; a subtree in between (2 to 8 leaves) is
    recomputed from its leaf hashes, which the same query fetches. Only complete subtrees
    exist, so asking for one the tree does not have yet raises
    :class:`~ledger.errors.ProofError`. The cache never goes stale, because a complete
    subtree's hash never changes; after a rolled-back append, make a new reader.
    """

    def __init__(self, tables: LedgerTables, cursor: Cursor) -> None:
        """Read through ``cursor`` from ``tables``."""
        self._tables = tables
        self._cursor = cursor
        self._cache: dict[tuple[int, int], bytes] = {}

    def prefetch(self, coordinates: Iterable[tuple[int, int]]) -> None:
        """Load what the subtrees ``(level, index)`` need in one query (missing rows skip)."""
        wanted = [c for c in dict.fromkeys(coordinates) if c not in self._cache]
        if wanted:
            self._cache.update(self._tables._fetch_subtrees(self._cursor, wanted))

    def subtree_hash(self, level: int, index: int) -> bytes:
        """Return the hash of the complete subtree ``(level, index)``."""
        key = (level, index)
        found = self._cache.get(key)
        if found is None:
            if level < 0 or index < 0:
                raise ProofError(f"subtree (level {level}, index {index}) does not exist")
            low = 0 < level < NODE_MIN_LEVEL
            # A low subtree may be computable from leaf hashes a prefetch already brought.
            found = self._recompute(level, index) if low else None
            if found is None:
                self.prefetch([key])
                found = self._cache.get(key)
                if found is None and low:
                    found = self._recompute(level, index)
        if found is None:
            raise ProofError(
                f"subtree (level {level}, index {index}) is not stored: the tree has fewer "
                f"than {(index + 1) << level} leaves, or its rows are missing"
            )
        return found

    def _recompute(self, level: int, index: int) -> bytes | None:
        leaves = [self._cache.get((0, i)) for i in range(index << level, (index + 1) << level)]
        if any(h is None for h in leaves):
            return None
        row = [h for h in leaves if h is not None]  # (all are: narrows the type)
        sha256 = hashlib.sha256
        while len(row) > 1:
            row = [
                sha256(_NODE_PREFIX + row[i] + row[i + 1]).digest() for i in range(0, len(row), 2)
            ]
        self._cache[(level, index)] = row[0]
        return row[0]


class LedgerTables:
    """The log's tables in one database, for one dialect (see the module docstring).

    ``prefix`` names the tables (``<prefix>_leaves`` ...); it must be a lower-case SQL
    identifier, since it is written into the statements.
    """

    def __init__(self, dialect: Dialect, prefix: str = "ledger") -> None:
        """Prepare the statements for ``dialect`` and tables named ``<prefix>_*``."""
        if dialect not in _DIALECTS:
            raise StorageError(f"unknown SQL dialect {dialect!r}; expected 'postgres' or 'sqlite'")
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise StorageError(
                f"table prefix {prefix!r} must be a lower-case SQL identifier "
                "(letters, digits, underscores; at most 41 characters)"
            )
        self.dialect: Dialect = dialect
        self.prefix = prefix
        d = self._d = _DIALECTS[dialect]
        p = d.param
        self.leaves_table = f"{prefix}_leaves"
        self.nodes_table = f"{prefix}_nodes"
        self.state_table = f"{prefix}_tree_state"
        self.checkpoints_table = f"{prefix}_checkpoints"
        #: The witnessing tables (ledger.witness_storage), created with the log's.
        self.witness = WitnessTables(dialect, prefix)
        self.witness_state_table = self.witness.state_table
        self.witness_evidence_table = self.witness.evidence_table
        leaves, nodes, state = self.leaves_table, self.nodes_table, self.state_table
        checkpoints = self.checkpoints_table

        self._lock_sql = d.lock_statement.format(state=state) if d.lock_statement else None
        self._state_sql = f"SELECT size, compact FROM {state} WHERE id = 1"
        self._locked_state_sql = self._state_sql + d.state_lock_suffix
        self._update_state_sql = f"UPDATE {state} SET size = {p}, compact = {p} WHERE id = 1"
        leaf_columns = "idx, leaf, leaf_hash, aggregate_id, version"
        self._insert_leaves_sql = (
            f"INSERT INTO {leaves} ({leaf_columns}) VALUES ({p}, {p}, {p}, {p}, {p})"
        )
        self._insert_nodes_sql = f"INSERT INTO {nodes} (level, idx, hash) VALUES ({p}, {p}, {p})"
        self._copy_leaves_sql = f"COPY {leaves} ({leaf_columns}) FROM STDIN (FORMAT BINARY)"
        self._copy_nodes_sql = f"COPY {nodes} (level, idx, hash) FROM STDIN (FORMAT BINARY)"
        self._leaf_range_sql = (
            f"SELECT idx, leaf FROM {leaves} WHERE idx >= {p} AND idx < {p} ORDER BY idx"
        )
        self._leaf_for_sql = (
            f"SELECT idx, leaf FROM {leaves} WHERE aggregate_id = {p} AND version = {p}"
        )
        self._leaves_of_sql = (
            f"SELECT idx, leaf FROM {leaves} WHERE aggregate_id = {p} ORDER BY version"
        )
        self._leaf_hashes_sql = f"SELECT 0, idx, leaf_hash FROM {leaves} WHERE idx IN"
        self._leaf_rows_sql = (
            f"SELECT idx, leaf, leaf_hash FROM {leaves} WHERE idx >= {p} AND idx < {p} ORDER BY idx"
        )
        self._node_rows_sql = f"SELECT level, idx, hash FROM {nodes} ORDER BY level, idx"
        self._nodes_sql = f"SELECT level, idx, hash FROM {nodes} WHERE"
        cp_columns = "size, root, note, created_at"
        self._insert_checkpoint_sql = (
            f"INSERT INTO {checkpoints} ({cp_columns}) VALUES ({p}, {p}, {p}, {p}) "
            # Same size means same root (checked against the tree first): keep the first
            # created_at but take the new note, which may carry more cosignatures.
            f"ON CONFLICT (size) DO UPDATE SET note = excluded.note "
            f"WHERE {checkpoints}.root = excluded.root"
        )
        self._latest_checkpoint_sql = (
            f"SELECT {cp_columns} FROM {checkpoints} ORDER BY size DESC LIMIT 1"
        )
        self._checkpoints_sql = f"SELECT {cp_columns} FROM {checkpoints} ORDER BY size"
        self._checkpoint_at_least_sql = (
            f"SELECT {cp_columns} FROM {checkpoints} WHERE size >= {p} ORDER BY size LIMIT 1"
        )

    # ------------------------------------------------------------------ schema

    def create_statements(self) -> list[str]:
        """Return the idempotent DDL (``CREATE TABLE IF NOT EXISTS`` ...) for every table."""
        d = self._d
        empty = d.blob_literal.format(hex=_EMPTY_STATE.hex())
        hash_check = f"CHECK ({d.octet_length}(hash) = {HASH_SIZE})"
        root_check = f"CHECK ({d.octet_length}(root) = {HASH_SIZE})"
        return [
            f"CREATE TABLE IF NOT EXISTS {self.leaves_table} ("
            f"idx {d.index_pk} PRIMARY KEY CHECK (idx >= 0), "
            f"leaf {d.blob} NOT NULL, "
            f"leaf_hash {d.blob} NOT NULL CHECK ({d.octet_length}(leaf_hash) = {HASH_SIZE}), "
            f"aggregate_id {d.uuid} NOT NULL, "
            f"version {d.int_type} NOT NULL, "
            # One leaf per stored event: a case's leaves are found by this key, and the same
            # event can never be logged twice.
            "UNIQUE (aggregate_id, version))",
            f"CREATE TABLE IF NOT EXISTS {self.nodes_table} ("
            f"level {d.small_int} NOT NULL, idx {d.int_type} NOT NULL, "
            f"hash {d.blob} NOT NULL {hash_check}, "
            f"PRIMARY KEY (level, idx)){d.nodes_options}",
            f"CREATE TABLE IF NOT EXISTS {self.state_table} ("
            f"id {d.int_type} PRIMARY KEY CHECK (id = 1), "
            f"size {d.int_type} NOT NULL, compact {d.blob} NOT NULL)",
            f"INSERT INTO {self.state_table} (id, size, compact) VALUES (1, 0, {empty}) "
            "ON CONFLICT (id) DO NOTHING",
            f"CREATE TABLE IF NOT EXISTS {self.checkpoints_table} ("
            f"size {d.index_pk} PRIMARY KEY, root {d.blob} NOT NULL {root_check}, "
            f"note {d.blob} NOT NULL, created_at {d.real} NOT NULL)",
            # The witnessing tables live beside the log's (ledger.witness_storage).
            *self.witness.create_statements(),
        ]

    def create(self, cursor: Cursor) -> None:
        """Run :meth:`create_statements` on ``cursor`` (the caller commits)."""
        self._check_cursor(cursor)
        for statement in self.create_statements():
            cursor.execute(statement)

    # ------------------------------------------------------------------ plumbing

    def _check_cursor(self, cursor: object) -> None:
        # A psycopg cursor given to a SQLite table set (or the reverse) would fail later with a
        # syntax error about placeholders; say what is wrong instead.
        expected: type = sqlite3.Cursor if self.dialect == "sqlite" else psycopg.Cursor
        if not isinstance(cursor, expected):
            raise StorageError(
                f"LedgerTables({self.dialect!r}) needs a {expected.__module__}."
                f"{expected.__name__}, got {type(cursor).__module__}.{type(cursor).__name__}"
            )

    def _in_transaction(self, cursor: Cursor) -> bool:
        if isinstance(cursor, sqlite3.Cursor):
            return cursor.connection.in_transaction
        return cursor.connection.info.transaction_status != TransactionStatus.IDLE

    def _uuid(self, value: uuid.UUID) -> object:
        # PostgreSQL has a uuid type; SQLite stores the 16 bytes (RFC 4122 order) as a blob.
        return value if self.dialect == "postgres" else value.bytes

    def _fetch_subtrees(
        self, cursor: Cursor, coordinates: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        """Fetch the stored rows ``coordinates`` need, in one statement for a proof's worth.

        A subtree below ``NODE_MIN_LEVEL`` needs its leaf hashes, one above it its nodes row.
        The shape (``idx IN (...)`` on the leaves, ``(level = ? AND idx = ?) OR ...`` on the
        nodes, joined by ``UNION ALL``) was chosen by measurement: both databases answer it from
        the primary keys, while one ``UNION ALL`` part per hash spent most of its time in
        PostgreSQL's planner and ``(level, idx) IN (VALUES ...)`` made SQLite scan the nodes.
        Missing rows are simply absent from the result.
        """
        leaf_indices: dict[int, None] = {}
        nodes: dict[tuple[int, int], None] = {}
        for level, index in coordinates:
            if level < NODE_MIN_LEVEL:
                leaf_indices.update(dict.fromkeys(range(index << level, (index + 1) << level)))
            else:
                nodes[(level, index)] = None
        p = self._d.param
        parts: list[tuple[str, list[int]]] = []
        leaf_list = list(leaf_indices)
        for start in range(0, len(leaf_list), _MAX_PARAMS):
            chunk = leaf_list[start : start + _MAX_PARAMS]
            marks = ", ".join([p] * len(chunk))
            parts.append((f"{self._leaf_hashes_sql} ({marks})", chunk))
        node_list = list(nodes)
        for start in range(0, len(node_list), _MAX_PARAMS // 2):
            pairs = node_list[start : start + _MAX_PARAMS // 2]
            where = " OR ".join([f"(level = {p} AND idx = {p})"] * len(pairs))
            parts.append((f"{self._nodes_sql} {where}", [v for pair in pairs for v in pair]))
        found: dict[tuple[int, int], bytes] = {}
        while parts:
            # Join parts into one statement while they stay under the parameter budget
            # (SQLite builds before 3.32 allow only 999 parameters per statement).
            statements, params = [parts[0][0]], list(parts[0][1])
            parts = parts[1:]
            while parts and len(params) + len(parts[0][1]) <= _MAX_PARAMS:
                statements.append(parts[0][0])
                params.extend(parts[0][1])
                parts = parts[1:]
            cursor.execute(" UNION ALL ".join(statements), params)
            for level, index, value in cursor.fetchall():
                found[(int(level), int(index))] = bytes(value)
        return found

    # ------------------------------------------------------------------ tree state and appends

    def state(self, cursor: Cursor) -> tuple[int, CompactRange]:
        """Return the log's size and compact range (``0`` and an empty range for a new log)."""
        self._check_cursor(cursor)
        return self._read_state(cursor, self._state_sql)

    def _read_state(self, cursor: Cursor, statement: str) -> tuple[int, CompactRange]:
        cursor.execute(statement)
        row = cursor.fetchone()
        if row is None:
            # create() inserts the row; a missing one means the tables were not created or the
            # row was deleted, and guessing "empty" could re-use indices.
            raise StorageError(
                f"{self.state_table} has no row: create the tables with LedgerTables.create()"
            )
        size, raw = int(row[0]), bytes(row[1])
        try:
            compact = CompactRange.from_bytes(raw)
        except ProofError as exc:
            raise StorageError(f"{self.state_table} holds a corrupt compact range: {exc}") from None
        if compact.size != size:
            raise StorageError(
                f"{self.state_table} is inconsistent: size {size} but its compact range is for "
                f"size {compact.size}"
            )
        return size, compact

    def append(self, cursor: Cursor, leaves: Sequence[Leaf]) -> int:
        """Append ``leaves`` (indices exactly size, size + 1, ...) and return the new size.

        Inserts the leaf rows, every interior node the batch completes and the new tree state,
        in the caller's transaction (it must be open: the caller commits, with its tracking
        position). Raises :class:`LeafIndexError` before writing anything when the indices do not
        continue the log, and :class:`DuplicateLeafError` when the database refuses a row (an
        event logged twice); after an error the caller rolls back.
        """
        self._check_cursor(cursor)
        if self._lock_sql is not None:
            cursor.execute(self._lock_sql)
        size, compact = self._read_state(cursor, self._locked_state_sql)
        if not self._in_transaction(cursor):
            raise StorageError(
                "append needs an open transaction (the cursor's connection is in autocommit "
                "mode): the leaves, nodes and tree state must commit together"
            )
        if not leaves:
            return size
        for position, leaf in enumerate(leaves):
            if leaf.index != size + position:
                raise LeafIndexError(
                    f"leaf at batch position {position} has index {leaf.index}, expected "
                    f"{size + position} (the log has {size} leaves; indices must continue it "
                    "with no gap, duplicate or reordering)",
                    expected=size + position,
                    got=leaf.index,
                    position=position,
                )
        growth = _Growth(compact)
        try:
            if isinstance(cursor, sqlite3.Cursor):
                for chunk in _chunks(leaves):
                    encoded, hashes = growth.add(chunk)
                    cursor.executemany(
                        self._insert_leaves_sql,
                        [
                            (leaf.index, data, h, leaf.aggregate_id.bytes, leaf.version)
                            for leaf, data, h in zip(chunk, encoded, hashes, strict=True)
                        ],
                    )
                cursor.executemany(self._insert_nodes_sql, growth.node_rows())
            else:
                self._copy_postgres(cursor, leaves, growth)
        except (sqlite3.IntegrityError, psycopg.IntegrityError) as exc:
            raise DuplicateLeafError(
                f"the database refused the leaves {size}..{size + len(leaves) - 1}: {exc}"
            ) from exc
        except (struct.error, OverflowError) as exc:
            # Only an index or version beyond 2**63 - 1 gets here: a Leaf allows uint64, the
            # databases' integers are signed 64-bit.
            raise StorageError(f"a leaf field does not fit a 64-bit SQL integer: {exc}") from None
        new_compact = growth.compact
        cursor.execute(self._update_state_sql, (new_compact.size, new_compact.to_bytes()))
        return new_compact.size

    def _copy_postgres(
        self, cursor: psycopg.Cursor[Any], leaves: Sequence[Leaf], growth: _Growth
    ) -> None:
        """Load the leaves, then the completed nodes, with binary COPY.

        The COPY data is built here with :mod:`struct` (PostgreSQL's binary format is a simple
        length-prefixed layout) rather than with psycopg's ``write_row``, whose bytea dumper runs
        in Python per field. Leaves are hashed and sent chunk by chunk, so the server parses and
        indexes one chunk while Python encodes and hashes the next: on two cores the two halves
        overlap instead of adding up.
        """
        head, tail = _LEAF_HEAD.pack, _LEAF_TAIL.pack
        with cursor.copy(self._copy_leaves_sql) as copy:
            copy.write(_COPY_HEADER)
            for chunk in _chunks(leaves):
                encoded, hashes = growth.add(chunk)
                copy.write(
                    b"".join(
                        [
                            head(5, 8, leaf.index, len(data))
                            + data
                            + tail(HASH_SIZE, h, 16, leaf.aggregate_id.bytes, 8, leaf.version)
                            for leaf, data, h in zip(chunk, encoded, hashes, strict=True)
                        ]
                    )
                )
            copy.write(_COPY_TRAILER)
        rows = growth.node_rows()
        if rows:
            node = _NODE_ROW.pack
            with cursor.copy(self._copy_nodes_sql) as copy:
                copy.write(_COPY_HEADER)
                for start in range(0, len(rows), _CHUNK):
                    copy.write(
                        b"".join(
                            [
                                node(3, 2, level, 8, idx, HASH_SIZE, h)
                                for level, idx, h in rows[start : start + _CHUNK]
                            ]
                        )
                    )
                copy.write(_COPY_TRAILER)

    # ------------------------------------------------------------------ proofs

    def reader(self, cursor: Cursor) -> StoredHashReader:
        """Return a :class:`~ledger.merkle.HashReader` over the stored tree."""
        self._check_cursor(cursor)
        return StoredHashReader(self, cursor)

    def _prefetched(
        self, cursor: Cursor, dry_run: Callable[[HashReader], object]
    ) -> StoredHashReader:
        recorder = _Recorder()
        dry_run(recorder)
        reader = self.reader(cursor)
        reader.prefetch(recorder.wanted)
        return reader

    def tree_root(self, cursor: Cursor, size: int) -> bytes:
        """Return the root of the stored tree's first ``size`` leaves (one query)."""
        reader = self._prefetched(cursor, lambda r: tree_root(size, r))
        return tree_root(size, reader)

    def inclusion_proof(self, cursor: Cursor, index: int, size: int) -> list[bytes]:
        """Return the RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

        All its O(log size) hashes come from one query.
        """
        reader = self._prefetched(cursor, lambda r: inclusion_proof(index, size, r))
        return inclusion_proof(index, size, reader)

    def consistency_proof(self, cursor: Cursor, size1: int, size2: int) -> list[bytes]:
        """Return the RFC 9162 consistency proof from ``size1`` to ``size2`` (one query)."""
        reader = self._prefetched(cursor, lambda r: consistency_proof(size1, size2, r))
        return consistency_proof(size1, size2, reader)

    # ------------------------------------------------------------------ leaves

    def _leaf(self, row: Sequence[Any]) -> Leaf:
        idx, data = int(row[0]), bytes(row[1])
        try:
            leaf = Leaf.decode(data)
        except LedgerError as exc:
            raise StorageError(f"stored leaf {idx} does not decode: {exc}") from None
        if leaf.index != idx:
            raise StorageError(f"stored leaf in row {idx} carries index {leaf.index}")
        return leaf

    def iter_leaves(
        self, cursor: Cursor, start: int, end: int, batch_size: int = 10_000
    ) -> Iterator[Leaf]:
        """Yield the leaves ``start <= index < end`` in order, reading ``batch_size`` at a time.

        Raises :class:`StorageError` at the first missing index: the log is dense, so a gap
        means a deleted row. Do not use ``cursor`` for anything else until the iterator ends.
        """
        self._check_cursor(cursor)
        if start < 0 or end < start:
            raise StorageError(f"invalid leaf range [{start}, {end})")
        if batch_size < 1:
            raise StorageError(f"batch size must be at least 1, got {batch_size}")
        expected = start
        while expected < end:
            upper = min(end, expected + batch_size)
            cursor.execute(self._leaf_range_sql, (expected, upper))
            rows = cursor.fetchall()
            for row in rows:
                leaf = self._leaf(row)
                if leaf.index != expected:
                    raise StorageError(f"leaf {expected} is missing (next stored: {leaf.index})")
                yield leaf
                expected += 1
            if expected < upper:
                raise StorageError(f"leaf {expected} is missing (range ends at {end})")

    def leaf_rows(
        self, cursor: Cursor, start: int, end: int, batch_size: int = 10_000
    ) -> Iterator[tuple[int, bytes, bytes]]:
        """Yield the raw rows ``(idx, encoded leaf, stored leaf_hash)`` with ``start <= idx < end``.

        Nothing is decoded or checked: an auditor compares the stored hash column with its own
        hash of the encoding, and a row that does not decode is its finding, not a crash.
        """
        self._check_cursor(cursor)
        position = start
        while position < end:
            upper = min(end, position + batch_size)
            cursor.execute(self._leaf_rows_sql, (position, upper))
            for row in cursor.fetchall():
                yield int(row[0]), bytes(row[1]), bytes(row[2])
            position = upper

    def node_rows(self, cursor: Cursor) -> list[tuple[int, int, bytes]]:
        """Every stored interior-node row ``(level, idx, hash)`` (for an auditor to re-derive)."""
        self._check_cursor(cursor)
        cursor.execute(self._node_rows_sql)
        return [(int(r[0]), int(r[1]), bytes(r[2])) for r in cursor.fetchall()]

    def leaves(self, cursor: Cursor, start: int, end: int) -> list[Leaf]:
        """Return the leaves ``start <= index < end`` (see :meth:`iter_leaves`)."""
        return list(self.iter_leaves(cursor, start, end))

    def leaf_for(self, cursor: Cursor, aggregate_id: uuid.UUID, version: int) -> Leaf | None:
        """Return the leaf of event ``version`` of ``aggregate_id``, or ``None``."""
        self._check_cursor(cursor)
        cursor.execute(self._leaf_for_sql, (self._uuid(aggregate_id), version))
        row = cursor.fetchone()
        return None if row is None else self._leaf(row)

    def leaves_of(self, cursor: Cursor, aggregate_id: uuid.UUID) -> list[Leaf]:
        """Return every leaf of ``aggregate_id`` (a case's history), by version."""
        self._check_cursor(cursor)
        cursor.execute(self._leaves_of_sql, (self._uuid(aggregate_id),))
        return [self._leaf(row) for row in cursor.fetchall()]

    # ------------------------------------------------------------------ checkpoints

    def store_checkpoint(
        self,
        cursor: Cursor,
        size: int,
        root: bytes,
        note: bytes,
        *,
        created_at: float | None = None,
    ) -> None:
        """Store a signed checkpoint of the stored tree.

        Refused with :class:`CheckpointConflictError` unless ``root`` is the stored tree's root
        at ``size``, ``note``'s body says the same size and root, and its origin is that of the
        checkpoints already stored: every stored checkpoint is then consistent with every other
        by construction. Storing the same size again replaces the note (to add cosignatures)
        and keeps the first ``created_at``. The note's signatures are not checked here: the
        caller has just made it.
        """
        self._check_cursor(cursor)
        if not isinstance(root, bytes) or len(root) != HASH_SIZE:
            raise CheckpointConflictError(f"checkpoint root must be {HASH_SIZE} bytes")
        try:
            body = peek_checkpoint(note)
        except CheckpointError as exc:
            raise CheckpointConflictError(f"checkpoint note is malformed: {exc}") from None
        if (body.size, body.root) != (size, root):
            raise CheckpointConflictError(
                f"checkpoint note is for size {body.size} root {body.root.hex()}, not size "
                f"{size} root {root.hex()}"
            )
        latest = self.latest_checkpoint(cursor)
        if latest is not None:
            # One table, one log: a checkpoint of another origin would be another log's head.
            theirs = peek_checkpoint(latest.note).origin
            if body.origin != theirs:
                raise CheckpointConflictError(
                    f"checkpoint origin {body.origin!r} is not this log's origin {theirs!r}"
                )
        current, _ = self.state(cursor)
        if size > current:
            raise CheckpointConflictError(
                f"checkpoint size {size} is larger than the stored tree ({current} leaves)"
            )
        stored = self.tree_root(cursor, size) if size else EMPTY_ROOT
        if stored != root:
            raise CheckpointConflictError(
                f"checkpoint root {root.hex()} for size {size} disagrees with the stored tree's "
                f"root {stored.hex()}; a log never signs two inconsistent checkpoints"
            )
        when = time.time() if created_at is None else float(created_at)
        cursor.execute(self._insert_checkpoint_sql, (size, root, bytes(note), when))
        if cursor.rowcount != 1:
            # The row for this size holds another root: the checkpoints table was altered.
            raise CheckpointConflictError(
                f"a stored checkpoint of size {size} has a root other than {root.hex()}"
            )

    def _checkpoint(self, row: Sequence[Any] | None) -> StoredCheckpoint | None:
        if row is None:
            return None
        return StoredCheckpoint(int(row[0]), bytes(row[1]), bytes(row[2]), float(row[3]))

    def latest_checkpoint(self, cursor: Cursor) -> StoredCheckpoint | None:
        """Return the largest stored checkpoint, or ``None``."""
        self._check_cursor(cursor)
        cursor.execute(self._latest_checkpoint_sql)
        return self._checkpoint(cursor.fetchone())

    def checkpoints(self, cursor: Cursor) -> list[StoredCheckpoint]:
        """Return every stored checkpoint, by size."""
        self._check_cursor(cursor)
        cursor.execute(self._checkpoints_sql)
        return [
            StoredCheckpoint(int(r[0]), bytes(r[1]), bytes(r[2]), float(r[3]))
            for r in cursor.fetchall()
        ]

    def checkpoint_at_least(self, cursor: Cursor, size: int) -> StoredCheckpoint | None:
        """Return the smallest stored checkpoint of at least ``size`` leaves, or ``None``.

        For a receipt of leaf ``index`` ask for ``index + 1``: the first checkpoint that
        contains the leaf.
        """
        self._check_cursor(cursor)
        cursor.execute(self._checkpoint_at_least_sql, (size,))
        return self._checkpoint(cursor.fetchone())


if TYPE_CHECKING:

    def _conforms(reader: StoredHashReader) -> HashReader:
        # Checked by mypy only: the SQL reader satisfies the pure core's protocol.
        return reader


__all__ = [
    "NODE_MIN_LEVEL",
    "CheckpointConflictError",
    "Cursor",
    "DuplicateLeafError",
    "LeafIndexError",
    "LedgerTables",
    "SQLWitnessStore",
    "StorageError",
    "StoredCheckpoint",
    "StoredHashReader",
]

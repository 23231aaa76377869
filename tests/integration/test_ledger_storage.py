"""The log's SQL storage (``ledger.storage``) on SQLite and on real PostgreSQL.

Every test runs on both backends through the ``db`` fixture. The in-memory ``MerkleTree`` of the
pure core is the reference: the stored tree must give the same roots and the same proofs.
"""

from __future__ import annotations

import hashlib
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

import ledger
import ledger.storage
from ledger.storage import NODE_MIN_LEVEL, Cursor, _grow

pytestmark = pytest.mark.timeout(180)

ORIGIN = "tongban.example/node-1"
ROOT_DIR = Path(__file__).resolve().parents[2]
CASES = [uuid.UUID(int=n + 1) for n in range(7)]


def make_leaf(index: int, *, signed: bool = False) -> ledger.Leaf:
    """Leaf ``index``: event ``index // 7 + 1`` of case ``index % 7`` (unique per index)."""
    return ledger.Leaf(
        origin=ORIGIN,
        index=index,
        aggregate_id=CASES[index % len(CASES)],
        version=index // len(CASES) + 1,
        topic="CaseSubmitted" if index % 3 else "CaseHandedOver",
        event_hash=hashlib.sha256(b"event %d" % index).digest(),
        authority=ledger.Authority.HALL_COMMAND if signed else ledger.Authority.NODE,
        signer="hall-1" if signed else "",
        key_id="0a1b2c3d0a1b2c3d" if signed else "",
        # Deterministic, so that another process builds the very same leaves.
        signature=hashlib.sha512(b"signature %d" % index).digest() if signed else b"",
        command=b"command %d" % index if signed else b"",
    )


def leaves(start: int, end: int) -> list[ledger.Leaf]:
    return [make_leaf(i, signed=i % 2 == 0) for i in range(start, end)]


def memory_tree(size: int) -> ledger.MerkleTree:
    return ledger.MerkleTree(leaf.encode() for leaf in leaves(0, size))


@dataclass
class Backend:
    """One database: its dialect, how to open a connection, and an open one for the test."""

    dialect: str
    target: str  # a file path (SQLite) or a libpq DSN (PostgreSQL)
    tables: ledger.storage.LedgerTables
    conn: Any
    cur: Cursor

    def connect(self, *, autocommit: bool = False) -> Any:
        if self.dialect == "sqlite":
            return sqlite3.connect(self.target, isolation_level=None if autocommit else "")
        return psycopg.connect(self.target, autocommit=autocommit)

    def append(self, batch: list[ledger.Leaf]) -> int:
        size = self.tables.append(self.cur, batch)
        self.conn.commit()
        return size

    def execute(self, statement: str, *params: object) -> list[Any]:
        """Run raw SQL (placeholders written ``?``) and commit; for tampering in tests."""
        if self.dialect == "postgres":
            statement = statement.replace("?", "%s")
        self.cur.execute(statement, params)
        rows = self.cur.fetchall() if self.cur.description else []
        self.conn.commit()
        return rows


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """An empty log with its tables created, on SQLite (a file) or PostgreSQL (fresh database)."""
    dialect = request.param
    target = (
        str(tmp_path / "ledger.sqlite3")
        if dialect == "sqlite"
        else request.getfixturevalue("fresh_postgres_db")
    )
    tables = ledger.storage.LedgerTables(dialect)
    backend = Backend(dialect, target, tables, None, None)  # type: ignore[arg-type]
    backend.conn = backend.connect()
    backend.cur = backend.conn.cursor()
    tables.create(backend.cur)
    backend.conn.commit()
    try:
        yield backend
    finally:
        backend.conn.close()


def test_a_new_log_is_empty(db: Backend) -> None:
    size, compact = db.tables.state(db.cur)
    assert (size, compact) == (0, ledger.CompactRange())
    assert db.tables.tree_root(db.cur, 0) == ledger.EMPTY_ROOT
    assert db.tables.leaves(db.cur, 0, 0) == []
    assert db.tables.latest_checkpoint(db.cur) is None
    assert db.tables.checkpoints(db.cur) == []
    assert db.tables.append(db.cur, []) == 0


def test_create_is_idempotent_and_keeps_the_log(db: Backend) -> None:
    db.append(leaves(0, 20))
    db.tables.create(db.cur)
    db.conn.commit()
    assert db.tables.state(db.cur)[0] == 20
    assert db.tables.tree_root(db.cur, 20) == memory_tree(20).root()


def test_grow_matches_the_compact_range_of_the_pure_core() -> None:
    rng = random.Random(7)
    compact, tree = ledger.CompactRange(), ledger.MerkleTree()
    for _ in range(200):
        hashes = [rng.randbytes(32) for _ in range(rng.choice([0, 1, 2, 3, 5, 16, 33]))]
        reference = compact.copy()
        expected = reference.extend(hashes)
        compact, completed = _grow(compact, hashes)
        assert compact == reference
        got = [(lv, first + i, h) for lv, first, row in completed for i, h in enumerate(row)]
        assert sorted(got) == sorted((n.level, n.index, n.hash) for n in expected if n.level)
        for h in hashes:
            tree.append_leaf_hash(h)
        assert compact == tree.compact_range()


def test_batches_of_varied_sizes_give_the_memory_tree_root_at_every_size(db: Backend) -> None:
    tree = ledger.MerkleTree()
    size = 0
    for batch_size in [1, 2, 3, 5, 8, 13, 16, 17, 31, 64, 100, 1, 255, 256, 257, 600, 1025]:
        batch = leaves(size, size + batch_size)
        assert db.append(batch) == size + batch_size
        for leaf in batch:
            tree.append(leaf.encode())
        size += batch_size
        stored_size, compact = db.tables.state(db.cur)
        assert stored_size == size
        assert compact == tree.compact_range()
        assert compact.root() == tree.root()
    # Every historical size, not only the batch boundaries.
    for s in range(size + 1):
        assert db.tables.tree_root(db.cur, s) == tree.root(s), s
    # The nodes table holds exactly the complete subtrees from NODE_MIN_LEVEL up.
    rows = db.execute(f"SELECT level, idx, hash FROM {db.tables.nodes_table}")
    expected = {
        (level, index): tree.subtree_hash(level, index)
        for level in range(NODE_MIN_LEVEL, size.bit_length())
        for index in range(size >> level)
    }
    assert {(int(lv), int(ix)): bytes(h) for lv, ix, h in rows} == expected


def test_stored_proofs_equal_the_memory_trees_and_verify(db: Backend) -> None:
    size = 1000
    for start in range(0, size, 250):
        db.append(leaves(start, start + 250))
    tree = memory_tree(size)
    rng = random.Random(3)
    sizes = sorted({1, 2, 3, 7, 8, 9, 15, 16, 17, 255, 256, 511, 512, 513, 999, 1000})
    sizes += [rng.randint(1, size) for _ in range(20)]
    for s in sizes:
        root = tree.root(s)
        indices = {0, s - 1, s // 2} | {rng.randrange(s) for _ in range(5)}
        for index in indices:
            proof = db.tables.inclusion_proof(db.cur, index, s)
            assert proof == tree.inclusion_proof(index, s), (index, s)
            ledger.verify_inclusion(tree.leaf_hash(index), index, s, proof, root)
        for s1 in {1, s // 3 or 1, s - 1 or 1, s}:
            proof = db.tables.consistency_proof(db.cur, s1, s)
            assert proof == tree.consistency_proof(s1, s), (s1, s)
            ledger.verify_consistency(s1, s, proof, tree.root(s1), root)


def test_the_stored_reader_serves_the_pure_core_one_read_at_a_time(db: Backend) -> None:
    db.append(leaves(0, 77))
    tree = memory_tree(77)
    reader = db.tables.reader(db.cur)
    assert ledger.tree_root(77, reader) == tree.root()
    assert ledger.inclusion_proof(40, 77, reader) == tree.inclusion_proof(40)
    assert ledger.consistency_proof(13, 77, reader) == tree.consistency_proof(13)
    for level in range(7):
        for index in range(77 >> level):
            assert reader.subtree_hash(level, index) == tree.subtree_hash(level, index)
    # Subtrees that are not complete yet do not exist, at any level.
    for level, index in [(0, 77), (1, 38), (2, 19), (4, 4), (6, 1), (7, 0), (-1, 0)]:
        with pytest.raises(ledger.ProofError):
            reader.subtree_hash(level, index)
    with pytest.raises(ledger.ProofError):
        db.tables.inclusion_proof(db.cur, 5, 78)
    with pytest.raises(ledger.ProofError):
        db.tables.consistency_proof(db.cur, 0, 77)


@pytest.mark.parametrize(
    ("kind", "indices", "position", "expected", "got"),
    [
        ("gap", [30, 31, 33], 2, 32, 33),
        ("gap at the start", [31, 32], 0, 30, 31),
        ("duplicate", [29, 30], 0, 30, 29),
        ("duplicate in the batch", [30, 31, 31], 2, 32, 31),
        ("reordered", [30, 32, 31], 1, 31, 32),
        ("restart from zero", [0, 1], 0, 30, 0),
    ],
)
def test_a_batch_that_does_not_continue_the_log_is_refused_and_changes_nothing(
    db: Backend, kind: str, indices: list[int], position: int, expected: int, got: int
) -> None:
    db.append(leaves(0, 30))
    before = (db.tables.state(db.cur), db.tables.leaves(db.cur, 0, 30))
    with pytest.raises(ledger.storage.LeafIndexError) as caught:
        db.tables.append(db.cur, [make_leaf(i) for i in indices])
    assert (caught.value.expected, caught.value.got, caught.value.position) == (
        expected,
        got,
        position,
    )
    assert f"expected {expected}" in str(caught.value)
    assert f"index {got}" in str(caught.value)
    db.conn.rollback()
    assert (db.tables.state(db.cur), db.tables.leaves(db.cur, 0, 30)) == before
    assert db.execute(f"SELECT count(*) FROM {db.tables.leaves_table}") == [(30,)]
    # The log goes on from where it was.
    assert db.append(leaves(30, 40)) == 40
    assert db.tables.tree_root(db.cur, 40) == memory_tree(40).root()


def test_an_event_logged_twice_is_refused_by_the_database(db: Backend) -> None:
    db.append(leaves(0, 10))
    first = make_leaf(3)
    again = ledger.Leaf(ORIGIN, 10, first.aggregate_id, first.version, "X", bytes(32))
    with pytest.raises(ledger.storage.DuplicateLeafError):
        db.tables.append(db.cur, [*leaves(10, 10), again])
    db.conn.rollback()
    assert db.tables.state(db.cur)[0] == 10
    assert db.append(leaves(10, 12)) == 12


def test_a_version_beyond_the_sql_integer_range_is_refused(db: Backend) -> None:
    huge = ledger.Leaf(ORIGIN, 0, CASES[0], 2**63, "CaseSubmitted", bytes(32))
    with pytest.raises(ledger.storage.StorageError, match="64-bit"):
        db.tables.append(db.cur, [huge])
    db.conn.rollback()
    assert db.tables.state(db.cur)[0] == 0
    assert db.append(leaves(0, 1)) == 1


def test_append_outside_a_transaction_is_refused(db: Backend) -> None:
    conn = db.connect(autocommit=True)
    try:
        with pytest.raises(ledger.storage.StorageError, match="open transaction"):
            db.tables.append(conn.cursor(), leaves(0, 3))
    finally:
        conn.close()
    assert db.tables.state(db.cur)[0] == 0
    assert db.tables.leaves(db.cur, 0, 0) == []


def test_a_rolled_back_batch_leaves_no_trace(db: Backend) -> None:
    db.append(leaves(0, 100))
    assert db.tables.append(db.cur, leaves(100, 150)) == 150
    db.conn.rollback()
    assert db.tables.state(db.cur)[0] == 100
    assert db.execute(f"SELECT max(idx) FROM {db.tables.leaves_table}") == [(99,)]
    # No interior node past the committed size either.
    assert db.execute(
        f"SELECT count(*) FROM {db.tables.nodes_table} WHERE (idx + 1) << level > 100"
    ) == [(0,)]
    assert db.append(leaves(100, 150)) == 150
    assert db.tables.tree_root(db.cur, 150) == memory_tree(150).root()


def test_a_writer_killed_mid_batch_leaves_no_gap_and_no_duplicate(db: Backend) -> None:
    db.append(leaves(0, 100))
    # A separate process appends 3,000 leaves in one transaction, with a tracking row in the same
    # transaction, and is killed (SIGKILL) before it commits.
    child = textwrap.dedent(
        f"""
        import os, signal, sqlite3, sys
        import psycopg
        sys.path.insert(0, {str(ROOT_DIR / "tests" / "integration")!r})
        from test_ledger_storage import leaves
        import ledger
        dialect, target = sys.argv[1], sys.argv[2]
        conn = sqlite3.connect(target) if dialect == "sqlite" else psycopg.connect(target)
        cur = conn.cursor()
        tables = ledger.storage.LedgerTables(dialect)
        assert tables.append(cur, leaves(100, 3100)) == 3100
        cur.execute("UPDATE tracking SET position = 3100")
        print("appended", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    db.execute("CREATE TABLE tracking (position BIGINT NOT NULL)")
    db.execute("INSERT INTO tracking VALUES (100)")
    run = subprocess.run(
        [sys.executable, "-c", child, db.dialect, db.target],
        cwd=ROOT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert run.stdout.strip() == "appended"
    db.conn.close()  # a fresh connection, as a restarted integrator would open
    db.conn = db.connect()
    db.cur = db.conn.cursor()
    assert db.execute("SELECT position FROM tracking") == [(100,)]
    assert db.tables.state(db.cur)[0] == 100
    assert db.execute(f"SELECT count(*), max(idx) FROM {db.tables.leaves_table}") == [(100, 99)]
    # Restarted from its tracking position, it appends the same leaves again.
    assert db.tables.append(db.cur, leaves(100, 3100)) == 3100
    db.execute("UPDATE tracking SET position = 3100")
    assert db.execute(
        f"SELECT count(*), count(DISTINCT idx), min(idx), max(idx) FROM {db.tables.leaves_table}"
    ) == [(3100, 3100, 0, 3099)]
    assert db.tables.tree_root(db.cur, 3100) == memory_tree(3100).root()


def test_leaves_are_read_back_by_range_and_by_case(db: Backend) -> None:
    batch = leaves(0, 50)
    db.append(batch)
    assert db.tables.leaves(db.cur, 0, 50) == batch
    assert db.tables.leaves(db.cur, 10, 13) == batch[10:13]
    assert list(db.tables.iter_leaves(db.cur, 5, 50, batch_size=7)) == batch[5:]
    case = CASES[2]
    history = db.tables.leaves_of(db.cur, case)
    assert history == [leaf for leaf in batch if leaf.aggregate_id == case]
    assert [leaf.version for leaf in history] == list(range(1, len(history) + 1))
    assert db.tables.leaf_for(db.cur, case, 3) == history[2]
    assert db.tables.leaf_for(db.cur, case, 99) is None
    assert db.tables.leaves_of(db.cur, uuid.uuid4()) == []
    with pytest.raises(ledger.storage.StorageError, match="leaf 50 is missing"):
        db.tables.leaves(db.cur, 48, 51)


def test_a_deleted_leaf_row_is_reported_as_a_gap(db: Backend) -> None:
    db.append(leaves(0, 20))
    db.execute(f"DELETE FROM {db.tables.leaves_table} WHERE idx = 12")
    with pytest.raises(ledger.storage.StorageError, match="leaf 12 is missing"):
        db.tables.leaves(db.cur, 0, 20)
    with pytest.raises(ledger.ProofError, match="not stored"):
        db.tables.inclusion_proof(db.cur, 13, 20)


def sign(signer: ledger.Signer, tree: ledger.MerkleTree, size: int) -> bytes:
    return ledger.sign_checkpoint(ledger.Checkpoint(ORIGIN, size, tree.root(size)), signer)


def test_checkpoints_are_stored_listed_and_found_for_receipts(db: Backend) -> None:
    signer = ledger.Signer.generate(ORIGIN)
    tree = memory_tree(40)
    db.append(leaves(0, 40))
    for size, when in [(10, 1.0), (25, 2.0), (40, 3.0)]:
        db.tables.store_checkpoint(
            db.cur, size, tree.root(size), sign(signer, tree, size), created_at=when
        )
    db.conn.commit()
    stored = db.tables.checkpoints(db.cur)
    assert [(c.size, c.root, c.created_at) for c in stored] == [
        (10, tree.root(10), 1.0),
        (25, tree.root(25), 2.0),
        (40, tree.root(40), 3.0),
    ]
    latest = db.tables.latest_checkpoint(db.cur)
    assert latest == stored[-1]
    assert ledger.open_checkpoint(latest.note, signer.verifier()).checkpoint.size == 40
    # The first checkpoint that contains leaf i is the one of size >= i + 1.
    assert db.tables.checkpoint_at_least(db.cur, 9 + 1) == stored[0]
    assert db.tables.checkpoint_at_least(db.cur, 10 + 1) == stored[1]
    assert db.tables.checkpoint_at_least(db.cur, 41) is None

    # A receipt built from storage alone verifies offline.
    leaf = db.tables.leaf_for(db.cur, CASES[4], 3)
    assert leaf is not None
    checkpoint = db.tables.checkpoint_at_least(db.cur, leaf.index + 1)
    assert checkpoint is not None
    proof = db.tables.inclusion_proof(db.cur, leaf.index, checkpoint.size)
    receipt = ledger.Receipt.for_leaf(leaf, proof, checkpoint.note)
    verified = ledger.verify_receipt(receipt.format(), signer.verifier(), ledger.WitnessPolicy(0))
    assert verified.leaf == leaf


def test_storing_a_checkpoint_again_takes_the_new_note_and_keeps_its_time(db: Backend) -> None:
    signer = ledger.Signer.generate(ORIGIN)
    cosigner = ledger.Cosigner.generate("witness.example/w1")
    tree = memory_tree(9)
    db.append(leaves(0, 9))
    note = sign(signer, tree, 9)
    db.tables.store_checkpoint(db.cur, 9, tree.root(), note, created_at=5.0)
    text = ledger.peek_checkpoint(note).format()
    line = cosigner.signature_line(text, 1_700_000_000)
    cosigned = ledger.attach_cosignatures(note, line.encode())
    db.tables.store_checkpoint(db.cur, 9, tree.root(), cosigned, created_at=6.0)
    db.conn.commit()
    assert db.tables.checkpoints(db.cur) == [
        ledger.storage.StoredCheckpoint(9, tree.root(), cosigned, 5.0)
    ]


def test_a_checkpoint_inconsistent_with_the_stored_tree_is_refused(db: Backend) -> None:
    signer = ledger.Signer.generate(ORIGIN)
    tree = memory_tree(30)
    db.append(leaves(0, 30))
    db.tables.store_checkpoint(db.cur, 20, tree.root(20), sign(signer, tree, 20))
    db.conn.commit()

    # Another history of the same size: the log must never sign (or keep) it.
    forked = ledger.MerkleTree(b"other %d" % i for i in range(30))
    with pytest.raises(
        ledger.storage.CheckpointConflictError, match="never signs two inconsistent"
    ):
        db.tables.store_checkpoint(db.cur, 30, forked.root(), sign(signer, forked, 30))
    with pytest.raises(ledger.storage.CheckpointConflictError, match="disagrees"):
        db.tables.store_checkpoint(db.cur, 20, forked.root(20), sign(signer, forked, 20))
    # Ahead of the stored tree.
    bigger = memory_tree(31)
    with pytest.raises(ledger.storage.CheckpointConflictError, match="larger than the stored tree"):
        db.tables.store_checkpoint(db.cur, 31, bigger.root(), sign(signer, bigger, 31))
    # A note whose body says something else than the arguments.
    with pytest.raises(ledger.storage.CheckpointConflictError, match="note is for size 20"):
        db.tables.store_checkpoint(db.cur, 30, tree.root(), sign(signer, tree, 20))
    with pytest.raises(ledger.storage.CheckpointConflictError, match="malformed"):
        db.tables.store_checkpoint(db.cur, 30, tree.root(), b"not a note")
    # Another log's checkpoint in this log's table.
    stranger = ledger.Signer.generate("tongban.example/node-2")
    alien = ledger.sign_checkpoint(
        ledger.Checkpoint("tongban.example/node-2", 30, tree.root()), stranger
    )
    with pytest.raises(ledger.storage.CheckpointConflictError, match="origin"):
        db.tables.store_checkpoint(db.cur, 30, tree.root(), alien)
    db.conn.rollback()
    assert [c.size for c in db.tables.checkpoints(db.cur)] == [20]

    # A checkpoints row altered behind the log's back is not silently overwritten.
    db.execute(
        f"UPDATE {db.tables.checkpoints_table} SET root = ? WHERE size = 20", forked.root(20)
    )
    with pytest.raises(
        ledger.storage.CheckpointConflictError, match="stored checkpoint of size 20"
    ):
        db.tables.store_checkpoint(db.cur, 20, tree.root(20), sign(signer, tree, 20))


def test_the_sql_witness_store_swaps_atomically_and_keeps_evidence(db: Backend) -> None:
    store = ledger.storage.SQLWitnessStore(db.tables, db.cur, commit=True)
    tree = memory_tree(12)
    first = ledger.WitnessState(ORIGIN, 5, tree.root(5), b"note 5")
    second = ledger.WitnessState(ORIGIN, 12, tree.root(12), b"note 12")
    assert store.latest(ORIGIN) is None
    assert store.swap(None, first)
    assert not store.swap(None, second)  # someone stored a state already
    assert store.latest(ORIGIN) == first
    assert not store.swap(second, second)  # the expected state is not the current one
    stale = ledger.WitnessState(ORIGIN, 5, tree.root(4), b"note 5")
    assert not store.swap(stale, second)  # same size, other root
    assert store.swap(first, second)
    assert store.latest(ORIGIN) == second
    assert store.latest("tongban.example/node-2") is None

    evidence = [
        ledger.SplitViewEvidence(
            ORIGIN,
            ledger.EvidenceKind.INCONSISTENT_PROOF,
            "bad proof",
            b"cosigned",
            b"new",
            12,
            (tree.root(3), tree.root(7)),
            1_700_000_001,
        ),
        ledger.SplitViewEvidence(
            "tongban.example/node-2", ledger.EvidenceKind.FORK, "fork", b"a", b"b", 3, (), 2
        ),
        ledger.SplitViewEvidence(ORIGIN, ledger.EvidenceKind.ROLLBACK, "rb", b"c", b"d", 0, (), 3),
    ]
    for item in evidence:
        store.record_evidence(item)

    # Committed as it went: another connection sees the same state and evidence.
    other = db.connect()
    try:
        again = ledger.storage.SQLWitnessStore(db.tables, other.cursor())
        assert again.latest(ORIGIN) == second
        assert again.evidence() == evidence
        assert again.evidence(ORIGIN) == [evidence[0], evidence[2]]
        assert again.evidence("nobody") == []
    finally:
        other.close()


def test_a_witness_on_sql_storage_refuses_a_fork_and_the_evidence_survives(db: Backend) -> None:
    signer = ledger.Signer.generate(ORIGIN)
    witness = ledger.Witness(
        ledger.Cosigner.generate("witness.example/w1"),
        {ORIGIN: signer.verifier()},
        store=ledger.storage.SQLWitnessStore(db.tables, db.cur, commit=True),
        clock=lambda: 1_700_000_000,
    )
    tree = memory_tree(8)
    witness.add_checkpoint(sign(signer, tree, 8), 0)
    grown = memory_tree(13)
    witness.add_checkpoint(sign(signer, grown, 13), 8, grown.consistency_proof(8))
    forked = ledger.MerkleTree(b"other %d" % i for i in range(13))
    with pytest.raises(ledger.SplitViewError) as caught:
        witness.add_checkpoint(sign(signer, forked, 13), 13)
    assert caught.value.evidence.kind is ledger.EvidenceKind.FORK

    # A restarted witness (new connection, new store) remembers both.
    other = db.connect()
    try:
        store = ledger.storage.SQLWitnessStore(db.tables, other.cursor())
        latest = store.latest(ORIGIN)
        assert latest is not None
        assert (latest.size, latest.root) == (13, grown.root())
        assert store.evidence(ORIGIN) == [caught.value.evidence]
    finally:
        other.close()


def test_without_commit_the_witness_store_follows_the_callers_transaction(db: Backend) -> None:
    store = ledger.storage.SQLWitnessStore(db.tables, db.cur)
    state = ledger.WitnessState(ORIGIN, 1, memory_tree(1).root(), b"n")
    assert store.swap(None, state)
    db.conn.rollback()
    assert store.latest(ORIGIN) is None
    assert store.swap(None, state)
    db.conn.commit()
    assert store.latest(ORIGIN) == state


def test_a_cursor_of_the_other_dialect_is_refused(db: Backend) -> None:
    other = ledger.storage.LedgerTables("sqlite" if db.dialect == "postgres" else "postgres")
    with pytest.raises(ledger.storage.StorageError, match="needs a"):
        other.state(db.cur)
    with pytest.raises(ledger.LedgerError, match="needs a"):
        ledger.storage.SQLWitnessStore(other, db.cur)


def test_table_prefix_and_dialect_are_validated() -> None:
    with pytest.raises(ledger.storage.StorageError, match="prefix"):
        ledger.storage.LedgerTables("sqlite", "ledger; DROP TABLE x")
    with pytest.raises(ledger.storage.StorageError, match="dialect"):
        ledger.storage.LedgerTables("mysql")  # type: ignore[arg-type]
    tables = ledger.storage.LedgerTables("postgres", "node2_log")
    assert tables.leaves_table == "node2_log_leaves"
    assert all("IF NOT EXISTS" in s or "DO NOTHING" in s for s in tables.create_statements())


def test_two_logs_with_different_prefixes_share_a_database(db: Backend) -> None:
    second = ledger.storage.LedgerTables(db.tables.dialect, "second")
    second.create(db.cur)
    db.append(leaves(0, 5))
    assert second.append(db.cur, leaves(0, 2)) == 2
    db.conn.commit()
    assert db.tables.state(db.cur)[0] == 5
    assert second.tree_root(db.cur, 2) == memory_tree(2).root()

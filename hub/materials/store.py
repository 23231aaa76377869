"""The node's material store: files by SHA-256, each stored once, encrypted at rest.

Three tables in the node's own database (PostgreSQL, or the embedded SQLite file), beside the
event store::

    tongban_materials         one row per distinct file: digest, size, chunk count, blob id, and
                              the file's own key wrapped under the at-rest key ring (NULL once
                              the file was erased)
    tongban_material_chunks   the file's bytes, CHUNK_BYTES (1 MiB) per row, each sealed
                              (hub.materials.chunks)
    tongban_material_holders  who showed the node the bytes: each hall that uploaded the file
                              (``hall:<id>``), each case it was fetched from a peer for
                              (``case:<id>``)

**Why rows of chunks in the database, not files on disk.** One backup of the database (and its
point-in-time recovery) then holds a node's cases and their materials consistently; every
serving process and every machine of a node reaches them without a shared file system; a file
becomes visible in one short transaction, so nobody ever reads half of one. Chunks, not one row
per file, because a driver holds a value whole in memory: with 1 MiB chunks neither a writer nor
a reader ever holds more than one chunk, and a download starts at once. The price is throughput
below the raw disk's (``benchmarks/materials.py`` prints both) and database size.

**Writing.** :meth:`MaterialStore.writer` stores the chunks of an upload as they arrive, each in
its own short transaction (a long upload never holds the database's write lock), under a fresh
blob id that nothing refers to yet. Only :meth:`MaterialWriter.finish`, after the size and the
SHA-256 of every byte matched what was declared, makes the file visible by inserting its row; a
refused or broken upload deletes its chunks (and chunks a crash left behind are swept at the next
start, :meth:`MaterialStore.sweep`). If the file is there already, the new chunks are dropped: a
file is stored once, however often and by whomever it is uploaded.

**Reading.** :meth:`MaterialStore.read` decrypts chunk by chunk, hashes as it goes and raises
:class:`~hub.errors.MaterialDamaged` when a chunk is missing, altered or moved, or the bytes do
not hash to the digest.

**Who may read.** A digest is a name anyone can write into a command, so listing a digest in a
case is not enough to read the file: :meth:`MaterialStore.check_case` also wants the bytes to
have been shown to the node by a party to that case (a hall of the case uploaded them) or
fetched for that very case from a peer. So a hall cannot obtain a file it never had by naming
its digest in a case of its own.

**Keys.** Rotating the at-rest key ring (``tongban keys rotate``) re-wraps each file's key
(:meth:`MaterialStore.rewrap`); a key that still wraps a file is "in use" and is never dropped.
**Erasure** of a case's personal data shreds the files that case lists, unless another case
whose personal data is not erased lists the same file (:func:`hub.materials.erasure`).
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from hub.application.cipher import DecryptionError, KeyRingCipher, key_id_of
from hub.application.hub import HubApplication
from hub.application.postgres_store import uses_postgres
from hub.application.storage import StorageGuard
from hub.domain.case import Case
from hub.domain.values import MAX_MATERIAL_BYTES
from hub.errors import InvalidInput, MaterialDamaged, NotFound
from hub.materials.chunks import ChunkSeal, Rechunker, check_digest, check_size

T = TypeVar("T")

MATERIALS = "tongban_materials"
CHUNKS = "tongban_material_chunks"
HOLDERS = "tongban_material_holders"

#: How old unreferenced chunks must be before :meth:`MaterialStore.sweep` deletes them.
SWEEP_AFTER_S = 3600.0


def hall_holder(hall_id: str) -> str:
    """The holder entry of a hall that uploaded a file."""
    return f"hall:{hall_id}"


def case_holder(case_id: uuid.UUID | str) -> str:
    """The holder entry of a case a file was fetched from a peer for."""
    return f"case:{case_id}"


@dataclass(frozen=True)
class StoredFile:
    """A file the store holds."""

    sha256: str
    size: int


@dataclass(frozen=True)
class _Row:
    sha256: str
    size: int
    count: int
    blob_id: str
    wrapped: bytes | None


def _statements(param: str, blob: str, real: str, postgres: bool) -> dict[str, Any]:
    p = param
    create = [
        f"CREATE TABLE IF NOT EXISTS {MATERIALS} ("
        f"sha256 TEXT PRIMARY KEY, size BIGINT NOT NULL, chunk_count INTEGER NOT NULL, "
        f"blob_id TEXT, key_id TEXT, wrapped_key {blob}, created_at {real} NOT NULL, "
        f"shredded_at {real})",
        f"CREATE TABLE IF NOT EXISTS {CHUNKS} ("
        f"blob_id TEXT NOT NULL, seq INTEGER NOT NULL, ciphertext {blob} NOT NULL, "
        f"created_at {real} NOT NULL, PRIMARY KEY (blob_id, seq))",
        f"CREATE TABLE IF NOT EXISTS {HOLDERS} ("
        f"sha256 TEXT NOT NULL, holder TEXT NOT NULL, created_at {real} NOT NULL, "
        f"PRIMARY KEY (sha256, holder))",
    ]
    if postgres:
        # Sealed chunks do not compress: keep PostgreSQL from trying (TOAST stores them as is).
        # (Only once: the ALTER takes a lock that would queue readers on every start.)
        create.append(
            "DO $$ BEGIN IF (SELECT attstorage FROM pg_attribute WHERE attrelid = "
            f"'{CHUNKS}'::regclass AND attname = 'ciphertext') <> 'e' THEN "
            f"ALTER TABLE {CHUNKS} ALTER COLUMN ciphertext SET STORAGE EXTERNAL; END IF; END $$"
        )
    return {
        "create": create,
        "insert_chunk": (
            f"INSERT INTO {CHUNKS} (blob_id, seq, ciphertext, created_at) "
            f"VALUES ({p}, {p}, {p}, {p})"
        ),
        "chunk": f"SELECT ciphertext FROM {CHUNKS} WHERE blob_id = {p} AND seq = {p}",
        "drop_chunks": f"DELETE FROM {CHUNKS} WHERE blob_id = {p}",
        "insert": (
            f"INSERT INTO {MATERIALS} (sha256, size, chunk_count, blob_id, key_id, wrapped_key, "
            f"created_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}) "
            "ON CONFLICT (sha256) DO NOTHING"
        ),
        # A file erased before and uploaded again is stored again (under a fresh key).
        "restore": (
            f"UPDATE {MATERIALS} SET size = {p}, chunk_count = {p}, blob_id = {p}, key_id = {p}, "
            f"wrapped_key = {p}, created_at = {p}, shredded_at = NULL "
            f"WHERE sha256 = {p} AND wrapped_key IS NULL"
        ),
        "row": (
            f"SELECT sha256, size, chunk_count, blob_id, wrapped_key FROM {MATERIALS} "
            f"WHERE sha256 = {p}"
        ),
        "add_holder": (
            f"INSERT INTO {HOLDERS} (sha256, holder, created_at) VALUES ({p}, {p}, {p}) "
            "ON CONFLICT (sha256, holder) DO NOTHING"
        ),
        "holders": f"SELECT holder FROM {HOLDERS} WHERE sha256 = {p}",
        "shred": (
            f"UPDATE {MATERIALS} SET wrapped_key = NULL, key_id = NULL, blob_id = NULL, "
            f"shredded_at = {p} WHERE sha256 = {p} AND wrapped_key IS NOT NULL"
        ),
        "drop_holders": f"DELETE FROM {HOLDERS} WHERE sha256 = {p}",
        "in_use": (
            f"SELECT key_id, COUNT(*) AS n FROM {MATERIALS} "
            "WHERE wrapped_key IS NOT NULL GROUP BY key_id"
        ),
        "all_wrapped": f"SELECT sha256, wrapped_key FROM {MATERIALS} WHERE wrapped_key IS NOT NULL",
        "rewrap": f"UPDATE {MATERIALS} SET wrapped_key = {p}, key_id = {p} WHERE sha256 = {p}",
        "sweep": (
            f"DELETE FROM {CHUNKS} WHERE created_at < {p} AND NOT EXISTS "
            f"(SELECT 1 FROM {MATERIALS} m WHERE m.blob_id = {CHUNKS}.blob_id)"
        ),
        "count_files": f"SELECT COUNT(*) AS n FROM {MATERIALS} WHERE wrapped_key IS NOT NULL",
    }


class MaterialStore:
    """Material files by digest in the node's database (see the module docstring).

    Thread-safe: every method opens its own short transaction.
    """

    def __init__(
        self,
        datastore: Any,
        *,
        postgres: bool,
        cipher: KeyRingCipher,
        max_bytes: int = MAX_MATERIAL_BYTES,
        guard: StorageGuard | None = None,
    ) -> None:
        """``datastore``: the event store's (``app.recorder.datastore``), so materials live in
        the same database; ``cipher``: the node's at-rest key ring; ``max_bytes``: the largest
        file accepted (TONGBAN_MAX_MATERIAL_BYTES)."""
        self.datastore = datastore
        self.postgres = postgres
        self.cipher = cipher
        self.max_bytes = max_bytes
        self.guard = guard or StorageGuard()
        self._sql = _statements(
            "%s" if postgres else "?",
            "BYTEA" if postgres else "BLOB",
            "DOUBLE PRECISION" if postgres else "REAL",
            postgres,
        )

    @classmethod
    def of(cls, app: HubApplication, *, max_bytes: int = MAX_MATERIAL_BYTES) -> MaterialStore:
        """The store in ``app``'s database, with its key ring and its storage guard."""
        datastore = app.recorder.datastore  # type: ignore[attr-defined]
        postgres = uses_postgres(app.env)
        return cls(
            datastore,
            postgres=postgres,
            cipher=app.vault.cipher,
            max_bytes=max_bytes,
            guard=app.storage,
        )

    # ------------------------------------------------------------------ plumbing

    def _run(self, work: Callable[[Any], T], *, write: bool = False) -> T:
        def access() -> T:
            with self.datastore.transaction(commit=write) as cursor:
                return work(cursor)

        return self.guard.run(access, write=write)

    def create_tables(self) -> None:
        """Create the tables (idempotent); the node's start-up and ``tongban init`` call it."""

        def create(cursor: Any) -> None:
            for statement in self._sql["create"]:
                cursor.execute(statement)

        self._run(create, write=True)

    # ------------------------------------------------------------------ writing

    def writer(self, sha256: str, size: int, holder: str) -> MaterialWriter:
        """A writer for one file declared as ``sha256``/``size``, shown by ``holder``
        (:func:`hall_holder`, :func:`case_holder`). InvalidInput naming ``sha256`` or ``size``
        when the declaration is malformed or over the limit; nothing is written then."""
        check_digest(sha256)
        check_size(size, self.max_bytes)
        return MaterialWriter(self, sha256, size, holder)

    def put(self, data: Iterable[bytes], sha256: str, size: int, holder: str) -> StoredFile:
        """Store a whole file from ``data`` (an iterable of byte strings of any size)."""
        writer = self.writer(sha256, size, holder)
        try:
            for piece in data:
                writer.write(piece)
            return writer.finish()
        except BaseException:
            writer.abort()
            raise

    def _insert_chunk(self, blob_id: str, seq: int, sealed: bytes) -> None:
        self._run(
            lambda c: c.execute(self._sql["insert_chunk"], (blob_id, seq, sealed, time.time())),
            write=True,
        )

    def _drop_chunks(self, blob_id: str) -> None:
        self._run(lambda c: c.execute(self._sql["drop_chunks"], (blob_id,)), write=True)

    def _publish(self, writer: MaterialWriter, wrapped: bytes) -> bool:
        """Make the writer's file visible; False when the store held it already."""
        sql = self._sql
        now = time.time()
        key_id = key_id_of(wrapped)
        blob_id = writer.blob_id

        def publish(cursor: Any) -> bool:
            cursor.execute(
                sql["insert"],
                (writer.sha256, writer.size, writer.seal.count, blob_id, key_id, wrapped, now),
            )
            stored = _rowcount(cursor) == 1
            if not stored:
                cursor.execute(
                    sql["restore"],
                    (writer.size, writer.seal.count, blob_id, key_id, wrapped, now, writer.sha256),
                )
                stored = _rowcount(cursor) == 1
            cursor.execute(sql["add_holder"], (writer.sha256, writer.holder, now))
            return stored

        return self._run(publish, write=True)

    # ------------------------------------------------------------------ reading

    def _row(self, sha256: str) -> _Row | None:
        def read(cursor: Any) -> _Row | None:
            cursor.execute(self._sql["row"], (sha256,))
            row = cursor.fetchone()
            if row is None:
                return None
            wrapped = row["wrapped_key"]
            return _Row(
                str(row["sha256"]),
                int(row["size"]),
                int(row["chunk_count"]),
                str(row["blob_id"] or ""),
                bytes(wrapped) if wrapped is not None else None,
            )

        return self._run(read)

    def get(self, sha256: str) -> StoredFile | None:
        """The file with this digest if the store holds it (not erased), else None."""
        row = self._row(check_digest(sha256))
        if row is None or row.wrapped is None:
            return None
        return StoredFile(row.sha256, row.size)

    def read(self, sha256: str) -> Iterator[bytes]:
        """The file's bytes, chunk by chunk (at most CHUNK_BYTES each).

        NotFound before the first chunk when the store does not hold the file;
        :class:`~hub.errors.MaterialDamaged` as soon as a chunk is missing or altered, or at
        the end when the bytes do not hash to the digest.
        """
        row = self._row(check_digest(sha256))
        if row is None or row.wrapped is None:
            raise NotFound("material", sha256)
        return self._chunks(row)

    def _chunks(self, row: _Row) -> Iterator[bytes]:
        try:
            key = self.cipher.decrypt(row.wrapped or b"")
        except DecryptionError as error:
            raise MaterialDamaged(row.sha256, f"its key cannot be unwrapped: {error}") from None
        seal = ChunkSeal(key, bytes.fromhex(row.blob_id), row.count)
        checker = Rechunker(row.size)
        for seq in range(row.count):
            stored = self._run(
                functools.partial(
                    _fetch_one, statement=self._sql["chunk"], row=row, seq=seq, binary=self.postgres
                )
            )
            if stored is None:
                raise MaterialDamaged(row.sha256, f"chunk {seq} of {row.count} is missing")
            plaintext = seal.open(seq, stored)
            if plaintext is None:
                raise MaterialDamaged(
                    row.sha256, f"chunk {seq} of {row.count} was altered or moved"
                )
            try:
                checker.feed(plaintext)
            except InvalidInput:
                raise MaterialDamaged(row.sha256, "it is longer than its recorded size") from None
            yield plaintext
        try:
            checker.close(row.sha256)
        except InvalidInput as error:
            raise MaterialDamaged(row.sha256, error.reason) from None

    # ------------------------------------------------------------------ who may read

    def holders(self, sha256: str) -> set[str]:
        """Who showed the node these bytes (:func:`hall_holder`, :func:`case_holder`)."""

        def read(cursor: Any) -> set[str]:
            cursor.execute(self._sql["holders"], (sha256,))
            return {str(row["holder"]) for row in cursor.fetchall()}

        return self._run(read)

    def add_holder(self, sha256: str, holder: str) -> None:
        """Record that ``holder`` showed (or was given) these bytes."""
        self._run(
            lambda c: c.execute(self._sql["add_holder"], (sha256, holder, time.time())),
            write=True,
        )

    def check_case(self, case: Case, sha256: str) -> StoredFile:
        """The file, when ``case`` may give access to it: the case lists the digest, its
        personal data is not erased, the store holds the file, and a party to the case uploaded
        it (or it was fetched for this case). NotFound("material") otherwise — the same answer
        in every case, so a refusal says nothing about what exists.

        The caller has already decided that its caller may read the case (a party hall, or the
        peer node of the case's competent region).
        """
        check_digest(sha256)
        absent = NotFound("material", sha256)
        if case.personal_data_erased or all(m.sha256 != sha256 for m in case.materials):
            raise absent
        stored = self.get(sha256)
        if stored is None:
            raise absent
        entitled = {hall_holder(hall) for hall in case.parties} | {case_holder(case.id)}
        if not entitled & self.holders(sha256):
            raise absent
        return stored

    # ------------------------------------------------------------------ keys and erasure

    def shred(self, digests: Iterable[str]) -> int:
        """Erase files: destroy each one's key, delete its chunks and holders; returns how
        many were erased (already erased or unknown digests count 0)."""
        sql = self._sql
        wanted = sorted(set(digests))

        def shred(cursor: Any) -> int:
            erased = 0
            now = time.time()
            for sha256 in wanted:
                cursor.execute(sql["row"], (sha256,))
                row = cursor.fetchone()
                if row is None or row["wrapped_key"] is None:
                    continue
                cursor.execute(sql["shred"], (now, sha256))
                cursor.execute(sql["drop_chunks"], (row["blob_id"],))
                cursor.execute(sql["drop_holders"], (sha256,))
                erased += 1
            return erased

        return self._run(shred, write=True)

    def key_ids_in_use(self) -> dict[str, int]:
        """How many files each at-rest key wraps."""

        def read(cursor: Any) -> dict[str, int]:
            cursor.execute(self._sql["in_use"])
            return {str(row["key_id"]): int(row["n"]) for row in cursor.fetchall()}

        return self._run(read)

    def rewrap(self, cipher: KeyRingCipher) -> int:
        """Re-wrap every file's key under ``cipher``'s active key, in one transaction;
        returns how many. The chunks are not touched."""
        sql = self._sql

        def rewrap(cursor: Any) -> int:
            cursor.execute(sql["all_wrapped"])
            rows = [(str(row["sha256"]), bytes(row["wrapped_key"])) for row in cursor.fetchall()]
            for sha256, wrapped in rows:
                new = cipher.encrypt(cipher.decrypt(wrapped))
                cursor.execute(sql["rewrap"], (new, key_id_of(new), sha256))
            return len(rows)

        return self._run(rewrap, write=True)

    def sweep(self, older_than_s: float = SWEEP_AFTER_S) -> int:
        """Delete chunks no file refers to that are older than ``older_than_s`` seconds (an
        upload that a crash interrupted); returns how many."""

        def sweep(cursor: Any) -> int:
            cursor.execute(self._sql["sweep"], (time.time() - older_than_s,))
            return _rowcount(cursor)

        return self._run(sweep, write=True)

    def count(self) -> int:
        """How many files the store holds (erased ones not counted)."""

        def read(cursor: Any) -> int:
            cursor.execute(self._sql["count_files"])
            return int(cursor.fetchone()["n"])

        return self._run(read)


def _rowcount(cursor: Any) -> int:
    """Rows the last statement changed (the library wraps SQLite's cursor, which has it)."""
    return int(getattr(cursor, "sqlite_cursor", cursor).rowcount)


def _fetch_one(cursor: Any, *, statement: str, row: _Row, seq: int, binary: bool) -> bytes | None:
    if binary:
        # PostgreSQL's text format sends bytea as hex: twice the bytes, and parsed in Python.
        cursor.execute(statement, (row.blob_id, seq), binary=True)
    else:
        cursor.execute(statement, (row.blob_id, seq))
    found = cursor.fetchone()
    return bytes(found["ciphertext"]) if found is not None else None


class MaterialWriter:
    """One file on its way into the store (see :meth:`MaterialStore.writer`).

    Call :meth:`write` with the bytes in order, then :meth:`finish`; on any failure call
    :meth:`abort` (which :meth:`finish` does itself when it refuses). Not thread-safe: one
    upload, one writer.
    """

    def __init__(self, store: MaterialStore, sha256: str, size: int, holder: str) -> None:
        self.store = store
        self.sha256 = sha256
        self.size = size
        self.holder = holder
        self.seal = ChunkSeal.fresh(size)
        self.blob_id = self.seal.blob_id.hex()
        self._chunks = Rechunker(size)
        self._next = 0
        self._wrote_any = False
        self._done = False

    def write(self, data: bytes) -> None:
        """Take the next bytes; complete chunks are sealed and stored at once. InvalidInput
        (field ``data``) when more bytes arrive than declared."""
        for chunk in self._chunks.feed(data):
            self._store(chunk)

    def _store(self, chunk: bytes) -> None:
        self._wrote_any = True
        self.store._insert_chunk(self.blob_id, self._next, self.seal.seal(self._next, chunk))
        self._next += 1

    def finish(self) -> StoredFile:
        """Check the size and the digest, then make the file visible (or keep the copy the
        store already holds). InvalidInput naming ``size`` or ``sha256`` on a mismatch; then
        nothing of this upload remains."""
        try:
            last = self._chunks.close(self.sha256)
            if last:
                self._store(last)
            wrapped = self.store.cipher.encrypt(self.seal.key)
            stored = self.store._publish(self, wrapped)
        except BaseException:
            self.abort()
            raise
        self._done = True
        if not stored:
            self.store._drop_chunks(self.blob_id)  # the store's own copy serves
        return StoredFile(self.sha256, self.size)

    def abort(self) -> None:
        """Forget this upload: delete the chunks it stored (nothing refers to them)."""
        if self._done:
            return
        self._done = True
        if self._wrote_any:
            self.store._drop_chunks(self.blob_id)


__all__ = [
    "CHUNKS",
    "HOLDERS",
    "MATERIALS",
    "MaterialStore",
    "MaterialWriter",
    "StoredFile",
    "case_holder",
    "hall_holder",
]

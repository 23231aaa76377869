"""The material store on both backends (SQLite and PostgreSQL): every test runs on each.

Attack tests first: bytes that do not match their declaration leave nothing behind; a stored
chunk altered, deleted or swapped is detected by name; nothing is stored in clear; a hall cannot
read a file by naming its digest in a case of its own; removing a key that still wraps a file is
refused. Then: stored once, streamed in chunks, key rotation keeps every file readable, erasure
shreds a case's files unless another live case lists them, crash leftovers are swept.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tongban.v1 import common_pb2

from hub.application.cipher import KeyRingCipher, new_key, new_key_id
from hub.bootstrap import build_application, build_material_store, load_node_keys
from hub.cli import main as tongban
from hub.errors import InvalidInput, MaterialDamaged, NotFound, StoreMismatch
from hub.materials.chunks import CHUNK_BYTES
from hub.materials.erasure import erase_case_materials
from hub.materials.store import CHUNKS, MATERIALS, MaterialStore, case_holder, hall_holder
from hub.settings import Settings
from tests.harness.inprocess import InProcessNode

VILLAGE_REGION = "430902104201"
TOWNSHIP_REGION = "430902104000"


@pytest.fixture
def settings(store_url: str | None, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "node", database_url=store_url, max_material_bytes=8 * CHUNK_BYTES
    )


@pytest.fixture
def node(settings: Settings) -> Iterator[InProcessNode]:
    started = InProcessNode.start(settings)
    started.add_hall("v-room", VILLAGE_REGION)
    started.add_hall("t-hall", TOWNSHIP_REGION)
    yield started
    started.close()


@pytest.fixture
def store(node: InProcessNode) -> MaterialStore:
    return build_material_store(node.settings, node.app)


def scan(size: int, seed: bytes = b"") -> bytes:
    """``size`` pseudo-random bytes (a scan does not compress either)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


def pieces(data: bytes, step: int = 300_001) -> Iterator[bytes]:
    """``data`` in pieces of an odd size (not the store's chunk size)."""
    for at in range(0, len(data), step):
        yield data[at : at + step]


def sql(store: MaterialStore, statement: str, *args: Any, write: bool = False) -> list[Any]:
    """Run SQL on the store's own database (``?`` placeholders, adapted for PostgreSQL)."""
    if store.postgres:
        statement = statement.replace("?", "%s")

    def run(cursor: Any) -> list[Any]:
        cursor.execute(statement, args)
        return list(cursor.fetchall()) if statement.startswith("SELECT") else []

    return store._run(run, write=write)


def chunk_rows(store: MaterialStore) -> int:
    return int(sql(store, f"SELECT COUNT(*) AS n FROM {CHUNKS}")[0]["n"])


def put(store: MaterialStore, data: bytes, holder: str = hall_holder("v-room")) -> str:
    digest = hashlib.sha256(data).hexdigest()
    store.put(pieces(data), digest, len(data), holder)
    return digest


def material(name: str, data: bytes) -> common_pb2.Material:
    return common_pb2.Material(
        name=name, sha256=hashlib.sha256(data).hexdigest(), media_type="image/jpeg", size=len(data)
    )


# --- attacks: nothing partial, nothing altered, nothing in clear ---------------------------------


@pytest.mark.parametrize(
    ("declared", "sent", "field"),
    [
        ("digest", "other bytes", "sha256"),  # the bytes are not those of the digest
        ("size+1", "short", "size"),  # fewer bytes than declared
        ("size-1", "long", "data"),  # more bytes than declared
    ],
)
def test_a_mismatched_upload_leaves_nothing(
    store: MaterialStore, declared: str, sent: str, field: str
) -> None:
    data = scan(2 * CHUNK_BYTES + 5)
    digest, size = hashlib.sha256(data).hexdigest(), len(data)
    if declared == "digest":
        digest = hashlib.sha256(data + b"!").hexdigest()
    elif declared == "size+1":
        size += 1
    else:
        size -= 1
    with pytest.raises(InvalidInput) as refused:
        store.put(pieces(data), digest, size, hall_holder("v-room"))
    assert refused.value.field == field
    assert chunk_rows(store) == 0
    assert sql(store, f"SELECT COUNT(*) AS n FROM {MATERIALS}")[0]["n"] == 0
    assert store.get(digest) is None


def test_over_the_limit_is_refused_before_a_byte_is_written(store: MaterialStore) -> None:
    with pytest.raises(InvalidInput, match="TONGBAN_MAX_MATERIAL_BYTES") as refused:
        store.writer("a" * 64, 8 * CHUNK_BYTES + 1, hall_holder("v-room"))
    assert refused.value.field == "size"
    assert chunk_rows(store) == 0


def test_nothing_is_stored_in_clear(store: MaterialStore) -> None:
    marker = b"CLEARTEXT-MARKER-OF-AN-ID-CARD-SCAN"
    data = marker * 1000
    put(store, data)
    stored = b"".join(
        bytes(row["ciphertext"]) for row in sql(store, f"SELECT ciphertext FROM {CHUNKS}")
    )
    assert len(stored) > len(data)
    assert marker not in stored
    assert b"".join(store.read(hashlib.sha256(data).hexdigest())) == data


@pytest.mark.parametrize("damage", ["flip a byte", "delete a chunk", "swap two files' chunks"])
def test_a_damaged_store_is_named_when_read(store: MaterialStore, damage: str) -> None:
    data, other = scan(3 * CHUNK_BYTES, b"a"), scan(3 * CHUNK_BYTES, b"b")
    digest, other_digest = put(store, data), put(store, other)
    blob = sql(store, f"SELECT blob_id FROM {MATERIALS} WHERE sha256 = ?", digest)[0]["blob_id"]
    if damage == "flip a byte":
        row = sql(store, f"SELECT ciphertext FROM {CHUNKS} WHERE blob_id = ? AND seq = 1", blob)
        altered = bytearray(bytes(row[0]["ciphertext"]))
        altered[100] ^= 0x40
        sql(store, f"UPDATE {CHUNKS} SET ciphertext = ? WHERE blob_id = ? AND seq = 1",
            bytes(altered), blob, write=True)  # fmt: skip
        expected = "chunk 1 of 3 was altered"
    elif damage == "delete a chunk":
        sql(store, f"DELETE FROM {CHUNKS} WHERE blob_id = ? AND seq = 2", blob, write=True)
        expected = "chunk 2 of 3 is missing"
    else:
        theirs = sql(store, f"SELECT blob_id FROM {MATERIALS} WHERE sha256 = ?", other_digest)
        foreign = sql(store, f"SELECT ciphertext FROM {CHUNKS} WHERE blob_id = ? AND seq = 0",
                      theirs[0]["blob_id"])  # fmt: skip
        sql(store, f"UPDATE {CHUNKS} SET ciphertext = ? WHERE blob_id = ? AND seq = 0",
            bytes(foreign[0]["ciphertext"]), blob, write=True)  # fmt: skip
        expected = "chunk 0 of 3 was altered"
    with pytest.raises(MaterialDamaged, match=expected) as damaged:
        b"".join(store.read(digest))
    assert damaged.value.sha256 == digest
    assert b"".join(store.read(other_digest)) == other  # the other file is untouched


def test_naming_a_digest_in_a_case_of_ones_own_does_not_give_the_file(
    node: InProcessNode, store: MaterialStore
) -> None:
    secret = scan(5000, b"someone else's scan")
    digest = put(store, secret, hall_holder("t-hall"))  # the township hall uploaded it
    # The village room never had the bytes; it lists the digest in a case of its own.
    village = node.halls["v-room"]
    case_id = node.submit(village, materials=[material("身份证", secret)]).case_id
    case = node.app.get_case(case_id)
    with pytest.raises(NotFound) as refused:
        store.check_case(case, digest)
    assert str(refused.value) == f"material {digest} not found"
    # Once a party of the case shows the node the bytes, the case gives access to them.
    put(store, secret, hall_holder("v-room"))
    assert store.check_case(case, digest).size == len(secret)


def test_every_refusal_is_the_same_not_found(node: InProcessNode, store: MaterialStore) -> None:
    listed, unlisted = scan(10, b"listed"), scan(10, b"unlisted")
    put(store, unlisted)
    case = node.app.get_case(
        node.submit(node.halls["v-room"], materials=[material("a", listed)]).case_id
    )
    answers = set()
    for digest in (hashlib.sha256(listed).hexdigest(), hashlib.sha256(unlisted).hexdigest()):
        with pytest.raises(NotFound) as refused:
            store.check_case(case, digest)
        answers.add(str(refused.value).replace(digest, "<digest>"))
    assert answers == {"material <digest> not found"}


def test_removing_a_key_that_wraps_a_file_is_refused(
    node: InProcessNode, store: MaterialStore
) -> None:
    put(store, scan(10))
    keys = load_node_keys(node.settings)
    fresh = new_key_id()
    ring = f"{fresh}:{new_key()}"
    with pytest.raises(StoreMismatch, match=r"\(1 material files\)"):
        build_application(
            node.settings.with_changes(cipher_keys=ring, cipher_active_key=fresh)
        ).close()
    assert keys.cipher.active_id in store.key_ids_in_use()


# --- what the store does ---------------------------------------------------------------------------


def test_a_large_file_round_trips_in_chunks(store: MaterialStore) -> None:
    data = scan(5 * CHUNK_BYTES + 123)
    digest = put(store, data)
    assert chunk_rows(store) == 6
    read = list(store.read(digest))
    assert [len(chunk) for chunk in read] == [CHUNK_BYTES] * 5 + [123]
    assert b"".join(read) == data
    assert store.get(digest) is not None and store.get(digest).size == len(data)  # type: ignore[union-attr]


def test_the_same_file_is_stored_once(store: MaterialStore) -> None:
    data = scan(2 * CHUNK_BYTES + 1)
    digest = put(store, data, hall_holder("v-room"))
    put(store, data, hall_holder("t-hall"))
    put(store, data, hall_holder("v-room"))
    assert chunk_rows(store) == 3
    assert store.count() == 1
    assert store.holders(digest) == {hall_holder("v-room"), hall_holder("t-hall")}


def test_concurrent_uploads_of_one_file_store_it_once(store: MaterialStore) -> None:
    data = scan(2 * CHUNK_BYTES + 7)
    errors: list[BaseException] = []

    def upload(hall: str) -> None:
        try:
            put(store, data, hall_holder(hall))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=upload, args=(f"hall-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count() == 1
    assert chunk_rows(store) == 3
    assert b"".join(store.read(hashlib.sha256(data).hexdigest())) == data


def test_key_rotation_keeps_every_file_readable(
    node: InProcessNode, store: MaterialStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = scan(2 * CHUNK_BYTES + 9)
    digest = put(store, data)
    old = load_node_keys(node.settings).cipher.active_id
    node.close()
    monkeypatch.setenv("TONGBAN_DATA_DIR", str(node.settings.data_dir))
    if node.settings.database_url:
        monkeypatch.setenv("TONGBAN_DATABASE_URL", node.settings.database_url)
    assert tongban(["keys", "rotate"]) == 0
    keys = load_node_keys(node.settings)
    assert keys.cipher.active_id != old
    assert old not in keys.cipher.keys  # the old key wraps nothing any more: dropped
    app = build_application(node.settings)
    try:
        rotated = build_material_store(node.settings, app)
        assert rotated.key_ids_in_use() == {keys.cipher.active_id: 1}
        assert b"".join(rotated.read(digest)) == data
    finally:
        app.close()
    node.app = build_application(node.settings)  # for the fixture's close()


def test_rewrap_touches_only_the_keys(store: MaterialStore) -> None:
    digest = put(store, scan(CHUNK_BYTES + 1))
    before = sql(store, f"SELECT ciphertext FROM {CHUNKS} ORDER BY seq")
    key_id = new_key_id()
    ring = dict(store.cipher.keys) | {key_id: os.urandom(32)}
    assert store.rewrap(KeyRingCipher(ring, key_id)) == 1
    assert sql(store, f"SELECT ciphertext FROM {CHUNKS} ORDER BY seq") == before
    assert set(store.key_ids_in_use()) == {key_id}
    store.cipher = KeyRingCipher(ring, key_id)
    assert store.get(digest) is not None
    assert len(b"".join(store.read(digest))) == CHUNK_BYTES + 1


def test_erasure_shreds_the_files_only_erased_cases_list(
    node: InProcessNode, store: MaterialStore
) -> None:
    own, shared = scan(100, b"own"), scan(100, b"shared")
    own_digest, shared_digest = put(store, own), put(store, shared)
    village = node.halls["v-room"]
    first = node.submit(village, "key-first-0001",
                        materials=[material("身份证", own), material("户口簿", shared)]).case_id  # fmt: skip
    second = node.submit(village, "key-second-001", materials=[material("户口簿", shared)]).case_id

    node.app.execute(
        node.admin.sign("erase_personal_data", case_id=str(first), reason="申请人要求")
    )
    assert erase_case_materials(node.app, store, first) == [own_digest]
    assert store.get(own_digest) is None
    with pytest.raises(NotFound):
        store.read(own_digest)
    assert b"".join(store.read(shared_digest)) == shared  # the second case still needs it
    # Running it again changes nothing.
    assert erase_case_materials(node.app, store, first) == [own_digest]

    node.app.execute(node.admin.sign("erase_personal_data", case_id=str(second), reason="同上"))
    assert erase_case_materials(node.app, store, second) == [shared_digest]
    assert store.get(shared_digest) is None
    assert chunk_rows(store) == 0
    assert store.key_ids_in_use() == {}
    # The erased case's material is not served through it, even if uploaded again.
    put(store, own)
    with pytest.raises(NotFound):
        store.check_case(node.app.get_case(first), own_digest)


def test_a_case_not_erased_keeps_its_files(node: InProcessNode, store: MaterialStore) -> None:
    data = scan(10)
    digest = put(store, data)
    case = node.submit(node.halls["v-room"], materials=[material("身份证", data)]).case_id
    assert erase_case_materials(node.app, store, case) == []
    assert store.get(digest) is not None


def test_chunks_of_an_interrupted_upload_are_swept(store: MaterialStore) -> None:
    data = scan(3 * CHUNK_BYTES)
    writer = store.writer(hashlib.sha256(data).hexdigest(), len(data), hall_holder("v-room"))
    writer.write(data[: 2 * CHUNK_BYTES])  # two chunks stored, then the process "dies"
    kept = put(store, scan(10))
    assert chunk_rows(store) == 3
    assert store.sweep(older_than_s=3600) == 0  # too young: could be an upload in progress
    assert store.sweep(older_than_s=0) == 2
    assert chunk_rows(store) == 1
    assert store.get(kept) is not None


def test_a_fetched_file_is_held_for_its_case(node: InProcessNode, store: MaterialStore) -> None:
    data = scan(10)
    case_id = node.submit(node.halls["v-room"], materials=[material("身份证", data)]).case_id
    digest = put(store, data, case_holder(case_id))
    assert store.check_case(node.app.get_case(case_id), digest).size == 10


def test_postgresql_stores_sealed_chunks_uncompressed(
    tmp_path: Path, fresh_postgres_db: str
) -> None:
    started = InProcessNode.start(
        Settings(data_dir=tmp_path / "pg", database_url=fresh_postgres_db)
    )
    try:
        store = build_material_store(started.settings, started.app)
        query = (
            "SELECT attstorage FROM pg_attribute WHERE attrelid = "
            "'tongban_material_chunks'::regclass AND attname = 'ciphertext'"
        )
        assert sql(store, query)[0]["attstorage"] == "e"
        store.create_tables()  # again (every start): still external, nothing else changes
        assert sql(store, query)[0]["attstorage"] == "e"
    finally:
        started.close()

"""tlog-tiles: paths, tile sets, entry bundles, export and the verifying reader."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.errors import TileError, TileProblem
from ledger.merkle import HASH_SIZE, MerkleTree, leaf_hash
from ledger.note import Signer
from ledger.tiles import (
    TileRef,
    bundles_for_size,
    decode_entry_bundle,
    encode_entry_bundle,
    encode_tile_index,
    entries_path,
    parse_tile_path,
    read_tiles,
    tile_path,
    tiles_for_size,
    verify_tiles,
    write_tiles,
)

ORIGIN = "tongban.example/node-1"
SIGNER = Signer.generate(ORIGIN)


def entries(n: int) -> list[bytes]:
    return [f"entry {i} ".encode() * (1 + i % 5) for i in range(n)]


def export(directory: Path, n: int) -> MerkleTree:
    data = entries(n)
    tree = MerkleTree(data)
    note = sign_checkpoint(Checkpoint(ORIGIN, n, tree.root()), SIGNER)
    write_tiles(directory, ORIGIN, data, note)
    return tree


def files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("index", "encoded"),
    [(0, "000"), (7, "007"), (999, "999"), (1000, "x001/000"), (1234067, "x001/x234/067")],
)
def test_tile_index_encoding(index: int, encoded: str) -> None:
    assert encode_tile_index(index) == encoded


def test_paths() -> None:
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(3, 5, 2) == "tile/3/005.p/2"
    assert entries_path(1, 112) == "tile/entries/001.p/112"
    for path in (
        "tile/0/000",
        "tile/3/x123/x456/078.p/2",
        "tile/entries/x001/000",
        "tile/63/000.p/255",
        "tile/entries/273.p/112",
    ):
        assert parse_tile_path(path).path == path
    assert parse_tile_path("tile/entries/273.p/112") == TileRef(0, 273, 112, True)


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/x000/001",  # leading zero group
        "tile/0/1",
        "tile/0/0001",
        "tile/64/000",
        "tile/01/000",
        "tile/-1/000",
        "tile/0/000.p/256",
        "tile/0/000.p/0",
        "tile/0/000.p/07",
        "tile/0/x001",
        "tile/0/001/x002",
        "tiles/0/000",
        "tile/data/000",
        "tile/0/00a",
    ],
)
def test_bad_paths(path: str) -> None:
    with pytest.raises(TileError):
        parse_tile_path(path)


def test_tile_sets_follow_the_spec_examples() -> None:
    # "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial level 0
    # tile of width 112, one full level 1 tile, one partial level 1 tile of width 17, and one
    # partial level 2 tile of width 1"
    refs = tiles_for_size(70_000)
    level0 = [r for r in refs if r.level == 0]
    assert len([r for r in level0 if not r.is_partial]) == 273
    assert [r.path for r in refs if r.is_partial] == [
        "tile/0/273.p/112",
        "tile/1/001.p/17",
        "tile/2/000.p/1",
    ]
    assert [r.path for r in refs if r.level == 1] == ["tile/1/000", "tile/1/001.p/17"]
    # "a tree of size 256 will be represented by a full level 0 tile and a partial level 1
    # tile of width 1"
    assert [r.path for r in tiles_for_size(256)] == ["tile/0/000", "tile/1/000.p/1"]
    assert tiles_for_size(0) == []
    assert [r.path for r in bundles_for_size(257)] == ["tile/entries/000", "tile/entries/001.p/1"]
    assert TileRef(1, 1, 17).leaf_range == (65536, 65536 + 17 * 256)


def test_entry_bundles() -> None:
    data = [b"", b"a", b"x" * 65535]
    encoded = encode_entry_bundle(data)
    assert encoded[:4] == b"\x00\x00\x00\x01"
    assert decode_entry_bundle(encoded, 3) == data
    with pytest.raises(TileError, match="at most 65535"):
        encode_entry_bundle([b"x" * 65536])
    with pytest.raises(TileError, match="holds 3 entries, expected 4"):
        decode_entry_bundle(encoded, 4)
    with pytest.raises(TileError, match="trailing bytes at offset 4 after the 2 expected"):
        decode_entry_bundle(b"\x00\x00" + b"\x00\x00" + b"\x07", 2)
    with pytest.raises(TileError, match="entry 1 \\(leaf 11\\) at offset 3 declares 9 bytes"):
        decode_entry_bundle(b"\x00\x01a\x00\x09ab", 2, first=10)
    with pytest.raises(TileError, match="truncated length prefix of entry 1"):
        decode_entry_bundle(b"\x00\x01a\x00", 2)


@pytest.mark.parametrize("size", [0, 1, 255, 256, 257, 1000])
def test_export_round_trip(tmp_path: Path, size: int) -> None:
    tree = export(tmp_path, size)
    log = read_tiles(tmp_path, SIGNER.verifier(), origin=ORIGIN)
    assert log.entries == tuple(entries(size))
    assert log.checkpoint.checkpoint.root == tree.root()
    expected = {"checkpoint"} | {r.path for r in tiles_for_size(size)}
    expected |= {r.path for r in bundles_for_size(size)}
    assert files(tmp_path) == expected


def test_export_of_257_leaves_layout(tmp_path: Path) -> None:
    tree = export(tmp_path, 257)
    assert files(tmp_path) == {
        "checkpoint",
        "tile/0/000",
        "tile/0/001.p/1",
        "tile/1/000.p/1",
        "tile/entries/000",
        "tile/entries/001.p/1",
    }
    level0 = (tmp_path / "tile/0/000").read_bytes()
    assert len(level0) == 256 * HASH_SIZE
    assert level0[:HASH_SIZE] == leaf_hash(entries(1)[0])
    # A level-1 hash is the root of the full level-0 tile below it: RFC subtree (level 8, 0).
    assert (tmp_path / "tile/1/000.p/1").read_bytes() == tree.subtree_hash(8, 0)
    assert (tmp_path / "tile/0/001.p/1").read_bytes() == tree.leaf_hash(256)


def test_large_export_with_two_upper_levels(tmp_path: Path) -> None:
    tree = export(tmp_path, 65_536 + 300)
    assert (tmp_path / "tile/2/000.p/1").read_bytes() == tree.subtree_hash(16, 0)
    assert (tmp_path / "tile/1/000").read_bytes()[32:64] == tree.subtree_hash(8, 1)
    progress: list[tuple[int, int]] = []
    audit = verify_tiles(tmp_path, SIGNER.verifier(), progress=lambda d, t: progress.append((d, t)))
    assert audit.ok
    assert progress[-1] == (65_836, 65_836)


def test_write_refuses_mismatched_input(tmp_path: Path) -> None:
    data = entries(10)
    note = sign_checkpoint(Checkpoint(ORIGIN, 10, MerkleTree(data).root()), SIGNER)
    with pytest.raises(TileError, match="tree size 10 but 9 leaves were given"):
        write_tiles(tmp_path / "a", ORIGIN, data[:9], note)
    with pytest.raises(TileError, match="more leaves than the checkpoint's tree size 10"):
        write_tiles(tmp_path / "b", ORIGIN, [*data, b"x"], note)
    with pytest.raises(TileError, match="is not the checkpoint root"):
        write_tiles(tmp_path / "c", ORIGIN, [*data[:9], b"changed"], note)
    assert not (tmp_path / "c" / "checkpoint").exists()  # an incomplete export has no checkpoint
    with pytest.raises(TileError, match="is not the export origin"):
        write_tiles(tmp_path / "d", "other.example/log", data, note)
    with pytest.raises(TileError, match="leaf 0 is 65536 bytes"):
        write_tiles(tmp_path / "e", ORIGIN, [b"x" * 65536], note)
    with pytest.raises(TileError, match="cannot export"):
        write_tiles(tmp_path / "f", ORIGIN, data, b"not a note")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pristine")
    export(directory, 70_000)
    return directory


@pytest.fixture
def copy(pristine: Path, tmp_path: Path) -> Path:
    target = tmp_path / "export"
    shutil.copytree(pristine, target)
    return target


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    path.write_bytes(bytes(data))


def problems(directory: Path) -> list[TileProblem]:
    audit = verify_tiles(directory, SIGNER.verifier())
    return list(audit.problems)


def test_pristine_export_verifies(pristine: Path) -> None:
    assert problems(pristine) == []


def test_altered_entry_is_named(copy: Path) -> None:
    flip(copy / "tile/entries/005", 10)
    (problem,) = problems(copy)
    assert problem.path == "tile/entries/005"
    assert problem.indices == (1280,)
    assert "entries for leaves 1280 were altered" in problem.message
    with pytest.raises(TileError, match="1 problem"):
        read_tiles(copy, SIGNER.verifier())


def test_altered_level0_tile_is_named(copy: Path) -> None:
    flip(copy / "tile/0/007", 40)
    (problem,) = problems(copy)
    assert problem.path == "tile/0/007"
    assert "was altered" in problem.message and "position 7 of tile/1/000" in problem.message
    assert problem.indices == tuple(range(1792, 2048))


def test_several_alterations_are_each_blamed_on_the_right_file(copy: Path) -> None:
    flip(copy / "tile/entries/005", 10)
    flip(copy / "tile/0/007", 40)
    flip(copy / "tile/entries/100", 3000)
    found = {p.path: p for p in problems(copy)}
    assert set(found) == {"tile/entries/005", "tile/0/007", "tile/entries/100"}
    assert found["tile/entries/100"].indices != ()


def test_altered_upper_tile_is_named(copy: Path) -> None:
    flip(copy / "tile/1/000", 100)
    found = problems(copy)
    assert [p.path for p in found] == ["tile/1/000"]
    assert "position 0 of tile/2/000.p/1" in found[0].message


def test_missing_and_truncated_files(copy: Path) -> None:
    (copy / "tile/entries/011").unlink()
    (copy / "tile/0/012").unlink()
    truncated = copy / "tile/entries/010"
    truncated.write_bytes(truncated.read_bytes()[:-3])
    short_tile = copy / "tile/0/020"
    short_tile.write_bytes(short_tile.read_bytes()[:-1])
    found = {p.path: p for p in problems(copy)}
    assert set(found) == {"tile/entries/011", "tile/0/012", "tile/entries/010", "tile/0/020"}
    assert found["tile/entries/011"].message.startswith("missing (entries for leaves 2816..3071)")
    assert found["tile/entries/011"].indices == tuple(range(2816, 3072))
    assert "declares" in found["tile/entries/010"].message
    assert found["tile/entries/010"].indices == (2815,)
    assert "is 8191 bytes, expected 8192 (256 hashes)" in found["tile/0/020"].message


def test_extra_entry_in_partial_bundle(copy: Path) -> None:
    last = copy / "tile/entries/273.p/112"
    last.write_bytes(last.read_bytes() + b"\x00\x03abc")
    (problem,) = problems(copy)
    assert problem.path == "tile/entries/273.p/112"
    assert "trailing" in problem.message


def test_altered_partial_tiles_fall_back_to_the_entries(copy: Path) -> None:
    flip(copy / "tile/0/273.p/112", 5)
    flip(copy / "tile/2/000.p/1", 5)
    found = problems(copy)
    assert sorted(p.path for p in found) == ["tile/0/273.p/112", "tile/2/000.p/1"]
    assert all("recomputed from the entries" in p.message for p in found)
    assert next(p for p in found if p.path == "tile/0/273.p/112").indices == (69888,)


def test_missing_partial_tile(copy: Path) -> None:
    (copy / "tile/1/001.p/17").unlink()
    found = problems(copy)
    assert [p.path for p in found] == ["tile/1/001.p/17"]
    assert found[0].message.startswith("missing")


def test_entries_and_partial_tile_both_altered(copy: Path) -> None:
    flip(copy / "tile/0/273.p/112", 5)
    flip(copy / "tile/entries/003", 7)
    paths = {p.path for p in problems(copy)}
    assert "checkpoint" in paths  # nothing reproduces the signed root any more
    assert "tile/0/273.p/112" in paths


def test_checkpoint_problems(copy: Path) -> None:
    with pytest.raises(TileError, match="checkpoint: does not verify"):
        verify_tiles(copy, Signer.generate(ORIGIN).verifier())
    with pytest.raises(TileError, match="is not the expected origin"):
        verify_tiles(copy, SIGNER.verifier(), origin="other.example/log")
    note = copy / "checkpoint"
    note.write_bytes(note.read_bytes().replace(b"\n70000\n", b"\n69999\n"))
    with pytest.raises(TileError, match="does not verify"):
        verify_tiles(copy, SIGNER.verifier())
    note.unlink()
    with pytest.raises(TileError, match="checkpoint: missing"):
        verify_tiles(copy, SIGNER.verifier())


def test_on_entry_streams_every_entry_in_order(pristine: Path) -> None:
    seen: list[int] = []
    audit = verify_tiles(pristine, SIGNER.verifier(), on_entry=lambda i, _e: seen.append(i))
    assert audit.ok
    assert seen == list(range(70_000))

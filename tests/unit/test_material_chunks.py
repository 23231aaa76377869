"""Cutting, sealing and checking material files (hub.materials.chunks): no I/O.

Attack tests first: a sealed chunk that is altered, moved to another place, moved to another
file, or a file truncated or extended, never opens; bytes that do not match the declared size
or digest are refused naming the field.
"""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.errors import InvalidInput
from hub.materials import chunks
from hub.materials.chunks import (
    CHUNK_BYTES,
    ChunkSeal,
    Rechunker,
    check_digest,
    check_size,
    chunk_count,
)
from hub.materials.fetch import FetchReport, MaterialProblem, WantedMaterial

# --- the attacks ---------------------------------------------------------------------------------


def test_an_altered_byte_does_not_open() -> None:
    seal = ChunkSeal.fresh(3 * CHUNK_BYTES)
    stored = bytearray(seal.seal(1, b"scan of an ID card"))
    stored[20] ^= 0x01
    assert seal.open(1, bytes(stored)) is None


def test_a_chunk_moved_to_another_place_does_not_open() -> None:
    seal = ChunkSeal.fresh(3 * CHUNK_BYTES)
    stored = seal.seal(0, b"page one")
    assert seal.open(0, stored) == b"page one"
    assert seal.open(2, stored) is None


def test_a_chunk_of_another_file_does_not_open() -> None:
    mine = ChunkSeal.fresh(CHUNK_BYTES)
    # Same key (an attacker cannot choose it, but even then): another blob id refuses it.
    theirs = ChunkSeal(mine.key, os.urandom(16), mine.count)
    assert theirs.open(0, mine.seal(0, b"x")) is None


def test_a_file_cut_short_or_extended_does_not_open() -> None:
    seal = ChunkSeal.fresh(3 * CHUNK_BYTES)
    stored = seal.seal(1, b"middle")
    for count in (2, 4):
        assert ChunkSeal(seal.key, seal.blob_id, count).open(1, stored) is None


def test_a_wrong_key_does_not_open() -> None:
    seal = ChunkSeal.fresh(10)
    other = ChunkSeal(os.urandom(32), seal.blob_id, seal.count)
    assert other.open(0, seal.seal(0, b"x")) is None
    assert seal.open(0, b"short") is None


def test_more_bytes_than_declared_are_refused_at_once() -> None:
    chunker = Rechunker(5)
    chunker.feed(b"abc")
    with pytest.raises(InvalidInput) as refused:
        chunker.feed(b"def")
    assert refused.value.field == "data"


def test_fewer_bytes_than_declared_are_refused() -> None:
    chunker = Rechunker(5)
    chunker.feed(b"abc")
    with pytest.raises(InvalidInput) as refused:
        chunker.close(hashlib.sha256(b"abc").hexdigest())
    assert refused.value.field == "size"


def test_bytes_of_another_digest_are_refused() -> None:
    chunker = Rechunker(3)
    chunker.feed(b"abc")
    declared = hashlib.sha256(b"abd").hexdigest()
    with pytest.raises(InvalidInput, match=hashlib.sha256(b"abc").hexdigest()) as refused:
        chunker.close(declared)
    assert refused.value.field == "sha256"


@pytest.mark.parametrize("digest", ["", "ABC", "g" * 64, "A" * 64, "0" * 63, "0" * 65, None, 12])
def test_malformed_digests_are_refused(digest: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_digest(digest, "header.sha256")  # type: ignore[arg-type]
    assert refused.value.field == "header.sha256"


@pytest.mark.parametrize("size", [0, -1, 11, True, 1.5])
def test_sizes_out_of_range_are_refused(size: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_size(size, 10)  # type: ignore[arg-type]
    assert refused.value.field == "size"


def test_the_limit_names_its_setting() -> None:
    with pytest.raises(InvalidInput, match="TONGBAN_MAX_MATERIAL_BYTES"):
        check_size(11, 10)


# --- what works ------------------------------------------------------------------------------------


def test_chunk_counts() -> None:
    assert chunk_count(1) == 1
    assert chunk_count(CHUNK_BYTES) == 1
    assert chunk_count(CHUNK_BYTES + 1) == 2
    assert chunk_count(200 * CHUNK_BYTES) == 200


def test_sealing_round_trip_and_fresh_nonces() -> None:
    seal = ChunkSeal.fresh(CHUNK_BYTES + 1)
    first, second = seal.seal(0, b"same"), seal.seal(0, b"same")
    assert first != second  # a fresh nonce each time
    assert seal.open(0, first) == seal.open(0, second) == b"same"
    assert b"same" not in first


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=200), cuts=st.lists(st.integers(0, 200), max_size=12))
def test_rechunking_keeps_every_byte_in_order(data: bytes, cuts: list[int]) -> None:
    # Small chunks (7 bytes) so that the property covers many boundaries quickly.
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(chunks, "CHUNK_BYTES", 7)
        chunker = Rechunker(len(data))
        pieces, at = [], 0
        for cut in sorted(min(cut, len(data)) for cut in cuts):
            pieces.append(data[at:cut])
            at = cut
        pieces.append(data[at:])
        out: list[bytes] = []
        for piece in pieces:
            out += chunker.feed(piece)
        out.append(chunker.close(hashlib.sha256(data).hexdigest()))
        out = [chunk for chunk in out if chunk]
        assert b"".join(out) == data
        assert all(len(chunk) == 7 for chunk in out[:-1])
        assert len(out) == chunks.chunk_count(len(data))


def test_a_report_names_each_problem() -> None:
    report = FetchReport(
        case_id=uuid.uuid4(),
        peer="43",
        fetched=("a" * 64,),
        missing=(MaterialProblem("户口簿", "b" * 64, "not held"),),
        altered=(MaterialProblem("身份证", "c" * 64, "the bytes hash to d…"),),
    )
    assert not report.complete
    assert report.describe().splitlines() == [
        f"missing: 户口簿 ({'b' * 12}…): not held",
        f"altered: 身份证 ({'c' * 12}…): the bytes hash to d…",
    ]
    assert FetchReport(case_id=report.case_id, peer="43").complete


def test_wanted_materials_from_tuples_and_objects() -> None:
    assert WantedMaterial.of(("身份证", "a" * 64, 3)) == WantedMaterial("身份证", "a" * 64, 3)
    assert WantedMaterial.of(WantedMaterial("x", "b" * 64, 1)).sha256 == "b" * 64

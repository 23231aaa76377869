"""RFC 9162 hashing, compact ranges and proofs: public vectors, the RFC tree, properties, errors."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import ProofError
from ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    LeafHashReader,
    MerkleTree,
    consistency_proof,
    consistency_proof_size,
    inclusion_proof,
    inclusion_proof_size,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).parent / "vectors"

RFC_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
RFC_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _load(kind: str) -> list[tuple[str, dict[str, Any]]]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [(str(f.relative_to(VECTORS)), json.loads(f.read_text())) for f in files]


INCLUSION = _load("inclusion")
CONSISTENCY = _load("consistency")


def _mth(leaves: list[bytes]) -> bytes:
    """The RFC 9162 §2.1.1 definition, recursively, as an independent reference."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def test_vector_folders_are_complete() -> None:
    assert (VECTORS / "README.md").is_file()
    # The copy is unchanged from upstream: 98 inclusion and 98 consistency cases.
    assert len(INCLUSION) == 98
    assert len(CONSISTENCY) == 98
    assert any(not v["wantErr"] for _, v in INCLUSION)
    assert any(v["wantErr"] for _, v in CONSISTENCY)


@pytest.mark.parametrize(("name", "vector"), INCLUSION, ids=[n for n, _ in INCLUSION])
def test_inclusion_vector(name: str, vector: dict[str, Any]) -> None:
    def run() -> None:
        verify_inclusion(
            _b64(vector["leafHash"]),
            vector["leafIdx"],
            vector["treeSize"],
            [_b64(p) for p in vector["proof"] or []],
            _b64(vector["root"]),
        )

    if vector["wantErr"]:
        with pytest.raises(ProofError):
            run()
    else:
        run()


@pytest.mark.parametrize(("name", "vector"), CONSISTENCY, ids=[n for n, _ in CONSISTENCY])
def test_consistency_vector(name: str, vector: dict[str, Any]) -> None:
    def run() -> None:
        verify_consistency(
            vector["size1"],
            vector["size2"],
            [_b64(p) for p in vector["proof"] or []],
            _b64(vector["root1"]),
            _b64(vector["root2"]),
        )

    if vector["wantErr"]:
        with pytest.raises(ProofError):
            run()
    else:
        run()


def test_rfc_tree_roots_match_readme() -> None:
    readme = (VECTORS / "README.md").read_text()
    tree = MerkleTree()
    assert tree.root().hex() == RFC_ROOTS[0]
    for n, data in enumerate(RFC_LEAVES, start=1):
        tree.append(data)
        assert tree.root().hex() == RFC_ROOTS[n]
        assert f"N={n}: {RFC_ROOTS[n]}" in readme
        assert root_from_leaf_hashes([leaf_hash(d) for d in RFC_LEAVES[:n]]).hex() == RFC_ROOTS[n]
        assert _mth(RFC_LEAVES[:n]).hex() == RFC_ROOTS[n]
    for n in range(9):
        assert tree.root(n).hex() == RFC_ROOTS[n]


def test_generated_proofs_equal_the_happy_path_vectors() -> None:
    """Our proofs for the RFC tree are byte-identical to transparency-dev's."""
    tree = MerkleTree(RFC_LEAVES)
    checked = 0
    for _, v in INCLUSION:
        size = v["treeSize"]
        if v["wantErr"] or not 1 <= size <= 8 or _b64(v["root"]) != tree.root(size):
            continue
        assert tree.inclusion_proof(v["leafIdx"], size) == [_b64(p) for p in v["proof"] or []]
        checked += 1
    for _, v in CONSISTENCY:
        s1, s2 = v["size1"], v["size2"]
        if v["wantErr"] or not 1 <= s1 < s2 <= 8 or _b64(v["root2"]) != tree.root(s2):
            continue
        assert tree.consistency_proof(s1, s2) == [_b64(p) for p in v["proof"] or []]
        checked += 1
    assert checked >= 8


def test_hashing_primitives() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = leaf_hash(b"l"), leaf_hash(b"r")
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    with pytest.raises(ProofError, match="left child hash is 31 bytes, expected 32"):
        node_hash(left[:31], right)


@pytest.mark.parametrize("size", list(range(0, 70)))
def test_tree_matches_rfc_definition(size: int) -> None:
    leaves = [f"leaf {i}".encode() for i in range(size)]
    tree = MerkleTree(leaves)
    assert tree.root() == _mth(leaves)
    reader = LeafHashReader([leaf_hash(x) for x in leaves])
    assert tree_root(size, reader) == _mth(leaves)
    for index in range(size):
        proof = tree.inclusion_proof(index)
        assert proof == inclusion_proof(index, size, reader)
        assert len(proof) == inclusion_proof_size(index, size)
        verify_inclusion(leaf_hash(leaves[index]), index, size, proof, tree.root())
    for old in range(1, size + 1):
        proof = tree.consistency_proof(old)
        assert proof == consistency_proof(old, size, reader)
        assert len(proof) == consistency_proof_size(old, size)
        verify_consistency(old, size, proof, tree.root(old), tree.root())


class CountingReader:
    """A HashReader that fabricates hashes and counts reads (a stand-in for stored nodes)."""

    def __init__(self) -> None:
        self.reads = 0

    def subtree_hash(self, level: int, index: int) -> bytes:
        self.reads += 1
        return hashlib.sha256(f"{level}/{index}".encode()).digest()


@pytest.mark.parametrize("size", [1, 1000, 100_000, 1_000_000, 2**40 + 12345])
def test_generation_reads_are_logarithmic(size: int) -> None:
    bound = 2 * size.bit_length() + 2
    for index in {0, size // 3, size - 1}:
        reader = CountingReader()
        proof = inclusion_proof(index, size, reader)
        assert len(proof) <= size.bit_length()
        assert reader.reads <= bound
    for old in {1, size // 2 or 1, size - 1 or 1}:
        reader = CountingReader()
        consistency_proof(old, size, reader)
        assert reader.reads <= bound


leaf_lists = st.lists(st.binary(max_size=12), min_size=1, max_size=150).map(
    lambda xs: [i.to_bytes(2, "big") + x for i, x in enumerate(xs)]
)


def _flip(data: bytes, position: int) -> bytes:
    out = bytearray(data)
    out[position % len(out)] ^= 1 << (position % 8)
    return bytes(out)


@settings(max_examples=150, deadline=None)
@given(leaves=leaf_lists, data=st.data())
def test_property_consistency_verifies_and_any_flip_fails(
    leaves: list[bytes], data: st.DataObject
) -> None:
    tree = MerkleTree(leaves)
    size2 = data.draw(st.integers(1, len(leaves)), label="size2")
    size1 = data.draw(st.integers(1, size2), label="size1")
    proof = tree.consistency_proof(size1, size2)
    root1, root2 = tree.root(size1), tree.root(size2)
    verify_consistency(size1, size2, proof, root1, root2)
    position = data.draw(st.integers(0, 10_000), label="position")
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1), label="which")
        bad = list(proof)
        bad[which] = _flip(bad[which], position)
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, bad, root1, root2)
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, proof[:-1], root1, root2)
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, _flip(root1, position), root2)
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, root1, _flip(root2, position))


@settings(max_examples=150, deadline=None)
@given(leaves=leaf_lists, data=st.data())
def test_property_inclusion_verifies_and_any_flip_fails(
    leaves: list[bytes], data: st.DataObject
) -> None:
    tree = MerkleTree(leaves)
    size = data.draw(st.integers(1, len(leaves)), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = tree.inclusion_proof(index, size)
    root = tree.root(size)
    h = leaf_hash(leaves[index])
    verify_inclusion(h, index, size, proof, root)
    position = data.draw(st.integers(0, 10_000), label="position")
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1), label="which")
        bad = list(proof)
        bad[which] = _flip(bad[which], position)
        with pytest.raises(ProofError):
            verify_inclusion(h, index, size, bad, root)
    with pytest.raises(ProofError):
        verify_inclusion(_flip(h, position), index, size, proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(h, index, size, proof, _flip(root, position))
    other = data.draw(st.integers(0, size - 1), label="other")
    if other != index:
        with pytest.raises(ProofError):
            verify_inclusion(h, other, size, proof, root)


@settings(max_examples=60, deadline=None)
@given(leaves=st.lists(st.binary(max_size=8), max_size=300))
def test_property_compact_range_root_equals_tree_root_at_every_size(leaves: list[bytes]) -> None:
    compact = CompactRange()
    tree = MerkleTree()
    for data in leaves:
        assert compact.root() == tree.root()
        created = compact.append(leaf_hash(data))
        tree.append(data)
        assert len(compact.hashes) == compact.size.bit_count()
        for node in created:  # every node a storage layer would persist is the true subtree hash
            assert tree.subtree_hash(node.level, node.index) == node.hash
        restored = CompactRange.from_bytes(compact.to_bytes())
        assert restored == compact
        assert restored.root() == tree.root()
    assert compact.root() == _mth(leaves)
    assert CompactRange.from_reader(tree.size, tree) == compact


def test_compact_range_resume_and_subtrees() -> None:
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(300)]
    first = CompactRange()
    first.extend(leaves[:123])
    resumed = CompactRange.from_bytes(first.to_bytes())
    resumed.extend(leaves[123:])
    assert resumed.root() == root_from_leaf_hashes(leaves)
    by_subtree = CompactRange()
    by_subtree.append_subtree(8, root_from_leaf_hashes(leaves[:256]))
    by_subtree.extend(leaves[256:])
    assert by_subtree.root() == resumed.root()
    with pytest.raises(ProofError, match="not aligned"):
        first.append_subtree(2, leaves[0])
    copy = first.copy()
    copy.append(leaves[0])
    assert copy.size == first.size + 1
    assert repr(first).startswith("CompactRange(size=123")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "expected at least 9"),
        (b"\x02" + (0).to_bytes(8, "big"), "version 2"),
        (b"\x01" + (3).to_bytes(8, "big") + b"\x00" * 32, "must encode to 73 bytes, got 41"),
        (b"\x01" + (0).to_bytes(8, "big") + b"\x00", "must encode to 9 bytes, got 10"),
    ],
)
def test_compact_range_decoding_is_strict(data: bytes, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        CompactRange.from_bytes(data)


def test_compact_range_constructor_checks() -> None:
    with pytest.raises(ProofError, match="needs 2 hashes, got 1"):
        CompactRange(3, [EMPTY_ROOT])
    with pytest.raises(ProofError, match="compact range hash 0 is 3 bytes"):
        CompactRange(1, [b"abc"])
    with pytest.raises(ProofError, match="outside the uint64 range"):
        CompactRange(-1)
    with pytest.raises(ProofError, match="leaf hash 0 is 0 bytes"):
        CompactRange().append(b"")


def test_precise_errors() -> None:
    tree = MerkleTree([b"a", b"b", b"c", b"d", b"e"])
    proof = tree.inclusion_proof(2)
    root = tree.root()
    h = leaf_hash(b"c")
    with pytest.raises(ProofError, match="must have 3 hashes, got 2"):
        verify_inclusion(h, 2, 5, proof[:2], root)
    with pytest.raises(ProofError, match="must have 3 hashes, got 4"):
        verify_inclusion(h, 2, 5, [*proof, proof[0]], root)
    with pytest.raises(ProofError, match="inclusion proof hash 1 is 31 bytes, expected 32"):
        verify_inclusion(h, 2, 5, [proof[0], proof[1][:31], proof[2]], root)
    with pytest.raises(ProofError, match="root hash is 33 bytes"):
        verify_inclusion(h, 2, 5, proof, root + b"x")
    with pytest.raises(ProofError, match="leaf hash is 0 bytes"):
        verify_inclusion(b"", 2, 5, proof, root)
    with pytest.raises(ProofError, match="tree of size 0 has no leaves"):
        verify_inclusion(h, 0, 0, [], EMPTY_ROOT)
    with pytest.raises(ProofError, match="leaf index 5 is out of range for tree size 5"):
        verify_inclusion(h, 5, 5, proof, root)
    with pytest.raises(ProofError, match=f"yields root .* expected {root.hex()}"):
        verify_inclusion(leaf_hash(b"x"), 2, 5, proof, root)
    with pytest.raises(ProofError, match="leaf index -1 is outside the uint64 range"):
        verify_inclusion(h, -1, 5, proof, root)
    with pytest.raises(ProofError, match="must be an integer"):
        verify_inclusion(h, True, 5, proof, root)

    cproof = tree.consistency_proof(3)
    r3 = tree.root(3)
    with pytest.raises(ProofError, match="size 0 proves nothing"):
        verify_consistency(0, 5, [], EMPTY_ROOT, root)
    with pytest.raises(ProofError, match="size1 5 is larger than size2 3"):
        verify_consistency(5, 3, [], root, r3)
    with pytest.raises(ProofError, match="from size 3 to size 5 must have 4 hashes, got 2"):
        verify_consistency(3, 5, cproof[:2], r3, root)
    with pytest.raises(ProofError, match="equal sizes 5 must be empty, got 1"):
        verify_consistency(5, 5, [root], root, root)
    with pytest.raises(ProofError, match="two different roots for the same tree size 3"):
        verify_consistency(3, 3, [], r3, root)
    with pytest.raises(ProofError, match="root1 is 0 bytes"):
        verify_consistency(3, 5, cproof, b"", root)
    with pytest.raises(ProofError, match="yields old root"):
        verify_consistency(3, 5, cproof, tree.root(2), root)


def test_generation_errors() -> None:
    tree = MerkleTree([b"a", b"b", b"c"])
    with pytest.raises(ProofError, match="out of range for tree size 3"):
        tree.inclusion_proof(3)
    with pytest.raises(ProofError, match="tree size 4 is larger than the tree"):
        tree.inclusion_proof(0, 4)
    with pytest.raises(ProofError, match="size 0 proves nothing"):
        tree.consistency_proof(0)
    assert tree.consistency_proof(3) == []
    with pytest.raises(ProofError, match=r"subtree \(level 2, index 0\) is not complete"):
        tree.subtree_hash(2, 0)
    with pytest.raises(ProofError, match=r"covers leaves \[0, 4\) but only 3 leaves"):
        LeafHashReader([leaf_hash(x) for x in (b"a", b"b", b"c")]).subtree_hash(2, 0)

    class BadReader:
        def subtree_hash(self, level: int, index: int) -> bytes:
            return b"short"

    with pytest.raises(ProofError, match=r"hash reader result for subtree .* is 5 bytes"):
        inclusion_proof(0, 2, BadReader())
    assert root_from_inclusion_proof(leaf_hash(b"a"), 0, 1, []) == leaf_hash(b"a")

"""RFC 9162 Merkle tree hashing, an append-only compact range, and inclusion/consistency proofs.

This is the Merkle math of the ledger, written by hand on top of :mod:`hashlib` SHA-256: no
maintained Python library implements RFC 9162 proofs together with C2SP notes and tiles, and the
math is small enough to check line by line against the RFC (section numbers are cited below) and
against the public transparency-dev/merkle test vectors that the unit tests replay.

Terms used throughout:

* A *leaf hash* is ``SHA-256(0x00 || data)``; an interior *node hash* is
  ``SHA-256(0x01 || left || right)``; the root of the empty tree is ``SHA-256("")``.
* A *subtree* ``(level, index)`` is the perfect (complete) subtree of ``2**level`` leaves covering
  leaf indices ``[index * 2**level, (index + 1) * 2**level)``. Storage that keeps interior nodes can
  serve any of them in O(1) through the :class:`HashReader` protocol, which makes proof generation
  O(log n) node reads.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ledger.errors import ProofError

HASH_SIZE = 32
"""Size in bytes of every hash in the tree (SHA-256)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root hash of the empty tree (RFC 9162 §2.1.1: MTH({}) = HASH())."""

MAX_TREE_SIZE = (1 << 64) - 1
"""Tree sizes and indices are uint64 in every wire format the ledger speaks."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 leaf hash ``SHA-256(0x00 || data)``."""
    return _sha256(_LEAF_PREFIX + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior node hash ``SHA-256(0x01 || left || right)``.

    Both children must be 32-byte hashes; anything else is a caller bug that would silently produce
    a root nobody else can reproduce, so it raises :class:`ProofError`.
    """
    _check_hash(left, "left child hash")
    _check_hash(right, "right child hash")
    return _sha256(_NODE_PREFIX + left + right).digest()


def _node(left: bytes, right: bytes) -> bytes:
    # Unchecked variant for inner loops whose inputs were validated on the way in.
    return _sha256(_NODE_PREFIX + left + right).digest()


def _check_hash(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ProofError(f"{what} must be bytes, got {type(value).__name__}")
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, expected {HASH_SIZE}")
    return bytes(value)


def _check_size(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProofError(f"{what} must be an integer, got {type(value).__name__}")
    if value < 0 or value > MAX_TREE_SIZE:
        raise ProofError(f"{what} {value} is outside the uint64 range")
    return value


def _largest_power_of_two_below(n: int) -> int:
    # RFC 9162 §2.1.1: "k be the largest power of two smaller than n" (n >= 2).
    return 1 << ((n - 1).bit_length() - 1)


@dataclass(frozen=True, slots=True)
class Node:
    """A perfect subtree's coordinates and hash, as produced by :meth:`CompactRange.append`."""

    level: int
    index: int
    hash: bytes


class HashReader(Protocol):
    """Source of subtree hashes for proof generation.

    ``subtree_hash(level, index)`` returns the hash of the perfect subtree of ``2**level`` leaves
    starting at leaf ``index * 2**level``. Level 0 is the leaf hashes themselves. Storage that
    persists the nodes returned by :meth:`CompactRange.append` answers every call with one lookup.
    """

    def subtree_hash(self, level: int, index: int) -> bytes:
        """Return the hash of the perfect subtree ``(level, index)``."""
        ...


class LeafHashReader:
    """A :class:`HashReader` over a sequence of leaf hashes only (interior nodes recomputed).

    Each interior read costs O(2**level) hashing, so this suits tests, tools and small trees; a
    database-backed log should store interior nodes and implement :class:`HashReader` directly.
    """

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        """Wrap ``leaf_hashes`` (not copied, so the sequence may keep growing)."""
        self._leaves = leaf_hashes

    def subtree_hash(self, level: int, index: int) -> bytes:
        """Return the hash of subtree ``(level, index)``, recomputed from the leaf hashes."""
        start, end = index << level, (index + 1) << level
        if level < 0 or index < 0 or end > len(self._leaves):
            raise ProofError(
                f"subtree (level {level}, index {index}) covers leaves [{start}, {end}) "
                f"but only {len(self._leaves)} leaves are available"
            )
        if level == 0:
            return _check_hash(self._leaves[index], f"leaf hash {index}")
        return root_from_leaf_hashes(self._leaves[start:end])


def root_from_leaf_hashes(leaf_hashes: Iterable[bytes]) -> bytes:
    """Return the Merkle tree hash (RFC 9162 §2.1.1) of a list of leaf hashes.

    Runs in O(n) time and O(log n) memory through a :class:`CompactRange`.
    """
    compact = CompactRange()
    for h in leaf_hashes:
        compact.append(h)
    return compact.root()


def _read(reader: HashReader, level: int, index: int) -> bytes:
    value = reader.subtree_hash(level, index)
    return _check_hash(value, f"hash reader result for subtree (level {level}, index {index})")


def _range_nodes(start: int, end: int) -> list[tuple[int, int]]:
    """Split leaves ``[start, end)`` into maximal aligned perfect subtrees, left to right."""
    nodes: list[tuple[int, int]] = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start:
            # An aligned subtree starting at `start` can be no larger than start's lowest set bit.
            level = min(level, (start & -start).bit_length() - 1)
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def _range_root(reader: HashReader, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for the ranges RFC 9162 proofs use.

    Every range a proof needs starts at a multiple of a power of two at least as large as the
    range, so its perfect subtrees come largest first and fold right to left exactly as the MTH
    recursion does. O(log n) reads.
    """
    nodes = _range_nodes(start, end)
    level, index = nodes[-1]
    result = _read(reader, level, index)
    for level, index in reversed(nodes[:-1]):
        result = _node(_read(reader, level, index), result)
    return result


def tree_root(size: int, reader: HashReader) -> bytes:
    """Return the root of the tree of the first ``size`` leaves, in O(log size) reads."""
    _check_size(size, "tree size")
    if size == 0:
        return EMPTY_ROOT
    return _range_root(reader, 0, size)


def _inclusion_plan(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTHs form PATH(index, D[0:size]) (RFC 9162 §2.1.3.1), leaf to root."""
    siblings: list[tuple[int, int]] = []
    m, start, n = index, 0, size
    while n > 1:
        k = _largest_power_of_two_below(n)
        if m < k:
            siblings.append((start + k, start + n))
            n = k
        else:
            siblings.append((start, start + k))
            m, start, n = m - k, start + k, n - k
    siblings.reverse()
    return siblings


def _consistency_plan(size1: int, size2: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTHs form PROOF(size1, D[0:size2]) (RFC 9162 §2.1.4.1), in order."""
    siblings: list[tuple[int, int]] = []
    m, start, n, whole = size1, 0, size2, True
    while m != n:
        k = _largest_power_of_two_below(n)
        if m <= k:
            siblings.append((start + k, start + n))
            n = k
        else:
            siblings.append((start, start + k))
            m, start, n, whole = m - k, start + k, n - k, False
    # SUBPROOF(m, D[m], true) is empty: the verifier already knows the old root. Otherwise the
    # subtree D[start:start+m] that ends at size1 opens the proof.
    head = [] if whole else [(start, start + n)]
    siblings.reverse()
    return head + siblings


def inclusion_proof_size(index: int, size: int) -> int:
    """Return the number of hashes in the inclusion proof of ``index`` in a tree of ``size``."""
    _check_inclusion_args(index, size)
    return len(_inclusion_plan(index, size))


def consistency_proof_size(size1: int, size2: int) -> int:
    """Return the number of hashes in the consistency proof from ``size1`` to ``size2``."""
    _check_consistency_args(size1, size2)
    return 0 if size1 == size2 else len(_consistency_plan(size1, size2))


def _check_inclusion_args(index: int, size: int) -> None:
    _check_size(index, "leaf index")
    _check_size(size, "tree size")
    if size == 0:
        raise ProofError(f"a tree of size 0 has no leaves, so leaf index {index} cannot be in it")
    if index >= size:
        raise ProofError(f"leaf index {index} is out of range for tree size {size}")


def _check_consistency_args(size1: int, size2: int) -> None:
    _check_size(size1, "size1")
    _check_size(size2, "size2")
    if size1 == 0:
        # Every tree extends the empty tree; a "proof" from size 0 proves nothing, and accepting
        # one would let a caller mistake "no previous checkpoint" for a verified history.
        raise ProofError("consistency from tree size 0 proves nothing; size1 must be at least 1")
    if size1 > size2:
        raise ProofError(f"size1 {size1} is larger than size2 {size2}")


def inclusion_proof(index: int, size: int, reader: HashReader) -> list[bytes]:
    """Generate the RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

    Hashes come from ``reader``; at most one of them spans a non-perfect range, so generation costs
    O(log size) reads when the reader serves stored interior nodes.
    """
    _check_inclusion_args(index, size)
    return [_range_root(reader, a, b) for a, b in _inclusion_plan(index, size)]


def consistency_proof(size1: int, size2: int, reader: HashReader) -> list[bytes]:
    """Generate the RFC 9162 consistency proof between tree sizes ``size1`` and ``size2``.

    ``size1`` must be at least 1 (see :func:`verify_consistency`); equal sizes give ``[]``.
    """
    _check_consistency_args(size1, size2)
    if size1 == size2:
        return []
    return [_range_root(reader, a, b) for a, b in _consistency_plan(size1, size2)]


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """Return the root implied by an inclusion proof (RFC 9162 §2.1.3.2 steps 1-4).

    Raises :class:`ProofError` when the proof cannot be for ``index`` in a tree of ``size`` (wrong
    number of hashes, hashes of the wrong length, index out of range).
    """
    _check_inclusion_args(index, size)
    r = _check_hash(leaf_hash, "leaf hash")
    path = [_check_hash(p, f"inclusion proof hash {i}") for i, p in enumerate(proof)]
    expected = len(_inclusion_plan(index, size))
    if len(path) != expected:
        raise ProofError(
            f"inclusion proof for leaf index {index} in tree size {size} must have {expected} "
            f"hashes, got {len(path)}"
        )
    fn, sn = index, size - 1
    for p in path:
        if sn == 0:  # unreachable after the length check, kept as the RFC's own guard
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # likewise unreachable after the length check
        raise ProofError("inclusion proof is shorter than the path to the root")
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Verify that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    Follows RFC 9162 §2.1.3.2. Returns ``None`` on success and raises :class:`ProofError` naming
    the reason otherwise; there is no boolean form, so a failure cannot be silently ignored.
    """
    expected_root = _check_hash(root, "root hash")
    calculated = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if not hmac.compare_digest(calculated, expected_root):
        raise ProofError(
            f"inclusion proof for leaf index {index} in tree size {size} yields root "
            f"{calculated.hex()}, expected {expected_root.hex()}"
        )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Verify that the tree of ``size2``/``root2`` extends the tree of ``size1``/``root1``.

    Follows RFC 9162 §2.1.4.2 with the edge rules of the transparency-dev/merkle vectors:

    * ``size1 == 0`` is always rejected (it proves nothing, even from 0 to 0);
    * ``size1 > size2`` is rejected;
    * ``size1 == size2`` needs an empty proof and ``root1 == root2`` (nothing else is checked: with
      equal sizes there is no computation, only the comparison);
    * otherwise both roots and every proof hash must be exactly 32 bytes and the proof must have
      exactly the number of hashes the two sizes require.

    Returns ``None`` on success and raises :class:`ProofError` naming the reason otherwise.
    """
    _check_consistency_args(size1, size2)
    if size1 == size2:
        if len(proof) != 0:
            raise ProofError(
                f"consistency proof between equal sizes {size1} must be empty, "
                f"got {len(proof)} hashes"
            )
        if not isinstance(root1, bytes) or not isinstance(root2, bytes):
            raise ProofError("roots must be bytes")
        if not hmac.compare_digest(root1, root2):
            raise ProofError(
                f"two different roots for the same tree size {size1}: "
                f"{root1.hex()} != {root2.hex()}"
            )
        return
    first = _check_hash(root1, "root1")
    second = _check_hash(root2, "root2")
    path = [_check_hash(p, f"consistency proof hash {i}") for i, p in enumerate(proof)]
    expected = len(_consistency_plan(size1, size2))
    if len(path) != expected:
        raise ProofError(
            f"consistency proof from size {size1} to size {size2} must have {expected} hashes, "
            f"got {len(path)}"
        )
    # RFC 9162 §2.1.4.2 step 2: when size1 is a power of two the old root is the first node.
    if size1 & (size1 - 1) == 0:
        path.insert(0, first)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:  # unreachable after the length check, kept as the RFC's own guard
            raise ProofError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr = _node(c, fr)
            sr = _node(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than the path to the root")
    if not hmac.compare_digest(fr, first):
        raise ProofError(
            f"consistency proof from size {size1} to {size2} yields old root {fr.hex()}, "
            f"expected {first.hex()}"
        )
    if not hmac.compare_digest(sr, second):
        raise ProofError(
            f"consistency proof from size {size1} to {size2} yields new root {sr.hex()}, "
            f"expected {second.hex()}"
        )


class CompactRange:
    """The right edge of an append-only Merkle tree: O(log n) hashes, enough to append and root.

    A tree of ``size`` leaves decomposes into one perfect subtree per set bit of ``size``, largest
    first; the compact range keeps exactly those hashes. It is what a log persists between
    batches to keep appending without reading old leaves, and what it signs checkpoints from.
    """

    __slots__ = ("_hashes", "_size")

    _FORMAT_VERSION = 1

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        """Restore a range of ``size`` leaves from its subtree hashes (largest subtree first)."""
        _check_size(size, "compact range size")
        if len(hashes) != size.bit_count():
            raise ProofError(
                f"a compact range of size {size} needs {size.bit_count()} hashes, got {len(hashes)}"
            )
        self._size = size
        self._hashes = [_check_hash(h, f"compact range hash {i}") for i, h in enumerate(hashes)]

    @classmethod
    def from_reader(cls, size: int, reader: HashReader) -> CompactRange:
        """Rebuild the range of the first ``size`` leaves from stored subtree hashes."""
        _check_size(size, "compact range size")
        return cls(size, [_read(reader, lv, ix) for lv, ix in _range_nodes(0, size)])

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The perfect-subtree hashes of the right edge, largest subtree first."""
        return tuple(self._hashes)

    def nodes(self) -> list[Node]:
        """The right-edge subtrees with their coordinates, largest first."""
        return [
            Node(level, index, h)
            for (level, index), h in zip(_range_nodes(0, self._size), self._hashes, strict=True)
        ]

    def append(self, leaf_hash: bytes) -> list[Node]:
        """Append one leaf hash; return every subtree it completes, the leaf itself first.

        Storage that persists the returned nodes can later serve any :class:`HashReader` read with
        a single lookup.
        """
        return self.append_subtree(0, _check_hash(leaf_hash, f"leaf hash {self._size}"))

    def append_subtree(self, level: int, subtree_hash: bytes) -> list[Node]:
        """Append a whole perfect subtree of ``2**level`` leaves given by its hash.

        The range's size must be a multiple of ``2**level`` (the subtree must be aligned), which
        is how tiles and stored nodes are laid out. Returns the completed subtrees, as
        :meth:`append` does.
        """
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < 64:
            raise ProofError(f"subtree level must be between 0 and 63, got {level!r}")
        n = self._size
        h = _check_hash(subtree_hash, f"hash of subtree (level {level}, index {n >> level})")
        if n & ((1 << level) - 1):
            raise ProofError(
                f"cannot append a subtree of 2**{level} leaves at position {n}: not aligned"
            )
        if n + (1 << level) > MAX_TREE_SIZE:
            raise ProofError("tree is full: size would exceed the uint64 range")
        created = [Node(level, n >> level, h)]
        while (n >> level) & 1:
            # The last stored subtree is this one's left sibling: merge and carry upwards.
            h = _node(self._hashes.pop(), h)
            level += 1
            created.append(Node(level, n >> level, h))
        self._hashes.append(h)
        self._size = n + (1 << created[0].level)
        return created

    def extend(self, leaf_hashes: Iterable[bytes]) -> list[Node]:
        """Append several leaf hashes; return all completed subtrees in creation order."""
        created: list[Node] = []
        for h in leaf_hashes:
            created.extend(self.append(h))
        return created

    def root(self) -> bytes:
        """Return the Merkle tree hash of the leaves appended so far."""
        if not self._hashes:
            return EMPTY_ROOT
        result = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            result = _node(h, result)
        return result

    def copy(self) -> CompactRange:
        """Return an independent copy."""
        return CompactRange(self._size, self._hashes)

    def to_bytes(self) -> bytes:
        """Serialise as ``0x01 || uint64 size (big-endian) || hashes`` for storage."""
        return (
            bytes([self._FORMAT_VERSION]) + self._size.to_bytes(8, "big") + b"".join(self._hashes)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CompactRange:
        """Restore a range serialised by :meth:`to_bytes`; rejects any other length or version."""
        if len(data) < 9:
            raise ProofError(f"compact range encoding is {len(data)} bytes, expected at least 9")
        if data[0] != cls._FORMAT_VERSION:
            raise ProofError(
                f"compact range encoding version {data[0]} is not {cls._FORMAT_VERSION}"
            )
        size = int.from_bytes(data[1:9], "big")
        count = size.bit_count()
        if len(data) != 9 + count * HASH_SIZE:
            raise ProofError(
                f"compact range of size {size} must encode to {9 + count * HASH_SIZE} bytes, "
                f"got {len(data)}"
            )
        return cls(size, [data[9 + i * HASH_SIZE : 9 + (i + 1) * HASH_SIZE] for i in range(count)])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    def __hash__(self) -> int:
        return hash((self._size, tuple(self._hashes)))

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()})"


class MerkleTree:
    """A pure in-memory Merkle tree keeping every subtree hash, for tests and tools.

    It implements :class:`HashReader`, so proofs for any historical size are O(log n) lookups.
    Memory is about two hashes per leaf; a production log keeps the same nodes in a database.
    """

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        """Create a tree and append ``leaves`` (leaf *data*, hashed with :func:`leaf_hash`)."""
        self._levels: list[list[bytes]] = []
        self._compact = CompactRange()
        for data in leaves:
            self.append(data)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._compact.size

    def append(self, data: bytes) -> int:
        """Append leaf data; return its index."""
        return self.append_leaf_hash(leaf_hash(data))

    def append_leaf_hash(self, h: bytes) -> int:
        """Append an already-computed leaf hash; return its index."""
        index = self._compact.size
        for node in self._compact.append(h):
            if node.level == len(self._levels):
                self._levels.append([])
            self._levels[node.level].append(node.hash)
        return index

    def leaf_hash(self, index: int) -> bytes:
        """Return the leaf hash at ``index``."""
        return self.subtree_hash(0, index)

    def subtree_hash(self, level: int, index: int) -> bytes:
        """Return the stored hash of the perfect subtree ``(level, index)``."""
        if 0 <= level < len(self._levels) and 0 <= index < len(self._levels[level]):
            return self._levels[level][index]
        raise ProofError(
            f"subtree (level {level}, index {index}) is not complete in a tree of size {self.size}"
        )

    def _size_arg(self, size: int | None) -> int:
        if size is None:
            return self.size
        _check_size(size, "tree size")
        if size > self.size:
            raise ProofError(f"tree size {size} is larger than the tree ({self.size} leaves)")
        return size

    def root(self, size: int | None = None) -> bytes:
        """Return the root of the first ``size`` leaves (default: all)."""
        return tree_root(self._size_arg(size), self)

    def compact_range(self, size: int | None = None) -> CompactRange:
        """Return the compact range of the first ``size`` leaves (default: all)."""
        return CompactRange.from_reader(self._size_arg(size), self)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Return the inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
        return inclusion_proof(index, self._size_arg(size), self)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Return the consistency proof from ``size1`` to ``size2`` (default: current size)."""
        return consistency_proof(size1, self._size_arg(size2), self)

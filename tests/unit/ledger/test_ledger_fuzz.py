"""Bad input never crashes: every parser either succeeds or raises a LedgerError."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ledger.checkpoint import Checkpoint, peek_checkpoint, sign_checkpoint
from ledger.cosignature import CosignatureVerifier, cosignature_timestamp
from ledger.errors import LedgerError
from ledger.leaf import Leaf
from ledger.merkle import CompactRange, MerkleTree, verify_consistency, verify_inclusion
from ledger.note import Signer, Verifier, open_note, parse_note
from ledger.receipt import Receipt
from ledger.tiles import decode_entry_bundle, parse_tile_path

SIGNER = Signer.generate("fuzz.example/log")
NOTE = sign_checkpoint(Checkpoint("fuzz.example/log", 2, MerkleTree([b"a", b"b"]).root()), SIGNER)
RECEIPT = Receipt(0, (MerkleTree([b"b"]).root(),), NOTE).format()


def _only_ledger_errors(fn: Callable[[], object]) -> None:
    try:
        fn()
    except LedgerError:
        pass


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, and the seed with bytes flipped, inserted or cut."""

    def mutate(args: tuple[int, int, bytes]) -> bytes:
        position, op, chunk = args
        p = position % (len(seed) + 1)
        if op == 0:
            return seed[:p] + chunk + seed[p:]
        if op == 1:
            return seed[:p] + seed[p + len(chunk) :]
        return seed[:p] + chunk + seed[p + len(chunk) :]

    return st.one_of(
        st.binary(max_size=300),
        st.tuples(st.integers(0, 10_000), st.integers(0, 2), st.binary(min_size=1, max_size=8)).map(
            mutate
        ),
    )


@settings(max_examples=400, deadline=None)
@given(data=_mutations(NOTE))
@example(data=b"\n\n")
@example(data=b"\n\n\xe2\x80\x94  AAAAAAA=\n")
def test_notes(data: bytes) -> None:
    _only_ledger_errors(lambda: open_note(data, [SIGNER.verifier()]))
    _only_ledger_errors(lambda: parse_note(data))
    _only_ledger_errors(lambda: peek_checkpoint(data))


@settings(max_examples=400, deadline=None)
@given(data=_mutations(RECEIPT))
def test_receipts(data: bytes) -> None:
    _only_ledger_errors(lambda: Receipt.parse(data))


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_checkpoint_text_and_keys(text: str) -> None:
    _only_ledger_errors(lambda: Checkpoint.parse(text))
    _only_ledger_errors(lambda: Verifier.from_key(text))
    _only_ledger_errors(lambda: CosignatureVerifier.from_key(text))
    _only_ledger_errors(lambda: Signer.from_key(text))
    _only_ledger_errors(lambda: parse_tile_path(text))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), count=st.integers(0, 300))
def test_binary_decoders(data: bytes, count: int) -> None:
    _only_ledger_errors(lambda: Leaf.decode(data))
    _only_ledger_errors(lambda: CompactRange.from_bytes(data))
    _only_ledger_errors(lambda: decode_entry_bundle(data, count))
    _only_ledger_errors(lambda: cosignature_timestamp(data))


hashes = st.binary(max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    leaf=hashes,
    index=st.integers(-2, 2**65),
    size=st.integers(-2, 2**65),
    proof=st.lists(hashes, max_size=70),
    root=hashes,
)
def test_proof_verification_with_garbage(
    leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes
) -> None:
    trivially_valid = (index, size, proof, len(leaf)) == (0, 1, [], 32) and leaf == root
    if not trivially_valid:  # a one-leaf tree's root is its leaf hash
        with pytest.raises(LedgerError):
            # Random garbage must never verify (it would take a SHA-256 collision).
            verify_inclusion(leaf, index, size, proof, root)
    if index != size or proof or leaf != root or index <= 0:
        with pytest.raises(LedgerError):
            verify_consistency(index, size, proof, leaf, root)

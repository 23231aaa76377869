"""Offline receipts (c2sp.org/tlog-proof@v1): format, parsing, verification and tampering."""

from __future__ import annotations

import base64
import hashlib
import uuid

import pytest

from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.cosignature import Cosigner, attach_cosignatures
from ledger.errors import PolicyError, ReceiptError
from ledger.leaf import Leaf
from ledger.merkle import MerkleTree
from ledger.note import Note, NoteSignature, Signer, parse_note
from ledger.receipt import Receipt, verify_receipt
from ledger.witness import Witness, WitnessPolicy

ORIGIN = "tongban.example/node-1"


def event_bytes(i: int) -> bytes:
    return f'{{"case": {i}, "event": "handoff"}}'.encode()


class Node:
    """A log of 21 leaves with a checkpoint cosigned by two of three witnesses."""

    def __init__(self) -> None:
        self.log = Signer.generate(ORIGIN)
        self.cosigners = [Cosigner.generate(f"w{i}.example") for i in range(3)]
        self.leaves = [
            Leaf(
                ORIGIN,
                i,
                uuid.UUID(int=i),
                1,
                "CaseHandedOff",
                hashlib.sha256(event_bytes(i)).digest(),
            )
            for i in range(21)
        ]
        self.tree = MerkleTree(leaf.encode() for leaf in self.leaves)
        self.note = sign_checkpoint(Checkpoint(ORIGIN, 21, self.tree.root()), self.log)
        for cosigner in self.cosigners[:2]:
            witness = Witness(cosigner, {ORIGIN: self.log.verifier()})
            self.note = attach_cosignatures(self.note, witness.add_checkpoint(self.note, 0))
        self.policy = WitnessPolicy(2, [c.verifier() for c in self.cosigners])

    def receipt(self, index: int) -> Receipt:
        leaf = self.leaves[index]
        return Receipt.for_leaf(leaf, self.tree.inclusion_proof(index), self.note)


@pytest.fixture(scope="module")
def node() -> Node:
    return Node()


def test_round_trip_and_verify(node: Node) -> None:
    receipt = node.receipt(13)
    text = receipt.format()
    lines = text.decode().split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    assert lines[1].startswith("extra ")
    assert lines[2] == "index 13"
    assert text.endswith(node.note)
    assert Receipt.parse(text) == receipt
    verified = verify_receipt(text, node.log.verifier(), node.policy, event=event_bytes(13))
    assert verified.leaf == node.leaves[13]
    assert verified.checkpoint.checkpoint.size == 21
    assert verified.policy.witnesses == ("w0.example", "w1.example")


def test_transparency_dev_marshal_vectors() -> None:
    h1 = hashlib.sha256(b"hash1").digest()
    h2 = hashlib.sha256(b"hash2").digest()
    b1, b2 = base64.b64encode(h1).decode(), base64.b64encode(h2).decode()
    extra = base64.b64encode(b"extra information").decode()
    assert Receipt(5, (h1, h2), b"test checkpoint\n").format() == (
        f"c2sp.org/tlog-proof@v1\nindex 5\n{b1}\n{b2}\n\ntest checkpoint\n".encode()
    )
    assert Receipt(10, (h1,), b"checkpoint data\n", b"extra information").format() == (
        f"c2sp.org/tlog-proof@v1\nextra {extra}\nindex 10\n{b1}\n\ncheckpoint data\n".encode()
    )
    assert (
        Receipt(0, (), b"checkpoint\n").format()
        == b"c2sp.org/tlog-proof@v1\nindex 0\n\ncheckpoint\n"
    )


NOTE = b"o\n1\n" + base64.b64encode(b"\x00" * 32) + b"\n\n\xe2\x80\x94 o AAAAAAA=\n"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"wrong-header\nindex 0\n\n" + NOTE, "line 1 must be 'c2sp.org/tlog-proof@v1'"),
        (
            b"c2sp.org/tlog-proof@v1\nextra !!notbase64!!\nindex 0\n\n" + NOTE,
            "line 2: extra data is not valid base64",
        ),
        (b"c2sp.org/tlog-proof@v1\n\n\n" + NOTE, "line 2 must be 'index <decimal>'"),
        (b"c2sp.org/tlog-proof@v1\nindex notanumber\n\n" + NOTE, "'notanumber' is not a decimal"),
        (b"c2sp.org/tlog-proof@v1\nindex -5\n\n" + NOTE, "'-5' is not a decimal"),
        (b"c2sp.org/tlog-proof@v1\nindex 05\n\n" + NOTE, "'05' is not a decimal"),
        (
            b"c2sp.org/tlog-proof@v1\nindex 0\n!!notbase64!!\n\n" + NOTE,
            "line 3: inclusion proof hash 0 is not valid base64",
        ),
        (
            b"c2sp.org/tlog-proof@v1\nindex 0\n" + base64.b64encode(b"\x00" * 64) + b"\n\n" + NOTE,
            "line 3: inclusion proof hash 0 is 64 bytes, expected 32",
        ),
        (b"c2sp.org/tlog-proof@v1\nindex 0\n" + b"a" * 70000 + b"\n", "no empty line"),
        (b"c2sp.org/tlog-proof@v1\nindex 0\n\nnot a note", "checkpoint note is malformed"),
        (b"c2sp.org/tlog-proof@v1\nextra \nindex 0\n\n" + NOTE, "extra data is empty"),
        (
            b"c2sp.org/tlog-proof@v1\nindex 0\n"
            + (base64.b64encode(b"\x00" * 32) + b"\n") * 65
            + b"\n"
            + NOTE,
            "65 proof lines, more than 64",
        ),
        (b"c2sp.org/tlog-proof@v1\xff\nindex 0\n\n" + NOTE, "non-ASCII byte at offset 22"),
    ],
)
def test_parse_errors_name_the_line(data: bytes, message: str) -> None:
    with pytest.raises(ReceiptError, match=message):
        Receipt.parse(data)


def _flip_proof(receipt: Receipt, which: int) -> Receipt:
    proof = list(receipt.proof)
    proof[which] = bytes([proof[which][0] ^ 1]) + proof[which][1:]
    return Receipt(receipt.index, tuple(proof), receipt.checkpoint, receipt.extra)


def test_tampering_is_detected(node: Node) -> None:
    log_key = node.log.verifier()
    good = node.receipt(13)
    with pytest.raises(ReceiptError, match="leaf 13 is not proven in the checkpoint"):
        verify_receipt(_flip_proof(good, 2), log_key, node.policy)
    truncated = Receipt(13, good.proof[:-1], good.checkpoint, good.extra)
    with pytest.raises(ReceiptError, match="must have 5 hashes, got 4"):
        verify_receipt(truncated, log_key, node.policy)
    moved = Receipt(12, good.proof, good.checkpoint, good.extra)
    with pytest.raises(ReceiptError, match="receipt index 12 differs from the index 13"):
        verify_receipt(moved, log_key, node.policy)
    other_leaf = Receipt(13, good.proof, good.checkpoint, node.leaves[12].encode())
    with pytest.raises(ReceiptError, match="differs from the index 12"):
        verify_receipt(other_leaf, log_key, node.policy)
    with pytest.raises(ReceiptError, match="event bytes hash to"):
        verify_receipt(good, log_key, node.policy, event=event_bytes(12))
    with pytest.raises(ReceiptError, match="receipt has no extra data"):
        verify_receipt(Receipt(13, good.proof, good.checkpoint), log_key, node.policy)
    with pytest.raises(ReceiptError, match="extra data is not a valid leaf"):
        verify_receipt(Receipt(13, good.proof, good.checkpoint, b"\x09"), log_key, node.policy)
    with pytest.raises(ReceiptError, match="is for log 'tongban.example/node-1', expected"):
        verify_receipt(good, log_key, node.policy, origin="other.example/log")


def test_wrong_keys_and_policy(node: Node) -> None:
    good = node.receipt(0)
    with pytest.raises(ReceiptError, match="checkpoint does not verify"):
        verify_receipt(good, Signer.generate(ORIGIN).verifier(), node.policy)
    with pytest.raises(PolicyError, match="2 of the 3 required"):
        verify_receipt(good, node.log.verifier(), WitnessPolicy(3, node.policy.witnesses))
    # A forged cosignature by a known witness is caught, not skipped.
    note = parse_note(good.checkpoint)
    sigs = list(note.unverified)
    w0 = next(i for i, sig in enumerate(sigs) if sig.name == "w0.example")
    broken = bytearray(sigs[w0].signature)
    broken[-1] ^= 1
    sigs[w0] = NoteSignature(sigs[w0].name, sigs[w0].key_id, bytes(broken))
    forged_note = Note(note.text, (), tuple(sigs)).to_bytes()
    forged = Receipt(good.index, good.proof, forged_note, good.extra)
    with pytest.raises(ReceiptError, match="known key w0.example.* does not verify"):
        verify_receipt(forged, node.log.verifier(), node.policy)


def test_single_node_receipt_and_edge_cases() -> None:
    log = Signer.generate(ORIGIN)
    leaf = Leaf(ORIGIN, 0, uuid.UUID(int=1), 1, "CaseOpened", hashlib.sha256(b"e").digest())
    tree = MerkleTree([leaf.encode()])
    note = sign_checkpoint(Checkpoint(ORIGIN, 1, tree.root()), log)
    receipt = Receipt.for_leaf(leaf, [], note)
    assert b"\nindex 0\n\n" in receipt.format()
    assert verify_receipt(receipt.format(), log.verifier(), WitnessPolicy(0)).leaf == leaf
    beyond = Leaf(ORIGIN, 1, uuid.UUID(int=1), 1, "CaseOpened", hashlib.sha256(b"e").digest())
    with pytest.raises(ReceiptError, match="out of range for tree size 1"):
        verify_receipt(Receipt.for_leaf(beyond, [], note), log.verifier(), WitnessPolicy(0))
    foreign = Leaf("other.example/log", 0, uuid.UUID(int=1), 1, "t", hashlib.sha256(b"e").digest())
    with pytest.raises(ReceiptError, match="leaf origin 'other.example/log' differs"):
        verify_receipt(Receipt.for_leaf(foreign, [], note), log.verifier(), WitnessPolicy(0))
    with pytest.raises(ReceiptError, match="index -1 is outside"):
        Receipt(-1, (), note)
    with pytest.raises(ReceiptError, match="hash 0 is 3 bytes"):
        Receipt(0, (b"abc",), note)


DOCUMENTED_RECEIPT = """c2sp.org/tlog-proof@v1
extra AgAWdG9uZ2Jhbi5leGFtcGxlL25vZGUtMQAAAAAAAAACAAAAAAAAAAAAAAAAAAAAAwAAAAAAAAABAApDYXNlT3BlbmVkfx7hfrbUsYFcjAWA37fKDT1cPN5SPagX7307Hpb21bgA
index 2
Son6V/1gPsjVkJJ9/6YsjgNyuIlkTgIzhbFgcOLZWFU=
5kzPlVnWU32692NPsyswQlUdyhwtg0MGw4EwRevIKbo=
FX3p+nN/blAsROD8ABuiT+KQbNNbF4BMekg1Iuvc03Y=

tongban.example/node-1
5
lOQ7fxWEz6s6mEj+GCvRa+MhbBBI49HAHrXe5qo0jMs=

— tongban.example/node-1 j5c5OUGWyoKiYWOZOnXXqcmbPK1CK7+yKonJ+kl+QWg8+tIlXME8ivHsJvtIiAbhZswqlnKH2Jx/251iU+xmc9J6xAU=
— witness.example/w1 IDJKvgAAAABlU/EAGvuhIY8RRdZz9xDIECF6xpbv4c/7niPx3aj50bQPAD1LKU+H3aR7KljhBoJ11uPBpWS4rXvobJ/CioLSxOTPDA==
"""


def test_documented_example_receipt_is_reproducible_and_verifies() -> None:
    """docs/ledger.md shows this receipt; it is rebuilt here from the documented seeds."""
    log = Signer.from_seed(ORIGIN, bytes(range(32)))
    witness = Cosigner.from_seed("witness.example/w1", bytes(range(32, 64)), lambda: 1700000000)
    assert (
        log.verifier_key()
        == "tongban.example/node-1+8f973939+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
    )
    assert (
        witness.verifier_key()
        == "witness.example/w1+20324abe+BCmsuuFBvMrwsi4alNNNC8c2HlJtC/4SyJeUvJMilm3X"
    )
    leaves = [
        Leaf(
            ORIGIN,
            i,
            uuid.UUID(int=i + 1),
            1,
            "CaseOpened" if i % 2 == 0 else "CaseHandedOff",
            hashlib.sha256(f"event {i}".encode()).digest(),
        )
        for i in range(5)
    ]
    tree = MerkleTree(leaf.encode() for leaf in leaves)
    note = sign_checkpoint(Checkpoint(ORIGIN, 5, tree.root()), log)
    w = Witness(witness, {ORIGIN: log.verifier()}, clock=lambda: 1700000000)
    note = attach_cosignatures(note, w.add_checkpoint(note, 0))
    receipt = Receipt.for_leaf(leaves[2], tree.inclusion_proof(2), note)
    assert receipt.format().decode() == DOCUMENTED_RECEIPT
    verified = verify_receipt(
        DOCUMENTED_RECEIPT.encode(),
        log.verifier(),
        WitnessPolicy(1, [witness.verifier()]),
        event=b"event 2",
    )
    assert verified.leaf == leaves[2]

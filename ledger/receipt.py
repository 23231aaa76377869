"""Offline receipts in the C2SP transparency log proof format (c2sp.org/tlog-proof@v1).

A receipt proves, with nothing but trusted public keys, that an event is in the log::

    c2sp.org/tlog-proof@v1
    extra <base64 of the encoded Leaf>
    index <leaf index, decimal>
    <base64 inclusion proof hash, leaf's sibling first>
    ...
    <empty line>
    <the signed (and possibly cosigned) checkpoint note, verbatim>

The ``extra`` line carries the encoded :class:`~ledger.leaf.Leaf`; it is not trusted by itself:
:func:`verify_receipt` hashes it and checks it is included in the checkpoint's tree. The text
format is written by hand (no maintained Python library implements tlog-proof).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ledger.checkpoint import SignedCheckpoint, peek_checkpoint
from ledger.errors import (
    CheckpointError,
    LeafError,
    NoteError,
    ProofError,
    ReceiptError,
)
from ledger.leaf import Leaf
from ledger.merkle import HASH_SIZE, MAX_TREE_SIZE, verify_inclusion
from ledger.note import MAX_NOTE_SIZE, NoteVerifier, b64decode_strict, b64encode, parse_note
from ledger.witness import PolicyResult, WitnessPolicy

RECEIPT_HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 64
"""An inclusion proof in a tree of at most 2**64 leaves has at most 64 hashes."""
MAX_RECEIPT_SIZE = MAX_NOTE_SIZE + 256 * 1024
RECEIPT_FILE_EXTENSION = ".tlog-proof"

_DECIMAL = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True)
class Receipt:
    """A parsed tlog-proof: leaf index, inclusion proof, checkpoint note, optional extra data."""

    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None

    def __post_init__(self) -> None:
        """Reject field values that cannot be formatted."""
        if isinstance(self.index, bool) or not isinstance(self.index, int):
            raise ReceiptError(f"receipt index must be an integer, got {type(self.index).__name__}")
        if not 0 <= self.index <= MAX_TREE_SIZE:
            raise ReceiptError(f"receipt index {self.index} is outside the uint64 range")
        if len(self.proof) > MAX_PROOF_HASHES:
            raise ReceiptError(
                f"inclusion proof has {len(self.proof)} hashes, more than {MAX_PROOF_HASHES}"
            )
        for i, h in enumerate(self.proof):
            if not isinstance(h, bytes) or len(h) != HASH_SIZE:
                size = f"{len(h)} bytes" if isinstance(h, bytes) else type(h).__name__
                raise ReceiptError(f"inclusion proof hash {i} is {size}, expected 32 bytes")
        if not isinstance(self.checkpoint, bytes):
            raise ReceiptError("receipt checkpoint must be the signed note bytes")
        if self.extra is not None and (not isinstance(self.extra, bytes) or not self.extra):
            raise ReceiptError("receipt extra data must be non-empty bytes or None")

    @classmethod
    def for_leaf(cls, leaf: Leaf, proof: Sequence[bytes], checkpoint: bytes) -> Receipt:
        """Build the receipt of ``leaf`` (its encoding goes in the extra data)."""
        return cls(index=leaf.index, proof=tuple(proof), checkpoint=checkpoint, extra=leaf.encode())

    def leaf(self) -> Leaf:
        """Decode the extra data as a :class:`Leaf` (unauthenticated until verified)."""
        if self.extra is None:
            raise ReceiptError("receipt has no extra data, so it carries no leaf")
        try:
            return Leaf.decode(self.extra)
        except LeafError as exc:
            raise ReceiptError(f"receipt extra data is not a valid leaf: {exc}") from None

    def format(self) -> bytes:
        """Return the tlog-proof text."""
        lines = [RECEIPT_HEADER]
        if self.extra is not None:
            lines.append(f"extra {b64encode(self.extra)}")
        lines.append(f"index {self.index}")
        lines.extend(b64encode(h) for h in self.proof)
        head = "".join(line + "\n" for line in lines) + "\n"
        return head.encode("ascii") + self.checkpoint

    @classmethod
    def parse(cls, data: bytes) -> Receipt:
        """Parse tlog-proof text strictly; raise :class:`ReceiptError` naming the line at fault."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ReceiptError(f"receipt must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) > MAX_RECEIPT_SIZE:
            raise ReceiptError(f"receipt is {len(data)} bytes, more than {MAX_RECEIPT_SIZE}")
        split = data.find(b"\n\n")
        if split < 0:
            raise ReceiptError("receipt has no empty line before the checkpoint")
        try:
            head = data[: split + 1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise ReceiptError(
                f"receipt header has a non-ASCII byte at offset {exc.start}"
            ) from None
        checkpoint = data[split + 2 :]
        lines = head[:-1].split("\n")
        if lines[0] != RECEIPT_HEADER:
            raise ReceiptError(f"receipt line 1 must be {RECEIPT_HEADER!r}, got {lines[0][:60]!r}")
        pos = 1
        extra: bytes | None = None
        if pos < len(lines) and lines[pos].startswith("extra "):
            extra = _b64(lines[pos][len("extra ") :], pos + 1, "extra data")
            if not extra:
                raise ReceiptError(f"receipt line {pos + 1}: extra data is empty")
            pos += 1
        if pos >= len(lines) or not lines[pos].startswith("index "):
            raise ReceiptError(f"receipt line {pos + 1} must be 'index <decimal>'")
        index_text = lines[pos][len("index ") :]
        if not _DECIMAL.fullmatch(index_text):
            raise ReceiptError(
                f"receipt line {pos + 1}: index {index_text!r} is not a decimal number without "
                "sign or leading zeros"
            )
        index = int(index_text)
        if index > MAX_TREE_SIZE:
            raise ReceiptError(f"receipt line {pos + 1}: index {index} exceeds the uint64 range")
        pos += 1
        hash_lines = lines[pos:]
        if len(hash_lines) > MAX_PROOF_HASHES:
            raise ReceiptError(
                f"receipt has {len(hash_lines)} proof lines, more than {MAX_PROOF_HASHES}"
            )
        proof = []
        for i, line in enumerate(hash_lines):
            h = _b64(line, pos + i + 1, f"inclusion proof hash {i}")
            if len(h) != HASH_SIZE:
                raise ReceiptError(
                    f"receipt line {pos + i + 1}: inclusion proof hash {i} is {len(h)} bytes, "
                    f"expected {HASH_SIZE}"
                )
            proof.append(h)
        try:
            parse_note(checkpoint)
        except NoteError as exc:
            raise ReceiptError(f"receipt checkpoint note is malformed: {exc}") from None
        return cls(index=index, proof=tuple(proof), checkpoint=checkpoint, extra=extra)


def _b64(text: str, line: int, what: str) -> bytes:
    try:
        return b64decode_strict(text, what)
    except NoteError as exc:
        raise ReceiptError(f"receipt line {line}: {exc}") from None


@dataclass(frozen=True)
class VerifiedReceipt:
    """A receipt that verified: the authenticated leaf, checkpoint and witness outcome."""

    leaf: Leaf
    checkpoint: SignedCheckpoint
    policy: PolicyResult


def verify_receipt(
    receipt: Receipt | bytes,
    log_verifiers: NoteVerifier | Iterable[NoteVerifier],
    witness_policy: WitnessPolicy,
    *,
    origin: str | None = None,
    event: bytes | None = None,
) -> VerifiedReceipt:
    """Verify a receipt offline: leaf hash, inclusion, checkpoint signature, witness policy.

    * the extra data must decode as a :class:`Leaf` whose index is the receipt's index and whose
      origin is the checkpoint's origin (and ``origin``, if given);
    * the leaf's hash must be included at that index in the checkpoint's tree;
    * the checkpoint must carry a valid signature by one of ``log_verifiers``;
    * ``witness_policy`` must be met (:class:`PolicyError` otherwise);
    * if ``event`` (the stored event bytes) is given, its SHA-256 must be the leaf's event hash.

    Raises :class:`ReceiptError` (or :class:`PolicyError`) naming the first failed step.
    """
    if not isinstance(receipt, Receipt):
        receipt = Receipt.parse(receipt)
    leaf = receipt.leaf()
    if leaf.index != receipt.index:
        raise ReceiptError(
            f"receipt index {receipt.index} differs from the index {leaf.index} in its leaf"
        )
    if event is not None and hashlib.sha256(event).digest() != leaf.event_hash:
        raise ReceiptError(
            f"the event bytes hash to {hashlib.sha256(event).hexdigest()}, but leaf "
            f"{leaf.index} commits to {leaf.event_hash.hex()}"
        )
    try:
        claimed = peek_checkpoint(receipt.checkpoint)
    except CheckpointError as exc:
        raise ReceiptError(f"receipt checkpoint is malformed: {exc}") from None
    if leaf.origin != claimed.origin:
        raise ReceiptError(
            f"leaf origin {leaf.origin!r} differs from the checkpoint origin {claimed.origin!r}"
        )
    if origin is not None and claimed.origin != origin:
        raise ReceiptError(f"receipt is for log {claimed.origin!r}, expected {origin!r}")
    try:
        verify_inclusion(leaf.leaf_hash(), receipt.index, claimed.size, receipt.proof, claimed.root)
    except ProofError as exc:
        raise ReceiptError(f"leaf {leaf.index} is not proven in the checkpoint: {exc}") from None
    try:
        policy = witness_policy.evaluate(receipt.checkpoint, log_verifiers, origin=claimed.origin)
    except (NoteError, CheckpointError) as exc:
        raise ReceiptError(f"receipt checkpoint does not verify: {exc}") from None
    witness_policy.ensure_final(policy)
    return VerifiedReceipt(leaf=leaf, checkpoint=policy.checkpoint, policy=policy)

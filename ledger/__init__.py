"""Tongban's verifiable ledger: an RFC 9162 Merkle log with C2SP checkpoints, cosignatures,
offline receipts and a tlog-tiles export.

The pure core imports only the standard library and ``cryptography``, so hall systems and outside
verifiers can use it without a database driver. Its SQL storage driver, :mod:`ledger.storage`
(the log's tables on PostgreSQL through ``psycopg`` or on SQLite, in the caller's transaction),
sits beside it and is imported on its own (``from ledger.storage import LedgerTables``); the core
never imports it. Nothing in the package imports ``hub`` or ``adapters``. Every
error is a :class:`LedgerError`. Typical use::

    import hashlib
    import uuid

    import ledger

    origin = "tongban.example/node-1"
    signer = ledger.Signer.generate(origin)
    leaf = ledger.Leaf(origin, 0, uuid.uuid4(), 1, "CaseOpened", hashlib.sha256(b"ev").digest())
    tree = ledger.MerkleTree()
    tree.append(leaf.encode())
    note = ledger.sign_checkpoint(ledger.Checkpoint(origin, tree.size, tree.root()), signer)
    receipt = ledger.Receipt.for_leaf(leaf, tree.inclusion_proof(0), note)
    ledger.verify_receipt(receipt.format(), signer.verifier(), ledger.WitnessPolicy(0))

The formats are documented in ``docs/ledger.md``.
"""

from ledger.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    open_checkpoint,
    peek_checkpoint,
    sign_checkpoint,
)
from ledger.cosignature import (
    KEY_TYPE_COSIGNATURE_V1,
    Cosignature,
    CosignatureVerifier,
    Cosigner,
    attach_cosignatures,
    cosign,
    cosignature_message,
    cosignature_timestamp,
    verified_cosignatures,
)
from ledger.errors import (
    CheckpointError,
    ConsistencyError,
    CosignatureError,
    EvidenceKind,
    InvalidSignatureError,
    KeyFormatError,
    LeafError,
    LedgerError,
    NoteError,
    PolicyError,
    ProofError,
    ReceiptError,
    RollbackError,
    SignatureError,
    SplitViewError,
    SplitViewEvidence,
    TileError,
    TileProblem,
    UnverifiedNoteError,
    WitnessConflictError,
    WitnessError,
)
from ledger.leaf import LEAF_FORMAT_VERSION, Authority, Leaf
from ledger.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    HashReader,
    LeafHashReader,
    MerkleTree,
    Node,
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
from ledger.note import (
    KEY_TYPE_ED25519,
    Note,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    Signer,
    Verifier,
    compute_key_id,
    open_note,
    parse_note,
    parse_verifier_key,
    sign_note,
)
from ledger.receipt import RECEIPT_HEADER, Receipt, VerifiedReceipt, verify_receipt
from ledger.tiles import (
    TileAudit,
    TileExport,
    TileLog,
    TileRef,
    bundles_for_size,
    decode_entry_bundle,
    encode_entry_bundle,
    entries_path,
    parse_tile_path,
    read_tiles,
    tile_path,
    tiles_for_size,
    verify_tiles,
    write_tiles,
)
from ledger.witness import (
    InMemoryWitnessStore,
    PolicyResult,
    Witness,
    WitnessPolicy,
    WitnessState,
    WitnessStore,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "KEY_TYPE_COSIGNATURE_V1",
    "KEY_TYPE_ED25519",
    "LEAF_FORMAT_VERSION",
    "RECEIPT_HEADER",
    "Authority",
    "Checkpoint",
    "CheckpointError",
    "CompactRange",
    "ConsistencyError",
    "Cosignature",
    "CosignatureError",
    "CosignatureVerifier",
    "Cosigner",
    "EvidenceKind",
    "HashReader",
    "InMemoryWitnessStore",
    "InvalidSignatureError",
    "KeyFormatError",
    "Leaf",
    "LeafError",
    "LeafHashReader",
    "LedgerError",
    "MerkleTree",
    "Node",
    "Note",
    "NoteError",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "PolicyError",
    "PolicyResult",
    "ProofError",
    "Receipt",
    "ReceiptError",
    "RollbackError",
    "SignatureError",
    "SignedCheckpoint",
    "Signer",
    "SplitViewError",
    "SplitViewEvidence",
    "TileAudit",
    "TileError",
    "TileExport",
    "TileLog",
    "TileProblem",
    "TileRef",
    "UnverifiedNoteError",
    "VerifiedReceipt",
    "Verifier",
    "Witness",
    "WitnessConflictError",
    "WitnessError",
    "WitnessPolicy",
    "WitnessState",
    "WitnessStore",
    "attach_cosignatures",
    "bundles_for_size",
    "compute_key_id",
    "consistency_proof",
    "consistency_proof_size",
    "cosign",
    "cosignature_message",
    "cosignature_timestamp",
    "decode_entry_bundle",
    "encode_entry_bundle",
    "entries_path",
    "inclusion_proof",
    "inclusion_proof_size",
    "leaf_hash",
    "node_hash",
    "open_checkpoint",
    "open_note",
    "parse_note",
    "parse_tile_path",
    "parse_verifier_key",
    "peek_checkpoint",
    "read_tiles",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "sign_checkpoint",
    "sign_note",
    "tile_path",
    "tiles_for_size",
    "tree_root",
    "verified_cosignatures",
    "verify_consistency",
    "verify_inclusion",
    "verify_receipt",
    "verify_tiles",
    "write_tiles",
]

"""C2SP tlog-checkpoint bodies: format, strict parsing, signing and opening."""

from __future__ import annotations

import pytest

from ledger.checkpoint import Checkpoint, open_checkpoint, peek_checkpoint, sign_checkpoint
from ledger.cosignature import Cosigner, cosign
from ledger.errors import CheckpointError, InvalidSignatureError, UnverifiedNoteError
from ledger.merkle import EMPTY_ROOT, MerkleTree, leaf_hash
from ledger.note import Signer, Verifier, sign_note

# The example of c2sp.org/tlog-checkpoint (its key is not published).
C2SP_CHECKPOINT = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcy"
    "v2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
).encode()

ORIGIN = "tongban.example/node-1"
ROOT = MerkleTree([b"a", b"b", b"c"]).root()


def test_go_sumdb_tree_vector() -> None:
    # golang.org/x/mod/sumdb/tlog TestFormatTree: the same three-line body.
    golden = "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n"
    checkpoint = Checkpoint("go.sum database tree", 123456789012, leaf_hash(b"hello world"))
    assert checkpoint.format() == golden
    assert Checkpoint.parse(golden) == checkpoint


def test_c2sp_example_parses() -> None:
    checkpoint = peek_checkpoint(C2SP_CHECKPOINT)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert len(checkpoint.root) == 32
    assert checkpoint.extensions == ()
    with pytest.raises(UnverifiedNoteError, match="example.com/behind-the-sofa\\+033de0ae"):
        open_checkpoint(C2SP_CHECKPOINT, Signer.generate("example.com/behind-the-sofa").verifier())


def test_extensions_round_trip() -> None:
    checkpoint = Checkpoint(ORIGIN, 3, ROOT, ("ext one", "ext two"))
    assert checkpoint.format().endswith("\next one\next two\n")
    assert Checkpoint.parse(checkpoint.format()) == checkpoint


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Log\n123\n", "has 2 lines; it needs origin, tree size and root hash"),
        ("\n9944\n" + "A" * 43 + "=\n", "line 1 \\(origin\\) is empty"),
        ("Log\n123\nYmFuYW5hcw==", "must end with a newline"),
        ("Log\nbananas\nYmFuYW5hcw==\n", "line 2 \\(tree size\\) 'bananas' is not a decimal"),
        ("Log\n-34\nYmFuYW5hcw==\n", "'-34' is not a decimal"),
        ("Log\n+34\nYmFuYW5hcw==\n", "'\\+34' is not a decimal"),
        ("Log\n0123\nYmFuYW5hcw==\n", "'0123' is not a decimal number without sign or leading"),
        ("Log\n1_000\nYmFuYW5hcw==\n", "'1_000' is not a decimal"),
        ("Log\n\u0661\u0662\nYmFuYW5hcw==\n", "is not a decimal"),
        ("Log\n 12\nYmFuYW5hcw==\n", "is not a decimal"),
        ("Log\n3438945738945739845734895735\n" + "A" * 43 + "=\n", "exceeds the uint64 range"),
        ("Log\n123\nThisIsn'tBase64\n", "line 3 \\(root hash\\) is not valid base64"),
        ("Log\n123\nYmFuYW5hcw==\n", "line 3: root hash is 7 bytes, expected 32"),
        ("Log\n123\n" + "A" * 43 + "=\n\nx\n", "line 4 \\(extension\\) is empty"),
        ("Log\n0\n" + "A" * 43 + "=\n", "size 0 must have the empty-tree root"),
        ("Lo\tg\n1\n" + "A" * 43 + "=\n", "control character U\\+0009"),
    ],
)
def test_bad_bodies_are_rejected_precisely(text: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        Checkpoint.parse(text)


def test_constructor_validation() -> None:
    with pytest.raises(CheckpointError, match="root hash is 31 bytes"):
        Checkpoint(ORIGIN, 1, ROOT[:31])
    with pytest.raises(CheckpointError, match="outside the uint64 range"):
        Checkpoint(ORIGIN, -1, ROOT)
    with pytest.raises(CheckpointError, match="origin is empty"):
        Checkpoint("", 1, ROOT)
    with pytest.raises(CheckpointError, match="control character U\\+000A"):
        Checkpoint("a\nb", 1, ROOT)
    assert Checkpoint(ORIGIN, 0, EMPTY_ROOT).format() == (
        f"{ORIGIN}\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    )


def test_sign_and_open() -> None:
    log = Signer.generate(ORIGIN)
    note = sign_checkpoint(Checkpoint(ORIGIN, 3, ROOT), log)
    signed = open_checkpoint(note, log.verifier(), origin=ORIGIN)
    assert signed.checkpoint == Checkpoint(ORIGIN, 3, ROOT)
    assert signed.raw == note
    with pytest.raises(
        CheckpointError, match="origin 'tongban.example/node-1' is not the expected"
    ):
        open_checkpoint(note, log.verifier(), origin="other.example/log")
    with pytest.raises(UnverifiedNoteError):
        open_checkpoint(note, Signer.generate(ORIGIN).verifier())
    tampered = note.replace(b"\n3\n", b"\n4\n")
    with pytest.raises(InvalidSignatureError):
        open_checkpoint(tampered, log.verifier())


def test_a_witness_signature_alone_is_not_a_log_signature() -> None:
    log = Signer.generate(ORIGIN)
    witness = Cosigner.generate("witness.example/w1")
    note = sign_note(Checkpoint(ORIGIN, 3, ROOT).format(), witness)
    with pytest.raises(UnverifiedNoteError, match="no valid signature from the log key"):
        open_checkpoint(note, log.verifier(), witnesses=[witness.verifier()])
    # With the log's signature too, the witness signature is checked and kept.
    both = cosign(sign_checkpoint(Checkpoint(ORIGIN, 3, ROOT), log), witness)
    signed = open_checkpoint(both, log.verifier(), witnesses=[witness.verifier()])
    assert len(signed.note.signatures) == 2


def test_key_rotation() -> None:
    old, new = Signer.generate(ORIGIN), Signer.generate(ORIGIN)
    note = sign_checkpoint(Checkpoint(ORIGIN, 3, ROOT), [old, new])
    assert open_checkpoint(note, new.verifier()).checkpoint.size == 3
    assert open_checkpoint(note, [old.verifier(), new.verifier()]).checkpoint.size == 3
    with pytest.raises(CheckpointError, match="at least one log verifier"):
        open_checkpoint(note, [])
    assert isinstance(old.verifier(), Verifier)

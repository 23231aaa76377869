"""tlog-cosignature/v1 (Ed25519, type 0x04): spec examples, message format, verification."""

from __future__ import annotations

import base64

import pytest

from ledger.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from ledger.cosignature import (
    CosignatureVerifier,
    Cosigner,
    attach_cosignatures,
    cosign,
    cosignature_message,
    cosignature_timestamp,
    verified_cosignatures,
)
from ledger.errors import CosignatureError, InvalidSignatureError, KeyFormatError, NoteError
from ledger.merkle import MerkleTree
from ledger.note import Signer, Verifier, open_note, parse_note

# The example of c2sp.org/tlog-cosignature.
C2SP_COSIGNED = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcy"
    "v2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2"
    "oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
).encode()

ORIGIN = "tongban.example/node-1"
CLOCK = 1679315147


def test_c2sp_example_cosignature_timestamp() -> None:
    note = parse_note(C2SP_COSIGNED)
    log_sig, witness_sig = note.unverified
    assert witness_sig.name == "witness.example.com/w1"
    assert witness_sig.key_id == 0x8D66CF3F
    # The spec's example message says "time 1679315147"; the signature carries the same value.
    assert cosignature_timestamp(witness_sig) == 1679315147
    with pytest.raises(CosignatureError, match="is 64 bytes, expected 72"):
        cosignature_timestamp(log_sig)


def test_c2sp_example_signed_message() -> None:
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert cosignature_message(body, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\n" + body.encode()
    )


def test_transparency_dev_timestamp_vectors() -> None:
    works = "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA=="
    assert cosignature_timestamp(base64.b64decode(works)[4:]) == 1727964367
    wrong_type = "eQjRQm6eSKzFoiYalgwCPXu2y3ijtg68is9M46JKxuZB+dRfTmeQeDBoXnvxZx2ugnkyV+MUMLXpWs1hPb/W/4xkNQY="
    with pytest.raises(CosignatureError, match="expected 72"):
        cosignature_timestamp(base64.b64decode(wrong_type)[4:])


def test_verifier_keys_from_transparency_dev() -> None:
    native = CosignatureVerifier.from_key(
        "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
    )
    assert native.name == "remora.n621.de"
    assert native.key_id == 0xDA77ADE7
    assert (
        native.key_string()
        == "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
    )
    with pytest.raises(KeyFormatError, match="key type 0x04, expected 0x01"):
        Verifier.from_key("remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2")
    plain = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"
    assert Verifier.from_key(plain).name == "TEST"
    with pytest.raises(KeyFormatError, match="key type 0x01, expected 0x04"):
        CosignatureVerifier.from_key(plain)
    for bad in (
        "bananas.sigstore.dev+12344556",
        "rekor.sigstore.dev+12345678+THIS_IS_NOT_BASE64!",
        "rekor.sigstore.dev+12345678+AwEB",
        "rekor.sigstore.dev+NOT_A_NUMBER+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
        "rekor.sigstore.dev+00000000+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
    ):
        with pytest.raises(KeyFormatError):
            CosignatureVerifier.from_key(bad)


def _checkpoint_note(log: Signer, extensions: tuple[str, ...] = ()) -> bytes:
    tree = MerkleTree([b"x", b"y", b"z"])
    return sign_checkpoint(Checkpoint(ORIGIN, 3, tree.root(), extensions), log)


def test_cosign_and_verify() -> None:
    log = Signer.generate(ORIGIN)
    witness = Cosigner.generate("witness.example/w1", clock=lambda: CLOCK)
    note = cosign(_checkpoint_note(log), witness)
    signed = open_checkpoint(note, log.verifier(), witnesses=[witness.verifier()])
    cosigs = verified_cosignatures(signed.note, [witness.verifier()])
    assert [(c.name, c.key_id, c.timestamp) for c in cosigs] == [
        ("witness.example/w1", witness.key_id, CLOCK)
    ]
    # The witness key id uses type 0x04, so it never collides with the same key used as 0x01.
    seed = base64.b64decode(witness.key_string().split("+", 4)[4])[1:]
    assert Signer.from_seed("witness.example/w1", seed).key_id != witness.key_id
    assert Cosigner.from_key(witness.key_string()).verifier_key() == witness.verifier_key()
    assert CosignatureVerifier.from_key(witness.verifier_key()) == witness.verifier()


def test_cosignature_covers_timestamp_body_and_extensions() -> None:
    log = Signer.generate(ORIGIN)
    witness = Cosigner.generate("witness.example/w1", clock=lambda: CLOCK)
    verifier = witness.verifier()
    body = Checkpoint(ORIGIN, 3, MerkleTree([b"x", b"y", b"z"]).root(), ("ext",)).format()
    sig = witness.sign(body.encode())
    assert verifier.verify(body.encode(), sig)
    later = (CLOCK + 1).to_bytes(8, "big") + sig[8:]
    assert not verifier.verify(body.encode(), later)
    assert not verifier.verify(body.replace("ext", "exu").encode(), sig)
    assert not verifier.verify(body.encode(), sig[:-1])
    assert not verifier.verify(b"not a checkpoint\n", sig)
    assert not verifier.verify(b"\xff\xfe", sig)
    tampered = cosign(_checkpoint_note(log), witness).replace(b"\n3\n", b"\n4\n")
    with pytest.raises(InvalidSignatureError):
        open_note(tampered, [verifier])


def test_cosigner_refuses_non_checkpoints_and_bad_timestamps() -> None:
    witness = Cosigner.generate("witness.example/w1")
    with pytest.raises(CosignatureError, match="witnesses only cosign checkpoints"):
        witness.sign(b"hello\n")
    with pytest.raises(CosignatureError, match="outside 0..2\\*\\*63-1"):
        witness.sign_at(_checkpoint_note(Signer.generate(ORIGIN)).split(b"\n\n")[0] + b"\n", -1)
    with pytest.raises(KeyFormatError, match="key type 0x01, expected 0x04"):
        Cosigner.from_key(Signer.generate("w").key_string())
    too_late = (1 << 63).to_bytes(8, "big") + b"\x00" * 64
    with pytest.raises(CosignatureError, match="exceeds 2\\*\\*63-1"):
        cosignature_timestamp(too_late)


def test_attach_cosignatures() -> None:
    log = Signer.generate(ORIGIN)
    witness = Cosigner.generate("witness.example/w1", clock=lambda: CLOCK)
    note = _checkpoint_note(log)
    body = parse_note(note).text
    line = witness.signature_line(body).encode()
    merged = attach_cosignatures(note, line)
    assert attach_cosignatures(merged, line) == merged  # duplicates dropped
    assert open_checkpoint(merged, log.verifier(), witnesses=[witness.verifier()])
    with pytest.raises(NoteError, match="must end with a newline"):
        attach_cosignatures(note, line[:-1])
    with pytest.raises(NoteError):
        attach_cosignatures(note, b"garbage\n")

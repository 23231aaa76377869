"""C2SP signed notes: the golang.org/x/mod/sumdb/note vectors, the C2SP example, bad input."""

from __future__ import annotations

import base64
import hashlib

import pytest

from ledger.errors import (
    InvalidSignatureError,
    KeyFormatError,
    NoteError,
    SignatureError,
    UnverifiedNoteError,
)
from ledger.note import (
    MAX_SIGNATURES,
    Note,
    NoteSignature,
    Signer,
    Verifier,
    check_key_name,
    compute_key_id,
    open_note,
    parse_note,
    parse_verifier_key,
    sign_note,
)

# golang.org/x/mod/sumdb/note test vectors.
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotp"
    "RZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox"
    "33WWd1RvMc+QQ=\n"
)

# The example at the top of c2sp.org/signed-note (its public key is not published).
C2SP_NOTE = (
    "Ognuno sta solo sul cuor della terra\n"
    "trafitto da un raggio di sole:\n"
    "\n"
    "ed è subito sera.\n"
    "\n"
    "— quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFS"
    "QU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
)


def peter() -> Verifier:
    return Verifier.from_key(PETER_VKEY)


def enoch() -> Verifier:
    return Verifier.from_key(ENOCH_VKEY)


def test_key_strings_round_trip() -> None:
    signer = Signer.from_key(PETER_SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.key_id == 0xC74F20A3
    assert signer.key_string() == PETER_SKEY
    assert signer.verifier_key() == PETER_VKEY
    assert signer.verifier() == peter()
    assert peter().key_string() == PETER_VKEY
    assert "AYEKFALV" not in repr(signer)  # never show the private key
    parsed = parse_verifier_key(PETER_VKEY)
    assert (parsed.name, parsed.key_id, parsed.key_type) == ("PeterNeumann", 0xC74F20A3, 1)


def test_key_id_is_sha256_of_name_newline_type_key() -> None:
    verifier = peter()
    expected = hashlib.sha256(b"PeterNeumann\n\x01" + verifier.public_key).digest()[:4]
    assert verifier.key_id == int.from_bytes(expected, "big")
    assert compute_key_id("PeterNeumann", 1, verifier.public_key) == verifier.key_id


def test_sign_matches_go_output() -> None:
    # Ed25519 is deterministic, so our note must be byte-identical to Go's.
    assert sign_note(TEXT, Signer.from_key(PETER_SKEY)).decode() == TEXT + "\n" + PETER_SIG


def test_sign_replaces_existing_signature_by_same_key() -> None:
    old = NoteSignature("PeterNeumann", 0xC74F20A3, b"stale")
    note = Note(TEXT, unverified=(old,))
    assert sign_note(note, Signer.from_key(PETER_SKEY)).decode() == TEXT + "\n" + PETER_SIG


def test_open_verifies_known_and_keeps_unknown() -> None:
    msg = (TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()
    note = open_note(msg, [peter()])
    assert note.text == TEXT
    assert [s.key for s in note.signatures] == ["PeterNeumann+c74f20a3"]
    assert [s.key for s in note.unverified] == ["EnochRoot+af0cfe78"]
    both = open_note(msg, [peter(), enoch()])
    assert [s.name for s in both.signatures] == ["PeterNeumann", "EnochRoot"]
    assert both.unverified == ()
    assert both.to_bytes() == msg


def test_open_rejects_note_without_known_signature() -> None:
    msg = (TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()
    with pytest.raises(UnverifiedNoteError, match="no valid signature from a known key") as info:
        open_note(msg, [])
    assert info.value.unknown_keys == ("PeterNeumann+c74f20a3", "EnochRoot+af0cfe78")


def test_open_ignores_same_name_different_key() -> None:
    # Same name as a known key but another key id: an unknown key, ignored (here: none left).
    rotated = Signer.generate("PeterNeumann")
    msg = sign_note(TEXT, rotated)
    with pytest.raises(UnverifiedNoteError):
        open_note(msg, [peter()])
    # Key rotation: old and new keys both sign, a verifier knowing only the new key accepts.
    both = sign_note(parse_note((TEXT + "\n" + PETER_SIG).encode()), rotated)
    assert [s.key_id for s in open_note(both, [rotated.verifier()]).signatures] == [rotated.key_id]


def test_ambiguous_verifiers() -> None:
    msg = (TEXT + "\n" + ENOCH_SIG).encode()
    impostor = Verifier("EnochRoot", Signer.generate("x").public_key)
    # Force a collision of name and id with a different key: the id is only 32 bits.
    object.__setattr__(impostor, "_key_id", enoch().key_id)
    with pytest.raises(NoteError, match="ambiguous key EnochRoot\\+af0cfe78"):
        open_note(msg, [enoch(), peter(), impostor])
    # The same verifier twice is not ambiguous, and an unused collision does not matter.
    assert open_note(msg, [enoch(), enoch()]).signatures
    assert open_note((TEXT + "\n" + PETER_SIG).encode(), [enoch(), peter(), impostor]).signatures


def test_too_many_signatures() -> None:
    msg = (TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1)).encode()
    with pytest.raises(NoteError, match="101 signature lines, more than 100"):
        open_note(msg, [peter()])
    # Sixteen signatures must be accepted (C2SP minimum).
    assert open_note((TEXT + "\n" + PETER_SIG * 16).encode(), [peter()]).signatures


def test_invalid_signature_from_known_key_rejects_note() -> None:
    bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(InvalidSignatureError, match="PeterNeumann\\+c74f20a3 does not verify"):
        open_note((TEXT + "\n" + bad).encode(), [peter()])
    with pytest.raises(InvalidSignatureError):
        open_note(
            (TEXT.replace("cryptography", "cryptograhpy") + "\n" + PETER_SIG).encode(), [peter()]
        )


def test_duplicates_are_dropped() -> None:
    enoch_abcd = ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[60:]
    msg = (TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + enoch_abcd).encode()
    note = open_note(msg, [peter()])
    assert len(note.signatures) == 1
    assert len(note.unverified) == 2


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (TEXT, "no blank line"),
        (TEXT + "\n", "no signature lines"),
        (TEXT + "\n" + PETER_SIG[:-1], "does not end with a newline"),
        ("\x01" + TEXT + "\n" + PETER_SIG, "control character U\\+0001 on line 1"),
        (
            TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZ"
            "Sb6KE6RyyBwJnAM=\n",
            "line 4: signature is not valid base64",
        ),
        (TEXT + "\n" + PETER_SIG + "Unexpected line.\n", "note line 5 is not a signature line"),
        (TEXT + "\n" + "- PeterNeumann x08go\n", "must start with an em dash"),
        (TEXT + "\n" + "— PeterNeumann\n", "expected '— <key name> <base64 signature>'"),
        (TEXT + "\n" + "— Peter+Neumann AAAAAAA=\n", "contains '\\+' at position 5"),
        (TEXT + "\n" + "— PeterNeumann AAAAAA==\n", "signature is 4 bytes; it needs a 4-byte"),
        (TEXT + "\n" + "— PeterNeumann AAAAAAB=\n", "not canonical base64"),
        (TEXT + "\n" + "— PeterNeumann\u00a0x AAAAAAA=\n", "contains a space \\(U\\+00A0\\)"),
        (TEXT + "\n" + "— PeterNeumann AAAAAAA=\n\n", "no signature lines after the blank line"),
        (TEXT + "\t\n" + PETER_SIG, "control character U\\+0009 on line 3"),
    ],
)
def test_malformed_notes_are_rejected_precisely(msg: str, message: str) -> None:
    with pytest.raises(NoteError, match=message) as info:
        open_note(msg.encode(), [peter()])
    assert not isinstance(info.value, SignatureError)


def test_malformed_bytes() -> None:
    with pytest.raises(NoteError, match="not valid UTF-8 \\(byte offset 0\\)"):
        open_note(b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), [peter()])
    with pytest.raises(NoteError, match="larger than the 1048576-byte limit"):
        parse_note(b"a" * (1 << 20) + b"\n\n")
    with pytest.raises(NoteError, match="note must be bytes"):
        parse_note("text\n\n")  # type: ignore[arg-type]


def test_c2sp_example_note_parses_and_is_not_trusted_without_its_key() -> None:
    note = parse_note(C2SP_NOTE.encode())
    assert note.text.endswith("ed è subito sera.\n")
    assert "\n\ned" in note.text  # the text may contain blank lines; the last one separates
    (sig,) = note.unverified
    assert sig.name == "quasimodo.example/salvatore"
    assert sig.key_id == 0x367BA04B
    assert len(sig.signature) == 64
    with pytest.raises(UnverifiedNoteError, match="quasimodo.example/salvatore\\+367ba04b"):
        open_note(C2SP_NOTE.encode(), [peter()])


def test_text_with_blank_lines_round_trips() -> None:
    signer = Signer.generate("example.com/log")
    text = "line one\n\nline three\n\n"
    opened = open_note(sign_note(text, signer), [signer.verifier()])
    assert opened.text == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", "must end with a newline"),
        ("a\x00b\n", "control character U\\+0000"),
    ],
)
def test_sign_rejects_bad_text(text: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        sign_note(text, Signer.from_key(PETER_SKEY))


def test_sign_rejects_bad_input() -> None:
    with pytest.raises(NoteError, match="at least one signer"):
        sign_note(TEXT, [])
    with pytest.raises(NoteError, match="key name is empty"):
        Signer.generate("")
    with pytest.raises(NoteError, match="contains a space"):
        check_key_name("bad name")


def _mangled(key: str) -> list[str]:
    out = [key[i:j] for i in range(len(key) + 1) for j in range(i + 1, len(key) + 1)]
    out.remove(key)
    for i in range(len(key)):
        out.append(key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :])
    return out


def test_verifier_key_manglings_are_rejected() -> None:
    for bad in _mangled(PETER_VKEY):
        with pytest.raises(KeyFormatError):
            Verifier.from_key(bad)
    with pytest.raises(KeyFormatError, match="not canonical base64"):
        # wrong length key, with adjusted key hash (Go test vector; its base64 is not canonical)
        Verifier.from_key(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        )
    long_key = b"\x01" + peter().public_key + b"\x00"
    kid = compute_key_id("PeterNeumann", 1, long_key[1:])
    encoded = base64.b64encode(long_key).decode()
    with pytest.raises(KeyFormatError, match="key is 33 bytes, expected 32"):
        Verifier.from_key(f"PeterNeumann+{kid:08x}+{encoded}")
    with pytest.raises(KeyFormatError, match="key type 0x65, expected 0x01"):
        # unknown algorithm, with adjusted key hash (Go test vector)
        Verifier.from_key("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
    with pytest.raises(KeyFormatError, match="does not match the name and key"):
        Verifier.from_key(PETER_VKEY.replace("c74f20a3", "c74f20a4"))
    with pytest.raises(KeyFormatError, match="8 lowercase hex digits"):
        Verifier.from_key(PETER_VKEY.replace("c74f20a3", "C74F20A3"))


def test_signer_key_manglings_are_rejected() -> None:
    for bad in _mangled(PETER_SKEY):
        with pytest.raises(KeyFormatError) as info:
            Signer.from_key(bad)
        assert "AYEKFALVFGyNhPJEMzD1QIDr" not in str(info.value)  # secrets stay out of messages


def test_verifier_never_raises_on_garbage() -> None:
    verifier = peter()
    assert not verifier.verify(b"msg", b"")
    assert not verifier.verify(b"msg", b"\x00" * 64)
    assert not verifier.verify(b"msg", b"\x00" * 65)


def test_generated_keys_round_trip() -> None:
    signer = Signer.generate("tongban.example/node-1")
    again = Signer.from_key(signer.key_string())
    assert again.verifier_key() == signer.verifier_key()
    assert Verifier.from_key(signer.verifier_key()) == signer.verifier()
    seed = base64.b64decode(signer.key_string().split("+", 4)[4])[1:]
    assert Signer.from_seed("tongban.example/node-1", seed).key_id == signer.key_id

"""The at-rest key ring: ids, rotation, a missing key, tampering, fingerprints."""

from __future__ import annotations

import pytest

from hub.application.cipher import (
    DecryptionError,
    KeyRingCipher,
    fingerprint,
    key_id_of,
    new_key,
    new_key_id,
    parse_key_ring,
)
from hub.errors import ConfigurationError

K1, K2 = new_key(), new_key()


def _cipher(keys: str, active: str) -> KeyRingCipher:
    return KeyRingCipher(parse_key_ring(keys), active)


def test_key_ids_are_random_and_fingerprints_reveal_nothing_but_identity() -> None:
    assert new_key_id() != new_key_id()
    ring = parse_key_ring(f"k1:{K1},k2:{K2}")
    prints = KeyRingCipher(ring, "k1").fingerprints()
    assert prints == {"k1": fingerprint(ring["k1"]), "k2": fingerprint(ring["k2"])}
    assert prints["k1"] != prints["k2"]
    assert K1 not in prints["k1"] and len(prints["k1"]) == 16


def test_encrypts_with_the_active_key_and_names_it() -> None:
    cipher = _cipher(f"k1:{K1}", "k1")
    stored = cipher.encrypt(b'{"name":"\xe6\x9d\x8e"}')
    assert key_id_of(stored) == "k1"
    assert b"\xe6\x9d\x8e" not in stored
    assert cipher.decrypt(stored) == b'{"name":"\xe6\x9d\x8e"}'


def test_rotation_keeps_old_ciphertexts_readable() -> None:
    old = _cipher(f"k1:{K1}", "k1").encrypt(b"old")
    rotated = _cipher(f"k1:{K1},k2:{K2}", "k2")
    new = rotated.encrypt(b"new")
    assert key_id_of(new) == "k2"
    assert rotated.decrypt(old) == b"old"
    assert rotated.decrypt(new) == b"new"


def test_a_ciphertext_of_a_key_not_in_the_ring_is_unreadable() -> None:
    old = _cipher(f"k1:{K1}", "k1").encrypt(b"personal")
    with pytest.raises(DecryptionError, match="'k1' is not in the key ring"):
        _cipher(f"k2:{K2}", "k2").decrypt(old)


def test_tampering_is_detected_including_the_key_id() -> None:
    cipher = _cipher(f"k1:{K1},k2:{K2}", "k1")
    stored = bytearray(cipher.encrypt(b"data"))
    stored[-1] ^= 1
    with pytest.raises(DecryptionError, match="damaged"):
        cipher.decrypt(bytes(stored))
    # Same-length key id swapped: the header is authenticated, so this fails too.
    swapped = cipher.encrypt(b"data").replace(b"k1", b"k2", 1)
    with pytest.raises(DecryptionError, match="damaged"):
        cipher.decrypt(swapped)
    with pytest.raises(DecryptionError, match="not in the key-ring format"):
        cipher.decrypt(b"plain json")


@pytest.mark.parametrize(
    ("keys", "active", "message"),
    [
        ("k1", "k1", "not 'id:base64key'"),
        ("k1:!!!", "k1", "not base64"),
        ("k1:AAAA", "k1", "32 bytes"),
        (f"k1:{K1}", "k9", "not a key id"),
    ],
    # K1 is made at import: ids that name it would differ from run to run.
    ids=["no-colon", "not-base64", "short-key", "unknown-active-id"],
)
def test_bad_key_configuration_is_refused(keys: str, active: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _cipher(keys, active)

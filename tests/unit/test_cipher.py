"""Encryption at rest with a key ring: ids, rotation, shredding, tampering."""

from __future__ import annotations

import pytest
from eventsourcing.utils import Environment

from hub.application.cipher import (
    ACTIVE_ENV,
    KEYS_ENV,
    DecryptionError,
    KeyRingCipher,
    key_id_of,
    new_key,
)
from hub.errors import ConfigurationError

K1, K2 = new_key(), new_key()


def _cipher(keys: str, active: str) -> KeyRingCipher:
    return KeyRingCipher(Environment("t", {KEYS_ENV: keys, ACTIVE_ENV: active}))


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


def test_a_dropped_key_shreds_what_it_encrypted() -> None:
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
)
def test_bad_key_configuration_is_refused(keys: str, active: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _cipher(keys, active)

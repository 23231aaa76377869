"""The node's at-rest key ring: AES-256-GCM keys with ids, which wrap the per-case personal-data
keys (:mod:`hub.application.vault`).

It encrypts with the active key and writes that key's id in front of the ciphertext, and it
decrypts with whichever key the id names. Rotation (``tongban keys rotate``) adds a key, makes it
active and re-wraps every per-case key under it, after which the old key is no longer needed:
nothing becomes unreadable. Removing a key that still wraps anything is refused at start-up
(:mod:`hub.bootstrap`), so rotation can never shred data; erasure is a separate, recorded act.

(The library's own ``AESCipher`` has a single key and no key id, so it cannot rotate.)
AES-256-GCM comes from ``cryptography``; only the framing below is written here.

Stored form: ``b"K1" || len(key_id) (1 byte) || key_id (ASCII) || nonce (12) || ciphertext+tag``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hub.errors import ConfigurationError

MAGIC = b"K1"
NONCE_BYTES = 12
#: The settings that hold a key ring (named in error messages).
KEYS_ENV = "TONGBAN_CIPHER_KEYS"
ACTIVE_ENV = "TONGBAN_CIPHER_ACTIVE_KEY"
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def new_key() -> str:
    """A fresh 256-bit key, base64."""
    return base64.b64encode(os.urandom(32)).decode("ascii")


def new_key_id() -> str:
    """A fresh random key id (``k-`` and 8 hex digits), so two nodes' ids never coincide."""
    return f"k-{os.urandom(4).hex()}"


def fingerprint(key: bytes) -> str:
    """A key's fingerprint: 16 hex digits of a tagged SHA-256 (reveals nothing of the key)."""
    return hashlib.sha256(b"tongban/keyring/v1\x00" + key).hexdigest()[:16]


def parse_key_ring(text: str) -> dict[str, bytes]:
    """Parse ``id1:base64key,id2:base64key``."""
    ring: dict[str, bytes] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key_id, sep, encoded = part.partition(":")
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise ConfigurationError(f"{KEYS_ENV}: entry {key_id!r} is not 'id:base64key'")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(f"{KEYS_ENV}: key {key_id!r} is not base64") from None
        if len(key) != 32:
            raise ConfigurationError(f"{KEYS_ENV}: key {key_id!r} must be 32 bytes")
        ring[key_id] = key
    return ring


class DecryptionError(ValueError):
    """Stored bytes cannot be decrypted: unknown key id (shredded) or damaged ciphertext."""


class KeyRingCipher:
    """AES-256-GCM with a key ring and a key id on every ciphertext."""

    def __init__(self, keys: dict[str, bytes], active: str) -> None:
        if active not in keys:
            raise ConfigurationError(f"{ACTIVE_ENV}={active!r} is not a key id in {KEYS_ENV}")
        self.keys = dict(keys)
        self.active_id = active
        self._aead = {key_id: AESGCM(key) for key_id, key in self.keys.items()}

    def fingerprints(self) -> dict[str, str]:
        """Each key id's fingerprint."""
        return {key_id: fingerprint(key) for key_id, key in self.keys.items()}

    def encrypt(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        key_id = self.active_id.encode("ascii")
        header = MAGIC + bytes([len(key_id)]) + key_id
        # The header is authenticated too, so a key id cannot be swapped.
        return header + nonce + self._aead[self.active_id].encrypt(nonce, plaintext, header)

    def decrypt(self, ciphertext: bytes) -> bytes:
        if ciphertext[:2] != MAGIC or len(ciphertext) < 3:
            raise DecryptionError("stored event is not in the key-ring format")
        id_length = ciphertext[2]
        header = ciphertext[: 3 + id_length]
        key_id = header[3:].decode("ascii", errors="replace")
        aead = self._aead.get(key_id)
        if aead is None:
            raise DecryptionError(
                f"key {key_id!r} is not in the key ring (rotated out or shredded)"
            )
        nonce = ciphertext[len(header) : len(header) + NONCE_BYTES]
        try:
            return aead.decrypt(nonce, ciphertext[len(header) + NONCE_BYTES :], header)
        except InvalidTag:
            raise DecryptionError(f"stored event encrypted with {key_id!r} is damaged") from None


def key_id_of(ciphertext: bytes) -> str:
    """The key id a stored event was encrypted with (for rotation reports)."""
    if ciphertext[:2] != MAGIC:
        raise DecryptionError("stored event is not in the key-ring format")
    return ciphertext[3 : 3 + ciphertext[2]].decode("ascii", errors="replace")

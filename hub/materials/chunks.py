"""How a material file is cut, sealed and checked: no I/O here (the store does that).

A file is stored as ``ceil(size / CHUNK_BYTES)`` chunks. Each chunk is sealed with AES-256-GCM
under the file's own random key, with associated data naming the file's blob id, the chunk's
number and the number of chunks::

    AAD = "tongban/material/v1" || 0x00 || blob id (16 bytes) || seq (4 bytes BE) || count (4 BE)
    stored chunk = nonce (12 random bytes) || ciphertext || tag (16)

so a chunk cannot be altered, moved to another place or another file, and a file cannot be
truncated or extended, without its decryption failing. The file's key is wrapped under the
node's at-rest key ring (:class:`~hub.application.cipher.KeyRingCipher`), so rotating that ring
re-wraps one small key per file and never re-encrypts the chunks; destroying the wrapped key
shreds the file.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hub.errors import InvalidInput

#: Plaintext bytes per stored chunk: big enough that per-row costs vanish, small enough that a
#: chunk is all a reader or writer ever holds (and far below gRPC's 4 MiB message limit).
CHUNK_BYTES = 1024 * 1024
NONCE_BYTES = 12
_AAD = b"tongban/material/v1\x00"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def chunk_count(size: int) -> int:
    """How many chunks a file of ``size`` bytes is stored as."""
    return -(-size // CHUNK_BYTES)


def check_digest(sha256: str, field: str = "sha256") -> str:
    """``sha256`` if it is 64 lowercase hex digits; InvalidInput naming ``field`` otherwise."""
    if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
        raise InvalidInput(field, sha256, "must be 64 lowercase hex digits (SHA-256)")
    return sha256


def check_size(size: int, limit: int, field: str = "size") -> int:
    """``size`` if it is between 1 and ``limit``; InvalidInput naming ``field`` otherwise."""
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise InvalidInput(field, size, "a material has at least one byte")
    if size > limit:
        raise InvalidInput(
            field,
            size,
            f"larger than this node's limit of {limit} bytes (TONGBAN_MAX_MATERIAL_BYTES)",
        )
    return size


@dataclass(frozen=True)
class ChunkSeal:
    """Seals and opens the chunks of one stored file (see the module docstring)."""

    key: bytes
    blob_id: bytes
    count: int

    @classmethod
    def fresh(cls, size: int) -> ChunkSeal:
        """A new random key and blob id for a file of ``size`` bytes."""
        return cls(AESGCM.generate_key(bit_length=256), os.urandom(16), chunk_count(size))

    def _aad(self, seq: int) -> bytes:
        return _AAD + self.blob_id + seq.to_bytes(4, "big") + self.count.to_bytes(4, "big")

    def seal(self, seq: int, plaintext: bytes) -> bytes:
        """The stored form of chunk ``seq``."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(self.key).encrypt(nonce, plaintext, self._aad(seq))

    def open(self, seq: int, stored: bytes) -> bytes | None:
        """Chunk ``seq``'s plaintext; None when it was altered, moved or is not this file's."""
        nonce, body = stored[:NONCE_BYTES], stored[NONCE_BYTES:]
        try:
            return AESGCM(self.key).decrypt(nonce, body, self._aad(seq))
        except (InvalidTag, ValueError):
            return None


class Rechunker:
    """Turns writes of any size into chunks of exactly CHUNK_BYTES (the last one shorter),
    keeping at most one chunk in memory, and hashes every byte on the way."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.received = 0
        self.digest = hashlib.sha256()
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Take ``data``; returns the chunks that are now complete. InvalidInput (field
        ``data``) when more bytes arrive than the declared size."""
        if self.received + len(data) > self.size:
            raise InvalidInput(
                "data",
                f"{self.received + len(data)} bytes",
                f"more than the declared size of {self.size} bytes",
            )
        self.received += len(data)
        self.digest.update(data)
        self._buffer += data
        ready = []
        while len(self._buffer) >= CHUNK_BYTES:
            ready.append(bytes(self._buffer[:CHUNK_BYTES]))
            del self._buffer[:CHUNK_BYTES]
        return ready

    def close(self, sha256: str) -> bytes:
        """The last (partial) chunk, after checking the size and the digest the file was
        declared with: InvalidInput naming ``size`` or ``sha256`` otherwise."""
        if self.received != self.size:
            raise InvalidInput("size", self.size, f"declared, but {self.received} bytes arrived")
        actual = self.digest.hexdigest()
        if actual != sha256:
            raise InvalidInput(
                "sha256", sha256, f"declared, but the bytes that arrived hash to {actual}"
            )
        last = bytes(self._buffer)
        self._buffer.clear()
        return last


__all__ = [
    "CHUNK_BYTES",
    "ChunkSeal",
    "Rechunker",
    "check_digest",
    "check_size",
    "chunk_count",
]

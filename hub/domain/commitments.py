"""Salted commitments to personal data, so that what a hall signs names no one.

A hall never signs a personal value (a name, an ID number, a phone number). It signs, for each
personal field, a commitment::

    SHA-256("tongban/commitment/v1" || 0x00 || field path || 0x00 || salt || UTF-8 value)

where the field path is the field's place in the ``Command`` (``submit.applicant.name``) and the
salt is 16-64 fresh random bytes per field and command. The clear value and its salt travel
beside the signed bytes (protected by TLS); the node checks the commitment before saving and
stores value and salt only encrypted. So every signature can be published and verified with
public keys alone, shows no one's identity, and stays valid after the personal data is erased.

The field path in the hash stops an opening of one field from being passed off as another's; the
salt stops anyone from testing guesses (ID numbers and phone numbers are few enough to try all).
"""

from __future__ import annotations

import hashlib
import hmac

COMMITMENT_TAG = b"tongban/commitment/v1"
COMMITMENT_BYTES = 32
MIN_SALT_BYTES = 16
MAX_SALT_BYTES = 64


def commitment(field: str, salt: bytes, value: str) -> bytes:
    """The commitment to ``value`` of ``field`` (see the module docstring)."""
    return hashlib.sha256(
        COMMITMENT_TAG + b"\x00" + field.encode("utf-8") + b"\x00" + salt + value.encode("utf-8")
    ).digest()


def opens(digest: bytes, field: str, salt: bytes, value: str) -> bool:
    """Whether (``salt``, ``value``) opens ``digest`` for ``field`` (constant-time compare)."""
    return hmac.compare_digest(digest, commitment(field, salt, value))

"""Custody of a case's result on its way to the applicant (送达): the locker's pickup code.

A hall that deposits a result in a 24-hour locker (政务e家 取件柜) sends the applicant a pickup
code (by SMS) and signs only a **keyed hash** of it::

    HMAC-SHA256(key, "tongban/pickup-code/v1" || 0x00 || case id || 0x00 || UTF-8 code)

The key (16-64 random bytes) stays with the hall's locker system; neither it nor the code is in a
signed command, an event or the log. A pickup code has few digits, so a plain or publicly salted
hash in the log would give the code to anyone who reads the log (an auditor, a peer node) in a
second of guessing; without the key the hash says nothing. At pickup the locker sends the code
the applicant typed and the key beside the signed bytes (like personal values: never signed,
never logged); the node recomputes the hash and compares in constant time. The case id in the
hash stops a code of one deposit from opening another's.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from uuid import UUID

from hub.errors import InvalidInput

PICKUP_CODE_TAG = b"tongban/pickup-code/v1"
#: The personal-value field under which the locker sends the typed code (key as the salt).
PICKUP_CODE_FIELD = "pick_up_from_locker.pickup_code"
#: The personal-value field under which a kiosk sends the ID number it read from the card.
KIOSK_ID_NUMBER_FIELD = "deliver.applicant.id_number"
MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 64
#: Wrong codes tried before the deposit is locked (then only a return to the window is left).
LOCKER_MAX_ATTEMPTS = 5
#: The longest a result may wait in a locker (30 days); a deposit names its own hold time.
MAX_HOLD_HOURS = 720
_CODE = re.compile(r"^[0-9A-Za-z]{4,16}$")
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def pickup_code_hash(case_id: UUID, code: str, key: bytes) -> str:
    """The keyed hash (hex) of ``code`` for ``case_id`` under the locker's ``key``."""
    check_code(code, "pickup_code")
    check_key(key, "pickup_code.key")
    message = PICKUP_CODE_TAG + b"\x00" + str(case_id).encode() + b"\x00" + code.encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def code_matches(stored: str, case_id: UUID, code: str, key: bytes) -> bool:
    """Whether ``code`` with ``key`` gives the ``stored`` hash (constant-time compare)."""
    return hmac.compare_digest(stored, pickup_code_hash(case_id, code, key))


def check_code(code: str, field: str) -> None:
    """A pickup code is 4-16 letters or digits (never echoed in the error)."""
    if not _CODE.fullmatch(code):
        raise InvalidInput(field, "<redacted>", "a pickup code is 4-16 letters or digits")


def check_key(key: bytes, field: str) -> None:
    """The locker's key is 16-64 bytes."""
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise InvalidInput(
            field, f"{len(key)} bytes", f"the key is {MIN_KEY_BYTES}-{MAX_KEY_BYTES} bytes"
        )


def check_code_hash(value: str, field: str) -> None:
    """A stored code hash is 64 lowercase hex digits (HMAC-SHA256)."""
    if not _HEX_DIGEST.fullmatch(value):
        raise InvalidInput(field, value, "the keyed hash is 64 lowercase hex digits (HMAC-SHA256)")

"""Sealing personal data: each case's applicant under a key of its own, so it can be erased alone.

When a case is submitted, the node draws a fresh 256-bit key for it, encrypts the applicant's
clear values and their commitment salts with it (AES-256-GCM, the case id as associated data, so
a sealed applicant cannot be moved to another case), and stores the ciphertext in the case's
``Submitted`` event. The key itself is wrapped under the node's at-rest key ring
(:class:`~hub.application.cipher.KeyRingCipher`) and kept in ``tongban_personal_keys``, outside
the append-only log. So:

* **erasure** destroys one case's key: only that applicant's clear values become unreadable; the
  event bytes, their hashes, the ledger and every signature stay exactly as they were;
* **rotation** of the at-rest keys re-wraps the small per-case keys under the new key, then the
  old key can go: nothing stored in the log is ever re-encrypted, and nothing becomes unreadable.

The subject of a key is a keyed hash (HMAC-SHA-256 under the node's pseudonym key) of the
applicant's ID number, so ``tongban erase --id-number`` finds one person's cases without storing
the number anywhere in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from base64 import b64decode, b64encode
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hub.application.cipher import DecryptionError, KeyRingCipher, key_id_of
from hub.application.recorders import PersonalKey
from hub.domain.values import Applicant, ApplicantCommitments, SealedApplicant

_AAD = b"tongban/personal/v1\x00"
_NONCE = 12
_APPLICANT_KEYS = ("name", "id_number", "phone")


@dataclass(frozen=True)
class OpenedApplicant:
    """An applicant's clear values and the salts of their commitments."""

    applicant: Applicant
    salts: dict[str, bytes]
    #: Further personal values sealed with the applicant (an appointment's address).
    extra: dict[str, str] = dataclass_field(default_factory=dict)

    def __repr__(self) -> str:
        return "OpenedApplicant(<redacted>)"


class PersonalDataVault:
    """Seals and opens applicants (see the module docstring)."""

    def __init__(self, cipher: KeyRingCipher, pseudonym_key: bytes) -> None:
        self.cipher = cipher
        self._pseudonym_key = pseudonym_key

    def subject(self, id_number: str) -> str:
        """The keyed hash that names one person's cases (never the ID number itself)."""
        return hmac.new(self._pseudonym_key, id_number.encode(), hashlib.sha256).hexdigest()

    def seal(
        self,
        case_id: UUID,
        applicant: Applicant,
        salts: dict[str, bytes],
        commitments: ApplicantCommitments,
        extra: dict[str, str] | None = None,
    ) -> tuple[SealedApplicant, PersonalKey]:
        """Seal ``applicant`` (and ``extra`` values) under a fresh key for ``case_id`` (or an
        appointment's id); returns it and the wrapped key."""
        key = AESGCM.generate_key(bit_length=256)
        plaintext = json.dumps(
            {
                "name": applicant.name,
                "id_number": applicant.id_number,
                "phone": applicant.phone,
                "salts": {field: b64encode(salt).decode() for field, salt in salts.items()},
                **(extra or {}),
            },
            ensure_ascii=False,
        ).encode("utf-8")
        nonce = os.urandom(_NONCE)
        ciphertext = nonce + AESGCM(key).encrypt(nonce, plaintext, _AAD + case_id.bytes)
        wrapped = self.cipher.encrypt(key)
        row = PersonalKey(case_id, self.subject(applicant.id_number), wrapped, key_id_of(wrapped))
        return SealedApplicant(commitments, ciphertext), row

    def open(
        self, case_id: UUID, sealed: SealedApplicant, wrapped: bytes | None
    ) -> OpenedApplicant | None:
        """The clear applicant, or None when its key was erased."""
        if wrapped is None:
            return None
        key = self.cipher.decrypt(wrapped)
        nonce, body = sealed.ciphertext[:_NONCE], sealed.ciphertext[_NONCE:]
        try:
            plaintext = AESGCM(key).decrypt(nonce, body, _AAD + case_id.bytes)
        except InvalidTag:
            raise DecryptionError(f"the sealed applicant of case {case_id} is damaged") from None
        values = json.loads(plaintext)
        salts = {field: b64decode(salt) for field, salt in values.pop("salts").items()}
        extra = {name: values.pop(name) for name in list(values) if name not in _APPLICANT_KEYS}
        return OpenedApplicant(Applicant(**values), salts, extra)

    def rewrap(self, wrapped: bytes) -> tuple[str, bytes]:
        """A wrapped key re-wrapped under the active at-rest key: ``(key id, wrapped)``."""
        new = self.cipher.encrypt(self.cipher.decrypt(wrapped))
        return key_id_of(new), new

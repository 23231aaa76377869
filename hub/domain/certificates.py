"""Electronic certificate (电子证照) identifiers and what an issued certificate says.

An identifier follows GB/T 36904 (电子证照 标识规范)::

    1.2.156.3005.2.<type>.<issuer>.<serial>.<version>.<check>

* ``1.2.156.3005.2`` is the national OID arc for electronic certificates;
* ``<type>`` is the certificate type code of the service-item catalogue (6 digits);
* ``<issuer>`` is the issuing authority's 统一社会信用代码 (18 characters, GB 32100);
* ``<serial>`` is 16 hexadecimal digits derived from the case id, so the same case always
  yields the same serial and an auditor recomputes it from the log alone;
* ``<version>`` is two digits (``01`` for the first issue);
* ``<check>`` is one ISO 7064 MOD 37,36 check character (GB/T 17710) computed over every
  character of the identifier before it, dots left out.

Everything here is pure: no I/O, no keys. The signed form (a JWS) is :mod:`hub.certificates`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from functools import lru_cache
from uuid import UUID

from hub.errors import InvalidInput

#: The OID arc of electronic certificates (GB/T 36904).
OID_PREFIX = "1.2.156.3005.2"

#: The ISO 7064 MOD 37,36 alphabet: digits, then letters (values 0..35).
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_M = 36
_VALUES = {character: value for value, character in enumerate(_ALPHABET)}

#: 统一社会信用代码: 18 characters from GB 32100's alphabet (no I, O, S, V, Z).
_ISSUER = re.compile(r"[0-9A-HJ-NPQRTUWXY]{18}")
_TYPE = re.compile(r"[0-9]{6}")
_SERIAL = re.compile(r"[0-9A-F]{16}")
_VERSION = re.compile(r"[0-9]{2}")


def mod37_36_check(text: str) -> str:
    """The ISO 7064 MOD 37,36 check character of ``text`` (digits and upper-case letters).

    The hybrid system of ISO 7064: ``p`` starts at 36; for each character
    ``s = (p + value) mod 36`` (0 counts as 36) and ``p = 2s mod 37``; the check character is
    the one whose value makes the next ``s`` equal to 1, i.e. ``(37 - p) mod 36``. Written by
    hand because it is six lines; the tests compare it with python-stdnum's implementation.
    """
    return _ALPHABET[(_M + 1 - _mod37_36_state(text)) % _M]


def _mod37_36_state(text: str, p: int = _M) -> int:
    """The ISO 7064 MOD 37,36 running value ``p`` after ``text``, starting from ``p``."""
    for character in text:
        value = _VALUES.get(character, -1)  # a dict, not str.find: verifiers run this a lot
        if value < 0:
            raise InvalidInput("identifier", text, f"{character!r} is not 0-9 or A-Z")
        s = (p + value) % _M or _M
        p = (2 * s) % (_M + 1)
    return p


@lru_cache(maxsize=1024)
def _state_after_issuer(type_code: str, issuer_code: str) -> int:
    """The running value after the arc, the type and the issuer: the same for every
    certificate of one issuer and type, so a verifier computes it once (the check character
    is a left-to-right fold; only the serial and version differ)."""
    return _mod37_36_state(OID_PREFIX.replace(".", "") + type_code + issuer_code)


def serial_for(case_id: UUID) -> str:
    """The certificate serial of a case: the first 16 hex digits of its id, upper case."""
    return case_id.hex[:16].upper()


@dataclass(frozen=True)
class CertificateIdentifier:
    """The parts of an identifier; ``str()`` gives it with its check character."""

    type_code: str
    issuer_code: str
    serial: str
    version: str = "01"

    def __post_init__(self) -> None:
        for field, pattern, value in (
            ("type_code", _TYPE, self.type_code),
            ("issuer_code", _ISSUER, self.issuer_code),
            ("serial", _SERIAL, self.serial),
            ("version", _VERSION, self.version),
        ):
            if not pattern.fullmatch(value):
                raise InvalidInput(field, value, f"does not match {pattern.pattern}")

    @property
    def body(self) -> str:
        """The identifier without its check character."""
        return f"{OID_PREFIX}.{self.type_code}.{self.issuer_code}.{self.serial}.{self.version}"

    @property
    def check(self) -> str:
        """The ISO 7064 MOD 37,36 check character over the body, dots left out."""
        # Equal to mod37_36_check(self.body.replace(".", "")); the tests compare the two.
        start = _state_after_issuer(self.type_code, self.issuer_code)
        p = _mod37_36_state(self.serial + self.version, start)
        return _ALPHABET[(_M + 1 - p) % _M]

    def __str__(self) -> str:
        return f"{self.body}.{self.check}"

    @classmethod
    def parse(cls, text: str) -> CertificateIdentifier:
        """Parse and check an identifier; InvalidInput names what is wrong (the check too)."""
        prefix = OID_PREFIX + "."
        if not text.startswith(prefix):
            raise InvalidInput("identifier", text, f"does not start with {OID_PREFIX}")
        parts = text.removeprefix(prefix).split(".")
        if len(parts) != 5:
            raise InvalidInput(
                "identifier", text, "expected <type>.<issuer>.<serial>.<version>.<check>"
            )
        type_code, issuer_code, serial, version, check = parts
        identifier = cls(type_code, issuer_code, serial, version)
        if check != identifier.check:
            raise InvalidInput(
                "identifier", text, f"wrong check character {check!r} (expected one that fits)"
            )
        return identifier


@dataclass(frozen=True)
class IssuedCertificate:
    """What a certificate says, as the issuing event records it (no personal data in clear).

    ``holder`` is the case's salted commitment to the applicant's ID number: it identifies the
    holder to whoever is shown the ID number and its salt, and to nobody else.
    """

    certificate_id: str
    type_code: str
    type_name: str
    item_code: str
    item_name: str
    issuer_code: str
    authority: str
    region: str
    holder: str
    case_id: UUID
    valid_until: str  # ISO date, or "" for no expiry (长期有效)


class CertificateStatus(enum.Enum):
    """Where an issued certificate stands: valid, suspended (may be reinstated) or revoked
    (final). Changed only by the signed hall commands of ``docs/certificates.md``."""

    VALID = "valid"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


__all__ = [
    "OID_PREFIX",
    "CertificateIdentifier",
    "CertificateStatus",
    "IssuedCertificate",
    "mod37_36_check",
    "serial_for",
]

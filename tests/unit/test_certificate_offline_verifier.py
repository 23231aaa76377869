"""The verifier that reads the trust bundle and the status list once and then checks many
certificates: the same verdicts as `cert verify` (verify_certificate + check_status), and no
check skipped for having cached the list — a list that expires, a forged list, a list of
another issuer still give "status unknown" on every certificate checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from stdnum.iso7064 import mod_37_36 as mod37

from hub.certificates import (
    CertificateClaims,
    IssuerKey,
    StatusList,
    TrustBundle,
    Verdict,
    check_status,
    sign_certificate,
    sign_status_list,
    verify_certificate,
)
from hub.certificates_offline import OfflineVerifier
from hub.domain.certificates import CertificateIdentifier, mod37_36_check

SINCE = datetime(2026, 1, 1, tzinfo=UTC)
ISSUED = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
NOW = datetime(2026, 3, 5, tzinfo=UTC)
KEY = IssuerKey(Ed25519PrivateKey.generate(), "tongban/43", "43", SINCE)
OTHER = IssuerKey(Ed25519PrivateKey.generate(), "tongban/61", "61", SINCE)
BUNDLE = TrustBundle((KEY.trusted(), OTHER.trusted()))
LIST = StatusList("tongban/43", 5000, revoked=frozenset({11}), suspended=frozenset({12}))


def _token(entry: int, key: IssuerKey = KEY, **changes: object) -> str:
    values: dict[str, object] = {
        "iss": key.origin,
        "jti": str(CertificateIdentifier("150001", "11430902MB0000001X", f"{entry:016X}")),
        "iat": int(ISSUED.timestamp()),
        "ct": "150001",
        "item": "200202001000",
        "name": "老年人优待证办理",
        "auth": "益阳市资阳区民政局",
        "rg": key.region + "0902104000",
        "hld": "ab" * 32,
        "case": "0123456789abcdef0123456789abcdef",
        "li": entry,
        "status_index": entry,
    }
    values.update(changes)
    return sign_certificate(CertificateClaims(**values), key)  # type: ignore[arg-type]


GENUINE_LIST = sign_status_list(LIST, KEY, now=NOW, ttl_s=86400)
_header, _payload, _signature = GENUINE_LIST.split(".")
LISTS = {
    "genuine": GENUINE_LIST,
    "forged": f"{_header}.{sign_status_list(StatusList('tongban/43', 5000), KEY, now=NOW, ttl_s=86400).split('.')[1]}.{_signature}",
    "other issuer": sign_status_list(StatusList("tongban/61", 5000), OTHER, now=NOW, ttl_s=86400),
    "expired": sign_status_list(LIST, KEY, now=NOW - timedelta(days=2), ttl_s=86400),
    "damaged": GENUINE_LIST[:-30],
    "garbage": "not a list",
}
TOKENS = {
    "valid": _token(7),
    "revoked": _token(11),
    "suspended": _token(12),
    "beyond the list": _token(9000),
    "forged": _token(7)[:-6] + "AAAAAA",
    "expired": _token(7, exp=int((NOW - timedelta(days=1)).timestamp())),
    "another issuer's": _token(7, OTHER),
}


@pytest.mark.parametrize("status", [*LISTS, None])
def test_the_same_verdicts_as_cert_verify(status: str | None) -> None:
    verifier = OfflineVerifier(BUNDLE, LISTS[status] if status else None)
    for name, token in TOKENS.items():
        for now in (NOW, NOW + timedelta(hours=30)):
            expected = verify_certificate(token, BUNDLE, now=now)
            if status:
                expected = check_status(expected, LISTS[status], BUNDLE, now=now)
            assert verifier.verify(token, now=now) == expected, (status, name, now)


def test_a_cached_list_still_expires() -> None:
    verifier = OfflineVerifier(BUNDLE, GENUINE_LIST)
    assert verifier.verify(TOKENS["valid"], now=NOW).verdict is Verdict.VALID
    later = verifier.verify(TOKENS["valid"], now=NOW + timedelta(days=1, seconds=1))
    assert later.verdict is Verdict.STATUS_UNKNOWN and "list too old" in later.reason
    assert verifier.verify(TOKENS["revoked"], now=NOW).verdict is Verdict.REVOKED
    assert verifier.verify(TOKENS["suspended"], now=NOW).verdict is Verdict.SUSPENDED


def test_a_forged_list_is_refused_for_every_certificate() -> None:
    verifier = OfflineVerifier(BUNDLE, LISTS["forged"])
    for _ in range(3):
        result = verifier.verify(TOKENS["revoked"], now=NOW)
        assert result.verdict is Verdict.STATUS_UNKNOWN
        assert "signature does not verify" in result.reason


@given(
    type_code=st.from_regex(r"[0-9]{6}", fullmatch=True),
    issuer=st.from_regex(r"[0-9A-HJ-NPQRTUWXY]{18}", fullmatch=True),
    serial=st.from_regex(r"[0-9A-F]{16}", fullmatch=True),
    version=st.from_regex(r"[0-9]{2}", fullmatch=True),
)
def test_the_cached_check_character_is_the_plain_one(
    type_code: str, issuer: str, serial: str, version: str
) -> None:
    # CertificateIdentifier.check folds from a cached state after the issuer; it must be the
    # check character of the whole body (mod37_36_check, compared with python-stdnum in
    # tests/unit/test_certificate_identifier.py).
    identifier = CertificateIdentifier(type_code, issuer, serial, version)
    assert identifier.check == mod37_36_check(identifier.body.replace(".", ""))
    assert mod37.calc_check_digit(identifier.body.replace(".", "")) == identifier.check

"""Certificates as JWS (EdDSA, RFC 8037) and their offline verification: the attacks first.

Every token that is not a genuine, current certificate of a trusted issuer gets its precise
verdict with a reason — never an exception and never "valid". Genuine tokens are also verified
by joserfc (an independent JOSE implementation), and tokens joserfc signs verify here, so the
format is the standard's and not only ours.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import OKPKey

from hub.certificates import (
    TOKEN_TYPE,
    CertificateClaims,
    IssuerKey,
    TrustBundle,
    Verdict,
    sign_certificate,
    verify_certificate,
)
from hub.domain.certificates import CertificateIdentifier
from hub.errors import ConfigurationError

# joserfc warns that RFC 9864 deprecates the polymorphic "EdDSA" (docs/certificates.md says why
# the certificates still use it).
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")

SINCE = datetime(2026, 1, 1, tzinfo=UTC)
ISSUED = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
NOW = datetime(2026, 3, 5, tzinfo=UTC)
IDENTIFIER = str(CertificateIdentifier("150001", "11430902MB0000001X", "0123456789ABCDEF"))


def _issuer(origin: str = "tongban/43", region: str = "43") -> IssuerKey:
    return IssuerKey(Ed25519PrivateKey.generate(), origin, region, SINCE)


KEY = _issuer()
BUNDLE = TrustBundle((KEY.trusted(),))


def _claims(**changes: object) -> CertificateClaims:
    values: dict[str, object] = {
        "iss": "tongban/43",
        "jti": IDENTIFIER,
        "iat": int(ISSUED.timestamp()),
        "ct": "150001",
        "item": "200202001000",
        "name": "老年人优待证办理",
        "auth": "益阳市资阳区民政局",
        "rg": "430902104000",
        "hld": "ab" * 32,
        "case": "0123456789abcdef0123456789abcdef",
        "li": 1234,
        "exp": int((ISSUED + timedelta(days=3650)).timestamp()),
    }
    values.update(changes)
    return CertificateClaims(**values)  # type: ignore[arg-type]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _verdict(token: str, bundle: TrustBundle = BUNDLE) -> Verdict:
    return verify_certificate(token, bundle, now=NOW).verdict


# ---------------------------------------------------------------------------- attacks


def test_a_tampered_payload_is_forged() -> None:
    header, payload, signature = sign_certificate(_claims(), KEY).split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["exp"] = body["exp"] + 86400 * 3650  # extend the validity
    forged = f"{header}.{_b64(json.dumps(body).encode())}.{signature}"
    result = verify_certificate(forged, BUNDLE, now=NOW)
    assert result.verdict is Verdict.FORGED
    assert "signature does not verify" in result.reason


def test_a_token_signed_with_another_key_under_the_trusted_kid_is_forged() -> None:
    impostor = IssuerKey(Ed25519PrivateKey.generate(), "tongban/43", "43", SINCE)
    header, payload, signature = sign_certificate(_claims(), impostor).split(".")
    genuine_header = sign_certificate(_claims(), KEY).split(".")[0]
    token = f"{genuine_header}.{payload}.{signature}"
    assert _verdict(token) is Verdict.FORGED
    # And with its own kid, the impostor is an unknown issuer.
    assert _verdict(f"{header}.{payload}.{signature}") is Verdict.UNKNOWN_ISSUER


def test_an_unknown_issuer_is_named() -> None:
    other = _issuer("tongban/61", "61")
    result = verify_certificate(sign_certificate(_claims(), other), BUNDLE, now=NOW)
    assert result.verdict is Verdict.UNKNOWN_ISSUER
    assert other.kid in result.reason


def test_an_expired_certificate_is_expired() -> None:
    token = sign_certificate(_claims(exp=int((NOW - timedelta(seconds=1)).timestamp())), KEY)
    result = verify_certificate(token, BUNDLE, now=NOW)
    assert result.verdict is Verdict.EXPIRED
    assert "valid until" in result.reason
    # Without an expiry (长期有效) it never expires.
    token = sign_certificate(_claims(exp=None), KEY)
    assert verify_certificate(token, BUNDLE, now=NOW + timedelta(days=36500)).verdict is (
        Verdict.VALID
    )


def test_a_wrong_check_character_is_forged_even_when_signed() -> None:
    good = IDENTIFIER[-1]
    wrong = IDENTIFIER[:-1] + ("0" if good != "0" else "1")
    result = verify_certificate(sign_certificate(_claims(jti=wrong), KEY), BUNDLE, now=NOW)
    assert result.verdict is Verdict.FORGED
    assert "check character" in result.reason


def test_every_truncation_is_refused_without_an_exception() -> None:
    token = sign_certificate(_claims(), KEY)
    for length in range(len(token)):
        result = verify_certificate(token[:length], BUNDLE, now=NOW)
        assert result.verdict is Verdict.FORGED, (length, result)
        assert result.reason


@pytest.mark.parametrize(
    "garbage",
    ["", "...", "a.b.c", "not a token", "e30.e30.", "e30.e30.e30", "\x00\xff.é.€", "a.b.c.d.e"],
)
def test_garbage_is_forged_with_a_reason(garbage: str) -> None:
    result = verify_certificate(garbage, BUNDLE, now=NOW)
    assert result.verdict is Verdict.FORGED and result.reason


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none", "kid": KEY.kid, "typ": TOKEN_TYPE},
        {"alg": "HS256", "kid": KEY.kid, "typ": TOKEN_TYPE},
        {"alg": "EdDSA", "kid": KEY.kid, "typ": "JWT"},
        {"alg": "EdDSA", "kid": KEY.kid, "typ": TOKEN_TYPE, "crit": ["exp"]},
        {"alg": "EdDSA", "kid": KEY.kid, "typ": TOKEN_TYPE, "jku": "https://evil.example/"},
    ],
)
def test_another_algorithm_or_header_is_forged(header: dict[str, object]) -> None:
    _, payload, signature = sign_certificate(_claims(), KEY).split(".")
    encoded = _b64(json.dumps(header).encode())
    signing_input = f"{encoded}.{payload}".encode()
    resigned = _b64(KEY.private_key.sign(signing_input))  # even signed by the real key
    assert _verdict(f"{encoded}.{payload}.{resigned}") is Verdict.FORGED
    assert _verdict(f"{encoded}.{payload}.") is Verdict.FORGED
    assert _verdict(f"{encoded}.{payload}.{signature}") is Verdict.FORGED


def test_a_header_nested_too_deep_is_forged_without_an_exception() -> None:
    # Deeper than the interpreter's recursion limit: json raises RecursionError, not ValueError.
    _, payload, signature = sign_certificate(_claims(), KEY).split(".")
    deep = _b64(b"[" * 100_000 + b"]" * 100_000)
    result = verify_certificate(f"{deep}.{payload}.{signature}", BUNDLE, now=NOW)
    assert result.verdict is Verdict.FORGED
    assert result.reason.startswith("the token is damaged")


def test_an_issuer_claiming_another_region_or_log_is_forged() -> None:
    for changes in ({"iss": "tongban/61"}, {"rg": "610929000000"}):
        result = verify_certificate(sign_certificate(_claims(**changes), KEY), BUNDLE, now=NOW)
        assert result.verdict is Verdict.FORGED, changes
        assert "key is tongban/43's" in result.reason


def test_a_certificate_dated_outside_the_keys_period_is_forged() -> None:
    early = int((SINCE - timedelta(days=1)).timestamp())
    result = verify_certificate(sign_certificate(_claims(iat=early), KEY), BUNDLE, now=NOW)
    assert result.verdict is Verdict.FORGED
    assert "outside the key's period" in result.reason
    retired = TrustBundle((KEY.trusted(not_after=ISSUED - timedelta(seconds=1)),))
    assert _verdict(sign_certificate(_claims(), KEY), retired) is Verdict.FORGED
    future = int((NOW + timedelta(days=1)).timestamp())
    assert _verdict(sign_certificate(_claims(iat=future), KEY)) is Verdict.FORGED


def test_unreadable_claims_under_a_valid_signature_are_forged() -> None:
    header = sign_certificate(_claims(), KEY).split(".")[0]
    for body in ({"iss": "tongban/43"}, [], {**_claims().payload(), "li": "12"}):
        payload = _b64(json.dumps(body).encode())
        signature = _b64(KEY.private_key.sign(f"{header}.{payload}".encode()))
        result = verify_certificate(f"{header}.{payload}.{signature}", BUNDLE, now=NOW)
        assert result.verdict is Verdict.FORGED
        assert "claims are unreadable" in result.reason


def _signed_payload(body: object) -> str:
    """A token of ``body`` as the trusted issuer's key signs it (the header of a genuine one)."""
    header = sign_certificate(_claims(), KEY).split(".")[0]
    payload = _b64(json.dumps(body).encode())
    signature = _b64(KEY.private_key.sign(f"{header}.{payload}".encode()))
    return f"{header}.{payload}.{signature}"


def test_a_signed_token_whose_nbf_is_not_its_iat_is_forged() -> None:
    genuine = _claims().payload()
    for body in ({**genuine, "nbf": genuine["iat"] - 1}, {k: v for k, v in genuine.items()
                                                          if k != "nbf"}):  # fmt: skip
        result = verify_certificate(_signed_payload(body), BUNDLE, now=NOW)
        assert result.verdict is Verdict.FORGED, body


def test_a_signed_token_whose_status_entry_is_not_its_leaf_is_forged() -> None:
    """The entry is the issuing leaf's index (``status_index`` equal to ``li``): an entry that
    differs, even under the issuer's genuine signature, would read another certificate's bit."""
    genuine = _claims().payload()
    for changes in ({"status_index": genuine["li"] + 1}, {"status_index": -1},
                    {"li": -1, "status_index": -1}, {"li": -1}):  # fmt: skip
        result = verify_certificate(_signed_payload({**genuine, **changes}), BUNDLE, now=NOW)
        assert result.verdict is Verdict.FORGED, changes
        assert "claims are unreadable" in result.reason, changes
    for body in (genuine, {**genuine, "status_index": genuine["li"]}):
        assert verify_certificate(_signed_payload(body), BUNDLE, now=NOW).verdict is Verdict.VALID


def test_times_out_of_any_calendar_are_forged_without_an_exception() -> None:
    genuine = _claims().payload()
    for changes in ({"iat": 10**20, "nbf": 10**20}, {"iat": -(10**20), "nbf": -(10**20)},
                    {"exp": -(10**20)}, {"exp": 10**20}):  # fmt: skip
        result = verify_certificate(_signed_payload({**genuine, **changes}), BUNDLE, now=NOW)
        assert result.verdict is Verdict.FORGED, changes


def test_the_expiry_and_the_clock_skew_are_exact() -> None:
    """``exp`` is the first instant no longer valid; a token may be dated up to 300 s ahead of
    the verifier's clock (a node's clock a little ahead), not more."""
    at_end = sign_certificate(_claims(exp=int(NOW.timestamp())), KEY)
    assert verify_certificate(at_end, BUNDLE, now=NOW).verdict is Verdict.EXPIRED
    just_before = NOW - timedelta(seconds=1)
    assert verify_certificate(at_end, BUNDLE, now=just_before).verdict is Verdict.VALID
    for ahead, verdict in ((299, Verdict.VALID), (301, Verdict.FORGED)):
        token = sign_certificate(_claims(iat=int(NOW.timestamp()) + ahead), KEY)
        assert verify_certificate(token, BUNDLE, now=NOW).verdict is verdict, ahead


# ---------------------------------------------------------------------------- genuine


def test_a_genuine_certificate_is_valid() -> None:
    result = verify_certificate(sign_certificate(_claims(), KEY), BUNDLE, now=NOW)
    assert result.verdict is Verdict.VALID
    assert result.claims == _claims()


def test_joserfc_verifies_our_certificates_with_the_bundles_key() -> None:
    token = sign_certificate(_claims(), KEY)
    entry = json.loads(BUNDLE.to_json())["issuers"][0]
    key = OKPKey.import_key(entry["jwk"])
    assert key.thumbprint() == KEY.kid  # our kid is the RFC 7638 thumbprint
    verified = jws.deserialize_compact(token, key, algorithms=["EdDSA"])
    assert verified.headers() == {"alg": "EdDSA", "kid": KEY.kid, "typ": TOKEN_TYPE}
    assert json.loads(verified.payload) == _claims().payload()
    # A tampered token fails there too.
    header, payload, signature = token.split(".")
    with pytest.raises(BadSignatureError):
        jws.deserialize_compact(
            f"{header}.{payload}.{signature[:-4]}AAAA", key, algorithms=["EdDSA"]
        )


def test_certificates_signed_by_joserfc_verify_here() -> None:
    entry = json.loads(BUNDLE.to_json())["issuers"][0]
    private = OKPKey.import_key({**entry["jwk"], "d": _b64(KEY.private_key.private_bytes_raw())})
    token = jws.serialize_compact(
        {"alg": "EdDSA", "kid": KEY.kid, "typ": TOKEN_TYPE},
        json.dumps(_claims().payload()).encode(),
        private,
        algorithms=["EdDSA"],
    )
    assert _verdict(token) is Verdict.VALID


def test_the_qr_code_prints_legibly() -> None:
    # A long authority name and item name, as printed in Chinese: the worst case of our claims.
    claims = _claims(
        auth="湖南省益阳市资阳区长春镇人民政府便民服务中心",
        name="农村村民宅基地和建房（规划许可）审批",
    )
    token = sign_certificate(claims, KEY)
    code = segno.make(token, error="m", micro=False)
    print(f"\ncertificate token: {len(token)} bytes; QR version {code.version} at level M")
    # Version 25 (117 modules) printed 5 cm wide gives modules of 0.43 mm, which phones read
    # from paper and from a screen; the token stays well below that.
    assert code.version <= 25


# ---------------------------------------------------------------------------- bundle


def test_the_bundle_round_trips() -> None:
    other = _issuer("tongban/61", "61")
    bundle = TrustBundle((KEY.trusted(), other.trusted(not_after=NOW)))
    assert TrustBundle.from_json(bundle.to_json()) == bundle


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="x"), "not a tongban-trust-bundle/1"),
        (lambda d: d["issuers"][0].update(kid="AAAA"), "issuers[0]: kid"),
        (lambda d: d["issuers"][0]["jwk"].update(crv="X25519"), "issuers[0]: jwk"),
        (lambda d: d["issuers"][0].pop("origin"), "issuers[0]: 'origin'"),
        (lambda d: d["issuers"][0].update(not_before="2026-01-01"), "no time zone"),
    ],
)
def test_a_bad_bundle_names_the_entry(mutate: object, message: str) -> None:
    document = json.loads(BUNDLE.to_json())
    mutate(document)  # type: ignore[operator]
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TrustBundle.from_json(json.dumps(document))

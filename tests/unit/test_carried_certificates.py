"""异地代收代办: a peer's certificate issuers from the federation file (``trust_bundle``, checked
with errors naming the entry), and the check the off-site window runs on the certificate it
hands over: valid under that peer's keys, and this case's — offline, no call to the issuer."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_federation_witnessing import _parse, _peer

from hub.certificates import (
    CertificateClaims,
    IssuerKey,
    TrustBundle,
    check_carried_certificate,
    sign_certificate,
)
from hub.errors import ConfigurationError, InvalidInput

NOW = datetime(2026, 12, 1, 8, tzinfo=UTC)
CASE = "3f0e55f7-2f43-5c55-9a5b-6f8f2f9e6a10"
#: Another case's identifier (the serial differs).
IDENTIFIER_ELSEWHERE = "1.2.156.3005.2.110001.11610929MB0000001X.0000000000000001.01.X"


def _issuer(origin: str = "tongban/61") -> IssuerKey:
    return IssuerKey(Ed25519PrivateKey.generate(), origin, origin[-2:], NOW - timedelta(days=1))


def _bundle(tmp_path: Path, *keys: IssuerKey, name: str = "61-trust.json") -> Path:
    path = tmp_path / name
    path.write_text(TrustBundle(tuple(k.trusted() for k in keys)).to_json(), encoding="utf-8")
    return path


def _claims() -> CertificateClaims:
    from hub.domain.certificates import CertificateIdentifier

    identifier = str(CertificateIdentifier("110001", "11610929MB0000001X", "3F0E55F72F435C55"))
    return CertificateClaims(
        iss="tongban/61", jti=identifier, iat=int(NOW.timestamp()) - 60, ct="110001", item="070302001000", name="居民身份证换领", auth="白河县公安局",
        rg="610929000000", hld="ab" * 32, case=CASE, li=7,
    )  # fmt: skip


def test_the_peer_s_bundle_is_read_from_the_federation_file(tmp_path: Path) -> None:
    issuer = _issuer()
    _bundle(tmp_path, issuer)
    config = _parse(tmp_path, {"peers": [_peer(tmp_path, "61", trust_bundle="61-trust.json")]})
    (trusted,) = config.peers[0].certificate_issuers.issuers
    assert trusted.kid == issuer.kid and trusted.origin == "tongban/61"
    assert _parse(tmp_path, {"peers": [_peer(tmp_path, "61")]}).peers[0].certificate_issuers is None


@pytest.mark.parametrize(
    ("setup", "problem"),
    [
        ("missing", "does not exist|No such file"),
        ("garbage", "not JSON"),
        ("another node's key", "is a key of 'tongban/43', not of this peer"),
        ("empty", "names no issuer"),
    ],
)
def test_a_bad_bundle_names_the_entry(tmp_path: Path, setup: str, problem: str) -> None:
    path = tmp_path / "61-trust.json"
    if setup == "garbage":
        path.write_text("{not json", encoding="utf-8")
    elif setup == "another node's key":
        _bundle(tmp_path, _issuer("tongban/43"))
    elif setup == "empty":
        path.write_text(TrustBundle(()).to_json(), encoding="utf-8")
    with pytest.raises(ConfigurationError, match=problem) as refused:
        _parse(tmp_path, {"peers": [_peer(tmp_path, "61", trust_bundle=path.name)]})
    assert "peers[0].trust_bundle" in str(refused.value)


def _check(token: str, bundle: TrustBundle, **changes: Any) -> Any:
    arguments: dict[str, Any] = {"case_id": CASE, "certificate_id": _claims().jti, "now": NOW}
    arguments.update(changes)
    return check_carried_certificate(token, bundle, **arguments)


def test_the_window_hands_over_only_this_case_s_genuine_certificate() -> None:
    issuer, stranger = _issuer(), _issuer()
    bundle = TrustBundle((issuer.trusted(),))
    token = sign_certificate(_claims(), issuer)
    assert _check(token, bundle).claims.case == CASE
    head, body, signature = token.split(".")
    refusals = {
        "forged": ".".join([head, body[:-2] + ("AA" if body[-2:] != "AA" else "BB"), signature]),
        "unknown issuer": sign_certificate(_claims(), stranger),
        "not this case's": sign_certificate(
            dataclasses.replace(_claims(), case="00000000-0000-4000-8000-000000000000"), issuer
        ),
        "expired": sign_certificate(
            dataclasses.replace(_claims(), exp=int(NOW.timestamp()) - 1), issuer
        ),
        "attach the issuing node's certificate": "",
    }
    for expected, bad in refusals.items():
        with pytest.raises(InvalidInput, match=expected) as refused:
            _check(bad, bundle)
        assert refused.value.field == "certificate_token"
    # A genuine certificate of this case, but the case's identifier is another: refused too.
    with pytest.raises(InvalidInput, match="not this case's"):
        _check(token, bundle, certificate_id=IDENTIFIER_ELSEWHERE)

"""Every verdict of docs/certificates.md through ``tongban cert verify`` (in process, files in a
temporary directory) and through the library, with the documented exit code: 0 only for
``valid``, 1 for every other verdict, never a traceback; and the status-list attacks a verifier
meets on the command line (two lists at once, a list nested too deep to parse).

``cert verify`` reads the clock, so the certificates and lists here are dated around the time
the module is loaded, hours and days away from any boundary.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.certificates import (
    CertificateClaims,
    IssuerKey,
    StatusList,
    TrustBundle,
    Verdict,
    Verification,
    check_status,
    sign_certificate,
    sign_status_list,
    verify_certificate,
)
from hub.certificates_offline import OfflineVerifier
from hub.certificates_qr import read_certificate_qr
from hub.cli import main
from hub.domain.certificates import CertificateIdentifier

pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = 86400
KEY = IssuerKey(Ed25519PrivateKey.generate(), "tongban/43", "43", NOW - timedelta(days=30))
OTHER = IssuerKey(Ed25519PrivateKey.generate(), "tongban/61", "61", NOW - timedelta(days=30))
STRANGER = IssuerKey(Ed25519PrivateKey.generate(), "tongban/43", "43", NOW - timedelta(days=30))
BUNDLE = TrustBundle((KEY.trusted(), OTHER.trusted()))
VALID_ENTRY, REVOKED_ENTRY, SUSPENDED_ENTRY, LOG_SIZE = 7, 11, 12, 5000


def _certificate(entry: int, key: IssuerKey = KEY, **changes: object) -> str:
    values: dict[str, object] = {
        "iss": key.origin,
        "jti": str(CertificateIdentifier("150001", "11430902MB0000001X", f"{entry:016X}")),
        "iat": int((NOW - timedelta(days=2)).timestamp()),
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


def _list(key: IssuerKey = KEY, *, signed: datetime = NOW - timedelta(minutes=1)) -> str:
    status = StatusList(
        key.origin, LOG_SIZE, frozenset({REVOKED_ENTRY}), frozenset({SUSPENDED_ENTRY})
    )
    return sign_status_list(status, key, now=signed, ttl_s=DAY)


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    flipped = "A" if signature[10] != "A" else "B"
    return f"{header}.{payload}.{signature[:10]}{flipped}{signature[11:]}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


LIST = _list()
DEEP = _b64(b"[" * 100_000 + b"]" * 100_000)  # JSON nested beyond the recursion limit


@dataclass(frozen=True)
class Case:
    certificate: str | bytes  # the FILE (or, with qr, the image's bytes)
    status: str | bytes | None
    verdict: Verdict
    reason: str  # a part of the reason
    qr: bool = False


CASES = {
    # valid: exit 0, and says what was not checked.
    "valid, no list": Case(_certificate(VALID_ENTRY), None, Verdict.VALID, "status not checked"),
    "valid in the list": Case(
        _certificate(VALID_ENTRY), LIST, Verdict.VALID, "neither revoked nor suspended"
    ),
    "revoked": Case(_certificate(REVOKED_ENTRY), LIST, Verdict.REVOKED, "revoked (status list"),
    "suspended": Case(
        _certificate(SUSPENDED_ENTRY), LIST, Verdict.SUSPENDED, "suspended (status list"
    ),
    "expired": Case(
        _certificate(VALID_ENTRY, exp=int((NOW - timedelta(days=1)).timestamp())),
        None,
        Verdict.EXPIRED,
        "valid until",
    ),
    "expired, revoked in the list": Case(
        _certificate(REVOKED_ENTRY, exp=int((NOW - timedelta(days=1)).timestamp())),
        LIST,
        Verdict.EXPIRED,
        "valid until",
    ),
    "forged": Case(_tampered(_certificate(VALID_ENTRY)), None, Verdict.FORGED, "signature"),
    "forged, with a list": Case(
        _tampered(_certificate(VALID_ENTRY)), LIST, Verdict.FORGED, "signature"
    ),
    "forged: a header nested too deep": Case(
        f"{DEEP}.e30.{_b64(bytes(64))}", LIST, Verdict.FORGED, "the token is damaged"
    ),
    "forged: a status list as the certificate": Case(
        LIST, None, Verdict.FORGED, "tongban-status-list+jwt"
    ),
    "forged: a damaged certificate file": Case(
        '{"format": ' + "[" * 100_000 + "]" * 100_000 + "}",
        None,
        Verdict.FORGED,
        "the certificate file is damaged",
    ),
    "unknown issuer": Case(
        _certificate(VALID_ENTRY, STRANGER), LIST, Verdict.UNKNOWN_ISSUER, STRANGER.kid
    ),
    "status unknown: list too old": Case(
        _certificate(VALID_ENTRY),
        _list(signed=NOW - timedelta(days=2)),
        Verdict.STATUS_UNKNOWN,
        "list too old",
    ),
    "status unknown: list from the future": Case(
        _certificate(VALID_ENTRY),
        _list(signed=NOW + timedelta(hours=1)),
        Verdict.STATUS_UNKNOWN,
        "from the future",
    ),
    "status unknown: another issuer's list": Case(
        _certificate(REVOKED_ENTRY),
        _list(OTHER),
        Verdict.STATUS_UNKNOWN,
        "tongban/61's, not tongban/43's",
    ),
    "status unknown: a list by a key not in the bundle": Case(
        _certificate(REVOKED_ENTRY), _list(STRANGER), Verdict.STATUS_UNKNOWN, "not in the bundle"
    ),
    "status unknown: a forged list": Case(
        _certificate(REVOKED_ENTRY), _tampered(LIST), Verdict.STATUS_UNKNOWN, "does not verify"
    ),
    "status unknown: a truncated list": Case(
        _certificate(REVOKED_ENTRY),
        LIST[: len(LIST) // 2],
        Verdict.STATUS_UNKNOWN,
        "not a JWS compact token (2 parts)",
    ),
    "status unknown: a list without its signature": Case(
        _certificate(REVOKED_ENTRY),
        LIST.rsplit(".", 1)[0] + ".",
        Verdict.STATUS_UNKNOWN,
        "the status list is damaged",
    ),
    "status unknown: a certificate as the list": Case(
        _certificate(REVOKED_ENTRY),
        _certificate(VALID_ENTRY),
        Verdict.STATUS_UNKNOWN,
        "header is not an EdDSA status list's",
    ),
    "status unknown: a list header nested too deep": Case(
        _certificate(REVOKED_ENTRY),
        f"{DEEP}.{LIST.split('.', 1)[1]}",
        Verdict.STATUS_UNKNOWN,
        "damaged",
    ),
    "status unknown: two lists in one file": Case(
        _certificate(REVOKED_ENTRY),
        f"{LIST}\n{_list(signed=NOW - timedelta(hours=1))}",
        Verdict.STATUS_UNKNOWN,
        "not a JWS compact token",
    ),
    "status unknown: binary garbage for a list": Case(
        _certificate(REVOKED_ENTRY),
        b"\xff\xfe\x00 garbage",
        Verdict.STATUS_UNKNOWN,
        "not a JWS compact token",
    ),
    "status unknown: the certificate is newer than the list": Case(
        _certificate(LOG_SIZE), LIST, Verdict.STATUS_UNKNOWN, "predates the certificate"
    ),
    "unreadable": Case(b"not an image", LIST, Verdict.UNREADABLE, "not an image", qr=True),
}


def _write(path: Path, content: str | bytes) -> str:
    if isinstance(content, str):
        path.write_text(content + "\n", encoding="utf-8")
    else:
        path.write_bytes(content)
    return str(path)


def _library(case: Case) -> Verification:
    """What the library says: ``verify_certificate`` + ``check_status`` (or the QR reading)."""
    if case.qr:
        assert isinstance(case.certificate, bytes)
        reading = read_certificate_qr(case.certificate)
        assert reading.token is None
        return reading.unreadable()
    token = case.certificate if isinstance(case.certificate, str) else ""
    if token.lstrip().startswith("{"):  # a certificate file: the CLI reads it first
        return Verification(Verdict.FORGED, "the certificate file is damaged")
    result = verify_certificate(token, BUNDLE, now=NOW)
    if case.status is not None:
        status = case.status if isinstance(case.status, str) else ""  # not ASCII: not a token
        result = check_status(result, status, BUNDLE, now=NOW)
        offline = OfflineVerifier(BUNDLE, status).verify(token, now=NOW)
        assert (offline.verdict, offline.reason) == (result.verdict, result.reason)
    return result


@pytest.mark.parametrize("name", list(CASES))
def test_each_verdict_with_its_exit_code_in_the_cli_and_the_library(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CASES[name]
    trust = _write(tmp_path / "trust.json", BUNDLE.to_json())
    given = _write(tmp_path / ("photo.png" if case.qr else "card"), case.certificate)
    arguments = ["cert", "verify", *(["--qr", given] if case.qr else [given]), "--trust", trust]
    if case.status is not None:
        arguments += ["--status", _write(tmp_path / "status.jws", case.status)]
    expected_exit = 0 if case.verdict is Verdict.VALID else 1

    assert main([*arguments, "--json"]) == expected_exit
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert document["verdict"] == case.verdict.value
    assert case.reason in document["reason"], document["reason"]
    # The fields are printed unless forged (and there are none without a verified signature).
    shown = case.verdict not in (Verdict.FORGED, Verdict.UNKNOWN_ISSUER, Verdict.UNREADABLE)
    assert ("certificate" in document) is shown
    assert err == ""

    assert main(arguments) == expected_exit
    out, err = capsys.readouterr()
    assert out.startswith(f"{case.verdict.value}: "), out
    assert err == ""

    library = _library(case)
    assert library.verdict is case.verdict
    assert case.reason in library.reason, library.reason


def test_two_status_lists_at_once_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The newer list revokes what the older (still current) one does not: the command line must
    # not silently believe whichever came last.
    trust = _write(tmp_path / "trust.json", BUNDLE.to_json())
    card = _write(tmp_path / "card.jws", _certificate(VALID_ENTRY))
    newer_status = StatusList(KEY.origin, LOG_SIZE, frozenset({VALID_ENTRY}))
    newer = _write(tmp_path / "newer.jws", sign_status_list(newer_status, KEY, now=NOW, ttl_s=DAY))
    older = _write(tmp_path / "older.jws", _list(signed=NOW - timedelta(hours=2)))
    verify = ["cert", "verify", card, "--trust", trust]
    assert main([*verify, "--status", newer]) == 1
    assert capsys.readouterr().out.startswith("revoked: ")
    for lists in ([newer, older], [older, newer], [newer, newer]):
        assert main([*verify, "--status", lists[0], "--status", lists[1]]) == 2
        out, err = capsys.readouterr()
        assert out == "" and "give one status list" in err


def test_a_mistake_in_the_call_exits_2_with_no_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 is a verdict other than ``valid``; a call that cannot be carried out is exit 2,
    the reason on stderr, nothing on stdout (a script cannot take it for a verdict)."""
    trust = _write(tmp_path / "trust.json", BUNDLE.to_json())
    card = _write(tmp_path / "card.jws", _certificate(VALID_ENTRY))
    bad_bundle = _write(tmp_path / "bad.json", "{}")
    missing = str(tmp_path / "missing.jws")
    for arguments, said in (
        (["cert", "verify", "--trust", trust], "give the certificate"),
        (["cert", "verify", missing, "--trust", trust], "missing.jws"),
        (["cert", "verify", card, "--trust", bad_bundle], "not a tongban-trust-bundle/1"),
        (["cert", "verify", card, "--trust", trust, "--status", missing], "missing.jws"),
    ):
        assert main(arguments) == 2, arguments
        out, err = capsys.readouterr()
        assert out == "" and said in err, (arguments, err)

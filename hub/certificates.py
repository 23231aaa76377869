"""Signed electronic certificates (电子证照) and their offline verification.

A certificate is a JWS in compact serialisation (RFC 7515) signed with EdDSA over Ed25519
(RFC 8037) by the node's certificate-issuer key; its payload is a JSON object of claims (the
registered JWT claim names where one fits: ``iss``, ``jti``, ``iat``, ``nbf``, ``exp``). Why
JWS and not COSE/CWT, and every claim, are in ``docs/certificates.md``.

Signing and verifying are written here with ``cryptography``'s Ed25519 rather than a JOSE
library: the verifier accepts exactly one algorithm and one token type, so no header can pick
another algorithm (``none``, HS256 with a public key as secret), and every refusal becomes a
verdict with a reason instead of an exception. The tests verify our tokens with ``joserfc``,
an independent JOSE implementation, so the format is the standard's and not only ours.

A verifier needs no network: a **trust bundle** (``tongban trust export``) names each issuer's
public key (a JWK, with its RFC 7638 thumbprint as ``kid``), its node's log origin and region,
and the period the key may sign in. :func:`verify` returns a :class:`Verification` — one of
the :class:`Verdict` values with the reason — and never raises for anything in the token.
"""

from __future__ import annotations

import base64
import binascii
import enum
import gzip
import hashlib
import json
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from functools import cached_property, lru_cache
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from eventsourcing.utils import get_topic

from hub.domain.case import Case
from hub.domain.certificates import CertificateIdentifier, CertificateStatus
from hub.errors import ConfigurationError, InvalidInput

#: The JWS ``typ`` of a Tongban certificate (RFC 8725 §3.11: explicit typing).
TOKEN_TYPE = "tongban-cert+jwt"
ALGORITHM = "EdDSA"
BUNDLE_FORMAT = "tongban-trust-bundle/1"

#: China Standard Time, in which a certificate's last day of validity ends.
CHINA = timezone(timedelta(hours=8))

#: How far a certificate's issue time may be ahead of the verifier's clock.
CLOCK_SKEW_S = 300


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2); ValueError otherwise."""
    if not text or "=" in text:
        raise ValueError("not unpadded base64url")
    try:
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"not base64url: {error}") from None
    if _b64url(decoded) != text:
        raise ValueError("not canonical base64url")
    return decoded


def _compact_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The RFC 8037 JWK of an Ed25519 public key (members in RFC 7638's order)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}


def key_thumbprint(public_key: Ed25519PublicKey) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url): the key's ``kid``."""
    return _b64url(hashlib.sha256(_compact_json(public_jwk(public_key))).digest())


_REQUIRED_CLAIMS: tuple[tuple[str, type], ...] = (
    ("iss", str), ("jti", str), ("iat", int), ("ct", str), ("item", str), ("name", str),
    ("auth", str), ("rg", str), ("hld", str), ("case", str), ("li", int),
)  # fmt: skip


@dataclass(frozen=True)
class CertificateClaims:
    """What a certificate says (the JWS payload). No personal data in clear: ``hld`` is the
    case's salted commitment to the holder's ID number (hex)."""

    iss: str  # the issuing node's log origin
    jti: str  # the certificate identifier (GB/T 36904)
    iat: int  # issued (the issuing event's time), seconds since the epoch
    ct: str  # certificate type code (catalogue)
    item: str  # service item code
    name: str  # service item name
    auth: str  # issuing authority's name
    rg: str  # competent region (12 digits)
    hld: str  # holder: commitment to the ID number
    case: str  # case id
    li: int  # ledger index of the issuing event in the issuer's log
    exp: int | None = None  # end of validity (None: no expiry, 长期有效)
    # The certificate's entry in its issuer's status list (equal to ``li``); absent from
    # certificates written before status lists, whose entry is ``li``.
    status_index: int | None = None

    @property
    def status_entry(self) -> int:
        """The certificate's index in its issuer's status list."""
        return self.li if self.status_index is None else self.status_index

    def payload(self) -> dict[str, Any]:
        """The JSON payload: ``nbf`` equals ``iat``; no ``exp`` member without an expiry."""
        body = {key: value for key, value in asdict(self).items() if value is not None}
        body["nbf"] = self.iat
        return body

    @classmethod
    def from_payload(cls, body: Any) -> CertificateClaims:
        """Parse a payload strictly; InvalidInput names the first bad member."""
        if not isinstance(body, dict):
            raise InvalidInput("payload", type(body).__name__, "expected a JSON object")
        values: dict[str, Any] = {}
        for name, kind in _REQUIRED_CLAIMS:
            value = body.get(name)
            # Exact types: JSON gives str, int, bool (not an int here), float, list, dict.
            if type(value) is not kind:
                raise InvalidInput(name, value, f"expected {kind.__name__}")
            values[name] = value
        optional: dict[str, int | None] = {}
        for name in ("exp", "status_index"):
            value = body.get(name)
            if value is not None and type(value) is not int:
                raise InvalidInput(name, value, "expected int")
            optional[name] = value
        if body.get("nbf") != values["iat"]:
            raise InvalidInput("nbf", body.get("nbf"), "must equal iat")
        if values["li"] < 0:
            raise InvalidInput("li", values["li"], "no leaf has a negative index")
        # The entry is the issuing leaf's index: one that differs would read another
        # certificate's bit in the status list.
        if optional["status_index"] is not None and optional["status_index"] != values["li"]:
            raise InvalidInput("status_index", optional["status_index"], "must equal li")
        return cls(**values, exp=optional["exp"], status_index=optional["status_index"])


@dataclass(frozen=True)
class IssuerKey:
    """A node's certificate-issuer signing key, the log it issues into, and since when."""

    private_key: Ed25519PrivateKey
    origin: str
    region: str
    not_before: datetime

    @property
    def kid(self) -> str:
        """The key's RFC 7638 thumbprint."""
        return key_thumbprint(self.private_key.public_key())

    def trusted(self, not_after: datetime | None = None) -> TrustedIssuer:
        """This key's entry in a trust bundle."""
        return TrustedIssuer(
            kid=self.kid,
            origin=self.origin,
            region=self.region,
            jwk=public_jwk(self.private_key.public_key()),
            not_before=self.not_before,
            not_after=not_after,
        )


def claims_for(
    case: Case, event: Case.CertificateIssued, ledger_index: int, origin: str
) -> CertificateClaims:
    """The claims of ``case``'s certificate: its issuing event, at ``ledger_index`` of the log
    ``origin``."""
    exp = None
    if event.valid_until:
        # Valid through the whole last day, China Standard Time (the halls' day).
        last_day = date.fromisoformat(event.valid_until) + timedelta(days=1)
        exp = int(datetime.combine(last_day, time(), CHINA).timestamp())
    return CertificateClaims(
        iss=origin,
        jti=event.certificate_id,
        iat=int(event.timestamp.timestamp()),
        ct=event.type_code,
        item=case.item_code,
        name=case.item_name,
        auth=event.authority,
        rg=event.region,
        hld=event.holder,
        case=str(case.id),
        li=ledger_index,
        exp=exp,
        status_index=ledger_index,
    )


def sign_certificate(claims: CertificateClaims, key: IssuerKey) -> str:
    """The certificate as a JWS compact token (``header.payload.signature``)."""
    header = {"alg": ALGORITHM, "kid": key.kid, "typ": TOKEN_TYPE}
    signing_input = f"{_b64url(_compact_json(header))}.{_b64url(_compact_json(claims.payload()))}"
    signature = key.private_key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{_b64url(signature)}"


# ---------------------------------------------------------------------------- trust bundle


@dataclass(frozen=True)
class TrustedIssuer:
    """One issuer key a verifier trusts, and the period in which it may sign."""

    kid: str
    origin: str
    region: str
    jwk: dict[str, str]
    not_before: datetime
    not_after: datetime | None = None
    # How long a status list of this issuer may be current (its ``TONGBAN_STATUS_LIST_TTL_S``):
    # a list claiming longer is not read, so a key stolen after its end cannot backdate a list
    # into its period that stays current for years. None: not stated (bundles before it).
    status_list_ttl_s: int | None = None

    def public_key(self) -> Ed25519PublicKey:
        """The Ed25519 public key of the JWK (decoded once per entry: verifiers check many
        certificates with the same bundle)."""
        return self._public_key

    @cached_property
    def _public_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(_b64url_decode(self.jwk["x"]))

    def covers(self, moment: datetime) -> bool:
        """Whether the key may have signed at ``moment``."""
        return self.not_before <= moment and (self.not_after is None or moment <= self.not_after)


@dataclass(frozen=True)
class TrustBundle:
    """The issuers a verifier trusts (``tongban trust export``), as JSON."""

    issuers: tuple[TrustedIssuer, ...] = field(default_factory=tuple)

    def find(self, kid: str) -> TrustedIssuer | None:
        """The issuer whose key has thumbprint ``kid``."""
        return self._by_kid.get(kid)

    @cached_property
    def _by_kid(self) -> dict[str, TrustedIssuer]:
        # The first entry of a kid wins, as the linear search it replaces did.
        index: dict[str, TrustedIssuer] = {}
        for issuer in self.issuers:
            index.setdefault(issuer.kid, issuer)
        return index

    def to_json(self) -> str:
        """The bundle file's text."""
        return json.dumps(
            {
                "format": BUNDLE_FORMAT,
                "issuers": [
                    {
                        "kid": issuer.kid,
                        "origin": issuer.origin,
                        "region": issuer.region,
                        "jwk": {**issuer.jwk, "kid": issuer.kid, "alg": ALGORITHM},
                        "not_before": issuer.not_before.isoformat(),
                        "not_after": issuer.not_after.isoformat() if issuer.not_after else None,
                        **(
                            {"status_list_ttl_s": issuer.status_list_ttl_s}
                            if issuer.status_list_ttl_s is not None
                            else {}
                        ),
                    }
                    for issuer in self.issuers
                ],
            },
            ensure_ascii=False,
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, where: str = "trust bundle") -> TrustBundle:
        """Parse a bundle; ConfigurationError naming the entry and member otherwise."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigurationError(f"{where}: not JSON: {error}") from None
        if not isinstance(document, dict) or document.get("format") != BUNDLE_FORMAT:
            raise ConfigurationError(f"{where}: not a {BUNDLE_FORMAT} document")
        entries = document.get("issuers")
        if not isinstance(entries, list):
            raise ConfigurationError(f"{where}: issuers: expected a list")
        issuers = []
        for number, entry in enumerate(entries):
            at = f"{where}: issuers[{number}]"
            try:
                jwk = entry["jwk"]
                if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                    raise ValueError("jwk: expected an OKP Ed25519 key")
                not_after = entry.get("not_after")
                ttl = entry.get("status_list_ttl_s")
                if ttl is not None and (type(ttl) is not int or ttl <= 0):
                    raise ValueError("status_list_ttl_s: expected a positive whole number")
                issuer = TrustedIssuer(
                    kid=str(entry["kid"]),
                    origin=str(entry["origin"]),
                    region=str(entry["region"]),
                    jwk={"crv": "Ed25519", "kty": "OKP", "x": str(jwk["x"])},
                    not_before=_aware(datetime.fromisoformat(entry["not_before"])),
                    not_after=_aware(datetime.fromisoformat(not_after)) if not_after else None,
                    status_list_ttl_s=ttl,
                )
                if key_thumbprint(issuer.public_key()) != issuer.kid:
                    raise ValueError("kid: not the key's RFC 7638 thumbprint")
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                raise ConfigurationError(f"{at}: {error}") from None
            issuers.append(issuer)
        return cls(tuple(issuers))


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{moment.isoformat()} has no time zone")
    return moment


# ---------------------------------------------------------------------------- verification


class Verdict(enum.Enum):
    """What an offline verification concludes."""

    VALID = "valid"
    REVOKED = "revoked"
    SUSPENDED = "suspended"
    EXPIRED = "expired"
    FORGED = "forged"
    UNKNOWN_ISSUER = "unknown issuer"
    STATUS_UNKNOWN = "status unknown"
    #: ``cert verify --qr``: the image holds no QR code, several, or one that cannot be decoded.
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Verification:
    """A verdict, why, and the claims when the signature verified."""

    verdict: Verdict
    reason: str
    claims: CertificateClaims | None = None
    issuer: TrustedIssuer | None = None


def verify_certificate(token: str, bundle: TrustBundle, *, now: datetime) -> Verification:
    """Verify a certificate token offline against ``bundle`` at ``now``; never raises.

    Checks, in order: the token's shape and header (only ``EdDSA`` and our ``typ``), the issuer
    key (``kid``) in the bundle, the signature, the claims, the issuer's origin and region, the
    identifier's check character, the key's period at the issue time, and the validity period.
    """
    forged = Verdict.FORGED
    parts = token.strip().split(".")
    if len(parts) != 3:
        return Verification(forged, f"not a JWS compact token ({len(parts)} parts, expected 3)")
    kid, problem = _read_header(parts[0])
    if problem:
        return Verification(forged, problem)
    try:
        signature = _b64url_decode(parts[2])
        payload_bytes = _b64url_decode(parts[1])
    except ValueError as error:
        return Verification(forged, f"the token is damaged: {error}")
    issuer = bundle.find(kid) if isinstance(kid, str) else None
    if issuer is None:
        return Verification(Verdict.UNKNOWN_ISSUER, f"no key {kid!r} in the trust bundle")
    try:
        issuer.public_key().verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
    except (InvalidSignature, ValueError):
        return Verification(forged, f"the signature does not verify with {issuer.origin}'s key")
    try:
        claims = CertificateClaims.from_payload(json.loads(payload_bytes))
    except (ValueError, RecursionError, InvalidInput) as error:
        return Verification(forged, f"signed, but the claims are unreadable: {error}")
    found = Verification(forged, "", claims, issuer)
    if claims.iss != issuer.origin or claims.rg[: len(issuer.region)] != issuer.region:
        return _with(found, f"issued as {claims.iss} for {claims.rg}, but the key is "
                     f"{issuer.origin}'s ({issuer.region})")  # fmt: skip
    try:
        CertificateIdentifier.parse(claims.jti)
    except InvalidInput as error:
        return _with(found, f"the identifier is invalid: {error.reason}")
    try:
        issued = datetime.fromtimestamp(claims.iat, UTC)
        if claims.exp is not None:
            datetime.fromtimestamp(claims.exp, UTC)
    except (OverflowError, OSError, ValueError):
        return _with(found, "a time in the claims is out of any calendar's range")
    if not issuer.covers(issued):
        return _with(found, f"issued {issued.isoformat()}, outside the key's period")
    if claims.iat > now.timestamp() + CLOCK_SKEW_S:
        return _with(found, f"issued in the future ({issued.isoformat()})")
    if claims.exp is not None and now.timestamp() >= claims.exp:
        expired = datetime.fromtimestamp(claims.exp, UTC).isoformat()
        return Verification(Verdict.EXPIRED, f"valid until {expired}", claims, issuer)
    return Verification(
        Verdict.VALID,
        f"signed by {issuer.origin} ({issuer.region}); status not checked",
        claims,
        issuer,
    )


@lru_cache(maxsize=256)
def _read_header(encoded: str) -> tuple[object, str]:
    """A certificate's JWS header: its ``kid`` (any JSON value), or why it is refused.

    Cached: every certificate of one issuer key has the same header, so a verifier checking
    many decodes it once (a pure function of the text; the cache holds no secret).
    """
    try:
        header = json.loads(_b64url_decode(encoded))
    # JSONDecodeError and UnicodeDecodeError are ValueErrors; JSON nested deeper than the
    # interpreter's recursion limit is a RecursionError.
    except (ValueError, RecursionError) as error:
        return None, f"the token is damaged: {error}"
    if not isinstance(header, dict):
        return None, "the JWS header is not a JSON object"
    if header.get("alg") != ALGORITHM:
        return None, f"algorithm {header.get('alg')!r} is not {ALGORITHM}"
    if header.get("typ") != TOKEN_TYPE:
        return None, f"type {header.get('typ')!r} is not {TOKEN_TYPE}"
    if set(header) - {"alg", "kid", "typ"}:
        return None, f"unexpected header members {sorted(set(header) - {'alg', 'kid', 'typ'})}"
    return header.get("kid"), ""


def check_carried_certificate(
    token: str, bundle: TrustBundle, *, case_id: str, certificate_id: str, now: datetime
) -> Verification:
    """The certificate a window hands over for another node (异地代收代办): ``token`` must be
    ``valid`` under ``bundle`` (that node's issuers) and be this case's certificate.

    Raises InvalidInput naming ``certificate_token`` with the verdict and its reason otherwise.
    """
    if not token.strip():
        raise InvalidInput(
            "certificate_token", "", "attach the issuing node's certificate (its JWS token)"
        )
    result = verify_certificate(token, bundle, now=now)
    if result.verdict is not Verdict.VALID:
        raise InvalidInput(
            "certificate_token", "<token>", f"{result.verdict.value}: {result.reason}"
        )
    assert result.claims is not None
    if (result.claims.case, result.claims.jti) != (case_id, certificate_id):
        raise InvalidInput(
            "certificate_token", "<token>",
            f"the certificate {result.claims.jti} of case {result.claims.case}, not this case's "
            f"{certificate_id}",
        )  # fmt: skip
    return result


def _with(found: Verification, reason: str) -> Verification:
    return Verification(found.verdict, reason, found.claims, found.issuer)


# ---------------------------------------------------------------------------- status lists

#: The JWS ``typ`` of a status list.
STATUS_LIST_TYPE = "tongban-status-list+jwt"

#: A list has at least this many entries (W3C Bitstring Status List: 16 KiB of bits), and a
#: multiple of it: a small node's list does not tell how many certificates it issued.
MIN_STATUS_ENTRIES = 131_072

_ISSUED = get_topic(Case.CertificateIssued)
_STATUS_OF_TOPIC = {
    get_topic(Case.CertificateSuspended): CertificateStatus.SUSPENDED,
    get_topic(Case.CertificateReinstated): CertificateStatus.VALID,
    get_topic(Case.CertificateRevoked): CertificateStatus.REVOKED,
}


@dataclass(frozen=True)
class StatusList:
    """Which certificates of one log are revoked or suspended, as its first ``log_size`` leaves
    say. A certificate's entry is the ledger index of its issuing event."""

    origin: str
    log_size: int
    revoked: frozenset[int] = frozenset()
    suspended: frozenset[int] = frozenset()

    @property
    def size(self) -> int:
        """Entries in each bitstring: a multiple of :data:`MIN_STATUS_ENTRIES` covering the log."""
        blocks = max(1, -(-self.log_size // MIN_STATUS_ENTRIES))
        return blocks * MIN_STATUS_ENTRIES

    @classmethod
    def from_leaves(
        cls, origin: str, log_size: int, leaves: Iterable[tuple[int, UUID, str]]
    ) -> StatusList:
        """The list that the log's leaves ``(index, aggregate id, topic)`` give, in log order.

        A pure function of the log: an auditor with the log rebuilds the same list. Each
        case's status is the fold of its status events after its ``CertificateIssued`` leaf
        (the binding check has already refused any change the case did not allow).
        """
        entry: dict[UUID, int] = {}
        status: dict[UUID, CertificateStatus] = {}
        for index, case_id, topic in leaves:
            if topic == _ISSUED:
                entry[case_id] = index
                status[case_id] = CertificateStatus.VALID
            elif topic in _STATUS_OF_TOPIC and case_id in entry:
                status[case_id] = _STATUS_OF_TOPIC[topic]
        return cls(
            origin=origin,
            log_size=log_size,
            revoked=frozenset(
                e for c, e in entry.items() if status[c] is CertificateStatus.REVOKED
            ),
            suspended=frozenset(
                e for c, e in entry.items() if status[c] is CertificateStatus.SUSPENDED
            ),
        )


def _entries(
    entry: dict[UUID, int], status: dict[UUID, CertificateStatus], wanted: CertificateStatus
) -> frozenset[int]:
    return frozenset(index for case, index in entry.items() if status[case] is wanted)


def _whole_numbers(body: dict[str, Any], *names: str) -> dict[str, int]:
    numbers: dict[str, int] = {}
    for name in names:
        value = body.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name}: expected a whole number")
        numbers[name] = value
    return numbers


def _encode_bits(entries: frozenset[int], size: int) -> str:
    """W3C Bitstring Status List encoding: bit ``i`` is the ``i % 8``-th bit from the left of
    byte ``i // 8``; GZIP-compressed (no timestamp, so the same list gives the same bytes);
    base64url without padding."""
    bits = bytearray(size // 8)
    for index in entries:
        bits[index // 8] |= 0x80 >> (index % 8)
    return _b64url(gzip.compress(bytes(bits), mtime=0))


def _decode_bits(text: str, size: int) -> bytes:
    bits = gzip.decompress(_b64url_decode(text))
    if len(bits) * 8 != size:
        raise ValueError(f"the bitstring has {len(bits) * 8} entries, not {size}")
    return bits


def _bit(bits: bytes, index: int) -> bool:
    return bool(bits[index // 8] & (0x80 >> (index % 8)))


def sign_status_list(status: StatusList, key: IssuerKey, *, now: datetime, ttl_s: int) -> str:
    """The status list as a JWS compact token signed with the issuer key, current for
    ``ttl_s`` seconds from ``now``."""
    header = {"alg": ALGORITHM, "kid": key.kid, "typ": STATUS_LIST_TYPE}
    valid_from = int(now.timestamp())
    payload = {
        "iss": status.origin,
        "valid_from": valid_from,
        "valid_until": valid_from + ttl_s,
        "log_size": status.log_size,
        "size": status.size,
        "revocation": _encode_bits(status.revoked, status.size),
        "suspension": _encode_bits(status.suspended, status.size),
    }
    signing_input = f"{_b64url(_compact_json(header))}.{_b64url(_compact_json(payload))}"
    return f"{signing_input}.{_b64url(key.private_key.sign(signing_input.encode('ascii')))}"


def check_status(
    verification: Verification, status_token: str, bundle: TrustBundle, *, now: datetime
) -> Verification:
    """Read a verified certificate's entry in a downloaded status list; never raises.

    Only a ``valid`` verdict is looked further at (a forged, expired or unknown certificate
    keeps its verdict). The list must be signed by a key in ``bundle`` of the certificate's
    issuer (its log origin), within the key's period, be current at ``now`` and cover the
    certificate's entry; otherwise the verdict is ``status unknown`` with the reason — never
    ``valid``. Nothing is asked of the issuer: it cannot learn which certificate is checked.

    Equal to ``read_status_list(status_token, bundle).check(verification, now=now)``; a
    verifier checking many certificates against one list reads it once (:class:`StatusListReading`).
    """
    if verification.verdict is not Verdict.VALID:
        return verification
    return read_status_list(status_token, bundle).check(verification, now=now)


@dataclass(frozen=True)
class StatusListReading:
    """A status list as read and signature-checked once, before any certificate is looked up.

    What does not depend on the certificate or the time (the header, the key, the signature,
    the claims, the bitstrings) is checked here; :meth:`check` does the rest for each
    certificate. ``problem`` is why the list cannot be used; ``signer`` is None when its key is
    not known (that problem is reported before the issuer comparison, the others after it).
    """

    problem: str
    signer: TrustedIssuer | None = None
    valid_from: int = 0
    valid_until: int = 0
    log_size: int = 0
    revocation: bytes = b""
    suspension: bytes = b""

    def check(self, verification: Verification, *, now: datetime) -> Verification:
        """The certificate's status in this list at ``now`` (see :func:`check_status`)."""
        claims, issuer = verification.claims, verification.issuer
        if verification.verdict is not Verdict.VALID or claims is None or issuer is None:
            return verification
        unknown = Verification(Verdict.STATUS_UNKNOWN, "", claims, issuer)
        signer = self.signer
        if signer is None:
            return _with(unknown, self.problem)
        if signer.origin != claims.iss:
            return _with(unknown, f"the status list is {signer.origin}'s, not {claims.iss}'s")
        if self.problem:
            return _with(unknown, self.problem)
        valid_from, signed_in_period, as_of = self._signing
        if not signed_in_period:
            return _with(
                unknown, f"the list was signed {valid_from.isoformat()}, outside its key's period"
            )
        ttl = signer.status_list_ttl_s
        if ttl is not None and self.valid_until - self.valid_from > ttl:
            return _with(
                unknown,
                f"the list claims to be current for {self.valid_until - self.valid_from} s, "
                f"longer than its issuer's time to live ({ttl} s)",
            )
        moment = now.timestamp()
        if self.valid_from > moment + CLOCK_SKEW_S:
            return _with(unknown, f"the status list is from the future ({valid_from.isoformat()})")
        if moment >= self.valid_until:
            valid_until = datetime.fromtimestamp(self.valid_until, UTC)
            return _with(unknown, f"list too old: it was current until {valid_until.isoformat()}")
        entry = claims.status_entry
        if entry < 0:  # no leaf has a negative index (and bits[-1] is another entry's)
            return _with(unknown, f"the list has no entry {entry}")
        if entry >= self.log_size:
            return _with(
                unknown,
                f"the list predates the certificate (entry {entry}; the list covers "
                f"{self.log_size} leaves of the log)",
            )
        if _bit(self.revocation, entry):
            return Verification(Verdict.REVOKED, f"revoked ({as_of})", claims, issuer)
        if _bit(self.suspension, entry):
            return Verification(Verdict.SUSPENDED, f"suspended ({as_of})", claims, issuer)
        return Verification(
            Verdict.VALID,
            f"signed by {issuer.origin} ({issuer.region}); neither revoked nor suspended ({as_of})",
            claims,
            issuer,
        )

    @cached_property
    def _signing(self) -> tuple[datetime, bool, str]:
        # When the list was signed, whether its key's period covers that, and how verdicts
        # cite it: the same for every certificate looked up, so worked out once.
        valid_from = datetime.fromtimestamp(self.valid_from, UTC)
        covered = self.signer is not None and self.signer.covers(valid_from)
        return valid_from, covered, f"status list of {valid_from.isoformat()}"


def read_status_list(status_token: str, bundle: TrustBundle) -> StatusListReading:
    """Read and signature-check a downloaded status list once; never raises (see
    :class:`StatusListReading`)."""
    parts = status_token.strip().split(".")
    if len(parts) != 3:
        return StatusListReading(f"the status list is not a JWS compact token ({len(parts)} parts)")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        signature = _b64url_decode(parts[2])
        payload_bytes = _b64url_decode(parts[1])
    except (ValueError, RecursionError) as error:  # RecursionError: JSON nested too deep
        return StatusListReading(f"the status list is damaged: {error}")
    if (
        not isinstance(header, dict)
        or set(header) != {"alg", "kid", "typ"}
        or header["alg"] != ALGORITHM
        or header["typ"] != STATUS_LIST_TYPE
    ):
        return StatusListReading("the status list's header is not an EdDSA status list's")
    signer = bundle.find(header["kid"]) if isinstance(header["kid"], str) else None
    if signer is None:
        return StatusListReading(f"the status list's key {header['kid']!r} is not in the bundle")
    try:
        signer.public_key().verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
    except (InvalidSignature, ValueError):
        return StatusListReading(
            f"the status list's signature does not verify with {signer.origin}'s", signer
        )
    try:
        body = json.loads(payload_bytes)
        if not isinstance(body, dict) or body.get("iss") != signer.origin:
            raise ValueError(f"iss is not {signer.origin}")
        numbers = _whole_numbers(body, "valid_from", "valid_until", "log_size", "size")
        size = numbers["size"]
        if size % 8 or size < numbers["log_size"]:
            raise ValueError(f"size {size} does not cover the log")
        revocation = _decode_bits(str(body.get("revocation")), size)
        suspension = _decode_bits(str(body.get("suspension")), size)
        for name in ("valid_from", "valid_until"):
            datetime.fromtimestamp(numbers[name], UTC)  # within any calendar's range
    except (ValueError, OSError, EOFError, OverflowError, RecursionError, zlib.error) as error:
        return StatusListReading(f"the status list is unreadable: {error}", signer)
    return StatusListReading(
        "",
        signer,
        valid_from=numbers["valid_from"],
        valid_until=numbers["valid_until"],
        log_size=numbers["log_size"],
        revocation=revocation,
        suspension=suspension,
    )


__all__ = [
    "ALGORITHM",
    "MIN_STATUS_ENTRIES",
    "STATUS_LIST_TYPE",
    "TOKEN_TYPE",
    "CertificateClaims",
    "IssuerKey",
    "StatusList",
    "StatusListReading",
    "TrustBundle",
    "TrustedIssuer",
    "Verdict",
    "Verification",
    "check_status",
    "claims_for",
    "key_thumbprint",
    "public_jwk",
    "read_status_list",
    "sign_certificate",
    "sign_status_list",
    "verify_certificate",
]

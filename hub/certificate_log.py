"""Certificates bound to the issuer's log: the certificate file with its receipt, and its check.

A certificate token (:mod:`hub.certificates`) says it was issued by the event at leaf ``li`` of
its issuer's log. The **certificate file** written by ``tongban cert receipt`` carries the proof
of that, so a verifier checks it offline with the trust bundle alone::

    {"format": "tongban-certificate/1",
     "token":   "<the JWS compact token>",
     "event":   "<base64 of the issuing event's stored bytes>",
     "receipt": "<the c2sp.org/tlog-proof@v1 receipt of its leaf, as text>"}

The receipt's checkpoint is a **final** one: signed by the issuer's log key and cosigned by at
least ``k`` of the witnesses the issuer's federation trusts (``docs/witnessing.md``). The trust
bundle (``tongban trust export``) names, beside the issuer keys, each issuer log's verifier key,
its witnesses' cosignature keys and ``k``: the ``logs`` member, read here (older bundles
without it still verify certificates, never receipts).

:func:`check_receipt` refuses, as ``forged`` with a reason beginning "not bound to the log", a
receipt whose leaf is another one than the certificate's issuing event (another index, case,
log or event type), event bytes that are not the leaf's or that say another identifier, holder,
type, authority, region or validity than the token, an inclusion proof that does not verify,
a checkpoint not signed by the issuer's log key, and one cosigned by fewer than ``k`` trusted
witnesses (cosignatures by unknown witnesses do not count, and are named). A genuine issuer
always hands out a receipt that verifies, so a failing one is treated as the forgery the log
exists to expose — never ``valid``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from hub.application.hub import HubApplication
from hub.certificates import (
    CHINA,
    CertificateClaims,
    IssuerKey,
    StatusList,
    Verdict,
    Verification,
    sign_status_list,
)
from hub.domain.case import Case
from hub.domain.status_lists import StatusListPublication, digest_of_log, token_digest
from hub.errors import ConfigurationError
from hub.integrity.integrator import LedgerView
from ledger import (
    KEY_TYPE_COSIGNATURE_V1,
    CosignatureVerifier,
    KeyFormatError,
    LedgerError,
    NoteVerifier,
    PolicyError,
    Receipt,
    Verifier,
    WitnessPolicy,
    parse_note,
    parse_verifier_key,
    verify_receipt,
)

CERTIFICATE_FILE_FORMAT = "tongban-certificate/1"
_ISSUED_TOPIC = get_topic(Case.CertificateIssued)
NOT_BOUND = "not bound to the log"


# ---------------------------------------------------------------------------- the trust bundle


@dataclass(frozen=True)
class TrustedLog:
    """An issuer's log as a verifier trusts it: its key(s), witnesses and witness policy."""

    origin: str
    log_keys: tuple[str, ...]
    witness_keys: tuple[str, ...] = ()
    witness_k: int = 0

    def verifiers(self) -> list[NoteVerifier]:
        """The note verifiers of the log's checkpoints."""
        return [Verifier.from_key(key) for key in self.log_keys]

    def policy(self) -> WitnessPolicy:
        """k of the trusted witnesses must have cosigned a checkpoint."""
        witnesses = [CosignatureVerifier(*_cosignature_key(key)) for key in self.witness_keys]
        return WitnessPolicy(self.witness_k, witnesses)

    def to_json(self) -> dict[str, Any]:
        """The bundle's ``logs`` entry."""
        return {
            "origin": self.origin,
            "log_keys": list(self.log_keys),
            "witness_keys": list(self.witness_keys),
            "witness_k": self.witness_k,
        }


def _cosignature_key(key: str) -> tuple[str, bytes]:
    """The name and public key of a witness's cosignature/v1 verifier key."""
    parsed = parse_verifier_key(key)
    if parsed.key_type != KEY_TYPE_COSIGNATURE_V1:
        raise KeyFormatError(f"witness key {key!r} is not a cosignature/v1 key")
    return parsed.name, parsed.public_key


def logs_to_json(bundle_text: str, logs: tuple[TrustedLog, ...]) -> str:
    """The trust bundle ``bundle_text`` (:meth:`hub.certificates.TrustBundle.to_json`) with its
    ``logs`` member set to ``logs``."""
    document = json.loads(bundle_text)
    document["logs"] = [log.to_json() for log in logs]
    return json.dumps(document, ensure_ascii=False, indent=2)


def trusted_logs(bundle_text: str, where: str = "trust bundle") -> dict[str, TrustedLog]:
    """The ``logs`` of a trust bundle, by origin; ConfigurationError naming the entry and member.

    Every key is parsed here, so a bad key is refused when the bundle is read, not later.
    """
    try:
        document = json.loads(bundle_text)
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"{where}: not JSON: {error}") from None
    entries = document.get("logs", []) if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ConfigurationError(f"{where}: logs: expected a list")
    logs: dict[str, TrustedLog] = {}
    for number, entry in enumerate(entries):
        at = f"{where}: logs[{number}]"
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{at}: expected an object")
        origin, log_keys = entry.get("origin"), entry.get("log_keys")
        witness_keys, k = entry.get("witness_keys", []), entry.get("witness_k", 0)
        if not isinstance(origin, str) or not origin:
            raise ConfigurationError(f"{at}: origin: expected the log's origin")
        for name, keys in (("log_keys", log_keys), ("witness_keys", witness_keys)):
            if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
                raise ConfigurationError(f"{at}: {name}: expected a list of verifier keys")
        assert isinstance(log_keys, list)
        assert isinstance(witness_keys, list)
        if not log_keys:
            raise ConfigurationError(f"{at}: log_keys: expected at least one key")
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= len(witness_keys):
            raise ConfigurationError(
                f"{at}: witness_k: expected a whole number up to {len(witness_keys)}"
            )
        log = TrustedLog(origin, tuple(log_keys), tuple(witness_keys), k)
        try:
            for verifier in log.verifiers():
                if verifier.name != origin:
                    raise ValueError(f"log key {verifier.name!r} is not {origin!r}'s")
            log.policy()
        except (LedgerError, ValueError) as error:
            raise ConfigurationError(f"{at}: {error}") from None
        logs[origin] = log
    return logs


# ---------------------------------------------------------------------------- the certificate file


@dataclass(frozen=True)
class CertificateFile:
    """A certificate token with its issuing event and that event's receipt."""

    token: str
    event: bytes
    receipt: bytes

    def to_json(self) -> str:
        """The file's text."""
        return json.dumps(
            {
                "format": CERTIFICATE_FILE_FORMAT,
                "token": self.token,
                "event": base64.b64encode(self.event).decode("ascii"),
                "receipt": self.receipt.decode("utf-8"),
            },
            ensure_ascii=False,
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> CertificateFile:
        """Parse a certificate file; ValueError naming the member otherwise."""
        document = json.loads(text)
        if not isinstance(document, dict) or document.get("format") != CERTIFICATE_FILE_FORMAT:
            raise ValueError(f"not a {CERTIFICATE_FILE_FORMAT} file")
        values = {}
        for name in ("token", "event", "receipt"):
            value = document.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name}: expected a string")
            values[name] = value
        try:
            event = base64.b64decode(values["event"], validate=True)
        except binascii.Error as error:
            raise ValueError(f"event: not base64: {error}") from None
        return cls(values["token"], event, values["receipt"].encode("utf-8"))


def read_certificate(text: str) -> tuple[str, CertificateFile | None, str | None]:
    """The token of a certificate file or of a bare token, the file (None for a bare token),
    and why the file is unreadable (None if it is fine). Never raises."""
    if not text.lstrip().startswith("{"):
        return text.strip(), None, None
    try:
        certificate = CertificateFile.from_json(text)
    except (ValueError, RecursionError) as error:  # RecursionError: JSON nested too deep
        return "", None, f"the certificate file is damaged: {error}"
    return certificate.token, certificate, None


# ---------------------------------------------------------------------------- the check


def _expiry(valid_until: str) -> int | None:
    if not valid_until:
        return None
    last_day = date.fromisoformat(valid_until) + timedelta(days=1)
    return int(datetime.combine(last_day, time(), CHINA).timestamp())


def _event_differs(event: bytes, claims: CertificateClaims) -> str | None:
    """What the issuing event's bytes say otherwise than the token (None: they agree)."""
    try:
        body = json.loads(event)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        said = {
            "identifier": (body["certificate_id"], claims.jti),
            "holder": (body["holder"], claims.hld),
            "type": (body["type_code"], claims.ct),
            "authority": (body["authority"], claims.auth),
            "region": (body["region"], claims.rg),
            "validity": (_expiry(str(body["valid_until"])), claims.exp),
        }
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        return f"the issuing event is unreadable: {error}"
    for what, (logged, token) in said.items():
        if logged != token:
            return f"the logged event's {what} is {logged!r}, the certificate's {token!r}"
    return None


def check_receipt(
    verification: Verification,
    certificate: CertificateFile | None,
    logs: dict[str, TrustedLog],
) -> Verification:
    """Check that a verified certificate's issuing event is in its issuer's log; never raises.

    Only a certificate whose signature verified (``valid``, ``expired``, ``revoked``,
    ``suspended`` or ``status unknown``) is looked at further. Without a file (a bare token)
    the reason says "log receipt not checked". A receipt that does not prove the certificate's
    issuing event under a final checkpoint of the issuer's trusted log makes the verdict
    ``forged``, with a reason beginning "not bound to the log".
    """
    claims = verification.claims
    if claims is None or verification.verdict in (Verdict.FORGED, Verdict.UNKNOWN_ISSUER):
        return verification
    if certificate is None:
        return _note(verification, "log receipt not checked")
    problem, proven = _receipt_problem(claims, certificate, logs)
    if problem is not None:
        return Verification(Verdict.FORGED, f"{NOT_BOUND}: {problem}", claims, verification.issuer)
    return _note(verification, proven)


def _note(verification: Verification, text: str) -> Verification:
    return Verification(
        verification.verdict, f"{verification.reason}; {text}", verification.claims,
        verification.issuer,
    )  # fmt: skip


def _case_text(case: str) -> str:
    try:
        return str(UUID(case))
    except ValueError:
        return case


def _receipt_problem(
    claims: CertificateClaims, certificate: CertificateFile, logs: dict[str, TrustedLog]
) -> tuple[str | None, str]:
    log = logs.get(claims.iss)
    if log is None:
        return f"the trust bundle names no log key for {claims.iss}", ""
    try:
        receipt = Receipt.parse(certificate.receipt)
        leaf = receipt.leaf()
    except LedgerError as error:
        return f"the receipt is unreadable: {error}", ""
    # The leaf must be the certificate's issuing event: its place, case, log and kind.
    if leaf.index != claims.li:
        return (
            f"the receipt is for leaf {leaf.index}, the certificate's event is leaf {claims.li}",
            "",
        )
    if leaf.origin != claims.iss:
        return f"the receipt's leaf is in {leaf.origin}, not {claims.iss}", ""
    if str(leaf.aggregate_id) != _case_text(claims.case):
        return f"the receipt's leaf is of case {leaf.aggregate_id}, not {claims.case}", ""
    if leaf.topic != _ISSUED_TOPIC:
        return f"the receipt's leaf is a {leaf.topic.rpartition('.')[2]}, not the issuing", ""
    differs = _event_differs(certificate.event, claims)
    if differs is not None:
        return differs, ""
    try:
        verified = verify_receipt(
            receipt, log.verifiers(), log.policy(), origin=claims.iss, event=certificate.event
        )
    except PolicyError as error:
        return f"{error}{_unknown_witnesses(certificate.receipt, log)}", ""
    except LedgerError as error:
        return str(error), ""
    size = verified.checkpoint.checkpoint.size
    witnesses = ", ".join(verified.policy.witnesses) or "no witness needed"
    return None, (
        f"in the log: leaf {leaf.index} under its checkpoint of size {size}, cosigned by "
        f"{witnesses} ({log.witness_k} of {len(log.witness_keys)} needed)"
    )


def _unknown_witnesses(receipt: bytes, log: TrustedLog) -> str:
    """The signers of the receipt's checkpoint the bundle does not know (they do not count)."""
    known = {parse_verifier_key(key).name for key in (*log.log_keys, *log.witness_keys)}
    try:
        note = parse_note(receipt[receipt.index(b"\n\n") + 2 :])
    except (LedgerError, ValueError):
        return ""
    unknown = sorted({s.name for s in note.unverified} - known)
    return (
        f" (cosignatures by unknown witnesses do not count: {', '.join(unknown)})"
        if unknown
        else ""
    )


__all__ = [
    "CERTIFICATE_FILE_FORMAT",
    "NOT_BOUND",
    "CertificateFile",
    "PublishedList",
    "TrustedLog",
    "check_receipt",
    "logs_to_json",
    "publish_status_list",
    "read_certificate",
    "trusted_logs",
]


# ---------------------------------------------------------------------------- published lists


@dataclass(frozen=True)
class PublishedList:
    """A status list the node signed and recorded in its log."""

    token: str
    log_size: int
    valid_from: int
    valid_until: int
    #: The aggregate id of its :class:`~hub.domain.status_lists.StatusListPublication`.
    publication: UUID
    #: How many certificates it marks revoked and suspended.
    revoked: int = 0
    suspended: int = 0


def publish_status_list(
    app: HubApplication, view: LedgerView, key: IssuerKey, *, now: datetime, ttl_s: int
) -> PublishedList:
    """Build the status list from the log's integrated leaves, sign it with ``key`` and record
    its publication in the log (a node-authored event the integrity gate recomputes).

    Only what is in the log counts (leaves integrated so far, up to ``log_size``), so anyone
    holding the log rebuilds the same bitstrings.
    """

    def read_log(cursor: Any) -> StatusList:
        size, _ = view.tables.state(cursor)
        leaves = view.tables.iter_leaves(cursor, 0, size)
        rows = ((leaf.index, leaf.aggregate_id, leaf.topic) for leaf in leaves)
        return StatusList.from_leaves(key.origin, size, rows)

    status: StatusList = view.read(read_log)
    token = sign_status_list(status, key, now=now, ttl_s=ttl_s)
    valid_from = int(now.timestamp())
    publication = StatusListPublication.publish(
        origin=key.origin,
        log_size=status.log_size,
        bits_digest=digest_of_log(status.log_size, status.revoked, status.suspended),
        token_digest=token_digest(token),
        kid=key.kid,
        valid_from=valid_from,
        valid_until=valid_from + ttl_s,
    )
    # The same list (same log, same second: Ed25519 signs deterministically) is one record.
    if not app.has_aggregate(publication.id):
        app.save_records(publication)
    return PublishedList(
        token, status.log_size, valid_from, valid_from + ttl_s, publication.id,
        len(status.revoked), len(status.suspended),
    )  # fmt: skip

"""Published certificate status lists, recorded in the node's own log.

A status list (``hub.certificates``) is derived from the log: which certificates its first
``log_size`` leaves revoke or suspend. Each list the node publishes is also recorded as a
node-authored event, :class:`StatusListPublication.Published`, so the list itself is in the log:
its digest, the log size it covers, its validity and the key that signed it. The integrity gate
and every auditor recompute the bitstrings from the log up to ``log_size``
(:func:`certificate_statuses`, :func:`bits_digest`) and refuse a publication whose digest is
another: a node cannot record a list that hides a revocation. A verifier holding a downloaded
list computes its digests (:func:`token_digest`, and :func:`bits_digest` of what it decodes)
and finds the publication in the log.

Pure functions of the leaves' indices, cases and topics: no I/O here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from hub.domain.case import Case
from hub.domain.certificates import CertificateStatus
from hub.errors import InvalidInput

#: A list has at least this many entries (W3C Bitstring Status List: 16 KiB of bits), and a
#: multiple of it (the same rule as ``hub.certificates.MIN_STATUS_ENTRIES``).
STATUS_BLOCK = 131_072

ISSUED_TOPIC = get_topic(Case.CertificateIssued)
STATUS_OF_TOPIC = {
    get_topic(Case.CertificateSuspended): CertificateStatus.SUSPENDED,
    get_topic(Case.CertificateReinstated): CertificateStatus.VALID,
    get_topic(Case.CertificateRevoked): CertificateStatus.REVOKED,
}
#: The topics a status list depends on.
CERTIFICATE_TOPICS = frozenset({ISSUED_TOPIC, *STATUS_OF_TOPIC})


def list_size(log_size: int) -> int:
    """Entries in each bitstring: a multiple of :data:`STATUS_BLOCK` covering the log."""
    return max(1, -(-log_size // STATUS_BLOCK)) * STATUS_BLOCK


def certificate_statuses(
    leaves: Iterable[tuple[int, UUID, str]],
) -> tuple[frozenset[int], frozenset[int]]:
    """The (revoked, suspended) entries that leaves ``(index, case id, topic)``, in log order,
    give: each case's status folded from its status events after its ``CertificateIssued``
    leaf, whose index is the certificate's entry."""
    entry: dict[UUID, int] = {}
    status: dict[UUID, CertificateStatus] = {}
    for index, case_id, topic in leaves:
        if topic == ISSUED_TOPIC:
            entry[case_id] = index
            status[case_id] = CertificateStatus.VALID
        elif topic in STATUS_OF_TOPIC and case_id in entry:
            status[case_id] = STATUS_OF_TOPIC[topic]
    revoked = frozenset(e for c, e in entry.items() if status[c] is CertificateStatus.REVOKED)
    suspended = frozenset(e for c, e in entry.items() if status[c] is CertificateStatus.SUSPENDED)
    return revoked, suspended


def bitstring(entries: frozenset[int], size: int) -> bytes:
    """The W3C bitstring of ``size`` entries: bit ``i`` is the ``i % 8``-th bit from the left
    of byte ``i // 8`` (uncompressed)."""
    bits = bytearray(size // 8)
    for index in entries:
        bits[index // 8] |= 0x80 >> (index % 8)
    return bytes(bits)


def bits_digest(size: int, revocation: bytes, suspension: bytes) -> str:
    """SHA-256 (hex) of a list's content: ``tongban-status-list/1``, a newline, the size as 8
    big-endian bytes, then the uncompressed revocation and suspension bitstrings. Unlike the
    compressed members, this does not depend on the GZIP implementation."""
    digest = hashlib.sha256(b"tongban-status-list/1\n" + size.to_bytes(8, "big"))
    digest.update(revocation)
    digest.update(suspension)
    return digest.hexdigest()


def digest_of_log(log_size: int, revoked: frozenset[int], suspended: frozenset[int]) -> str:
    """The :func:`bits_digest` of the list of a log of ``log_size`` leaves."""
    size = list_size(log_size)
    return bits_digest(size, bitstring(revoked, size), bitstring(suspended, size))


def token_digest(token: str) -> str:
    """SHA-256 (hex) of a status list's JWS compact serialisation, whitespace stripped."""
    return hashlib.sha256(token.strip().encode("ascii")).hexdigest()


class StatusListPublication(Aggregate):
    """One status list the node published (one event: its creation)."""

    class Published(Aggregate.Created):
        """The node published a status list (its own act: a ``NODE`` leaf)."""

        origin: str
        log_size: int
        bits_digest: str
        token_digest: str
        kid: str
        valid_from: int
        valid_until: int

        def apply(self, aggregate: StatusListPublication) -> None:
            aggregate.origin = self.origin
            aggregate.log_size = self.log_size
            aggregate.bits_digest = self.bits_digest
            aggregate.token_digest = self.token_digest
            aggregate.kid = self.kid
            aggregate.valid_from = self.valid_from
            aggregate.valid_until = self.valid_until

    def __init__(self) -> None:
        self.origin = ""
        self.log_size = 0
        self.bits_digest = ""
        self.token_digest = ""
        self.kid = ""
        self.valid_from = 0
        self.valid_until = 0

    @classmethod
    def publish(
        cls, *, origin: str, log_size: int, bits_digest: str, token_digest: str, kid: str,
        valid_from: int, valid_until: int,
    ) -> StatusListPublication:  # fmt: skip
        """Record a published list; its id follows from the log and the list's token."""
        if log_size < 0:
            raise InvalidInput("log_size", log_size, "must not be negative")
        if valid_until <= valid_from:
            raise InvalidInput("valid_until", valid_until, "must be after valid_from")
        return cls._create(
            cls.Published,
            id=uuid5(NAMESPACE_URL, f"tongban:status-list:{origin}:{token_digest}"),
            origin=origin,
            log_size=log_size,
            bits_digest=bits_digest,
            token_digest=token_digest,
            kid=kid,
            valid_from=valid_from,
            valid_until=valid_until,
        )


PUBLISHED_TOPIC = get_topic(StatusListPublication.Published)

__all__ = [
    "CERTIFICATE_TOPICS",
    "PUBLISHED_TOPIC",
    "STATUS_BLOCK",
    "StatusListPublication",
    "bits_digest",
    "bitstring",
    "certificate_statuses",
    "digest_of_log",
    "list_size",
    "token_digest",
]

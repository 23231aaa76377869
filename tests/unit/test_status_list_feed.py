"""The status list the web server serves, its record in the log, and issuer key rotation, without
I/O: one list for everyone until half its time to live, the log's recomputation agreeing with the
signed list, and a retired issuer key that signs nothing after its end."""

from __future__ import annotations

import base64
import gzip
import json
import random
import threading
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.utils import get_topic

from hub.certificate_log import PublishedList
from hub.certificates import (
    CertificateClaims,
    IssuerKey,
    StatusList,
    TrustBundle,
    Verdict,
    sign_certificate,
    sign_status_list,
    verify_certificate,
)
from hub.domain.case import Case
from hub.domain.certificates import CertificateIdentifier
from hub.domain.status_lists import (
    StatusListPublication,
    bits_digest,
    certificate_statuses,
    digest_of_log,
    list_size,
    token_digest,
)
from hub.errors import InvalidInput
from hub.web.certificates import CertificateFeed

pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")

START = datetime(2026, 3, 5, tzinfo=UTC)
TTL_S = 3600


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def _feed() -> tuple[CertificateFeed, Clock, list[datetime]]:
    clock, published = Clock(), []

    def publish(now: datetime) -> PublishedList:
        published.append(now)
        valid_from = int(now.timestamp())
        return PublishedList(f"list-{len(published)}", 10, valid_from, valid_from + TTL_S, uuid4())

    return CertificateFeed(publish, lambda: "{}", clock), clock, published


def test_everyone_gets_the_same_list_until_half_its_time_to_live() -> None:
    feed, clock, published = _feed()
    first, max_age = feed.current()
    assert (first.token, max_age) == ("list-1", TTL_S // 2)
    clock.now = START + timedelta(seconds=TTL_S // 2 - 1)
    again, max_age = feed.current()
    assert again is first and max_age == 1  # caches keep it exactly until it is replaced
    clock.now = START + timedelta(seconds=TTL_S // 2)
    fresh, max_age = feed.current()
    assert fresh.token == "list-2" and max_age == TTL_S // 2
    assert published == [START, START + timedelta(seconds=TTL_S // 2)]


def test_concurrent_verifiers_cause_one_publication() -> None:
    feed, _, published = _feed()
    barrier = threading.Barrier(8)
    tokens: list[str] = []

    def fetch() -> None:
        barrier.wait()
        tokens.append(feed.current()[0].token)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tokens == ["list-1"] * 8 and len(published) == 1


ISSUED = get_topic(Case.CertificateIssued)
TOPICS = [
    ISSUED,
    get_topic(Case.CertificateSuspended),
    get_topic(Case.CertificateReinstated),
    get_topic(Case.CertificateRevoked),
    "hub.domain.case:Case.Accepted",
]


def test_the_logs_recomputation_is_the_signed_lists() -> None:
    rng = random.Random(7)
    cases = [uuid4() for _ in range(30)]
    leaves: list[tuple[int, UUID, str]] = [
        (index, rng.choice(cases), rng.choice(TOPICS)) for index in range(400)
    ]
    signed = StatusList.from_leaves("tongban/43", 400, leaves)
    revoked, suspended = certificate_statuses(leaves)
    assert (revoked, suspended) == (signed.revoked, signed.suspended)
    assert revoked and suspended  # the sequence exercises both
    assert list_size(400) == signed.size == 131_072
    assert list_size(131_073) == 2 * 131_072
    # A verifier decodes the signed list and computes the digest the log records.
    key = IssuerKey(Ed25519PrivateKey.generate(), "tongban/43", "43", START)
    token = sign_status_list(signed, key, now=START, ttl_s=TTL_S)
    payload = token.split(".")[1]
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))

    def bits(member: str) -> bytes:
        text = body[member]
        return gzip.decompress(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))

    logged = digest_of_log(400, revoked, suspended)
    assert bits_digest(body["size"], bits("revocation"), bits("suspension")) == logged
    assert digest_of_log(400, revoked - {min(revoked)}, suspended) != logged
    assert token_digest(token + "\n") == token_digest(token)


def test_a_publication_is_well_formed() -> None:
    with pytest.raises(InvalidInput, match="valid_until"):
        StatusListPublication.publish(
            origin="tongban/43", log_size=1, bits_digest="a", token_digest="b", kid="k",
            valid_from=10, valid_until=10,
        )  # fmt: skip
    with pytest.raises(InvalidInput, match="log_size"):
        StatusListPublication.publish(
            origin="tongban/43", log_size=-1, bits_digest="a", token_digest="b", kid="k",
            valid_from=10, valid_until=11,
        )  # fmt: skip
    one = StatusListPublication.publish(
        origin="tongban/43", log_size=1, bits_digest="a", token_digest="b", kid="k",
        valid_from=10, valid_until=11,
    )  # fmt: skip
    assert (one.log_size, one.bits_digest, one.valid_until) == (1, "a", 11)


def _claims(iat: datetime) -> CertificateClaims:
    case = uuid4()
    return CertificateClaims(
        iss="tongban/43", jti=str(CertificateIdentifier("150001", "11430902MB0000001X",
                                                        case.hex[:16].upper())),
        iat=int(iat.timestamp()), ct="150001", item="200202001000", name="老年人优待证办理",
        auth="益阳市资阳区民政局", rg="430902104000", hld="ab" * 32, case=str(case), li=3,
    )  # fmt: skip


def test_a_retired_issuer_key_signs_nothing_after_its_end() -> None:
    since, retired_at = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
    old = IssuerKey(Ed25519PrivateKey.generate(), "tongban/43", "43", since)
    new = IssuerKey(Ed25519PrivateKey.generate(), "tongban/43", "43", since)
    bundle = TrustBundle((old.trusted(not_after=retired_at), new.trusted()))
    now = datetime(2026, 4, 1, tzinfo=UTC)
    before, after = retired_at - timedelta(days=1), retired_at + timedelta(days=1)
    assert verify_certificate(sign_certificate(_claims(before), old), bundle, now=now).verdict is (
        Verdict.VALID
    )
    late = verify_certificate(sign_certificate(_claims(after), old), bundle, now=now)
    assert late.verdict is Verdict.FORGED and "outside the key's period" in late.reason
    for moment in (before, after):  # the new key signs old cases' certificates written again
        result = verify_certificate(sign_certificate(_claims(moment), new), bundle, now=now)
        assert result.verdict is Verdict.VALID

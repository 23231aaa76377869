"""Offline certificate verification, beside the raw Ed25519 verify rate of this run.

    python -m benchmarks.cert_verify [--certificates 1000] [--rounds 8] [--duration 0.5]

A verifier (a hall's door, a bank, a kiosk) holds a trust bundle and a downloaded status list
and checks certificates one after another, as ``tongban cert verify --status`` does minus the
file reading: the JWS header, the key from the bundle, the Ed25519 signature, the claims, the
issuer's origin and region, the identifier's check character, the key's period, the validity,
then the certificate's entry in the status list (its time-to-live, its coverage, two bits).
:class:`hub.certificates_offline.OfflineVerifier` reads the bundle's keys and the list (its
signature, its two gzip bitstrings) once; every per-certificate check runs on every
certificate.

Its natural limit is one Ed25519 verification per certificate, so the rate is printed beside
``cryptography``'s raw Ed25519 verify rate over a message as long as a certificate's signing
input (Ed25519 hashes the whole message, so a longer one verifies slower), measured in the same
run, interleaved round by round with the verifications (this machine's load changes while it
runs). Also printed: the ratio against the usual 256-byte baseline of benchmarks.baselines,
and one-shot verification (the list read again for each certificate, as one ``cert verify``
call does). Goal: >= 0.7 of the raw rate.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks.baselines import Baseline, ed25519_verify_rate, format_ratio
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
from hub.certificates_render import measure_qr
from hub.domain.certificates import CertificateIdentifier

SINCE = datetime(2026, 1, 1, tzinfo=UTC)
ISSUED = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
NOW = datetime(2026, 3, 5, tzinfo=UTC)


def _certificates(key: IssuerKey, count: int) -> list[str]:
    """``count`` certificates of one issuer, with the catalogue's longest names (the largest
    tokens), at ledger indices spread over the log."""
    tokens = []
    for number in range(count):
        entry = 7 + number * 97
        claims = CertificateClaims(
            iss=key.origin,
            jti=str(CertificateIdentifier("150001", "11430902MB0000001X", f"{entry:016X}")),
            iat=int(ISSUED.timestamp()), ct="150001", item="200202001000",
            name="农村村民宅基地和建房（规划许可）审批",
            auth="湖南省益阳市资阳区长春镇人民政府便民服务中心",
            rg="430902104000", hld=os.urandom(32).hex(), case=os.urandom(16).hex(),
            li=entry, status_index=entry,
            exp=int((ISSUED + timedelta(days=3650)).timestamp()),
        )  # fmt: skip
        tokens.append(sign_certificate(claims, key))
    return tokens


def _timed(work: Callable[[], int], duration: float) -> tuple[int, float]:
    """Run ``work`` (which returns how many operations it did) for about ``duration`` s."""
    count = 0
    start = time.perf_counter()
    end = start + duration
    while time.perf_counter() < end:
        count += work()
    return count, time.perf_counter() - start


def run(certificates: int, rounds: int, duration: float) -> None:
    """Measure and print."""
    key = IssuerKey(Ed25519PrivateKey.generate(), "tongban/43", "43", SINCE)
    # The bundle as a verifier has it: parsed from the file `tongban trust export` writes.
    bundle = TrustBundle.from_json(TrustBundle((key.trusted(),)).to_json())
    tokens = _certificates(key, certificates)
    log_size = 7 + certificates * 97
    revoked = frozenset(7 + n * 97 for n in range(0, certificates, 10))  # every tenth
    status = sign_status_list(
        StatusList(key.origin, log_size, revoked=revoked), key, now=NOW, ttl_s=86400
    )
    verifier = OfflineVerifier(bundle, status)
    verdicts: Counter[Verdict] = Counter()

    def offline() -> int:
        for token in tokens:
            verdicts[verifier.verify(token, now=NOW).verdict] += 1
        return len(tokens)

    def one_shot() -> int:
        for token in tokens[:50]:
            check_status(verify_certificate(token, bundle, now=NOW), status, bundle, now=NOW)
        return 50

    signing_input = len(tokens[0].rsplit(".", 1)[0])
    raw_count = raw_seconds = small_count = small_seconds = done = seconds = 0.0
    one_count = one_seconds = 0.0
    for _ in range(rounds):
        raw = ed25519_verify_rate(duration, message_bytes=signing_input)
        raw_count += raw.samples
        raw_seconds += raw.seconds
        count, elapsed = _timed(offline, duration)
        done += count
        seconds += elapsed
        small = ed25519_verify_rate(duration / 2)
        small_count += small.samples
        small_seconds += small.seconds
        count, elapsed = _timed(one_shot, duration / 2)
        one_count += count
        one_seconds += elapsed

    # Every verdict is what the list says: no shortcut skipped a certificate.
    expected_revoked = len(revoked) / certificates
    assert set(verdicts) == {Verdict.VALID, Verdict.REVOKED}, verdicts
    assert abs(verdicts[Verdict.REVOKED] / done - expected_revoked) < 0.01, verdicts

    raw_rate = Baseline(
        f"Ed25519 verify, {signing_input}-byte message (a certificate's signing input)",
        raw_count / raw_seconds, "verifications/s", int(raw_count), raw_seconds,
    )  # fmt: skip
    small_rate = Baseline(
        small.name, small_count / small_seconds, small.unit, int(small_count), small_seconds
    )
    qr = measure_qr(tokens[0])
    print(f"certificate: {len(tokens[0])} bytes (signing input {signing_input}); QR version "
          f"{qr.version} at level {qr.error}, {qr.width_mm} mm printed; status list of "
          f"{log_size:,} entries, {len(status):,} bytes; {certificates} certificates, "
          f"{rounds} rounds of {duration} s")  # fmt: skip
    offline_rate = done / seconds
    format_ratio("offline verification (bundle + cached status list)", offline_rate,
                 "verifications/s", raw_rate.name, raw_rate)  # fmt: skip
    format_ratio("offline verification (bundle + cached status list)", offline_rate,
                 "verifications/s", small_rate.name, small_rate)  # fmt: skip
    format_ratio("one-shot verification (status list read each time, as one cert verify)",
                 one_count / one_seconds, "verifications/s", raw_rate.name, raw_rate)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--certificates", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=float, default=0.5, help="seconds per measurement")
    args = parser.parse_args(argv)
    run(args.certificates, args.rounds, args.duration)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

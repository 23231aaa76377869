"""Offline verification of many certificates with one trust bundle and one status list.

``tongban cert verify`` checks one certificate; a verifier at a hall's door, a bank or a kiosk
checks hundreds with the same trust bundle and the same downloaded status list. An
:class:`OfflineVerifier` reads the bundle's keys and the status list (its signature and its two
bitstrings) once and then, per certificate, does every check of :func:`verify_certificate` and
:meth:`StatusListReading.check` — the same code, so the same verdicts — but not the list's
signature and decompression again. ``benchmarks/cert_verify.py`` measures it.
"""

from __future__ import annotations

from datetime import datetime

from hub.certificates import (
    StatusListReading,
    TrustBundle,
    Verification,
    read_status_list,
    verify_certificate,
)


class OfflineVerifier:
    """Verifies certificates against ``bundle`` and, when given, the status list ``status``."""

    def __init__(self, bundle: TrustBundle, status: str | None = None) -> None:
        self.bundle = bundle
        #: The status list, read and signature-checked once (None: status not checked).
        self.status: StatusListReading | None = (
            read_status_list(status, bundle) if status is not None else None
        )

    def verify(self, token: str, *, now: datetime) -> Verification:
        """The verdict for ``token`` at ``now``, with the reason; never raises."""
        result = verify_certificate(token, self.bundle, now=now)
        if self.status is not None:
            result = self.status.check(result, now=now)
        return result


__all__ = ["OfflineVerifier"]

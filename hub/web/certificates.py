"""What verifiers of certificates fetch from the node's web server, for anyone, no login.

``/certificates/status-list.jws``
    The current signed status list (``hub.certificates``, recorded in the log when published:
    ``hub.certificate_log.publish_status_list``). Every caller gets the **same bytes** until the
    node publishes the next list, so a verifier's fetch says nothing about which certificate it
    checks (herd privacy), and caches may keep it: ``Cache-Control: public, max-age=N`` where
    N is the time until the next list, published once half of the current list's time to live
    (``TONGBAN_STATUS_LIST_TTL_S``) has passed — a verifier that refetches when its copy is
    stale always holds a list with at least half of its time to live left. ``ETag`` (the
    list's SHA-256) answers a conditional request with 304, ``Last-Modified`` is when it was
    signed, ``Expires`` its end of caching.
``/certificates/trust.json``
    The node's trust bundle (``tongban trust export``): a convenience for verifiers that
    already trust the node's keys by other means (the bundle is what they trust, so obtain it
    out of band first); ``Cache-Control: no-cache`` with an ``ETag``, so a rotated issuer key
    is seen at once.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.certificate_log import PublishedList
from hub.domain.status_lists import token_digest

STATUS_LIST_PATH = "/certificates/status-list.jws"
TRUST_BUNDLE_PATH = "/certificates/trust.json"


class CertificateFeed:
    """The status list every verifier gets, republished at half its time to live."""

    def __init__(
        self,
        publish: Callable[[datetime], PublishedList],
        trust_bundle: Callable[[], str],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._publish = publish
        self._trust_bundle = trust_bundle
        self._clock = clock
        self._lock = threading.Lock()
        self._current: PublishedList | None = None

    @staticmethod
    def refresh_at(published: PublishedList) -> int:
        """When the next list replaces ``published`` (seconds since the epoch)."""
        return published.valid_from + (published.valid_until - published.valid_from) // 2

    def current(self) -> tuple[PublishedList, int]:
        """The list to serve now and for how many seconds it may be cached."""
        with self._lock:  # one publication at a time: every caller gets the same list
            now = self._clock()
            if self._current is None or now.timestamp() >= self.refresh_at(self._current):
                self._current = self._publish(now)
            current = self._current
        return current, max(1, self.refresh_at(current) - int(now.timestamp()))

    def routes(self) -> list[Route]:
        """The two routes, for the node's web application."""

        async def status_list(request: Request) -> Response:
            published, max_age = await run_in_threadpool(self.current)
            etag = f'"{token_digest(published.token)}"'
            until = datetime.fromtimestamp(self.refresh_at(published), UTC)
            headers = {
                "Cache-Control": f"public, max-age={max_age}",
                "ETag": etag,
                "Last-Modified": format_datetime(
                    datetime.fromtimestamp(published.valid_from, UTC), usegmt=True
                ),
                "Expires": format_datetime(until, usegmt=True),
                "X-Content-Type-Options": "nosniff",
            }
            if request.headers.get("if-none-match") == etag:
                return Response(status_code=304, headers=headers)
            return Response(published.token + "\n", media_type="application/jwt", headers=headers)

        async def trust_bundle(request: Request) -> Response:
            text = await run_in_threadpool(self._trust_bundle)
            etag = f'"{hashlib.sha256(text.encode()).hexdigest()}"'
            headers = {
                "Cache-Control": "no-cache",
                "ETag": etag,
                "X-Content-Type-Options": "nosniff",
            }
            if request.headers.get("if-none-match") == etag:
                return Response(status_code=304, headers=headers)
            return Response(text + "\n", media_type="application/json", headers=headers)

        return [Route(STATUS_LIST_PATH, status_list), Route(TRUST_BUNDLE_PATH, trust_bundle)]


__all__ = ["STATUS_LIST_PATH", "TRUST_BUNDLE_PATH", "CertificateFeed"]

"""Failing fast while the event store is down, and never storing for a caller who gave up.

The ``eventsourcing`` recorders retry a failed statement several times (waiting for a pooled
connection each time), which is right for a moment's hiccup but keeps every call hanging while a
database is really down; and a call that waited in the pool may commit after its client gave up.
So the application puts every store access through one :class:`StorageGuard`:

* after an error that means the store cannot be reached (no connection) the guard is *open*:
  calls fail at once with :class:`~hub.errors.StorageUnavailable` (gRPC UNAVAILABLE, which
  clients retry), except one probe every ``probe_interval`` seconds that really tries; the first
  success closes it again, so the node recovers by itself, without a restart;
* a write whose caller's deadline has already passed is not attempted (``deadline``, set by the
  server for the call being served): nothing is stored for a client that gave up.

The time a first failing call takes is bounded by the store's connection timeout
(``TONGBAN_STORAGE_TIMEOUT_S``, see :mod:`hub.bootstrap`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError
from psycopg_pool import PoolTimeout

from hub.errors import StorageUnavailable

T = TypeVar("T")

#: ``time.monotonic()`` by which the call being served must be answered (None: no deadline).
DEADLINE: ContextVar[float | None] = ContextVar("deadline", default=None)


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` means the store cannot be reached at all (no connection), rather than
    one statement failing on a live connection."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, PoolTimeout | psycopg.errors.ConnectionTimeout):
            return True
        if (
            isinstance(seen, psycopg.OperationalError)
            and not isinstance(seen, psycopg.errors.PipelineAborted)
            and getattr(seen, "sqlstate", None)
            in (None, "08000", "08001", "08003", "08006", "57P01")
        ):
            return True
        seen = seen.__cause__
    return False


def passing(error: BaseException) -> bool:
    """Whether ``error`` means the store is unreachable or busy for now (try again shortly),
    rather than a fault in what was asked of it (the followers' loops retry the first and stop
    at the second)."""
    return isinstance(
        error,
        StorageUnavailable
        | OperationalError
        | InterfaceError
        | sqlite3.OperationalError
        | psycopg.OperationalError
        | psycopg.InterfaceError,
    )


class StorageGuard:
    """A circuit breaker around the event store (see the module docstring)."""

    def __init__(self, probe_interval: float = 0.5) -> None:
        self.probe_interval = probe_interval
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_probe = 0.0
        self._reason = ""

    @property
    def down(self) -> bool:
        """Whether the last access failed."""
        return self._down_since is not None

    def run(self, access: Callable[[], T], *, write: bool = False) -> T:
        """Run one store access through the guard."""
        if write:
            deadline = DEADLINE.get()
            if deadline is not None and time.monotonic() > deadline:
                raise StorageUnavailable(
                    "the caller's deadline passed before the command could be stored; "
                    "nothing was stored"
                )
        with self._lock:
            if self._down_since is not None:
                now = time.monotonic()
                if now < self._next_probe:
                    since = time.strftime("%H:%M:%S", time.localtime(self._wall_since()))
                    raise StorageUnavailable(
                        f"the event store is unreachable (since {since}: {self._reason}); "
                        "retry shortly"
                    )
                self._next_probe = now + self.probe_interval
        try:
            result = access()
        except (OperationalError, InterfaceError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            if unreachable(error):
                with self._lock:
                    if self._down_since is None:
                        self._down_since = time.monotonic()
                        self._next_probe = self._down_since + self.probe_interval
                    self._reason = reason
            raise StorageUnavailable(f"event store unavailable: {reason}") from error
        if self._down_since is not None:
            with self._lock:
                self._down_since = None
        return result

    def _wall_since(self) -> float:
        assert self._down_since is not None
        return time.time() - (time.monotonic() - self._down_since)

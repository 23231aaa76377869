"""The node's 电子监察 supervisor: records each warning once, when it falls due.

It reads the ``cases`` projection for marks that have passed without their warning (a yellow
mark, a promised deadline, a rectification deadline) and asks the application to record each
(:meth:`~hub.application.hub.HubApplication.record_warning`), which checks the mark again
against the case's stored history and refuses a second warning of a kind. So the supervisor can
be stopped and started at any time, run late, or race another one: each warning is in the log
exactly once, and only when the case's own history justifies it.

It sleeps until the next mark falls due, or until the projection moves (a new case, a pause,
a conclusion may change the next mark), whichever comes first. A look (:meth:`Supervisor.look`)
first reads the earliest mark of each kind that has no warning yet, in one statement; only a
kind whose earliest mark has passed is read further (what is due, then its next mark). A busy
node's projection moves several times a second and almost every look finds nothing due: it
costs that one read, where reading each kind's due cases and next mark took eight.
``look_gap`` can space the looks a busy projection's moves ask for; it is 0 by default, so a
warning already due when its case reaches the projection (an imported old case) is recorded at
once, not up to ``look_gap`` later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from hub import telemetry
from hub.domain.appointments import AppointmentState
from hub.domain.values import WarningKind
from hub.errors import ConcurrencyConflict, InvalidInput, NotFound, TransitionRefused
from hub.projections.appointments import due_expiries, next_expiry
from hub.projections.store import Cursor, ProjectionStore, from_iso, iso

log = logging.getLogger("tongban.supervisor")

#: The longest the supervisor sleeps without looking (a safety net; it is normally woken).
MAX_SLEEP = 60.0
#: Seconds between two looks woken by the projection moving (not by a mark falling due).
LOOK_GAP = 0.0
#: How long a warning the application found not due (the projection was behind) is left alone.
RETRY_AFTER = timedelta(seconds=30)

#: The earliest mark of each kind that has no warning (or expiry) yet, due or not: a look that
#: finds nothing due costs this one statement; the kinds with something due are read further.
_EARLIEST = (
    "SELECT (SELECT MIN(yellow_at) FROM projection_cases WHERE warned_yellow = 0), "
    "(SELECT MIN(due_at) FROM projection_cases WHERE warned_red = 0), "
    "(SELECT MIN(rectification_due_at) FROM projection_ratings WHERE warned = 0), "
    "(SELECT MIN(ends_at) FROM projection_appointments WHERE state = %s)"
)
#: The kinds in _EARLIEST's order; None is 预约办's expiry of a booked appointment.
_KINDS: tuple[WarningKind | None, ...] = (
    WarningKind.YELLOW,
    WarningKind.RED,
    WarningKind.RECTIFICATION_OVERDUE,
    None,
)

_DUE = {
    WarningKind.YELLOW: "SELECT case_id FROM projection_cases WHERE warned_yellow = 0 "
    "AND yellow_at IS NOT NULL AND yellow_at <= %s ORDER BY yellow_at LIMIT 500",
    WarningKind.RED: "SELECT case_id FROM projection_cases WHERE warned_red = 0 "
    "AND due_at IS NOT NULL AND due_at <= %s ORDER BY due_at LIMIT 500",
    WarningKind.RECTIFICATION_OVERDUE: "SELECT case_id FROM projection_ratings WHERE warned = 0 "
    "AND rectification_due_at IS NOT NULL AND rectification_due_at <= %s "
    "ORDER BY rectification_due_at LIMIT 500",
}

_NEXT = {
    WarningKind.YELLOW: "SELECT MIN(yellow_at) FROM projection_cases "
    "WHERE warned_yellow = 0 AND yellow_at > %s",
    WarningKind.RED: "SELECT MIN(due_at) FROM projection_cases "
    "WHERE warned_red = 0 AND due_at > %s",
    WarningKind.RECTIFICATION_OVERDUE: "SELECT MIN(rectification_due_at) FROM projection_ratings "
    "WHERE warned = 0 AND rectification_due_at > %s",
}


class Supervisor:
    """Records due warnings through ``app`` (see the module docstring)."""

    def __init__(
        self,
        app: Any,
        store: ProjectionStore,
        *,
        clock: Callable[[], datetime] | None = None,
        look_gap: float = LOOK_GAP,
    ) -> None:
        self.app = app
        self.store = store
        self.clock = clock or app.clock
        #: Seconds between two looks that the projection's moving asks for (LOOK_GAP).
        self.look_gap = look_gap
        #: What to leave alone until when: (case, warning kind), or (appointment, None).
        self._later: dict[tuple[str, WarningKind | None], datetime] = {}

    def due(self, now: datetime) -> list[tuple[str, WarningKind]]:
        """The warnings the projection says are due at ``now`` and not yet recorded."""
        earliest = self._earliest(now)
        return self._due(now, [kind for kind in _DUE if _passed(earliest[kind], now)])

    def next_due(self, now: datetime) -> datetime | None:
        """The next mark after ``now`` with no warning yet (None: nothing pending)."""
        return self._next(now, self._earliest(now))

    def record_due(self) -> int:
        """Record every warning due now; returns how many were recorded."""
        return self.look()[0]

    def look(self) -> tuple[int, datetime | None]:
        """Record every warning (and 预约办 expiry) due now; returns how many were recorded and
        the next mark after now (None: nothing pending). One read when nothing is due."""
        now = self.clock()
        self._later = {key: until for key, until in self._later.items() if until > now}
        earliest = self._earliest(now)
        recorded = 0
        for case_id, kind in self._due(now, [k for k in _DUE if _passed(earliest[k], now)]):
            try:
                self.app.record_warning(UUID(case_id), kind)
            except TransitionRefused:
                continue  # already recorded (by an earlier run, or another supervisor)
            except (InvalidInput, NotFound, ConcurrencyConflict) as refusal:
                # The projection is behind the case (it paused or ended), or a hall's command
                # changed the case at the same moment: look again later.
                self._later[(case_id, kind)] = now + RETRY_AFTER
                log.info("warning %s of case %s not recorded now: %s", kind.name, case_id, refusal)
                continue
            recorded += 1
            telemetry.WARNINGS.labels(kind.name).inc()
            log.info("warning recorded", extra={"case_id": case_id, "kind": kind.name})
        if _passed(earliest[None], now):
            recorded += self.expire_due(now)
        return recorded, self._next(now, earliest)

    def _earliest(self, now: datetime) -> dict[WarningKind | None, datetime | None]:
        """The earliest mark of each kind with no warning yet, due or not."""

        def read(cursor: Cursor) -> Any:
            cursor.execute(self.store.dialect.sql(_EARLIEST), (AppointmentState.BOOKED.name,))
            return cursor.fetchone()

        row = self.store.read(read) or (None,) * len(_KINDS)
        return {kind: from_iso(mark) for kind, mark in zip(_KINDS, row, strict=True)}

    def _due(self, now: datetime, kinds: list[WarningKind]) -> list[tuple[str, WarningKind]]:
        """The warnings of ``kinds`` due at ``now``, but those left alone until later."""
        if not kinds:
            return []
        stamp = iso(now)

        def read(cursor: Cursor) -> list[tuple[str, WarningKind]]:
            found = []
            for kind in kinds:
                cursor.execute(self.store.dialect.sql(_DUE[kind]), (stamp,))
                found += [(row[0], kind) for row in cursor.fetchall()]
            return found

        return [entry for entry in self.store.read(read) if self._later.get(entry, now) <= now]

    def _next(
        self, now: datetime, earliest: dict[WarningKind | None, datetime | None]
    ) -> datetime | None:
        """The next mark after ``now``: each kind's earliest, unless that one has passed (it
        was due: recorded now, or left for later), then the kind's first mark after ``now``."""
        marks = [mark for mark in earliest.values() if mark is not None and mark > now]
        warnings = [kind for kind in _NEXT if _passed(earliest[kind], now)]
        if warnings:
            stamp = iso(now)

            def read(cursor: Cursor) -> list[datetime | None]:
                found: list[datetime | None] = []
                for kind in warnings:
                    cursor.execute(self.store.dialect.sql(_NEXT[kind]), (stamp,))
                    row = cursor.fetchone()
                    found.append(from_iso(row[0]) if row else None)
                return found

            marks += [mark for mark in self.store.read(read) if mark is not None]
        if _passed(earliest[None], now):
            following = next_expiry(self.store, now)  # 预约办: the next slot that ends
            if following is not None:
                marks.append(following)
        return min(marks) if marks else None

    def expire_due(self, now: datetime) -> int:
        """预约办: record that nobody came to each booked appointment whose slot is over (the
        application checks the appointment's own history again); how many were recorded."""
        expired = 0
        for appointment_id in due_expiries(self.store, now):
            key = (appointment_id, None)
            if self._later.get(key, now) > now:
                continue
            try:
                self.app.record_appointment_expiry(UUID(appointment_id))
            except TransitionRefused:
                continue  # received or cancelled meanwhile, or expired by another run
            except (InvalidInput, NotFound, ConcurrencyConflict) as refusal:
                self._later[key] = now + RETRY_AFTER
                log.info("expiry of appointment %s not recorded now: %s", appointment_id, refusal)
                continue
            expired += 1
            log.info("appointment expired", extra={"appointment_id": appointment_id})
        return expired

    def run(self, stop: threading.Event, moved: threading.Event) -> None:
        """Record warnings as they fall due until ``stop``; ``moved`` is set by the projection
        whenever it commits a batch."""
        telemetry.FOLLOWER_FAILED.labels("supervisor").set(0)
        while not stop.is_set():
            moved.clear()
            try:
                _recorded, upcoming = self.look()
            except Exception as error:  # the store is down: look again shortly
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                log.warning("supervisor: %s; retrying", reason)
                stop.wait(1.0)
                continue
            sleep = MAX_SLEEP
            if upcoming is not None:
                sleep = min(sleep, max(0.0, (upcoming - self.clock()).total_seconds()))
            if self._later:
                sleep = min(sleep, RETRY_AFTER.total_seconds())
            looked = time.monotonic()
            deadline = looked + sleep
            while not stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if moved.wait(min(remaining, 1.0)):
                    # The projection moved: look again, but not before look_gap has passed
                    # since the last look (its moves meanwhile are all answered by that one),
                    # nor after the next mark falls due.
                    stop.wait(max(0.0, min(looked + self.look_gap, deadline) - time.monotonic()))
                    break


def _passed(mark: datetime | None, now: datetime) -> bool:
    return mark is not None and mark <= now


__all__ = ["Supervisor"]

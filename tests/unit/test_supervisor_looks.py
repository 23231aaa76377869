"""When the 电子监察 supervisor looks at the projection (its run loop, without a store): a busy
projection's moves are answered by one look per ``look_gap``, and a mark that falls due is looked
at when it does, even within that gap."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from hub.projections.supervisor import Supervisor

#: Longer than any test here waits: a second look within it can only be one a mark asked for.
LONG_GAP = 60.0


class CountingSupervisor(Supervisor):
    """Counts its looks; the next mark is whatever the test sets."""

    def __init__(self, look_gap: float) -> None:
        super().__init__(None, None, clock=lambda: datetime.now(UTC), look_gap=look_gap)  # type: ignore[arg-type]
        self.looks = 0
        self.looked = threading.Condition()
        self.next_mark: datetime | None = None

    def look(self) -> tuple[int, datetime | None]:
        with self.looked:
            self.looks += 1
            self.looked.notify_all()
        return 0, self.next_mark

    def wait_for_looks(self, count: int, timeout: float = 10.0) -> bool:
        with self.looked:
            return self.looked.wait_for(lambda: self.looks >= count, timeout)


def _running(supervisor: Supervisor) -> tuple[threading.Event, threading.Event, Any]:
    stop, moved = threading.Event(), threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop, moved), daemon=True)
    thread.start()
    return stop, moved, thread


def test_a_busy_projections_moves_within_the_gap_are_answered_by_one_look() -> None:
    supervisor = CountingSupervisor(look_gap=LONG_GAP)
    stop, moved, thread = _running(supervisor)
    try:
        assert supervisor.wait_for_looks(1)
        for _ in range(50):
            moved.set()
        # None of the fifty moves is looked at before the gap is over.
        assert not supervisor.wait_for_looks(2, timeout=0.5)
        assert supervisor.looks == 1
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_a_move_after_the_gap_is_looked_at_at_once() -> None:
    supervisor = CountingSupervisor(look_gap=0.0)
    stop, moved, thread = _running(supervisor)
    try:
        assert supervisor.wait_for_looks(1)
        moved.set()
        assert supervisor.wait_for_looks(2)
    finally:
        stop.set()
        thread.join(5)


def test_a_mark_that_falls_due_within_the_gap_is_looked_at_when_it_does() -> None:
    supervisor = CountingSupervisor(look_gap=LONG_GAP)
    supervisor.next_mark = datetime.now(UTC) + timedelta(milliseconds=300)
    stop, moved, thread = _running(supervisor)
    try:
        assert supervisor.wait_for_looks(1)
        supervisor.next_mark = None
        moved.set()  # a move within the gap does not hold back the mark's look
        assert supervisor.wait_for_looks(2)
    finally:
        stop.set()
        thread.join(5)


def test_the_supervisor_stops_at_once_while_it_waits_out_the_gap() -> None:
    supervisor = CountingSupervisor(look_gap=LONG_GAP)
    stop, moved, thread = _running(supervisor)
    assert supervisor.wait_for_looks(1)
    moved.set()
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert supervisor.looks == 1

"""When a projection with a ``settle`` time starts its batches (the runner's loop, without a
store): at once after a quiet spell, held back while events keep arriving (at most ``settle``),
at once again when the node goes quiet or a backlog fills whole batches; stop ends the wait
at once; a store that notifies nobody (SQLite) holds nothing back."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from hub.projections import runner as runner_module
from hub.projections.agents import AgentsProjection
from hub.projections.appointments import AppointmentsProjection
from hub.projections.cases import CasesProjection
from hub.projections.runner import BUSY_SETTLE, ProjectionRunner
from hub.projections.statistics import StatisticsProjection

#: Longer than any test here waits: a second batch within it can only be one a quiet spell or a
#: backlog asked for.
LONG_SETTLE = 60.0
BATCH = 10
#: How often an event arrives on a busy node here.
ARRIVALS = 0.01
#: The quiet spell that ends a wait, in the tests of a busy node: far longer than any pause
#: between two arrivals there, however loaded the machine running the tests.
LONG_QUIET = 5.0


@pytest.fixture
def long_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "SETTLE_QUIET", LONG_QUIET)


class _Projection:
    name = "counting"
    topics: tuple[str, ...] = ()

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self.store = None


class _Watch:
    """A log watch: with ``busy``, an event arrives every few milliseconds until stop (as on a
    busy node); without, none arrives. ``notifies`` False is SQLite's: nobody is told."""

    def __init__(self, *, busy: bool, notifies: bool = True) -> None:
        self.busy = busy
        self.notifies = notifies

    @contextlib.contextmanager
    def watching(
        self, alarm: threading.Event, stop: threading.Event, topics: Any
    ) -> Iterator[bool]:
        def arrivals() -> None:
            while not stop.wait(ARRIVALS):
                if self.busy and self.notifies:
                    alarm.set()
            alarm.set()  # as the store's watch does when stop is set

        threading.Thread(target=arrivals, daemon=True).start()
        yield self.notifies


class CountingRunner(ProjectionRunner):
    """Each step reads what the test says is waiting (``reads``; then 1 event each time)."""

    def __init__(self, settle: float, reads: list[int] | None = None) -> None:
        super().__init__(_Projection(settle), None, batch_size=BATCH)  # type: ignore[arg-type]
        self.reads = list(reads or [])
        self.steps = 0
        self.stepped = threading.Condition()

    def refresh(self) -> int:
        return 0

    def step(self) -> int:
        with self.stepped:
            self.steps += 1
            self.stepped.notify_all()
        return self.reads.pop(0) if self.reads else 1

    def _report(self, read: int) -> None:
        pass

    def wait_for_steps(self, count: int, timeout: float = 10.0) -> bool:
        with self.stepped:
            return self.stepped.wait_for(lambda: self.steps >= count, timeout)


def _running(runner: ProjectionRunner, watch: _Watch) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(
        target=runner.run, kwargs={"stop": stop, "idle_wait": 0.01, "watch": watch}, daemon=True
    )
    thread.start()
    return stop, thread


def _stopped(stop: threading.Event, thread: threading.Thread) -> bool:
    stop.set()
    thread.join(5)
    return not thread.is_alive()


@pytest.mark.usefixtures("long_quiet")
def test_while_events_keep_arriving_the_next_batch_waits_for_the_settle_time() -> None:
    runner = CountingRunner(settle=LONG_SETTLE)
    stop, thread = _running(runner, _Watch(busy=True))
    try:
        assert runner.wait_for_steps(1)  # not held back: nothing came before it
        # Events keep arriving (and each step reads one), yet no second batch meanwhile.
        assert not runner.wait_for_steps(2, timeout=0.5)
        assert runner.steps == 1
    finally:
        # Stop ends the wait at once, not after the settle time.
        assert _stopped(stop, thread)


def test_when_the_node_goes_quiet_the_next_batch_is_taken_without_waiting_out_the_settle() -> None:
    runner = CountingRunner(settle=LONG_SETTLE)
    stop, thread = _running(runner, _Watch(busy=False))
    try:
        # Each after a quiet spell of SETTLE_QUIET, never after the minute.
        assert runner.wait_for_steps(3)
    finally:
        assert _stopped(stop, thread)


@pytest.mark.usefixtures("long_quiet")
def test_a_backlog_that_fills_whole_batches_is_worked_off_without_waiting() -> None:
    runner = CountingRunner(settle=LONG_SETTLE, reads=[BATCH, BATCH, BATCH, 3])
    stop, thread = _running(runner, _Watch(busy=True))
    try:
        assert runner.wait_for_steps(4)  # three full batches, then the rest, one after another
        assert not runner.wait_for_steps(5, timeout=0.5)  # then held back again
    finally:
        assert _stopped(stop, thread)


def test_without_a_settle_time_each_batch_follows_the_last_at_once() -> None:
    runner = CountingRunner(settle=0.0)
    stop, thread = _running(runner, _Watch(busy=True))
    try:
        assert runner.wait_for_steps(20)
    finally:
        assert _stopped(stop, thread)


@pytest.mark.usefixtures("long_quiet")
def test_a_store_that_notifies_nobody_holds_nothing_back() -> None:
    # SQLite: nothing says whether events keep arriving, so no batch waits for more. (With the
    # long quiet spell, a runner that held back here would take a step every five seconds.)
    runner = CountingRunner(settle=LONG_SETTLE)
    stop, thread = _running(runner, _Watch(busy=True, notifies=False))
    try:
        assert runner.wait_for_steps(20)
    finally:
        assert _stopped(stop, thread)


def test_only_the_projections_nobody_waits_on_settle() -> None:
    # Queues, WatchQueue and the 电子监察 supervisor follow the cases and appointments
    # projections: they never wait.
    assert CasesProjection.settle == 0.0
    assert AppointmentsProjection.settle == 0.0
    assert StatisticsProjection.settle == BUSY_SETTLE > 0
    assert AgentsProjection.settle == BUSY_SETTLE

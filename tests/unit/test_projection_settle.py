"""When a projection with a ``settle`` time starts its batches (the runner's loop, without a
store): at once after a quiet spell, at most one batch per ``settle`` while events keep arriving,
and at once again while a backlog fills whole batches; stop ends the wait at once."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from hub.projections.agents import AgentsProjection
from hub.projections.cases import CasesProjection
from hub.projections.runner import BUSY_SETTLE, ProjectionRunner
from hub.projections.statistics import StatisticsProjection

#: Longer than any test here waits: a second batch within it can only be one a backlog asked for.
LONG_SETTLE = 60.0
BATCH = 10


class _Projection:
    name = "counting"
    topics: tuple[str, ...] = ()

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self.store = None


class _Watch:
    """A log watch of a store that notifies nobody: the runner looks every ``idle_wait``."""

    @contextlib.contextmanager
    def watching(
        self, alarm: threading.Event, stop: threading.Event, topics: Any
    ) -> Iterator[bool]:
        yield False


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


def _running(runner: ProjectionRunner) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(
        target=runner.run,
        kwargs={"stop": stop, "idle_wait": 0.01, "watch": _Watch()},
        daemon=True,
    )
    thread.start()
    return stop, thread


def test_the_first_batch_is_taken_at_once_and_the_next_not_before_the_settle_time() -> None:
    runner = CountingRunner(settle=LONG_SETTLE)
    stop, thread = _running(runner)
    try:
        assert runner.wait_for_steps(1)  # not held back: nothing came before it
        # Events keep arriving (each step reads one), yet no second batch within the settle time.
        assert not runner.wait_for_steps(2, timeout=0.5)
        assert runner.steps == 1
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()  # stop ends the wait at once, not after the settle time


def test_a_backlog_that_fills_whole_batches_is_worked_off_without_waiting() -> None:
    runner = CountingRunner(settle=LONG_SETTLE, reads=[BATCH, BATCH, BATCH, 3])
    stop, thread = _running(runner)
    try:
        assert runner.wait_for_steps(4)  # three full batches, then the rest, one after another
        assert not runner.wait_for_steps(5, timeout=0.5)  # then the settle time again
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_without_a_settle_time_each_batch_follows_the_last_at_once() -> None:
    runner = CountingRunner(settle=0.0)
    stop, thread = _running(runner)
    try:
        assert runner.wait_for_steps(20)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_only_the_projections_nobody_waits_on_settle() -> None:
    # Queues, WatchQueue and the 电子监察 supervisor follow the cases projection: it never waits.
    assert CasesProjection.settle == 0.0
    assert StatisticsProjection.settle == BUSY_SETTLE > 0
    assert AgentsProjection.settle == BUSY_SETTLE

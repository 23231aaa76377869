"""The log watch: one subscription to the store's notifications wakes every follower.

On PostgreSQL every registered alarm is set when an event is stored (an alarm registered for
some topics only by events of those topics), an alarm removed is no longer set, and ``stop`` wakes them all a last time; after its subscription ends unexpectedly
(the store went away) it wakes every follower and subscribes again. SQLite notifies nobody:
``add`` says so and the followers look again on their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError
from eventsourcing.utils import get_topic

from hub.application.log_watch import LogWatch
from hub.domain.command_record import CommandRecord
from hub.projections.appointments import AppointmentsProjection
from hub.projections.cases import TOPICS as CASE_TOPICS
from hub.settings import Settings
from tests.harness.inprocess import InProcessNode

_WAIT = 30.0  # an upper bound for a wake-up on a loaded machine, not a timing assertion
APPOINTMENT_TOPICS = AppointmentsProjection.topics


@pytest.fixture
def node(tmp_path: Path, fresh_postgres_db: str) -> Iterator[InProcessNode]:
    started = InProcessNode.start(
        Settings(data_dir=tmp_path / "node", database_url=fresh_postgres_db)
    )
    started.add_hall("v-room", "430902104201")
    yield started
    started.close()


def _woken_once_subscribed(
    node: InProcessNode, watch: LogWatch, alarm: threading.Event, instead_of: Any, key: str
) -> None:
    """Wait until the watch holds a subscription other than ``instead_of`` (it subscribes
    after its pause), then check that an event stored wakes ``alarm``."""
    deadline = time.monotonic() + _WAIT
    while watch._subscription is instead_of:
        assert time.monotonic() < deadline, "the watch did not subscribe"
        threading.Event().wait(0.05)
    alarm.clear()
    node.submit(node.halls["v-room"], key)
    assert alarm.wait(_WAIT)


def test_every_alarm_is_set_when_an_event_is_stored(node: InProcessNode) -> None:
    watch = LogWatch(node.app.recorder)
    first, second, removed = threading.Event(), threading.Event(), threading.Event()
    try:
        assert watch.add(first) and watch.add(second) and watch.add(removed)
        watch.remove(removed)
        node.submit(node.halls["v-room"], "key-watch-1")
        assert first.wait(_WAIT) and second.wait(_WAIT)
        assert not removed.is_set()
    finally:
        watch.stop()


def test_watching_wakes_on_stop_and_stop_wakes_everyone(node: InProcessNode) -> None:
    watch = LogWatch(node.app.recorder)
    alarm, stop = threading.Event(), threading.Event()
    try:
        with watch.watching(alarm, stop) as notifies:
            assert notifies
            stop.set()
            assert alarm.wait(_WAIT)
        other = threading.Event()
        watch.add(other)
    finally:
        watch.stop()
    assert other.is_set()


def test_a_lost_subscription_wakes_everyone_and_is_replaced(node: InProcessNode) -> None:
    watch = LogWatch(node.app.recorder)
    alarm = threading.Event()
    try:
        assert watch.add(alarm)
        lost = watch._subscription
        lost.stop()  # as when the store goes away: the library's iterator ends
        assert alarm.wait(_WAIT)
        _woken_once_subscribed(node, watch, alarm, instead_of=lost, key="key-watch-2")
    finally:
        watch.stop()


def test_an_alarm_with_topics_is_set_only_by_events_of_those_topics(node: InProcessNode) -> None:
    watch = LogWatch(node.app.recorder)
    cases, appointments = threading.Event(), threading.Event()
    try:
        assert watch.add(cases, CASE_TOPICS) and watch.add(appointments, APPOINTMENT_TOPICS)
        node.submit(node.halls["v-room"], "key-watch-3")
        assert cases.wait(_WAIT)
        # What the subscription does with each event it delivers, for one of each kind.
        cases.clear()
        watch._ring(get_topic(CommandRecord.Recorded))
        assert not cases.is_set() and not appointments.is_set()
        watch._ring(APPOINTMENT_TOPICS[0])
        assert appointments.is_set() and not cases.is_set()
    finally:
        watch.stop()


def test_a_watch_made_while_the_store_is_down_subscribes_once_it_is_back(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower process that starts while PostgreSQL cannot be reached is not left without
    wake-ups: the watch says the store notifies, and subscribes once it can."""
    recorder = node.app.recorder
    subscribe = recorder.subscribe
    attempts: list[int] = []

    def down_at_first(*args: object, **kwargs: object) -> object:
        attempts.append(1)
        if len(attempts) == 1:
            raise OperationalError("connection refused (the store is down)")
        return subscribe(*args, **kwargs)

    monkeypatch.setattr(recorder, "subscribe", down_at_first)
    watch = LogWatch(recorder)
    alarm = threading.Event()
    try:
        assert watch.add(alarm)  # it will notify, once subscribed
        assert alarm.wait(_WAIT)  # meanwhile every follower looks on its own
        _woken_once_subscribed(node, watch, alarm, instead_of=None, key="key-watch-4")
    finally:
        watch.stop()


def test_sqlite_notifies_nobody(tmp_path: Path) -> None:
    node = InProcessNode.start(Settings(data_dir=tmp_path / "node"))
    try:
        watch = LogWatch(node.app.recorder)
        assert watch.add(threading.Event()) is False
        watch.stop()
    finally:
        node.close()

"""The store's circuit breaker (docs/operations.md, "A store that is down"): a command whose
caller's deadline has passed is never stored; a store that cannot be reached is answered
"unavailable" at once, but for one probe every ``probe_interval``, until it answers again."""

from __future__ import annotations

import time
import types

import psycopg
import pytest
from eventsourcing.persistence import OperationalError

from hub.application.storage import DEADLINE, StorageGuard
from hub.errors import StorageUnavailable


def test_a_command_whose_callers_deadline_passed_is_never_stored() -> None:
    guard = StorageGuard()
    stored: list[str] = []
    token = DEADLINE.set(time.monotonic() - 0.001)
    try:
        with pytest.raises(StorageUnavailable, match="deadline passed.*nothing was stored"):
            guard.run(lambda: stored.append("command"), write=True)
        assert stored == []
        assert guard.run(lambda: "a read", write=False) == "a read"  # reads still answer
    finally:
        DEADLINE.reset(token)
    token = DEADLINE.set(time.monotonic() + 60)
    try:
        guard.run(lambda: stored.append("command"), write=True)
    finally:
        DEADLINE.reset(token)
    assert stored == ["command"]


def _unreachable() -> None:
    try:
        raise psycopg.OperationalError("connection refused")
    except psycopg.OperationalError as cause:
        raise OperationalError("connection refused") from cause


def test_an_unreachable_store_is_probed_once_per_interval_until_it_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    clock = types.SimpleNamespace(
        monotonic=lambda: now[0], time=time.time, strftime=time.strftime, localtime=time.localtime
    )
    monkeypatch.setattr("hub.application.storage.time", clock)
    guard = StorageGuard(probe_interval=0.5)
    calls: list[str] = []

    def access() -> str:
        calls.append("tried")
        _unreachable()
        return "never"

    with pytest.raises(StorageUnavailable, match="event store unavailable: connection refused"):
        guard.run(access)
    assert guard.down and calls == ["tried"]
    # Within the interval: refused at once, without touching the store.
    with pytest.raises(StorageUnavailable, match="unreachable \\(since .*\\); retry shortly"):
        guard.run(access)
    assert calls == ["tried"]
    now[0] += 0.4
    with pytest.raises(StorageUnavailable, match="retry shortly"):
        guard.run(access)
    now[0] += 0.2  # half a second after the failure: one probe goes to the store
    assert guard.run(lambda: "answered") == "answered"
    assert not guard.down


def test_a_statement_that_fails_on_a_live_store_does_not_open_the_breaker() -> None:
    guard = StorageGuard()

    def failing() -> None:
        raise OperationalError("deadlock detected")

    with pytest.raises(StorageUnavailable):
        guard.run(failing)
    assert not guard.down

"""The relay's consumer handles a poll's messages in lanes, one per case (docs/federation.md):
each case's messages in their order, different cases at once, and offsets committed only past
what was handled — a lane that fails stops, and its partition is read again from there."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from kafka import TopicPartition

from hub import telemetry
from hub.errors import StorageUnavailable
from hub.relay.node import Relay

P0 = TopicPartition("tongban.v1.61.inbox", 0)
P1 = TopicPartition("tongban.v1.61.inbox", 1)


@dataclass(frozen=True)
class Record:
    """What kafka-python's poll gives for one message (the fields the relay reads)."""

    key: bytes
    offset: int
    value: bytes


class RecordingInbox:
    """Handles each message by remembering it, per case, in the order it came; fails on the
    messages named in ``failing`` (a passing failure: the store is down)."""

    def __init__(self, failing: frozenset[bytes] = frozenset()) -> None:
        self.failing = failing
        self.seen: dict[bytes, list[bytes]] = {}
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def handle_or_hold(self, data: bytes) -> str:
        if data in self.failing:
            raise StorageUnavailable(f"the store is down while handling {data!r}")
        case = data.split(b"#")[0]
        with self._lock:
            self.seen.setdefault(case, []).append(data)
            self.threads.add(threading.current_thread().name)
        return "stored"


def relay_with(inbox: RecordingInbox) -> Relay:
    relay = Relay.__new__(Relay)  # only the consumer's poll handling: no store, no broker
    relay.inbox = inbox  # type: ignore[assignment]
    return relay


def poll() -> dict[TopicPartition, list[Record]]:
    """Cases a and b share partition 0, interleaved; case c is alone in partition 1."""
    p0 = [(b"a", 0), (b"b", 0), (b"a", 1), (b"b", 1), (b"a", 2), (b"b", 2)]
    return {
        P0: [Record(case, 10 + n, case + b"#%d" % step) for n, (case, step) in enumerate(p0)],
        P1: [Record(b"c", 40 + step, b"c#%d" % step) for step in range(3)],
    }


def test_each_case_is_handled_in_its_order_and_every_partition_committed_past_its_last() -> None:
    inbox = RecordingInbox()
    with ThreadPoolExecutor(4, thread_name_prefix="relay-lane") as lanes:
        handled, failed = relay_with(inbox)._handle_poll(poll(), lanes)
    assert inbox.seen == {
        case: [case + b"#%d" % step for step in range(3)] for case in (b"a", b"b", b"c")
    }
    assert {tp: meta.offset for tp, meta in handled.items()} == {P0: 16, P1: 43}
    assert failed == {}
    # Different cases went to the lanes' threads, not the consumer's.
    assert all(name.startswith("relay-lane") for name in inbox.threads)


def test_a_failure_stops_its_case_and_its_partition_is_read_again_from_there() -> None:
    # Case a fails at its second message (offset 12): its third must not be handled before it,
    # partition 0 is committed only up to it and read again from it; case b (same partition)
    # and case c (another) go on.
    inbox = RecordingInbox(frozenset({b"a#1"}))
    with ThreadPoolExecutor(4, thread_name_prefix="relay-lane") as lanes:
        handled, failed = relay_with(inbox)._handle_poll(poll(), lanes)
    assert inbox.seen[b"a"] == [b"a#0"]
    assert inbox.seen[b"b"] == [b"b#0", b"b#1", b"b#2"]
    assert inbox.seen[b"c"] == [b"c#0", b"c#1", b"c#2"]
    assert {tp: meta.offset for tp, meta in handled.items()} == {P0: 12, P1: 43}
    assert failed == {P0: 12}


def test_a_failure_at_a_partitions_first_message_commits_nothing_there() -> None:
    inbox = RecordingInbox(frozenset({b"c#0"}))
    with ThreadPoolExecutor(4, thread_name_prefix="relay-lane") as lanes:
        handled, failed = relay_with(inbox)._handle_poll(poll(), lanes)
    assert b"c" not in inbox.seen
    assert P1 not in handled
    assert failed == {P1: 40}
    assert handled[P0].offset == 16


class BrokenInbox(RecordingInbox):
    """Cannot even quarantine (``handle_or_hold`` quarantines any other fault itself)."""

    def handle_or_hold(self, data: bytes) -> str:
        raise RuntimeError("the quarantine is broken")


def test_a_failure_that_is_not_the_stores_is_raised_for_the_relay_to_stop() -> None:
    # Not read again and again for ever: the relay's guard stops it and health says why.
    with (
        ThreadPoolExecutor(4, thread_name_prefix="relay-lane") as lanes,
        pytest.raises(RuntimeError, match="the quarantine is broken"),
    ):
        relay_with(BrokenInbox())._handle_poll(poll(), lanes)


def test_a_relay_loop_that_cannot_go_on_stops_the_relay_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store away is waited out (the loop starts again); any other error stops the relay:
    ``failure`` says why (the node's health shows it) and the metric turns 1."""
    monkeypatch.setattr("hub.relay.node.STORE_RETRY_S", 0.0)
    relay = relay_with(RecordingInbox())
    relay.failure = None
    calls: list[int] = []

    def store_away_once(stop: threading.Event) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise StorageUnavailable("the store is away")

    stop = threading.Event()
    relay._guard("outbox", store_away_once, stop)
    assert (len(calls), relay.failure, stop.is_set()) == (2, None, False)

    def broken(stop: threading.Event) -> None:
        raise RuntimeError("a bug")

    relay._guard("consumer", broken, stop)
    assert stop.is_set()
    assert relay.failure == "relay consumer stopped: a bug"
    failed = telemetry.REGISTRY.get_sample_value("tongban_follower_failed", {"follower": "relay"})
    assert failed == 1.0

"""The relay's consumer handles its inbox in lanes, one per case (docs/federation.md): each
case's messages in their order, different cases at once, a message handed to a lane as soon as
it is read (not when every lane of the last poll has finished), and offsets committed only up to
the first message not handled yet — a lane that fails stops, and its partition is read again
from there. First the bookkeeping alone (:mod:`hub.relay.lanes`), then the consumer's loop
(``Relay._drain``) over a scripted consumer."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition

from hub.relay import node
from hub.relay.lanes import LaneScheduler, Message, Work
from hub.relay.node import Relay

P0 = TopicPartition("tongban.v1.61.inbox", 0)
P1 = TopicPartition("tongban.v1.61.inbox", 1)
_WAIT = 30.0  # an upper bound for a loaded machine, not a timing assertion


def m(partition: TopicPartition, offset: int, case: bytes, step: int) -> Message:
    return Message(partition, offset, case, case + b"#%d" % step)


def values(work: Work) -> list[bytes]:
    return [message.value for message in work.messages]


# ------------------------------------------------------------------------- the bookkeeping


def test_a_cases_messages_run_in_order_one_work_at_a_time_and_cases_at_once() -> None:
    lanes = LaneScheduler(limit=100)
    first = lanes.add([m(P0, 10, b"a", 0), m(P0, 11, b"b", 0), m(P0, 12, b"a", 1)])
    assert sorted(values(w) for w in first) == [[b"a#0", b"a#1"], [b"b#0"]]
    work_a = next(w for w in first if w.lane == (P0, b"a"))
    # a's next message is read while a's work runs: it waits for it, then runs alone.
    assert lanes.add([m(P0, 13, b"a", 2)]) == []
    (after,) = lanes.finished(work_a)
    assert values(after) == [b"a#2"]


def test_a_partition_is_committed_only_up_to_its_first_message_not_handled() -> None:
    lanes = LaneScheduler(limit=100)
    works = lanes.add([m(P0, 10, b"a", 0), m(P0, 11, b"b", 0), m(P1, 40, b"c", 0)])
    assert lanes.commits() == {}  # nothing handled yet: offsets 10 and 40 are still to do
    by_case = {w.lane[1]: w for w in works}
    lanes.finished(by_case[b"b"])  # b (offset 11) is done, a (offset 10) is not
    assert lanes.commits() == {}
    lanes.finished(by_case[b"a"])
    lanes.finished(by_case[b"c"])
    assert lanes.commits() == {P0: 12, P1: 41}
    assert lanes.commits() == {}  # only what moved


def test_a_failure_stops_its_case_and_its_partition_rewinds_once_its_lanes_are_done() -> None:
    lanes = LaneScheduler(limit=100)
    works = lanes.add([m(P0, 10, b"a", 0), m(P0, 11, b"b", 0), m(P0, 12, b"a", 1)])
    by_case = {w.lane[1]: w for w in works}
    lanes.finished(by_case[b"a"], failed_at=12)  # a#0 stored, a#1 failed: the store is down
    assert lanes.failing() == {P0}
    assert lanes.rewinds() == {}  # b's lane still runs in that partition
    assert lanes.add([m(P0, 13, b"d", 0)]) == []  # nothing new starts there: read again later
    lanes.finished(by_case[b"b"])
    assert lanes.commits() == {P0: 12}  # up to the failed message, not past it
    assert lanes.rewinds() == {P0: 12}
    assert lanes.failing() == set()
    again = lanes.add([m(P0, 12, b"a", 1), m(P0, 13, b"d", 0)])
    assert sorted(values(w) for w in again) == [[b"a#1"], [b"d#0"]]
    for work in again:
        lanes.finished(work)
    assert lanes.commits() == {P0: 14}


def test_a_failure_at_a_partitions_first_message_commits_nothing_there() -> None:
    lanes = LaneScheduler(limit=100)
    works = lanes.add([m(P1, 40, b"c", 0), m(P1, 41, b"c", 1), m(P0, 10, b"a", 0)])
    for work in works:
        lanes.finished(work, failed_at=40 if work.partition == P1 else None)
    assert lanes.commits() == {P0: 11}
    assert lanes.rewinds() == {P1: 40}
    assert lanes.commits() == {}


def test_no_more_is_read_than_the_limit_until_some_is_handled() -> None:
    lanes = LaneScheduler(limit=3)
    (work,) = lanes.add([m(P0, 10, b"a", 0), m(P0, 11, b"a", 1)])
    assert lanes.room() == 1
    lanes.finished(work)
    assert lanes.room() == 3


# ------------------------------------------------------------------------- the consumer


@dataclass(frozen=True)
class Record:
    """What kafka-python's poll gives for one message (the fields the relay reads)."""

    key: bytes
    offset: int
    value: bytes


@dataclass
class ScriptedConsumer:
    """Gives ``polls`` one by one (then nothing), and records commits, seeks and pauses."""

    polls: deque[dict[TopicPartition, list[Record]]]
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)
    paused: set[TopicPartition] = field(default_factory=set)
    asked: list[int] = field(default_factory=list)  # max_records of each poll

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        self.asked.append(max_records)
        if self.polls:
            return self.polls.popleft()
        time.sleep(0.001)  # an empty fetch (the broker held it): it has no condition to await
        return {}

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        moved = {tp: meta.offset for tp, meta in offsets.items()}
        self.commits.append(moved)
        self.committed.update(moved)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))

    def pause(self, partition: TopicPartition) -> None:
        self.paused.add(partition)

    def resume(self, partition: TopicPartition) -> None:
        self.paused.discard(partition)


class RecordingInbox:
    """Handles each message by remembering it, per case, in the order it came; fails on the
    messages named in ``failing`` (a passing failure: the store is down); holds the messages
    named in ``held`` until ``release`` is set."""

    def __init__(
        self, failing: frozenset[bytes] = frozenset(), held: frozenset[bytes] = frozenset()
    ):
        self.failing, self.held = failing, held
        self.release = threading.Event()
        self.seen: dict[bytes, list[bytes]] = {}
        self.threads: set[str] = set()
        self.changed = threading.Condition()

    def handle(self, data: bytes) -> str:
        if data in self.held:
            self.release.wait(_WAIT)
        if data in self.failing:
            raise ConnectionError(f"the store is down while handling {data!r}")
        case = data.split(b"#")[0]
        with self.changed:
            self.seen.setdefault(case, []).append(data)
            self.threads.add(threading.current_thread().name)
            self.changed.notify_all()
        return "stored"

    def wait_for(self, condition: Any) -> None:
        with self.changed:
            assert self.changed.wait_for(condition, _WAIT), "the lanes never got there"


def drain(inbox: RecordingInbox, consumer: ScriptedConsumer, until: Any, lanes: int = 4) -> None:
    """Run the relay's consumer loop until ``until()`` holds (or 30 s pass), then stop it."""
    relay = Relay.__new__(Relay)  # only the consumer's loop: no store, no broker
    relay.inbox = inbox  # type: ignore[assignment]
    relay.lanes = lanes
    relay._wake = threading.Event()
    stop = threading.Event()
    thread = threading.Thread(target=relay._drain, args=(consumer, stop))
    thread.start()
    try:
        deadline = time.monotonic() + _WAIT
        while not until() and time.monotonic() < deadline:
            stop.wait(0.005)  # polls a condition another thread makes true, with a deadline
    finally:
        stop.set()
        thread.join(_WAIT)
    assert until(), "the consumer never got there"


def poll() -> dict[TopicPartition, list[Record]]:
    """Cases a and b share partition 0, interleaved; case c is alone in partition 1."""
    p0 = [(b"a", 0), (b"b", 0), (b"a", 1), (b"b", 1), (b"a", 2), (b"b", 2)]
    return {
        P0: [Record(case, 10 + n, case + b"#%d" % step) for n, (case, step) in enumerate(p0)],
        P1: [Record(b"c", 40 + step, b"c#%d" % step) for step in range(3)],
    }


def test_each_case_is_handled_in_its_order_and_every_partition_committed_past_its_last() -> None:
    inbox = RecordingInbox()
    consumer = ScriptedConsumer(deque([poll()]))
    drain(inbox, consumer, lambda: consumer.committed == {P0: 16, P1: 43})
    assert inbox.seen == {
        case: [case + b"#%d" % step for step in range(3)] for case in (b"a", b"b", b"c")
    }
    # Different cases went to the lanes' threads, not the consumer's.
    assert all(name.startswith("relay-lane") for name in inbox.threads)


def test_a_message_read_while_another_case_is_handled_does_not_wait_for_it() -> None:
    # a's message is held in its lane; b's arrives at the next poll and is handled meanwhile.
    # Partition 0 is committed only up to a's message until a is done.
    inbox = RecordingInbox(held=frozenset({b"a#0"}))
    consumer = ScriptedConsumer(
        deque([{P0: [Record(b"a", 10, b"a#0")]}, {P0: [Record(b"b", 11, b"b#0")]}])
    )
    stop_after: list[bool] = []

    def b_handled_then_a() -> bool:
        if not stop_after and b"b" in inbox.seen:
            assert b"a" not in inbox.seen  # b did not wait for a
            assert all(offsets.get(P0, 10) <= 10 for offsets in consumer.commits)
            stop_after.append(True)
            inbox.release.set()
        return consumer.committed.get(P0) == 12

    drain(inbox, consumer, b_handled_then_a)
    assert inbox.seen == {b"a": [b"a#0"], b"b": [b"b#0"]}


def test_a_failure_stops_its_case_and_its_partition_is_read_again_from_there() -> None:
    # Case a fails at its second message (offset 12): its third is not handled before it,
    # partition 0 is paused, committed only up to it, then read again from it; case b (same
    # partition) and case c (another) go on.
    inbox = RecordingInbox(frozenset({b"a#1"}))
    consumer = ScriptedConsumer(deque([poll()]))
    drain(inbox, consumer, lambda: (P0, 12) in consumer.seeks and consumer.committed.get(P1) == 43)
    assert inbox.seen[b"a"] == [b"a#0"]
    assert inbox.seen[b"b"] == [b"b#0", b"b#1", b"b#2"]
    assert inbox.seen[b"c"] == [b"c#0", b"c#1", b"c#2"]
    assert consumer.committed[P0] == 12
    assert all(offsets.get(P0, 12) <= 12 for offsets in consumer.commits)
    assert P0 in consumer.paused  # until STORE_RETRY_S has passed


def test_the_partition_is_read_again_after_the_retry_pause(monkeypatch: Any) -> None:
    monkeypatch.setattr(node, "STORE_RETRY_S", 0.0)
    inbox = RecordingInbox(frozenset({b"c#0"}))
    consumer = ScriptedConsumer(deque([poll()]))
    drain(inbox, consumer, lambda: (P1, 40) in consumer.seeks and P1 not in consumer.paused)
    assert b"c" not in inbox.seen
    assert P1 not in consumer.committed
    assert consumer.committed[P0] == 16


def test_no_more_messages_are_read_than_the_limit_allows(monkeypatch: Any) -> None:
    # Two messages in hand at most; a's is held in its lane, so after b's is done the
    # consumer asks for one more at most, and for none while two are in hand.
    monkeypatch.setattr(node, "INBOX_IN_HAND", 2)
    inbox = RecordingInbox(held=frozenset({b"a#0"}))
    consumer = ScriptedConsumer(deque([{P0: [Record(b"a", 10, b"a#0"), Record(b"b", 11, b"b#0")]}]))

    def b_handled_then_a() -> bool:
        if b"b" in inbox.seen and len(consumer.asked) > 3:
            inbox.release.set()
        return consumer.committed.get(P0) == 12

    drain(inbox, consumer, b_handled_then_a)
    assert consumer.asked[0] == 2 and max(consumer.asked) == 2
    assert 1 in consumer.asked  # with a's message still in hand

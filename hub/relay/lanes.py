"""Which inbox messages the relay's lanes may handle now, and how far each partition's offset
may be committed: the bookkeeping of the consumer (:meth:`hub.relay.node.Relay._drain`).

Pure: no broker, no threads. The consumer reads its inbox while earlier messages are still
being handled, hands each new message to the scheduler, starts the work it returns on its
lanes, and reports each finished work back. The rules:

* A *lane* is one case's messages in one partition (messages are keyed by case id, so a case
  keeps to one partition, in order). At most one work per lane runs at a time, with its
  messages in offset order; a case's messages read while its lane runs wait for it, then run
  together. Different cases run at once.
* A partition's offset is committed only up to its first message not handled yet: a crash
  reads again what was not finished (each such message is then a duplicate, stored once and
  acknowledged again), and never skips one.
* A work that fails for a passing reason (the store is down) stops at that message. Its
  partition then takes nothing new; once its lanes have all finished, the consumer seeks it back
  to the first failed message and it is read again from there (a new *generation*: what the
  partition's lanes report from before is not counted again).

Written here because Kafka clients leave it to the application: kafka-python commits what it
is told, and a consumer that handles messages on several threads must know itself which
offsets are safe to commit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

#: A lane: (partition, case key).
Lane = tuple[Hashable, Any]


@dataclass(frozen=True)
class Message:
    """One inbox message as the scheduler needs it."""

    partition: Hashable
    offset: int
    key: Any
    value: bytes


@dataclass(frozen=True)
class Work:
    """One lane's messages to handle now, in order."""

    lane: Lane
    messages: tuple[Message, ...]
    generation: int

    @property
    def partition(self) -> Hashable:
        return self.lane[0]


@dataclass
class _Partition:
    generation: int = 0
    unfinished: set[int] = field(default_factory=set)  # read, not handled yet
    after_last: int | None = None  # the offset after the last message read
    committed: int | None = None  # the last offset committed (or read from first)
    failed_at: int | None = None  # the first failed message, while the partition rewinds


class LaneScheduler:
    """The consumer's bookkeeping (see the module docstring). ``limit``: at most this many
    messages read and not handled yet (the consumer reads no more until some are done)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._partitions: dict[Hashable, _Partition] = {}
        self._running: dict[Lane, Work] = {}
        self._waiting: dict[Lane, deque[Message]] = {}

    def room(self) -> int:
        """How many more messages may be read now."""
        return max(0, self.limit - sum(len(p.unfinished) for p in self._partitions.values()))

    def busy(self) -> bool:
        """Whether any work is running."""
        return bool(self._running)

    def add(self, messages: Iterable[Message]) -> list[Work]:
        """Take messages just read (in each partition's order); returns the work to start."""
        for message in messages:
            partition = self._partition(message.partition)
            if partition.failed_at is not None:
                continue  # read again once the partition has rewound
            if partition.committed is None:
                # The consumer began reading here: from the group's committed offset (or the
                # partition's start), so there is nothing to commit until a message is done.
                partition.committed = message.offset
            partition.unfinished.add(message.offset)
            partition.after_last = message.offset + 1
            lane = (message.partition, message.key)
            self._waiting.setdefault(lane, deque()).append(message)
        return self._start()

    def finished(self, work: Work, failed_at: int | None = None) -> list[Work]:
        """``work`` ended: handled whole, or up to the message at ``failed_at`` (not
        included), which failed for a passing reason. Returns the work to start now."""
        del self._running[work.lane]
        partition = self._partition(work.partition)
        if work.generation == partition.generation:
            for message in work.messages:
                if failed_at is not None and message.offset >= failed_at:
                    break
                partition.unfinished.discard(message.offset)
            if failed_at is not None:
                first = partition.failed_at
                partition.failed_at = failed_at if first is None else min(first, failed_at)
                for lane in [lane for lane in self._waiting if lane[0] == work.partition]:
                    del self._waiting[lane]  # read again after the rewind
        return self._start()

    def failing(self) -> set[Hashable]:
        """Partitions waiting to rewind (the consumer pauses them)."""
        return {key for key, p in self._partitions.items() if p.failed_at is not None}

    def rewinds(self) -> dict[Hashable, int]:
        """Failed partitions whose lanes have all finished, each with the offset to read again
        from; from now on each is a new generation that starts there."""
        ready: dict[Hashable, int] = {}
        running = {lane[0] for lane in self._running}
        for key, partition in self._partitions.items():
            if partition.failed_at is None or key in running:
                continue
            ready[key] = partition.failed_at
            partition.generation += 1
            partition.unfinished.clear()
            partition.after_last = partition.failed_at
            partition.failed_at = None
        return ready

    def commits(self) -> dict[Hashable, int]:
        """Partitions whose committable offset moved since the last call, with that offset:
        the first message not handled yet, or the one after the last read."""
        moved: dict[Hashable, int] = {}
        for key, partition in self._partitions.items():
            if partition.unfinished:
                point: int | None = min(partition.unfinished)
            else:
                point = partition.after_last
            if partition.failed_at is not None and point is not None:
                point = min(point, partition.failed_at)
            if point is None or (partition.committed is not None and point <= partition.committed):
                continue
            partition.committed = point
            moved[key] = point
        return moved

    def _partition(self, key: Hashable) -> _Partition:
        return self._partitions.setdefault(key, _Partition())

    def _start(self) -> list[Work]:
        started: list[Work] = []
        for lane in [lane for lane in self._waiting if lane not in self._running]:
            queued = self._waiting.pop(lane)
            work = Work(lane, tuple(queued), self._partition(lane[0]).generation)
            self._running[lane] = work
            started.append(work)
        return started


__all__ = ["LaneScheduler", "Message", "Work"]

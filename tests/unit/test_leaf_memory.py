"""The relay's memory of the leaves its integrator logged: what it knows, and when a record
found not logged is looked up again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from hub.relay.outbound import LeafMemory


@dataclass(frozen=True)
class _Leaf:
    aggregate_id: UUID
    version: int
    index: int


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _memory(**kwargs: Any) -> tuple[LeafMemory, _Clock]:
    clock = _Clock()
    return LeafMemory(clock=clock, **kwargs), clock


def test_it_knows_the_leaves_of_records_and_not_of_their_cases_events() -> None:
    memory, _ = _memory()
    record, case = uuid4(), uuid4()
    memory.remember([_Leaf(record, 1, 7), _Leaf(case, 4, 8)])  # type: ignore[list-item]
    known = memory.get(record)
    assert known is not None and known.index == 7
    assert memory.get(case) is None  # a case's events: no message waits for those


def test_a_record_found_not_logged_waits_until_its_leaf_is_heard_of_or_the_recheck() -> None:
    memory, clock = _memory(recheck=1.0)
    record = uuid4()
    assert not memory.waiting(record)  # never looked up: look it up
    memory.not_logged(record)
    assert memory.waiting(record)  # found not logged just now: no second look
    clock.now += 0.5
    assert memory.waiting(record)
    clock.now += 0.5
    assert not memory.waiting(record)  # the safety net: looked up again after the recheck
    memory.not_logged(record)
    memory.remember([_Leaf(record, 1, 3)])  # type: ignore[list-item]
    assert not memory.waiting(record)
    assert memory.get(record) is not None


def test_a_leaf_heard_of_during_the_lookup_is_not_forgotten_by_it() -> None:
    memory, _ = _memory()
    record = uuid4()
    memory.remember([_Leaf(record, 1, 3)])  # type: ignore[list-item]
    memory.not_logged(record)  # the lookup began before the integrator committed
    assert not memory.waiting(record) and memory.get(record) is not None


def test_it_is_bounded() -> None:
    memory, _ = _memory(size=2)
    records = [uuid4() for _ in range(3)]
    memory.remember([_Leaf(record, 1, n) for n, record in enumerate(records)])  # type: ignore[misc]
    assert memory.get(records[2]) is not None
    assert memory.get(records[0]) is None  # emptied when full: read from the log again
    others = [uuid4() for _ in range(3)]
    for record in others:
        memory.not_logged(record)
    assert memory.waiting(others[2])
    assert not memory.waiting(others[0])  # emptied when full: looked up again


def test_a_record_is_looked_up_again_when_a_checkpoint_is_ahead_of_what_it_heard() -> None:
    """The integrator tells the memory after it committed: a checkpoint read from the store
    may cover leaves the memory has not heard of yet, one of which may be the record."""
    memory, _ = _memory()
    record = uuid4()
    memory.not_logged(record)
    memory.remember([_Leaf(uuid4(), 1, 0), _Leaf(uuid4(), 1, 1)])  # type: ignore[list-item]
    assert memory.heard == 2
    assert memory.waiting(record, below=2)  # it heard of every leaf under that checkpoint
    assert not memory.waiting(record, below=3)  # leaf 2 may be the record: look it up
    assert memory.waiting(record)  # no checkpoint asked for (an acknowledgement): may wait

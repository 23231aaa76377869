"""Group commit (``TONGBAN_GROUP_COMMIT``) against both event stores: SQLite and PostgreSQL.

Concurrent commands share transactions, so the properties to prove are the ones a shared
transaction could break: every command lands exactly once with the right versions and in order
per aggregate; a command whose save conflicts fails alone, with the error it would get without
group commit, while the rest of its batch is stored; idempotent retries (also concurrent
duplicates inside one batch) return the first result; and a store that is down fails the whole
batch and stores nothing.

To put chosen commands into one batch deterministically, some tests give the application a
``GroupCommit`` whose leader waits (up to seconds) until exactly that many saves are queued.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import pytest
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import OperationalError

from hub.application.group_commit import GroupCommit
from hub.application.hub import HubApplication
from hub.bootstrap import build_application
from hub.domain.command_record import HALL, CommandResult, record_id
from hub.domain.values import CaseState
from hub.errors import ConcurrencyConflict, ConfigurationError, StorageUnavailable
from hub.settings import Settings
from tests.harness.inprocess import APPLICANT, InProcessNode, material

T = TypeVar("T")


@pytest.fixture
def settings(store_url: str | None, tmp_path: Path) -> Settings:
    """Settings with group commit on, for a fresh store of each backend."""
    return Settings(data_dir=tmp_path / "node", group_commit=True, database_url=store_url)


@pytest.fixture
def node(settings: Settings) -> Iterator[InProcessNode]:
    started = InProcessNode.start(settings)
    started.add_hall("v-room", "430902104201")
    yield started
    started.close()


@pytest.fixture
def app(node: InProcessNode) -> HubApplication:
    return node.app


def _submit(node: InProcessNode, key: str) -> CommandResult:
    result: CommandResult = node.submit(node.halls["v-room"], key)
    return result


def _run(node: InProcessNode, action: str, key: str, case_id: UUID, **fields: Any) -> Any:
    return node.run(node.halls["v-room"], action, idempotency_key=key, case_id=str(case_id),
                    **fields)  # fmt: skip


def _in_threads(calls: list[Callable[[], T]]) -> tuple[list[T | None], list[BaseException | None]]:
    """Run each call in its own thread, all released together; (results, errors) by index."""
    results: list[T | None] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except BaseException as error:  # returned to the test, which asserts on it
            errors[index] = error

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a command never returned"
    return results, errors


def _one_batch_of(app: HubApplication, saves: int) -> list[int]:
    """Make the next ``saves`` saves one batch; returns the event counts of each store call."""
    assert app.group_commit is not None
    app.group_commit = GroupCommit(app, max_batch=saves, max_wait=30.0)
    calls: list[int] = []
    store = app.save

    def spy(*events: Any, **kwargs: Any) -> Any:
        calls.append(len(events))
        return store(*events, **kwargs)

    app.save = spy  # type: ignore[method-assign]
    return calls


def _notifications(app: HubApplication) -> list[tuple[UUID, int]]:
    """(aggregate id, version) of every stored event, in notification order."""
    stored = app.recorder.select_notifications(start=1, limit=100_000)
    return [(UUID(str(n.originator_id)), n.originator_version) for n in stored]


def test_the_setting_turns_group_commit_on(
    node: InProcessNode, settings: Settings, tmp_path: Path
) -> None:
    assert Settings.from_env({"TONGBAN_DATA_DIR": str(tmp_path)}).group_commit is True  # default
    for word in ("0", "false", "OFF"):
        environ = {"TONGBAN_DATA_DIR": str(tmp_path), "TONGBAN_GROUP_COMMIT": word}
        assert Settings.from_env(environ).group_commit is False
    with pytest.raises(ConfigurationError, match="TONGBAN_GROUP_COMMIT"):
        Settings.from_env({"TONGBAN_DATA_DIR": str(tmp_path), "TONGBAN_GROUP_COMMIT": "maybe"})
    app = build_application(settings)
    try:
        assert isinstance(app.group_commit, GroupCommit)
    finally:
        app.close()
    app = build_application(settings.with_changes(group_commit=False))
    try:
        assert app.group_commit is None
    finally:
        app.close()


def test_concurrent_commands_land_exactly_once_in_order(
    node: InProcessNode, app: HubApplication
) -> None:
    # A short wait for company makes batches certain even when the store is fast.
    assert app.group_commit is not None
    app.group_commit = GroupCommit(app, max_wait=0.005)
    threads, rounds = 12, 4
    size = len(_notifications(app))

    def work(thread: int) -> list[CommandResult]:
        results = []
        for round_ in range(rounds):
            submitted = _submit(node, f"key-{thread}-{round_}-submit")
            case_id = submitted.case_id
            accepted = _run(node, "accept", f"key-{thread}-{round_}-accept", case_id)
            handled = _run(node, "start_handling", f"key-{thread}-{round_}-handle", case_id)
            results += [submitted, accepted, handled]
        return results

    results, errors = _in_threads([functools.partial(work, n) for n in range(threads)])
    assert errors == [None] * threads
    # Each command answered with the version it produced: 1, 2, 3 per case.
    for per_thread in results:
        assert per_thread is not None
        assert [r.version for r in per_thread] == [1, 2, 3] * rounds
        assert not any(r.replayed for r in per_thread)
    cases = {r.case_id for per_thread in results if per_thread for r in per_thread}
    assert len(cases) == threads * rounds
    # Exactly once: 3 commands per case, each storing its command record and the case's event.
    stored = _notifications(app)[size:]
    assert len(stored) == len(set(stored)) == threads * rounds * 3 * 2
    # In order per aggregate: each case's versions appear as 1, 2, 3 in the log, and each right
    # after the record of the command that produced it.
    versions: defaultdict[UUID, list[int]] = defaultdict(list)
    for aggregate_id, version in stored[1::2]:
        versions[aggregate_id].append(version)
    assert all(versions[case_id] == [1, 2, 3] for case_id in cases)
    assert all(app.get_case(case_id).state is CaseState.HANDLING for case_id in cases)
    # And commands did share transactions.
    assert app.group_commit.saves == threads * rounds * 3
    assert app.group_commit.batches < app.group_commit.saves


def test_a_batch_is_stored_in_the_order_its_commands_arrived(
    node: InProcessNode, app: HubApplication
) -> None:
    commands = 6
    store_calls = _one_batch_of(app, commands)
    committer = app.group_commit
    assert committer is not None
    queue_save = committer.save
    numbers = threading.local()
    queued = [threading.Event() for _ in range(commands)]

    def save(*aggregates: Any, **extras: Any) -> None:
        queued[numbers.value].set()
        queue_save(*aggregates, **extras)

    committer.save = save  # type: ignore[method-assign]

    def submit(number: int) -> CommandResult:
        numbers.value = number
        # Command n reaches the committer only after command n-1 has queued its save.
        if number:
            assert queued[number - 1].wait(30)
            time.sleep(0.05)  # n-1 is between "about to queue" and "queued": let it finish
        return _submit(node, f"key-ordered-{number}")

    size = len(_notifications(app))
    results, errors = _in_threads([functools.partial(submit, n) for n in range(commands)])
    assert errors == [None] * commands
    assert store_calls == [commands * 2]  # one transaction
    # The log holds them in arrival order, each command record followed by the case's event.
    stored = _notifications(app)[size:]
    assert [aggregate_id for aggregate_id, _ in stored[1::2]] == [r.case_id for r in results if r]


def test_a_conflicting_command_fails_alone(node: InProcessNode, app: HubApplication) -> None:
    case_id = _submit(node, "key-the-case").case_id
    others = 6
    store_calls = _one_batch_of(app, others + 2)
    size = len(_notifications(app))
    # Two commands on the same case read it at version 1 and both try to store version 2, in
    # one batch with six unrelated submissions.
    accept = functools.partial(_run, node, "accept", "key-accept", case_id)
    reject = functools.partial(
        _run, node, "reject_at_intake", "key-reject", case_id, reason="材料不全"
    )
    submits = [functools.partial(_submit, node, f"key-other-{n}") for n in range(others)]
    results, errors = _in_threads([accept, reject, *submits])

    # They were one transaction, which failed, and were then stored one by one.
    assert store_calls[0] == (others + 2) * 2
    assert len(store_calls) == 1 + others + 2
    # Exactly one of the two conflicting commands won; the other failed alone, as it would
    # without group commit, and left no idempotency record (a retry will run it for real).
    conflict_errors = [e for e in errors[:2] if e is not None]
    assert len(conflict_errors) == 1
    assert isinstance(conflict_errors[0], ConcurrencyConflict)
    loser_key = "key-accept" if errors[0] is not None else "key-reject"
    winner = results[1] if errors[0] is not None else results[0]
    assert winner is not None
    assert winner.version == 2
    assert app.get_case(case_id).version == 2
    assert app.get_case(case_id).state in {CaseState.ACCEPTED, CaseState.REJECTED_AT_INTAKE}
    with pytest.raises(AggregateNotFoundError):
        app.repository.get(record_id(HALL, "v-room", loser_key))
    # Every other command of the batch was stored, once.
    assert errors[2:] == [None] * others
    assert all(r is not None and r.version == 1 for r in results[2:])
    assert len(_notifications(app)) == size + (1 + others) * 2


def test_idempotent_retries_return_the_first_result(
    node: InProcessNode, app: HubApplication
) -> None:
    first = _submit(node, "key-retried")
    retry = _submit(node, "key-retried")
    assert (retry.case_id, retry.version, retry.replayed) == (first.case_id, 1, True)
    assert not first.replayed

    # Concurrent duplicates of one command in one batch: one case, one first result, and every
    # duplicate gets that same result back.
    duplicates = 5
    store_calls = _one_batch_of(app, duplicates)
    size = len(_notifications(app))
    signed = node.halls["v-room"].sign(
        "submit", idempotency_key="key-duplicated", item_code="200202001000",
        applicant=APPLICANT, materials=[material()],
    )  # fmt: skip
    results, errors = _in_threads([lambda: app.execute(signed)] * duplicates)
    assert errors == [None] * duplicates
    assert store_calls[0] == duplicates * 2  # all in one (failed) transaction first
    assert len({(r.case_id, r.version) for r in results if r}) == 1
    assert sum(1 for r in results if r and not r.replayed) == 1
    assert len(_notifications(app)) == size + 2
    assert len(app.case_history(first.case_id)) == 1


def test_a_store_that_is_down_fails_the_whole_batch(
    node: InProcessNode, app: HubApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = 4
    _one_batch_of(app, batch)
    size = len(_notifications(app))

    def down(*events: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(app, "save", down)
    _, errors = _in_threads(
        [functools.partial(_submit, node, f"key-down-{n}") for n in range(batch)]
    )
    assert all(isinstance(error, StorageUnavailable) for error in errors)
    # Each caller raised its own copy of the store's error (threads never share one object).
    assert len({id(error.__cause__) for error in errors if error is not None}) == batch
    monkeypatch.undo()
    assert len(_notifications(app)) == size
    # Back up: the same commands now run for real (no record was left by the failed attempt).
    assert app.group_commit is not None
    app.group_commit = GroupCommit(app)
    assert _submit(node, "key-down-0").replayed is False

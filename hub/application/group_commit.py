"""Group commit: concurrent commands' saves share one event-store transaction.

Why: the ``eventsourcing`` PostgreSQL recorder takes ``LOCK TABLE ... IN EXCLUSIVE MODE`` in
every transaction that inserts events, so that notification ids are issued in commit order and
the log's followers (ledger, projections, relay) never skip an id that commits later. That lock
serialises writers: it is held from the insert until the commit has been flushed, and in a
Python server also while the holding thread waits to get the GIL back after each round trip.
With 16 gRPC worker threads, profiling showed most of a command's time spent waiting for that
lock. Saving many commands' events in one transaction keeps the lock, and the order, and pays
for them once per batch instead of once per command.

How: whoever calls :meth:`GroupCommit.save` while no batch is being committed becomes the
*leader*: it takes every save queued so far (up to ``max_batch``, optionally waiting
``max_wait`` seconds for more to arrive), stores all their events with one ``Application.save``
(one transaction), and hands each waiting caller its own outcome. Saves that arrive meanwhile
queue up; when the leader is done it promotes the oldest of them to lead the next batch. So
there is never more than one batch in flight, batches form by themselves under load (the queue
fills while the previous batch commits), and a lone command is committed at once, with no
added delay, when ``max_wait`` is 0. No background thread exists, so there is nothing to start
or stop with the application.

Guarantees:

* **Order.** Saves are stored in the order they were queued, each save's events in its own
  order, so per aggregate the versions are stored in order and the notification log is still
  in commit order.
* **Isolation of failures.** A batch is one transaction: if it fails with a version conflict
  (``IntegrityError``) or any other error of one save's events, nothing of it is stored, and
  the batch is retried one save at a time, in the same order, each in its own transaction. So
  a conflicting command fails alone, with the same ``IntegrityError`` it would get without
  group commit, and every other command is stored exactly once. Two saves of the same
  aggregate version in one batch (two concurrent duplicates of one command) end the same way:
  the first wins, the second conflicts and finds the first's idempotency record.
* **Storage down.** ``OperationalError``/``InterfaceError`` (after the library's own retries)
  fail every save of the batch: nothing was stored for any of them.

Saves are handed to ``Application.save`` as their domain events, so the application's aggregate
cache must be off (it is unless ``AGGREGATE_CACHE_MAXSIZE`` is set); the constructor refuses an
application with a cache, which would otherwise keep stale aggregates.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from typing import Any

import psycopg
from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.persistence import InterfaceError, OperationalError

from hub import telemetry
from hub.errors import ConfigurationError

#: Most saves in one transaction: bounds one transaction's size and the wait of its last caller.
DEFAULT_MAX_BATCH = 64
#: Seconds a leader waits for more saves before committing (0: commit what is queued at once).
DEFAULT_MAX_WAIT = 0.0


class _Pending:
    """One caller's save: its events, and the outcome the committer hands back."""

    __slots__ = ("error", "events", "extras", "lead", "settled", "wake")

    def __init__(self, events: list[Any], extras: dict[str, list[Any]]) -> None:
        self.events = events
        #: Rows written beside the events in the same transaction (personal-data keys ...).
        self.extras = extras
        self.error: BaseException | None = None
        self.settled = False  # the outcome (stored, or error) is known
        self.lead = False  # promoted: this caller commits the next batch
        self.wake = threading.Event()


class GroupCommit:
    """Commits concurrent saves of ``app`` in shared transactions (see the module docstring)."""

    def __init__(
        self,
        app: Application[Any],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait < 0:
            raise ValueError("max_wait must not be negative")
        if app.repository.cache is not None:
            raise ConfigurationError(
                "group commit saves events, not aggregates: turn the aggregate cache off "
                "(AGGREGATE_CACHE_MAXSIZE) or group commit off (TONGBAN_GROUP_COMMIT)"
            )
        self._app = app
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queue: deque[_Pending] = deque()
        self._committing = False
        #: Transactions committed and saves stored through them (for tests and diagnostics).
        self.batches = 0
        self.saves = 0

    def save(self, *aggregates: Any, **extras: Any) -> None:
        """Store the pending events of ``aggregates`` atomically, sharing a transaction.

        ``extras`` are the keyword arguments ``Application.save`` passes to the recorder (lists
        of rows to write in the same transaction); a batch concatenates them.

        Blocks until they are stored; raises what ``Application.save`` would have raised for
        them alone (``IntegrityError`` on a version conflict, ``OperationalError`` when the
        store is down).
        """
        collected: ProcessingEvent[Any] = ProcessingEvent()
        collected.collect_events(*aggregates)
        if not collected.events:
            return
        entry = _Pending(collected.events, {key: list(rows) for key, rows in extras.items()})
        telemetry.COMMIT_QUEUE.inc()
        try:
            with self._lock:
                self._queue.append(entry)
                leader = not self._committing
                self._committing = True
                self._arrived.notify()  # a leader waiting for a fuller batch
            if not leader:
                entry.wake.wait()
                if entry.lead:  # promoted: the previous leader left this entry at the head
                    leader = True
            if leader:
                self._lead()
        finally:
            telemetry.COMMIT_QUEUE.dec()
        if entry.error is not None:
            raise entry.error

    # ------------------------------------------------------------------ the leader's work

    def _lead(self) -> None:
        """Commit one batch from the queue's head, settle it, and pass leadership on."""
        batch: list[_Pending] = []
        try:
            with self._lock:
                if self.max_wait > 0:
                    deadline = time.monotonic() + self.max_wait
                    while len(self._queue) < self.max_batch:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._arrived.wait(remaining)
                while self._queue and len(batch) < self.max_batch:
                    batch.append(self._queue.popleft())
            self._commit(batch)
        finally:
            unsettled = [entry for entry in batch if not entry.settled]
            for entry in unsettled:  # only if this thread was interrupted mid-commit
                entry.error = RuntimeError("the committing thread stopped before the commit")
                entry.settled = True
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._committing = False
                else:
                    successor.lead = True  # _committing stays set: leadership moves on
            for entry in batch:
                entry.wake.set()
            if successor is not None:
                successor.wake.set()

    def _commit(self, batch: list[_Pending]) -> None:
        """Store ``batch`` in one transaction; on failure, each save on its own."""
        extras: dict[str, list[Any]] = {}
        for entry in batch:
            for key, rows in entry.extras.items():
                extras.setdefault(key, []).extend(rows)
        try:
            self._app.save(*[event for entry in batch for event in entry.events], **extras)
        except (OperationalError, InterfaceError) as error:
            if len(batch) > 1 and _pipeline_aborted(error):
                # A statement of the batch failed on a live connection, and psycopg reported
                # the rest of the aborted pipeline rather than the conflict itself (e.g. two
                # copies of one command in one batch): retry one by one, as for a conflict.
                for entry in batch:
                    self._commit([entry])
                return
            # The store is unreachable: nothing of the batch was stored, for anyone.
            for entry in batch:
                entry.error = _own_copy(error)
                entry.settled = True
        except Exception as error:
            if len(batch) == 1:
                batch[0].error = error
                batch[0].settled = True
                return
            # One save conflicts (or its events cannot be stored); the transaction was rolled
            # back, so none of the batch is stored. Retry one by one, in queue order, so the
            # culprit fails alone and the others are stored once, in the same order.
            for entry in batch:
                self._commit([entry])
        else:
            for entry in batch:
                entry.settled = True
            self.batches += 1
            self.saves += len(batch)


def _pipeline_aborted(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is PostgreSQL's "pipeline aborted": an earlier
    statement of the transaction failed, on a connection that works."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, psycopg.errors.PipelineAborted):
            return True
        seen = seen.__cause__
    return False


def _own_copy(error: BaseException) -> BaseException:
    """A copy of a shared error for each caller, so threads do not raise one object at once."""
    try:
        clone = copy.copy(error)
    except Exception:  # an exception type that cannot be copied: share the original
        return error
    clone.__cause__ = error.__cause__
    return clone

"""One watch on the event store for every follower of a process: who must look again, and when.

The followers (the ledger integrator, each projection) read the log on their own, each from its
own position; what they need from the store is only to be woken when something is stored. The
library's ``recorder.subscribe()`` does that on PostgreSQL (LISTEN/NOTIFY), but each subscription
also reads every new event, payload and all, and keeps a connection of its own: with a
subscription per follower, the follower process read each stored event five more times just to
learn that it had arrived (``benchmarks/README.md``). A :class:`LogWatch` holds one subscription
and sets the registered alarms when it delivers: each alarm waits for the topics its follower
reads (a projection of appointments is not woken by every case step), or for every event.

SQLite notifies nobody: :meth:`LogWatch.add` says so (False), and the follower looks again every
so often instead.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from eventsourcing.postgres import PostgresApplicationRecorder

log = logging.getLogger(__name__)

#: How long the watch waits before subscribing again after its subscription failed (the store
#: went away); meanwhile every follower is woken, so each finds the store down on its own.
RESUBSCRIBE_AFTER_S = 1.0


class LogWatch:
    """Sets registered alarms whenever events are stored (see the module docstring)."""

    def __init__(self, recorder: Any) -> None:
        self._recorder = recorder
        #: Each alarm with the topics it waits for (None: every event).
        self._alarms: list[tuple[threading.Event, frozenset[str] | None]] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._subscription: Any = None
        self._thread: threading.Thread | None = None
        self._notifies: bool | None = None  # unknown until the first subscription

    def add(self, alarm: threading.Event, topics: Iterable[str] | None = None) -> bool:
        """Set ``alarm`` whenever events are stored from now on (only events of ``topics``,
        when given: a follower of a few kinds of event is not woken by every other); False
        where the store notifies nobody (the caller then looks again every so often)."""
        with self._lock:
            if self._notifies is None:
                self._notifies = self._first_subscription()
                if self._notifies:
                    self._thread = threading.Thread(
                        target=self._listen, name="log-watch", daemon=True
                    )
                    self._thread.start()
            if not self._notifies:
                return False
            self._alarms.append((alarm, None if topics is None else frozenset(topics)))
            return True

    def _first_subscription(self) -> bool:
        """Subscribe; whether the store notifies. A PostgreSQL store that cannot be reached
        yet still will: the watch subscribes once it can (meanwhile every follower is woken
        every RESUBSCRIBE_AFTER_S seconds, and finds the store down on its own)."""
        try:
            return self._subscribe()
        except Exception as error:
            if not isinstance(self._recorder, PostgresApplicationRecorder):
                raise
            log.warning("the log watch cannot subscribe yet: %s", error)
            self._subscription = None
            return True

    @contextlib.contextmanager
    def watching(
        self, alarm: threading.Event, stop: threading.Event, topics: Iterable[str] | None = None
    ) -> Iterator[bool]:
        """Within the block, ``alarm`` is set when events (of ``topics``, when given) are stored
        and when ``stop`` is set; yields whether the store notifies (False: look again every so
        often)."""
        notifies = self.add(alarm, topics)

        def stop_when_asked() -> None:
            stop.wait()
            alarm.set()

        threading.Thread(target=stop_when_asked, name="log-watch-stop", daemon=True).start()
        try:
            yield notifies
        finally:
            self.remove(alarm)

    def remove(self, alarm: threading.Event) -> None:
        """Stop setting ``alarm``."""
        with self._lock:
            self._alarms = [entry for entry in self._alarms if entry[0] is not alarm]

    def stop(self) -> None:
        """End the subscription and wake every alarm one last time."""
        self._stopped.set()
        with self._lock:
            subscription = self._subscription
        if subscription is not None:
            subscription.stop()
        self._ring()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _subscribe(self) -> bool:
        try:
            # Only what is stored from now on: each follower reads what came before itself.
            self._subscription = self._recorder.subscribe(gt=self._recorder.max_notification_id())
        except NotImplementedError:
            return False
        return True

    def _listen(self) -> None:
        while not self._stopped.is_set():
            subscription = self._subscription
            if subscription is not None:
                try:
                    with subscription:
                        for notification in subscription:
                            self._ring(notification.topic)
                except Exception as error:  # the store went away: subscribe again below
                    log.warning("the log watch's subscription ended: %s", error)
            self._ring()  # every follower looks again (and finds the store down, or not)
            if self._stopped.wait(RESUBSCRIBE_AFTER_S):
                return
            with self._lock:
                try:
                    self._subscribe()
                except Exception:  # still down: try again after the pause
                    self._subscription = None
            # What was stored during the pause is before the new subscription: look again.
            self._ring()

    def _ring(self, topic: str | None = None) -> None:
        """Set the alarms waiting for ``topic`` (None: every alarm)."""
        with self._lock:
            alarms = [
                alarm
                for alarm, topics in self._alarms
                if topic is None or topics is None or topic in topics
            ]
        for alarm in alarms:
            alarm.set()


__all__ = ["LogWatch"]

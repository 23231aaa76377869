"""The relay of one node: loops around Kafka (kafka-python), started by ``tongban serve``.

* the **outbox projection** follows the log (PostgreSQL notifies; SQLite is polled) and queues
  envelopes and acknowledgements with its tracking record (:mod:`hub.relay.outbound`);
* the **fetcher** fetches the material files of cases received from peers (gRPC calls, which
  may be slow: in a loop of their own, so no acknowledgement waits behind one);
* the **publisher** sends what is due: new rows at once, unacknowledged ones again after
  ``resend_after_s``; while the broker is unreachable it waits and tries again, in order. It
  sends a round's messages together and waits for the broker's acknowledgements once;
* the **consumer** reads every partition of this node's inbox topic (assigned, not balanced: a
  node is its inbox's only reader), hands each message to a lane as soon as it is read (one
  lane per case, :mod:`hub.relay.lanes`), and commits each partition's offset, in the consumer
  group ``tongban.<origin>``, only up to its first message not handled yet (stored, answered,
  or quarantined); a message whose handling failed for a passing reason (the store is down) is
  read again, and a node that restarts resumes from the committed offsets at once.

With the node's ledger integrator in the same process (:meth:`Relay.attach`), the publisher asks
it for a checkpoint as soon as an envelope waits for one over its step, and is woken whenever
the log grows (an acknowledgement waits for its record's leaf), instead of finding out at its
next poll.

Any loop that fails for good stops the relay and sets :attr:`Relay.failure`, which the node's
health reports (NOT_SERVING with the reason).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from eventsourcing.persistence import Tracking
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from hub import telemetry
from hub.application.hub import HubApplication
from hub.application.log_watch import LogWatch
from hub.application.storage import passing
from hub.integrity.integrator import LedgerIntegrator, LedgerView
from hub.relay.config import FederationConfig
from hub.relay.inbound import Inbox
from hub.relay.lanes import LaneScheduler, Message, Work
from hub.relay.outbound import (
    OUTBOX_PROJECTION,
    OutboxProjection,
    Publisher,
    follow,
    stored_after,
)
from hub.relay.store import RelayStore, SQLiteRelayStore, open_relay_store
from ledger import Signer
from ledger.cosignature import Cosigner

log = logging.getLogger(__name__)

#: Partitions of a node's inbox topic when the relay creates it (per-case order needs keys only).
INBOX_PARTITIONS = 3
#: Cases whose inbox messages are handled at once (PostgreSQL; see Relay._handle_poll), and
#: messages the publisher builds at once. Each holds a pooled connection while it reads or
#: stores; the node's pool has 10 (+10).
INBOX_LANES = 4
#: Inbox messages read and not handled yet, at most: the consumer reads no more until some are.
INBOX_IN_HAND = 500
#: Seconds between two counts of the backlog (the metric) while the publisher is busy.
BACKLOG_EVERY = 1.0
#: How long the broker may hold a fetch that finds nothing new. A Kafka broker answers at once
#: when there is data; some Kafka-protocol brokers (Tansu, the test and demo broker) hold the
#: fetch for up to this long even then, which adds up to it to every hop.
FETCH_MAX_WAIT_MS = 50
#: Seconds a relay loop waits before starting again after the store was unavailable.
STORE_RETRY_S = 1.0


class Relay:
    """One node's relay (see the module docstring)."""

    def __init__(
        self,
        app: HubApplication,
        view: LedgerView,
        config: FederationConfig,
        *,
        signer: Signer,
        witness: Cosigner,
        encryption_key: Any,
        store: RelayStore | None = None,
        poll_interval: float = 0.2,
        fetch_materials: Any = None,
    ) -> None:
        self.app = app
        self.config = config
        self.store = store or open_relay_store(app.recorder.datastore)  # type: ignore[attr-defined]
        self.origin = app.policy.origin
        self.topic = config.own_inbox(app.policy.region)
        self.poll_interval = poll_interval
        #: SQLite's reads are local calls and it has one writer: its messages go one by one.
        self.lanes = 1 if isinstance(self.store, SQLiteRelayStore) else INBOX_LANES
        self.failure: str | None = None
        self._producer: KafkaProducer | None = None
        self._wake = threading.Event()
        self._fetch_wake = threading.Event()
        self._watch: LogWatch | None = None  # the process's log watch (run)
        self._backlog_at = 0.0  # when the backlog metric was last counted
        self.projection = OutboxProjection(
            app,
            self.store,
            config,
            ThreadPoolExecutor(self.lanes, "relay-read") if self.lanes > 1 else None,
        )
        self.publisher = Publisher(
            app,
            self.store,
            view,
            config,
            signer=signer,
            witness=witness,
            produce=self.produce,
            flush=self.flush,
            fetch_materials=fetch_materials,
            builders=self.lanes,
        )
        self.inbox = Inbox(
            app,
            self.store,
            view,
            config,
            self.publisher,
            encryption_key=encryption_key,
            send=self.send,
        )

    # ------------------------------------------------------------------ Kafka

    def _producer_now(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=list(self.config.bootstrap),
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
                request_timeout_ms=10_000,
                max_block_ms=10_000,
            )
        return self._producer

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Produce one message and wait for the broker's acknowledgement (acks=all)."""
        self._producer_now().send(topic, key=key, value=value).get(timeout=15)

    def produce(self, topic: str, key: bytes, value: bytes) -> Any:
        """Produce one message; returns its future (``get()`` waits for the broker's
        acknowledgement, acks=all, or raises)."""
        return self._producer_now().send(topic, key=key, value=value)

    def flush(self) -> None:
        """Send what the producer holds now (without waiting for its linger)."""
        self._producer_now().flush(timeout=15)

    def wake(self) -> None:
        """Make the publisher look at the outbox now."""
        self._wake.set()

    def attach(self, integrator: LedgerIntegrator) -> None:
        """Work with the node's ledger integrator, running in this process: ask it for a
        checkpoint when an envelope waits for one, and look at the outbox whenever it
        integrated leaves or signed a checkpoint."""
        self.publisher.want_checkpoint = integrator.request_checkpoint
        integrator.add_listener(lambda _result: self.wake())

    def ensure_topic(self) -> None:
        """Create this node's inbox topic if the broker does not have it."""
        admin = KafkaAdminClient(bootstrap_servers=list(self.config.bootstrap))
        try:
            admin.create_topics(
                [NewTopic(self.topic, num_partitions=INBOX_PARTITIONS, replication_factor=1)]
            )
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()

    def inbound_backlog(self) -> int | None:
        """Messages on this node's inbox its consumer group has not committed (None when the
        broker cannot be reached). Reads offsets only: never joins the group."""
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=list(self.config.bootstrap),
                group_id=f"tongban.{self.origin}",
                enable_auto_commit=False,
                request_timeout_ms=5000,
                api_version_auto_timeout_ms=5000,
            )
        except KafkaError:
            return None
        try:
            partitions = consumer.partitions_for_topic(self.topic) or set()
            parts = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            ends = consumer.end_offsets(parts) if parts else {}
            waiting: int = sum(max(0, ends[tp] - (consumer.committed(tp) or 0)) for tp in parts)
            return waiting
        except KafkaError:
            return None
        finally:
            consumer.close()

    # ------------------------------------------------------------------ loops

    def run(self, stop: threading.Event, watch: LogWatch | None = None) -> None:
        """Run the loops until ``stop`` is set (or one fails for good); the outbox projection is
        woken by ``watch`` (the process's log watch; one of its own when none is given)."""
        self._watch = watch
        loops = [
            threading.Thread(target=self._guard, args=(name, loop, stop), name=f"relay-{name}")
            for name, loop in (
                ("outbox", self._project),
                ("publisher", self._publish),
                ("fetcher", self._fetch),
                ("consumer", self._consume),
            )
        ]
        for thread in loops:
            thread.start()
        for thread in loops:
            thread.join()
        if self._producer is not None:
            self._producer.close(timeout=5)
        for pool in (self.publisher.builders, self.projection.readers):
            if pool is not None:
                pool.shutdown(wait=False)  # idle: the loops that used them have stopped

    def _guard(self, name: str, loop: Any, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                loop(stop)
                return
            except Exception as error:
                if passing(error):
                    # The store is down or busy for now (as the node's commands are told, with
                    # UNAVAILABLE): the loop starts again from what is stored, once it is back.
                    log.warning("relay %s: the store is unavailable (%s); retrying", name, error)
                    stop.wait(STORE_RETRY_S)
                    continue
                # A loop that cannot go on: health says why.
                log.exception("relay %s stopped", name)
                self.failure = f"relay {name} stopped: {error}"
                telemetry.FOLLOWER_FAILED.labels("relay").set(1)
                stop.set()

    def _project(self, stop: threading.Event) -> None:
        # Its own name in the tracking table: the ledger integrator tracks the same log.
        position = self.store.max_tracking_id(OUTBOX_PROJECTION) or 0
        for batch in follow(self.app, position, stop, watch=self._watch):
            self.projection.process_batch(
                [(event, Tracking(OUTBOX_PROJECTION, t.notification_id)) for event, t in batch]
            )
            self._wake.set()
            self._fetch_wake.set()

    def project_pending(self) -> int:
        """Queue what every step stored so far calls for, now (the CLI and tests use this; the
        running relay does it continuously). Returns how many steps were projected."""
        done = 0
        while True:
            position = self.store.max_tracking_id(OUTBOX_PROJECTION) or 0
            batch = stored_after(self.app, position)
            if not batch:
                return done
            for event, tracking in batch:
                self.projection.process_event(
                    event, Tracking(OUTBOX_PROJECTION, tracking.notification_id)
                )
                done += 1

    def _publish(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                sent = self.publisher.publish_due()
            except KafkaError as error:
                log.warning("broker unreachable, the outbox waits: %s", error)
                self._drop_producer()
                stop.wait(1.0)
                continue
            if time.monotonic() - self._backlog_at >= BACKLOG_EVERY:
                # A count over the outbox: once a second, not after every round.
                self._backlog_at = time.monotonic()
                for destination, waiting in self.store.backlog().items():
                    telemetry.RELAY_BACKLOG.labels(destination).set(waiting)
            if not sent:
                self._wake.wait(self.poll_interval)

    def _fetch(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._fetch_wake.clear()
            if not self.publisher.fetch_due():
                # Woken when the outbox projection queues rows; a fetch that could not reach
                # its peer is due again after resend_after_s.
                self._fetch_wake.wait(self.poll_interval)

    def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=1)
            except Exception:  # closing a producer whose broker is gone
                log.debug("closing the producer failed", exc_info=True)

    def _consume(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.ensure_topic()
                consumer = self._inbox_consumer()
            except KafkaError as error:
                log.warning("broker unreachable, the inbox waits: %s", error)
                stop.wait(1.0)
                continue
            try:
                self._drain(consumer, stop)
            except KafkaError as error:
                log.warning("lost the broker, reconnecting: %s", error)
                stop.wait(1.0)
            finally:
                consumer.close(autocommit=False)

    def _inbox_consumer(self) -> KafkaConsumer:
        """A consumer of every partition of this node's inbox, from the offsets committed for
        the node's group.

        The partitions are assigned, not balanced by the group protocol: a node is the only
        reader of its inbox, and a node that restarts after a crash then resumes at once from
        its committed offsets, instead of waiting for the broker to expire the dead member and
        rebalance (which the test broker never does). The group still holds the offsets.
        """
        consumer = KafkaConsumer(
            bootstrap_servers=list(self.config.bootstrap),
            group_id=f"tongban.{self.origin}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        partitions: set[int] = set()
        deadline = time.monotonic() + 30
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(self.topic) or set()
            if not partitions:
                time.sleep(0.2)  # the topic was just created: its metadata is on its way
        if not partitions:
            consumer.close(autocommit=False)
            raise KafkaError(f"no partitions of {self.topic} yet")
        assigned = [TopicPartition(self.topic, number) for number in sorted(partitions)]
        consumer.assign(assigned)
        for partition in assigned:
            committed = consumer.committed(partition)
            if committed is None:
                consumer.seek_to_beginning(partition)
            else:
                consumer.seek(partition, committed)
        return consumer

    def _drain(self, consumer: Any, stop: threading.Event) -> None:
        """Read the inbox and handle its messages in lanes, one per case, until ``stop``.

        The consumer reads on while lanes work: a message is handed to a free lane as soon as
        it is read, not when every lane of the last poll has finished (a poll's slowest case
        held back every message behind it). :class:`~hub.relay.lanes.LaneScheduler` keeps a
        case's messages in order and says how far each partition may be committed: only up to
        its first message not handled yet, so a crash reads again, and never skips, what was
        not finished. A lane that fails for a passing reason (the store is down) stops there;
        its partition is paused, and once its other lanes have finished it is read again from
        that message, after ``STORE_RETRY_S``.
        """
        scheduler = LaneScheduler(limit=INBOX_IN_HAND)
        running: dict[Future[int | None], Work] = {}
        paused: dict[Any, float] = {}  # partition → when to read it again (0: not yet known)
        with ThreadPoolExecutor(self.lanes, thread_name_prefix="relay-lane") as lanes:

            def start(works: list[Work]) -> None:
                for work in works:
                    running[lanes.submit(self._handle_lane, work)] = work

            while not stop.is_set():
                finished = [future for future in running if future.done()]
                for future in finished:
                    start(scheduler.finished(running.pop(future), future.result()))
                for partition in scheduler.failing() - paused.keys():
                    consumer.pause(partition)
                    paused[partition] = 0.0
                for partition, offset in scheduler.rewinds().items():
                    consumer.seek(partition, offset)
                    paused[partition] = time.monotonic() + STORE_RETRY_S
                for partition, until in list(paused.items()):
                    if until and time.monotonic() >= until:
                        consumer.resume(partition)
                        del paused[partition]
                commits = scheduler.commits()
                if commits:
                    consumer.commit({tp: _offset(offset) for tp, offset in commits.items()})
                if finished:
                    self._wake.set()
                room = scheduler.room()
                if not room:
                    wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                    continue
                # While lanes work, read what came meanwhile and look at them again soon.
                timeout = FETCH_MAX_WAIT_MS if running or paused else 500
                batches = consumer.poll(timeout_ms=timeout, max_records=room)
                start(
                    scheduler.add(
                        Message(partition, int(r.offset), r.key, bytes(r.value))
                        for partition, records in batches.items()
                        for r in records
                    )
                )
        # Stopping: the pool waited for the lanes still working; commit what they finished
        # (what waited behind them was not started, and is read again at the next start).
        for future, work in running.items():
            scheduler.finished(work, future.result())
        commits = scheduler.commits()
        if commits:
            consumer.commit({tp: _offset(offset) for tp, offset in commits.items()})

    def _handle_lane(self, work: Work) -> int | None:
        """Handle one case's messages in order; the offset of the first that failed, if one
        did (the later ones wait for it)."""
        for message in work.messages:
            try:
                self.inbox.handle(message.value)
            except Exception:
                log.exception("handling offset %s failed; retrying", message.offset)
                return message.offset
        return None


def _offset(next_offset: int) -> OffsetAndMetadata:
    return OffsetAndMetadata(next_offset, "", -1)


__all__ = ["OUTBOX_PROJECTION", "Relay"]

"""The relay of one node: loops around Kafka (kafka-python), started by ``tongban serve``.

* the **outbox projection** follows the log (PostgreSQL notifies; SQLite is polled) and queues
  envelopes and acknowledgements with its tracking record (:mod:`hub.relay.outbound`);
* the **fetcher** fetches the material files of cases received from peers (gRPC calls, which
  may be slow: in a loop of their own, so no acknowledgement waits behind one);
* the **publisher** sends what is due: new rows at once, unacknowledged ones again after
  ``resend_after_s``; while the broker is unreachable it waits and tries again, in order. It
  sends a round's messages together and waits for the broker's acknowledgements once;
* the **consumer** reads every partition of this node's inbox topic (assigned, not balanced: a
  node is its inbox's only reader) and commits each partition's offset, in the consumer group
  ``tongban.<origin>``, only after its messages were handled (stored, answered, or
  quarantined), once per poll; a message whose handling failed for a passing reason (the store
  is down) is read again, and a node that restarts resumes from the committed offsets at once.

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
from concurrent.futures import ThreadPoolExecutor
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
from hub.integrity.integrator import BatchResult, LedgerIntegrator, LedgerView
from hub.relay.config import FederationConfig
from hub.relay.inbound import Inbox
from hub.relay.outbound import (
    OUTBOX_PROJECTION,
    LeafMemory,
    OutboxProjection,
    Publisher,
    RecordMemory,
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
#: Seconds between two counts of the backlog and the quarantine (the metrics; Relay.report).
BACKLOG_EVERY = 1.0
#: How long the broker may hold a fetch that finds nothing new. A Kafka broker answers at once
#: when there is data; some Kafka-protocol brokers (Tansu, the test and demo broker) hold the
#: fetch for up to this long even then, which adds up to it to every hop.
FETCH_MAX_WAIT_MS = 50
#: Seconds a relay loop waits before starting again after the store was unavailable.
STORE_RETRY_S = 1.0
#: How long a Kafka client of the relay waits for its first connection to the broker, and the
#: longest pause between its attempts to reconnect (kafka-python's defaults are 30 s each).
#: While the broker is down, each relay loop then gets control back within this long, says
#: so, and tries again after a wait of its own (``BROKER_RETRY_S``); and a node asked to stop
#: stops, instead of having its follower process killed while a client waits out its 30 s.
BROKER_WAIT_MS = 2000
#: Seconds a relay loop waits before trying an unreachable broker again: doubled after each
#: failed try up to the last, and back to the first once the broker answers. (The wait is the
#: relay's own: a stop ends it at once.)
BROKER_RETRY_S = (1.0, 2.0, 4.0)


def _kafka_options(config: FederationConfig) -> dict[str, Any]:
    """The options every Kafka client of the relay is made with (see ``BROKER_WAIT_MS``)."""
    return {
        "bootstrap_servers": list(config.bootstrap),
        "bootstrap_timeout_ms": BROKER_WAIT_MS,
        "reconnect_backoff_max_ms": BROKER_WAIT_MS // 2,
    }


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
        #: Creation events of the records the projection queued rows for, for the publisher.
        records = RecordMemory()
        self.projection = OutboxProjection(
            app,
            self.store,
            config,
            ThreadPoolExecutor(self.lanes, "relay-read") if self.lanes > 1 else None,
            records,
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
            records=records,
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
                **_kafka_options(self.config),
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
        integrated leaves or signed a checkpoint, knowing the leaves it logged (LeafMemory)."""
        self.publisher.want_checkpoint = integrator.request_checkpoint
        leaves = self.publisher.leaves = LeafMemory()

        def logged(result: BatchResult) -> None:
            leaves.remember(result.logged)
            self.wake()

        integrator.add_listener(logged)

    def ensure_topic(self) -> None:
        """Create this node's inbox topic if the broker does not have it."""
        admin = KafkaAdminClient(**_kafka_options(self.config))
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
                **_kafka_options(self.config),
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
        telemetry.FOLLOWER_FAILED.labels("relay").set(0)  # a figure from the start, not none
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
        failures = 0
        while not stop.is_set():
            self._wake.clear()
            if time.monotonic() - self._backlog_at >= BACKLOG_EVERY:
                # Counts over the outbox and the quarantine: once a second, not every round,
                # and while the broker is down too (when the backlog matters most).
                self._backlog_at = time.monotonic()
                self.report()
            try:
                sent = self.publisher.publish_due()
            except KafkaError as error:
                log.warning("broker unreachable, the outbox waits: %s", error)
                self._drop_producer()
                stop.wait(_retry_after(failures))
                failures += 1
                continue
            failures = 0
            if not sent:
                self._wake.wait(self.poll_interval)

    def report(self) -> None:
        """Count the backlog per peer and the quarantine into their metrics.

        Every peer gets a figure, 0 when nothing waits for it (a drained backlog reads 0, not
        its last count), and the quarantine is counted again (messages released or rejected
        with ``tongban federation``, from another process, and those held before a restart).
        """
        waiting = self.store.backlog()
        destinations = {peer.origin for peer in self.config.peers} | set(waiting)
        for destination in sorted(destinations):
            telemetry.RELAY_BACKLOG.labels(destination).set(waiting.get(destination, 0))
        telemetry.RELAY_QUARANTINE.set(self.store.held_count())

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
        failures = 0
        while not stop.is_set():
            try:
                self.ensure_topic()
                consumer = self._inbox_consumer(stop)
            except KafkaError as error:
                log.warning("broker unreachable, the inbox waits: %s", error)
                stop.wait(_retry_after(failures))
                failures += 1
                continue
            failures = 0
            try:
                self._drain(consumer, stop)
            except KafkaError as error:
                log.warning("lost the broker, reconnecting: %s", error)
                stop.wait(_retry_after(0))
            finally:
                consumer.close(autocommit=False)

    def _inbox_consumer(self, stop: threading.Event) -> KafkaConsumer:
        """A consumer of every partition of this node's inbox, from the offsets committed for
        the node's group.

        The partitions are assigned, not balanced by the group protocol: a node is the only
        reader of its inbox, and a node that restarts after a crash then resumes at once from
        its committed offsets, instead of waiting for the broker to expire the dead member and
        rebalance (which the test broker never does). The group still holds the offsets.
        """
        consumer = KafkaConsumer(
            **_kafka_options(self.config),
            group_id=f"tongban.{self.origin}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        partitions: set[int] = set()
        deadline = time.monotonic() + 30
        while not partitions and not stop.is_set() and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(self.topic) or set()
            if not partitions:
                stop.wait(0.2)  # the topic was just created: its metadata is on its way
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

    def _drain(self, consumer: KafkaConsumer, stop: threading.Event) -> None:
        with ThreadPoolExecutor(self.lanes, thread_name_prefix="relay-lane") as lanes:
            while not stop.is_set():
                batches = consumer.poll(timeout_ms=500)
                handled, failed = self._handle_poll(batches, lanes)
                for partition, offset in failed.items():
                    consumer.seek(partition, offset)  # a passing failure: read it again
                # Once per poll, and only past what was handled: a crash before this commit
                # reads those messages again, and each is then a duplicate (acknowledged again).
                if handled:
                    consumer.commit(handled)
                self._wake.set()
                if failed:
                    stop.wait(1.0)

    def _handle_poll(
        self, batches: dict[TopicPartition, list[Any]], lanes: ThreadPoolExecutor
    ) -> tuple[dict[TopicPartition, OffsetAndMetadata], dict[TopicPartition, int]]:
        """Handle one poll's messages; returns the offsets to commit and, per partition whose
        handling failed for a passing reason (the store is down), the offset to read again.

        Messages are keyed by case id, so one case's messages are in one partition, in order.
        Each case's messages are one *lane*, handled in order; different cases' lanes run at
        once (their reads overlap, and their stores share transactions through the
        application's group commit), instead of one message's round trips after another's. A
        lane stops at its first failure; its partition is read again from there (messages of
        other cases after it that were handled are then duplicates, stored once).
        """
        by_case: dict[tuple[TopicPartition, bytes | None], list[Any]] = {}
        for partition, records in batches.items():
            for record in records:
                by_case.setdefault((partition, record.key), []).append(record)
        if len(by_case) == 1:
            outcomes = [self._handle_lane(records) for records in by_case.values()]
        else:
            outcomes = list(lanes.map(self._handle_lane, by_case.values()))
        failed: dict[TopicPartition, int] = {}
        for (partition, _key), failure in zip(by_case, outcomes, strict=True):
            if failure is not None:
                failed[partition] = min(failure, failed.get(partition, failure))
        handled: dict[TopicPartition, OffsetAndMetadata] = {}
        for partition, records in batches.items():
            done = failed.get(partition, records[-1].offset + 1)
            if done > records[0].offset:
                handled[TopicPartition(partition.topic, partition.partition)] = _offset(done)
        return handled, {
            TopicPartition(partition.topic, partition.partition): offset
            for partition, offset in failed.items()
        }

    def _handle_lane(self, records: list[Any]) -> int | None:
        """Handle one case's messages in order; the offset of the first that failed for a
        passing reason (the store is away), if one did: the later ones wait for it. (A message
        whose handling raised anything else is quarantined: :meth:`Inbox.handle_or_hold`.)"""
        for record in records:
            try:
                self.inbox.handle_or_hold(bytes(record.value))
            except Exception as error:
                if not passing(error):
                    raise  # the quarantine itself failed: the relay stops, health says why
                log.warning("handling offset %s: the store is away (%s); reading it again",
                            record.offset, error)  # fmt: skip
                return int(record.offset)
        return None


def _retry_after(failures: int) -> float:
    """Seconds to wait before the next try, after ``failures`` tries in a row failed."""
    return BROKER_RETRY_S[min(failures, len(BROKER_RETRY_S) - 1)]


def _offset(next_offset: int) -> OffsetAndMetadata:
    return OffsetAndMetadata(next_offset, "", -1)


__all__ = ["OUTBOX_PROJECTION", "Relay"]

"""The harness's Kafka-protocol broker does what the relay needs: topics with partitions, the
idempotent producer, consumer groups, and committed offsets that a new group member resumes
from. Every wait is bounded."""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

pytestmark = pytest.mark.timeout(180)

MESSAGES = 300
KEYS = 12
PARTITIONS = 3
SESSION_TIMEOUT_MS = 6000  # a group join on Tansu takes about half of it (~3 s)


def _consumer(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id=f"{group}-member-{uuid.uuid4().hex[:6]}",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=1000,
        enable_auto_commit=False,
        # With no committed offset a member starts from the beginning, so if the commit were
        # lost the second member below would see the old messages again.
        auto_offset_reset="earliest",
        request_timeout_ms=30000,
        bootstrap_timeout_ms=15000,
    )


def _poll_until(
    consumer: KafkaConsumer,
    into: list[ConsumerRecord],
    done: Callable[[], bool],
    timeout: float,
) -> bool:
    """Poll into ``into`` until ``done()`` or ``timeout`` s; every poll's records are kept."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        for records in consumer.poll(timeout_ms=250).values():
            into.extend(records)
    return True


def test_idempotent_produce_group_consume_and_committed_offsets(kafka_bootstrap: str) -> None:
    run = uuid.uuid4().hex[:10]
    topic, group = f"tongban-smoke-{run}", f"tongban-smoke-group-{run}"
    admin = KafkaAdminClient(
        bootstrap_servers=kafka_bootstrap, client_id=f"smoke-admin-{run}", request_timeout_ms=15000
    )
    producer: KafkaProducer | None = None
    try:
        admin.create_topics(
            {topic: {"num_partitions": PARTITIONS, "replication_factor": 1}},
            wait_for_metadata=True,
        )
        assert topic in admin.list_topics()

        producer = KafkaProducer(
            bootstrap_servers=kafka_bootstrap,
            client_id=f"smoke-producer-{run}",
            enable_idempotence=True,
            acks="all",
            max_block_ms=15000,
            request_timeout_ms=15000,
        )
        futures = [
            producer.send(
                topic,
                key=f"case-{i % KEYS}".encode(),
                value=f"case-{i % KEYS}:{i // KEYS}".encode(),
            )
            for i in range(MESSAGES)
        ]
        producer.flush(timeout=30)
        sent = [future.get(timeout=15) for future in futures]
        assert len({m.partition for m in sent}) > 1, "keys should spread over the partitions"

        # ---- consume everything in a consumer group
        first = _consumer(kafka_bootstrap, topic, group)
        received: list[ConsumerRecord] = []
        try:
            assert _poll_until(first, received, lambda: len(received) >= MESSAGES, 60), (
                f"only {len(received)} of {MESSAGES} messages arrived in 60 s"
            )
            # a little longer: duplicates would show up now
            _poll_until(first, received, lambda: False, 1.0)

            values = [r.value.decode() for r in received]
            counts = Counter(values)
            assert sorted(counts) == sorted(f"case-{i % KEYS}:{i // KEYS}" for i in range(MESSAGES))
            assert set(counts.values()) == {1}, "every message exactly once"

            per_key: dict[str, list[int]] = defaultdict(list)
            partitions_of_key: dict[str, set[int]] = defaultdict(set)
            for record in received:
                key, seq = record.value.decode().split(":")
                assert record.key.decode() == key
                per_key[key].append(int(seq))
                partitions_of_key[key].add(record.partition)
            for key, seqs in per_key.items():
                assert seqs == list(range(len(seqs))), f"order of {key} not kept: {seqs}"
                assert len(partitions_of_key[key]) == 1, f"{key} spread over partitions"

            first.commit()
            # The committed offset of each partition is one past its last produced record. (The
            # producer's own acks say where that is: Tansu's ListOffsets, i.e. end_offsets(),
            # reports only the last *batch*'s base offset + 1, see docs/testing.md.)
            for partition in range(PARTITIONS):
                tp = TopicPartition(topic, partition)
                last = max(m.offset for m in sent if m.partition == partition)
                assert first.committed(tp) == last + 1, f"offset of {tp} not committed"
        finally:
            first.close()

        # ---- a new member of the same group starts after the committed offsets
        second = _consumer(kafka_bootstrap, topic, group)
        later: list[ConsumerRecord] = []
        try:
            assert _poll_until(second, later, lambda: len(second.assignment()) == PARTITIONS, 30), (
                "the second consumer was not assigned the partitions in 30 s"
            )
            _poll_until(second, later, lambda: False, 1.5)
            assert later == [], f"old messages delivered again: {later[:3]}"

            producer.send(topic, key=b"case-new", value=b"case-new:0").get(timeout=15)
            assert _poll_until(second, later, lambda: len(later) >= 1, 30), (
                "the new message did not arrive in 30 s"
            )
            _poll_until(second, later, lambda: False, 0.5)
            assert [(r.key, r.value) for r in later] == [(b"case-new", b"case-new:0")]
            second.commit()
        finally:
            second.close()
    finally:
        if producer is not None:
            producer.close(timeout=10)
        try:
            admin.delete_topics([topic])
        finally:
            admin.close()

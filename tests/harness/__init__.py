"""Test-service harness: find or start PostgreSQL and a Kafka-protocol broker.

Plain functions and classes, importable without pytest, so the benchmarks use them too
(``python -m benchmarks.baselines``). ``tests/conftest.py`` wraps them in fixtures, and
``tests.harness.availability`` (pytest only) holds the skip-or-fail rule for a missing service.
See docs/testing.md.
"""

from .broker import KAFKA_ENV, TansuBroker, find_tansu, kafka_service, wait_for_broker
from .errors import ServiceUnavailable
from .postgres import (
    BINDIR_ENV,
    DATABASE_URL_ENV,
    PostgresCluster,
    create_database,
    drop_database,
    dsn_with,
    eventsourcing_env,
    find_binaries,
    postgres_service,
    temporary_database,
    unique_name,
)

__all__ = [
    "BINDIR_ENV",
    "DATABASE_URL_ENV",
    "KAFKA_ENV",
    "PostgresCluster",
    "ServiceUnavailable",
    "TansuBroker",
    "create_database",
    "drop_database",
    "dsn_with",
    "eventsourcing_env",
    "find_binaries",
    "find_tansu",
    "kafka_service",
    "postgres_service",
    "temporary_database",
    "unique_name",
    "wait_for_broker",
]

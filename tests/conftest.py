"""Shared fixtures: real PostgreSQL and a real Kafka-protocol broker, started on demand.

Thin wrappers over ``tests.harness`` (see docs/testing.md). A service starts only when a test
asks for its fixture, once per session, and is stopped at the session's end. When it cannot be
provided, the test is skipped, or fails when ``CI`` is set (``service_unavailable``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

# ``tests`` has no __init__.py, so pytest imports this file as a top-level ``conftest`` with only
# tests/ on sys.path; put the project root there too so ``tests.harness`` (shared with the
# benchmarks) imports the same way everywhere. (``pythonpath = ["."]`` in pytest's ini options
# would do the same.)
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.harness.availability import service_unavailable  # noqa: E402
from tests.harness.broker import kafka_service  # noqa: E402
from tests.harness.errors import ServiceUnavailable  # noqa: E402
from tests.harness.postgres import postgres_service, temporary_database  # noqa: E402

#: Fixtures whose users get the ``postgres`` / ``kafka`` marker (also through other fixtures).
POSTGRES_FIXTURES = frozenset({"postgres_dsn", "fresh_postgres_db"})
KAFKA_FIXTURES = frozenset({"kafka_bootstrap"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by the services they use, so ``-m "not kafka"`` etc. select them."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & POSTGRES_FIXTURES and not item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.postgres)
        if names & KAFKA_FIXTURES and not item.get_closest_marker("kafka"):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """libpq connection string of a PostgreSQL server for this session.

    ``$TONGBAN_TEST_DATABASE_URL`` if set, else a throwaway cluster (fsync off) on a free port in
    a temporary directory, removed at the end. Tests that create tables should use
    ``fresh_postgres_db`` instead of writing into this database.
    """
    with ExitStack() as stack:
        try:
            dsn = stack.enter_context(postgres_service())
        except ServiceUnavailable as exc:
            service_unavailable(exc)
        yield dsn


@pytest.fixture
def fresh_postgres_db(postgres_dsn: str) -> Iterator[str]:
    """DSN of a new, empty database (unique name) on that server, dropped after the test."""
    with temporary_database(postgres_dsn) as dsn:
        yield dsn


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """A node's ``database_url`` for each event store: None (the embedded SQLite store) and a
    fresh PostgreSQL database. A test that takes it runs once on each, like the library's
    recorder contract tests."""
    if request.param == "postgres":
        return str(request.getfixturevalue("fresh_postgres_db"))
    return None


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a Kafka-protocol broker for this session.

    ``$TONGBAN_TEST_KAFKA`` if set, else a Tansu broker (in-memory storage) on a free port,
    terminated at the end. Use unique topic and group names per test.
    """
    with ExitStack() as stack:
        try:
            bootstrap = stack.enter_context(kafka_service())
        except ServiceUnavailable as exc:
            service_unavailable(exc)
        yield bootstrap

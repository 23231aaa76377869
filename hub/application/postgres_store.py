"""The node's PostgreSQL store: the ``eventsourcing`` library's, whose reads skip BEGIN/ROLLBACK.

The library's datastore opens every transaction, reads included, with ``BEGIN`` and ends a
read with ``ROLLBACK``: two round trips to the server around each read, each one a statement
PostgreSQL parses and runs, and a wait for the GIL in the node. The node's followers, relay and
projections read the store all the time (a case before it is checked, a leaf and its proof
before an envelope is built, a relay row, a personal-data key ...), so in the federation
benchmark those pairs were about a fifth of every statement PostgreSQL ran.

At the isolation level the node runs at (PostgreSQL's default, READ COMMITTED) the pair buys
nothing for a read: each statement sees the data committed before *it* began, whether inside a
transaction block or not. So here a read runs on the connection in its autocommit mode (the
library's connections are autocommit), and sees exactly what it saw before. Writes are the
library's transactions, unchanged. A read that needs more (a lock, a snapshot across its
statements) must be written as a write transaction; none does: locks are taken only in writes
(``hub/projections/runner.py``), and the auditor reads through its own read-only,
repeatable-read connection (``hub/integrity/store.py``), not through this store.

Selected by ``PERSISTENCE_MODULE`` (:data:`POSTGRES_PERSISTENCE`); the library's own module name
(``eventsourcing.postgres``) still works, with its datastore (:func:`uses_postgres` accepts both).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from eventsourcing.postgres import PostgresDatastore, PostgresFactory
from eventsourcing.utils import Environment, EnvType

#: ``PERSISTENCE_MODULE`` for a node on PostgreSQL: the factory below, by its topic.
POSTGRES_PERSISTENCE = "hub.application.postgres_store:TongbanPostgresFactory"
#: The library's own module name for its PostgreSQL factory.
LIBRARY_POSTGRES = "eventsourcing.postgres"


def uses_postgres(env: Mapping[str, Any]) -> bool:
    """Whether an application environment selects PostgreSQL (the node's factory or the
    library's)."""
    return env.get("PERSISTENCE_MODULE") in (POSTGRES_PERSISTENCE, LIBRARY_POSTGRES)


class TongbanPostgresDatastore(PostgresDatastore):
    """The library's PostgreSQL datastore, whose read transactions are plain autocommit reads
    (see the module docstring)."""

    @contextmanager
    def transaction(self, *, commit: bool = False) -> Iterator[Any]:
        if commit:
            with super().transaction(commit=True) as curs:
                yield curs
            return
        with self.get_connection() as conn:
            yield conn.cursor()


class TongbanPostgresFactory(PostgresFactory):
    """The library's PostgreSQL factory, whose recorders share a
    :class:`TongbanPostgresDatastore`."""

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        # The library builds its datastore from some twenty settings of ``env`` (pool, timeouts,
        # schema, password callback ...); parsing them again here would copy that code. The
        # subclass adds no state and changes one method, so the built datastore becomes one.
        self.datastore.__class__ = TongbanPostgresDatastore


__all__ = [
    "LIBRARY_POSTGRES",
    "POSTGRES_PERSISTENCE",
    "TongbanPostgresDatastore",
    "TongbanPostgresFactory",
    "uses_postgres",
]

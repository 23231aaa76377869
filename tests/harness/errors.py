"""The one error the harness raises when a service cannot be provided."""

from __future__ import annotations


class ServiceUnavailable(RuntimeError):
    """A service (PostgreSQL, the Kafka-protocol broker) could not be found or started.

    ``service`` names it, ``problem`` says what is missing or went wrong and ``remedy`` how to
    provide it. The pytest layer (``tests.harness.availability``) turns this into a skip, or into
    a failure when ``CI`` is set; plain callers such as the benchmarks just see the exception.
    """

    def __init__(self, service: str, problem: str, remedy: str) -> None:
        self.service = service
        self.problem = problem
        self.remedy = remedy
        super().__init__(f"{service} unavailable: {problem}\n  how to fix: {remedy}")

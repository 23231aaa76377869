"""What a node tells its operator: Prometheus metrics and structured JSON logs.

Metrics come from the standard client library (``prometheus_client``). A node serves from several
processes; when ``PROMETHEUS_MULTIPROC_DIR`` is set (``tongban serve`` sets it before it starts
them) every process writes its samples there and the supervising process serves them all on one
endpoint, the library's multiprocess mode.

Logs are one JSON object per line (``python-json-logger``) with the time, level, logger, message,
the request id of the gRPC call being served (``x-request-id`` metadata, or a fresh one) and any
fields the caller adds. Nothing personal is ever logged: commands are logged by action, signer,
case id and version only.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from pythonjsonlogger.json import JsonFormatter

#: The id of the request being served (empty outside a request).
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="")

RPCS = Counter("tongban_rpcs", "gRPC calls answered, by method and status code", ["method", "code"])
RPC_SECONDS = Histogram(
    "tongban_rpc_seconds",
    "Time to answer a gRPC call, by method",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
COMMANDS = Counter(
    "tongban_commands", "Signed commands stored, by action (first results only)", ["action"]
)
FOLLOWER_LAG = Gauge(
    "tongban_follower_lag_events",
    "Stored events a follower of the log has not processed yet",
    ["follower"],
    multiprocess_mode="max",
)
FOLLOWER_FAILED = Gauge(
    "tongban_follower_failed",
    "1 when a follower stopped for good (see the node's log and health for why)",
    ["follower"],
    multiprocess_mode="max",
)
WARNINGS = Counter(
    "tongban_supervision_warnings", "电子监察 warnings the supervisor recorded, by kind", ["kind"]
)
LEDGER_SIZE = Gauge("tongban_ledger_leaves", "Leaves in the node's log", multiprocess_mode="max")
OPEN_STREAMS = Gauge("tongban_open_streams", "Server streams open now", multiprocess_mode="livesum")
RELAY_MESSAGES = Counter(
    "tongban_relay_messages",
    "Federation messages received, by what became of them (stored, duplicate, waiting, "
    "refused, quarantined, acknowledged)",
    ["outcome"],
)
RELAY_QUARANTINE = Gauge(
    "tongban_relay_quarantine",
    "Federation messages held in quarantine now",
    multiprocess_mode="max",
)
RELAY_BACKLOG = Gauge(
    "tongban_relay_backlog",
    "Envelopes not yet acknowledged, by destination node",
    ["destination"],
    multiprocess_mode="max",
)
COMMIT_QUEUE = Gauge(
    "tongban_commit_queue",
    "Commands waiting for their transaction (group commit), now",
    multiprocess_mode="livesum",
)

WITNESS_REQUESTS = Counter(
    "tongban_witness_requests",
    "add-checkpoint requests this node's witness answered, by HTTP status",
    ["status"],
)
WITNESS_SUBMISSIONS = Counter(
    "tongban_witness_submissions",
    "add-checkpoint requests this node sent to its witnesses, by witness and HTTP status "
    "(0: no answer)",
    ["witness", "status"],
)
WITNESS_COSIGNATURES = Counter(
    "tongban_witness_cosignatures_received",
    "Verified cosignatures of this node's checkpoints received, by witness",
    ["witness"],
)
WITNESS_FINAL_SIZE = Gauge(
    "tongban_witness_final_size",
    "Size of this node's latest final checkpoint (its witness policy met)",
    multiprocess_mode="max",
)
WITNESS_EVIDENCE = Gauge(
    "tongban_witness_evidence",
    "Pieces of split-view evidence this node keeps (a log signed two inconsistent checkpoints)",
    multiprocess_mode="max",
)


def new_request_id() -> str:
    """A fresh request id."""
    return uuid.uuid4().hex[:16]


@contextmanager
def request(request_id: str) -> Iterator[None]:
    """Log records made inside carry ``request_id``."""
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = REQUEST_ID.get()
        return True


def configure_logging(level: str = "INFO", *, json_lines: bool = True) -> None:
    """Log to stderr, one JSON object per line (or plain text for a person at a terminal)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if json_lines:
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}{request_id}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                json_ensure_ascii=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def serve_metrics(listen: str) -> int:
    """Serve ``/metrics`` on ``host:port``; returns the port (for ``:0``)."""
    host, _, port = listen.rpartition(":")
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    server: Any
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
    return int(server.server_port)


def process_exited(pid: int) -> None:
    """Forget a dead serving process's live gauges (multiprocess mode only)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]

"""``tongban serve``: run a node — its gRPC server and its followers — until told to stop.

The entry point for serving, beside the CLI (which only parses arguments): it builds the node from
the settings through the composition root, starts the gRPC server and the ledger integrator, and
shuts both down on SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from hub.api.audit import add_audit_service
from hub.api.server import NodeServer, TLSFiles
from hub.bootstrap import build_application, build_integrator
from hub.settings import Settings


def serve(
    settings: Settings,
    *,
    listen: str | None = None,
    insecure: bool = False,
    workers: int = 16,
    grace: float = 5.0,
) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    listen = listen or settings.listen
    tls = None if insecure else TLSFiles.in_directory(settings.pki_dir)
    app = build_application(settings)
    integrator = build_integrator(settings, app)
    view = integrator.view

    def leaf_index(aggregate_id: Any, version: int) -> int | None:
        leaf = view.read(lambda cursor: view.tables.leaf_for(cursor, aggregate_id, version))
        return None if leaf is None else leaf.index

    node = NodeServer(
        app,
        listen=listen,
        tls=tls,
        max_workers=workers,
        extra_services=[add_audit_service(app, view)],
        leaf_index=leaf_index,
    )
    stop = threading.Event()

    def follow() -> None:
        # The integrator follows the log in the background; its tracking makes restarts safe.
        # If it must stop (an event that may not enter the log), the node says so in health.
        integrator.run(stop)
        if integrator.failure is not None:
            node.not_serving(integrator.failure)

    follower = threading.Thread(target=follow, name="integrator")
    follower.start()
    node.start()
    # The port line is machine-readable: scripts and tests wait for it.
    print(f"tongban: serving on {listen.rsplit(':', 1)[0]}:{node.port}", flush=True)

    def shut_down(signum: int, _frame: object) -> None:
        node.stop(grace=grace)

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    try:
        node.wait()
    finally:
        stop.set()
        follower.join(timeout=10)
        app.close()
    return 0

"""Runs a node's witnessing: the witness endpoint (uvicorn, on the event loop) and the
checkpoint publisher (a thread), until told to stop. ``tongban serve`` runs it in a process of
its own (:mod:`hub.serving`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from hub.integrity.integrator import LedgerView
from hub.witnessing.config import WitnessingConfig
from hub.witnessing.http import witness_server
from hub.witnessing.publisher import CheckpointPublisher
from hub.witnessing.service import NodeWitness
from ledger import Cosigner


async def run_witnessing(
    view: LedgerView,
    config: WitnessingConfig,
    cosigner: Cosigner,
    sock: socket.socket,
    stop: asyncio.Event,
    *,
    interval: float,
    tls: tuple[Path, Path] | None = None,
    ready: Callable[[], None] = lambda: None,
) -> None:
    """Serve ``POST /add-checkpoint`` on ``sock`` and publish this node's checkpoints until
    ``stop`` is set. ``tls`` is (certificate, private key) for HTTPS."""
    witness = NodeWitness(view, cosigner, config.witnessed_logs())
    certificate, key = tls if tls is not None else (None, None)
    server = witness_server(witness, certificate=certificate, private_key=key)
    publisher = CheckpointPublisher(view, config, interval=interval)
    stop_publishing = threading.Event()
    thread = threading.Thread(
        target=publisher.run, args=(stop_publishing,), name="witness-publisher", daemon=True
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()  # raises what stopped it
                return
            await asyncio.sleep(0.01)
        thread.start()
        ready()
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await serving
        stop_publishing.set()
        if thread.is_alive():
            thread.join(timeout=15)
        publisher.close()


__all__ = ["run_witnessing"]

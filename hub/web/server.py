"""Serving the web pages: uvicorn over HTTPS with the node's certificate (see :mod:`hub.web.tls`).

The server takes a socket already bound (``tongban serve`` reserves the port, the web process
binds it with SO_REUSEPORT), so the port is known before the process is ready. Without TLS
(``tongban serve --insecure``, local demos only) it speaks plain HTTP and no page sees a client
certificate, so the dashboard answers 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from hub.web.app import WebContext, create_app
from hub.web.tls import ClientCertificateProtocol


@dataclass(frozen=True)
class WebTLS:
    """The node's server certificate and key, and the CA client certificates come from."""

    certificate: Path
    private_key: Path
    ca: Path


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` shared with other processes (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def web_server(context: WebContext, tls: WebTLS | None) -> uvicorn.Server:
    """The uvicorn server of the node's pages (not started)."""
    options: dict[str, object] = {}
    if tls is not None:
        options = {
            "ssl_certfile": str(tls.certificate),
            "ssl_keyfile": str(tls.private_key),
            "ssl_ca_certs": str(tls.ca),
            "ssl_cert_reqs": ssl.CERT_OPTIONAL,  # asked for, verified if given, not required
        }
    config = uvicorn.Config(
        create_app(context),
        http=ClientCertificateProtocol,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        **options,  # type: ignore[arg-type]
    )
    return uvicorn.Server(config)


async def serve_web(
    server: uvicorn.Server, sock: socket.socket, stop: asyncio.Event, ready: asyncio.Event
) -> None:
    """Serve on ``sock`` until ``stop`` is set; set ``ready`` once it accepts connections."""
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)  # uvicorn has no readiness event; it starts in milliseconds
    if task.done():
        task.result()  # a start-up failure: raise it
    ready.set()
    stopping = asyncio.create_task(stop.wait())
    # (uvicorn also stops by itself on SIGTERM/SIGINT: it handles them while it serves.)
    await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


__all__ = ["WebTLS", "bind", "serve_web", "web_server"]

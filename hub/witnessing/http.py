"""The witness endpoint over HTTP (Starlette on uvicorn).

    POST /add-checkpoint                 C2SP tlog-witness: cosign a checkpoint
    GET  /<hex sha256 of origin>/checkpoint   the latest checkpoint cosigned for that log

Requests are not authenticated beyond the log's signature on the checkpoint, as the protocol
says: a request can only make the witness cosign what the log signed and proved consistent.
Bodies are read up to :data:`ledger.witness_protocol.MAX_REQUEST_SIZE` bytes and refused (400)
beyond, before anything is parsed. The database work runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.witnessing.service import NodeWitness
from ledger.witness_protocol import (
    ADD_CHECKPOINT_PATH,
    ERROR_CONTENT_TYPE,
    MAX_REQUEST_SIZE,
    WitnessResponse,
)

log = logging.getLogger("tongban.witness")

_CHECKPOINT_CONTENT_TYPE = "text/plain; charset=utf-8"


def _respond(response: WitnessResponse) -> Response:
    # The content type is set as a header, not as Starlette's media_type, which would append a
    # charset to text/x.tlog.size: the spec requires exactly that type.
    return Response(
        response.body,
        status_code=response.status,
        headers={"content-type": response.content_type},
    )


def _problem(status: int, message: str) -> Response:
    return Response(
        (message + "\n").encode("utf-8"),
        status_code=status,
        headers={"content-type": ERROR_CONTENT_TYPE},
    )


async def _read_body(request: Request) -> bytes | None:
    """The body, or None if it is larger than MAX_REQUEST_SIZE (read no further)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_REQUEST_SIZE:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_SIZE:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def witness_app(witness: NodeWitness) -> Starlette:
    """The ASGI application of ``witness``."""

    async def add_checkpoint(request: Request) -> Response:
        body = await _read_body(request)
        if body is None:
            return _problem(400, f"request body larger than {MAX_REQUEST_SIZE} bytes")
        try:
            response = await run_in_threadpool(witness.add_checkpoint, body)
        except Exception:  # the store is down: nothing was cosigned; the client retries
            log.exception("add-checkpoint failed")
            return _problem(503, "the witness's store is unavailable; try again later")
        return _respond(response)

    async def monitored_checkpoint(request: Request) -> Response:
        note = await run_in_threadpool(witness.checkpoint, request.path_params["origin_hash"])
        if note is None:
            return _problem(404, "this witness has cosigned no checkpoint of that log")
        return Response(note, headers={"content-type": _CHECKPOINT_CONTENT_TYPE})

    return Starlette(
        routes=[
            Route(ADD_CHECKPOINT_PATH, add_checkpoint, methods=["POST"]),
            Route("/{origin_hash:str}/checkpoint", monitored_checkpoint, methods=["GET"]),
        ]
    )


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` shared with other binders (SO_REUSEPORT), so the
    supervisor can hold the port while the witness process starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Accepted connections inherit it: a response goes out at once instead of waiting for the
    # client's delayed ACK (measured: 48 ms per request over keep-alive without it).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def witness_server(
    witness: NodeWitness,
    *,
    certificate: Path | None = None,
    private_key: Path | None = None,
) -> uvicorn.Server:
    """A uvicorn server for ``witness`` (HTTPS when a certificate and key are given); start it
    with ``await server.serve(sockets=[listening_socket(...)])``."""
    config = uvicorn.Config(
        witness_app(witness),
        log_level="warning",
        access_log=False,
        lifespan="off",
        ssl_certfile=str(certificate) if certificate else None,
        ssl_keyfile=str(private_key) if private_key else None,
        ssl_cert_reqs=ssl.CERT_NONE,
        # Keep-alive connections are what the spec asks clients to use.
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config)


__all__ = ["listening_socket", "witness_app", "witness_server"]

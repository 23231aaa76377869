"""HTTPS for the node's web pages: uvicorn with the node's certificate, and the caller's client
certificate told to the application.

The dashboard is for supervisors and auditors, identified like every caller of the node by a
certificate its CA issued (``tongban pki issue --role supervisor --region 4309``). The TLS
handshake asks for a client certificate but does not require one (the public guide screen needs
none) and verifies any certificate presented against the node's CA. uvicorn does not pass the
peer certificate to the application, so :class:`ClientCertificateProtocol` (its HTTP/1.1
protocol, subclassed) puts it in the request scope the way the ASGI TLS extension names it:
``scope["extensions"]["tls"]["client_cert_chain"]`` (PEM).
"""

from __future__ import annotations

import ssl
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from hub.errors import TongbanError
from hub.pki import Identity, identity_from_certificate


class ClientCertificateProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with the client certificate in each request's scope."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
        app = self.app

        async def with_certificate(scope: Any, receive: Any, send: Any) -> None:
            if scope.get("type") in ("http", "websocket"):
                extensions = dict(scope.get("extensions") or {})
                extensions["tls"] = {"client_cert_chain": chain}
                scope = {**scope, "extensions": extensions}
            await app(scope, receive, send)

        self.app = with_certificate


def caller_identity(scope: Any) -> Identity | None:
    """The identity in the request's client certificate (None: none presented, or not TLS)."""
    chain = ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_chain") or []
    if not chain:
        return None
    try:
        return identity_from_certificate(chain[0].encode("ascii"))
    except TongbanError:
        return None


__all__ = ["ClientCertificateProtocol", "caller_identity"]

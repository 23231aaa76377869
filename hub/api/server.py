"""The node's gRPC server: CaseExchange, HallAdmin, Audit, health and reflection (v1, v1alpha).

A ``grpc.aio`` server: the application is synchronous, so unary methods run on the server's
thread pool, while server streams run on the event loop and never hold a worker; mutual TLS with
the node's CA, message size limits, grpcio's standard health and reflection services, and a
graceful shutdown that first reports NOT_SERVING.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as AioHealthServicer
from grpc_reflection.v1alpha import reflection
from tongban.v1 import admin_pb2, case_exchange_pb2

from hub.api.handlers import StreamLimit, add_service
from hub.api.servicer import Authenticator, CaseExchangeServicer, HallAdminServicer, LeafIndex
from hub.application.hub import HubApplication
from hub.errors import ConfigurationError
from hub.pki import ClientTrust, Identity, identity_from_auth_context, load_pem_files

log = logging.getLogger("tongban.server")

#: Largest request a client may send; commands are small (materials travel as digests).
MAX_RECEIVE_BYTES = 4 * 1024 * 1024
#: Largest response (case histories and audit pages can be larger than commands).
MAX_SEND_BYTES = 32 * 1024 * 1024

CASE_EXCHANGE = case_exchange_pb2.DESCRIPTOR.services_by_name["CaseExchange"]
HALL_ADMIN = admin_pb2.DESCRIPTOR.services_by_name["HallAdmin"]
SERVICE_NAMES = (CASE_EXCHANGE.full_name, HALL_ADMIN.full_name)

#: Registers a service on the server; returns its full name (or names), for health and reflection.
ExtraService = Callable[[Any, Authenticator, StreamLimit], str | Sequence[str]]


@dataclass(frozen=True)
class TLSFiles:
    """The node's server certificate and key, the node's CA (which issues its halls', auditors'
    and admins' certificates), and the CA of each federation peer (by region), whose peer
    certificates the node accepts too (see :class:`hub.pki.ClientTrust`)."""

    certificate: Path
    private_key: Path
    ca: Path
    peer_cas: tuple[tuple[str, Path], ...] = ()

    @classmethod
    def in_directory(cls, directory: Path, peer_cas: tuple[tuple[str, Path], ...] = ()) -> TLSFiles:
        """The layout ``tongban pki init`` writes: node.pem, node.key, ca.pem."""
        return cls(directory / "node.pem", directory / "node.key", directory / "ca.pem", peer_cas)

    def client_trust(self) -> ClientTrust:
        """Which CA may vouch for which caller; ConfigurationError names a bad CA file."""
        return ClientTrust.from_files(self.ca, dict(self.peer_cas))

    def server_credentials(self, trust: ClientTrust | None = None) -> grpc.ServerCredentials:
        """Credentials that require and verify a client certificate from the node's CA or a
        peer's CA (the identity is then bound to its issuer by ``trust``)."""
        cert, key, _ca = load_pem_files(self.certificate, self.private_key, self.ca)
        roots = (trust or self.client_trust()).root_certificates
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=roots, require_client_auth=True
        )


def tls_authenticator(context: grpc.ServicerContext) -> Identity | None:
    """The caller's identity from its verified client certificate (only the node's own CA
    trusted; with peers' CAs, use :func:`trust_authenticator`)."""
    return identity_from_auth_context(context.auth_context())


def trust_authenticator(trust: ClientTrust) -> Authenticator:
    """The caller's identity, refused when its issuing CA may not vouch for it."""

    def authenticate(context: grpc.ServicerContext) -> Identity | None:
        return trust.identify(context.auth_context())

    return authenticate


def insecure_authenticator(context: grpc.ServicerContext) -> Identity | None:
    """No TLS (demo only): there is no certificate identity; command signatures still count."""
    return None


class NodeServer:
    """The node's gRPC server (``grpc.aio``): unary calls on a thread pool, streams on the loop.

    Build it, then ``await start()`` inside the event loop that will serve it; ``not_serving()``
    may be called from any thread; ``await stop()`` shuts it down gracefully. With
    ``reuse_port`` several processes serve one port (the kernel spreads connections over them).
    """

    def __init__(
        self,
        app: HubApplication,
        *,
        listen: str,
        tls: TLSFiles | None,
        max_workers: int = 16,
        max_streams: int = 64,
        extra_services: Sequence[ExtraService] = (),
        leaf_index: LeafIndex | None = None,
        reuse_port: bool = False,
        trust: ClientTrust | None = None,
        on_erased: Callable[[UUID], object] | None = None,
        queue: Any = None,
    ) -> None:
        self.app = app
        #: Which CA vouches for which caller (None without TLS).
        self.trust = trust or (tls.client_trust() if tls else None)
        authenticate: Authenticator = (
            trust_authenticator(self.trust) if self.trust else insecure_authenticator
        )
        self.executor = futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="grpc"
        )
        self.server = grpc.aio.server(
            migration_thread_pool=self.executor,
            options=[
                ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                ("grpc.max_send_message_length", MAX_SEND_BYTES),
                ("grpc.so_reuseport", 1 if reuse_port else 0),
            ],
            maximum_concurrent_rpcs=max_workers * 8 + max_streams,
        )
        self.streams = StreamLimit(max_streams)
        # ``queue``: a factory of hub.api.supervision.QueueQueries (ListQueue, WatchQueue).
        queries = queue(authenticate) if queue is not None else None
        add_service(
            self.server,
            CaseExchangeServicer(app, authenticate, queries),
            CASE_EXCHANGE,
            self.streams,
        )
        admin = HallAdminServicer(app, authenticate)
        if leaf_index is not None:
            admin.leaf_index = leaf_index
        if on_erased is not None:
            admin.on_erased = on_erased
        add_service(self.server, admin, HALL_ADMIN, self.streams)
        names = list(SERVICE_NAMES)
        for add_extra in extra_services:
            added = add_extra(self.server, authenticate, self.streams)
            names.extend([added] if isinstance(added, str) else added)
        self.health = AioHealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1], self.server
        )
        _add_reflection_v1(self.server, names)
        self.service_names = names
        try:
            if tls is None:
                self.port = self.server.add_insecure_port(listen)
            else:
                self.port = self.server.add_secure_port(listen, tls.server_credentials(self.trust))
        except RuntimeError as error:  # grpc.aio raises when it cannot bind
            raise ConfigurationError(f"cannot listen on {listen}: {error}") from None
        if self.port == 0:
            raise ConfigurationError(
                f"cannot listen on {listen}: the address is in use or not available"
            )
        self.secure = tls is not None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> NodeServer:
        """Start serving and report SERVING for every service."""
        self._loop = asyncio.get_running_loop()
        await self.server.start()
        for name in ["", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving on port %d (%s)", self.port, "mTLS" if self.secure else "INSECURE")
        return self

    def not_serving(self, reason: str) -> None:
        """Report NOT_SERVING for every service (the node can no longer keep its promises).

        Safe to call from any thread.
        """
        log.error("NOT_SERVING: %s", reason)
        loop = self._loop
        if loop is None:
            return

        async def report() -> None:
            for name in ["", *self.service_names]:
                await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

        asyncio.run_coroutine_threadsafe(report(), loop)

    def services_not_serving(self, names: Sequence[str], reason: str) -> None:
        """Report NOT_SERVING for ``names`` only (the rest of the node keeps serving).

        Safe to call from any thread.
        """
        log.error("NOT_SERVING %s: %s", ", ".join(names), reason)
        loop = self._loop
        if loop is None:
            return

        async def report() -> None:
            for name in names:
                await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

        asyncio.run_coroutine_threadsafe(report(), loop)

    async def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING, let calls in flight finish for ``grace`` seconds, then stop."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        self.executor.shutdown(wait=False, cancel_futures=True)
        log.info("stopped")

    async def wait(self) -> None:
        """Until the server stops."""
        await self.server.wait_for_termination()


#: gRPC server reflection v1 (the same messages as v1alpha, under the standard name).
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _add_reflection_v1(server: Any, names: list[str]) -> None:
    """Serve reflection v1 too: grpcio-reflection ships only v1alpha, whose messages are the
    same on the wire, so v1alpha's servicer answers under the v1 name."""
    from grpc_reflection.v1alpha import reflection_pb2
    from grpc_reflection.v1alpha._async import ReflectionServicer

    servicer = ReflectionServicer(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1]
    )
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": handler}),)
    )

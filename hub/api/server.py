"""The node's gRPC server: CaseExchange, HallAdmin, Audit, health and reflection.

A synchronous ``grpc.server`` on a thread pool (the application is synchronous and the event
store serialises writes anyway), mutual TLS with the node's CA, message size limits, grpcio's
standard health and reflection services, and a graceful shutdown that first reports NOT_SERVING.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tongban.v1 import admin_pb2, case_exchange_pb2

from hub.api.handlers import add_service
from hub.api.servicer import Authenticator, CaseExchangeServicer, HallAdminServicer, LeafIndex
from hub.application.hub import HubApplication
from hub.errors import ConfigurationError
from hub.pki import Identity, identity_from_auth_context, load_pem_files

log = logging.getLogger("tongban.server")

#: Largest request a client may send; commands are small (materials travel as digests).
MAX_RECEIVE_BYTES = 4 * 1024 * 1024
#: Largest response (case histories and audit pages can be larger than commands).
MAX_SEND_BYTES = 32 * 1024 * 1024

CASE_EXCHANGE = case_exchange_pb2.DESCRIPTOR.services_by_name["CaseExchange"]
HALL_ADMIN = admin_pb2.DESCRIPTOR.services_by_name["HallAdmin"]
SERVICE_NAMES = (CASE_EXCHANGE.full_name, HALL_ADMIN.full_name)


@dataclass(frozen=True)
class TLSFiles:
    """The node's server certificate and key, and the CA that issued every client certificate."""

    certificate: Path
    private_key: Path
    ca: Path

    @classmethod
    def in_directory(cls, directory: Path) -> TLSFiles:
        """The layout ``tongban pki init`` writes: node.pem, node.key, ca.pem."""
        return cls(directory / "node.pem", directory / "node.key", directory / "ca.pem")

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials that require and verify a client certificate from the CA."""
        cert, key, ca = load_pem_files(self.certificate, self.private_key, self.ca)
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=True
        )


def tls_authenticator(context: grpc.ServicerContext) -> Identity | None:
    """The caller's identity from its verified client certificate."""
    return identity_from_auth_context(context.auth_context())


def insecure_authenticator(context: grpc.ServicerContext) -> Identity | None:
    """No TLS (demo only): there is no certificate identity; command signatures still count."""
    return None


class NodeServer:
    """A running gRPC server; ``stop()`` shuts it down gracefully."""

    def __init__(
        self,
        app: HubApplication,
        *,
        listen: str,
        tls: TLSFiles | None,
        max_workers: int = 16,
        extra_services: Sequence[Callable[[grpc.Server, Authenticator], str]] = (),
        leaf_index: LeafIndex | None = None,
    ) -> None:
        self.app = app
        authenticate: Authenticator = tls_authenticator if tls else insecure_authenticator
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                ("grpc.max_send_message_length", MAX_SEND_BYTES),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=max_workers * 8,
        )
        add_service(self.server, CaseExchangeServicer(app, authenticate), CASE_EXCHANGE)
        admin = (
            HallAdminServicer(app, authenticate, leaf_index)
            if leaf_index is not None
            else HallAdminServicer(app, authenticate)
        )
        add_service(self.server, admin, HALL_ADMIN)
        names = list(SERVICE_NAMES)
        for add_extra in extra_services:
            names.append(add_extra(self.server, authenticate))
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.service_names = names
        if tls is None:
            self.port = self.server.add_insecure_port(listen)
        else:
            self.port = self.server.add_secure_port(listen, tls.server_credentials())
        if self.port == 0:
            raise ConfigurationError(f"cannot listen on {listen!r}")
        self.secure = tls is not None
        self._stopped = threading.Event()

    def start(self) -> NodeServer:
        """Start serving and report SERVING for every service."""
        self.server.start()
        for name in ["", *self.service_names]:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving on port %d (%s)", self.port, "mTLS" if self.secure else "INSECURE")
        return self

    def not_serving(self, reason: str) -> None:
        """Report NOT_SERVING for every service (the node can no longer keep its promises)."""
        log.error("NOT_SERVING: %s", reason)
        for name in ["", *self.service_names]:
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING, let calls in flight finish for ``grace`` seconds, then stop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait(grace + 1)
        log.info("stopped")

    def wait(self) -> None:
        """Block until the server stops."""
        self.server.wait_for_termination()

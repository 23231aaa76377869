"""Real mutual TLS with gRPC on loopback, using certificates from hub.pki (sockets: integration)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hub.pki import (
    CertificateAuthority,
    CertificateRejected,
    Identity,
    IssuedCertificate,
    Role,
    identity_from_auth_context,
    init_ca,
)

NOW = datetime.now(UTC)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return init_ca(tmp_path / "ca", "gd-node")


@pytest.fixture
def other_ca(tmp_path: Path) -> CertificateAuthority:
    return init_ca(tmp_path / "other-ca", "zj-node")


# --- real mutual TLS with gRPC --------------------------------------------------------------


class _IdentityInterceptor(grpc.ServerInterceptor):
    """Reads the caller's identity before every unary call, as the hub's servicers will."""

    def __init__(self) -> None:
        self.seen: list[Identity] = []

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                self.seen.append(identity_from_auth_context(context.auth_context()))
            except CertificateRejected as exc:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@pytest.fixture
def mtls_server(ca: CertificateAuthority) -> Iterator[tuple[int, _IdentityInterceptor]]:
    node = ca.issue(Role.NODE, "gd-node")
    interceptor = _IdentityInterceptor()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[interceptor])
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(node.private_key_pem, node.certificate_pem)],
        root_certificates=ca.certificate_pem,
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    assert port > 0
    server.start()
    try:
        yield port, interceptor
    finally:
        server.stop(grace=None).wait(5)


def _check_health(port: int, ca_pem: bytes, client: IssuedCertificate | None) -> int:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca_pem,
        private_key=client.private_key_pem if client else None,
        certificate_chain=client.certificate_pem if client else None,
    )
    # Dial the loopback address but check the server certificate for the name "localhost".
    options = (("grpc.ssl_target_name_override", "localhost"),)
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        return int(response.status)


def test_mutual_tls_with_grpc(
    mtls_server: tuple[int, _IdentityInterceptor],
    ca: CertificateAuthority,
    other_ca: CertificateAuthority,
) -> None:
    port, interceptor = mtls_server

    # A hall certificate from this node's CA gets through, and the server knows who called.
    hall = ca.issue(Role.HALL, "hall-440103")
    assert _check_health(port, ca.certificate_pem, hall) == health_pb2.HealthCheckResponse.SERVING
    assert interceptor.seen == [Identity(Role.HALL, "hall-440103")]

    auditor = ca.issue(Role.AUDITOR, "audit-1")
    assert (
        _check_health(port, ca.certificate_pem, auditor) == health_pb2.HealthCheckResponse.SERVING
    )
    assert interceptor.seen[-1] == Identity(Role.AUDITOR, "audit-1")

    # A certificate from another node's CA is refused during the handshake.
    foreign = other_ca.issue(Role.HALL, "hall-440103")
    with pytest.raises(grpc.RpcError) as refused:
        _check_health(port, ca.certificate_pem, foreign)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    # So is an expired certificate from this CA, and a client with no certificate at all.
    expired = ca.issue(
        Role.HALL,
        "hall-old",
        not_before=NOW - timedelta(days=30),
        not_after=NOW - timedelta(days=1),
    )
    for client in (expired, None):
        with pytest.raises(grpc.RpcError) as refused:
            _check_health(port, ca.certificate_pem, client)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    # None of the refused calls reached the service.
    assert len(interceptor.seen) == 2


def test_a_client_refuses_a_server_of_another_ca(
    mtls_server: tuple[int, _IdentityInterceptor],
    ca: CertificateAuthority,
    other_ca: CertificateAuthority,
) -> None:
    port, interceptor = mtls_server
    # The client trusts only the other CA, so this node's server certificate is refused.
    client = other_ca.issue(Role.HALL, "hall-440103")
    with pytest.raises(grpc.RpcError) as refused:
        _check_health(port, other_ca.certificate_pem, client)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert interceptor.seen == []

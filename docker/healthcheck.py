"""Health checks of the node image's containers (``healthcheck:`` in docker/compose.yaml).

``healthcheck.py`` — a node: its gRPC health service answers SERVING. Compose runs it inside the
node's container (``healthcheck:`` in docker/compose.yaml). It reads
the node's own settings (``TONGBAN_*``, as the node does), dials the node's port on the loopback
with mutual TLS, presenting the node's own server certificate (role ``node``, from the node's
CA, valid for client authentication too), and asks the standard health service about the whole
server (service ``""``). So it needs no credentials beyond the node's, and it fails when the node
reports NOT_SERVING (its integrator stopped, or it is shutting down), not only when the port is
closed.

``healthcheck.py gateway`` — a YZ gateway: ``GET /api/v1/health`` on its port
(``TONGBAN_GATEWAY_LISTEN``) answers 200, with the bearer token from ``GATEWAY_TOKEN_FILE``
(docker/entrypoint.sh) when there is one.

Exit status: 0 when healthy, 1 otherwise, with one line on stderr saying why.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hub.errors import ConfigurationError
from hub.pki import load_pem_files
from hub.settings import Settings

#: Seconds the whole check may take (compose's own timeout is longer).
TIMEOUT_S = 5.0


def check(settings: Settings, timeout: float = TIMEOUT_S) -> str:
    """The node's overall health status name (``SERVING``, ``NOT_SERVING``, ...)."""
    port = settings.listen.rsplit(":", 1)[1]
    pki = settings.pki_dir
    certificate, key, ca = load_pem_files(pki / "node.pem", pki / "node.key", pki / "ca.pem")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=certificate
    )
    # The node's certificate names localhost (the setup job issues it so).
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def check_gateway(environ: Mapping[str, str], timeout: float = TIMEOUT_S) -> int:
    """The HTTP status of the gateway's health endpoint."""
    port = environ.get("TONGBAN_GATEWAY_LISTEN", "127.0.0.1:8080").rsplit(":", 1)[1]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/health")
    token_file = environ.get("GATEWAY_TOKEN_FILE", "")
    if token_file:
        with open(token_file, encoding="ascii") as handle:
            request.add_header("Authorization", f"Bearer {handle.read().strip()}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when the node (or, with ``gateway``, the gateway) is healthy."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments == ["gateway"]:
        try:
            http_status = check_gateway(os.environ)
        except OSError as error:
            print(f"healthcheck: gateway: {error}", file=sys.stderr)
            return 1
        if http_status != 200:
            print(f"healthcheck: gateway answered HTTP {http_status}", file=sys.stderr)
            return 1
        return 0
    try:
        status = check(Settings.from_env())
    except ConfigurationError as error:
        print(f"healthcheck: {error}", file=sys.stderr)
        return 1
    except grpc.RpcError as error:
        print(f"healthcheck: the node does not answer: {error}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"healthcheck: the node reports {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The integrator is a gate: a forged event slipped into a running node's store is never signed
into the log, and the node says so in its health, naming the notification."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tongban.v1 import common_pb2

from adapters.sdk import HallClient, RetryPolicy
from hub.bootstrap import build_application
from hub.domain.case import Case
from hub.domain.values import Actor, id_number_with_check
from hub.settings import Settings
from tests.harness.node import NodeProcess

pytestmark = pytest.mark.e2e


def send(client: HallClient, action: str, **fields: Any) -> Any:
    """``client.send`` with a fresh idempotency key unless the test gives one."""
    fields.setdefault("idempotency_key", uuid.uuid4().hex)
    return client.send(action, **fields)


def sign(client: HallClient, action: str, **fields: Any) -> Any:
    """``client.sign`` with a fresh idempotency key unless the test gives one."""
    fields.setdefault("idempotency_key", uuid.uuid4().hex)
    return client.sign(action, **fields)


def test_a_forged_event_turns_the_node_not_serving(tmp_path: Path) -> None:
    with NodeProcess(tmp_path / "node") as node:
        node.add_hall("hn-shatou-v201", "430902104201")
        node.start()
        with node.client("hn-shatou-v201", retry=RetryPolicy(attempts=1)) as village:
            reply = send(village,
                "submit",
                item_code="200202001000",
                competent_region="430902104000",
                applicant=common_pb2.Applicant(
                    name="李秀英", id_number=id_number_with_check("43090219560312002"),
                    phone="13807370001",
                ),
                materials=[common_pb2.Material(name="身份证", sha256=hashlib.sha256(b"i").hexdigest(),
                                               media_type="image/png", size=9)],
            )  # fmt: skip
        # A rogue operator writes an event straight into the store: no signed command.
        app = build_application(Settings(data_dir=node.data_dir))
        try:
            case = app.get_case(UUID(reply.case_id))
            case.trigger_event(
                Case.Withdrawn, actor=Actor("hn-shatou-v201", "op", "430902104201"), reason="x"
            )
            app.save(case)
            forged = app.recorder.max_notification_id()
        finally:
            app.close()
        certificate, key = node.issue("auditor", "health-watcher")
        credentials = grpc.ssl_channel_credentials(
            (node.pki / "ca.pem").read_bytes(), key.read_bytes(), certificate.read_bytes()
        )
        with grpc.secure_channel(node.target, credentials) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=30
            )
            for update in watch:  # the health service pushes every change of status
                if update.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
            watch.cancel()
        assert f"notification {forged}" in node.log()
        assert "unauthorised event" in node.log()

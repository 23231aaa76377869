"""Two real ``tongban serve`` nodes (湖南 43, 陕西 61), each with its own PostgreSQL database,
exchanging a 异地代收代办 case through a real Kafka-protocol broker: halls act over gRPC with
the SDK, the relays run in the nodes' follower processes, and the auditor verifies both logs and
their cross-citations with public keys alone."""

from __future__ import annotations

import contextlib
import json
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tongban.v1 import common_pb2

from tests.harness.federation import node_processes, wait_for
from tests.harness.node import TONGBAN, NodeProcess
from tests.harness.postgres import temporary_database

pytestmark = pytest.mark.e2e

#: The nodes of the running test, whose logs a timeout shows.
_RUNNING: list[NodeProcess] = []

ID_CARD = "070302001000"
SHATOU, BAIHE = "430902104000", "610929000000"


@pytest.fixture(scope="module")
def nodes(
    tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str, kafka_bootstrap: str
) -> Iterator[dict[str, NodeProcess]]:
    root = tmp_path_factory.mktemp("federation-e2e")
    with contextlib.ExitStack() as stack:
        urls = {r: stack.enter_context(temporary_database(postgres_dsn)) for r in ("43", "61")}
        halls = {"43": ("hn-shatou-town", SHATOU), "61": ("sx-baihe-county", BAIHE)}
        started = stack.enter_context(node_processes(root, kafka_bootstrap, urls, halls))
        _RUNNING[:] = started.values()
        yield started


def _until(condition: Callable[[], Any], what: str, timeout: float = 180.0) -> Any:
    return wait_for(condition, what, _RUNNING, timeout)


def _state(node: NodeProcess, hall: str, case_id: str) -> int:
    with node.client(hall) as client:
        return int(client.get_case(case_id).state)


def _metrics(node: NodeProcess) -> str:
    with urllib.request.urlopen(node.metrics_url, timeout=10) as response:
        return str(response.read().decode())


def test_offsite_case_between_two_node_processes(
    nodes: dict[str, NodeProcess], tmp_path: Path
) -> None:
    hunan, shaanxi = nodes["43"], nodes["61"]
    applicant = common_pb2.Applicant(
        name="张秀兰", id_number="610929195507120027", phone="13900000001"
    )
    scan = tmp_path / "身份证.jpg"
    scan.write_bytes(b"\xff\xd8 a scan of the old ID card " * 4096)
    with hunan.client("hn-shatou-town") as town:
        material = town.upload_material(scan, name="居民身份证")
        reply = town.send(
            "submit", idempotency_key="e2e-offsite-0001", item_code=ID_CARD,
            competent_region=BAIHE, applicant=applicant, materials=[material],
        )  # fmt: skip
        case_id = reply.case_id
        town.send("accept", idempotency_key="e2e-offsite-0002", case_id=case_id)
        town.send(
            "hand_off", idempotency_key="e2e-offsite-0003", case_id=case_id,
            to_hall=f"sx-baihe-county@{BAIHE}", reason="异地代收",
        )  # fmt: skip
    handed_off = common_pb2.CASE_STATE_HANDED_OFF
    _until(lambda: _state(shaanxi, "sx-baihe-county", case_id) == handed_off, "61 has it")
    with shaanxi.client("sx-baihe-county") as county:
        county.send("acknowledge_handoff", idempotency_key="e2e-baihe-0001", case_id=case_id)
        # The scan stayed at 43, where it was uploaded: 61's relay fetched it (digest checked).
        copy = tmp_path / "fetched.jpg"
        _until(
            lambda: county.download_material(case_id, material.sha256, copy) == scan.stat().st_size,
            "61's hall downloads the scan 61 fetched from 43",
        )
        assert copy.read_bytes() == scan.read_bytes()
        county.send(
            "decide", idempotency_key="e2e-baihe-0002", case_id=case_id,
            approved=True, reason="准予换领",
        )  # fmt: skip
        county.send("conclude", idempotency_key="e2e-baihe-0003", case_id=case_id)
        county.send(
            "record_certificate", idempotency_key="e2e-baihe-0004", case_id=case_id,
            certificate_id="1.2.156.3005.2.11100000MB0000001X.0002",
        )  # fmt: skip
    issued = common_pb2.CASE_STATE_CERTIFICATE_ISSUED
    _until(lambda: _state(hunan, "hn-shatou-town", case_id) == issued, "43 has the result")
    with hunan.client("hn-shatou-town") as town:
        town.send(
            "deliver", idempotency_key="e2e-offsite-0004", case_id=case_id,
            method=common_pb2.DELIVERY_METHOD_OFFSITE_WINDOW, note="窗口领取",
        )  # fmt: skip
    delivered = common_pb2.CASE_STATE_DELIVERED
    _until(lambda: _state(shaanxi, "sx-baihe-county", case_id) == delivered, "61 sees delivery")

    # The operator's view and the metrics: nothing waiting, nothing quarantined.
    status = _until(
        lambda: (
            (s := json.loads(hunan.run("federation", "--json")))["peers"][0]["waiting out"] == 0
            and s
        ),
        "every envelope acknowledged",
    )
    assert status["quarantined"] == 0
    text = _metrics(shaanxi)
    assert 'tongban_relay_messages_total{outcome="stored"}' in text
    for follower in ("relay", "integrator"):
        assert f'tongban_follower_failed{{follower="{follower}"}} 0.0' in text
    assert "tongban_relay_quarantine 0.0" in text
    # 43's backlog for 61 reads 0 once drained (counted once a second).
    _until(
        lambda: 'tongban_relay_backlog{destination="tongban/61"} 0.0' in _metrics(hunan),
        "the backlog metric drained",
    )

    # The auditor: both logs verify with the log keys alone (and the peer's).
    for node, other in ((hunan, shaanxi), (shaanxi, hunan)):
        done = subprocess.run(
            [*TONGBAN, "audit", "verify", "--log-key", node.log_key, "--peer-key", other.log_key],
            env=node.env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr

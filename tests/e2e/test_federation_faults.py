"""Crashes in the middle of a shared case: a node killed (SIGKILL) while it consumes an
envelope, another while it publishes. After both restart, every case is in exactly the right
state at every node — nothing lost, nothing doubled — and both logs and their citations verify.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterator
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
APPLICANT = common_pb2.Applicant(name="李春梅", id_number="610929198203150028", phone="13700000002")


@pytest.fixture
def federation(
    tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str, kafka_bootstrap: str
) -> Iterator[tuple[dict[str, NodeProcess], dict[str, str]]]:
    root = tmp_path_factory.mktemp("federation-faults")
    with contextlib.ExitStack() as stack:
        urls = {r: stack.enter_context(temporary_database(postgres_dsn)) for r in ("43", "61")}
        halls = {"43": ("hn-shatou-town", SHATOU), "61": ("sx-baihe-county", BAIHE)}
        started = stack.enter_context(node_processes(root, kafka_bootstrap, urls, halls))
        _RUNNING[:] = started.values()
        yield started, urls


def _until(condition: Callable[[], Any], what: str, timeout: float = 180.0) -> Any:
    return wait_for(condition, what, _RUNNING, timeout)


def _view(node: NodeProcess, hall: str, case_id: str) -> Any:
    with node.client(hall) as client:
        return client.get_case(case_id)


def test_nodes_killed_while_consuming_and_publishing_lose_and_double_nothing(
    federation: tuple[dict[str, NodeProcess], dict[str, str]],
) -> None:
    nodes, urls = federation
    hunan, shaanxi = nodes["43"], nodes["61"]
    with hunan.client("hn-shatou-town") as town:
        case_id = town.send(
            "submit", idempotency_key="crash-0001", item_code=ID_CARD, competent_region=BAIHE,
            applicant=APPLICANT,
            materials=[common_pb2.Material(name="居民身份证", sha256="cd" * 32,
                                           media_type="image/jpeg", size=10)],
        ).case_id  # fmt: skip
        town.send("accept", idempotency_key="crash-0002", case_id=case_id)
        town.send(
            "hand_off", idempotency_key="crash-0003", case_id=case_id,
            to_hall=f"sx-baihe-county@{BAIHE}", reason="异地代收",
        )  # fmt: skip
    # 61 dies while the envelopes are on their way to it (or being consumed), then returns.
    shaanxi.kill()
    shaanxi.start()
    handed_off = common_pb2.CASE_STATE_HANDED_OFF
    _until(lambda: _view(shaanxi, "sx-baihe-county", case_id).state == handed_off, "the handoff")
    with shaanxi.client("sx-baihe-county") as county:
        county.send("acknowledge_handoff", idempotency_key="crash-baihe-1", case_id=case_id)
        county.send(
            "decide", idempotency_key="crash-baihe-2", case_id=case_id, approved=True,
            reason="准予",
        )  # fmt: skip
        county.send("conclude", idempotency_key="crash-baihe-3", case_id=case_id)
    # 61 dies while it publishes its steps, 43 while it consumes them; both return.
    shaanxi.kill()
    hunan.kill()
    hunan.start()
    shaanxi.start()
    concluded = common_pb2.CASE_STATE_CONCLUDED
    _until(lambda: _view(hunan, "hn-shatou-town", case_id).state == concluded, "the result")
    here, there = (
        _view(hunan, "hn-shatou-town", case_id),
        _view(shaanxi, "sx-baihe-county", case_id),
    )
    assert (here.state, here.version) == (there.state, there.version)  # nothing doubled
    for node in (hunan, shaanxi):
        _until(
            lambda n=node: (
                json.loads(n.run("federation", "--json"))["peers"][0]["waiting out"] == 0
            ),
            "every envelope acknowledged",
        )
    for node in (hunan, shaanxi):
        node.stop()
    for node, other in ((hunan, shaanxi), (shaanxi, hunan)):
        done = subprocess.run(
            [*TONGBAN, "audit", "verify", "--log-key", node.log_key, "--peer-key", other.log_key],
            env=node.env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run(
        [*TONGBAN, "audit", "citations", urls["43"], urls["61"]],
        env=hunan.env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

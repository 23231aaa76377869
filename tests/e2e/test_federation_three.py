"""Three provinces as three real node processes (湖南 43, 湖北 42, 陕西 61), each with its own
PostgreSQL database, keys and log, through a real broker: a 多地联办 case whose tasks reach the
other two provinces while one of them is cut off for a while, a 全程网办 intake, and afterwards
the auditor verifies all three logs and every citation between them.
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

RETIREMENT = "200406001000YJS01"  # 退休“一件事”: city level, joint tasks
LICENCE = "070404001000"  # 机动车驾驶证有效期满换证: city level, 全程网办
YIYANG, WUHAN, ANKANG = "430900000000", "420100000000", "610900000000"
SHATOU = "430902104000"
APPLICANT = common_pb2.Applicant(name="王桂英", id_number="610929198203150028", phone="13700000003")
HALLS = {
    "43": ("hn-yiyang-city", YIYANG),
    "42": ("hb-wuhan-social", WUHAN),
    "61": ("sx-ankang-social", ANKANG),
}

#: The nodes of the running test, whose logs a timeout shows.
_RUNNING: list[NodeProcess] = []


@pytest.fixture
def federation(
    tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str, kafka_bootstrap: str
) -> Iterator[tuple[dict[str, NodeProcess], dict[str, str]]]:
    root = tmp_path_factory.mktemp("federation-three")
    with contextlib.ExitStack() as stack:
        urls = {r: stack.enter_context(temporary_database(postgres_dsn)) for r in HALLS}
        started = stack.enter_context(node_processes(root, kafka_bootstrap, urls, HALLS))
        _RUNNING[:] = started.values()
        yield started, urls


def _until(condition: Callable[[], Any], what: str, timeout: float = 180.0) -> Any:
    return wait_for(condition, what, _RUNNING, timeout)


def _case(node: NodeProcess, region: str, case_id: str) -> Any:
    with node.client(HALLS[region][0]) as client:
        return client.get_case(case_id)


def test_a_joint_case_across_three_node_processes_with_one_cut_off_for_a_while(
    federation: tuple[dict[str, NodeProcess], dict[str, str]],
) -> None:
    nodes, urls = federation
    hunan, hubei, shaanxi = nodes["43"], nodes["42"], nodes["61"]
    with hunan.client("hn-yiyang-city") as city:
        case_id = city.send(
            "submit", idempotency_key="three-0001", item_code=RETIREMENT, applicant=APPLICANT,
            materials=[common_pb2.Material(name="养老保险缴费凭证", sha256="ab" * 32,
                                           media_type="application/pdf", size=10)],
        ).case_id  # fmt: skip
        city.send("accept", idempotency_key="three-0002", case_id=case_id)
        # 湖北 is cut off (its network down) while the tasks are opened.
        hubei.pause()
        try:
            city.send(
                "open_joint_tasks", idempotency_key="three-0003", case_id=case_id,
                tasks=[
                    common_pb2.JointTask(task_id="hubei", hall_id=f"hb-wuhan-social@{WUHAN}",
                                         department="湖北社保: 参保年限"),
                    common_pb2.JointTask(task_id="shaanxi", hall_id=f"sx-ankang-social@{ANKANG}",
                                         department="陕西社保: 参保年限"),
                ],
            )  # fmt: skip
            joint = common_pb2.CASE_STATE_JOINT
            # 陕西 goes on meanwhile: it gets the case from its submission on and reports.
            _until(lambda: _case(shaanxi, "61", case_id).state == joint, "61 has the case")
            with shaanxi.client("sx-ankang-social") as ankang:
                ankang.send(
                    "complete_joint_task", idempotency_key="three-shaanxi", case_id=case_id,
                    task_id="shaanxi", approved=True, note="年限已核",
                )  # fmt: skip
            assert _case(hunan, "43", case_id).state == joint  # waits for 湖北's report
        finally:
            hubei.resume()
        # Back on line, 湖北 catches up on every step it missed, and reports.
        _until(lambda: _case(hubei, "42", case_id).state == joint, "42 caught up")
        with hubei.client("hb-wuhan-social") as wuhan:
            wuhan.send(
                "complete_joint_task", idempotency_key="three-hubei", case_id=case_id,
                task_id="hubei", approved=True, note="年限已核",
            )  # fmt: skip
        handling = common_pb2.CASE_STATE_HANDLING
        _until(lambda: _case(hunan, "43", case_id).state == handling, "every report reached 43")
        city.send(
            "decide", idempotency_key="three-0004", case_id=case_id, approved=True,
            reason="各地年限合并计算",
        )  # fmt: skip
        city.send("conclude", idempotency_key="three-0005", case_id=case_id)
    concluded = common_pb2.CASE_STATE_CONCLUDED
    for region in ("42", "61"):
        _until(
            lambda r=region: _case(nodes[r], r, case_id).state == concluded,
            f"the conclusion reached {region}",
        )
    states = {(c.state, c.version) for c in (_case(n, r, case_id) for r, n in nodes.items())}
    assert len(states) == 1, states  # the same case at every node: nothing lost or doubled

    # 全程网办 at 陕西: an applicant from 湖南 applies online; the home region is recorded.
    with shaanxi.client("sx-ankang-social") as ankang:
        online = ankang.send(
            "submit", idempotency_key="three-online-0001", item_code=LICENCE,
            applicant=APPLICANT, home_region=SHATOU,
            materials=[common_pb2.Material(name="驾驶证", sha256="cd" * 32,
                                           media_type="image/jpeg", size=10)],
        ).case_id  # fmt: skip
        view = ankang.get_case(online)
    assert view.mode == common_pb2.CROSS_REGION_MODE_FULLY_ONLINE
    assert view.home_region == SHATOU

    for node in nodes.values():
        _until(
            lambda n=node: all(
                peer["waiting out"] == 0
                for peer in json.loads(n.run("federation", "--json"))["peers"]
            ),
            f"every envelope of {node.origin} acknowledged",
        )
    for node in nodes.values():
        node.stop()
    # The auditor, with public keys only: each log, the peers' steps in it, and the citations.
    for region, node in nodes.items():
        peer_keys = [
            arg for other, peer in nodes.items() if other != region
            for arg in ("--peer-key", peer.log_key, "--peer-region", f"{peer.origin}={other}")
        ]  # fmt: skip
        done = subprocess.run(
            [*TONGBAN, "audit", "verify", "--log-key", node.log_key, *peer_keys],
            env=node.env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run(
        [*TONGBAN, "audit", "citations", *urls.values(), "--json"],
        env=hunan.env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["checked"] > 0 and len(report["logs"]) == 3

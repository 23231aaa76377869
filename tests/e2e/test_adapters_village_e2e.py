"""End to end: a village room queues while the node is DOWN, the forwarder crashes and restarts,
the node comes up, and everything arrives exactly once and in order.

Everything runs as real processes: the clerk's commands (``village submit``/``act``), the
forwarder (``village forward``), and the node (``tongban serve`` over mutual TLS).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tongban.v1 import common_pb2

from adapters.sdk import HallCredentials
from tests.e2e.conftest import TOWNSHIP, VILLAGE
from tests.e2e.test_adapters_support import (
    AdapterProcess,
    audited_history,
    check_audited_commands,
    closed_port,
    connection_args,
    id_number,
    run_adapter,
    wait_until,
)
from tests.harness.node import TONGBAN, NodeProcess

pytestmark = pytest.mark.e2e


class FixedPortNode(NodeProcess):
    """A node that listens on a port chosen before it starts, so an adapter can be pointed at it
    while it is still down."""

    def __init__(self, directory: Path, port: int) -> None:
        super().__init__(directory)
        self.port = port

    def start(self) -> NodeProcess:
        """``tongban serve`` on the fixed port; waits for its port line."""
        log = self._log_path.open("w")
        self._process = subprocess.Popen(
            [*TONGBAN, "serve", "--listen", f"127.0.0.1:{self.port}", "--grace", "1"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if "serving on" in self._log_path.read_text():
                return self
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        # Our own node failing to start is this test failing, not a missing service.
        raise AssertionError(f"tongban serve did not start:\n{self.log()}")


@pytest.fixture
def down_node(tmp_path: Path) -> Iterator[FixedPortNode]:
    """A node with its halls registered but NOT started yet."""
    with FixedPortNode(tmp_path / "node", closed_port()) as node:
        for hall_id, region in (VILLAGE, TOWNSHIP):
            node.add_hall(hall_id, region)
        yield node


class Room:
    """The village room's command line, as a clerk's software would call it."""

    def __init__(self, node: NodeProcess, db: Path) -> None:
        self.node = node
        self.db = db

    def args(self) -> list[str]:
        return ["--db", str(self.db), *connection_args(self.node, VILLAGE[0])]

    def run(self, *args: str, expect: int = 0) -> str:
        result = run_adapter("village", *args[:1], *self.args(), *args[1:])
        assert result.returncode == expect, result.stdout + result.stderr
        return result.stdout

    def status(self) -> dict[str, Any]:
        return dict(json.loads(self.run("status", "--json")))

    def by_ref(self, ref: str) -> list[dict[str, Any]]:
        return [c for c in self.status()["commands"] if c["ref"] == ref]


def test_offline_queue_crash_restart_and_forward(down_node: FixedPortNode, tmp_path: Path) -> None:
    """Nothing lost, nothing doubled, order kept; a refused case holds only its own followers."""
    scan = tmp_path / "身份证.jpg"
    scan.write_bytes(b"\xff\xd8\xff\xe0 scanned id card " * 64)
    form = tmp_path / "申请表.pdf"
    form.write_bytes(b"%PDF-1.4 application form " * 64)
    room = Room(down_node, tmp_path / "room" / "outbox.sqlite3")

    def submit(ref: str, item: str, first_17: str) -> None:
        room.run(
            "submit", "--ref", ref, "--item", item, "--name", "村民" + ref,
            "--id-number", id_number(first_17), "--phone", "13700000000",
            "--material", f"居民身份证={scan}", "--material", f"申请表={form}",
            "--operator", "村干部-刘",
        )  # fmt: skip

    # --- the network is down: the clerk keeps working --------------------------------------
    submit("A-001", "200101001000", "43090219700101001")  # 居住证明: the village decides
    room.run("act", "accept", "--ref", "A-001")
    submit("B-001", "200202001000", "43090219400101002")  # 优待证: the township decides
    room.run(
        "act", "hand_off", "--ref", "B-001",
        "--json", json.dumps({"to_hall": TOWNSHIP[0], "reason": "镇级事项，转镇中心办理"}),
    )  # fmt: skip
    submit("C-001", "999999999999", "43090219500101003")  # an item the node does not know
    room.run("act", "accept", "--ref", "C-001")

    forwarder = AdapterProcess(
        ["village", "forward", "--interval", "0.2", "--max-backoff", "1", *room.args()]
    )
    forwarder.start(r"forwarding")
    try:
        # The forwarder tries, and keeps everything while the node is down.
        assert wait_until(
            lambda: (
                (c := room.by_ref("A-001")[0])["attempts"] >= 1 and c["error_code"] == "UNAVAILABLE"
            ),
            timeout=30,
        ), forwarder.text()
        assert room.status()["counts"]["pending"] == 6
        # Crash: no clean shutdown.
        forwarder.kill()
    finally:
        forwarder.stop()

    # Still offline, the clerk goes on; then the room's PC restarts the forwarder.
    room.run("act", "start_handling", "--ref", "A-001")
    attempts = room.by_ref("A-001")[0]["attempts"]
    forwarder = AdapterProcess(
        ["village", "forward", "--interval", "0.2", "--max-backoff", "1", *room.args()]
    )
    forwarder.start(r"forwarding")
    try:
        # The restarted forwarder fails against the closed port at least once more.
        assert wait_until(lambda: room.by_ref("A-001")[0]["attempts"] > attempts, timeout=30), (
            forwarder.text()
        )
        down_node.start()  # --- the network is back -------------------------------------------

        def settled() -> bool:
            counts = room.status()["counts"]
            return counts["sent"] == 5 and counts["failed"] == 1 and counts["held"] == 1

        assert wait_until(settled, timeout=60, interval=0.5), forwarder.text() + json.dumps(
            room.status(), ensure_ascii=False
        )
    finally:
        assert forwarder.stop() == 0, forwarder.text()

    a, b, c = room.by_ref("A-001"), room.by_ref("B-001"), room.by_ref("C-001")
    assert [x["action"] for x in a] == ["submit", "accept", "start_handling"]
    assert {x["case_id"] for x in a} == {a[0]["case_id"]}
    assert [x["status"] for x in c] == ["failed", "held"]
    assert c[0]["error_code"] == "INVALID_ARGUMENT" and "item_code" in c[0]["error_message"]
    assert c[1]["held_by"] == f"#{c[0]['seq']} failed"

    with down_node.client(VILLAGE[0]) as client:
        history_a = [e.WhichOneof("event") for e in client.history(a[0]["case_id"]).events]
        events_b = client.history(b[0]["case_id"]).events
    assert history_a == ["submitted", "accepted", "handling_started"]
    assert [e.WhichOneof("event") for e in events_b] == ["submitted", "handed_off"]
    assert events_b[1].handed_off.to_hall == TOWNSHIP[0]
    # Each command carries the operator who queued it (the default when none was named).
    assert [e.actor.operator for e in events_b] == ["村干部-刘", "village"]

    # What an auditor sees of A: deferred commands with the clerk's queue times, each verifying
    # with the room's public key alone, commitments and no personal value in the signed bytes.
    public_key = HallCredentials.load_signing_key(
        down_node.halls[VILLAGE[0]].signing_key
    ).public_key()
    applicant = common_pb2.Applicant(
        name="村民A-001", id_number=id_number("43090219700101001"), phone="13700000000"
    )
    commands = check_audited_commands(
        audited_history(down_node, a[0]["case_id"]), public_key, applicant
    )
    assert [c.WhichOneof("action") for c in commands] == [x["action"] for x in a]
    assert all(c.header.deferred and c.header.node == down_node.origin for c in commands)
    assert [c.header.issued_at.ToDatetime(tzinfo=UTC) for c in commands] == [
        datetime.fromisoformat(x["created_at"]) for x in a
    ]

    # A crash after the node acknowledged but before the outbox recorded it: the command is
    # pending again and goes out again, byte for byte — the node answers with its first result.
    with sqlite3.connect(room.db) as db:
        db.execute("UPDATE commands SET status = 'pending' WHERE seq = ?", (a[1]["seq"],))
    out = room.run("forward", "--once", expect=1)  # 1: C's failure is still on record
    assert "(replayed)" in out
    resent = room.by_ref("A-001")[1]
    assert resent["status"] == "sent" and resent["replayed"] is True
    with down_node.client(VILLAGE[0]) as client:
        assert len(client.history(a[0]["case_id"]).events) == 3

    # The clerk gives up the refused submission: its follower goes with it.
    out = room.run("cancel", str(c[0]["seq"]))
    assert out.count("cancelled") == 2
    assert room.status()["counts"] == {
        "pending": 0, "held": 0, "sent": 5, "failed": 0, "cancelled": 2,
    }  # fmt: skip
    assert room.run("forward", "--once").startswith("sent 0, failed 0")


def test_outbox_is_bound_to_its_hall(down_node: FixedPortNode, tmp_path: Path) -> None:
    """An outbox file holds one hall's signed commands; another hall cannot use it."""
    db = tmp_path / "outbox.sqlite3"
    room = Room(down_node, db)
    room.run("status")
    result = run_adapter(
        "village", "status", "--db", str(db), *connection_args(down_node, TOWNSHIP[0])
    )
    assert result.returncode == 2 and "belongs to hall_id" in result.stderr


def test_forward_once_reports_unreachable(down_node: FixedPortNode, tmp_path: Path) -> None:
    """``forward --once`` against a node that is down: exit 3, the command stays pending."""
    scan = tmp_path / "scan.png"
    scan.write_bytes(b"\x89PNG scanned" * 10)
    room = Room(down_node, tmp_path / "outbox.sqlite3")
    room.run(
        "submit", "--item", "200101001000", "--name", "王五",
        "--id-number", id_number("43090219800101004"), "--phone", "13600000000",
        "--material", f"居民身份证={scan}",
    )  # fmt: skip
    out = room.run("forward", "--once", "--retries", "1", expect=3)
    assert "node unreachable: UNAVAILABLE" in out
    [command] = room.status()["commands"]
    assert command["status"] == "pending" and command["attempts"] == 1

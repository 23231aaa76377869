"""Settings a node takes from its environment, each seen to take effect in a real node
(README, "Configuration"): ``TONGBAN_ORIGIN``, ``TONGBAN_CATALOGUE``, ``TONGBAN_TLS_DIR`` and
``TONGBAN_CLOCK_WINDOW_S``."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tongban.v1 import case_exchange_pb2, common_pb2

from adapters.errors import CommandInvalid
from adapters.sdk import RetryPolicy, sign_command
from hub.domain.values import id_number_with_check
from tests.harness.node import NodeProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TOWNSHIP = ("hn-settings-town", "430902104000")
ORIGIN = "zwfw.hunan.example/tongban"
KEPT = "200202001000"  # 老年人优待证办理: decided at township level
DROPPED = "200101001000"  # 居民居住情况证明出具: not in the operator's catalogue
APPLICANT = common_pb2.Applicant(
    name="设置测试", id_number=id_number_with_check("43090219500101004"), phone="13800002222"
)
MATERIAL = common_pb2.Material(
    name="身份证", sha256=hashlib.sha256(b"s").hexdigest(), media_type="image/png", size=9
)


def _catalogue(path: Path) -> Path:
    """The shipped catalogue cut to one item, renamed as an operator's edition would."""
    shipped = json.loads((ROOT / "hub" / "domain" / "data" / "service_items.json").read_text())
    (item,) = [entry for entry in shipped["items"] if entry["code"] == KEPT]
    item["name"] = "老年人优待证办理（本市版）"
    path.write_text(
        json.dumps({**shipped, "edition": "本市 2026", "items": [item]}, ensure_ascii=False)
    )
    return path


def test_origin_catalogue_tls_dir_and_clock_window_take_effect(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    env = {
        "TONGBAN_ORIGIN": ORIGIN,
        "TONGBAN_CATALOGUE": str(_catalogue(tmp_path / "catalogue.json")),
        "TONGBAN_TLS_DIR": str(tls),
        "TONGBAN_CLOCK_WINDOW_S": "30",
    }
    with NodeProcess(tmp_path / "node", extra_env=env) as node:
        # TONGBAN_TLS_DIR: `tongban pki init` wrote the CA and the node's certificate there,
        # and nowhere else; the node serves with them (the hall's channel checks that CA).
        assert node.pki == tls and {"ca.pem", "node.pem", "node.key"} <= {
            p.name for p in tls.iterdir()
        }
        assert not (node.data_dir / "pki").exists()
        node.add_hall(*TOWNSHIP)
        node.start()
        # TONGBAN_ORIGIN: the log's origin, which commands are bound to and checkpoints name.
        assert node.origin == ORIGIN
        with node.client(TOWNSHIP[0], retry=RetryPolicy(attempts=1)) as hall:
            # TONGBAN_CATALOGUE: the node serves the operator's catalogue, and only it.
            assert [(item.code, item.name) for item in hall.items()] == [
                (KEPT, "老年人优待证办理（本市版）")
            ]

            def submit(item_code: str, issued_at: datetime | None = None) -> str:
                body = case_exchange_pb2.SubmitCase(item_code=item_code, materials=[MATERIAL])
                signed = sign_command(
                    hall.credentials, "submit", body, idempotency_key=uuid.uuid4().hex,
                    operator="op-settings", applicant=APPLICANT, issued_at=issued_at,
                )  # fmt: skip
                return str(hall.send_signed("submit", signed).case_id)

            assert submit(KEPT)
            with pytest.raises(CommandInvalid) as unknown:
                submit(DROPPED)
            assert [field for field, _why in unknown.value.violations] == [
                "command.submit.item_code"
            ]
            # TONGBAN_CLOCK_WINDOW_S=30: a command signed 10 s ago is taken, one signed 60 s
            # ago (inside the default 300 s) is refused, naming its signing time.
            assert submit(KEPT, datetime.now(UTC) - timedelta(seconds=10))
            with pytest.raises(CommandInvalid) as stale:
                submit(KEPT, datetime.now(UTC) - timedelta(seconds=60))
            fields = [field for field, _why in stale.value.violations]
            assert fields == ["command.header.issued_at"] and "30 s" in stale.value.message
        # The audit of the log under that origin verifies with the public key alone.
        node.run("ledger", "integrate")
        report = node.run("audit", "verify", "--log-key", node.log_key)
        assert ORIGIN in node.log_key and "OK" in report

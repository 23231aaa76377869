"""``tongban hall list|show``, ``pki show-key`` and ``audit case|verify`` on a real node's store:
headed tables aligned for CJK names, and ``--json`` as one readable UTF-8 document."""

from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.bootstrap import public_key_b64
from hub.cli import main
from hub.domain.hall import key_id
from hub.settings import Settings
from tests.harness.inprocess import InProcessNode


@dataclass(frozen=True)
class Node:
    data_dir: Path
    log_key: str
    case_id: str
    village_keys: tuple[str, str]  # registered, then rotated to


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Node:
    """A node with three halls (one retired, one with a rotated key), a case, an integrated log;
    the CLI configured for it by TONGBAN_DATA_DIR alone."""
    for name in list(os.environ):
        if name.startswith("TONGBAN_"):
            monkeypatch.delenv(name)
    settings = Settings(data_dir=tmp_path / "node")
    running = InProcessNode.start(settings)
    try:
        running.add_hall("hn-shatou-town", "430902104000", "沙头镇政务服务中心")
        village = running.add_hall("v-room", "430902104201", "村服务室")
        running.add_hall("hn-old-hall", "430902104000", "旧大厅")
        case_id = str(running.submit(village, key="key-cli-tables-1").case_id)
        first = running.app.get_hall("v-room").current_key
        second = public_key_b64(Ed25519PrivateKey.generate())
        admin = running.admin
        running.app.execute(admin.sign("rotate_hall_key", hall_id="v-room", public_key=second))
        running.app.execute(admin.sign("retire_hall", hall_id="hn-old-hall", reason="机构撤并"))
        running.integrator().catch_up()
    finally:
        running.close()
    monkeypatch.setenv("TONGBAN_DATA_DIR", str(settings.data_dir))
    log_key = (settings.data_dir / "log.vkey").read_text().strip()
    return Node(settings.data_dir, log_key, case_id, (first, second))


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _column(line: str, cell: str) -> int:
    """The display column where ``cell`` starts in ``line``."""
    return _width(line[: line.index(cell)])


def _run(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> str:
    assert main(list(argv)) == code, capsys.readouterr()
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out


def test_hall_list_is_a_headed_table_of_every_hall(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    header, rule, *rows, summary = _run(capsys, "hall", "list").splitlines()
    assert header.split() == ["hall", "id", "name", "region", "level", "windows", "state",
                              "current", "key", "id"]  # fmt: skip
    assert set(rule) == {"-"}
    assert [row.split()[0] for row in rows] == ["hn-old-hall", "hn-shatou-town", "v-room"]
    assert summary == "3 halls (2 active, 1 retired)"
    by_id = {row.split()[0]: row.split() for row in rows}
    assert by_id["hn-old-hall"][5] == "retired"
    assert by_id["v-room"][1:6] == ["村服务室", "430902104201", "VILLAGE", "综合窗口", "active"]
    assert by_id["v-room"][6] == key_id(node.village_keys[1])  # the current key's id
    # After names of different display widths, every column still starts in the same place.
    for cell_index, header_cell in ((2, "region"), (3, "level"), (5, "state")):
        starts = {_column(row, row.split()[cell_index]) for row in rows}
        assert starts == {_column(header, header_cell)}, header_cell


def test_hall_list_json(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "hall", "list", "--json")
    assert "\\u" not in out and "沙头镇政务服务中心" in out
    halls = json.loads(out)["halls"]
    assert [h["hall_id"] for h in halls] == ["hn-old-hall", "hn-shatou-town", "v-room"]
    village = halls[2]
    assert village["name"] == "村服务室" and village["level"] == "VILLAGE"
    assert village["windows"] == ["综合窗口"] and village["state"] == "active"
    assert village["current_key_id"] == key_id(node.village_keys[1])
    assert [k["public_key"] for k in village["keys"]] == list(node.village_keys)
    assert halls[0]["state"] == "retired"


def test_hall_show_lists_every_key_with_its_id_the_current_one_marked(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(capsys, "hall", "show", "v-room")
    hall_table, key_table = out.split("\n\n")
    assert hall_table.splitlines()[0].split()[:2] == ["hall", "id"]
    assert hall_table.splitlines()[2].split()[0] == "v-room"
    header, _rule, *keys = key_table.splitlines()
    assert header.split() == ["key", "id", "public", "key", "(base64)", "since", "version",
                              "state"]  # fmt: skip
    first, second = node.village_keys
    assert [k.split() for k in keys] == [
        [key_id(first), first, "1", "rotated", "out"],
        [key_id(second), second, "2", "current"],
    ]
    document = json.loads(_run(capsys, "hall", "show", "v-room", "--json"))
    assert document["keys"] == [
        {"key_id": key_id(first), "public_key": first, "since_version": 1, "current": False,
         "state": "rotated out"},
        {"key_id": key_id(second), "public_key": second, "since_version": 2, "current": True,
         "state": "current"},
    ]  # fmt: skip


def test_an_unknown_hall_is_one_line(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hall", "show", "hn-nowhere"]) == 1
    assert capsys.readouterr().err == "tongban: hall hn-nowhere not found\n"


def test_a_hall_registered_with_the_key_show_key_prints(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "halls" / "hn-xinqiao.signing.key"
    _run(capsys, "pki", "signing-key", "--out", str(key_file))
    shown = json.loads(_run(capsys, "pki", "show-key", str(key_file), "--json"))
    out = _run(capsys, "hall", "register", "--hall-id", "hn-xinqiao", "--name", "新桥河镇便民服务中心",
               "--region", "430902107000", "--window", "综合窗口", "--window", "社保医保窗口",
               "--public-key", shown["public_key"])  # fmt: skip
    assert shown["key_id"] in out
    document = json.loads(_run(capsys, "hall", "show", "hn-xinqiao", "--json"))
    assert document["current_key_id"] == shown["key_id"]
    assert document["windows"] == ["综合窗口", "社保医保窗口"]
    assert document["level"] == "TOWNSHIP"


def test_audit_case_is_a_headed_table_and_json(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(capsys, "audit", "case", node.case_id, "--log-key", node.log_key)
    header, rule, *events = out.splitlines()
    assert header.split() == ["version", "event", "leaf", "signed", "by", "status"]
    assert set(rule) == {"-"}
    assert events and events[0].split()[:2] == ["1", "Submitted"]
    assert "v-room" in events[0] and "proven in checkpoint" in events[0]
    document = json.loads(
        _run(capsys, "audit", "case", node.case_id, "--log-key", node.log_key, "--json")
    )
    assert document["case_id"] == node.case_id and document["ok"] is True
    assert document["events"][0]["event"] == "Submitted"
    assert isinstance(document["events"][0]["leaf"], int)
    assert document["events"][0]["signer"].startswith("v-room")


def test_audit_verify_json_is_one_document_and_keeps_the_state(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "auditor.state"
    out = _run(
        capsys, "audit", "verify", "--log-key", node.log_key, "--state", str(state), "--json"
    )
    document = json.loads(out)  # the whole of stdout is one document
    assert document["ok"] is True and document["findings"] == []
    assert document["leaves"] == document["events"] > 0
    assert document["state"] == str(state)
    assert state.read_text() == document["latest_checkpoint"]
    assert document["latest_checkpoint"].startswith("tongban/43\n")
    # Without --json, the summary the auditor's tests read is unchanged.
    text = _run(capsys, "audit", "verify", "--log-key", node.log_key, "--state", str(state))
    assert "OK: every checkpoint" in text
    assert f"remembered the verified checkpoint in {state}" in text

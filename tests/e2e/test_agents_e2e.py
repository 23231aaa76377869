"""代办员 from the command line, end to end against a real ``tongban serve`` over mutual TLS:
the hall registers and retires an agent with ``tongban adapter agent`` (the SDK over gRPC, the
agent's personal values committed to like an applicant's), a repeated command is recognised as
a retry, a refusal names the field and stores nothing, and the node's operator lists the agents
with ``tongban agents`` (no personal data; ``--names`` masked)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.domain.hall import key_id
from tests.e2e.conftest import VILLAGE
from tests.e2e.test_adapters_support import connection_args, id_number, run_adapter
from tests.harness.node import NodeProcess

pytestmark = pytest.mark.e2e

NAME, PHONE = "王代办", "13907370007"
ID_NUMBER = id_number("43090219800101003")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    directory: Path = tmp_path_factory.mktemp("node")
    with NodeProcess(directory) as process:
        process.add_hall(*VILLAGE)
        process.start()
        yield process


def _agent(node: NodeProcess, verb: str, *args: str, expect: int = 0) -> str:
    result = run_adapter("agent", verb, *connection_args(node, VILLAGE[0]), *args)
    assert result.returncode == expect, result.stdout + result.stderr
    assert NAME not in result.stdout + result.stderr and ID_NUMBER not in result.stderr
    return result.stdout + result.stderr


def test_agents_registered_and_retired_from_the_command_line(node: NodeProcess) -> None:
    person = ["--name", NAME, "--id-number", ID_NUMBER, "--phone", PHONE]
    out = _agent(node, "register", "--agent-id", "dby-07", *person)
    assert f"registered agent dby-07 of {VILLAGE[0]}" in out
    # The same command again is a retry: the node returns the first result.
    assert "already done" in _agent(node, "register", "--agent-id", "dby-07", *person)
    # A refusal names the field; nothing is stored.
    bad = ["--name", NAME, "--id-number", "430902198001010030", "--phone", PHONE]
    refused = _agent(node, "register", "--agent-id", "dby-08", *bad, expect=1)
    assert "INVALID_ARGUMENT" in refused and "GB 11643" in refused  # (dby-08: not listed below)
    assert "--agent-id" in _agent(node, "register", "--agent-id", "代办员", *person, expect=2)
    # dby-09 signs their own steps: the key `tongban pki signing-key` printed for their phone.
    own = Ed25519PrivateKey.generate()
    own_key = base64.b64encode(own.public_key().public_bytes_raw()).decode()
    out = _agent(node, "register", "--agent-id", "dby-09", "--name", "刘秀英",
                 "--id-number", id_number("43090219850101004"), "--phone", "13907370008",
                 "--public-key", own_key)  # fmt: skip
    assert "signs their own steps" in out
    assert "retired agent dby-09" in _agent(node, "retire", "--agent-id", "dby-09",
                                            "--reason", "调离本村")  # fmt: skip

    listed = json.loads(node.run("agents", "--all", "--json"))["entries"]
    assert [(e["agent_id"], e["retired_reason"]) for e in listed] == [
        ("dby-07", ""), ("dby-09", "调离本村"),
    ]  # fmt: skip
    assert [e["key_id"] for e in listed] == ["", key_id(own_key)]
    assert NAME not in json.dumps(listed, ensure_ascii=False)
    named = json.loads(node.run("agents", "--names", "--json"))["entries"]
    assert [(e["agent_id"], e["name_masked"]) for e in named] == [("dby-07", "王**")]

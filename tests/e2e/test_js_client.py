"""A client outside Python uses the ``.proto`` files as they are: a Node.js hall client.

``tests/e2e/js/client.mjs`` loads ``proto/tongban/v1`` at runtime (@grpc/proto-loader for the
stub, protobufjs for the signed ``Command`` bytes), talks mutual TLS to a real ``tongban serve``
process, submits and accepts a case, and sends a command with a bad signature. The stored history
is then checked through the Python SDK. Without ``node``/``npm`` the test is skipped, except in CI
(``CI`` set), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness.node import NodeProcess

pytestmark = pytest.mark.e2e

JS_DIR = Path(__file__).parent / "js"
HALL = "hn-shatou-town"
NPM_TIMEOUT = 300.0
CLIENT_TIMEOUT = 120.0


class JsSetupError(Exception):
    """Node.js or the client's dependencies are not available."""


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool!r} is not installed: the Node.js client test needs Node.js 18+ and npm"
        if not os.environ.get("CI"):
            pytest.skip(message)
        raise JsSetupError(f"{message} (CI is set, so this is a failure, not a skip)")
    return path


def _install_dependencies(npm: str) -> None:
    """``npm ci`` from the committed lockfile when node_modules is missing."""
    modules = JS_DIR / "node_modules"
    if (modules / "@grpc" / "grpc-js").is_dir() and (modules / "protobufjs").is_dir():
        return
    try:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise JsSetupError(f"npm ci in {JS_DIR} took longer than {NPM_TIMEOUT:.0f}s") from None
    if result.returncode != 0:
        raise JsSetupError(f"npm ci in {JS_DIR} failed ({result.returncode}):\n{result.stderr}")


@pytest.fixture(scope="module")
def node_js() -> str | JsSetupError:
    """The ``node`` binary with the client's dependencies installed, or why there is none.

    Requested before ``node`` so that a skip happens before a node process starts; a setup
    failure is returned, not raised, so that the test reports it as FAILED rather than ERROR.
    """
    try:
        node_binary = _require("node")
        _install_dependencies(_require("npm"))
    except JsSetupError as error:
        return error
    return node_binary


def _run_client(node_binary: str, node: NodeProcess) -> tuple[dict[str, dict[str, Any]], str]:
    hall = node.halls[HALL]
    command = [
        node_binary,
        str(JS_DIR / "client.mjs"),
        "--target", node.target,
        "--ca", str(node.pki / "ca.pem"),
        "--cert", str(hall.certificate),
        "--key", str(hall.private_key),
        "--signing-key", str(hall.signing_key),
        "--hall-id", hall.hall_id,
        "--region", hall.region,
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command,
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"node client.mjs timed out after {CLIENT_TIMEOUT:.0f}s:\n{error.stdout!r}")
    transcript = (
        f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
        f"--- node log\n{node.log()}"
    )
    steps: dict[str, dict[str, Any]] = {}
    for line in result.stdout.splitlines():
        if line.strip():
            record = json.loads(line)
            steps[record["step"]] = record
    assert result.returncode == 0, f"the JS client failed\n{transcript}"
    return steps, transcript


def test_node_js_client_uses_the_proto_files_as_they_are(
    node_js: str | JsSetupError, node: NodeProcess
) -> None:
    if isinstance(node_js, JsSetupError):
        pytest.fail(str(node_js))
    steps, transcript = _run_client(node_js, node)

    assert steps["list_items"]["count"] > 25, transcript
    assert steps["submit"]["version"] == 1, transcript
    case_id = steps["submit"]["case_id"]
    assert case_id, transcript
    assert steps["accept"] == {"step": "accept", "case_id": case_id, "version": 2}, transcript
    assert steps["get_case"]["state"] == "CASE_STATE_ACCEPTED", transcript
    assert steps["bad_signature"]["code"] == 16, transcript  # UNAUTHENTICATED
    assert steps["done"]["ok"] is True, transcript

    # What the JS client stored, read back through the Python SDK: its two commands and nothing
    # from the one with the bad signature.
    with node.client(HALL) as client:
        events = client.history(case_id).events
        view = client.get_case(case_id)
    assert [event.WhichOneof("event") for event in events] == ["submitted", "accepted"]
    assert [event.version for event in events] == [1, 2]
    assert all(event.actor.hall_id == HALL for event in events)
    assert view.version == 2
    submitted = events[0].submitted
    assert submitted.item_code == "200202001000"
    assert len(submitted.materials) == 1
    assert submitted.materials[0].media_type == "application/pdf"

"""A client outside Python uses the ``.proto`` files as they are: a Node.js hall client.

``tests/e2e/js/client.mjs`` loads ``proto/tongban/v1`` at runtime (@grpc/proto-loader for the
stub, protobufjs for the signed ``Command`` bytes), talks mutual TLS to a real ``tongban serve``
process, submits a case committing to its applicant (salted SHA-256 commitments in the signed
bytes, the clear values beside them), checks its own signature, accepts the case, and sends a
command with a bad signature. The stored history is then checked through the Python SDK, and
what an auditor gets (``Audit.GetCaseHistory`` with an auditor certificate) is verified in Python
with nothing but the hall's public key: every signature, no personal value in any signed byte.
Without ``node``/``npm`` the test is skipped, except in CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from tongban.v1 import case_exchange_pb2

from adapters.sdk import HallCredentials
from tests.e2e.test_adapters_support import audited_history, id_number
from tests.harness.node import NodeProcess

pytestmark = pytest.mark.e2e

JS_DIR = Path(__file__).parent / "js"
HALL = "hn-shatou-town"
NPM_TIMEOUT = 300.0
CLIENT_TIMEOUT = 120.0
#: The applicant client.mjs submits (its values must never appear in signed or logged bytes).
APPLICANT = {"name": "刘秀英", "id_number": id_number("43090219560312002"), "phone": "13907370001"}


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
        "--node", node.origin,
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
    hall_public = (
        HallCredentials.load_signing_key(node.halls[HALL].signing_key)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    assert steps["verify_signature"]["ok"] is True, transcript
    assert base64.b64decode(steps["verify_signature"]["public_key"]) == hall_public, transcript
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
    # The node opened the JS client's commitments: the intake hall reads its applicant in clear.
    assert {f: getattr(submitted.applicant, f) for f in APPLICANT} == APPLICANT

    # What an auditor gets, checked with nothing but the hall's public key.
    public_key = Ed25519PublicKey.from_public_bytes(hall_public)
    audited = audited_history(node, case_id)
    assert [e.event.WhichOneof("event") for e in audited.events] == ["submitted", "accepted"]
    assert len(audited.commands) == 2  # nothing from the command with the bad signature
    personal = [value.encode("utf-8") for value in APPLICANT.values()]
    commands = {}
    for entry in audited.commands:
        public_key.verify(entry.signature, entry.command)  # raises InvalidSignature
        assert entry.signer == HALL
        assert not any(value in entry.command for value in personal), entry.command
        assert not any(value in entry.leaf for value in personal)
        command = case_exchange_pb2.Command.FromString(entry.command)
        assert command.header.node == node.origin and not command.header.deferred
        commands[command.WhichOneof("action")] = (command, entry.command)
    submit, submit_bytes = commands["submit"]
    # The very bytes client.mjs signed, committing with the digests it reported.
    assert hashlib.sha256(submit_bytes).hexdigest() == steps["submit"]["command_sha256"]
    assert {f: getattr(submit.submit.applicant, f).hex() for f in APPLICANT} == (
        steps["submit"]["commitments"]
    )
    event = audited.events[0].event.submitted
    assert not event.HasField("applicant"), "an auditor must not get the applicant"
    assert event.applicant_commitments == submit.submit.applicant
    assert all(len(getattr(event.applicant_commitments, f)) == 32 for f in APPLICANT)

"""Three real ``tongban serve`` nodes (湖南 43, 湖北 42, 陕西 61), each with its own store and
federation file, cosign each other's checkpoints over HTTP (C2SP tlog-witness) until every
node's checkpoints are final under k = 2; a node that signs a fork is caught and the evidence
shows in ``tongban federation witness``."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from tongban.v1 import audit_pb2, audit_pb2_grpc

from ledger import (
    Checkpoint,
    Cosigner,
    MerkleTree,
    Signer,
    Verifier,
    WitnessPolicy,
    sign_checkpoint,
)
from ledger.cosignature import CosignatureVerifier
from ledger.witness_protocol import format_add_checkpoint
from tests.harness.federation import wait_for
from tests.harness.node import TONGBAN, NodeProcess
from tests.harness.processes import free_tcp_port

pytestmark = pytest.mark.e2e

REGIONS = ("43", "42", "61")
HALLS = {"43": "430902104000", "42": "420102000000", "61": "610929000000"}


def _witness_key(node: NodeProcess) -> str:
    return Cosigner.from_key(
        (node.data_dir / "secrets" / "witness.key").read_text().strip()
    ).verifier_key()


def _encryption_key(node: NodeProcess) -> str:
    raw = base64.b64decode((node.data_dir / "secrets" / "encryption.key").read_text().strip())
    public = X25519PrivateKey.from_private_bytes(raw).public_key().public_bytes_raw()
    return "x25519:" + base64.b64encode(public).decode()


def _federation(nodes: dict[str, NodeProcess], ports: dict[str, int], own: str) -> str:
    lines = ["[kafka]", 'bootstrap = ["127.0.0.1:9"]', "", "[relay]", "witness_k = 2", ""]
    for region, peer in nodes.items():
        if region == own:
            continue
        lines += [
            "[[peers]]",
            f'region = "{region}"',
            f'origin = "tongban/{region}"',
            f'log_key = "{peer.log_key}"',
            f'witness_key = "{_witness_key(peer)}"',
            f'encryption_key = "{_encryption_key(peer)}"',
            f'ca_certificate = "{peer.pki / "ca.pem"}"',
            'address = "localhost:1"',
            f'witness_url = "http://127.0.0.1:{ports[region]}"',
            "",
        ]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeProcess]]:
    root = tmp_path_factory.mktemp("federation")
    ports = {region: free_tcp_port() for region in REGIONS}
    nodes: dict[str, NodeProcess] = {}
    try:
        for region in REGIONS:
            nodes[region] = NodeProcess(
                root / region,
                extra_env={
                    "TONGBAN_NODE_REGION": region,
                    "TONGBAN_FEDERATION": str(root / region / "federation.toml"),
                    "TONGBAN_WITNESS_LISTEN": f"127.0.0.1:{ports[region]}",
                    "TONGBAN_CHECKPOINT_INTERVAL_MS": "200",
                },
                processes=1,
            )
            nodes[region].add_hall(f"hall-{region}", HALLS[region])
        for region in nodes:
            (root / region / "federation.toml").write_text(_federation(nodes, ports, region))
        for node in nodes.values():
            node.start()
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


def _final(node: NodeProcess) -> audit_pb2.FinalCheckpoint | None:
    certificate, key = node.issue("auditor", f"auditor-{time.monotonic_ns()}")
    credentials = grpc.ssl_channel_credentials(
        (node.pki / "ca.pem").read_bytes(), key.read_bytes(), certificate.read_bytes()
    )
    with grpc.secure_channel(node.target, credentials) as channel:
        stub = audit_pb2_grpc.AuditStub(channel)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                return stub.GetFinalCheckpoint(audit_pb2.FinalCheckpointRequest(index=0), timeout=5)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            time.sleep(0.2)  # the peers' witnesses answer within the publisher's next round
    return None


def _witness_status(node: NodeProcess) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [*TONGBAN, "federation", "witness", "--json"],
        env=node.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_every_node_checkpoints_become_final_through_its_peers(
    federation: dict[str, NodeProcess],
) -> None:
    for region, node in federation.items():
        assert node.witness_url.startswith("http://127.0.0.1:")
        final = _final(node)
        assert final is not None, node.log()
        others = sorted(f"tongban/{r}/witness" for r in REGIONS if r != region)
        assert sorted(final.witnesses) == others and final.required == 2
        # The note verifies with the log's key and both peers' witness keys: k = 2 of 2.
        verifiers = [
            CosignatureVerifier.from_key(_witness_key(federation[r]))
            for r in REGIONS
            if r != region
        ]
        result = WitnessPolicy(2, verifiers).require_final(
            final.note, Verifier.from_key(node.log_key)
        )  # type: ignore[arg-type]
        assert result.checkpoint.checkpoint.size == final.size > 0
        # The operator's view and the metrics agree.
        code, status = _witness_status(node)
        assert code == 0 and status["evidence"] == []
        assert status["final_size"] >= final.size
        witnessed = {w["origin"]: w["cosigned_size"] for w in status["witnessed_logs"]}  # type: ignore[union-attr,index]
        assert set(witnessed) == {f"tongban/{r}" for r in REGIONS if r != region}
        with urllib.request.urlopen(node.metrics_url, timeout=10) as response:
            metrics = response.read().decode()
        assert "tongban_witness_cosignatures_received_total" in metrics
        assert "tongban_witness_final_size" in metrics


def test_a_node_that_signs_a_fork_is_caught_and_the_evidence_is_shown(
    federation: dict[str, NodeProcess],
) -> None:
    hunan, hubei = federation["43"], federation["42"]
    assert _final(hunan) is not None  # Hunan has cosigned Hubei's log by now
    _, before = _witness_status(hunan)
    cosigned = {w["origin"]: w["cosigned_size"] for w in before["witnessed_logs"]}  # type: ignore[union-attr,index]
    size = cosigned["tongban/42"]
    assert isinstance(size, int) and size > 0
    # Hubei's log key signs another tree of the same size: a split view.
    hubei_key = Signer.from_key((hubei.data_dir / "secrets" / "log.key").read_text().strip())
    forged_tree = MerkleTree(b"rewritten %d" % i for i in range(size))
    forged = sign_checkpoint(Checkpoint("tongban/42", size, forged_tree.root()), hubei_key)
    request = urllib.request.Request(
        hunan.witness_url + "/add-checkpoint",
        data=format_add_checkpoint(size, (), forged),
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 422
    code, after = _witness_status(hunan)
    assert code == 1  # evidence kept: the command says so in its exit code too
    (evidence,) = after["evidence"]  # type: ignore[misc]
    assert evidence["origin"] == "tongban/42" and evidence["kind"] == "fork"
    assert base64.b64decode(evidence["new_note"]) == forged
    human = subprocess.run(
        [*TONGBAN, "federation", "witness"],
        env=hunan.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "SPLIT-VIEW EVIDENCE: 1" in human.stdout and "tongban/42" in human.stdout
    # The metrics say it too: the refused request by its status, and the evidence kept.
    wait_for(
        lambda: (
            'tongban_witness_requests_total{status="422"} 1.0' in (text := _metrics_of(hunan))
            and "tongban_witness_evidence 1.0" in text
        ),
        "the 422 and the evidence in the metrics",
        [hunan],
        timeout=30,
    )
    assert re.search(
        r'^tongban_witness_submissions_total\{status="200",witness="tongban/4[21]/witness"\} '
        r"[1-9]",
        _metrics_of(hunan),
        re.M,
    )


def _metrics_of(node: NodeProcess) -> str:
    with urllib.request.urlopen(node.metrics_url, timeout=10) as response:
        return str(response.read().decode())

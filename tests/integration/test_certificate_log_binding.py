"""Certificates bound to the log, on a real node store and through the command line:
``tongban cert receipt`` writes the certificate file once a checkpoint cosigned by the witness
policy covers the issuing event, ``tongban trust export`` names the log key, the witnesses and
k, and ``tongban cert verify`` checks the receipt offline; ``tongban keys rotate-issuer``
replaces the issuer key while what the old key signed still verifies."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hub.bootstrap import NodePaths
from hub.integrity.witnessed import record_cosignatures
from hub.pki import init_ca
from hub.relay.config import encryption_key_text
from hub.settings import Settings
from ledger import Cosigner, Signer, Verifier
from tests.harness.inprocess import InProcessNode

pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")

ROOT = Path(__file__).resolve().parents[2]
TOWNSHIP = "430902104000"
ISSUER = "11430902MB0000001X"


def _tongban(node: InProcessNode, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}
    env["TONGBAN_DATA_DIR"] = str(node.settings.data_dir)
    if node.settings.federation is not None:
        env["TONGBAN_FEDERATION"] = str(node.settings.federation)
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip


def _federation(directory: Path, witness: Cosigner) -> Path:
    """A federation file with one peer, whose witness key (``witness``) this node needs (k=1)."""
    directory.mkdir(parents=True)
    init_ca(directory / "peer-ca", "node-42")
    encryption = encryption_key_text(X25519PrivateKey.generate().public_key())
    path = directory / "federation.toml"
    path.write_text(
        "\n".join([
            "[kafka]", 'bootstrap = ["localhost:9092"]', "", "[relay]", "witness_k = 1", "",
            "[[peers]]", 'region = "42"', 'origin = "tongban/42"',
            f'log_key = "{Signer.generate("tongban/42").verifier_key()}"',
            f'witness_key = "{witness.verifier_key()}"', f'encryption_key = "{encryption}"',
            f'ca_certificate = "{directory / "peer-ca" / "ca.pem"}"',
            'address = "localhost:50099"', "",
        ]),
        encoding="utf-8",
    )  # fmt: skip
    return path


WITNESS = Cosigner.generate("tongban/42/witness")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[InProcessNode]:
    federation = _federation(tmp_path / "federation", WITNESS)
    started = InProcessNode.start(Settings(data_dir=tmp_path / "node", federation=federation))
    started.add_hall("t-hall", TOWNSHIP)
    yield started
    started.close()


def _issued_case(node: InProcessNode, key: str) -> str:
    hall = node.halls["t-hall"]
    case = str(node.submit(hall, key=key).case_id)
    for action, arguments in (
        ("accept", {}),
        ("start_handling", {}),
        ("decide", {"approved": True, "reason": "符合条件"}),
        ("conclude", {}),
        ("issue_certificate", {"type_code": "150001", "issuer_code": ISSUER,
                               "authority": "益阳市资阳区长春镇人民政府",
                               "valid_until": "2036-03-01"}),
    ):  # fmt: skip
        node.run(hall, action, case_id=case, **arguments)
    return case


def _cosign_latest(node: InProcessNode) -> int:
    """The peer's witness cosigns this node's latest checkpoint (as its response would)."""
    integrator = node.integrator()
    size = integrator.catch_up()
    view = integrator.view
    latest = view.read(view.tables.latest_checkpoint)
    assert latest is not None and latest.size == size
    text = latest.note.split(b"\n\n")[0].decode() + "\n"
    log_verifier = Verifier.from_key((node.settings.data_dir / "log.vkey").read_text().strip())
    kept = record_cosignatures(
        view, size, WITNESS.signature_line(text).encode(), [WITNESS.verifier()], log_verifier
    )
    assert kept == [WITNESS.name]
    return size


def test_the_certificate_file_carries_a_cosigned_receipt_that_verifies_offline(
    node: InProcessNode, tmp_path: Path
) -> None:
    case = _issued_case(node, "cert-rcpt-0001")
    node.integrator().catch_up()
    card, bundle = tmp_path / "card.json", tmp_path / "trust.json"
    # Signed, but no witness has cosigned yet: no file, and it says why.
    early = _tongban(node, "cert", "receipt", "--case", case, "--out", str(card))
    assert early.returncode == 1, early.stderr
    assert "not under a final checkpoint yet (cosigned by 1 witnesses)" in early.stderr
    assert not card.exists()

    size = _cosign_latest(node)
    written = _tongban(node, "cert", "receipt", "--case", case, "--out", str(card))
    assert written.returncode == 0, written.stderr
    assert f"checkpoint of size {size}, cosigned by tongban/42/witness" in written.stdout
    exported = _tongban(node, "trust", "export", "--out", str(bundle))
    assert exported.returncode == 0, exported.stderr
    logs = json.loads(bundle.read_text())["logs"]
    assert logs == [{
        "origin": "tongban/43",
        "log_keys": [(node.settings.data_dir / "log.vkey").read_text().strip()],
        "witness_keys": [WITNESS.verifier_key()],
        "witness_k": 1,
    }]  # fmt: skip

    result = _tongban(node, "cert", "verify", str(card), "--trust", str(bundle))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("valid: ")
    assert f"under its checkpoint of size {size}, cosigned by tongban/42/witness" in result.stdout

    # The file's event is the stored event, its receipt the leaf's under a cosigned checkpoint.
    document = json.loads(card.read_text())
    event = json.loads(base64.b64decode(document["event"]))
    assert event["certificate_id"] == node.app.get_case(UUID(case)).certificate_id
    assert "— tongban/42/witness " in document["receipt"]

    # Another case's receipt in this certificate's file: forged, not bound to the log.
    other = _issued_case(node, "cert-rcpt-0002")
    _cosign_latest(node)
    other_card = tmp_path / "other.json"
    assert (
        _tongban(node, "cert", "receipt", "--case", other, "--out", str(other_card)).returncode == 0
    )
    swapped = {**document, "receipt": json.loads(other_card.read_text())["receipt"],
               "event": json.loads(other_card.read_text())["event"]}  # fmt: skip
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(swapped))
    refused = _tongban(node, "cert", "verify", str(moved), "--trust", str(bundle))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stdout.startswith("forged: not bound to the log: the receipt is for leaf")

    # The receipt without its cosignature: not bound (1 witness needed, none).
    stripped = "\n".join(
        line for line in document["receipt"].split("\n") if "tongban/42/witness" not in line
    )
    bare = tmp_path / "uncosigned.json"
    bare.write_text(json.dumps({**document, "receipt": stripped}))
    refused = _tongban(node, "cert", "verify", str(bare), "--trust", str(bundle))
    assert refused.returncode == 1
    assert "not bound to the log" in refused.stdout and "0 of the 1 required" in refused.stdout

    # A damaged certificate file: forged, with the reason.
    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"format": "tongban-certificate/1", "token": 3}')
    refused = _tongban(node, "cert", "verify", str(damaged), "--trust", str(bundle))
    assert refused.returncode == 1
    assert refused.stdout.startswith("forged: the certificate file is damaged: token")

    # A bare token still verifies, and says the receipt was not checked.
    token = tmp_path / "card.jws"
    token.write_text(document["token"])
    plain = _tongban(node, "cert", "verify", str(token), "--trust", str(bundle))
    assert plain.returncode == 0 and "log receipt not checked" in plain.stdout


def test_rotating_the_issuer_key_keeps_old_certificates_verifying(
    node: InProcessNode, tmp_path: Path
) -> None:
    case = _issued_case(node, "cert-rot-00001")
    _cosign_latest(node)
    before = tmp_path / "before.json"
    assert _tongban(node, "cert", "receipt", "--case", case, "--out", str(before)).returncode == 0
    paths = NodePaths(node.settings.data_dir)
    old_key = paths.certificate_issuer_key.read_bytes()

    rotated = _tongban(node, "keys", "rotate-issuer")
    assert rotated.returncode == 0, rotated.stderr
    assert "retired at" in rotated.stdout
    assert paths.certificate_issuer_key.read_bytes() != old_key
    assert paths.certificate_issuer_key.stat().st_mode & 0o777 == 0o600
    bundle = tmp_path / "trust.json"
    assert _tongban(node, "trust", "export", "--out", str(bundle)).returncode == 0
    issuers = json.loads(bundle.read_text())["issuers"]
    assert len(issuers) == 2
    retired, current = issuers
    assert retired["not_after"] is not None and current["not_after"] is None
    # Every key, the retired one too, states how long its status lists may be current.
    ttl = node.settings.status_list_ttl_s
    assert [i["status_list_ttl_s"] for i in issuers] == [ttl, ttl]
    old_kid = json.loads(base64.urlsafe_b64decode(
        json.loads(before.read_text())["token"].split(".")[0] + "=="))["kid"]  # fmt: skip
    assert retired["kid"] == old_kid and current["kid"] != old_kid

    # The certificate the old key signed still verifies with the new bundle.
    old = _tongban(node, "cert", "verify", str(before), "--trust", str(bundle))
    assert old.returncode == 0, old.stdout + old.stderr
    # New certificates (also this case's, written again) use the new key.
    after = tmp_path / "after.json"
    assert _tongban(node, "cert", "receipt", "--case", case, "--out", str(after)).returncode == 0
    header = json.loads(base64.urlsafe_b64decode(
        json.loads(after.read_text())["token"].split(".")[0] + "=="))  # fmt: skip
    assert header["kid"] == current["kid"]
    new = _tongban(node, "cert", "verify", str(after), "--trust", str(bundle))
    assert new.returncode == 0, new.stdout + new.stderr

    # Rotating again keeps both earlier keys, each with its end.
    assert _tongban(node, "keys", "rotate-issuer").returncode == 0
    again = tmp_path / "trust2.json"
    assert _tongban(node, "trust", "export", "--out", str(again)).returncode == 0
    issuers = json.loads(again.read_text())["issuers"]
    assert [i["not_after"] is None for i in issuers] == [False, False, True]
    assert _tongban(node, "cert", "verify", str(before), "--trust", str(again)).returncode == 0

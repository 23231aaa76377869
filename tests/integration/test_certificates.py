"""Electronic certificates on a real node store: issued by a signed hall command into the log,
checked by the gate and the auditor, signed as a JWS and verified offline by ``tongban cert
verify`` with only the trust bundle ``tongban trust export`` wrote (and by joserfc)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from joserfc import jws
from joserfc.jwk import OKPKey
from tongban.v1 import common_pb2

from hub.bootstrap import NodePaths
from hub.domain.case import Case
from hub.domain.certificates import CertificateIdentifier, serial_for
from hub.domain.values import CaseState
from hub.errors import IntegrityViolation, InvalidInput, NotFound, TransitionRefused
from hub.integrity.audit import audit_store
from hub.integrity.store import ReadOnlyStore
from hub.settings import Settings
from ledger import Verifier
from tests.harness.inprocess import APPLICANT, InProcessNode

pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")

ROOT = Path(__file__).resolve().parents[2]
TOWNSHIP = "430902104000"
ISSUER = "11430902MB0000001X"
ELDER_CARD_TYPE = "150001"  # the catalogue's certificate type of 老年人优待证


def _tongban(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}
    env["TONGBAN_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.fixture
def node(tmp_path: Path) -> Iterator[InProcessNode]:
    started = InProcessNode.start(Settings(data_dir=tmp_path / "node"))
    started.add_hall("t-hall", TOWNSHIP)
    yield started
    started.close()


def _concluded(node: InProcessNode, key: str, approved: bool = True) -> str:
    hall = node.halls["t-hall"]
    case = str(node.submit(hall, key=key).case_id)
    for action, arguments in (
        ("accept", {}),
        ("start_handling", {}),
        ("decide", {"approved": approved, "reason": "符合条件" if approved else "不符合"}),
        ("conclude", {}),
    ):
        node.run(hall, action, case_id=case, **arguments)
    return case


def _issue(node: InProcessNode, case: str, **changes: str) -> None:
    arguments = {"type_code": ELDER_CARD_TYPE, "issuer_code": ISSUER,
                 "authority": "益阳市资阳区长春镇人民政府", "valid_until": "2036-03-01"}  # fmt: skip
    arguments.update(changes)
    node.run(node.halls["t-hall"], "issue_certificate", case_id=case, **arguments)


def _audit(node: InProcessNode) -> list[str]:
    verifier = Verifier.from_key((node.settings.data_dir / "log.vkey").read_text().strip())
    with ReadOnlyStore(sqlite_path=node.settings.sqlite_path) as store:
        report = audit_store(store, [verifier], origin=node.settings.origin)
    return [str(finding) for finding in report.findings]


def test_issuing_is_a_signed_step_in_the_log_that_the_auditor_accepts(
    node: InProcessNode,
) -> None:
    case = _concluded(node, "cert-ok-0001")
    _issue(node, case)
    stored = node.app.get_case(UUID(case))
    assert stored.state is CaseState.CERTIFICATE_ISSUED
    expected = CertificateIdentifier(ELDER_CARD_TYPE, ISSUER, serial_for(UUID(case)))
    assert stored.certificate_id == str(expected)
    node.integrator().catch_up()
    assert _audit(node) == []
    # Then the case goes on to delivery.
    node.run(node.halls["t-hall"], "deliver", case_id=case,
             method=common_pb2.DELIVERY_METHOD_WINDOW)  # fmt: skip


def test_refusals_store_nothing(node: InProcessNode) -> None:
    denied = _concluded(node, "cert-denied-01", approved=False)
    approved = _concluded(node, "cert-wrong-type", approved=True)
    size = node.log_size()
    with pytest.raises(TransitionRefused, match="denied"):
        _issue(node, denied)
    with pytest.raises(InvalidInput, match="type_code"):
        _issue(node, approved, type_code="150002")  # 结婚证: not this item's certificate
    assert node.log_size() == size
    # A hall that is no party to the case sees no case at all (the competent-region rule is
    # tests/unit/test_certificate_issuance.py's).
    village = node.add_hall("v-room", "430902104201")
    size = node.log_size()
    with pytest.raises(NotFound):
        node.run(village, "issue_certificate", case_id=approved, type_code=ELDER_CARD_TYPE,
                 issuer_code=ISSUER, authority="村委会", valid_until="")  # fmt: skip
    assert node.log_size() == size
    assert node.app.get_case(UUID(approved)).state is CaseState.CONCLUDED


def test_a_forged_certificate_event_is_refused_by_the_gate_and_named_by_the_auditor(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = _concluded(node, "cert-forged-01")
    node.integrator().catch_up()
    genuine = Case.certificate_facts

    def another_identifier(self: Case, type_code: str, issuer_code: str) -> tuple[str, str, str]:
        _, region, holder = genuine(self, type_code, issuer_code)
        return str(CertificateIdentifier(type_code, issuer_code, "F" * 16)), region, holder

    # A node that records another identifier than the signed command and the case give.
    with monkeypatch.context() as patched:
        patched.setattr(Case, "certificate_facts", another_identifier)
        _issue(node, case)
    with pytest.raises(IntegrityViolation, match="identifier, region or holder"):
        node.integrator().catch_up()


def test_the_cli_writes_a_certificate_that_verifies_offline(node: InProcessNode) -> None:
    case = _concluded(node, "cert-cli-0001")
    _issue(node, case)
    node.integrator().catch_up()
    data_dir = node.settings.data_dir
    token_file, bundle_file = data_dir.parent / "card.jws", data_dir.parent / "trust.json"
    issued = _tongban(data_dir, "cert", "issue", "--case", case, "--out", str(token_file))
    assert issued.returncode == 0, issued.stderr
    exported = _tongban(data_dir, "trust", "export", "--out", str(bundle_file))
    assert exported.returncode == 0, exported.stderr

    token = token_file.read_text().strip()
    # Deterministic: the same case's certificate written again is the same bytes.
    again = _tongban(data_dir, "cert", "issue", "--case", case)
    assert again.returncode == 0 and again.stdout.strip() == token
    # No personal data in clear: neither the name nor the ID number (the holder is committed).
    assert APPLICANT.id_number not in token
    result = _tongban(data_dir, "cert", "verify", str(token_file), "--trust", str(bundle_file),
                      "--json")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["verdict"] == "valid"
    claims = verdict["certificate"]
    assert claims["jti"] == node.app.get_case(UUID(case)).certificate_id
    assert claims["case"] == case and claims["rg"] == TOWNSHIP and claims["ct"] == "150001"
    assert APPLICANT.name not in result.stdout and APPLICANT.id_number not in result.stdout
    # The ledger index is that of the issuing event's leaf.
    view = node.integrator().view
    version = node.app.get_case(UUID(case)).version
    leaf = view.read(lambda c: view.tables.leaf_for(c, UUID(case), version))
    assert leaf is not None and claims["li"] == leaf.index
    assert leaf.topic.endswith("CertificateIssued")

    # joserfc, with nothing but the bundle's JWK.
    jwk = json.loads(bundle_file.read_text())["issuers"][0]["jwk"]
    verified = jws.deserialize_compact(token, OKPKey.import_key(jwk), algorithms=["EdDSA"])
    assert json.loads(verified.payload)["jti"] == claims["jti"]

    # A tampered copy: forged, exit 1, the reason, no traceback.
    header, payload, signature = token.split(".")
    tampered = data_dir.parent / "tampered.jws"
    flipped = "A" if signature[10] != "A" else "B"
    tampered.write_text(f"{header}.{payload}.{signature[:10]}{flipped}{signature[11:]}")
    refused = _tongban(data_dir, "cert", "verify", str(tampered), "--trust", str(bundle_file))
    assert refused.returncode == 1
    assert refused.stdout.startswith("forged: the signature does not verify")
    assert "Traceback" not in refused.stderr
    # Binary garbage: forged too.
    garbage = data_dir.parent / "garbage.jws"
    garbage.write_bytes(b"\xff\xfe\x00")
    refused = _tongban(data_dir, "cert", "verify", str(garbage), "--trust", str(bundle_file))
    assert refused.returncode == 1 and refused.stdout.startswith("forged:")

    # Files are never overwritten.
    again = _tongban(data_dir, "trust", "export", "--out", str(bundle_file))
    assert again.returncode == 2 and "never overwritten" in again.stderr


def test_a_case_not_yet_in_the_log_gets_no_certificate_yet(node: InProcessNode) -> None:
    case = _concluded(node, "cert-late-0001")
    _issue(node, case)
    result = _tongban(node.settings.data_dir, "cert", "issue", "--case", case)
    assert result.returncode == 1
    assert "not in the log yet" in result.stderr and "tongban ledger integrate" in result.stderr


def test_a_node_initialised_before_certificates_gets_its_issuer_key(tmp_path: Path) -> None:
    node = InProcessNode.start(Settings(data_dir=tmp_path / "old"))
    node.close()
    paths = NodePaths(node.settings.data_dir)
    paths.certificate_issuer_key.unlink()
    paths.certificate_issuer_since.unlink()
    missing = _tongban(node.settings.data_dir, "trust", "export")
    assert missing.returncode == 2 and "tongban init" in missing.stderr
    log_key = paths.log_key.read_bytes()
    assert _tongban(node.settings.data_dir, "init").returncode == 0
    assert paths.certificate_issuer_key.stat().st_mode & 0o777 == 0o600
    assert paths.log_key.read_bytes() == log_key  # nothing else changed
    assert _tongban(node.settings.data_dir, "trust", "export").returncode == 0


def test_every_secret_tongban_init_writes_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """README: the keys under secrets/ are mode 0600 (and the directory 0700)."""
    data_dir = tmp_path / "node"
    assert _tongban(data_dir, "init").returncode == 0
    secrets = NodePaths(data_dir).secrets
    written = sorted(path.name for path in secrets.iterdir())
    assert {"log.key", "admin.key", "witness.key", "encryption.key",
            "certificate-issuer.key"} <= set(written)  # fmt: skip
    for path in secrets.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path.name
    assert secrets.stat().st_mode & 0o077 == 0, "secrets/ is open to others"

"""Certificate status on a real node store: suspend, reinstate and revoke are signed hall
commands in the log, checked by the gate and the auditor; ``tongban cert status-list`` signs
the list the log gives, and ``tongban cert verify --status`` reads a certificate's entry in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from hub.domain.case import Case
from hub.domain.certificates import CertificateStatus
from hub.errors import IntegrityViolation, InvalidInput, NotFound, TransitionRefused
from hub.integrity.audit import audit_store
from hub.integrity.store import ReadOnlyStore
from hub.settings import Settings
from ledger import Verifier
from tests.harness.inprocess import InProcessNode

pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")

ROOT = Path(__file__).resolve().parents[2]
TOWNSHIP = "430902104000"
ISSUER = "11430902MB0000001X"


def _tongban(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}
    environment["TONGBAN_DATA_DIR"] = str(data_dir)
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        env=environment, cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.fixture
def node(tmp_path: Path) -> Iterator[InProcessNode]:
    started = InProcessNode.start(Settings(data_dir=tmp_path / "node"))
    started.add_hall("t-hall", TOWNSHIP)
    yield started
    started.close()


def _issued(node: InProcessNode, key: str) -> str:
    hall = node.halls["t-hall"]
    case = str(node.submit(hall, key=key).case_id)
    for action, arguments in (
        ("accept", {}),
        ("start_handling", {}),
        ("decide", {"approved": True, "reason": "符合条件"}),
        ("conclude", {}),
        ("issue_certificate", {"type_code": "150001", "issuer_code": ISSUER,
                               "authority": "益阳市资阳区长春镇人民政府", "valid_until": ""}),
    ):  # fmt: skip
        node.run(hall, action, case_id=case, **arguments)
    return case


def _status(node: InProcessNode, action: str, case: str, reason: str = "核查") -> Any:
    return node.run(node.halls["t-hall"], action, case_id=case, reason=reason)


def _audit(node: InProcessNode) -> list[str]:
    verifier = Verifier.from_key((node.settings.data_dir / "log.vkey").read_text().strip())
    with ReadOnlyStore(sqlite_path=node.settings.sqlite_path) as store:
        report = audit_store(store, [verifier], origin=node.settings.origin)
    return [str(finding) for finding in report.findings]


def test_status_changes_are_signed_steps_the_auditor_accepts_and_the_cli_reads(
    node: InProcessNode,
) -> None:
    kept, suspended, revoked = (_issued(node, f"status-{n}-0001") for n in ("kept", "susp", "rev"))
    _status(node, "suspend_certificate", suspended)
    _status(node, "suspend_certificate", revoked)
    _status(node, "reinstate_certificate", revoked, "核查完毕")
    _status(node, "revoke_certificate", revoked, "以欺骗手段取得")
    assert node.app.get_case(UUID(revoked)).certificate_status is CertificateStatus.REVOKED
    node.integrator().catch_up()
    assert _audit(node) == []

    data_dir, out = node.settings.data_dir, node.settings.data_dir.parent
    assert _tongban(data_dir, "trust", "export", "--out", str(out / "trust.json")).returncode == 0
    listed = _tongban(data_dir, "cert", "status-list", "--out", str(out / "status.jws"),
                      TONGBAN_STATUS_LIST_TTL_S="3600")  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "1 revoked, 1 suspended" in listed.stdout and "3600 s" in listed.stdout
    verdicts = {}
    for name, case in (("kept", kept), ("suspended", suspended), ("revoked", revoked)):
        card = out / f"{name}.jws"
        issued = _tongban(data_dir, "cert", "issue", "--case", case, "--out", str(card))
        assert issued.returncode == 0, issued.stderr
        result = _tongban(data_dir, "cert", "verify", str(card), "--trust", str(out / "trust.json"),
                          "--status", str(out / "status.jws"), "--json")  # fmt: skip
        verdicts[name] = (result.returncode, json.loads(result.stdout)["verdict"])
        claims = json.loads(result.stdout)["certificate"]
        assert claims["status_index"] == claims["li"]
    assert verdicts == {"kept": (0, "valid"), "suspended": (1, "suspended"),
                        "revoked": (1, "revoked")}  # fmt: skip

    # The list is the log's: written again, only its times can differ; its TTL is the setting.
    again = _tongban(data_dir, "cert", "status-list")
    first, second = (
        json.loads(_payload(text)) for text in ((out / "status.jws").read_text(), again.stdout)
    )
    assert first["valid_until"] - first["valid_from"] == 3600
    assert second["valid_until"] - second["valid_from"] == 86400  # the default
    for name in ("revocation", "suspension", "log_size", "iss"):
        assert first[name] == second[name]

    # A damaged list: status unknown, exit 1, no traceback; never valid.
    damaged = out / "damaged.jws"
    damaged.write_bytes(b"\xff\xfe garbage")
    result = _tongban(data_dir, "cert", "verify", str(out / "kept.jws"),
                      "--trust", str(out / "trust.json"), "--status", str(damaged))  # fmt: skip
    assert result.returncode == 1 and result.stdout.startswith("status unknown:")
    assert "Traceback" not in result.stderr


def _payload(token: str) -> bytes:
    import base64

    part = token.strip().split(".")[1]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_a_certificate_newer_than_the_list_is_status_unknown(node: InProcessNode) -> None:
    data_dir, out = node.settings.data_dir, node.settings.data_dir.parent
    node.integrator().catch_up()
    assert _tongban(data_dir, "cert", "status-list", "--out", str(out / "old.jws")).returncode == 0
    case = _issued(node, "status-new-0001")
    node.integrator().catch_up()
    assert _tongban(data_dir, "trust", "export", "--out", str(out / "trust.json")).returncode == 0
    assert (
        _tongban(
            data_dir, "cert", "issue", "--case", case, "--out", str(out / "new.jws")
        ).returncode
        == 0
    )
    result = _tongban(data_dir, "cert", "verify", str(out / "new.jws"),
                      "--trust", str(out / "trust.json"), "--status", str(out / "old.jws"))  # fmt: skip
    assert result.returncode == 1
    assert result.stdout.startswith("status unknown: the list predates the certificate")


def test_refusals_store_nothing(node: InProcessNode) -> None:
    case = _issued(node, "status-refuse-01")
    _status(node, "revoke_certificate", case, "撤销")
    size = node.log_size()
    with pytest.raises(TransitionRefused, match="revoked"):
        _status(node, "reinstate_certificate", case)  # revoked is final
    with pytest.raises(TransitionRefused, match="revoked"):
        _status(node, "suspend_certificate", case)
    assert node.log_size() == size
    fresh = _issued(node, "status-refuse-02")
    size = node.log_size()
    with pytest.raises(TransitionRefused, match="valid"):
        _status(node, "reinstate_certificate", fresh)  # only from suspended
    with pytest.raises(InvalidInput) as refused:
        _status(node, "suspend_certificate", fresh, " ")
    assert refused.value.field == "command.suspend_certificate.reason"
    assert node.log_size() == size
    # A hall that does not hold the case (here: no party to it) may not, and learns nothing.
    village = node.add_hall("v-room", "430902104201")
    size = node.log_size()
    with pytest.raises(NotFound):
        node.run(village, "revoke_certificate", case_id=fresh, reason="撤销")
    assert node.log_size() == size
    assert node.app.get_case(UUID(fresh)).certificate_status is CertificateStatus.VALID


def _allow_anything(self: Case, command: str, actor: Any, reason: str) -> None:
    """A node that skips its own rule (and, for the auditor's test, its gate's too)."""


def test_a_forged_reinstatement_is_refused_by_the_gate(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = _issued(node, "status-forge-01")
    _status(node, "revoke_certificate", case, "撤销")
    node.integrator().catch_up()
    with monkeypatch.context() as patched:
        patched.setattr(Case, "check_status_change", _allow_anything)
        _status(node, "reinstate_certificate", case, "恢复")  # a revoked one: not allowed
    with pytest.raises(IntegrityViolation, match="reinstate_certificate"):
        node.integrator().catch_up()


def test_a_forged_revocation_past_the_gate_is_named_by_the_auditor(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = _issued(node, "status-forge-02")
    other = node.add_hall("t-hall-2", TOWNSHIP)
    node.integrator().catch_up()
    # A node whose rule and gate both let a hall that does not hold the case revoke it (and
    # which lets that hall see the case): the auditor, with the genuine rule, names the leaf.
    with monkeypatch.context() as patched:
        patched.setattr(Case, "check_status_change", _allow_anything)
        patched.setattr(Case, "involves", lambda self, hall_id: True, raising=False)
        node.run(other, "revoke_certificate", case_id=case, reason="撤销")
        node.integrator().catch_up()
    findings = _audit(node)
    assert len(findings) == 1
    assert "invalid transition" in findings[0] and "does not hold the case" in findings[0]

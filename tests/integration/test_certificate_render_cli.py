"""`tongban cert render` and `tongban cert verify --qr` on a real node store.

A case's certificate is rendered to an A4 PDF (the holder's name and ID number masked) and a
PNG; the PDF is rasterised with pypdfium2 and `cert verify --qr` reads the picture with only the
trust bundle and the status list: valid, then revoked; an image without a code is
"unreadable", exit 1, no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pypdfium2
import pytest

from hub.settings import Settings
from tests.harness.inprocess import APPLICANT, InProcessNode

pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")

ROOT = Path(__file__).resolve().parents[2]
TOWNSHIP = "430902104000"


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


def _issued(node: InProcessNode, key: str) -> str:
    hall = node.halls["t-hall"]
    case = str(node.submit(hall, key=key).case_id)
    for action, arguments in (
        ("accept", {}),
        ("start_handling", {}),
        ("decide", {"approved": True, "reason": "符合条件"}),
        ("conclude", {}),
        ("issue_certificate", {"type_code": "150001", "issuer_code": "11430902MB0000001X",
                               "authority": "益阳市资阳区长春镇人民政府",
                               "valid_until": "2036-03-01"}),
    ):  # fmt: skip
        node.run(hall, action, case_id=case, **arguments)
    node.integrator().catch_up()
    return case


def _page_text(pdf: Path) -> str:
    document = pypdfium2.PdfDocument(pdf)
    try:
        return str(document[0].get_textpage().get_text_range())
    finally:
        document.close()


def test_render_then_verify_the_printed_qr_code(node: InProcessNode, tmp_path: Path) -> None:
    case = _issued(node, "render-cli-001")
    data_dir = node.settings.data_dir
    bundle = tmp_path / "trust.json"
    assert _tongban(data_dir, "trust", "export", "--out", str(bundle)).returncode == 0

    rendered = _tongban(data_dir, "cert", "render", "--case", case, "--out", str(tmp_path / "p"))
    assert rendered.returncode == 0, rendered.stderr
    identifier = node.app.get_case(UUID(case)).certificate_id
    pdf, png = tmp_path / "p" / f"{identifier}.pdf", tmp_path / "p" / f"{identifier}.png"
    assert pdf.is_file() and png.is_file()
    assert "QR code: version" in rendered.stdout and "level M" in rendered.stdout
    # The holder: masked name and ID number; nothing of them in clear, in the text or bytes.
    text = _page_text(pdf)
    assert "李**" in text and APPLICANT.name not in text
    assert APPLICANT.id_number not in text and APPLICANT.id_number[1:-1] not in text
    assert APPLICANT.id_number.encode() not in pdf.read_bytes()
    assert "益阳市资阳区长春镇人民政府" in text and identifier in text

    # The PDF, rasterised as a printer would (300 dpi), read back and verified offline.
    document = pypdfium2.PdfDocument(pdf)
    try:
        photo = tmp_path / "printed.png"
        document[0].render(scale=300 / 72).to_pil().save(photo)
    finally:
        document.close()
    verified = _tongban(data_dir, "cert", "verify", "--qr", str(photo), "--trust", str(bundle),
                        "--json")  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    answer = json.loads(verified.stdout)
    assert answer["verdict"] == "valid" and answer["certificate"]["case"] == case

    # The same with a status list, before and after the revocation.
    listed = tmp_path / "status-1.jws"
    assert _tongban(data_dir, "cert", "status-list", "--out", str(listed)).returncode == 0
    verified = _tongban(data_dir, "cert", "verify", "--qr", str(png), "--trust", str(bundle),
                        "--status", str(listed))  # fmt: skip
    assert verified.returncode == 0 and verified.stdout.startswith("valid: "), verified.stdout
    node.run(node.halls["t-hall"], "revoke_certificate", case_id=case, reason="证照作废")
    node.integrator().catch_up()
    listed = tmp_path / "status-2.jws"
    assert _tongban(data_dir, "cert", "status-list", "--out", str(listed)).returncode == 0
    revoked = _tongban(data_dir, "cert", "verify", "--qr", str(png), "--trust", str(bundle),
                       "--status", str(listed))  # fmt: skip
    assert revoked.returncode == 1 and revoked.stdout.startswith("revoked: "), revoked.stdout

    # Rendering again into the same directory overwrites nothing.
    again = _tongban(data_dir, "cert", "render", "--case", case, "--out", str(tmp_path / "p"))
    assert again.returncode == 2 and "never overwritten" in again.stderr


def test_render_a_certificate_file_and_bad_images(node: InProcessNode, tmp_path: Path) -> None:
    case = _issued(node, "render-cli-002")
    data_dir = node.settings.data_dir
    bundle, card = tmp_path / "trust.json", tmp_path / "card.jws"
    assert _tongban(data_dir, "trust", "export", "--out", str(bundle)).returncode == 0
    assert _tongban(data_dir, "cert", "issue", "--case", case, "--out", str(card)).returncode == 0
    rendered = _tongban(data_dir, "cert", "render", str(card), "--out", str(tmp_path / "f"))
    assert rendered.returncode == 0, rendered.stderr
    (png,) = (tmp_path / "f").glob("*.png")
    (pdf,) = (tmp_path / "f").glob("*.pdf")
    # From the file alone there is no name to show: the token carries none.
    assert "not shown" in _page_text(pdf) and "李" not in _page_text(pdf)
    verified = _tongban(data_dir, "cert", "verify", "--qr", str(png), "--trust", str(bundle))
    assert verified.returncode == 0 and verified.stdout.startswith("valid: ")
    # The certificate file `cert receipt` writes (the token with its log receipt) renders too.
    node.integrator().catch_up()
    receipt = tmp_path / "card.json"
    written = _tongban(data_dir, "cert", "receipt", "--case", case, "--out", str(receipt))
    assert written.returncode == 0, written.stderr
    from_file = _tongban(data_dir, "cert", "render", str(receipt), "--out", str(tmp_path / "r"))
    assert from_file.returncode == 0, from_file.stderr
    assert {p.suffix for p in (tmp_path / "r").iterdir()} == {".pdf", ".png"}

    # Not a picture of a code: "unreadable", exit 1, one verdict line, no traceback.
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    for image in (garbage, bundle):
        refused = _tongban(data_dir, "cert", "verify", "--qr", str(image), "--trust", str(bundle))
        assert refused.returncode == 1, refused.stderr
        assert refused.stdout.startswith("unreadable: not an image")
        assert "Traceback" not in refused.stderr
    # FILE and --qr together, or neither: a usage error.
    both = _tongban(data_dir, "cert", "verify", str(card), "--qr", str(png), "--trust", str(bundle))
    assert both.returncode == 2 and "one of them" in both.stderr
    neither = _tongban(data_dir, "cert", "verify", "--trust", str(bundle))
    assert neither.returncode == 2
    # A missing image is a clear file error.
    missing = _tongban(data_dir, "cert", "verify", "--qr", str(tmp_path / "none.png"),
                       "--trust", str(bundle))  # fmt: skip
    assert missing.returncode == 2 and "none.png" in missing.stderr
    # A file that is not a certificate is refused by render, naming it.
    refused = _tongban(data_dir, "cert", "render", str(garbage), "--out", str(tmp_path / "g"))
    assert refused.returncode == 1 and "certificate" in refused.stderr
    assert not (tmp_path / "g").exists()


def test_after_erasure_the_holder_is_no_longer_shown(node: InProcessNode, tmp_path: Path) -> None:
    case = _issued(node, "render-cli-003")
    node.app.execute(node.admin.sign("erase_personal_data", case_id=case, reason="申请人要求"))
    node.integrator().catch_up()
    rendered = _tongban(node.settings.data_dir, "cert", "render", "--case", case,
                        "--out", str(tmp_path / "e"))  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    (pdf,) = (tmp_path / "e").glob("*.pdf")
    text = _page_text(pdf)
    assert "not shown" in text and "李" not in text and "证件号码" not in text

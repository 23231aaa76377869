"""Printable certificates: the A4 PDF, its Chinese text in Noto CJK, the fields it shows (and
those it must not), the QR code's size, and the PNG preview.

The PDF is rasterised with pypdfium2 and its QR code decoded with zxing-cpp: what prints is the
certificate, verified offline like the file.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pypdfium2
import pytest
import zxingcpp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fontTools.ttLib import TTCollection, TTFont
from PIL import Image

import hub.certificates_render as render
from hub.certificates import (
    CertificateClaims,
    IssuerKey,
    TrustBundle,
    Verdict,
    sign_certificate,
    verify_certificate,
)
from hub.certificates_qr import read_certificate_qr
from hub.certificates_render import (
    NOT_SHOWN,
    QR_MODULE_MM,
    HolderDisplay,
    cjk_font_subset,
    find_cjk_font,
    mask_id_number,
    mask_name,
    measure_qr,
    render_pdf,
    render_png,
    write_rendering,
)
from hub.domain.certificates import CertificateIdentifier
from hub.domain.values import id_number_with_check
from hub.errors import ConfigurationError, InvalidInput

SINCE = datetime(2026, 1, 1, tzinfo=UTC)
ISSUED = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
NOW = datetime(2026, 3, 5, tzinfo=UTC)
KEY = IssuerKey(Ed25519PrivateKey.generate(), "tongban/43", "43", SINCE)
BUNDLE = TrustBundle((KEY.trusted(),))
NAME = "欧阳秀英"
ID_NUMBER = id_number_with_check("43090219560312002")
# The longest names of the shipped catalogue and a long authority: the largest QR code.
LONG_ITEM = "农村村民宅基地和建房（规划许可）审批"
LONG_AUTHORITY = "湖南省益阳市资阳区长春镇人民政府便民服务中心"


def _token(**changes: object) -> str:
    values: dict[str, object] = {
        "iss": "tongban/43",
        "jti": str(CertificateIdentifier("150001", "11430902MB0000001X", "0123456789ABCDEF")),
        "iat": int(ISSUED.timestamp()),
        "ct": "150001",
        "item": "200202001000",
        "name": LONG_ITEM,
        "auth": LONG_AUTHORITY,
        "rg": "430902104000",
        "hld": "ab" * 32,
        "case": "0123456789abcdef0123456789abcdef",
        "li": 1234,
        "status_index": 1234,
        # The midnight (China Standard Time) after 2036-03-01, as claims_for writes it.
        "exp": int(datetime(2036, 3, 2, tzinfo=render.CHINA).timestamp()),
    }
    values.update(changes)
    return sign_certificate(CertificateClaims(**values), KEY)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def printed() -> bytes:
    return render_pdf(_token(), HolderDisplay.masked(NAME, ID_NUMBER))


def _page_text(pdf: bytes) -> str:
    document = pypdfium2.PdfDocument(pdf)
    try:
        return str(document[0].get_textpage().get_text_range())
    finally:
        document.close()


def _rasterise(pdf: bytes, dpi: int) -> Image.Image:
    document = pypdfium2.PdfDocument(pdf)
    try:
        return document[0].render(scale=dpi / 72).to_pil().convert("L")
    finally:
        document.close()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_printed_qr_code_is_the_certificate_and_verifies_offline(printed: bytes) -> None:
    # Rasterised as a 300 dpi printer would, decoded, verified with only the trust bundle.
    reading = read_certificate_qr(_png(_rasterise(printed, 300)))
    assert reading.token == _token()
    assert verify_certificate(reading.token, BUNDLE, now=NOW).verdict is Verdict.VALID


def test_the_page_is_a4_with_its_chinese_text_in_an_embedded_noto_cjk_subset(
    printed: bytes,
) -> None:
    document = pypdfium2.PdfDocument(printed)
    try:
        assert len(document) == 1
        width, height = document[0].get_size()
    finally:
        document.close()
    assert (round(width / 72 * 25.4), round(height / 72 * 25.4)) == (210, 297)
    # The font is embedded (FontFile2: TrueType outlines), as a subset ("ABCDEF+" prefix) of
    # Noto Sans CJK SC, and small: a few dozen glyphs, not the 19 MB collection.
    assert b"/FontFile2" in printed
    assert re.search(rb"/BaseFont /[A-Z]{6}\+NotoSansCJKsc-Regular-[0-9a-f]{12}", printed)
    assert len(printed) < 80_000  # about 40 KB (docs/certificates.md)
    text = _page_text(printed)
    for shown in ("电子证照", LONG_ITEM, LONG_AUTHORITY, "湖南省益阳市资阳区", "2036年03月01日",
                  "2026年03月02日", "1.2.156.3005.2.150001.11430902MB0000001X"):  # fmt: skip
        assert shown in text, shown


def test_only_the_safe_fields_are_on_the_page(printed: bytes) -> None:
    text = _page_text(printed)
    assert "欧***" in text and NAME not in text and NAME[1:] not in text
    assert mask_id_number(ID_NUMBER) in text
    assert ID_NUMBER not in text and ID_NUMBER[1:-1] not in text
    assert ID_NUMBER not in printed.decode("latin-1") and "ab" * 32 not in text


def test_a_certificate_rendered_from_its_token_shows_no_holder() -> None:
    # The token carries no name (only the commitment hld): nothing to show, and it says so.
    text = _page_text(render_pdf(_token()))
    assert NOT_SHOWN in text and "证件号码" not in text


def test_masking() -> None:
    assert mask_name("李秀英") == "李**" and mask_name("王五") == "王*"
    assert mask_id_number("43090219560312002X") == "4****************X"
    holder = HolderDisplay.masked("张三丰", ID_NUMBER)
    assert (
        holder.name == "张**" and len(holder.id_number) == 18 and holder.id_number.count("*") == 16
    )


def test_the_qr_code_prints_at_the_stated_module_size(printed: bytes) -> None:
    measure = measure_qr(_token())
    # The longest certificate: version 23 at level M (what docs/certificates.md states).
    assert (measure.version, measure.error) == (23, "M")
    assert measure.modules == 17 + 4 * measure.version
    assert measure.width_mm == pytest.approx((measure.modules + 8) * QR_MODULE_MM, abs=0.1)
    # Measured on the printed page: the code's corners, found by zxing in a 600 dpi raster.
    dpi = 600
    found = zxingcpp.read_barcodes(_rasterise(printed, dpi))
    assert len(found) == 1
    position = found[0].position
    side_px = abs(position.top_right.x - position.top_left.x)
    module_mm = side_px / measure.modules / dpi * 25.4
    assert module_mm == pytest.approx(QR_MODULE_MM, rel=0.03)


def test_a_short_certificate_makes_a_smaller_code() -> None:
    short = measure_qr(_token(name="结婚登记", auth="资阳区民政局"))
    assert short.version < measure_qr(_token()).version


def test_the_preview_is_the_pdf_and_its_qr_code_reads_as_on_a_screen(printed: bytes) -> None:
    png = render_png(printed)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    # A4 at 150 dpi.
    assert image.size[0] == pytest.approx(210 / 25.4 * 150, abs=1)
    assert image.size[1] == pytest.approx(297 / 25.4 * 150, abs=1)
    # 0.6 mm modules at 150 dpi are 3.5 pixels: about what a phone screen shows.
    assert read_certificate_qr(png).token == _token()


def test_write_rendering_names_files_by_identifier_and_never_overwrites(tmp_path: Path) -> None:
    token = _token()
    written = write_rendering(token, tmp_path / "out")
    identifier = str(CertificateIdentifier("150001", "11430902MB0000001X", "0123456789ABCDEF"))
    assert written.pdf == tmp_path / "out" / f"{identifier}.pdf"
    assert written.pdf.read_bytes().startswith(b"%PDF-")
    assert written.png.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(FileExistsError):
        write_rendering(token, tmp_path / "out")


def test_a_token_that_is_not_a_certificate_is_refused_naming_it() -> None:
    with pytest.raises(InvalidInput, match="certificate"):
        render_pdf("not-a-token")
    with pytest.raises(InvalidInput, match="certificate"):
        render_pdf("a.%%%.c")
    header, _, signature = _token().split(".")
    with pytest.raises(InvalidInput, match="iss"):
        render_pdf(f"{header}.e30.{signature}")  # {}: no claims


def test_a_missing_font_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    monkeypatch.setattr(render, "KNOWN_FONT_PATHS", (tmp_path / "NotoSansCJK-Regular.ttc",))
    with pytest.raises(ConfigurationError, match="fonts-noto-cjk"):
        find_cjk_font()
    with pytest.raises(ConfigurationError, match="fonts-noto-cjk"):
        # (Text no page before had: a subset made earlier is kept for the process.)
        render_pdf(_token(name="缺字体的测试事项"))


def test_the_font_is_found_by_fontconfig() -> None:
    assert find_cjk_font().name.startswith("NotoSansCJK")


def test_rendering_is_stable_for_the_same_certificate(printed: bytes) -> None:
    # reportlab in invariant mode and a font subset without a fresh timestamp: the same
    # certificate gives the same bytes (reproducible prints, comparable in audits), in this
    # process and in another one, later.
    again = render_pdf(_token(), HolderDisplay.masked(NAME, ID_NUMBER))
    assert again == printed
    path = find_cjk_font()
    subset = TTFont(io.BytesIO(cjk_font_subset(path, "电子证照 test")))
    original = TTCollection(str(path), lazy=True).fonts[render._face_number(path)]
    assert subset["head"].modified == original["head"].modified  # not "now"


def test_no_expiry_is_shown_as_such() -> None:
    text = _page_text(render_pdf(_token(exp=None)))
    assert "长期有效" in text
    assert (ISSUED + timedelta(days=1)).year == 2026


def test_the_command_wants_a_case_or_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    from hub.cli import main

    assert main(["cert", "render", "--out", "x"]) == 2
    assert "one of the arguments --case FILE is required" in capsys.readouterr().err
    assert main(["cert", "render", "card.jws", "--case", "c", "--out", "x"]) == 2
    assert "not allowed with" in capsys.readouterr().err

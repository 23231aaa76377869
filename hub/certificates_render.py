"""Printable certificates: an A4 PDF with the certificate's QR code, and a PNG preview.

The page shows only what is safe to show (docs/certificates.md, "Rendering"): the holder's name
masked to the surname (张**) and the ID number masked to its first and last characters, the
service item, the issuing authority and its region, the validity, the identifier and the case,
and the QR code of the signed token, which is the certificate itself: whoever scans it verifies
it offline (``tongban cert verify --qr``). A certificate rendered from its token alone shows no
name at all, because the token carries none (only the salted commitment ``hld``).

Libraries: reportlab writes the PDF, segno makes the QR code (drawn as vector squares, so it
prints sharp at any resolution), pypdfium2 rasterises the PDF for the preview (the PNG is the
PDF, pixel for pixel, not a second drawing).

The font is Noto Sans CJK SC from Debian's ``fonts-noto-cjk``. reportlab only embeds TrueType
outlines and Noto CJK ships CFF (PostScript) outlines, so :func:`cjk_font_subset` cuts the font
down to the characters on the page with fontTools' subsetter and converts those few glyphs'
cubic curves to TrueType's quadratic ones (fontTools' cu2qu, within 1/1000 em); reportlab then
embeds that subset. Written here because fontTools ships the pieces but not the conversion as
one call; it is the recipe of fontTools' own ``otf2ttf`` snippet.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import segno

from hub.certificates import CHINA, CertificateClaims
from hub.domain.regions import RegionRegistry
from hub.errors import ConfigurationError, InvalidInput

#: Where Debian's fonts-noto-cjk puts the font, when fontconfig cannot be asked.
KNOWN_FONT_PATHS = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc"),
)
#: The face of the collection with simplified Chinese glyph forms.
FONT_FAMILY = "Noto Sans CJK SC"

#: One QR module printed this wide. A phone camera reads 0.6 mm modules from 10-25 cm, and the
#: longest certificate (QR version 23, 109 modules plus a 4-module quiet zone each side) is
#: then 70 mm wide on the page.
QR_MODULE_MM = 0.6
#: Error correction level M (15 % of the code may be lost), exactly: not boosted, so the
#: version (size) only depends on the token's length.
QR_ERROR = "m"
#: Quiet zone around the code, in modules (ISO/IEC 18004 asks for 4).
QR_QUIET_MODULES = 4

#: Resolution of the PNG preview (dots per inch): 150 dpi shows 0.6 mm modules 3.5 pixels wide.
PREVIEW_DPI = 150

_MM = 72 / 25.4  # PDF points per millimetre
_A4 = (210 * _MM, 297 * _MM)


# ---------------------------------------------------------------------------- what is shown


def mask_name(name: str) -> str:
    """The surname (first character) and one ``*`` per other character: 张三丰 → 张**."""
    name = name.strip()
    return name[:1] + "*" * (len(name) - 1)


def mask_id_number(id_number: str) -> str:
    """The first and last characters of an 18-character ID number: 4****************X."""
    return id_number[:1] + "*" * (len(id_number) - 2) + id_number[-1:]


@dataclass(frozen=True)
class HolderDisplay:
    """The holder as the page shows them: masked, never in clear."""

    name: str
    id_number: str

    @classmethod
    def masked(cls, name: str, id_number: str) -> HolderDisplay:
        """Mask a clear name and ID number for the page."""
        return cls(mask_name(name), mask_id_number(id_number))


def read_claims(token: str) -> CertificateClaims:
    """The claims of a certificate token, read without verifying the signature (rendering a
    file: ``tongban cert verify`` is what checks it). InvalidInput names what is wrong."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise InvalidInput("certificate", f"{len(parts)} parts", "not a JWS compact token")
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        body = json.loads(payload)
    except ValueError as error:  # binascii.Error, JSONDecodeError, UnicodeDecodeError
        raise InvalidInput("certificate", "payload", f"unreadable: {error}") from None
    return CertificateClaims.from_payload(body)


def _day(timestamp: int) -> str:
    """A date as the halls write it (China Standard Time)."""
    return datetime.fromtimestamp(timestamp, UTC).astimezone(CHINA).strftime("%Y年%m月%d日")


def _region_name(code: str) -> str:
    try:
        registry = RegionRegistry.load_default()
        return registry.full_name(registry.validate(code))
    except InvalidInput:
        return ""  # a region the shipped table does not know: the code alone is shown


#: The holder row of a certificate rendered from its token alone (which carries no name).
NOT_SHOWN = "（不显示，请核对证件 / not shown: check the holder's ID card）"


def card_rows(claims: CertificateClaims, holder: HolderDisplay | None) -> list[tuple[str, str]]:
    """The labelled rows of the page, in order: only the fields safe to show."""
    if holder is None:
        holder_rows = [("持证人 Holder", NOT_SHOWN)]
    else:
        holder_rows = [("持证人 Holder", holder.name), ("证件号码 ID number", holder.id_number)]
    # exp is the midnight after the last day: the last day is the second before it.
    valid_until = "长期有效 (no expiry)" if claims.exp is None else _day(claims.exp - 1)
    region = _region_name(claims.rg)
    return [
        *holder_rows,
        ("事项 Service item", f"{claims.name}（{claims.item}）"),
        ("发证机关 Issued by", claims.auth),
        ("行政区划 Region", f"{region}（{claims.rg}）" if region else claims.rg),
        ("发证日期 Issued on", _day(claims.iat)),
        ("有效期至 Valid until", valid_until),
        ("证照标识 Identifier", claims.jti),
        ("办件编号 Case", claims.case),
        ("签发日志 Log", f"{claims.iss} #{claims.li}"),
    ]


# ---------------------------------------------------------------------------- the QR code


@dataclass(frozen=True)
class QrMeasure:
    """How big a token's QR code is."""

    version: int  # 1..40
    error: str  # error correction level
    modules: int  # modules per side, without the quiet zone
    width_mm: float  # printed width with the quiet zone


def qr_code(token: str) -> segno.QRCode:
    """The token's QR code: byte mode, level M exactly."""
    return segno.make_qr(token.strip(), error=QR_ERROR, boost_error=False)


def measure_qr(token: str) -> QrMeasure:
    """The version, level and printed width of the token's QR code."""
    code = qr_code(token)
    modules = int(code.symbol_size(scale=1, border=0)[0])
    width = (modules + 2 * QR_QUIET_MODULES) * QR_MODULE_MM
    return QrMeasure(int(code.version), str(code.error), modules, round(width, 1))


# ---------------------------------------------------------------------------- the font


def find_cjk_font() -> Path:
    """The Noto Sans CJK font file: as fontconfig names it, else Debian's known paths.

    ConfigurationError, saying what to install, when it is not there.
    """
    fc_match = shutil.which("fc-match")
    if fc_match:
        found = subprocess.run(  # a fixed program and arguments
            [fc_match, "-f", "%{file}", f"{FONT_FAMILY}:style=Regular"],
            capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        path = Path(found.stdout.strip())
        # fontconfig always answers with *some* font; only a Noto CJK one will do.
        if found.returncode == 0 and "NotoSansCJK" in path.name and path.is_file():
            return path
    for path in KNOWN_FONT_PATHS:
        if path.is_file():
            return path
    raise ConfigurationError(
        f"the {FONT_FAMILY} font is not installed (fontconfig does not know it and it is not "
        f"in {', '.join(str(p) for p in KNOWN_FONT_PATHS)}): install the Debian package "
        "fonts-noto-cjk (apt-get install fonts-noto-cjk)"
    )


def _face_number(path: Path) -> int:
    """The index of the simplified-Chinese face in a font collection (0 for a single font)."""
    from fontTools.ttLib import TTCollection

    if path.suffix.lower() not in {".ttc", ".otc"}:
        return 0
    collection = TTCollection(str(path), lazy=True)
    for number, face in enumerate(collection.fonts):
        if face["name"].getDebugName(1) == FONT_FAMILY:
            return number
    raise ConfigurationError(f"{path}: no {FONT_FAMILY} face in the collection")


def cjk_font_subset(path: Path, text: str) -> bytes:
    """A TrueType font with just the glyphs of ``text``, from the CFF-outlined Noto CJK font.

    The subset is made first (a few dozen glyphs of 65,000), so converting its outlines takes
    milliseconds; reportlab then embeds it (and subsets it again, per page).
    """
    from fontTools import subset
    from fontTools.pens.cu2quPen import Cu2QuPen
    from fontTools.pens.ttGlyphPen import TTGlyphPen
    from fontTools.ttLib import TTFont, newTable

    # recalcTimestamp off: the subset keeps the font's own dates, so the same page gives the
    # same PDF bytes whenever it is rendered.
    font = TTFont(str(path), fontNumber=_face_number(path), lazy=True, recalcTimestamp=False)
    options = subset.Options()
    options.desubroutinize = True
    options.hinting = False
    options.layout_features = []
    options.name_IDs = ["*"]
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=text)
    subsetter.subset(font)
    # reportlab takes two fonts of the same PostScript name for one (the first registered): a
    # subset is its own font, so its name says which characters it has.
    names = font["name"]
    postscript = f"{names.getDebugName(6)}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    names.setName(postscript, 6, 3, 1, 0x409)
    names.removeNames(nameID=6, platformID=1)
    if "CFF " not in font:  # already TrueType outlines: nothing to convert
        buffer = io.BytesIO()
        font.save(buffer)
        return buffer.getvalue()
    order = font.getGlyphOrder()
    glyph_set = font.getGlyphSet()
    glyphs = {}
    for name in order:
        pen = TTGlyphPen(glyph_set)
        # Cubic to quadratic within 1 unit of 1000 per em; PostScript contours run the other
        # way round from TrueType's.
        glyph_set[name].draw(Cu2QuPen(pen, 1.0, reverse_direction=True))
        glyphs[name] = pen.glyph()
    font["loca"] = newTable("loca")
    glyf = font["glyf"] = newTable("glyf")
    glyf.glyphOrder = order
    glyf.glyphs = glyphs
    del font["CFF "]
    if "VORG" in font:  # vertical origins belong to CFF fonts
        del font["VORG"]
    glyf.compile(font)
    maxp = font["maxp"] = newTable("maxp")
    maxp.tableVersion = 0x00010000
    unused = ("maxTwilightPoints", "maxStorage", "maxFunctionDefs", "maxInstructionDefs",
              "maxStackElements", "maxSizeOfInstructions", "maxComponentElements")  # fmt: skip
    for member in unused:  # no hinting instructions, no composite glyphs
        setattr(maxp, member, 0)
    maxp.maxZones = 1
    post = font["post"]
    post.formatType = 2.0
    post.extraNames = []
    post.mapping = {}
    post.glyphOrder = order
    font["head"].glyphDataFormat = 0
    font.sfntVersion = "\x00\x01\x00\x00"
    buffer = io.BytesIO()
    font.save(buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------------------- the page


TITLE = "电子证照"
SUBTITLE = "Electronic certificate"
SCAN_NOTE = "扫码离线核验 · Scan to verify offline: tongban cert verify --qr"


def render_pdf(
    token: str, holder: HolderDisplay | None = None, *, font: Path | None = None
) -> bytes:
    """The certificate as a one-page A4 PDF: the rows of :func:`card_rows` and the QR code.

    ``token`` is the signed certificate; its claims are what the page shows.
    """
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen import canvas

    token = token.strip()
    claims = read_claims(token)
    rows = card_rows(claims, holder)
    text = TITLE + SUBTITLE + SCAN_NOTE + "".join(label + value for label, value in rows)
    # reportlab keeps registered fonts for the process, by name: each subset gets its own
    # (from its characters), so a page never draws with another page's glyphs.
    font_name = "NotoSansCJKSC-" + hashlib.sha256(text.encode()).hexdigest()[:12]
    if font_name not in pdfmetrics.getRegisteredFontNames():
        subset_font = cjk_font_subset(font or find_cjk_font(), text)
        pdfmetrics.registerFont(TTFont(font_name, io.BytesIO(subset_font)))
    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=_A4, pageCompression=1, invariant=1)
    page.setTitle(f"{TITLE} {claims.jti}")
    page.setSubject(claims.name)
    page.setCreator("tongban cert render")
    width, height = _A4
    left = 22 * _MM
    page.setLineWidth(0.8)
    page.rect(12 * _MM, 12 * _MM, width - 24 * _MM, height - 24 * _MM)
    page.setFont(font_name, 26)
    page.drawCentredString(width / 2, height - 40 * _MM, TITLE)
    page.setFont(font_name, 12)
    page.drawCentredString(width / 2, height - 48 * _MM, SUBTITLE)
    page.setFont(font_name, 16)
    page.drawCentredString(width / 2, height - 60 * _MM, claims.name)
    y = height - 78 * _MM
    for label, value in rows:
        page.setFont(font_name, 10)
        page.drawString(left, y, label)
        size = 11 if pdfmetrics.stringWidth(value, font_name, 11) < 120 * _MM else 8.5
        page.setFont(font_name, size)
        page.drawString(left + 48 * _MM, y, value)
        y -= 9 * _MM
    _draw_qr(page, token, width / 2, 26 * _MM)
    page.setFont(font_name, 9)
    page.drawCentredString(width / 2, 20 * _MM, SCAN_NOTE)
    page.showPage()
    page.save()
    return buffer.getvalue()


def _draw_qr(page: Any, token: str, centre_x: float, bottom: float) -> None:
    """The QR code as filled squares (one rectangle per horizontal run of dark modules)."""
    matrix = qr_code(token).matrix
    module = QR_MODULE_MM * _MM
    side = (len(matrix) + 2 * QR_QUIET_MODULES) * module
    origin_x = centre_x - side / 2 + QR_QUIET_MODULES * module
    top = bottom + side - QR_QUIET_MODULES * module
    page.setFillColorRGB(0, 0, 0)
    for row_number, row in enumerate(matrix):
        y = top - (row_number + 1) * module
        column = 0
        while column < len(row):
            if not row[column]:
                column += 1
                continue
            start = column
            while column < len(row) and row[column]:
                column += 1
            page.rect(origin_x + start * module, y, (column - start) * module, module,
                      stroke=0, fill=1)  # fmt: skip


def render_png(pdf: bytes, dpi: int = PREVIEW_DPI) -> bytes:
    """The PDF's first page as a PNG (rasterised by PDFium, so it is what the PDF shows)."""
    import pypdfium2

    document = pypdfium2.PdfDocument(pdf)
    try:
        image = document[0].render(scale=dpi / 72).to_pil()
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", dpi=(dpi, dpi))
        return buffer.getvalue()
    finally:
        document.close()


@dataclass(frozen=True)
class RenderedCertificate:
    """The files :func:`write_rendering` wrote."""

    pdf: Path
    png: Path
    qr: QrMeasure


def write_rendering(
    token: str, directory: Path, holder: HolderDisplay | None = None, *, font: Path | None = None
) -> RenderedCertificate:
    """Write ``<identifier>.pdf`` and ``<identifier>.png`` into ``directory`` (made if missing);
    an existing file is never overwritten (FileExistsError)."""
    claims = read_claims(token)
    pdf = render_pdf(token, holder, font=font)
    png = render_png(pdf)
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / f"{claims.jti}.pdf", directory / f"{claims.jti}.png"
    for path in paths:
        if path.exists():
            raise FileExistsError(errno.EEXIST, "file exists", str(path))
    for path, content in zip(paths, (pdf, png), strict=True):
        with path.open("xb") as handle:
            handle.write(content)
    return RenderedCertificate(paths[0], paths[1], measure_qr(token))


__all__ = [
    "QR_ERROR",
    "QR_MODULE_MM",
    "HolderDisplay",
    "QrMeasure",
    "RenderedCertificate",
    "card_rows",
    "cjk_font_subset",
    "find_cjk_font",
    "mask_id_number",
    "mask_name",
    "measure_qr",
    "qr_code",
    "read_claims",
    "render_pdf",
    "render_png",
    "write_rendering",
]

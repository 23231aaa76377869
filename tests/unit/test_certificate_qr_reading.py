"""Reading a certificate from a QR code in an image: the attacks and the bad images first.

No QR code, several, half a code, a damaged one or an image that is not one are "unreadable";
a code of a tampered or truncated token decodes fine and is then "forged" like the file would
be. Nothing raises and nothing is "valid" but a genuine certificate — which still reads from a
photo of the printed page (scaled, slightly rotated, noisy, blurred, JPEG).
"""

from __future__ import annotations

import io
import random
import re
from datetime import UTC, datetime

import pytest
import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image, ImageDraw, ImageFilter

from hub.certificates import (
    CertificateClaims,
    IssuerKey,
    StatusList,
    TrustBundle,
    Verdict,
    Verification,
    sign_certificate,
    sign_status_list,
    verify_certificate,
)
from hub.certificates_offline import OfflineVerifier
from hub.certificates_qr import read_certificate_qr
from hub.certificates_render import render_pdf, render_png
from hub.domain.certificates import CertificateIdentifier

SINCE = datetime(2026, 1, 1, tzinfo=UTC)
ISSUED = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
NOW = datetime(2026, 3, 5, tzinfo=UTC)
KEY = IssuerKey(Ed25519PrivateKey.generate(), "tongban/43", "43", SINCE)
BUNDLE = TrustBundle((KEY.trusted(),))
ENTRY = 1234


def _claims(**changes: object) -> CertificateClaims:
    values: dict[str, object] = {
        "iss": "tongban/43",
        "jti": str(CertificateIdentifier("150001", "11430902MB0000001X", "0123456789ABCDEF")),
        "iat": int(ISSUED.timestamp()),
        "ct": "150001",
        "item": "200202001000",
        "name": "老年人优待证办理",
        "auth": "益阳市资阳区民政局",
        "rg": "430902104000",
        "hld": "ab" * 32,
        "case": "0123456789abcdef0123456789abcdef",
        "li": ENTRY,
        "status_index": ENTRY,
    }
    values.update(changes)
    return CertificateClaims(**values)  # type: ignore[arg-type]


TOKEN = sign_certificate(_claims(), KEY)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _qr_image(content: str | bytes, scale: int = 4) -> Image.Image:
    buffer = io.BytesIO()
    segno.make_qr(content, error="m").save(buffer, kind="png", scale=scale, border=4)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("L")


def _verify_image(image: bytes) -> Verification:
    """What `tongban cert verify --qr` concludes (hub/cli.py does exactly this)."""
    reading = read_certificate_qr(image)
    if reading.token is None:
        return reading.unreadable()
    return verify_certificate(reading.token, BUNDLE, now=NOW)


@pytest.fixture(scope="module")
def printed_page() -> Image.Image:
    # The preview of the printed certificate, at 200 dpi: the "paper" the photos are taken of.
    pdf = render_pdf(TOKEN)
    return Image.open(io.BytesIO(render_png(pdf, dpi=200))).convert("L")


def test_a_genuine_code_is_valid() -> None:
    result = _verify_image(_png(_qr_image(TOKEN)))
    assert result.verdict is Verdict.VALID, result
    assert result.claims == _claims()


def test_a_photo_of_the_printed_page_still_reads(printed_page: Image.Image) -> None:
    # A phone photo: a smaller picture, the page turned 3 degrees, sensor noise, a little
    # blur, JPEG at quality 70.
    photo = printed_page.resize((printed_page.width * 7 // 10, printed_page.height * 7 // 10))
    photo = photo.rotate(3, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=235)
    noise = random.Random(36)
    pixels = photo.load()
    assert pixels is not None
    for _ in range(photo.width * photo.height // 12):
        x, y = noise.randrange(photo.width), noise.randrange(photo.height)
        value = pixels[x, y]
        assert isinstance(value, int)
        pixels[x, y] = max(0, min(255, value + noise.randint(-60, 60)))
    photo = photo.filter(ImageFilter.GaussianBlur(0.8))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=70)
    result = _verify_image(buffer.getvalue())
    assert result.verdict is Verdict.VALID, result


def test_a_tampered_token_in_a_good_code_is_forged() -> None:
    header, _, signature = TOKEN.split(".")
    # The payload says another case, the signature is the genuine one.
    other = sign_certificate(_claims(case="f" * 32), KEY).split(".")[1]
    result = _verify_image(_png(_qr_image(f"{header}.{other}.{signature}")))
    assert result.verdict is Verdict.FORGED
    assert "signature does not verify" in result.reason


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.2])
def test_a_truncated_token_in_a_good_code_is_forged(keep: float) -> None:
    result = _verify_image(_png(_qr_image(TOKEN[: int(len(TOKEN) * keep)])))
    assert result.verdict is Verdict.FORGED, result
    assert result.reason


@pytest.mark.parametrize("half", ["top", "left", "bottom"])
def test_a_code_cut_in_half_is_unreadable(half: str) -> None:
    image = _qr_image(TOKEN)
    width, height = image.size
    box = {"top": (0, 0, width, height // 2), "left": (0, 0, width // 2, height),
           "bottom": (0, height // 2, width, height)}[half]  # fmt: skip
    result = _verify_image(_png(image.crop(box)))
    assert result.verdict is Verdict.UNREADABLE, result
    assert result.claims is None


def test_a_code_scribbled_over_beyond_repair_is_unreadable() -> None:
    # The finder patterns stay, so it is found; a band through the data is more than level M
    # (15 %) repairs.
    image = _qr_image(TOKEN).convert("RGB")
    draw = ImageDraw.Draw(image)
    width, height = image.size
    draw.rectangle((width * 0.25, height * 0.35, width * 0.75, height * 0.65), fill="black")
    result = _verify_image(_png(image))
    assert result.verdict is Verdict.UNREADABLE, result
    # zxing-cpp names what broke: the data (ChecksumError) or, when the band covers it, the
    # format information (FormatError); which, depends on the token's (random key's) modules.
    assert re.fullmatch(
        r"a QR code is there but cannot be decoded \((ChecksumError|FormatError.*)\)", result.reason
    ), result.reason


def test_an_image_without_a_code_is_unreadable() -> None:
    blank = Image.new("L", (600, 400), color=255)
    ImageDraw.Draw(blank).text((20, 20), "no code here", fill=0)
    result = _verify_image(_png(blank))
    assert result.verdict is Verdict.UNREADABLE
    assert result.reason == "no QR code found in the image"


def test_two_codes_are_unreadable_even_if_one_is_genuine() -> None:
    genuine, other = _qr_image(TOKEN), _qr_image("https://example.org/pay-here")
    both = Image.new("L", (genuine.width + other.width + 40, max(genuine.height, other.height)),
                     color=255)  # fmt: skip
    both.paste(genuine, (0, 0))
    both.paste(other, (genuine.width + 40, 0))
    result = _verify_image(_png(both))
    assert result.verdict is Verdict.UNREADABLE
    assert "2 QR codes" in result.reason


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        b"GIF89a",
        b"\xff\xd8\xff\xe0 cut jpeg",
        b"%PDF-1.4",
    ],
)
def test_files_that_are_not_images_are_unreadable(data: bytes) -> None:
    result = _verify_image(data)
    assert result.verdict is Verdict.UNREADABLE
    assert result.reason.startswith("not an image")


def test_a_code_that_is_not_a_token_is_forged() -> None:
    for content in ("https://example.org/", "a.b.c", "é" * 20, b"\x00\xff\xfe binary"):
        result = _verify_image(_png(_qr_image(content)))
        assert result.verdict is Verdict.FORGED, (content, result)


def test_a_code_of_another_issuer_is_unknown_issuer() -> None:
    stranger = IssuerKey(Ed25519PrivateKey.generate(), "tongban/43", "43", SINCE)
    result = _verify_image(_png(_qr_image(sign_certificate(_claims(), stranger))))
    assert result.verdict is Verdict.UNKNOWN_ISSUER


def test_the_status_list_is_read_as_for_a_file() -> None:
    revoked = StatusList("tongban/43", 5000, revoked=frozenset({ENTRY}))
    listed = sign_status_list(revoked, KEY, now=NOW, ttl_s=86400)
    reading = read_certificate_qr(_png(_qr_image(TOKEN)))
    assert reading.token == TOKEN
    result = OfflineVerifier(BUNDLE, listed).verify(reading.token, now=NOW)
    assert result.verdict is Verdict.REVOKED

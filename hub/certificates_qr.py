"""Reading a certificate's QR code from an image (a photo, a scan, a screenshot, a PDF page).

zxing-cpp (a maintained C++ barcode library with a self-contained Python wheel) finds and
decodes the QR code; Pillow opens the image. :func:`read_certificate_qr` never raises for
anything in the image: no QR code, several, or one that cannot be decoded is an
:class:`QrReading` without a token and with the reason, which ``tongban cert verify --qr``
prints as the verdict ``unreadable``. A QR code that decodes is only text: the token in it is
then verified exactly as a certificate file is (a truncated or tampered token is ``forged``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import zxingcpp
from PIL import Image, UnidentifiedImageError

from hub.certificates import Verdict, Verification


@dataclass(frozen=True)
class QrReading:
    """What the image gave: the token in its one QR code, or why there is none."""

    token: str | None
    problem: str = ""

    def unreadable(self) -> Verification:
        """The verdict for an image without a readable certificate QR code."""
        return Verification(Verdict.UNREADABLE, self.problem)


def read_certificate_qr(image: bytes) -> QrReading:
    """The text of the single QR code in ``image`` (PNG, JPEG, … bytes); never raises."""
    try:
        with Image.open(io.BytesIO(image)) as opened:
            opened.load()
            grey = opened.convert("L")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        return QrReading(None, f"not an image that can be read: {error}")
    # QR codes only (another symbology is not a certificate), damaged ones too: they are
    # reported as such instead of as "no QR code".
    only_qr = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
    codes = zxingcpp.read_barcodes(grey, formats=only_qr, return_errors=True)
    decoded = [code for code in codes if code.valid]
    if len(decoded) > 1:
        # Which one is the certificate? Refuse to guess: a second code could be anyone's.
        return QrReading(None, f"{len(decoded)} QR codes in the image: show only the certificate's")
    if not decoded:
        if codes:  # found (finder patterns), but not decodable: cut, smudged, torn
            why = str(codes[0].error).split(" @ ")[0]  # "ChecksumError @ QRDecoder.cpp:337"
            return QrReading(None, f"a QR code is there but cannot be decoded ({why})")
        return QrReading(None, "no QR code found in the image")
    # One code decoded. zxing may also report damaged candidates beside it (a smudge that
    # looks like a finder pattern); only a decoded code can carry a certificate.
    code = decoded[0]
    try:
        text = code.bytes.decode("ascii")
    except UnicodeDecodeError:
        # Decoded, but not a token (tokens are base64url and dots): verified, it is forged.
        return QrReading(code.bytes.decode("latin-1"))
    return QrReading(text)


__all__ = ["QrReading", "read_certificate_qr"]

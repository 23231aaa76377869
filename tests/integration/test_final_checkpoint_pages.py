"""The final checkpoint is found from the latest cosigned one backwards, a page at a time: the
cosignatures table holds every checkpoint ever cosigned, and a long-running node must not read
all of it to find the latest final one (nor stop after the first page)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.integrity.witnessed import final_checkpoint, record_cosignatures
from hub.settings import Settings
from ledger import Cosigner, Verifier, WitnessPolicy, cosign
from ledger.witness_storage import CANDIDATE_PAGE, StoredCosignature
from tests.harness.inprocess import InProcessNode


@pytest.fixture
def node(store_url: str | None, tmp_path: Path) -> Iterator[InProcessNode]:
    running = InProcessNode.start(
        Settings(data_dir=tmp_path / "hunan", node_region="43", database_url=store_url)
    )
    yield running
    running.close()


def _grow_and_sign(node: InProcessNode, number: int) -> int:
    """One more hall, integrated and covered by a new checkpoint; its size."""
    node.add_hall(f"hn-hall-{number}", "430902104000")
    integrator = node.integrator()
    integrator.catch_up()
    size: int = integrator.view.read(integrator.view.tables.latest_checkpoint).size
    return size


def test_the_latest_final_checkpoint_is_found_beyond_a_page_of_later_candidates(
    node: InProcessNode,
) -> None:
    integrator = node.integrator()
    view = integrator.view
    log_key = Verifier.from_key(integrator.signer.verifier_key())
    witnesses = [Cosigner.generate("tongban/42/witness"), Cosigner.generate("tongban/61/witness")]
    policy = WitnessPolicy(2, [w.verifier() for w in witnesses])

    # An early checkpoint cosigned by both policy witnesses: final.
    final_size = _grow_and_sign(node, 0)
    note = view.read(integrator.view.tables.latest_checkpoint).note
    for witness in witnesses:
        line = cosign(note, witness).split(b"\n\n", 1)[1].splitlines()[-1] + b"\n"
        record_cosignatures(view, final_size, line, [witness.verifier()], log_key)
    found = final_checkpoint(view, 0, policy, log_key)
    assert found is not None and found.size == final_size

    # More than a page of later checkpoints whose stored cosignature rows name two witnesses
    # but do not verify (rows written straight into the database): each is a candidate, none
    # is final, and the search goes on past them to the early one.
    for number in range(1, CANDIDATE_PAGE + 3):
        size = _grow_and_sign(node, number)
        root = view.read(integrator.view.tables.latest_checkpoint).root
        for name in ("tongban/42/witness", "tongban/61/witness"):
            forged = StoredCosignature(
                size, root, name, 1, f"— {name} bm90IGEgY29zaWduYXR1cmU=", 1, time.time()
            )
            view.write(
                lambda cursor, row=forged: view.tables.witness.record_cosignature(cursor, row)
            )
    later = view.read(lambda cursor: view.tables.witness.candidate_sizes(cursor, 1, 2))
    assert len(later) == CANDIDATE_PAGE and final_size not in later  # a page, latest first
    assert later == sorted(later, reverse=True)
    found = final_checkpoint(view, 0, policy, log_key)
    assert found is not None and found.size == final_size
    # A leaf after the final checkpoint has none yet.
    assert final_checkpoint(view, final_size, policy, log_key) is None

"""The relay's outbox on each store: what marking a round of rows sent does to each kind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from hub.relay.store import ACK, ENVELOPE, OutboxRow, RelayStore, open_relay_store
from hub.settings import Settings
from tests.harness.inprocess import InProcessNode


@pytest.fixture
def store(store_url: str | None, tmp_path: Path) -> Iterator[RelayStore]:
    node = InProcessNode.start(Settings(data_dir=tmp_path / "node", database_url=store_url))
    try:
        yield open_relay_store(node.app.recorder.datastore)  # type: ignore[attr-defined]
    finally:
        node.close()


def _row(kind: str) -> OutboxRow:
    return OutboxRow(kind, uuid4(), "61", uuid4(), uuid4())


def _stored(store: RelayStore, row: OutboxRow) -> Any:
    found = store.row(row.kind, row.envelope_id)
    assert found is not None
    return found


def test_a_round_marked_sent_leaves_envelopes_waiting_and_acknowledgements_done(
    store: RelayStore,
) -> None:
    envelopes = [_row(ENVELOPE) for _ in range(3)]
    acks = [_row(ACK) for _ in range(2)]
    untouched = _row(ENVELOPE)
    store.add([*envelopes, *acks, untouched])
    round_one = [_stored(store, row) for row in (envelopes[0], acks[0], envelopes[1], acks[1])]
    store.mark_sent(round_one)
    for row in envelopes[:2]:
        sent = _stored(store, row)
        # Sent once, and waiting for the destination's acknowledgement.
        assert sent.attempts == 1 and sent.sent_at is not None
        assert sent.done_at is None and sent.outcome in ("", None)
    for row in acks:
        done = _stored(store, row)
        # An acknowledgement is not acknowledged: done once it went out.
        assert done.attempts == 1 and done.done_at == done.sent_at
        assert done.outcome == "sent" and done.reason in ("", None)
    for row in (envelopes[2], untouched):
        waiting = _stored(store, row)
        assert waiting.attempts == 0 and waiting.sent_at is None and waiting.done_at is None
    # Sent again (a resend): the envelope counts a second attempt; the acknowledgement stays
    # done as it was (its done time and outcome are not rewritten).
    first_done = _stored(store, acks[0]).done_at
    store.mark_sent([_stored(store, envelopes[0]), _stored(store, acks[0])])
    assert _stored(store, envelopes[0]).attempts == 2
    again = _stored(store, acks[0])
    assert again.attempts == 2 and again.done_at == first_done and again.outcome == "sent"
    assert store.mark_done(ACK, acks[0].envelope_id, "refused") is False  # done already


def test_an_empty_round_changes_nothing(store: RelayStore) -> None:
    row = _row(ENVELOPE)
    store.add([row])
    store.mark_sent([])
    assert _stored(store, row).attempts == 0

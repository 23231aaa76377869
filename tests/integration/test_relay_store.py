"""The relay's outbox on each store: what marking a round of rows sent does to each kind."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from hub.relay.store import (
    ACK,
    ENVELOPE,
    FETCH,
    OutboxRow,
    PostgresRelayStore,
    RelayStore,
    open_relay_store,
)
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


def _sent_at(store: RelayStore, row: OutboxRow, when: float) -> None:
    """Back-date a row's last send (as if sent ``when``)."""
    with store._cursor(commit=True) as curs:
        curs.execute(
            f"UPDATE tongban_relay_outbox SET sent_at = {_mark(store)} "
            f"WHERE envelope_id = {_mark(store)}",
            (when, str(row.envelope_id)),
        )


def _mark(store: RelayStore) -> str:
    return "%s" if isinstance(store, PostgresRelayStore) else "?"


def test_due_is_what_was_never_sent_and_what_waited_past_the_resend_time_in_order(
    store: RelayStore,
) -> None:
    rows = [_row(ENVELOPE), _row(ACK), _row(ENVELOPE), _row(ENVELOPE), _row(ENVELOPE)]
    fetch = _row(FETCH)
    store.add([*rows, fetch])
    stale, never_a, in_flight, done, never_b = rows
    store.mark_sent([_stored(store, row) for row in (stale, in_flight, done)])
    _sent_at(store, stale, time.time() - 120)
    store.mark_done(ENVELOPE, done.envelope_id, "stored")
    due = store.due(resend_after=60)
    # Oldest first (by when each was queued), whichever branch found it; not the one in
    # flight, nor the done one, nor the fetch (a different loop sends those).
    assert [row.envelope_id for row in due] == [
        row.envelope_id for row in (stale, never_a, never_b)
    ]
    assert [row.envelope_id for row in store.due(resend_after=60, limit=2)] == [
        stale.envelope_id,
        never_a.envelope_id,
    ]
    assert [row.envelope_id for row in store.due_fetches(retry_after=60)] == [fetch.envelope_id]


def test_due_reads_only_the_waiting_rows_not_the_done_ones_nor_those_in_flight(
    store: RelayStore,
) -> None:
    """The publisher asks every round: on a long-running node its query must not walk the
    table (every row ever sent) nor the rows in flight. Checked on the plan each store
    makes, with PostgreSQL's generic plan (the one a prepared statement ends up with)."""
    done = [_row(ENVELOPE) for _ in range(400)]
    in_flight = [_row(ENVELOPE) for _ in range(100)]
    store.add([*done, *in_flight, _row(ENVELOPE)])
    store.mark_sent([_stored(store, row) for row in (*done, *in_flight)])
    for row in done:
        store.mark_done(ENVELOPE, row.envelope_id, "stored")
    with store._cursor(commit=True) as curs:
        if isinstance(store, PostgresRelayStore):
            curs.execute("ANALYZE tongban_relay_outbox")
            curs.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            statement = store._sql.due.replace("%s", "$1", 1).replace("%s", "$2", 1)
            statement = statement.replace("%s", "$1", 1).replace("%s", "$1", 1)
            curs.execute(f"PREPARE due_plan(bigint, float8) AS {statement}")
            curs.execute(f"EXPLAIN (ANALYZE, COSTS OFF) EXECUTE due_plan(100, {time.time()})")
            plan = "\n".join(row["QUERY PLAN"] for row in curs.fetchall())
            curs.execute("DEALLOCATE due_plan")
            scans = [line for line in plan.splitlines() if "Scan" in line]
            assert scans and all("tongban_relay_outbox_waiting" in line for line in scans), plan
            assert "Rows Removed by Filter" not in plan, plan
        else:
            curs.execute(f"EXPLAIN QUERY PLAN {store._sql.due}", (100, time.time(), 100, 100))
            steps = [row[3] for row in curs.fetchall()]
            searches = [step for step in steps if "tongban_relay_outbox" in step]
            assert len(searches) == 2, steps
            assert all("USING INDEX tongban_relay_outbox_waiting" in s for s in searches), steps

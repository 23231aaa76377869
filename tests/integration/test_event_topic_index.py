"""The events table has an index on (topic, notification id), on both stores.

Followers that read only some kinds of events (projections, the relay's outbox, the integrator's
key history) ask for "the next events of these topics after position P"; without the index the
database walks every event after P (see ``hub.application.recorders``). A restarted node keeps
the index (``IF NOT EXISTS``), and what a topic read returns is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from eventsourcing.utils import get_topic

from hub.domain.case import Case
from hub.settings import Settings
from tests.harness.inprocess import InProcessNode


@pytest.fixture
def node(store_url: str | None, tmp_path: Path) -> Iterator[InProcessNode]:
    started = InProcessNode.start(Settings(data_dir=tmp_path / "node", database_url=store_url))
    started.add_hall("v-room", "430902104201")
    yield started
    started.close()


def _index_columns(node: InProcessNode) -> list[str]:
    recorder = node.app.recorder
    table = recorder.events_table_name  # type: ignore[attr-defined]
    with recorder.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
        if node.settings.database_url:
            cursor.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE c.relname = %s ORDER BY array_position(i.indkey, a.attnum)",
                (f"{table}_topic",),
            )
            return [str(row["attname"]) for row in cursor.fetchall()]
        cursor.execute(f"PRAGMA index_info('{table}_topic')")
        return [str(row[2]) for row in cursor.fetchall()]


def test_the_events_table_is_indexed_by_topic_and_position(node: InProcessNode) -> None:
    columns = _index_columns(node)
    if node.settings.database_url:
        assert columns == ["topic", "notification_id"]
    else:
        assert columns == ["topic"]  # SQLite orders an index's rows by rowid within a key


def test_a_topic_read_returns_the_same_events_and_a_restart_keeps_the_index(
    node: InProcessNode,
) -> None:
    village = node.halls["v-room"]
    cases = [node.submit(village, f"key-topic-{n}").case_id for n in range(3)]
    submitted = node.app.recorder.select_notifications(
        start=None, limit=100, topics=[get_topic(Case.Submitted)]
    )
    assert [n.originator_id for n in submitted] == cases
    later = node.app.recorder.select_notifications(
        start=submitted[0].id, limit=100, topics=[get_topic(Case.Submitted)],
        inclusive_of_start=False,
    )  # fmt: skip
    assert [n.originator_id for n in later] == cases[1:]
    restarted = InProcessNode.start(node.settings)
    try:
        assert _index_columns(restarted) == _index_columns(node)
    finally:
        restarted.close()

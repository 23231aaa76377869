"""The intake channel of every case (收件渠道): recorded, filtered and counted from the log's
projections, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.domain.values import IntakeChannel
from hub.projections import queries
from hub.projections.node import Projections, open_projections
from hub.projections.queries import CaseFilter
from hub.settings import Settings
from tests.harness.story import ELDER_CARD, SupervisionStory, cst

C = IntakeChannel


@pytest.fixture
def settings(store_url: str | None, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "node", database_url=store_url)


@pytest.fixture
def story(settings: Settings) -> Iterator[SupervisionStory]:
    started = SupervisionStory.start(settings)
    yield started
    started.close()


@pytest.fixture
def projections(story: SupervisionStory) -> Iterator[Projections]:
    opened = open_projections(story.app, node_region="43")
    opened.create_tables()
    yield opened
    opened.close()


#: (hall, channel on the wire, day of March 2026) of each case taken in.
INTAKES = [
    ("town", "", 2),  # a hall system that does not say: the window
    ("town", "INTAKE_CHANNEL_WINDOW", 2),
    ("town", "INTAKE_CHANNEL_ONLINE", 3),
    ("town", "INTAKE_CHANNEL_PHONE", 3),
    ("village", "INTAKE_CHANNEL_HOME_VISIT", 3),
    ("village", "INTAKE_CHANNEL_HOME_VISIT", 4),
    ("village", "INTAKE_CHANNEL_AGENT", 4),
    ("town", "INTAKE_CHANNEL_KIOSK", 4),
    ("town", "INTAKE_CHANNEL_IMPORTED", 4),
]


def test_every_channel_is_recorded_filtered_and_counted(
    story: SupervisionStory, projections: Projections
) -> None:
    ids: dict[str, list[str]] = {}
    for hall, channel, day in INTAKES:
        fields = {"channel": channel} if channel else {}
        case = story.submit(hall, ELDER_CARD, cst(2026, 3, day, 10), **fields)
        ids.setdefault(channel or "INTAKE_CHANNEL_WINDOW", []).append(case)
    projections.catch_up()
    store = projections.store
    counts = queries.channel_counts(store, region="43")
    assert counts == {
        C.WINDOW: 2, C.ONLINE: 1, C.PHONE: 1, C.HOME_VISIT: 2, C.AGENT: 1, C.KIOSK: 1,
        C.IMPORTED: 1, C.PEER_NODE: 0,
    }  # fmt: skip
    # By day (China Standard Time, inclusive), and by region (the village's cases only).
    assert sum(queries.channel_counts(store, region="43", from_day="2026-03-03",
                                      to_day="2026-03-03").values()) == 3  # fmt: skip
    village = queries.channel_counts(store, region="430902104201")
    assert (village[C.HOME_VISIT], village[C.AGENT], village[C.WINDOW]) == (2, 1, 0)
    # The case list filters by channel; WINDOW includes the case that did not say.
    as_of = cst(2026, 3, 5, 9)

    def listed(*channels: IntakeChannel) -> set[str]:
        page = queries.cases(store, region="43", as_of=as_of,
                             wanted=CaseFilter(channels=channels), page_size=100)  # fmt: skip
        return {row.case_id for row in page.entries}

    assert listed(C.HOME_VISIT) == set(ids["INTAKE_CHANNEL_HOME_VISIT"])
    assert listed(C.WINDOW) == set(ids["INTAKE_CHANNEL_WINDOW"])
    assert listed(C.AGENT, C.PHONE) == set(
        ids["INTAKE_CHANNEL_AGENT"] + ids["INTAKE_CHANNEL_PHONE"]
    )
    assert len(listed()) == len(INTAKES)
    # The seed regions' figures still count 帮代办, 上门办 and 网上办 as before.
    _rows, total = queries.statistics(store, queries.Names(story.app.regions, story.app.catalogue),
                                      region="43", by="hall")  # fmt: skip
    assert (total["agent"], total["home_visit"], total["online"]) == (1, 2, 1)

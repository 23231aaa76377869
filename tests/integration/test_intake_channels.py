"""The intake channel of every case (收件渠道): recorded, filtered and counted from the log's
projections, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tongban.v1 import case_exchange_pb2, common_pb2, supervision_pb2

from hub.api.errors import status_code_for
from hub.api.supervision import ChangeFeed, ProjectionAccess, QueueQueries, SupervisionServicer
from hub.domain.values import IntakeChannel
from hub.errors import InvalidInput
from hub.pki import Identity, Role
from hub.projections import queries
from hub.projections.node import Projections, open_projections
from hub.projections.queries import CaseFilter, Names
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


class _Context:
    """A servicer context: ``abort`` ends the call with the status (raising, as grpc does)."""

    def abort(self, code: grpc.StatusCode, details: str, trailing: Any = ()) -> None:
        raise RuntimeError(f"{code.name}: {details}")

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


def test_the_case_list_and_the_queue_rpcs_filter_by_channel(
    story: SupervisionStory, projections: Projections
) -> None:
    """``channels`` in ``Supervision.ListCases`` and ``CaseExchange.ListQueue`` (the servicers'
    own handlers, called in this process), and each case summary's ``channel``."""
    ids: dict[str, list[str]] = {}
    for hall, channel, day in INTAKES:
        fields = {"channel": channel} if channel else {}
        case = story.submit(hall, ELDER_CARD, cst(2026, 3, day, 10), **fields)
        ids.setdefault(channel or "INTAKE_CHANNEL_WINDOW", []).append(case)
    projections.catch_up()
    access = ProjectionAccess(
        projections.store, Names(story.app.regions, story.app.catalogue), lambda: None,
        ChangeFeed(story.node.settings.database_url), lambda: cst(2026, 3, 5, 9),
    )  # fmt: skip
    supervisor = Identity(Role.SUPERVISOR, "jiancha.43")
    supervision = SupervisionServicer(story.app, access, lambda _context: supervisor, "43")
    wire = common_pb2
    listed = supervision.ListCases(
        supervision_pb2.ListCasesRequest(
            channels=[wire.INTAKE_CHANNEL_HOME_VISIT, wire.INTAKE_CHANNEL_AGENT], page_size=100
        ),
        _Context(),
    ).cases
    assert {c.case_id for c in listed} == set(
        ids["INTAKE_CHANNEL_HOME_VISIT"] + ids["INTAKE_CHANNEL_AGENT"]
    )
    assert {(c.channel, c.origin_channel) for c in listed} == {
        (wire.INTAKE_CHANNEL_HOME_VISIT, wire.INTAKE_CHANNEL_HOME_VISIT),
        (wire.INTAKE_CHANNEL_AGENT, wire.INTAKE_CHANNEL_AGENT),
    }
    town = Identity(Role.HALL, "hn-shatou-town")
    queue = QueueQueries(story.app, access, lambda _context: town)

    def queued(*channels: int) -> set[str]:
        request = case_exchange_pb2.ListQueueRequest(channels=channels, page_size=100)
        return {entry.case_id for entry in queue.list_queue(request, _Context()).entries}

    assert queued(wire.INTAKE_CHANNEL_WINDOW) == set(ids["INTAKE_CHANNEL_WINDOW"])
    assert queued(wire.INTAKE_CHANNEL_ONLINE, wire.INTAKE_CHANNEL_PHONE) == set(
        ids["INTAKE_CHANNEL_ONLINE"] + ids["INTAKE_CHANNEL_PHONE"]
    )
    assert queued(wire.INTAKE_CHANNEL_HOME_VISIT) == set()  # the village room's, not the town's
    # A channel the wire does not know is named by its field.
    with pytest.raises(RuntimeError, match=r"INVALID_ARGUMENT: channels\[1\]"):
        queued(wire.INTAKE_CHANNEL_KIOSK, 99)


def test_a_hall_that_signs_peer_node_itself_is_refused_and_nothing_is_stored(
    story: SupervisionStory,
) -> None:
    size = story.node.log_size()
    with pytest.raises(InvalidInput) as refused:
        story.submit("town", ELDER_CARD, cst(2026, 3, 2, 10), channel="INTAKE_CHANNEL_PEER_NODE")
    assert refused.value.field == "command.submit.channel"
    assert status_code_for(refused.value) is grpc.StatusCode.INVALID_ARGUMENT
    assert story.node.log_size() == size

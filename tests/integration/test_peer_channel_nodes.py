"""PEER_NODE across two real nodes (湖南 43 and 陕西 61, each with its own store, keys and log,
the envelope carried by hand as the relay would): a case a 43 hall took in ONLINE for 61 counts
as ONLINE at 43 and as PEER_NODE at 61 — in the case list filtered by channel, the channel
counts, the statistics' 网办 counter and the case summary — while 61 still shows the channel 43's
hall signed (``origin_channel``); and a hall of 61 cannot claim PEER_NODE itself."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tongban.v1 import common_pb2

from hub.api.supervision import case_summary
from hub.bootstrap import open_node_projections
from hub.cli import main
from hub.domain.values import IntakeChannel
from hub.errors import InvalidInput
from hub.projections import queries
from hub.projections.queries import Names
from tests.harness.federation import Federation, Member
from tests.harness.inprocess import APPLICANT, material

C = IntakeChannel
ID_CARD = "070302001000"  # 居民身份证换领: county level, 异地代收代办 from every province
BAIHE = "610929000000"  # 白河县, 陕西
SHATOU = "430902104000"  # 沙头镇, 湖南


@pytest.fixture
def manual(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Federation]:
    """Two nodes whose messages the test carries by hand (no relay threads)."""
    with Federation.start(tmp_path, kafka_bootstrap, regions=("43", "61"), run=False) as started:
        yield started


def _views(member: Member) -> tuple[list[queries.CaseRow], dict[C, int], int]:
    """The member's case rows, channel counts and 网办 counter over its own region."""
    projections = open_node_projections(member.node.settings, member.app)
    try:
        projections.create_tables()
        projections.catch_up()
        store = projections.store
        now = datetime.now(UTC)
        rows = queries.cases(store, region=member.region, as_of=now).entries
        counts = queries.channel_counts(store, region=member.region)
        names = Names(member.app.regions, member.app.catalogue)
        # The statistics of the cases taken in at 43 (where the copy's intake region is).
        online = queries.statistics(store, names, region=SHATOU, by="region")[1]["online"]
        return rows, counts, online
    finally:
        projections.close()


def test_a_forwarded_case_is_peer_node_at_the_peer_and_keeps_its_origin_channel(
    manual: Federation, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hunan, shaanxi = manual.nodes["43"], manual.nodes["61"]
    town = hunan.node.add_hall("hn-shatou-town", SHATOU)
    county = shaanxi.node.add_hall("sx-baihe-county", BAIHE)
    case_id = hunan.node.run(
        town, "submit", idempotency_key="peer-channel-01", item_code=ID_CARD,
        applicant=APPLICANT, materials=[material()], competent_region=BAIHE,
        channel="INTAKE_CHANNEL_ONLINE",
    ).case_id  # fmt: skip
    envelopes = [m for row, m in manual.outgoing(hunan) if row.kind == "envelope"]
    assert [shaanxi.relay.inbox.handle(m) for m in envelopes] == ["stored"]  # type: ignore[union-attr]

    # At the origin: the hall's channel.
    (row,), counts, online = _views(hunan)
    assert (row.channel, row.origin_channel) == ("ONLINE", "ONLINE")
    assert (counts[C.ONLINE], counts[C.PEER_NODE]) == (1, 0) and online == 1
    # At the peer: PEER_NODE, with the origin's channel beside it.
    (row,), counts, online = _views(shaanxi)
    assert row.case_id == str(case_id)
    assert (row.channel, row.origin_channel) == ("PEER_NODE", "ONLINE")
    assert (counts[C.PEER_NODE], counts[C.ONLINE]) == (1, 0)
    assert online == 0  # 43 counts its 网办; 61 does not count it again
    summary = case_summary(row, datetime.now(UTC))
    assert summary.channel == common_pb2.INTAKE_CHANNEL_PEER_NODE
    assert summary.origin_channel == common_pb2.INTAKE_CHANNEL_ONLINE

    # The command line at 61: cases --channel PEER_NODE lists it, stats --by channel counts it.
    for name in list(os.environ):
        if name.startswith("TONGBAN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TONGBAN_DATA_DIR", str(shaanxi.node.settings.data_dir))
    assert main(["cases", "--channel", "PEER_NODE", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)["entries"]
    assert (listed["case_id"], listed["channel"], listed["origin_channel"]) == (
        str(case_id), "PEER_NODE", "ONLINE",
    )  # fmt: skip
    assert main(["cases", "--channel", "ONLINE", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == []
    assert main(["stats", "--by", "channel", "--json"]) == 0
    by_channel = {
        e["channel"]: e["received"] for e in json.loads(capsys.readouterr().out)["entries"]
    }
    assert (by_channel["PEER_NODE"], by_channel["ONLINE"]) == (1, 0)

    # A hall cannot claim PEER_NODE for its own intake: the field is named, nothing stored.
    size = shaanxi.node.log_size()
    with pytest.raises(InvalidInput) as refused:
        shaanxi.node.run(
            county, "submit", idempotency_key="peer-channel-02", item_code=ID_CARD,
            applicant=APPLICANT, materials=[material()], channel="INTAKE_CHANNEL_PEER_NODE",
        )  # fmt: skip
    assert refused.value.field == "command.submit.channel"
    assert shaanxi.node.log_size() == size

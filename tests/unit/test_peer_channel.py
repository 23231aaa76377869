"""PEER_NODE: a node counts the copy of a case another node forwarded as ``PEER_NODE``, derived
from its log (the intake hall is another node's, ``hall@region``), while the channel the origin's
hall signed stays the case's own."""

from __future__ import annotations

from uuid import uuid4

import pytest
from factories import TOWNSHIP, applicant, material

from hub.domain.case import Case
from hub.domain.federation import local_name
from hub.domain.regions import RegionCode
from hub.domain.values import Actor, CaseKind, CrossRegionMode, IntakeChannel
from hub.projections.cases import intake_channel

BAIHE = "610929000000"  # 白河县, 陕西: another node's region


def _submitted(actor: Actor, channel: IntakeChannel, competent: str) -> Case:
    return Case.submit(
        case_id=uuid4(), actor=actor, item_code="070302001000", item_name="居民身份证换领",
        kind=CaseKind.PROMISED,
        mode=CrossRegionMode.OFFSITE_PROXY, intake_region=RegionCode(actor.region),
        competent_region=RegionCode(competent), applicant=applicant(), materials=(material(),),
        promised_days=5, statutory_days=20, produces_certificate=True, channel=channel,
    )  # fmt: skip


@pytest.mark.parametrize("channel", [c for c in IntakeChannel if c is not IntakeChannel.PEER_NODE])
def test_the_origin_counts_its_channel_and_the_peer_counts_peer_node(
    channel: IntakeChannel,
) -> None:
    # At 湖南 (43) the township hall took it in: its own channel.
    origin = _submitted(Actor("hn-shatou-town", "op", TOWNSHIP), channel, BAIHE)
    assert intake_channel(origin) is channel
    # At 陕西 (61) the same step applied from the envelope names the hall as 43's.
    hall_there = local_name("hn-shatou-town", TOWNSHIP, "61")
    assert hall_there == f"hn-shatou-town@{TOWNSHIP}"
    copy = _submitted(Actor(hall_there, "op", TOWNSHIP), channel, BAIHE)
    assert intake_channel(copy) is IntakeChannel.PEER_NODE
    assert copy.channel is channel  # the signed channel stays what the origin's hall said

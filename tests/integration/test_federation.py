"""Cases shared between nodes over a real Kafka-protocol broker: 异地代收代办 end to end.

Two nodes in this process (湖南 43 and 陕西 61), each with its own SQLite store, keys, CA,
integrator and relay, exchanging signed envelopes through the test broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tongban.v1 import common_pb2

from hub.domain.values import CaseState
from hub.integrity.audit import audit_store
from hub.integrity.store import ReadOnlyStore
from ledger import Verifier
from tests.harness.federation import Federation
from tests.harness.inprocess import APPLICANT, material

ID_CARD = "070302001000"  # 居民身份证换领: county level, 异地代收代办 from every province
BAIHE = "610929000000"  # 白河县, 陕西
SHATOU = "430902104000"  # 沙头镇, 湖南


@pytest.fixture
def federation(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Federation]:
    with Federation.start(tmp_path, kafka_bootstrap, regions=("43", "61")) as started:
        yield started


def _state(member: Any, case_id: Any) -> CaseState:
    return member.app.get_case(case_id).state


def test_offsite_intake_reaches_the_competent_node_and_the_result_comes_back(
    federation: Federation,
) -> None:
    hunan, shaanxi = federation.nodes["43"], federation.nodes["61"]
    town = hunan.node.add_hall("hn-shatou-town", SHATOU, "沙头镇便民服务中心")
    county = shaanxi.node.add_hall("sx-baihe-county", BAIHE, "白河县政务服务中心")

    submitted = hunan.node.run(
        town, "submit", idempotency_key="offsite-0001", item_code=ID_CARD,
        applicant=APPLICANT, materials=[material()], competent_region=BAIHE,
    )  # fmt: skip
    case_id = submitted.case_id
    # The competent node gets its copy of the case, with the applicant sealed to it.
    federation.wait(lambda: shaanxi.app.get_case(case_id), "the case reached 61")
    copy = shaanxi.app.get_case(case_id)
    assert copy.intake_hall == f"hn-shatou-town@{SHATOU}"
    opened = shaanxi.app.open_applicant(copy)
    assert opened is not None and opened.applicant == APPLICANT

    hunan.node.run(town, "accept", idempotency_key="offsite-0002", case_id=str(case_id))
    hunan.node.run(
        town, "hand_off", idempotency_key="offsite-0003", case_id=str(case_id),
        to_hall=f"sx-baihe-county@{BAIHE}", reason="异地代收: 转户籍地办理",
    )  # fmt: skip
    federation.wait(
        lambda: _state(shaanxi, case_id) is CaseState.HANDED_OFF, "the handoff reached 61"
    )
    for number, (action, extra) in enumerate(
        [
            ("acknowledge_handoff", {}),  # the county holds it and handles it from here
            ("decide", {"approved": True, "reason": "材料齐全, 准予换领"}),
            ("conclude", {}),
            ("record_certificate", {"certificate_id": "1.2.156.3005.2.11100000MB0000001X.0001"}),
        ]
    ):
        shaanxi.node.run(
            county, action, idempotency_key=f"baihe-{number:04d}", case_id=str(case_id), **extra
        )
    federation.wait(
        lambda: _state(hunan, case_id) is CaseState.CERTIFICATE_ISSUED, "the result reached 43"
    )
    # 一窗发证 at the Hunan window, and the rating reaches Shaanxi.
    hunan.node.run(
        town, "deliver", idempotency_key="offsite-0004", case_id=str(case_id),
        method=common_pb2.DELIVERY_METHOD_OFFSITE_WINDOW, note="本人到沙头镇窗口领取",
    )  # fmt: skip
    hunan.node.run(
        town, "rate", idempotency_key="offsite-0005", case_id=str(case_id),
        rating=common_pb2.RATING_VERY_SATISFIED, comment="不用回白河",
    )  # fmt: skip
    federation.wait(lambda: _state(shaanxi, case_id) is CaseState.RATED, "the rating reached 61")
    assert _state(hunan, case_id) is CaseState.RATED
    assert hunan.app.get_case(case_id).version == shaanxi.app.get_case(case_id).version

    # Every envelope is acknowledged, and both logs verify with public keys alone.
    federation.wait(
        lambda: not hunan.relay.store.backlog() and not shaanxi.relay.store.backlog(),
        "every envelope acknowledged",
    )
    for member in (hunan, shaanxi):
        federation.halt(member)  # its integrator and relay stop; the log is complete
    for member in (hunan, shaanxi):
        other = shaanxi if member is hunan else hunan
        member.node.integrator().catch_up()
        report = _audit(member, {other.origin: _log_verifier(other)})
        assert report.ok, [str(finding) for finding in report.findings]
        # Without the peer's key the steps it sent cannot be checked: the auditor says so.
        blind = _audit(member, {})
        assert not blind.ok
        assert any("peer key unknown" in str(finding) for finding in blind.findings)


def _log_verifier(member: Any) -> Verifier:
    return Verifier.from_key(member.node.app.genesis().log_key)


def _audit(member: Any, peers: dict[str, Verifier]) -> Any:
    with ReadOnlyStore(sqlite_path=member.node.settings.sqlite_path) as store:
        return audit_store(store, [_log_verifier(member)], origin=member.origin, peers=peers)

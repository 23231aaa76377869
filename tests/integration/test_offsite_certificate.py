"""异地代收代办 on PostgreSQL: a certificate 陕西 (61) issues is handed over at a 湖南 (43)
window after 43 checked it offline with 61's trust bundle from its federation file — each node
with its own PostgreSQL database, the steps through a real Kafka-protocol broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tongban.v1 import common_pb2

from hub.domain.values import CaseState, DeliveryMethod
from hub.errors import InvalidInput
from tests.harness.federation import Federation
from tests.harness.inprocess import APPLICANT, material
from tests.harness.postgres import temporary_database
from tests.integration.test_federation import BAIHE, ID_CARD, SHATOU, _certificate_token


@pytest.fixture
def federation(tmp_path: Path, kafka_bootstrap: str, postgres_dsn: str) -> Iterator[Federation]:
    with (
        temporary_database(postgres_dsn) as hunan_db,
        temporary_database(postgres_dsn) as shaanxi_db,
        Federation.start(
            tmp_path, kafka_bootstrap, regions=("43", "61"),
            database_urls={"43": hunan_db, "61": shaanxi_db},
        ) as started,
    ):  # fmt: skip
        yield started


def test_the_hunan_window_checks_the_shaanxi_certificate_offline(federation: Federation) -> None:
    hunan, shaanxi = federation.nodes["43"], federation.nodes["61"]
    assert hunan.node.settings.database_url and shaanxi.node.settings.database_url
    town = hunan.node.add_hall("hn-shatou-town", SHATOU, "沙头镇便民服务中心")
    county = shaanxi.node.add_hall("sx-baihe-county", BAIHE, "白河县政务服务中心")
    case_id = hunan.node.run(
        town, "submit", idempotency_key="pg-offsite-0001", item_code=ID_CARD,
        applicant=APPLICANT, materials=[material()], competent_region=BAIHE,
    ).case_id  # fmt: skip
    hunan.node.run(town, "accept", idempotency_key="pg-offsite-0002", case_id=str(case_id))
    hunan.node.run(
        town, "hand_off", idempotency_key="pg-offsite-0003", case_id=str(case_id),
        to_hall=f"sx-baihe-county@{BAIHE}", reason="异地代收: 转户籍地办理",
    )  # fmt: skip
    federation.wait(
        lambda: shaanxi.app.get_case(case_id).state is CaseState.HANDED_OFF, "the handoff at 61"
    )
    for number, (action, extra) in enumerate([
        ("acknowledge_handoff", {}),
        ("decide", {"approved": True, "reason": "准予换领"}),
        ("conclude", {}),
        ("issue_certificate", {"type_code": "110001", "issuer_code": "11610929MB0000001X",
                               "authority": "白河县公安局", "valid_until": "2046-03-01"}),
    ]):  # fmt: skip
        shaanxi.node.run(
            county, action, idempotency_key=f"pg-baihe-{number:04d}", case_id=str(case_id),
            **extra,
        )  # fmt: skip
    federation.wait(
        lambda: hunan.app.get_case(case_id).state is CaseState.CERTIFICATE_ISSUED,
        "the certificate at 43",
    )
    token = _certificate_token(federation, shaanxi, case_id)
    head, body, signature = token.split(".")
    tampered = f"{head}.{body[:-4]}{'AAAA' if body[-4:] != 'AAAA' else 'BBBB'}.{signature}"
    with pytest.raises(InvalidInput, match="forged") as refused:
        hunan.node.run(
            town, "deliver", case_id=str(case_id), certificate_token=tampered,
            method=common_pb2.DELIVERY_METHOD_OFFSITE_WINDOW,
        )  # fmt: skip
    assert refused.value.field == "command.deliver.certificate_token"
    assert hunan.app.get_case(case_id).state is CaseState.CERTIFICATE_ISSUED
    hunan.node.run(
        town, "deliver", idempotency_key="pg-offsite-0004", case_id=str(case_id),
        method=common_pb2.DELIVERY_METHOD_OFFSITE_WINDOW, place="综合窗口",
        certificate_token=token,
    )  # fmt: skip
    federation.wait(
        lambda: shaanxi.app.get_case(case_id).state is CaseState.DELIVERED, "the delivery at 61"
    )
    delivered = shaanxi.app.get_case(case_id)
    assert delivered.delivery_method is DeliveryMethod.OFFSITE_WINDOW
    assert delivered.delivery_place == "综合窗口"

"""The supervisors' dashboard and a hall's public screen, served by a real ``tongban serve`` over
HTTPS, in a real headless browser (Debian's Chromium driven by Playwright).

The node takes in cases at several business days (a village outbox forwarding week-old cases),
concludes and rates some, and its supervisor warns an overdue one. The browser then shows: the
public guide screen to anyone, with every published guide field (八公开) and today's volumes;
the dashboard only to a supervisor's (or auditor's) certificate, for its region and below, with
its charts drawn from the data and no personal data on the page. Screenshots of both are saved
in build/screenshots/ (see tests/harness/browser.py).
"""

from __future__ import annotations

import hashlib
import ssl
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from tongban.v1 import case_exchange_pb2, case_exchange_pb2_grpc, common_pb2

from adapters.sdk import HallClient, RetryPolicy, sign_command
from hub.domain.values import id_number_with_check
from tests.harness.availability import service_unavailable
from tests.harness.browser import chromium, screenshots_dir
from tests.harness.errors import ServiceUnavailable
from tests.harness.node import NodeProcess

pytestmark = pytest.mark.e2e

VILLAGE = ("hn-shatou-v201", "430902104201")
TOWNSHIP = ("hn-shatou-town", "430902104000")
COUNTY = ("hn-ziyang-hall", "430902000000")
HOUSEHOLD_MOVE = "070303001000"  # county, promised 5 working days
ELDER_CARD = "200202001000"  # township, immediate, certificate
APPLICANT = common_pb2.Applicant(
    name="赵桂芳", id_number=id_number_with_check("43090219500101003"), phone="13907370101"
)
MATERIAL = common_pb2.Material(
    name="身份证", sha256=hashlib.sha256(b"i").hexdigest(), media_type="image/png", size=9
)
PATIENCE_MS = 60_000


def _send(client: HallClient, action: str, **fields: Any) -> Any:
    return client.send(action, idempotency_key=uuid.uuid4().hex, **fields)


def _deferred_submit(node: NodeProcess, client: HallClient, item: str, days_ago: float) -> str:
    """A village outbox forwarding a case taken in ``days_ago`` days ago."""
    signed = sign_command(
        node.credentials(VILLAGE[0]), "submit",
        case_exchange_pb2.SubmitCase(item_code=item, materials=[MATERIAL]),
        idempotency_key=uuid.uuid4().hex, operator="op-village",
        issued_at=datetime.now(UTC) - timedelta(days=days_ago), deferred=True,
        applicant=APPLICANT,
    )  # fmt: skip
    return str(client.send_signed("submit", signed).case_id)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        with chromium() as launched:
            yield launched
    except ServiceUnavailable as missing:
        service_unavailable(missing)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    directory: Path = tmp_path_factory.mktemp("web")
    with NodeProcess(directory) as process:
        for hall_id, region in (VILLAGE, TOWNSHIP, COUNTY):
            process.add_hall(
                hall_id, region, {"hn-shatou-town": "沙头镇政务服务中心"}.get(hall_id, "")
            )
        process.start()
        retry = RetryPolicy(attempts=1)
        with process.client(VILLAGE[0], retry=retry) as village, \
                process.client(TOWNSHIP[0], retry=retry) as town, \
                process.client(COUNTY[0], retry=retry) as county:  # fmt: skip
            # Over the last weeks, forwarded now: the trend has several days; one is overdue.
            for days_ago in (20, 10, 3):
                _deferred_submit(process, village, HOUSEHOLD_MOVE, days_ago)
            _send(county, "submit", item_code=HOUSEHOLD_MOVE, applicant=APPLICANT,
                  materials=[MATERIAL])  # fmt: skip
            case = str(_send(town, "submit", item_code=ELDER_CARD, applicant=APPLICANT,
                             materials=[MATERIAL]).case_id)  # fmt: skip
            for action, fields in [("accept", {}), ("start_handling", {}),
                                   ("decide", {"approved": True, "reason": "符合条件"}),
                                   ("conclude", {}),
                                   ("record_certificate", {"certificate_id": "1.2.156.3005.2.9"}),
                                   ("deliver", {"method": common_pb2.DELIVERY_METHOD_WINDOW}),
                                   ("rate", {"rating": common_pb2.RATING_VERY_SATISFIED,
                                             "comment": "方便"})]:  # fmt: skip
                _send(town, action, case_id=case, **fields)
        _await_projections(process)
        yield process


def _await_projections(node: NodeProcess) -> None:
    """Until the township's queue watch has seen every case and the red warning is recorded."""
    import grpc

    files = node.halls[VILLAGE[0]]
    channel = grpc.secure_channel(node.target, grpc.ssl_channel_credentials(
        (node.pki / "ca.pem").read_bytes(), files.private_key.read_bytes(),
        files.certificate.read_bytes()))  # fmt: skip
    stub = case_exchange_pb2_grpc.CaseExchangeStub(channel)
    watch = stub.WatchQueue(case_exchange_pb2.WatchQueueRequest(), timeout=PATIENCE_MS / 1000)
    for update in watch:
        if common_pb2.WARNING_KIND_RED in update.entry.warnings:
            break
    watch.cancel()
    channel.close()


def _certificate(node: NodeProcess, role: str, name: str, region: str = "") -> dict[str, str]:
    certificate, key = node.issue(role, name, region=region)
    return {"origin": node.web_url.rstrip("/"), "certPath": str(certificate), "keyPath": str(key)}


def _page(browser: Any, node: NodeProcess, certificate: dict[str, str] | None = None) -> Any:
    context = browser.new_context(
        # The node's CA is not in the browser's store; the TLS itself is checked with httpx in
        # test_the_pages_are_served_over_https_by_the_nodes_pki.
        ignore_https_errors=True,
        client_certificates=[certificate] if certificate else [],
        viewport={"width": 1600, "height": 1000},
        locale="zh-CN",
    )
    return context.new_page()


def test_a_public_screen_shows_every_published_guide_field_to_anyone(
    browser: Any, node: NodeProcess
) -> None:
    page = _page(browser, node)
    response = page.goto(f"{node.web_url}public/halls/{TOWNSHIP[0]}")
    assert response is not None and response.status == 200
    assert page.locator("#hall-name").inner_text() == "沙头镇政务服务中心"
    guide = page.locator(f"#item-{ELDER_CARD}")
    text = guide.inner_text()
    for field in ("实施依据", "申报条件", "申报材料", "办理程序", "承诺时限", "法定时限",
                  "收费依据", "收费标准"):  # fmt: skip
        assert field in text, field
    assert "老年人优待证办理" in text
    # Today's volumes: the township took in one case today and concluded it.
    assert page.locator("#today-received").inner_text() == "1"
    assert page.locator("#today-concluded").inner_text() == "1"
    page.screenshot(path=str(screenshots_dir() / "public-screen.png"), full_page=False)
    page.context.close()


def test_the_dashboard_needs_a_supervisors_certificate(browser: Any, node: NodeProcess) -> None:
    hall = {
        "origin": node.web_url.rstrip("/"),
        "certPath": str(node.halls[VILLAGE[0]].certificate),
        "keyPath": str(node.halls[VILLAGE[0]].private_key),
    }
    for certificate, status in [(None, 401), (hall, 403)]:
        page = _page(browser, node, certificate)
        response = page.goto(f"{node.web_url}dashboard")
        assert response is not None and response.status == status
        assert "certificate" in page.locator("#reason").inner_text()
        page.context.close()


def test_a_supervisor_sees_its_region_with_charts_drawn_from_the_data(
    browser: Any, node: NodeProcess
) -> None:
    page = _page(browser, node, _certificate(node, "supervisor", "yiyang", region="4309"))
    response = page.goto(f"{node.web_url}dashboard")
    assert response is not None and response.status == 200
    page.wait_for_selector("body[data-charts-ready='yes']", timeout=PATIENCE_MS)
    assert int(page.locator("#card-overdue").inner_text()) >= 1
    assert page.locator("#overdue tbody tr").count() >= 1
    assert "红牌" in page.locator("#warnings").inner_text()
    # Each chart holds the figures and has drawn them on its canvas.
    totals = page.evaluate(
        """() => Object.fromEntries(["chart-trend", "chart-levels", "chart-halls", "chart-rates"]
            .map(id => [id, Chart.getChart(id).data.datasets[0].data.reduce((a, b) => a + b, 0)]))"""
    )
    assert all(total > 0 for total in totals.values()), totals
    trend_days = page.evaluate(
        "() => Chart.getChart('chart-trend').data.datasets[0].data.filter(n => n > 0).length"
    )
    assert trend_days >= 3  # cases taken in on several days, by business time
    painted = page.evaluate(
        """() => { const c = document.getElementById('chart-levels');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
                   return n; }"""
    )
    assert painted > 1000
    content = page.content()
    for personal in (APPLICANT.name, APPLICANT.id_number, APPLICANT.phone):
        assert personal not in content
    page.screenshot(path=str(screenshots_dir() / "dashboard.png"), full_page=True)
    # Narrower is allowed; wider, or beside, is not.
    assert page.goto(f"{node.web_url}dashboard?region=430902").status == 200  # type: ignore[union-attr]
    for region in ("43", "4307"):
        assert page.goto(f"{node.web_url}dashboard?region={region}").status == 403  # type: ignore[union-attr]
    page.context.close()


def test_the_pages_are_served_over_https_by_the_nodes_pki(node: NodeProcess) -> None:
    context = ssl.create_default_context(cafile=str(node.pki / "ca.pem"))
    certificate, key = node.issue("auditor", "web-auditor")
    context.load_cert_chain(str(certificate), str(key))
    with httpx.Client(verify=context, base_url=node.web_url) as client:
        dashboard = client.get("/dashboard")
        assert dashboard.status_code == 200 and "电子监察" in dashboard.text
        assert "default-src 'self'" in dashboard.headers["content-security-policy"]
    with httpx.Client(
        verify=ssl.create_default_context(cafile=str(node.pki / "ca.pem")), base_url=node.web_url
    ) as anonymous:
        assert anonymous.get("/dashboard").status_code == 401
        assert anonymous.get(f"/public/halls/{COUNTY[0]}").status_code == 200
        assert anonymous.get("/public/halls/no-such-hall").status_code == 404


def test_verifiers_fetch_one_signed_status_list_and_the_trust_bundle(node: NodeProcess) -> None:
    # tongban serve's web process serves them to anyone (no client certificate), over HTTPS.
    import base64
    import json

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    def unpadded(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    with httpx.Client(
        verify=ssl.create_default_context(cafile=str(node.pki / "ca.pem")), base_url=node.web_url
    ) as anonymous:
        first = anonymous.get("/certificates/status-list.jws")
        second = anonymous.get("/certificates/status-list.jws")
        bundle = anonymous.get("/certificates/trust.json")
    assert first.status_code == 200 and first.content == second.content
    assert first.headers["cache-control"].startswith("public, max-age=")
    assert bundle.status_code == 200
    header, payload, signature = first.text.strip().split(".")
    kid = json.loads(unpadded(header))["kid"]
    (issuer,) = [i for i in bundle.json()["issuers"] if i["kid"] == kid]
    key = Ed25519PublicKey.from_public_bytes(unpadded(issuer["jwk"]["x"]))
    key.verify(unpadded(signature), f"{header}.{payload}".encode())  # raises if forged
    assert json.loads(unpadded(payload))["iss"] == bundle.json()["logs"][0]["origin"]

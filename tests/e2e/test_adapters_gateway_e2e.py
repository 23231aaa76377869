"""End to end: the YZ platform's JSON over real HTTP → the gateway process → the node over mTLS."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tongban.v1 import common_pb2

from adapters.sdk import HallCredentials
from tests.e2e.conftest import COUNTY, TOWNSHIP, VILLAGE
from tests.e2e.test_adapters_support import (
    AdapterProcess,
    audited_history,
    check_audited_commands,
    closed_port,
    connection_args,
    id_number,
)
from tests.harness.node import NodeProcess

pytestmark = pytest.mark.e2e

TOKEN = "yz-shared-secret"
ITEM = "200202001000"  # 老年人优待证办理: 即办件, decided at township level


@pytest.fixture(scope="module")
def gateway(node: NodeProcess) -> Iterator[str]:
    """A gateway process acting as the township hall; yields its base URL.

    It names no ``--node``: the default origin derived from the region is the node's.
    """
    process = AdapterProcess(
        ["gateway", "--listen", "127.0.0.1:0", "--token", TOKEN,
         *connection_args(node, TOWNSHIP[0], origin="")]
    )  # fmt: skip
    match = process.start(r"listening on (http://\S+)")
    try:
        yield match.group(1)
    finally:
        assert process.stop() == 0, process.text()


def call(
    base: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    request_id: str | None = None,
    token: str | None = TOKEN,
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    """One HTTP request; returns (status, decoded JSON envelope)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if request_id is not None:
        request.add_header("X-Request-Id", request_id)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def application(**overrides: Any) -> dict[str, Any]:
    """A valid 收件 in the vendor's shape."""
    body: dict[str, Any] = {
        "sxbm": ITEM,
        "bjlx": 0,
        "sqrxm": "李桂英",
        "sfzh": id_number("43090219480312002"),
        "lxdh": "13907371234",
        "clxx": [
            {"clmc": "居民身份证", "clhash": "ab" * 32, "wjlx": "image/jpeg", "wjdx": 52311},
            {
                "clmc": "近期免冠一寸彩色照片",
                "clhash": "cd" * 32,
                "wjlx": "image/png",
                "wjdx": 9000,
            },
        ],
        "jbr": "窗口-王敏",
    }
    body.update(overrides)
    return body


def new_id() -> str:
    return f"req-{uuid.uuid4().hex}"


def test_submit_retry_accept_and_read_back(gateway: str, node: NodeProcess) -> None:
    """收件 → the vendor retries → 受理 → GET, all in the vendor's shape; the node's history has
    each step exactly once."""
    request_id = new_id()
    status, created = call(gateway, "POST", "/api/v1/cases", application(), request_id=request_id)
    assert status == 201, created
    assert created["code"] == "00000" and created["requestId"] == request_id
    case = created["data"]
    assert case["bjzt"] == "10" and case["bjztmc"] == "已收件"
    assert case["bjlx"] == 0 and case["sxmc"] == "老年人优待证办理"
    assert case["sjdt"] == TOWNSHIP[0] and case["cfqq"] is False
    assert "sl" in case["kcz"]

    # The platform timed out and sends the same request again: same case, nothing new stored.
    status, again = call(gateway, "POST", "/api/v1/cases", application(), request_id=request_id)
    assert status == 200, again
    assert again["data"]["bjbh"] == case["bjbh"] and again["data"]["cfqq"] is True

    status, accepted = call(
        gateway, "POST", f"/api/v1/cases/{case['bjbh']}/actions/sl", {"jbr": "窗口-王敏"},
        request_id=new_id(),
    )  # fmt: skip
    assert status == 200, accepted
    assert accepted["data"]["bjzt"] == "20" and accepted["data"]["bb"] == 2

    status, read = call(gateway, "GET", f"/api/v1/cases/{case['bjbh']}")
    assert status == 200
    assert read["data"]["bjzt"] == "20" and read["data"]["dqbldt"] == TOWNSHIP[0]
    assert read["data"]["sqsj"] and read["data"]["blqh"] == "430902104000"

    with node.client(TOWNSHIP[0]) as client:
        history = client.history(case["bjbh"])
    assert [e.WhichOneof("event") for e in history.events] == ["submitted", "accepted"]
    assert history.events[0].actor.operator == "窗口-王敏"
    # The intake hall reads its applicant back in clear (the node opened the commitments).
    assert history.events[0].submitted.applicant.id_number == application()["sfzh"]


def test_an_auditor_verifies_what_the_gateway_signed_without_personal_data(
    gateway: str, node: NodeProcess
) -> None:
    """Through the Audit service: each command verifies with the township's public key alone,
    its bytes hold commitments and no clear value, the submitted event no applicant."""
    _, created = call(gateway, "POST", "/api/v1/cases", application(), request_id=new_id())
    case_id = created["data"]["bjbh"]
    call(gateway, "POST", f"/api/v1/cases/{case_id}/actions/sl", {}, request_id=new_id())
    public_key = HallCredentials.load_signing_key(node.halls[TOWNSHIP[0]].signing_key).public_key()
    body = application()
    applicant = common_pb2.Applicant(name=body["sqrxm"], id_number=body["sfzh"], phone=body["lxdh"])
    commands = check_audited_commands(audited_history(node, case_id), public_key, applicant)
    assert [c.WhichOneof("action") for c in commands] == ["submit", "accept"]
    assert all(c.header.node == node.origin and not c.header.deferred for c in commands)


def test_whole_lifecycle_through_vendor_actions(gateway: str, node: NodeProcess) -> None:
    """Each vendor action name and code maps onto the wire: 承办, 决定, 办结, 制证, 送达, 评价."""
    _, created = call(gateway, "POST", "/api/v1/cases", application(), request_id=new_id())
    case_id = created["data"]["bjbh"]
    steps: list[tuple[str, dict[str, Any], str]] = [
        ("sl", {}, "20"),
        ("cb", {}, "30"),
        ("jd", {"sfzy": "1", "yy": "符合条件"}, "40"),
        ("bj", {}, "50"),
        ("zz", {"zzbh": "1.2.156.3005.2.11100000000013338W.001.1.K"}, "51"),
        ("sd", {"sdfs": 1, "sm": "EMS 1234"}, "60"),
        ("pj", {"pjdj": 1, "pjnr": "很快"}, "70"),
    ]
    for action, body, state in steps:
        status, answer = call(
            gateway, "POST", f"/api/v1/cases/{case_id}/actions/{action}", body,
            request_id=new_id(),
        )  # fmt: skip
        assert status == 200, (action, answer)
        assert answer["data"]["bjzt"] == state, (action, answer)
    # The vendor's 1 非常满意 is the wire's RATING_VERY_SATISFIED, and back again.
    assert answer["data"]["pjdj"] == 1
    with node.client(TOWNSHIP[0]) as client:
        view = client.get_case(case_id)
        events = client.history(case_id).events
    assert view.rating == common_pb2.RATING_VERY_SATISFIED
    assert events[-2].delivered.method == common_pb2.DELIVERY_METHOD_POST


def test_bad_input_is_named_by_the_vendors_fields(gateway: str) -> None:
    """400 with the vendor's field names, before anything reaches the node."""
    status, answer = call(
        gateway, "POST", "/api/v1/cases",
        application(sfzh="430902194803120021", bjlx=7, lxdh=None), request_id=new_id(),
    )  # fmt: skip
    assert status == 400 and answer["code"] == "40001"
    assert {e["field"] for e in answer["errors"]} == {"sfzh", "bjlx", "lxdh"}

    status, answer = call(
        gateway, "POST", "/api/v1/cases", application(bjlx=1), request_id=new_id()
    )
    assert status == 400 and answer["errors"][0]["field"] == "bjlx"  # the item is 即办 (0)

    status, answer = call(
        gateway, "POST", "/api/v1/cases", application(sxbm="999999999999"), request_id=new_id()
    )
    assert status == 400 and answer["errors"][0]["field"] == "sxbm"

    bad_material = application(
        clxx=[{"clmc": "身份证", "clhash": "xyz", "wjlx": "jpeg", "wjdx": 0}]
    )
    status, answer = call(gateway, "POST", "/api/v1/cases", bad_material, request_id=new_id())
    assert status == 400
    assert {e["field"] for e in answer["errors"]} == {
        "clxx[0].clhash", "clxx[0].wjlx", "clxx[0].wjdx",
    }  # fmt: skip

    status, answer = call(gateway, "POST", "/api/v1/cases", raw=b"{not json", request_id=new_id())
    assert status == 400 and answer["errors"][0]["field"] == "body"

    status, answer = call(gateway, "POST", "/api/v1/cases", application())
    assert status == 400 and answer["errors"][0]["field"] == "X-Request-Id"

    status, answer = call(gateway, "GET", "/api/v1/cases/not-a-case-id")
    assert status == 400 and answer["errors"][0]["field"] == "bjbh"

    status, answer = call(
        gateway, "POST", f"/api/v1/cases/{uuid.uuid4()}/actions/bysl", {}, request_id=new_id()
    )
    assert status == 400 and answer["errors"][0]["field"] == "yy"


def test_a_client_still_sending_an_oversize_body_reads_its_413(gateway: str) -> None:
    """The gateway answers 413 as soon as it reads the headers; closed with the body unread, the
    connection would be reset, and a client still sending would get a broken pipe instead of the
    answer. It reads and throws away the rest first."""
    host, port = urllib.parse.urlsplit(gateway).netloc.split(":")
    body = b"{" + b" " * (8 << 20) + b"}"  # far more than the sockets' buffers hold
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(
            b"POST /api/v1/cases HTTP/1.1\r\nHost: gateway\r\n"
            b"Content-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        connection.sendall(body)  # a reset connection raises here (EPIPE or ECONNRESET)
        answer = b""
        while chunk := connection.recv(1 << 16):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 413") or head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(payload)["code"] == "41300"


def test_node_refusals_become_http_statuses(gateway: str, node: NodeProcess) -> None:
    """ALREADY_EXISTS, FAILED_PRECONDITION → 409; NOT_FOUND → 404 (also another hall's case);
    PERMISSION_DENIED → 403."""
    request_id = new_id()
    status, created = call(gateway, "POST", "/api/v1/cases", application(), request_id=request_id)
    assert status == 201
    case_id = created["data"]["bjbh"]

    # The same request id with other content: refused, the first case is untouched.
    status, answer = call(
        gateway, "POST", "/api/v1/cases", application(sqrxm="另一人"), request_id=request_id
    )
    assert status == 409 and answer["code"] == "40901", answer

    # 受理 twice (two different requests): the second is a forbidden transition.
    path = f"/api/v1/cases/{case_id}/actions/sl"
    assert call(gateway, "POST", path, {}, request_id=new_id())[0] == 200
    status, answer = call(gateway, "POST", path, {}, request_id=new_id())
    assert status == 409 and answer["code"] == "40902", answer

    status, answer = call(gateway, "GET", f"/api/v1/cases/{uuid.uuid4()}")
    assert status == 404 and answer["code"] == "40401"

    # A case the village room took in is not the township's to read or act on: to the township
    # it is as if it did not exist (404), and the answer does not name the village room.
    with node.client(VILLAGE[0]) as village:
        other = village.send(
            "submit",
            idempotency_key=f"room-{new_id()}",
            item_code="200101001000",
            applicant=common_pb2.Applicant(
                name="赵大", id_number=id_number("43090219600101001"), phone="13800000000"
            ),
            materials=[common_pb2.Material(name="身份证", sha256="ef" * 32,
                                           media_type="image/jpeg", size=10)],
        )  # fmt: skip
    status, answer = call(gateway, "GET", f"/api/v1/cases/{other.case_id}")
    assert status == 404 and answer["code"] == "40401", answer
    assert VILLAGE[0] not in json.dumps(answer, ensure_ascii=False)
    status, answer = call(
        gateway, "POST", f"/api/v1/cases/{other.case_id}/actions/sl", {}, request_id=new_id()
    )
    assert status == 404 and VILLAGE[0] not in json.dumps(answer, ensure_ascii=False)

    # A case the township handed to the county: still its case to read, no longer its to decide.
    _, handed = call(gateway, "POST", "/api/v1/cases", application(), request_id=new_id())
    handed_id = handed["data"]["bjbh"]
    for action, body in (("sl", {}), ("zb", {"jsdt": COUNTY[0], "yy": "县级办理"})):
        path = f"/api/v1/cases/{handed_id}/actions/{action}"
        assert call(gateway, "POST", path, body, request_id=new_id())[0] == 200
    with node.client(COUNTY[0]) as county:
        county.send(
            "acknowledge_handoff", case_id=handed_id, idempotency_key=f"{handed_id}/acknowledge"
        )
    decision = {"sfzy": "1", "yy": "符合条件"}
    status, answer = call(
        gateway, "POST", f"/api/v1/cases/{handed_id}/actions/jd", decision, request_id=new_id()
    )
    assert status == 403 and answer["code"] == "40301", answer
    # Without its reason a decision does not reach the node: the gateway names yy itself.
    status, answer = call(
        gateway, "POST", f"/api/v1/cases/{handed_id}/actions/jd", {"sfzy": "1"},
        request_id=new_id(),
    )  # fmt: skip
    assert status == 400 and answer["errors"][0]["field"] == "yy", answer

    status, answer = call(gateway, "POST", f"/api/v1/cases/{case_id}/actions/fly", {},
                          request_id=new_id())  # fmt: skip
    assert status == 404 and answer["code"] == "40402"
    status, answer = call(gateway, "DELETE", f"/api/v1/cases/{case_id}")
    assert status == 405
    # Every method a route does not take: 405 in the vendor's envelope, never an HTML page.
    for method, path in (("POST", "/api/v1/health"), ("PATCH", "/api/v1/cases"),
                         ("OPTIONS", f"/api/v1/cases/{case_id}")):  # fmt: skip
        status, answer = call(gateway, method, path, {}, request_id=new_id())
        assert (status, answer["code"]) == (405, "40500"), (method, path, answer)
    # A body over 1 MiB, or a Content-Length that is no number: 413, nothing read or done.
    status, answer = call(gateway, "POST", "/api/v1/cases", raw=b"{" + b" " * (1 << 20) + b"}",
                          request_id=new_id())  # fmt: skip
    assert (status, answer["code"]) == (413, "41300"), answer

    with node.client(TOWNSHIP[0]) as client:
        events = client.history(case_id).events
    assert [e.WhichOneof("event") for e in events] == ["submitted", "accepted"]


def test_token_is_required(gateway: str) -> None:
    """Without the platform's bearer token: 401 in the vendor's envelope."""
    status, answer = call(gateway, "GET", "/api/v1/health", token=None)
    assert status == 401 and answer["code"] == "40100"
    status, answer = call(gateway, "GET", "/api/v1/health", token="wrong")
    assert status == 401
    status, answer = call(gateway, "GET", "/api/v1/health")
    assert status == 200 and answer["data"]["hall"] == TOWNSHIP[0]


def test_node_down_is_503(node: NodeProcess) -> None:
    """A gateway whose node cannot be reached answers 503 with the vendor's code."""
    process = AdapterProcess(
        ["gateway", "--listen", "127.0.0.1:0", "--retries", "2", "--timeout", "3",
         *connection_args(node, TOWNSHIP[0], target=f"localhost:{closed_port()}")]
    )  # fmt: skip
    base = process.start(r"listening on (http://\S+)").group(1)
    try:
        status, answer = call(
            base, "POST", "/api/v1/cases", application(), request_id=new_id(), token=None
        )
        assert status == 503 and answer["code"] == "50301", answer
        status, answer = call(base, "GET", f"/api/v1/cases/{uuid.uuid4()}", token=None)
        assert status == 503
    finally:
        assert process.stop() == 0, process.text()


def test_an_agent_run_proof_of_life_through_vendor_fields(gateway: str, node: NodeProcess) -> None:
    """帮代办 with a 委托书, 身份核验 (生存认证) and 受理 in the vendor's fields: the node records the
    agent on every step, refuses 受理 before the check, and never sees a raw score."""
    agent = common_pb2.Applicant(
        name="陈代办", id_number=id_number("43090219820909002"), phone="13907370012"
    )
    with node.client(TOWNSHIP[0]) as client:
        client.send("register_agent", idempotency_key="gw-agent-dby-03", applicant=agent,
                    agent_id="dby-town-03")  # fmt: skip
    body = application(sxbm="040323001000", sqqd=5, dbrbh="dby-town-03", dbjs=2,
                       wtshash="ef" * 32)  # fmt: skip
    status, created = call(gateway, "POST", "/api/v1/cases", body, request_id=new_id())
    assert status == 201, created
    case = created["data"]["bjbh"]
    actions = f"/api/v1/cases/{case}/actions"
    status, refused = call(gateway, "POST", f"{actions}/sl", {"dbrbh": "dby-town-03"},
                           request_id=new_id())  # fmt: skip
    assert status == 409 and refused["code"] == "40902" and "LIVENESS" in refused["msg"], refused
    check = {"hylx": 3, "sbbh": "sb-app-0042", "hyjg": 1, "fsdj": 1, "dbrbh": "dby-town-03"}
    status, scored = call(gateway, "POST", f"{actions}/sfhy", {**check, "xsd": "0.93"},
                          request_id=new_id())  # fmt: skip
    assert status == 400 and [e["field"] for e in scored["errors"]] == ["xsd"], scored
    status, stranger = call(gateway, "POST", f"{actions}/sfhy", {**check, "dbrbh": "dby-99"},
                            request_id=new_id())  # fmt: skip
    assert status == 403 and stranger["code"] == "40301", stranger
    status, _checked = call(gateway, "POST", f"{actions}/sfhy", check, request_id=new_id())
    assert status == 200, _checked
    status, accepted = call(gateway, "POST", f"{actions}/sl", {"dbrbh": "dby-town-03"},
                            request_id=new_id())  # fmt: skip
    assert status == 200 and accepted["data"]["bjzt"] == "20", accepted
    with node.client(TOWNSHIP[0]) as client:
        events = client.history(case).events
    assert [(e.WhichOneof("event"), e.actor.agent) for e in events] == [
        ("submitted", "dby-town-03"),
        ("identity_checked", "dby-town-03"),
        ("accepted", "dby-town-03"),
    ]
    submitted = events[0].submitted
    assert submitted.channel == common_pb2.INTAKE_CHANNEL_AGENT
    assert submitted.agent.letter_sha256 == "ef" * 32
    assert events[1].identity_checked.score_band == common_pb2.SCORE_BAND_HIGH

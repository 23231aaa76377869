"""The YZ gateway's vendor model: enum tables, request parsing, error mapping, answers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import any_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from tongban.v1 import case_exchange_pb2, common_pb2

from adapters.connection import ItemCatalogue, gb11643_ok
from adapters.errors import NodeRefused, field_suffix, from_rpc_error
from adapters.gateway import (
    ACTIONS,
    BJLX_TO_KIND,
    HTTP_STATUS_OF,
    PJDJ_TO_RATING,
    SDFS_TO_METHOD,
    STATE_TO_BJZT,
    TBCXLX_TO_REASON,
    Gateway,
    VendorInputError,
    from_failure,
    idempotency_key_of,
    parse_action,
    parse_submit,
    render_case,
    vendor_field,
)
from adapters.sdk import HallClient, HallCredentials, commitment


def id_number(first_17: str) -> str:
    weights = [pow(2, 17 - i, 11) for i in range(17)]
    total = sum(int(d) * w for d, w in zip(first_17, weights, strict=True))
    return first_17 + "10X98765432"[total % 11]


def enum_values(enum: Any) -> set[int]:
    return {v.number for v in enum.DESCRIPTOR.values if v.number != 0}


def submit_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sxbm": "200202001000",
        "bjlx": 0,
        "sqrxm": " 李桂英 ",
        "sfzh": id_number("43090219480312002"),
        "lxdh": "13907371234",
        "clxx": [{"clmc": "居民身份证", "clhash": "AB" * 32, "wjlx": "image/JPEG", "wjdx": "100"}],
    }
    body.update(overrides)
    return body


# ------------------------------------------------------------------ the mapping tables


@pytest.mark.parametrize(
    ("table", "enum"),
    [
        (BJLX_TO_KIND, common_pb2.CaseKind),
        (TBCXLX_TO_REASON, common_pb2.SuspensionReason),
        (SDFS_TO_METHOD, common_pb2.DeliveryMethod),
        (PJDJ_TO_RATING, common_pb2.Rating),
    ],
)
def test_vendor_tables_are_one_to_one_and_complete(table: dict[int, int], enum: Any) -> None:
    """Every wire value has exactly one vendor code, and every code one wire value."""
    assert sorted(table.values()) == sorted(enum_values(enum))


def test_vendor_kind_codes() -> None:
    """This vendor: 0 即办 1 承诺 2 上报 3 并联."""
    assert BJLX_TO_KIND == {
        0: common_pb2.CASE_KIND_IMMEDIATE,
        1: common_pb2.CASE_KIND_PROMISED,
        2: common_pb2.CASE_KIND_ESCALATED,
        3: common_pb2.CASE_KIND_JOINT,
    }


def test_every_state_has_a_distinct_vendor_status() -> None:
    assert set(STATE_TO_BJZT) == enum_values(common_pb2.CaseState)
    codes = [code for code, _name in STATE_TO_BJZT.values()]
    assert len(set(codes)) == len(codes)


def test_rating_is_counted_from_the_best() -> None:
    """The vendor's 1 is 非常满意, the wire's 5."""
    assert PJDJ_TO_RATING[1] == common_pb2.RATING_VERY_SATISFIED
    assert PJDJ_TO_RATING[5] == common_pb2.RATING_VERY_DISSATISFIED


def test_every_hall_action_except_submit_has_a_vendor_action() -> None:
    """Every command of the CaseExchange service (not the node admin's HallAdmin commands)."""
    rpcs = case_exchange_pb2.DESCRIPTOR.services_by_name["CaseExchange"].methods_by_name
    wire = {
        f.name
        for f in case_exchange_pb2.Command.DESCRIPTOR.oneofs_by_name["action"].fields
        if "".join(part.title() for part in f.name.split("_")) in rpcs
    }
    assert "register_hall" not in wire and "accept" in wire
    # (staff_window sets the hall's own window roster, AB岗: no case action of the vendor's; a
    # locker reports its pickups itself with the code beside the signed bytes, through the SDK;
    # 预约办's booking and cancellation have endpoints of their own: /api/v1/appointments;
    # register_agent and retire_agent keep the hall's roster of 代办员: none either.)
    own_endpoints = {"submit", "staff_window", "pick_up_from_locker"}
    appointments = {"book_appointment", "cancel_appointment"}
    agents = {"register_agent", "retire_agent"}
    assert {spec.action for spec in ACTIONS.values()} == (
        wire - own_endpoints - appointments - agents
    )


def test_grpc_codes_map_to_the_agreed_http_statuses() -> None:
    expected = {
        grpc.StatusCode.INVALID_ARGUMENT: 400,
        grpc.StatusCode.NOT_FOUND: 404,
        grpc.StatusCode.FAILED_PRECONDITION: 409,
        grpc.StatusCode.PERMISSION_DENIED: 403,
        grpc.StatusCode.UNAUTHENTICATED: 401,
        grpc.StatusCode.ALREADY_EXISTS: 409,
        grpc.StatusCode.UNAVAILABLE: 503,
        grpc.StatusCode.DEADLINE_EXCEEDED: 504,
        grpc.StatusCode.ABORTED: 409,
    }
    for code, status in expected.items():
        assert HTTP_STATUS_OF[code][0] == status
        assert from_failure(NodeRefused.of(code, "x")).status == status
    assert from_failure(NodeRefused.of(grpc.StatusCode.INTERNAL, "boom")).status == 502


def test_every_row_of_the_documented_status_table_is_what_the_gateway_answers() -> None:
    """docs/adapters.md's table (gRPC status → HTTP status and the vendor's ``code``), row by
    row, against :func:`from_failure`; "anything else" checked with INTERNAL and DATA_LOSS."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "adapters.md").read_text()
    rows = re.findall(r"^\| ([A-Z_ /()a-z]+?) \| (\d{3}) \| `(\d{5})` \|", text, re.MULTILINE)
    checked = 0
    for name, status, code in rows:
        names = [part.strip() for part in name.split("/")]
        grpc_name = names[-1]
        codes = (
            [grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS]
            if grpc_name == "anything else"
            else [grpc.StatusCode[grpc_name]]
        )
        for grpc_code in codes:
            answer = from_failure(NodeRefused.of(grpc_code, "x"))
            assert (answer.status, answer.body["code"]) == (int(status), code), grpc_code
            checked += 1
    assert checked >= 13  # every row of the table was read


# ------------------------------------------------------------------ parsing


def test_parse_submit_maps_the_vendor_fields() -> None:
    body = submit_body(sfzh=id_number("43090219480312002").lower(), bldq="430902104000", jbr="王")
    request = parse_submit(body)
    assert request.kind == common_pb2.CASE_KIND_IMMEDIATE
    assert request.operator == "王"
    submit = request.submit
    assert submit.item_code == "200202001000" and submit.competent_region == "430902104000"
    # The clear applicant stays beside the wire message: only commitments are ever signed.
    assert not submit.HasField("applicant")
    assert request.applicant.name == "李桂英"
    assert request.applicant.id_number == id_number("43090219480312002")
    assert request.applicant.phone == "13907371234"
    assert "李桂英" not in repr(request)
    [material] = submit.materials
    assert material.sha256 == "ab" * 32 and material.media_type == "image/jpeg"
    assert material.size == 100


def test_parse_submit_accepts_codes_as_strings() -> None:
    assert parse_submit(submit_body(bjlx="1")).kind == common_pb2.CASE_KIND_PROMISED


def test_parse_submit_names_every_bad_field() -> None:
    body = submit_body(sxbm="12", bjlx=True, sqrxm=5, sfzh="430902194803120021", lxdh="", clxx=[])
    del body["lxdh"]
    with pytest.raises(VendorInputError) as caught:
        parse_submit(body)
    fields = {e.field: e.msg for e in caught.value.errors}
    assert set(fields) == {"sxbm", "bjlx", "sqrxm", "sfzh", "lxdh", "clxx"}
    assert "校验位" in fields["sfzh"]
    assert fields["lxdh"] == "必填"


def test_parse_submit_names_material_entries() -> None:
    body = submit_body(clxx=[{"clmc": "", "clhash": "00" * 32, "wjlx": "image/png", "wjdx": -1}])
    with pytest.raises(VendorInputError) as caught:
        parse_submit(body)
    assert {e.field for e in caught.value.errors} == {"clxx[0].clmc", "clxx[0].wjdx"}


@pytest.mark.parametrize(
    ("action", "body", "expected"),
    [
        ("sl", {}, case_exchange_pb2.Accept(case_id="c")),
        ("bysl", {"yy": "不符合"}, case_exchange_pb2.RejectAtIntake(case_id="c", reason="不符合")),
        (
            "bzgz",
            {"qsclqd": ["户口簿"], "gzs": "请补"},
            case_exchange_pb2.RequestCorrection(case_id="c", missing=["户口簿"], notice="请补"),
        ),
        ("zb", {"jsdt": "h2"}, case_exchange_pb2.HandOff(case_id="c", to_hall="h2")),
        (
            "tbcx",
            {"tbcxlx": "4"},
            case_exchange_pb2.Suspend(
                case_id="c", reason=common_pb2.SUSPENSION_REASON_PUBLIC_NOTICE
            ),
        ),
        (
            "jd",
            {"sfzy": "0", "yy": "不符合条件"},
            case_exchange_pb2.Decide(case_id="c", approved=False, reason="不符合条件"),
        ),
        (
            "sd",
            {"sdfs": 0},
            case_exchange_pb2.Deliver(case_id="c", method=common_pb2.DELIVERY_METHOD_WINDOW),
        ),
        (
            "pj",
            {"pjdj": 4, "pjnr": "慢"},
            case_exchange_pb2.Rate(
                case_id="c", rating=common_pb2.RATING_NOT_SATISFIED, comment="慢"
            ),
        ),
        (
            "lb",
            {"rwlb": [{"rwbh": "t1", "dtbm": "h-amr", "bm": "市场监管"}]},
            case_exchange_pb2.OpenJointTasks(
                case_id="c",
                tasks=[common_pb2.JointTask(task_id="t1", hall_id="h-amr", department="市场监管")],
            ),
        ),
        (
            "lbwc",
            {"rwbh": "t1", "sfty": 1},
            case_exchange_pb2.CompleteJointTask(case_id="c", task_id="t1", approved=True),
        ),
    ],
)
def test_parse_action(action: str, body: dict[str, Any], expected: Any) -> None:
    wire_action, message, operator = parse_action(action, "c", {**body, "jbr": "op"})
    assert wire_action == ACTIONS[action].action
    assert message == expected
    assert operator == "op"


def test_parse_action_names_missing_fields() -> None:
    with pytest.raises(VendorInputError) as caught:
        parse_action("jd", "c", {"sfzy": "maybe", "yy": "依据充分"})
    assert [e.field for e in caught.value.errors] == ["sfzy"]
    with pytest.raises(VendorInputError) as caught:
        parse_action("lb", "c", {"rwlb": [{"rwbh": "t1"}]})
    assert {e.field for e in caught.value.errors} == {"rwlb[0].dtbm", "rwlb[0].bm"}


def test_hub_fields_are_named_the_vendors_way() -> None:
    assert vendor_field("applicant.id_number") == "sfzh"
    assert vendor_field("item_code") == "sxbm"
    assert vendor_field("material.sha256") == "clxx"
    assert vendor_field("to_hall") == "jsdt"
    assert vendor_field("something.unknown") == ""
    failure = NodeRefused.of(
        grpc.StatusCode.INVALID_ARGUMENT,
        "bad",
        (("command.submit.applicant.id_number", "'<redacted>': wrong"),),
    )
    response = from_failure(failure, request_id="r-1")
    assert response.status == 400
    assert response.body["errors"] == [{"field": "sfzh", "msg": "'<redacted>': wrong"}]
    assert response.body["requestId"] == "r-1"
    # The node names a refused clear value by its place in SignedCommand.personal.
    personal = [
        case_exchange_pb2.PersonalValue(field=f"submit.applicant.{name}")
        for name in ("name", "id_number", "phone")
    ]
    failure = NodeRefused.of(
        grpc.StatusCode.INVALID_ARGUMENT,
        "bad",
        (("personal[2].value", "'<redacted>': not a phone number"), ("command.header.x", "y")),
    )
    resolved = failure.resolve_personal(personal)
    assert resolved.violations[0][0] == "command.submit.applicant.phone"
    assert resolved.violations[1] == ("command.header.x", "y")
    assert from_failure(resolved).body["errors"][0]["field"] == "lxdh"
    assert type(resolved) is type(failure)  # still a CommandInvalid
    assert vendor_field(field_suffix("command.submit.materials[0].sha256")) == "clxx"


def test_request_ids_become_prefixed_idempotency_keys() -> None:
    assert idempotency_key_of("abc12") == "yz-abc12"
    for bad in ("abcd", "请求编号12345", "x" * 126, "tab\there1"):
        with pytest.raises(ValueError, match="ASCII"):
            idempotency_key_of(bad)


def test_render_case_in_the_vendors_shape() -> None:
    stamp = Timestamp(seconds=1_710_720_000)  # 2024-03-18 00:00:00 UTC
    view = case_exchange_pb2.CaseView(
        case_id="c-1",
        version=3,
        state=common_pb2.CASE_STATE_HANDLING,
        item_code="070303001000",
        item_name="户口迁移",
        kind=common_pb2.CASE_KIND_PROMISED,
        mode=common_pb2.CROSS_REGION_MODE_LOCAL,
        holder="h1",
        promised_days=5,
        rating=common_pb2.RATING_SATISFIED,
        allowed_commands=["suspend", "decide", "withdraw"],
        submitted_at=stamp,
    )
    view.approved = True
    data = render_case(view)
    assert data["bjzt"] == "30" and data["bjztmc"] == "办理中"
    assert data["bjlx"] == 1 and data["bjlxmc"] == "承诺件"
    assert data["pjdj"] == 2 and data["sfzy"] == "1" and data["cnsx"] == 5
    assert data["kcz"] == ["tbcx", "jd", "ch"]
    assert data["sqsj"] == "2024-03-18 08:00:00"  # Beijing time
    assert data["gxsj"] is None


def test_gb11643() -> None:
    assert gb11643_ok("11010519491231002X")
    assert not gb11643_ok("110105194912310021")
    assert not gb11643_ok("short")


# ------------------------------------------------------------------ routing (no node involved)


class NoNode:
    """Stands in for the SDK client where a request must be answered without the node."""

    class credentials:  # noqa: N801 - mimics the attribute of HallClient
        hall_id = "h1"

    def send(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("must not reach the node")

    def get_case(self, case_id: str) -> Any:
        raise AssertionError("must not reach the node")


def gateway_app(token: str = "") -> Gateway:
    def fetch() -> list[common_pb2.ServiceItem]:
        raise AssertionError("must not reach the node")

    return Gateway(NoNode(), ItemCatalogue(fetch), token=token)  # type: ignore[arg-type]


def test_routes_answered_without_the_node() -> None:
    app = gateway_app()
    assert app.handle("GET", "/api/v1/health", {}, b"").status == 200
    assert app.handle("GET", "/api/v1/nope", {}, b"").status == 404
    response = app.handle("GET", "/api/v1/cases", {}, b"")
    assert response.status == 405 and response.headers["Allow"] == "POST"
    response = app.handle("POST", "/api/v1/cases", {}, b"{}")
    assert response.status == 400 and response.body["errors"][0]["field"] == "X-Request-Id"
    response = app.handle(
        "POST", "/api/v1/cases/x/actions/sl", {"X-Request-Id": "req-00001"}, b"{}"
    )
    assert response.status == 400 and response.body["errors"][0]["field"] == "bjbh"
    response = app.handle("POST", "/api/v1/cases", {"X-Request-Id": "req-00001"}, b"[1]")
    assert response.status == 400 and response.body["errors"][0]["field"] == "body"


def test_token_checked_first() -> None:
    app = gateway_app(token="s3cret")
    assert app.handle("GET", "/api/v1/health", {}, b"").status == 401
    headers = {"Authorization": "Bearer s3cret"}
    assert app.handle("GET", "/api/v1/health", headers, b"").status == 200


# ------------------------------------------------------------------ what the gateway signs


class CallError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A refusal as grpcio raises it, with the hub's ``google.rpc.Status`` details."""

    def __init__(self, code: grpc.StatusCode, message: str, *violations: tuple[str, str]) -> None:
        super().__init__(message)
        self._code, self._message = code, message
        status = status_pb2.Status(code=code.value[0], message=message)
        if violations:
            detail = any_pb2.Any()
            detail.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                        for f, d in violations
                    ]
                )
            )
            status.details.append(detail)
        self._trailing = (("grpc-status-details-bin", status.SerializeToString()),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> Any:
        return self._trailing

    def initial_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


class RecordingNode(HallClient):
    """The SDK client, signing for real, with the node replaced: it records the signed commands
    and answers like the node's idempotency (the first result for the same key and payload,
    personal fields compared by their clear values, since every signing has fresh salts)."""

    def __init__(self) -> None:
        credentials = HallCredentials("h1", "430902104000", Ed25519PrivateKey.generate())
        # Never connects: signing needs no network, and send_signed below never calls it.
        super().__init__(grpc.insecure_channel("localhost:1"), credentials, operator="yz-gateway")
        self.signed: list[case_exchange_pb2.SignedCommand] = []
        self.first: dict[str, bytes] = {}
        self.refusal: grpc.RpcError | None = None

    def send_signed(
        self, action: str, signed: case_exchange_pb2.SignedCommand
    ) -> case_exchange_pb2.CommandReply:
        """As HallClient.send_signed: a failed call leaves as the SDK's NodeRefused."""
        self.signed.append(signed)
        if self.refusal is not None:
            raise from_rpc_error(self.refusal)
        command = case_exchange_pb2.Command.FromString(signed.command)
        part = getattr(command, action)
        if action == "submit":
            part.ClearField("applicant")
        clear = sorted((v.field, v.value) for v in signed.personal)
        payload = part.SerializeToString(deterministic=True) + repr(clear).encode()
        key = command.header.idempotency_key
        case_id = "00000000-0000-4000-8000-000000000001"
        if key in self.first:
            if self.first[key] != payload:
                raise from_rpc_error(
                    CallError(grpc.StatusCode.ALREADY_EXISTS, "key reused with another payload")
                )
            return case_exchange_pb2.CommandReply(case_id=case_id, version=1, replayed=True)
        self.first[key] = payload
        return case_exchange_pb2.CommandReply(case_id=case_id, version=1)

    def get_case(self, case_id: str) -> case_exchange_pb2.CaseView:
        return case_exchange_pb2.CaseView(case_id=case_id, version=1)


@pytest.fixture
def recording() -> Iterator[tuple[Gateway, RecordingNode]]:
    """A gateway whose client signs for real and whose node is a RecordingNode."""
    node = RecordingNode()
    items = [common_pb2.ServiceItem(code="200202001000", kind=common_pb2.CASE_KIND_IMMEDIATE)]
    yield Gateway(node, ItemCatalogue(lambda: items)), node
    node.close()


def post_submit(app: Gateway, request_id: str, **overrides: Any) -> Any:
    body = json.dumps(submit_body(**overrides)).encode()
    return app.handle("POST", "/api/v1/cases", {"X-Request-Id": request_id}, body)


def test_the_gateway_never_signs_clear_personal_data(
    recording: tuple[Gateway, RecordingNode],
) -> None:
    """The signed applicant fields are 32-byte commitments that the clear values sent beside the
    bytes open; no clear value is in the signed bytes."""
    app, node = recording
    assert post_submit(app, "req-00001", jbr="窗口-王敏").status == 201
    [signed] = node.signed
    node.credentials.signing_key.public_key().verify(signed.signature, signed.command)
    command = case_exchange_pb2.Command.FromString(signed.command)
    assert command.header.node == "tongban/43" and command.header.operator == "窗口-王敏"
    assert not command.header.deferred and command.header.idempotency_key == "yz-req-00001"
    clear = {"name": "李桂英", "id_number": id_number("43090219480312002"), "phone": "13907371234"}
    assert {v.field: v.value for v in signed.personal} == {
        f"submit.applicant.{name}": value for name, value in clear.items()
    }
    for value in signed.personal:
        digest = getattr(command.submit.applicant, value.field.rsplit(".", 1)[1])
        assert len(digest) == 32 and len(value.salt) == 32
        assert commitment(value.field, value.salt, value.value) == digest
        assert value.value.encode() not in signed.command
    assert len({value.salt for value in signed.personal}) == 3


def test_a_retried_request_is_signed_anew_with_fresh_salts(
    recording: tuple[Gateway, RecordingNode],
) -> None:
    """The vendor's retry (same X-Request-Id) is signed again: the same key and clear values,
    fresh salts (so other commitments); the node answers with its first result. Other content
    under the same id is a 409."""
    app, node = recording
    assert post_submit(app, "req-00001").status == 201
    again = post_submit(app, "req-00001")
    assert again.status == 200 and again.body["data"]["cfqq"] is True
    first, retry = node.signed
    assert [(v.field, v.value) for v in first.personal] == [
        (v.field, v.value) for v in retry.personal
    ]
    assert {v.salt for v in first.personal}.isdisjoint(v.salt for v in retry.personal)
    a, b = (case_exchange_pb2.Command.FromString(s.command) for s in (first, retry))
    assert a.header.idempotency_key == b.header.idempotency_key == "yz-req-00001"
    assert a.submit.applicant != b.submit.applicant
    conflict = post_submit(app, "req-00001", sqrxm="另一人")
    assert conflict.status == 409 and conflict.body["code"] == "40901"


def test_a_refused_personal_value_is_named_by_the_vendors_field_and_never_echoed(
    recording: tuple[Gateway, RecordingNode],
) -> None:
    app, node = recording
    node.refusal = CallError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "personal[1].value: '<redacted>': not a valid resident ID number",
        ("personal[1].value", "'<redacted>': not a valid resident ID number"),
    )
    response = post_submit(app, "req-00003")
    assert response.status == 400
    assert response.body["errors"] == [
        {"field": "sfzh", "msg": "'<redacted>': not a valid resident ID number"}
    ]
    text = json.dumps(response.body, ensure_ascii=False)
    assert id_number("43090219480312002") not in text and "李桂英" not in text


# ------------------------------------------------------------------ reasons the node requires


@pytest.mark.parametrize(("action", "body"), [
    ("jd", {"sfzy": "1"}),  # an approval states its grounds too
    ("jd", {"sfzy": "0"}),
    ("sb", {"jsdt": "hn-ziyang-hall"}),
    ("bysl", {}),
    ("ch", {}),
])  # fmt: skip
def test_a_reason_the_node_requires_is_required_by_the_gateway(
    action: str, body: dict[str, Any]
) -> None:
    """``yy`` is required wherever the node refuses an empty reason (决定, 上报, 不予受理, 撤回);
    the gateway names it itself instead of forwarding a command the node would refuse."""
    with pytest.raises(VendorInputError) as caught:
        parse_action(action, "c", body)
    [error] = caught.value.errors
    assert error.field == "yy" and error.msg.startswith("必填")
    if action == "jd":
        assert "理由" in error.msg


def test_a_hand_off_needs_no_reason() -> None:
    _, message, _ = parse_action("zb", "c", {"jsdt": "hn-ziyang-hall"})
    assert message == case_exchange_pb2.HandOff(case_id="c", to_hall="hn-ziyang-hall")


def test_the_delivery_custody_actions_read_their_fields() -> None:
    """邮寄寄出, 智能柜入柜 (the code's keyed hash only, 72 hours by default) and 退回窗口."""
    action, post, _ = parse_action("yj", "c", {"kdgs": "EMS", "kddh": "1190000000001"})
    assert (action, post.carrier, post.tracking_number) == (
        "dispatch_by_post",
        "EMS",
        "1190000000001",
    )
    action, locker, _ = parse_action(
        "rg", "c", {"gzbh": "ZZ-E-001", "gkh": "A03", "qjmzy": "ab" * 32}
    )
    assert (action, locker.locker_id, locker.compartment, locker.hold_hours) == (
        "deposit_in_locker", "ZZ-E-001", "A03", 72,
    )  # fmt: skip
    action, back, _ = parse_action("thck", "c", {"yy": "退件", "ck": "发证窗口"})
    assert (action, back.reason, back.window) == ("return_to_window", "退件", "发证窗口")
    with pytest.raises(VendorInputError) as caught:
        parse_action("rg", "c", {"gzbh": "ZZ-E-001", "gkh": "A03", "qjmzy": "123456", "bcsc": 0})
    assert {e.field for e in caught.value.errors} == {"qjmzy", "bcsc"}

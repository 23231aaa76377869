"""A JSON-over-HTTP gateway for the 云政 (YZ) provincial online service platform.

The YZ platform is a web-based 一体化在线政务服务平台 product (an invented but typical vendor
model): its back end posts cases as flat JSON with pinyin-initial field names, numbers its enums
its own way, and expects every answer in its ``{code, msg, data}`` envelope. This gateway lets
such a platform work with a Tongban node without knowing gRPC:

- ``POST /api/v1/cases`` — 收件 (submit) from the vendor's JSON;
- ``POST /api/v1/cases/{bjbh}/actions/{action}`` — one lifecycle step, named the vendor's way
  (``sl`` 受理, ``bj`` 办结 … see :data:`ACTIONS`);
- ``GET /api/v1/cases/{bjbh}`` — the case in the vendor's shape;
- ``GET /api/v1/health`` — liveness of the gateway itself (does not call the node).

Each request is validated against the vendor's schema first, so a bad field is answered with a
400 that names the vendor's field (``sfzh``, not ``applicant.id_number``); what only the node can
check (an unknown item, a forbidden transition) comes back from gRPC and is translated the same
way, with gRPC status codes mapped to HTTP statuses (:data:`HTTP_STATUS_OF`).

The vendor's request id header (``X-Request-Id``) becomes the command's idempotency key, so when
the platform retries a request after a timeout the node returns the first result instead of
taking in a second case.

Personal data is never signed: the applicant's name, ID number and phone are given to the SDK in
clear, which puts only salted commitments into the signed ``Command`` and sends the clear values
beside it (``SignedCommand.personal``, docs/wire-api.md). Request bodies are never logged, and
refusals never echo a personal value.

Configuration is a :class:`GatewayConfig` built by ``adapters.cli``; the server is the standard
library's ``ThreadingHTTPServer`` (the gateway is I/O-bound and small: no framework needed).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from tongban.v1 import case_exchange_pb2, common_pb2

from adapters import gateway_appointments as appointments
from adapters.connection import ItemCatalogue, gb11643_ok, kind_name
from adapters.errors import FieldError, InputError, NodeRefused, VendorInputError, field_suffix
from adapters.sdk import HallClient

log = logging.getLogger("tongban.adapters.gateway")

K = common_pb2.CaseKind
S = common_pb2.CaseState

# ============================================================================ the vendor's model
# One explicit table per enum. Keys are the vendor's codes exactly as its JSON carries them.

#: 办件类型 (``bjlx``) as the YZ platform numbers it: 0 即办 1 承诺 2 上报 3 并联.
#: (The legacy register of ``adapters.batch_import`` numbers the same kinds 1 承诺 2 即办 3 上报
#: 4 联报: never share these tables between vendors.)
BJLX_TO_KIND: dict[int, int] = {
    0: K.CASE_KIND_IMMEDIATE,  # 即办件
    1: K.CASE_KIND_PROMISED,  # 承诺件
    2: K.CASE_KIND_ESCALATED,  # 上报件
    3: K.CASE_KIND_JOINT,  # 并联审批件 (联办)
}
KIND_TO_BJLX = {kind: code for code, kind in BJLX_TO_KIND.items()}
BJLX_NAMES = {0: "即办件", 1: "承诺件", 2: "上报件", 3: "并联件"}

#: 办件状态 (``bjzt``): the vendor's two-digit status codes and their display names.
STATE_TO_BJZT: dict[int, tuple[str, str]] = {
    S.CASE_STATE_RECEIVED: ("10", "已收件"),
    S.CASE_STATE_AWAITING_CORRECTION: ("11", "待补正"),
    S.CASE_STATE_ACCEPTED: ("20", "已受理"),
    S.CASE_STATE_REJECTED_AT_INTAKE: ("21", "不予受理"),
    S.CASE_STATE_HANDLING: ("30", "办理中"),
    S.CASE_STATE_HANDED_OFF: ("31", "转办中"),
    S.CASE_STATE_ESCALATED: ("32", "已上报"),
    S.CASE_STATE_SUSPENDED: ("33", "特别程序"),
    S.CASE_STATE_JOINT: ("34", "并联办理中"),
    S.CASE_STATE_DECIDED: ("40", "已决定"),
    S.CASE_STATE_CONCLUDED: ("50", "已办结"),
    S.CASE_STATE_CERTIFICATE_ISSUED: ("51", "已制证"),
    S.CASE_STATE_IN_POST: ("55", "邮寄中"),
    S.CASE_STATE_IN_LOCKER: ("56", "待取件"),
    S.CASE_STATE_DELIVERED: ("60", "已送达"),
    S.CASE_STATE_RATED: ("70", "已评价"),
    S.CASE_STATE_RECTIFYING: ("71", "整改中"),
    S.CASE_STATE_ARCHIVED: ("90", "已归档"),
    S.CASE_STATE_WITHDRAWN: ("99", "已撤回"),
}

#: 通办类型 (``tblx``): how intake and decision regions relate.
MODE_TO_TBLX: dict[int, str] = {
    common_pb2.CROSS_REGION_MODE_LOCAL: "0",  # 本地办理
    common_pb2.CROSS_REGION_MODE_FULLY_ONLINE: "1",  # 全程网办
    common_pb2.CROSS_REGION_MODE_OFFSITE_PROXY: "2",  # 异地代收代办
    common_pb2.CROSS_REGION_MODE_MULTI_SITE: "3",  # 多地联办
}

#: 特别程序类型 (``tbcxlx``).
TBCXLX_TO_REASON: dict[int, int] = {
    1: common_pb2.SUSPENSION_REASON_HEARING,  # 听证
    2: common_pb2.SUSPENSION_REASON_INSPECTION,  # 现场勘验
    3: common_pb2.SUSPENSION_REASON_EXPERT_REVIEW,  # 专家评审
    4: common_pb2.SUSPENSION_REASON_PUBLIC_NOTICE,  # 公示
}

#: 送达方式 (``sdfs``): zero-based, like the vendor's 办件类型.
SDFS_TO_METHOD: dict[int, int] = {
    0: common_pb2.DELIVERY_METHOD_WINDOW,  # 窗口领取
    1: common_pb2.DELIVERY_METHOD_POST,  # 邮寄送达
    2: common_pb2.DELIVERY_METHOD_ONLINE,  # 网上送达
    3: common_pb2.DELIVERY_METHOD_OFFSITE_WINDOW,  # 异地窗口领取
    4: common_pb2.DELIVERY_METHOD_KIOSK,  # 自助打印 (the kiosk signs it itself, as a kiosk)
    5: common_pb2.DELIVERY_METHOD_LOCKER,  # 智能柜取件 (the node answers: use pick_up_from_locker)
}

#: 评价等级 (``pjdj``): the vendor counts from the best (1 非常满意) to the worst (5 非常不满意),
#: the reverse of the wire enum.
PJDJ_TO_RATING: dict[int, int] = {
    1: common_pb2.RATING_VERY_SATISFIED,  # 非常满意
    2: common_pb2.RATING_SATISFIED,  # 满意
    3: common_pb2.RATING_BASICALLY_SATISFIED,  # 基本满意
    4: common_pb2.RATING_NOT_SATISFIED,  # 不满意
    5: common_pb2.RATING_VERY_DISSATISFIED,  # 非常不满意
}
RATING_TO_PJDJ = {rating: code for code, rating in PJDJ_TO_RATING.items()}

#: 申请渠道 (``sqqd``) on 收件: how the applicant reached the hall.
SQQD_TO_CHANNEL: dict[int, int] = {
    1: common_pb2.INTAKE_CHANNEL_WINDOW,  # 窗口
    2: common_pb2.INTAKE_CHANNEL_ONLINE,  # 网上（门户、App、小程序）
    3: common_pb2.INTAKE_CHANNEL_PHONE,  # 电话
    4: common_pb2.INTAKE_CHANNEL_HOME_VISIT,  # 上门
    5: common_pb2.INTAKE_CHANNEL_AGENT,  # 帮代办
    6: common_pb2.INTAKE_CHANNEL_KIOSK,  # 自助终端
}

#: 代办角色 (``dbjs``): 1 帮办 (guiding), 2 代办 (acting for the applicant).
DBJS_TO_ROLE: dict[int, int] = {
    1: common_pb2.AGENT_ROLE_GUIDING,
    2: common_pb2.AGENT_ROLE_ACTING,
}

#: 核验类型 (``hylx``) of a 身份核验.
HYLX_TO_METHOD: dict[int, int] = {
    1: common_pb2.IDENTITY_CHECK_METHOD_ID_CARD_READ,  # 身份证识别（读卡）
    2: common_pb2.IDENTITY_CHECK_METHOD_FACE_MATCH,  # 人脸识别
    3: common_pb2.IDENTITY_CHECK_METHOD_LIVENESS,  # 生存认证
}

#: 核验结果 (``hyjg``): 1 通过, 0 不通过.
HYJG_TO_RESULT: dict[int, int] = {
    1: common_pb2.CHECK_RESULT_PASSED,
    0: common_pb2.CHECK_RESULT_FAILED,
}

#: 分数等级 (``fsdj``): 1 高, 2 中, 3 低. The vendor's raw similarity score is never taken.
FSDJ_TO_BAND: dict[int, int] = {
    1: common_pb2.SCORE_BAND_HIGH,
    2: common_pb2.SCORE_BAND_MEDIUM,
    3: common_pb2.SCORE_BAND_LOW,
}

#: Fields a vendor's 身份核验 might carry that hold biometric data or a raw score: refused by
#: name (never read, logged or forwarded), so a platform learns to leave them out.
BIOMETRIC_FIELDS = ("xsd", "zp", "rlzp", "tz", "rltz", "score", "photo")

#: The vendor's request id header; it becomes the idempotency key (with :data:`KEY_PREFIX`).
REQUEST_ID_HEADER = "X-Request-Id"
#: Namespaces the gateway's keys, so they cannot collide with another adapter's keys at the same
#: hall (keys are scoped per hall at the node).
KEY_PREFIX = "yz-"
#: Largest request body accepted (commands carry material digests, never the files).
MAX_BODY_BYTES = 1024 * 1024
#: After refusing a body that is too large, the gateway reads and throws away up to this much of
#: it, for at most LINGER_S seconds, before it closes the connection (a "lingering close", as web
#: servers do): closed with the body unread, the connection is reset, and a client still sending
#: gets that reset (a broken pipe) instead of the 413.
LINGER_BYTES = 64 * MAX_BODY_BYTES
LINGER_S = 5.0
#: The vendor shows times in Beijing time as ``yyyy-MM-dd HH:mm:ss``.
BEIJING = timezone(timedelta(hours=8), "CST")


# ============================================================================ errors and envelope

#: gRPC status → (HTTP status, the vendor's error code, its message prefix).
HTTP_STATUS_OF: dict[grpc.StatusCode, tuple[int, str, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "40001", "参数校验失败"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "40002", "参数超出范围"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "40101", "身份认证或签名校验失败"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "40301", "无权办理该办件"),
    grpc.StatusCode.NOT_FOUND: (404, "40401", "办件不存在"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "40901", "请求编号已用于其他内容的请求"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "40902", "办件当前状态不允许该操作"),
    grpc.StatusCode.ABORTED: (409, "40903", "办件已被其他操作更新，请重试"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "42901", "请求过多，请稍后重试"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "50101", "通办节点不支持该操作"),
    grpc.StatusCode.UNAVAILABLE: (503, "50301", "通办节点暂不可用，请稍后重试"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "50401", "通办节点响应超时，请稍后重试"),
}
#: Anything else from the node (INTERNAL, UNKNOWN, ...) is the upstream's fault: 502.
UPSTREAM_ERROR = (502, "50201", "通办节点处理异常")

#: The hub's field paths (after ``command.<action>.``) → the vendor's field names, so a refusal
#: the node makes still names the field the vendor sent. Looked up by full path, then last part.
VENDOR_FIELD_OF_HUB: dict[str, str] = {
    "item_code": "sxbm",
    "applicant.name": "sqrxm",
    "applicant.id_number": "sfzh",
    "applicant.phone": "lxdh",
    "materials": "clxx",
    "material": "clxx",
    "sha256": "clxx",
    "media_type": "clxx",
    "size": "clxx",
    "competent_region": "bldq",
    "case_id": "bjbh",
    "to_hall": "jsdt",
    "reason": "yy",
    "missing": "qsclqd",
    "notice": "gzs",
    "tasks": "rwlb",
    "joint_task": "rwlb",
    "task_id": "rwbh",
    "certificate_id": "zzbh",
    "type_code": "zzlxdm",
    "issuer_code": "fzjgdm",
    "authority": "fzjg",
    "valid_until": "yxqz",
    "method": "sdfs",
    "rating": "pjdj",
    "comment": "pjnr",
    "report": "zgbg",
    "follow_up": "hfjg",
    "note": "sm",
    "operator": "jbr",
    "channel": "sqqd",
    "window": "ckmc",
    "device_id": "sbbh",
    "result": "hyjg",
    "score_band": "fsdj",
    "agent": "dbrbh",
    "agent_id": "dbrbh",
    "role": "dbjs",
    "letter_sha256": "wtshash",
    "idempotency_key": REQUEST_ID_HEADER,
    **appointments.VENDOR_FIELDS,  # 预约办
}


def vendor_field(hub_field: str) -> str:
    """The vendor's name of a field the node refused ('' when there is no good match)."""
    if hub_field in VENDOR_FIELD_OF_HUB:
        return VENDOR_FIELD_OF_HUB[hub_field]
    for part in reversed(hub_field.split(".")):
        if part in VENDOR_FIELD_OF_HUB:
            return VENDOR_FIELD_OF_HUB[part]
    return ""


@dataclass
class Response:
    """An HTTP answer in the vendor's envelope."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def envelope(
    code: str,
    msg: str,
    data: Any = None,
    *,
    request_id: str = "",
    errors: Sequence[FieldError] = (),
) -> dict[str, Any]:
    """The YZ envelope: ``{"code", "msg", "data", "errors", "requestId"}``; "00000" is success."""
    body: dict[str, Any] = {"code": code, "msg": msg, "data": data}
    if errors:
        body["errors"] = [{"field": e.field, "msg": e.msg} for e in errors]
    if request_id:
        body["requestId"] = request_id
    return body


def ok(data: Any, *, status: int = 200, request_id: str = "") -> Response:
    """A success answer."""
    return Response(status, envelope("00000", "成功", data, request_id=request_id))


def bad_request(errors: list[FieldError], *, request_id: str = "") -> Response:
    """A 400 naming every bad field."""
    detail = "；".join(f"{e.field}: {e.msg}" for e in errors)
    return Response(
        400, envelope("40001", f"参数校验失败：{detail}", request_id=request_id, errors=errors)
    )


def from_failure(failure: NodeRefused, *, request_id: str = "") -> Response:
    """The vendor's answer to a refusal or failure from the node."""
    status, code, prefix = HTTP_STATUS_OF.get(failure.code, UPSTREAM_ERROR)
    errors: list[FieldError] = []
    for hub_field, description in failure.violations:
        errors.append(FieldError(vendor_field(field_suffix(hub_field)) or hub_field, description))
    return Response(
        status,
        envelope(code, f"{prefix}：{failure.message}", request_id=request_id, errors=errors),
    )


# ============================================================================ request parsing


class _Fields:
    """Reads a vendor JSON object field by field, collecting every error before giving up."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self.body = body
        self.errors: list[FieldError] = []

    def fail(self, name: str, msg: str) -> None:
        self.errors.append(FieldError(name, msg))

    def raise_if_any(self) -> None:
        if self.errors:
            raise VendorInputError(self.errors)

    def text(
        self,
        name: str,
        *,
        required: bool = True,
        max_length: int = 512,
        pattern: str = "",
        missing: str = "必填",
    ) -> str:
        """A string field; ``missing`` is the message when a required one is absent."""
        value = self.body.get(name)
        if value is None or value == "":
            if required:
                self.fail(name, missing)
            return ""
        if not isinstance(value, str):
            self.fail(name, f"应为字符串，收到 {type(value).__name__}")
            return ""
        value = value.strip()
        if required and not value:
            self.fail(name, missing)
        elif len(value) > max_length:
            self.fail(name, f"长度不能超过 {max_length}")
        elif pattern and not re.fullmatch(pattern, value):
            self.fail(name, "格式不正确")
        return value

    def code(self, name: str, table: Mapping[int, int], *, required: bool = True) -> int:
        """A vendor enum code: an integer or a string of digits (both occur in the wild)."""
        value = self.body.get(name)
        if value is None or value == "":
            if required:
                self.fail(name, "必填")
            return 0
        number = _as_int(value)
        if number is None or number not in table:
            allowed = "、".join(str(c) for c in table)
            self.fail(name, f"取值 {value!r} 无效，应为 {allowed} 之一")
            return 0
        return table[number]

    def flag(self, name: str) -> bool:
        """是否 fields: "1"/"0", 1/0 or true/false."""
        value = self.body.get(name)
        if value in (True, 1, "1", "true"):
            return True
        if value in (False, 0, "0", "false"):
            return False
        self.fail(name, "必填，应为 1（是）或 0（否）" if value is None else "应为 1 或 0")
        return False

    def texts(self, name: str) -> list[str]:
        value = self.body.get(name)
        if not isinstance(value, list) or not value:
            self.fail(name, "应为非空字符串数组")
            return []
        if any(not isinstance(item, str) or not item.strip() for item in value):
            self.fail(name, "数组元素应为非空字符串")
            return []
        return [item.strip() for item in value]

    def objects(self, name: str) -> list[Mapping[str, Any]]:
        value = self.body.get(name)
        if not isinstance(value, list) or not value:
            self.fail(name, "应为非空数组")
            return []
        if any(not isinstance(item, dict) for item in value):
            self.fail(name, "数组元素应为对象")
            return []
        return value


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


_SHA256 = re.compile(r"[0-9a-f]{64}")
_MEDIA_TYPE = re.compile(r"[a-z]+/[a-z0-9.+-]+")


def _materials(fields: _Fields, name: str = "clxx") -> list[common_pb2.Material]:
    """材料信息: ``[{"clmc" 材料名称, "clhash" SHA-256, "wjlx" 文件类型, "wjdx" 文件大小}]``."""
    materials: list[common_pb2.Material] = []
    for index, entry in enumerate(fields.objects(name)):
        where = f"{name}[{index}]"
        title = entry.get("clmc")
        digest = entry.get("clhash")
        media = entry.get("wjlx")
        size = entry.get("wjdx")
        if not isinstance(title, str) or not title.strip():
            fields.fail(f"{where}.clmc", "必填")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest.lower()):
            fields.fail(f"{where}.clhash", "应为 64 位十六进制 SHA-256 摘要")
        if not isinstance(media, str) or not _MEDIA_TYPE.fullmatch(media.lower()):
            fields.fail(f"{where}.wjlx", "应为 MIME 类型，如 application/pdf")
        size_value = _as_int(size)
        if size_value is None or size_value <= 0:
            fields.fail(f"{where}.wjdx", "应为正整数（字节）")
        if fields.errors:
            continue
        assert isinstance(title, str)
        assert isinstance(digest, str)
        assert isinstance(media, str)
        materials.append(
            common_pb2.Material(
                name=title.strip(),
                sha256=digest.lower(),
                media_type=media.lower(),
                size=size_value or 0,
            )
        )
    return materials


@dataclass(frozen=True)
class SubmitRequest:
    """A parsed 收件 request: the wire message plus what the gateway checks itself."""

    #: The wire message without the applicant (the signed bytes carry commitments only).
    submit: case_exchange_pb2.SubmitCase
    #: The applicant in clear: committed to when signing, sent beside the signed bytes.
    applicant: common_pb2.Applicant = field(repr=False)
    #: The vendor's 办件类型 mapped to the wire enum; checked against the catalogue item's kind.
    kind: int
    operator: str
    #: The agent (代办员) who takes the case in for the applicant (``dbrbh``); empty: none.
    agent: str = ""


def parse_submit(body: Mapping[str, Any]) -> SubmitRequest:
    """Read the vendor's 收件 JSON; :class:`VendorInputError` names every bad field.

    ``{"sxbm", "bjlx", "sqrxm", "sfzh", "lxdh", "clxx": [...], "bldq"?, "jbr"?}``
    """
    fields = _Fields(body)
    item_code = fields.text("sxbm", max_length=32, pattern=r"[0-9]{12}([A-Z]{3}[0-9]{2})?")
    kind = fields.code("bjlx", BJLX_TO_KIND)
    name = fields.text("sqrxm", max_length=64)
    id_number = fields.text("sfzh", pattern=r"[0-9]{17}[0-9Xx]").upper()
    if (
        id_number
        and not any(e.field == "sfzh" for e in fields.errors)
        and not gb11643_ok(id_number)
    ):
        fields.fail("sfzh", "校验位不正确（GB 11643）")
    phone = fields.text("lxdh", pattern=r"[0-9+\- ]{5,20}")
    materials = _materials(fields)
    region = fields.text("bldq", required=False, pattern=r"[0-9]{12}")
    operator = fields.text("jbr", required=False, max_length=64)
    # 预约办: the appointment the applicant was booked for (预约编号).
    appointment = fields.text("yybh", required=False, pattern=r"[0-9a-f-]{36}")
    channel = fields.code("sqqd", SQQD_TO_CHANNEL, required=False)
    window = fields.text("ckmc", required=False, max_length=64)  # 窗口名称
    agent = _agent_authorisation(fields) if fields.body.get("dbrbh") else None
    fields.raise_if_any()
    submit = case_exchange_pb2.SubmitCase(
        item_code=item_code,
        materials=materials,
        competent_region=region,
        window=window,
        appointment_id=appointment,
    )
    submit.channel = common_pb2.IntakeChannel.ValueType(channel)
    if agent is not None:
        submit.agent.CopyFrom(agent)
    applicant = common_pb2.Applicant(name=name, id_number=id_number, phone=phone)
    return SubmitRequest(submit, applicant, kind, operator, agent.agent_id if agent else "")


_AGENT_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"


def _agent_authorisation(fields: _Fields) -> common_pb2.AgentAuthorisation:
    """代办: ``dbrbh`` 代办员编号, ``dbjs`` 代办角色, ``wtshash`` 委托书 SHA-256 (a platform sends
    a signed or scanned 委托书; an oral authorisation at a home visit is the village adapter's)."""
    agent_id = fields.text("dbrbh", max_length=64, pattern=_AGENT_ID)
    role = fields.code("dbjs", DBJS_TO_ROLE)
    letter = fields.text("wtshash", pattern=r"[0-9a-fA-F]{64}", missing="必填：代办须有委托书摘要")
    message = common_pb2.AgentAuthorisation(agent_id=agent_id, letter_sha256=letter.lower())
    message.role = common_pb2.AgentRole.ValueType(role)
    return message


def agent_of(action: str, body: Mapping[str, Any]) -> str:
    """The agent (``dbrbh``) who takes a step, for the command's header ('' when none). In a
    代办授权 (``dbsq``) ``dbrbh`` is the agent being authorised, not the one acting."""
    if action == "authorise_agent":
        return ""
    fields = _Fields(body)
    agent = fields.text("dbrbh", required=False, max_length=64, pattern=_AGENT_ID)
    fields.raise_if_any()
    return agent


@dataclass(frozen=True)
class ActionSpec:
    """One vendor action: its path name, the wire action, and how to read its body."""

    vendor: str
    action: str
    title: str
    #: Fills the wire message from the vendor's body (``case_id`` is set by the caller).
    read: Callable[[_Fields, Any], None]


def _none(fields: _Fields, message: Any) -> None:
    """An action with no body fields."""


def _reason(required: bool) -> Callable[[_Fields, Any], None]:
    def read(fields: _Fields, message: Any) -> None:
        message.reason = fields.text("yy", required=required)

    return read


def _read_correction(fields: _Fields, message: Any) -> None:
    message.missing.extend(fields.texts("qsclqd"))
    message.notice = fields.text("gzs", required=False, max_length=4000)


def _read_resubmit(fields: _Fields, message: Any) -> None:
    message.materials.extend(_materials(fields))


def _read_hand_off(fields: _Fields, message: Any) -> None:
    message.to_hall = fields.text("jsdt", max_length=128)
    message.reason = fields.text("yy", required=False)


def _read_escalate(fields: _Fields, message: Any) -> None:
    message.to_hall = fields.text("jsdt", max_length=128)
    # The node records why a case went up a level: it refuses an escalation without a reason.
    message.reason = fields.text("yy", missing="必填：上报须说明原因")


def _read_suspend(fields: _Fields, message: Any) -> None:
    message.reason = fields.code("tbcxlx", TBCXLX_TO_REASON)
    message.note = fields.text("sm", required=False)


def _read_joint(fields: _Fields, message: Any) -> None:
    for index, entry in enumerate(fields.objects("rwlb")):
        task = _Fields(entry)
        task_id = task.text("rwbh", max_length=64)
        hall_id = task.text("dtbm", max_length=128)
        department = task.text("bm", max_length=128)
        fields.errors.extend(FieldError(f"rwlb[{index}].{e.field}", e.msg) for e in task.errors)
        message.tasks.add(task_id=task_id, hall_id=hall_id, department=department)


def _read_joint_done(fields: _Fields, message: Any) -> None:
    message.task_id = fields.text("rwbh", max_length=64)
    message.approved = fields.flag("sfty")
    message.note = fields.text("sm", required=False)


def _read_decide(fields: _Fields, message: Any) -> None:
    message.approved = fields.flag("sfzy")
    # Every decision states its grounds, 准予 as well as 不予: the node refuses one without.
    message.reason = fields.text("yy", missing="必填：决定（准予或不予）均须说明理由")


def _read_certificate(fields: _Fields, message: Any) -> None:
    message.certificate_id = fields.text("zzbh", max_length=128)


def _read_issue(fields: _Fields, message: Any) -> None:
    message.type_code = fields.text("zzlxdm", max_length=6)  # 证照类型代码
    message.issuer_code = fields.text("fzjgdm", max_length=18)  # 发证机构统一社会信用代码
    message.authority = fields.text("fzjg", max_length=128)  # 发证机构
    message.valid_until = fields.text("yxqz", required=False, max_length=10)  # 有效期至


def _read_deliver(fields: _Fields, message: Any) -> None:
    message.method = fields.code("sdfs", SDFS_TO_METHOD)
    message.note = fields.text("sm", required=False)


def _read_post(fields: _Fields, message: Any) -> None:
    message.carrier = fields.text("kdgs", max_length=64)  # 快递公司
    message.tracking_number = fields.text("kddh", max_length=64)  # 快递单号


def _read_locker(fields: _Fields, message: Any) -> None:
    message.locker_id = fields.text("gzbh", max_length=64)  # 柜子编号
    message.compartment = fields.text("gkh", max_length=16)  # 格口号
    # 取件码密文: the keyed hash the locker system made; the code itself never comes here.
    message.code_hash = fields.text("qjmzy", pattern="[0-9a-f]{64}")
    hours = _as_int(fields.body.get("bcsc", 72))  # 保存时长 (hours)
    if hours is None or not 1 <= hours <= 720:
        fields.fail("bcsc", "应为 1-720 的整数（小时）")
    else:
        message.hold_hours = hours


def _read_return(fields: _Fields, message: Any) -> None:
    message.reason = fields.text("yy", max_length=512)
    message.window = fields.text("ck", required=False, max_length=64)  # 窗口


def _read_rate(fields: _Fields, message: Any) -> None:
    message.rating = fields.code("pjdj", PJDJ_TO_RATING)
    message.comment = fields.text("pjnr", required=False, max_length=2000)


def _read_identity_check(fields: _Fields, message: Any) -> None:
    for name in BIOMETRIC_FIELDS:
        if name in fields.body:
            fields.fail(name, "不接收人脸照片、特征值或原始分数；请只传核验结果和分数等级 fsdj")
    message.method = fields.code("hylx", HYLX_TO_METHOD)
    message.device_id = fields.text("sbbh", max_length=128)  # 设备编号
    message.result = fields.code("hyjg", HYJG_TO_RESULT)
    message.score_band = fields.code("fsdj", FSDJ_TO_BAND)


def _read_authorisation(fields: _Fields, message: Any) -> None:
    message.agent.CopyFrom(_agent_authorisation(fields))


def _read_rectification(fields: _Fields, message: Any) -> None:
    message.report = fields.text("zgbg", max_length=4000)
    message.follow_up = fields.text("hfjg", required=False, max_length=4000)


#: The vendor's actions (path segment → spec). Body fields per action are in docs/adapters.md.
ACTIONS: dict[str, ActionSpec] = {
    spec.vendor: spec
    for spec in (
        ActionSpec("bzgz", "request_correction", "一次性告知（补正告知）", _read_correction),
        ActionSpec("bz", "resubmit", "补正", _read_resubmit),
        ActionSpec("sl", "accept", "受理", _none),
        ActionSpec("bysl", "reject_at_intake", "不予受理", _reason(True)),
        ActionSpec("zb", "hand_off", "转办", _read_hand_off),
        ActionSpec("js", "acknowledge_handoff", "接收", _none),
        ActionSpec("cb", "start_handling", "承办", _none),
        ActionSpec("tbcx", "suspend", "特别程序开始", _read_suspend),
        ActionSpec("tbcxjs", "resume", "特别程序结束", _none),
        ActionSpec("sb", "escalate", "上报", _read_escalate),
        ActionSpec("lb", "open_joint_tasks", "并联（联办）发起", _read_joint),
        ActionSpec("lbwc", "complete_joint_task", "并联（联办）任务办结", _read_joint_done),
        ActionSpec("jd", "decide", "决定", _read_decide),
        ActionSpec("bj", "conclude", "办结", _none),
        ActionSpec("zz", "record_certificate", "制证", _read_certificate),
        ActionSpec("dzzz", "issue_certificate", "电子证照签发", _read_issue),
        ActionSpec("zzzt", "suspend_certificate", "电子证照暂停", _reason(True)),
        ActionSpec("zzhf", "reinstate_certificate", "电子证照恢复", _reason(True)),
        ActionSpec("zzcx", "revoke_certificate", "电子证照撤销", _reason(True)),
        ActionSpec("sd", "deliver", "送达", _read_deliver),
        ActionSpec("yj", "dispatch_by_post", "邮寄寄出", _read_post),
        ActionSpec("rg", "deposit_in_locker", "智能柜入柜", _read_locker),
        ActionSpec("thck", "return_to_window", "退回窗口", _read_return),
        ActionSpec("pj", "rate", "评价", _read_rate),
        ActionSpec("zgwc", "complete_rectification", "整改完成", _read_rectification),
        ActionSpec("gd", "archive", "归档", _none),
        ActionSpec("ch", "withdraw", "撤回", _reason(True)),
        ActionSpec("sfhy", "record_identity_check", "身份核验", _read_identity_check),
        ActionSpec("dbsq", "authorise_agent", "代办授权（委托书）", _read_authorisation),
    )
}
VENDOR_ACTION_OF = {spec.action: spec.vendor for spec in ACTIONS.values()}


def parse_action(vendor_action: str, case_id: str, body: Mapping[str, Any]) -> tuple[str, Any, str]:
    """The wire action, its message and the operator (``jbr``) for a vendor action request."""
    spec = ACTIONS[vendor_action]
    fields = _Fields(body)
    # Every action's message has a case_id; typed as the base Message, whose constructor
    # (types-protobuf since 2026-11) takes no field names, so it is set after construction.
    message: Any = wire_message_type(spec.action)()
    message.case_id = case_id
    spec.read(fields, message)
    operator = fields.text("jbr", required=False, max_length=64)
    fields.raise_if_any()
    return spec.action, message, operator


def idempotency_key_of(request_id: str) -> str:
    """The node's idempotency key for a vendor request id; ValueError when unusable."""
    limit = 128 - len(KEY_PREFIX)
    usable = request_id.isascii() and request_id.isprintable()
    if not usable or not 5 <= len(request_id) <= limit:
        raise ValueError(f"应为 5-{limit} 个可打印 ASCII 字符")
    return KEY_PREFIX + request_id


# ============================================================================ answers


def _time(stamp: Timestamp) -> str | None:
    if not stamp.seconds and not stamp.nanos:
        return None
    moment = datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, tz=UTC)
    return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def render_case(view: case_exchange_pb2.CaseView) -> dict[str, Any]:
    """A case in the vendor's shape (field names in docs/adapters.md)."""
    state_code, state_name = STATE_TO_BJZT.get(view.state, ("00", "未知"))
    bjlx = KIND_TO_BJLX.get(view.kind)
    return {
        "bjbh": view.case_id,  # 办件编号
        "bb": view.version,  # 版本
        "sxbm": view.item_code,  # 事项编码
        "sxmc": view.item_name,  # 事项名称
        "bjlx": bjlx,  # 办件类型 (vendor code)
        "bjlxmc": BJLX_NAMES.get(bjlx, "") if bjlx is not None else "",
        "bjzt": state_code,  # 办件状态
        "bjztmc": state_name,
        "tblx": MODE_TO_TBLX.get(view.mode, ""),  # 通办类型
        "sjqh": view.intake_region,  # 收件区划
        "blqh": view.competent_region,  # 办理区划
        "sjdt": view.intake_hall,  # 收件大厅
        "dqbldt": view.holder,  # 当前办理大厅
        "djsdt": view.pending_receiver,  # 待接收大厅
        "cnsx": view.promised_days,  # 承诺时限 (工作日)
        "fdsx": view.statutory_days,  # 法定时限 (工作日)
        "sfzy": ("1" if view.approved else "0") if view.HasField("approved") else None,
        "zzbh": view.certificate_id,  # 证照编号
        "pjdj": RATING_TO_PJDJ.get(view.rating),  # 评价等级 (vendor code)
        "jsz": view.clock_running,  # 计时中
        "ysys": round(view.clock_seconds),  # 已用时 (秒)
        "ztsc": round(view.paused_seconds),  # 暂停时长 (秒)
        "lbrw": [  # 联办任务
            {
                "rwbh": status.task.task_id,
                "dtbm": status.task.hall_id,
                "bm": status.task.department,
                "sfwc": status.done,
                "sfty": "1" if status.approved else "0",
                "sm": status.note,
            }
            for status in view.joint_tasks
        ],
        "kcz": [  # 可操作 (vendor action names the state machine allows now)
            VENDOR_ACTION_OF[command]
            for command in view.allowed_commands
            if command in VENDOR_ACTION_OF
        ],
        "sqsj": _time(view.submitted_at),  # 申请时间
        "gxsj": _time(view.modified_at),  # 更新时间
    }


# ============================================================================ the gateway


@dataclass(frozen=True)
class GatewayConfig:
    """The gateway's own settings (the node connection is a separate HubConnection)."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    #: When set, every request must carry ``Authorization: Bearer <token>``.
    token: str = ""


_CASE = re.compile(r"^/api/v1/cases/([^/]+)$")
_ACTION = re.compile(r"^/api/v1/cases/([^/]+)/actions/([^/]+)$")
_CANCEL = re.compile(r"^/api/v1/appointments/([^/]+)/actions/qx$")  # 预约办: 取消预约


class Gateway:
    """Turns one vendor HTTP request into gRPC calls and the answer into the vendor's shape.

    Independent of the HTTP server, so the translation can be exercised directly; thread-safe
    (the SDK's gRPC channel and the catalogue cache are).
    """

    def __init__(self, client: HallClient, catalogue: ItemCatalogue, *, token: str = "") -> None:
        self.client = client
        self.catalogue = catalogue
        self.token = token

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one request; never raises for bad input or node failures."""
        request_id = headers.get(REQUEST_ID_HEADER, "")
        if self.token and not self._authorised(headers):
            return Response(
                401, envelope("40100", "未授权：缺少或错误的访问令牌", request_id=request_id)
            )
        query = urllib.parse.parse_qs(path.split("?", 1)[1]) if "?" in path else {}
        path = path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path == "/api/v1/appointments":  # 预约办
                if method == "GET":
                    return self._appointments(query)
                return self._only(method, "POST") or self._book(headers, body)
            match = _CANCEL.match(path)
            if match:
                return self._only(method, "POST") or self._cancel(match.group(1), headers, body)
            if path == "/api/v1/health":
                return self._only(method, "GET") or ok(
                    {"status": "UP", "hall": self.client.credentials.hall_id}
                )
            if path == "/api/v1/cases":
                return self._only(method, "POST") or self._submit(headers, body)
            match = _ACTION.match(path)
            if match:
                return self._only(method, "POST") or self._act(
                    match.group(1), match.group(2), headers, body
                )
            match = _CASE.match(path)
            if match:
                return self._only(method, "GET") or self._get(match.group(1))
        except VendorInputError as error:
            return bad_request(error.errors, request_id=request_id)
        except InputError as error:
            return bad_request([FieldError(error.field, str(error))], request_id=request_id)
        except NodeRefused as refusal:
            log.info("node refused %s %s: %s", method, path, refusal.code.name)
            return from_failure(refusal, request_id=request_id)
        return Response(404, envelope("40400", f"接口不存在：{method} {path}"))

    # ------------------------------------------------------------------ routes

    def _submit(self, headers: Mapping[str, str], body: bytes) -> Response:
        request_id, key = self._key(headers)
        request = parse_submit(_json_object(body))
        item = self.catalogue.get(request.submit.item_code)
        if item is None:
            raise VendorInputError([FieldError("sxbm", "事项编码不在通办节点的事项目录中")])
        if item.kind != request.kind:
            expected = KIND_TO_BJLX.get(item.kind)
            raise VendorInputError(
                [
                    FieldError(
                        "bjlx",
                        f"事项 {item.code} 为{BJLX_NAMES.get(expected or 0, kind_name(item.kind))}"
                        f"（bjlx={expected}），与提交的办件类型不符",
                    )
                ]
            )
        # The SDK commits to the applicant; the node recognises a retry by the clear values.
        signed = self.client.sign(
            "submit",
            request.submit,
            idempotency_key=key,
            operator=request.operator or None,
            applicant=request.applicant,
            acting_agent=request.agent,
        )
        try:
            reply = self.client.send_signed("submit", signed)
        except NodeRefused as refusal:
            # ``personal[1].value`` → ``command.submit.applicant.id_number`` → ``sfzh``.
            raise refusal.resolve_personal(signed.personal) from None
        response = self._answer(reply, request_id, status=200 if reply.replayed else 201)
        response.headers["Location"] = f"/api/v1/cases/{reply.case_id}"
        return response

    def _act(
        self, case_id: str, vendor_action: str, headers: Mapping[str, str], body: bytes
    ) -> Response:
        if vendor_action not in ACTIONS:
            known = "、".join(ACTIONS)
            return Response(404, envelope("40402", f"未知操作 {vendor_action}，可用：{known}"))
        request_id, key = self._key(headers)
        _check_case_id(case_id)
        action, message, operator = parse_action(vendor_action, case_id, _json_object(body))
        agent = agent_of(action, _json_object(body))
        reply = self.client.send(
            action, message, idempotency_key=key, operator=operator or None, acting_agent=agent
        )
        return self._answer(reply, request_id)

    # ------------------------------------------------------------------ 预约办 (appointments)

    def _book(self, headers: Mapping[str, str], body: bytes) -> Response:
        request_id, key = self._key(headers)
        fields = _Fields(_json_object(body))
        request = appointments.parse_booking(fields.body, self.client.credentials.hall_id, fields)
        signed = self.client.sign(
            "book_appointment",
            request.booking,
            idempotency_key=key,
            operator=request.operator or None,
            applicant=request.applicant,
            address=request.address,
        )
        try:
            reply = self.client.send_signed("book_appointment", signed)
        except NodeRefused as refusal:
            # ``personal[3].value`` → ``command.book_appointment.applicant.address`` → ``smdz``.
            raise refusal.resolve_personal(signed.personal) from None
        data = {"yybh": reply.case_id, "bb": reply.version, "cfqq": reply.replayed}
        response = ok(data, status=200 if reply.replayed else 201, request_id=request_id)
        response.headers["Location"] = f"/api/v1/appointments/{reply.case_id}"
        return response

    def _cancel(self, appointment_id: str, headers: Mapping[str, str], body: bytes) -> Response:
        request_id, key = self._key(headers)
        try:
            uuid.UUID(appointment_id)
        except ValueError:
            raise VendorInputError([FieldError("yybh", "预约编号格式不正确")]) from None
        fields = _Fields(_json_object(body))
        reason = fields.text("yy", missing="必填：取消预约须说明原因")
        operator = fields.text("jbr", required=False, max_length=64)
        fields.raise_if_any()
        reply = self.client.send(
            "cancel_appointment",
            idempotency_key=key,
            operator=operator or None,
            appointment_id=appointment_id,
            reason=reason,
        )
        data = {"yybh": reply.case_id, "bb": reply.version, "cfqq": reply.replayed}
        return ok(data, request_id=request_id)

    def _appointments(self, query: dict[str, list[str]]) -> Response:
        day, state = appointments.parse_day_query(query)
        listed = self.client.appointments(day, state=state)
        return ok([appointments.render_appointment(view) for view in listed.appointments])

    def _get(self, case_id: str) -> Response:
        _check_case_id(case_id)
        return ok(render_case(self.client.get_case(case_id)))

    # ------------------------------------------------------------------ helpers

    def _answer(
        self, reply: case_exchange_pb2.CommandReply, request_id: str, *, status: int = 200
    ) -> Response:
        data: dict[str, Any] = {"bjbh": reply.case_id, "bb": reply.version}
        # The command itself succeeded: if the case cannot be read back just now, answer with
        # what the reply says rather than an error that would make the platform believe it failed.
        with contextlib.suppress(NodeRefused):
            data.update(render_case(self.client.get_case(reply.case_id)))
        data["bb"] = reply.version
        data["cfqq"] = reply.replayed  # 重复请求: the first result, returned again
        return ok(data, status=status, request_id=request_id)

    def _key(self, headers: Mapping[str, str]) -> tuple[str, str]:
        request_id = headers.get(REQUEST_ID_HEADER, "").strip()
        if not request_id:
            raise VendorInputError([FieldError(REQUEST_ID_HEADER, "必填：请求编号用于安全重试")])
        try:
            return request_id, idempotency_key_of(request_id)
        except ValueError as error:
            raise VendorInputError([FieldError(REQUEST_ID_HEADER, str(error))]) from None

    def _authorised(self, headers: Mapping[str, str]) -> bool:
        given = headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    @staticmethod
    def _only(method: str, allowed: str) -> Response | None:
        if method == allowed:
            return None
        response = Response(405, envelope("40500", f"不支持的请求方法 {method}，应为 {allowed}"))
        response.headers["Allow"] = allowed
        return response


def _check_case_id(case_id: str) -> None:
    try:
        uuid.UUID(case_id)
    except ValueError:
        raise VendorInputError([FieldError("bjbh", "办件编号格式不正确")]) from None


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body.decode("utf-8") or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VendorInputError([FieldError("body", f"不是合法的 UTF-8 JSON：{error}")]) from None
    if not isinstance(value, dict):
        raise VendorInputError([FieldError("body", "请求体应为 JSON 对象")])
    return value


# ============================================================================ HTTP server


class _Handler(BaseHTTPRequestHandler):
    """Reads the request, lets the Gateway answer, writes the envelope."""

    protocol_version = "HTTP/1.1"
    server: GatewayHTTPServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    # Methods no route takes: answered 405 (with Allow) on a route, 404 elsewhere, in the
    # vendor's envelope rather than the standard library's HTML 501 page.
    def do_PATCH(self) -> None:
        self._serve()

    def do_OPTIONS(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length_header = self.headers.get("Content-Length") or "0"
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body cannot be skipped safely
            self._write(Response(413, envelope("41300", f"请求体应不超过 {MAX_BODY_BYTES} 字节")))
            self._linger()
            return
        body = self.rfile.read(length) if length else b""
        headers = {key: value for key, value in self.headers.items()}
        # Header names are case-insensitive; the Gateway looks them up in canonical case.
        for name in (REQUEST_ID_HEADER, "Authorization"):
            value = self.headers.get(name)
            if value is not None:
                headers[name] = value
        try:
            response = self.server.gateway.handle(self.command, self.path, headers, body)
        except Exception:  # a bug must not kill the serving thread silently
            log.exception("gateway error on %s %s", self.command, self.path)
            response = Response(500, envelope("50001", "网关内部错误"))
        self._write(response)

    def _write(self, response: Response) -> None:
        data = json.dumps(response.body, ensure_ascii=False).encode("utf-8")
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _linger(self) -> None:
        """Say the answer is complete (half-close), then read and discard what the client
        still sends, up to LINGER_BYTES or LINGER_S, so it can read the answer; nothing read
        is looked at."""
        connection = self.connection
        deadline = time.monotonic() + LINGER_S
        left = LINGER_BYTES
        try:
            connection.shutdown(socket.SHUT_WR)
            while left > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                connection.settimeout(remaining)
                chunk = connection.recv(min(left, 1 << 16))
                if not chunk:
                    break  # the client sent all and closed its side
                left -= len(chunk)
        except OSError:
            pass  # reset, timed out or gone: the connection is closed next anyway

    def log_message(self, format: str, *args: Any) -> None:
        # Only method, path and status: bodies carry personal data and are never logged.
        log.info("%s %s", self.address_string(), format % args)


class GatewayHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server bound to one :class:`Gateway`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], gateway: Gateway) -> None:
        self.gateway = gateway
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self.server_address[1])

    def serve_in_thread(self) -> threading.Thread:
        """Serve on a background thread (tests, embedding)."""
        thread = threading.Thread(target=self.serve_forever, name="gateway", daemon=True)
        thread.start()
        return thread


def wire_message_type(action: str) -> type[Message]:
    """The wire message class of a command action (``"accept"`` → ``Accept``)."""
    return type(getattr(case_exchange_pb2.Command(), action))

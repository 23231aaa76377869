"""预约办 in the YZ gateway: the vendor's appointment fields and codes, mapped to the wire API.

The routes (served by :class:`adapters.gateway.Gateway`, documented in docs/adapters.md):

- ``POST /api/v1/appointments`` — 预约 (``BookAppointment``): a window slot or a home visit;
- ``POST /api/v1/appointments/{yybh}/actions/qx`` — 取消预约 (``CancelAppointment``);
- ``GET /api/v1/appointments?yyrq=YYYY-MM-DD[&yyzt=..]`` — the hall's appointments of a day
  (``ListAppointments``), with the applicant in clear (the hall's own);
- the 收件 request's ``yybh`` cites the appointment the applicant was booked for
  (``SubmitCase.appointment_id``).

As for a case, the applicant's name, ID number, phone and the home visit's address are given to
the SDK in clear, which signs only salted commitments; they are never logged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from tongban.v1 import case_exchange_pb2, common_pb2

from adapters.errors import FieldError, VendorInputError

BEIJING = timezone(timedelta(hours=8), "CST")

#: 预约类型 (vendor code) → wire AppointmentKind.
YYLX_TO_KIND = {1: common_pb2.APPOINTMENT_KIND_WINDOW, 2: common_pb2.APPOINTMENT_KIND_HOME_VISIT}
KIND_TO_YYLX = {kind: code for code, kind in YYLX_TO_KIND.items()}
#: 预约渠道 (vendor code) → wire BookingChannel.
YYQD_TO_CHANNEL = {
    1: common_pb2.BOOKING_CHANNEL_ONLINE,  # 网上预约
    2: common_pb2.BOOKING_CHANNEL_PHONE,  # 电话预约
    3: common_pb2.BOOKING_CHANNEL_AGENT,  # 代办员预约
    4: common_pb2.BOOKING_CHANNEL_WINDOW,  # 窗口现场预约
}
CHANNEL_TO_YYQD = {channel: code for code, channel in YYQD_TO_CHANNEL.items()}
#: wire AppointmentState → 预约状态 (vendor code, name).
STATE_TO_YYZT = {
    common_pb2.APPOINTMENT_STATE_BOOKED: ("10", "已预约"),
    common_pb2.APPOINTMENT_STATE_RECEIVED: ("20", "已受理"),
    common_pb2.APPOINTMENT_STATE_CANCELLED: ("30", "已取消"),
    common_pb2.APPOINTMENT_STATE_EXPIRED: ("40", "已爽约"),
}
YYZT_TO_STATE = {int(code): state for state, (code, _name) in STATE_TO_YYZT.items()}

#: The hub's appointment field paths → the vendor's fields (added to the gateway's table).
VENDOR_FIELDS = {
    "kind": "yylx",
    "hall_id": "dtbm",
    "window": "ck",
    "starts_at": "yysd",
    "ends_at": "yysd",
    "applicant.address": "smdz",
    "channel": "yyqd",
    "agent": "dbry",
    "appointment_id": "yybh",
}

_SLOT = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])")


@dataclass(frozen=True)
class BookingRequest:
    """A parsed 预约 request: the wire message without the applicant, and the clear values."""

    booking: case_exchange_pb2.BookAppointment
    applicant: common_pb2.Applicant = field(repr=False)
    address: str = field(repr=False)
    operator: str


def _slot(fields: Any, day_text: str, slot_text: str) -> tuple[datetime, datetime] | None:
    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        fields.fail("yyrq", "格式不正确，应为 YYYY-MM-DD")
        return None
    match = _SLOT.fullmatch(slot_text)
    if not match:
        fields.fail("yysd", "格式不正确，应为 HH:MM-HH:MM（北京时间）")
        return None
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    midnight = datetime(day.year, day.month, day.day, tzinfo=BEIJING)
    starts = midnight + timedelta(hours=start_h, minutes=start_m)
    ends = midnight + timedelta(hours=end_h, minutes=end_m)
    if ends <= starts:
        fields.fail("yysd", "结束时间应晚于开始时间")
        return None
    return starts, ends


def parse_booking(body: Any, hall_id: str, fields: Any) -> BookingRequest:
    """Read the vendor's 预约 JSON (``fields``: the gateway's field reader over ``body``);
    :class:`VendorInputError` names every bad field.

    ``{"sxbm", "yylx", "ck"?, "yyrq", "yysd", "sqrxm", "sfzh", "lxdh", "smdz"?, "yyqd",
    "dbry"?, "jbr"?}``
    """
    item_code = fields.text("sxbm", max_length=32, pattern=r"[0-9]{12}([A-Z]{3}[0-9]{2})?")
    kind = fields.code("yylx", YYLX_TO_KIND)
    window = fields.text("ck", required=False, max_length=64)
    day = fields.text("yyrq")
    slot_text = fields.text("yysd")
    name = fields.text("sqrxm", max_length=64)
    id_number = fields.text("sfzh", pattern=r"[0-9]{17}[0-9Xx]").upper()
    phone = fields.text("lxdh", pattern=r"[0-9+\- ]{5,20}")
    home = kind == common_pb2.APPOINTMENT_KIND_HOME_VISIT
    address = fields.text(
        "smdz", required=home, max_length=256, missing="必填：上门办须填写上门地址"
    )
    if address and not home:
        fields.fail("smdz", "仅上门办（yylx=2）填写上门地址")
    if window and home:
        fields.fail("ck", "上门办不填写窗口")
    channel = fields.code("yyqd", YYQD_TO_CHANNEL)
    agent = fields.text(
        "dbry",
        required=channel == common_pb2.BOOKING_CHANNEL_AGENT,
        max_length=64,
        missing="必填：代办员预约须填写代办员",
    )
    operator = fields.text("jbr", required=False, max_length=64)
    slot = _slot(fields, day, slot_text) if day and slot_text else None
    fields.raise_if_any()
    assert slot is not None
    booking = case_exchange_pb2.BookAppointment(
        item_code=item_code, kind=kind, hall_id=hall_id, window=window,
        channel=channel, agent=agent,
    )  # fmt: skip
    booking.starts_at.FromDatetime(slot[0])
    booking.ends_at.FromDatetime(slot[1])
    applicant = common_pb2.Applicant(name=name, id_number=id_number, phone=phone)
    return BookingRequest(booking, applicant, address, operator)


def parse_day_query(query: dict[str, list[str]]) -> tuple[str, Any]:
    """``yyrq`` (required) and ``yyzt`` (optional) of the day's list."""
    errors = []
    day = (query.get("yyrq") or [""])[0]
    try:
        date.fromisoformat(day)
    except ValueError:
        errors.append(FieldError("yyrq", "必填，格式 YYYY-MM-DD"))
    state = 0
    code = (query.get("yyzt") or [""])[0]
    if code:
        if not code.isdigit() or int(code) not in YYZT_TO_STATE:
            allowed = "、".join(str(c) for c in YYZT_TO_STATE)
            errors.append(FieldError("yyzt", f"取值 {code!r} 无效，应为 {allowed} 之一"))
        else:
            state = YYZT_TO_STATE[int(code)]
    if errors:
        raise VendorInputError(errors)
    return day, state


def _beijing(stamp: Any) -> datetime:
    return datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, tz=BEIJING)


def render_appointment(view: case_exchange_pb2.AppointmentView) -> dict[str, Any]:
    """An appointment in the vendor's shape (field names in docs/adapters.md)."""
    starts, ends = _beijing(view.starts_at), _beijing(view.ends_at)
    state_code, state_name = STATE_TO_YYZT.get(view.state, ("00", "未知"))
    return {
        "yybh": view.appointment_id,
        "dtbm": view.hall_id,
        "sxbm": view.item_code,
        "sxmc": view.item_name,
        "yylx": KIND_TO_YYLX.get(view.kind),
        "ck": view.window,
        "yyrq": starts.strftime("%Y-%m-%d"),
        "yysd": f"{starts:%H:%M}-{ends:%H:%M}",
        "yyzt": state_code,
        "yyztmc": state_name,
        "yyqd": CHANNEL_TO_YYQD.get(view.channel),
        "dbry": view.agent,
        "bjbh": view.case_id,
        "sqrxm": view.applicant_name,
        "lxdh": view.applicant_phone,
        "smdz": view.address,
    }


__all__ = [
    "VENDOR_FIELDS",
    "BookingRequest",
    "parse_booking",
    "parse_day_query",
    "render_appointment",
]

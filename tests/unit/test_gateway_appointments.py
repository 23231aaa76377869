"""The YZ gateway's 预约办 mapping (no I/O): the vendor's fields and codes to the wire and back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from tongban.v1 import case_exchange_pb2, common_pb2

from adapters.errors import VendorInputError, field_suffix
from adapters.gateway import _Fields, vendor_field
from adapters.gateway_appointments import (
    parse_booking,
    parse_day_query,
    render_appointment,
)


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sxbm": "200202001000", "yylx": 1, "ck": "综合窗口1", "yyrq": "2026-03-10",
        "yysd": "10:00-10:30", "sqrxm": "李桂英", "sfzh": "430902195001010028",
        "lxdh": "13807371234", "yyqd": "1",
    }  # fmt: skip
    body.update(changes)
    return body


def _parse(body: dict[str, Any]) -> Any:
    fields = _Fields(body)
    return parse_booking(fields.body, "hn-shatou-town", fields)


def test_a_window_booking_maps_to_the_wire_in_beijing_time() -> None:
    request = _parse(_body())
    booking = request.booking
    assert booking.kind == common_pb2.APPOINTMENT_KIND_WINDOW
    assert booking.channel == common_pb2.BOOKING_CHANNEL_ONLINE
    assert (booking.hall_id, booking.window) == ("hn-shatou-town", "综合窗口1")
    assert booking.starts_at.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    assert booking.ends_at.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 10, 2, 30, tzinfo=UTC)
    # The applicant is never in the wire message: the SDK commits to it.
    assert not booking.HasField("applicant") and request.applicant.name == "李桂英"


def test_a_home_visit_by_an_agent_carries_the_address_beside() -> None:
    request = _parse(_body(yylx=2, ck="", yyqd=3, dbry="代办员-刘", smdz="沙头镇201村"))
    assert request.booking.kind == common_pb2.APPOINTMENT_KIND_HOME_VISIT
    assert request.booking.agent == "代办员-刘" and request.address == "沙头镇201村"


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"yylx": 2}, {"smdz", "ck"}),
        ({"smdz": "某地"}, {"smdz"}),
        ({"yyqd": 3}, {"dbry"}),
        ({"yysd": "10:30-10:00"}, {"yysd"}),
        ({"yysd": "10点"}, {"yysd"}),
        ({"yyrq": "明天"}, {"yyrq"}),
        ({"yylx": 9, "yyqd": 0}, {"yylx", "yyqd"}),
    ],
)
def test_every_bad_field_is_named_the_vendors_way(
    changes: dict[str, Any], fields: set[str]
) -> None:
    with pytest.raises(VendorInputError) as caught:
        _parse(_body(**changes))
    assert {error.field for error in caught.value.errors} == fields


def test_the_nodes_refusals_name_the_vendors_fields() -> None:
    for path, vendor in [
        ("command.book_appointment.starts_at", "yysd"),
        ("command.book_appointment.applicant.address", "smdz"),
        ("command.book_appointment.window", "ck"),
        ("command.submit.appointment_id", "yybh"),
        ("command.book_appointment.item_code", "sxbm"),
        ("command.cancel_appointment.reason", "yy"),
    ]:
        assert vendor_field(field_suffix(path)) == vendor


def test_an_appointment_renders_with_the_vendors_codes() -> None:
    starts, ends = Timestamp(), Timestamp()
    starts.FromDatetime(datetime(2026, 3, 10, 7, 0, tzinfo=UTC))
    ends.FromDatetime(datetime(2026, 3, 10, 8, 0, tzinfo=UTC))
    view = case_exchange_pb2.AppointmentView(
        appointment_id="a", hall_id="h", item_code="200202001000", item_name="老年人优待证办理",
        kind=common_pb2.APPOINTMENT_KIND_HOME_VISIT, starts_at=starts, ends_at=ends,
        state=common_pb2.APPOINTMENT_STATE_EXPIRED, channel=common_pb2.BOOKING_CHANNEL_AGENT,
        agent="代办员-刘",
    )  # fmt: skip
    shown = render_appointment(view)
    assert (shown["yyrq"], shown["yysd"]) == ("2026-03-10", "15:00-16:00")
    assert (shown["yylx"], shown["yyqd"], shown["yyzt"], shown["yyztmc"]) == (2, 3, "40", "已爽约")


def test_the_days_list_takes_a_day_and_a_state() -> None:
    assert parse_day_query({"yyrq": ["2026-03-10"], "yyzt": ["40"]}) == (
        "2026-03-10",
        common_pb2.APPOINTMENT_STATE_EXPIRED,
    )
    with pytest.raises(VendorInputError) as caught:
        parse_day_query({"yyzt": ["7"]})
    assert {error.field for error in caught.value.errors} == {"yyrq", "yyzt"}

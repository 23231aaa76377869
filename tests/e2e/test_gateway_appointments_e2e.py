"""预约办 through the YZ gateway process: the vendor's appointment JSON over real HTTP → the
gateway → the node over mTLS (booking, retry, refusals naming the vendor's fields, the 收件 that
cites its 预约编号, the day's list, cancellation)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hub.domain.workdays import china_day
from tests.e2e.test_adapters_gateway_e2e import application, call, gateway  # noqa: F401
from tests.harness.federation import wait_for

pytestmark = pytest.mark.e2e

ITEM = "200202001000"  # 老年人优待证办理: the township takes it in


def booking(**overrides: Any) -> dict[str, Any]:
    """A valid 预约 in the vendor's shape: tomorrow 10:00-10:30 at the 综合窗口."""
    body: dict[str, Any] = {
        "sxbm": ITEM,
        "yylx": 1,
        "ck": "综合窗口",
        "yyrq": china_day(datetime.now(UTC) + timedelta(days=1)).isoformat(),
        "yysd": "10:00-10:30",
        # The applicant of the gateway tests' 收件, who is then received for it.
        "sqrxm": application()["sqrxm"],
        "sfzh": application()["sfzh"],
        "lxdh": application()["lxdh"],
        "yyqd": 1,
    }
    body.update(overrides)
    return body


def _errors(answer: dict[str, Any]) -> list[str]:
    return [error["field"] for error in answer["errors"]]


def test_the_gateway_books_lists_cites_and_cancels_appointments(gateway: str) -> None:  # noqa: F811
    request_id = f"yy-{uuid.uuid4().hex[:12]}"
    status, answer = call(gateway, "POST", "/api/v1/appointments", booking(),
                          request_id=request_id)  # fmt: skip
    assert status == 201, answer
    appointment = answer["data"]["yybh"]
    assert answer["data"]["cfqq"] is False
    # The platform retries after a timeout: the first result, not a second booking.
    status, again = call(gateway, "POST", "/api/v1/appointments", booking(),
                         request_id=request_id)  # fmt: skip
    assert (status, again["data"]["yybh"], again["data"]["cfqq"]) == (200, appointment, True)
    # Another booking of the same slot: refused (409).
    status, taken = call(gateway, "POST", "/api/v1/appointments", booking(),
                         request_id=f"yy-{uuid.uuid4().hex[:12]}")  # fmt: skip
    assert status == 409 and taken["data"] is None
    # A slot in the past: the node refuses it, named by the vendor's field.
    yesterday = china_day(datetime.now(UTC) - timedelta(days=1)).isoformat()
    status, past = call(gateway, "POST", "/api/v1/appointments", booking(yyrq=yesterday),
                        request_id=f"yy-{uuid.uuid4().hex[:12]}")  # fmt: skip
    assert status == 400 and _errors(past) == ["yysd"], past
    # The gateway's own checks name every bad field at once.
    status, bad = call(gateway, "POST", "/api/v1/appointments",
                       booking(yylx=2, ck="", yyqd=3, yysd="10:30"),
                       request_id=f"yy-{uuid.uuid4().hex[:12]}")  # fmt: skip
    assert status == 400 and set(_errors(bad)) == {"smdz", "dbry", "yysd"}, bad
    # A home visit booked by an agent, with the address.
    status, visit = call(gateway, "POST", "/api/v1/appointments",
                         booking(yylx=2, ck="", yyqd=3, dbry="代办员-刘", yysd="15:00-16:00",
                                 smdz="沙头镇201村3组12号"),
                         request_id=f"yy-{uuid.uuid4().hex[:12]}")  # fmt: skip
    assert status == 201, visit
    # The applicant is received: the 收件 cites the 预约编号.
    status, case = call(gateway, "POST", "/api/v1/cases", application(yybh=appointment),
                        request_id=f"sj-{uuid.uuid4().hex[:12]}")  # fmt: skip
    assert status == 201, case
    # The day's list, with the applicant in clear for the hall itself.
    day = booking()["yyrq"]

    def projected() -> dict[str, Any]:
        status, page = call(gateway, "GET", f"/api/v1/appointments?yyrq={day}")
        assert status == 200, page
        found = {entry["yybh"]: entry for entry in page["data"]}
        return found if found.get(appointment, {}).get("yyzt") == "20" else {}

    listed = wait_for(projected, "the reception in the day's list", [], timeout=60)
    received = listed[appointment]
    assert (received["yyzt"], received["yyztmc"], received["bjbh"]) == (
        "20", "已受理", case["data"]["bjbh"],
    )  # fmt: skip
    assert received["yysd"] == "10:00-10:30"
    assert received["sqrxm"] == application()["sqrxm"]
    home = listed[visit["data"]["yybh"]]
    assert (home["yylx"], home["yyqd"], home["dbry"], home["smdz"]) == (
        2, 3, "代办员-刘", "沙头镇201村3组12号",
    )  # fmt: skip
    # Cancelled, with a reason; a second cancellation is refused by the state.
    path = f"/api/v1/appointments/{visit['data']['yybh']}/actions/qx"
    status, _ = call(gateway, "POST", path, {"yy": "申请人改期"},
                     request_id=f"qx-{uuid.uuid4().hex[:12]}")  # fmt: skip
    assert status == 200
    status, refused = call(gateway, "POST", path, {"yy": "again"},
                           request_id=f"qx-{uuid.uuid4().hex[:12]}")  # fmt: skip
    assert (status, refused["code"]) == (409, "40902")
    status, missing = call(gateway, "POST", path, {}, request_id=f"qx-{uuid.uuid4().hex[:12]}")
    assert status == 400 and _errors(missing) == ["yy"]

    def cancelled() -> list[str]:
        status, page = call(gateway, "GET", f"/api/v1/appointments?yyrq={day}&yyzt=30")
        assert status == 200, page
        return [entry["yybh"] for entry in page["data"]]

    assert wait_for(cancelled, "the cancellation in the list", [], timeout=60) == [
        visit["data"]["yybh"]
    ]
    status, bad_day = call(gateway, "GET", "/api/v1/appointments?yyrq=tomorrow")
    assert status == 400 and _errors(bad_day) == ["yyrq"]

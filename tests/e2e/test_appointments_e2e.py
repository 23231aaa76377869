"""预约办 against a real ``tongban serve`` over mutual TLS: a hall books slots through the SDK,
a booked applicant is received (the case cites the appointment), a no-show is expired by the
node's own supervisor once its slot is over, ``ListAppointments`` keeps each hall to its own
appointments (another hall: NOT_FOUND; a supervisor: its region, no personal data), a slot in
the past is refused naming the field, and the auditor accepts the log with the log key alone.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from tongban.v1 import case_exchange_pb2, case_exchange_pb2_grpc, common_pb2

from adapters.errors import CommandInvalid
from adapters.sdk import HallClient, RetryPolicy
from hub.domain.values import id_number_with_check
from hub.domain.workdays import china_day
from tests.harness.federation import wait_for
from tests.harness.node import NodeProcess

pytestmark = pytest.mark.e2e

VILLAGE = ("hn-shatou-v201", "430902104201")
TOWNSHIP = ("hn-shatou-town", "430902104000")
ELDER_CARD = "200202001000"  # 老年人优待证办理: township level
APPLICANT = common_pb2.Applicant(
    name="王秀兰", id_number=id_number_with_check("43090219480101002"), phone="13907379999"
)
MATERIAL = common_pb2.Material(
    name="身份证", sha256=hashlib.sha256(b"i").hexdigest(), media_type="image/png", size=9
)
ADDRESS = "沙头镇201村3组12号"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    directory: Path = tmp_path_factory.mktemp("node")
    with NodeProcess(directory) as process:
        for hall_id, region in (VILLAGE, TOWNSHIP):
            process.add_hall(hall_id, region)
        process.start()
        yield process


def _stub(node: NodeProcess, certificate: Path, key: Path) -> Any:
    credentials = grpc.ssl_channel_credentials(
        (node.pki / "ca.pem").read_bytes(), key.read_bytes(), certificate.read_bytes()
    )
    return case_exchange_pb2_grpc.CaseExchangeStub(grpc.secure_channel(node.target, credentials))


def _hall_stub(node: NodeProcess, hall_id: str) -> Any:
    return _stub(node, node.halls[hall_id].certificate, node.halls[hall_id].private_key)


def _book(client: HallClient, starts: datetime, minutes: int = 30, **fields: Any) -> str:
    arguments: dict[str, Any] = {
        "item_code": ELDER_CARD, "kind": common_pb2.APPOINTMENT_KIND_WINDOW,
        "hall_id": TOWNSHIP[0], "starts_at": starts,
        "ends_at": starts + timedelta(minutes=minutes),
        "channel": common_pb2.BOOKING_CHANNEL_ONLINE, "applicant": APPLICANT,
    }  # fmt: skip
    arguments.update(fields)
    reply = client.send("book_appointment", idempotency_key=uuid.uuid4().hex, **arguments)
    return str(reply.case_id)


def test_appointments_over_grpc_from_booking_to_case_and_no_show(node: NodeProcess) -> None:
    now = datetime.now(UTC)
    day = china_day(now + timedelta(days=1)).isoformat()
    tomorrow = datetime.fromisoformat(f"{day}T10:00:00+08:00")
    with node.client(TOWNSHIP[0], retry=RetryPolicy(attempts=1)) as town:
        visit = _book(
            town, tomorrow, kind=common_pb2.APPOINTMENT_KIND_HOME_VISIT,
            channel=common_pb2.BOOKING_CHANNEL_AGENT, agent="代办员-刘", address=ADDRESS,
        )  # fmt: skip
        window = _book(town, tomorrow + timedelta(hours=1), window="综合窗口")
        # The applicant of the window booking is received (the case cites it).
        case = town.send(
            "submit", idempotency_key=uuid.uuid4().hex, item_code=ELDER_CARD,
            applicant=APPLICANT, materials=[MATERIAL], appointment_id=window,
        ).case_id  # fmt: skip
        assert town.get_case(str(case)).case_id == str(case)
        # A slot in the past: INVALID_ARGUMENT naming the field, nothing stored.
        with pytest.raises(CommandInvalid) as refused:
            _book(town, now - timedelta(hours=1))
        assert [field for field, _reason in refused.value.violations] == [
            "command.book_appointment.starts_at"
        ]
        # A no-show: a slot about to end, expired by the node's supervisor by itself.
        soon = datetime.now(UTC) + timedelta(seconds=3)
        lapsed = _book(town, soon, minutes=0, ends_at=soon + timedelta(seconds=1))
        lapsed_day = china_day(soon).isoformat()

        listed = wait_for(
            lambda: [a for a in town.appointments(day).appointments if a.case_id == str(case)],
            "the received appointment in the hall's list",
            [node],
            timeout=60,
        )
        assert listed[0].appointment_id == window
        assert listed[0].state == common_pb2.APPOINTMENT_STATE_RECEIVED
        mine = {a.appointment_id: a for a in town.appointments(day).appointments}
        home = mine[visit]
        assert (home.applicant_name, home.applicant_phone, home.address) == (
            APPLICANT.name, APPLICANT.phone, ADDRESS,
        )  # fmt: skip
        assert home.kind == common_pb2.APPOINTMENT_KIND_HOME_VISIT and home.agent == "代办员-刘"
        expired = wait_for(
            lambda: [
                a
                for a in town.appointments(
                    lapsed_day, state=common_pb2.APPOINTMENT_STATE_EXPIRED
                ).appointments
                if a.appointment_id == lapsed
            ],
            "the no-show expired by the node",
            [node],
            timeout=90,
        )
        assert expired[0].case_id == ""

    # Another hall learns nothing: NOT_FOUND, as for a hall that does not exist.
    village = _hall_stub(node, VILLAGE[0])
    for hall_id in (TOWNSHIP[0], "no-such-hall"):
        with pytest.raises(grpc.RpcError) as caught:
            village.ListAppointments(
                case_exchange_pb2.ListAppointmentsRequest(hall_id=hall_id, day=day), timeout=10
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert not village.ListAppointments(
        case_exchange_pb2.ListAppointmentsRequest(day=day), timeout=10
    ).appointments
    # A supervisor of the city reads the township's appointments, without personal data.
    certificate, key = node.issue("supervisor", "jiancha", region="4309")
    supervisor = _stub(node, certificate, key)
    seen = supervisor.ListAppointments(
        case_exchange_pb2.ListAppointmentsRequest(hall_id=TOWNSHIP[0], day=day), timeout=10
    ).appointments
    assert {a.appointment_id for a in seen} >= {visit, window}
    assert all(not (a.applicant_name or a.applicant_phone or a.address) for a in seen)
    certificate, key = node.issue("supervisor", "changde", region="4307")
    with pytest.raises(grpc.RpcError) as caught:
        _stub(node, certificate, key).ListAppointments(
            case_exchange_pb2.ListAppointmentsRequest(hall_id=TOWNSHIP[0], day=day), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # A bad day names the field.
    with pytest.raises(grpc.RpcError) as caught:
        village.ListAppointments(case_exchange_pb2.ListAppointmentsRequest(day="tomorrow"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status: status_pb2.Status | None = rpc_status.from_call(caught.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    assert [v.field for v in bad.field_violations] == ["day"]

    # The bookings, the reception and the node's expiry are in the log; the auditor agrees.
    node.run("ledger", "integrate")
    report = node.run("audit", "verify", "--log-key", node.log_key)
    assert "OK" in report or "verified" in report


def test_tongban_erase_reaches_the_persons_appointments(node: NodeProcess) -> None:
    person = common_pb2.Applicant(
        name="赵桂英", id_number=id_number_with_check("43090219500202002"), phone="13907370000"
    )
    now = datetime.now(UTC)
    day = china_day(now + timedelta(days=2)).isoformat()
    starts = datetime.fromisoformat(f"{day}T14:00:00+08:00")
    with node.client(TOWNSHIP[0], retry=RetryPolicy(attempts=1)) as town:
        visit = _book(
            town, starts, applicant=person, kind=common_pb2.APPOINTMENT_KIND_HOME_VISIT,
            channel=common_pb2.BOOKING_CHANNEL_AGENT, agent="代办员-刘", address=ADDRESS,
        )  # fmt: skip

        def listed() -> list[Any]:
            return [a for a in town.appointments(day).appointments if a.appointment_id == visit]

        before = wait_for(listed, "the booked home visit in the hall's list", [node], timeout=60)
        assert (before[0].applicant_name, before[0].address) == (person.name, ADDRESS)

        out = node.run("erase", "--id-number", person.id_number, "--reason", "申请人要求删除")
        assert f"erased the personal data of appointment {visit}" in out
        # The hall's own list keeps the slot, without anything of the person.
        (after,) = listed()
        assert after.state == common_pb2.APPOINTMENT_STATE_BOOKED
        assert not (after.applicant_name or after.applicant_phone or after.address)
    # The log still verifies with the log key alone.
    node.run("ledger", "integrate")
    audit = node.run("audit", "verify", "--log-key", node.log_key)
    assert "OK" in audit and "have erased personal data" in audit

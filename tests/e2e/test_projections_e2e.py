"""Queues, supervision and statistics from a real ``tongban serve`` over mutual TLS.

The node runs its projections and its 电子监察 supervisor in the follower process; these tests
talk to it only over gRPC (and read its /metrics), waiting on streams (WatchQueue, the health
service's Watch) rather than sleeping: ListQueue and WatchQueue for halls, the AB岗 of a
window, a deferred village case warned yellow and red by the supervisor and still verified by
the auditor, the Supervision service for supervisors of a region (and nothing outside it), the
figures, and a projection that stops: its health entry and the queries say why, while the node
keeps taking commands.
"""

from __future__ import annotations

import hashlib
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tongban.v1 import (
    case_exchange_pb2,
    case_exchange_pb2_grpc,
    common_pb2,
    supervision_pb2,
    supervision_pb2_grpc,
)

from adapters.sdk import HallClient, RetryPolicy, sign_command
from hub.domain.values import id_number_with_check
from tests.harness.node import NodeProcess

pytestmark = pytest.mark.e2e

VILLAGE = ("hn-shatou-v201", "430902104201")
TOWNSHIP = ("hn-shatou-town", "430902104000")
COUNTY = ("hn-ziyang-hall", "430902000000")
HOUSEHOLD_MOVE = "070303001000"  # 户口迁移: county level, promised 5 working days
APPLICANT = common_pb2.Applicant(
    name="王秀兰", id_number=id_number_with_check("43090219480101002"), phone="13907379999"
)
MATERIAL = common_pb2.Material(
    name="身份证", sha256=hashlib.sha256(b"i").hexdigest(), media_type="image/png", size=9
)
#: How long a test waits for something the node must do by itself (a bound, not a sleep).
PATIENCE = 60.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    directory: Path = tmp_path_factory.mktemp("node")
    with NodeProcess(directory) as process:
        for hall_id, region in (VILLAGE, TOWNSHIP, COUNTY):
            process.add_hall(hall_id, region)
        process.start()
        yield process


def _channel(node: NodeProcess, certificate: Path, key: Path) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        (node.pki / "ca.pem").read_bytes(), key.read_bytes(), certificate.read_bytes()
    )
    return grpc.secure_channel(node.target, credentials)


def _hall_channel(node: NodeProcess, hall_id: str) -> grpc.Channel:
    return _channel(node, node.halls[hall_id].certificate, node.halls[hall_id].private_key)


def _client(node: NodeProcess, hall_id: str) -> HallClient:
    return node.client(hall_id, retry=RetryPolicy(attempts=1))


def _send(client: HallClient, action: str, **fields: Any) -> Any:
    return client.send(action, idempotency_key=uuid.uuid4().hex, **fields)


def _submit(client: HallClient, **fields: Any) -> str:
    reply = _send(client, "submit", item_code=HOUSEHOLD_MOVE, applicant=APPLICANT,
                  materials=[MATERIAL], **fields)  # fmt: skip
    return str(reply.case_id)


def _until(stream: Iterator[Any], wanted: Any) -> Any:
    """Read ``stream`` until an update satisfies ``wanted`` (its deadline bounds the wait)."""
    for update in stream:
        if wanted(update):
            return update
    raise AssertionError("the stream ended first")


def test_a_hall_lists_and_watches_its_queue(node: NodeProcess) -> None:
    township = case_exchange_pb2_grpc.CaseExchangeStub(_hall_channel(node, TOWNSHIP[0]))
    watch = township.WatchQueue(case_exchange_pb2.WatchQueueRequest(), timeout=PATIENCE)
    _until(watch, lambda u: u.snapshot_done)
    with _client(node, VILLAGE[0]) as village, _client(node, TOWNSHIP[0]) as town, \
            _client(node, COUNTY[0]) as county:  # fmt: skip
        case = _submit(village)
        _send(village, "hand_off", case_id=case, to_hall=TOWNSHIP[0], reason="镇级受理")
        arrived = _until(watch, lambda u: u.entry.case_id == case)
        assert arrived.entry.awaiting_acknowledgement and not arrived.removed
        _send(town, "acknowledge_handoff", case_id=case, window="综合窗口")
        held = _until(watch, lambda u: u.entry.case_id == case and not u.removed)
        assert held.entry.window == "综合窗口" and not held.entry.awaiting_acknowledgement
        listed = township.ListQueue(case_exchange_pb2.ListQueueRequest(), timeout=10)
        assert case in [entry.case_id for entry in listed.entries]
        # Handed on to the county and taken there: it leaves the township's queue.
        _send(town, "hand_off", case_id=case, to_hall=COUNTY[0], reason="县级事项")
        _send(county, "acknowledge_handoff", case_id=case)
        gone = _until(watch, lambda u: u.entry.case_id == case and u.removed)
        assert gone.removed
    watch.cancel()


def test_a_hall_reads_its_own_queue_only(node: NodeProcess) -> None:
    village = case_exchange_pb2_grpc.CaseExchangeStub(_hall_channel(node, VILLAGE[0]))
    with pytest.raises(grpc.RpcError) as caught:
        village.ListQueue(case_exchange_pb2.ListQueueRequest(hall_id=TOWNSHIP[0]), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    certificate, key = node.issue("supervisor", "jiancha", region="4309")
    supervisor = case_exchange_pb2_grpc.CaseExchangeStub(_channel(node, certificate, key))
    supervisor.ListQueue(case_exchange_pb2.ListQueueRequest(hall_id=TOWNSHIP[0]), timeout=10)
    certificate, key = node.issue("supervisor", "changde", region="4307")  # another city
    other = case_exchange_pb2_grpc.CaseExchangeStub(_channel(node, certificate, key))
    with pytest.raises(grpc.RpcError) as caught:
        other.ListQueue(case_exchange_pb2.ListQueueRequest(hall_id=TOWNSHIP[0]), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_ab_posts_decide_whose_queue_a_window_is(node: NodeProcess) -> None:
    county = case_exchange_pb2_grpc.CaseExchangeStub(_hall_channel(node, COUNTY[0]))
    with _client(node, COUNTY[0]) as client:
        _send(client, "staff_window", window="综合窗口", a_post="op-zhang", b_post="op-li")
        watch = county.WatchQueue(
            case_exchange_pb2.WatchQueueRequest(operator="op-zhang"), timeout=PATIENCE
        )
        _until(watch, lambda u: u.snapshot_done)
        case = _submit(client)
        _until(watch, lambda u: u.entry.case_id == case)  # the A post serves the window
        by_b = county.ListQueue(case_exchange_pb2.ListQueueRequest(operator="op-li"), timeout=10)
        assert case not in [entry.case_id for entry in by_b.entries]
        _send(client, "staff_window", window="综合窗口", a_post="op-zhang", b_post="op-li",
              a_post_absent=True)  # fmt: skip
        # The A post is absent: the window's cases leave op-zhang's watch for op-li's queue.
        _until(watch, lambda u: u.removed and u.entry.case_id == case)
        by_b = county.ListQueue(case_exchange_pb2.ListQueueRequest(operator="op-li"), timeout=10)
        assert case in [entry.case_id for entry in by_b.entries]
        watch.cancel()


def test_a_deferred_village_case_is_warned_yellow_and_red_and_the_log_still_verifies(
    node: NodeProcess,
) -> None:
    village = case_exchange_pb2_grpc.CaseExchangeStub(_hall_channel(node, VILLAGE[0]))
    watch = village.WatchQueue(case_exchange_pb2.WatchQueueRequest(), timeout=PATIENCE)
    _until(watch, lambda u: u.snapshot_done)
    # Taken in 20 days ago while the village room was offline; its outbox forwards it now.
    taken = datetime.now(UTC) - timedelta(days=20)
    signed = sign_command(
        node.credentials(VILLAGE[0]), "submit",
        case_exchange_pb2.SubmitCase(item_code=HOUSEHOLD_MOVE, materials=[MATERIAL]),
        idempotency_key=uuid.uuid4().hex, operator="op-village", issued_at=taken,
        deferred=True, applicant=APPLICANT,
    )  # fmt: skip
    with _client(node, VILLAGE[0]) as client:
        case = str(client.send_signed("submit", signed).case_id)
    red = common_pb2.WARNING_KIND_RED
    warned = _until(watch, lambda u: u.entry.case_id == case and red in u.entry.warnings)
    assert common_pb2.WARNING_KIND_YELLOW in warned.entry.warnings and warned.entry.overdue
    assert warned.entry.received_at.ToDatetime(tzinfo=UTC) == taken.replace(
        microsecond=taken.microsecond
    )
    watch.cancel()
    # The warnings are in the log, and an auditor with the log key alone accepts them.
    node.run("ledger", "integrate")
    report = node.run("audit", "verify", "--log-key", node.log_key)
    assert "OK" in report or "verified" in report


def test_queues_and_case_lists_filter_by_intake_channel(node: NodeProcess) -> None:
    """收件渠道 is queryable over gRPC: a hall's queue and a supervisor's case list."""
    village = case_exchange_pb2_grpc.CaseExchangeStub(_hall_channel(node, VILLAGE[0]))
    watch = village.WatchQueue(case_exchange_pb2.WatchQueueRequest(), timeout=PATIENCE)
    _until(watch, lambda u: u.snapshot_done)
    with _client(node, VILLAGE[0]) as client:
        phoned = _submit(client, channel=common_pb2.INTAKE_CHANNEL_PHONE)
        kiosk = _submit(client, channel=common_pb2.INTAKE_CHANNEL_KIOSK)
    _until(watch, lambda u: u.entry.case_id == phoned)
    _until(watch, lambda u: u.entry.case_id == kiosk)
    watch.cancel()
    by_phone = village.ListQueue(
        case_exchange_pb2.ListQueueRequest(channels=[common_pb2.INTAKE_CHANNEL_PHONE]), timeout=10
    )
    assert phoned in {e.case_id for e in by_phone.entries}
    assert kiosk not in {e.case_id for e in by_phone.entries}
    certificate, key = node.issue("supervisor", "ziyang-channels", region="430902")
    stub = supervision_pb2_grpc.SupervisionStub(_channel(node, certificate, key))
    listed = stub.ListCases(
        supervision_pb2.ListCasesRequest(channels=[common_pb2.INTAKE_CHANNEL_KIOSK]), timeout=10
    )
    assert [c.case_id for c in listed.cases] == [kiosk]
    assert listed.cases[0].channel == common_pb2.INTAKE_CHANNEL_KIOSK
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListCases(supervision_pb2.ListCasesRequest(channels=[99]), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "channels[0]" in str(caught.value.details())


def test_supervisors_read_their_region_and_below_only(node: NodeProcess) -> None:
    certificate, key = node.issue("supervisor", "ziyang", region="430902")
    stub = supervision_pb2_grpc.SupervisionStub(_channel(node, certificate, key))
    cases = stub.ListCases(supervision_pb2.ListCasesRequest(), timeout=10)
    assert cases.cases and all(c.intake_region.startswith("430902") for c in cases.cases)
    overdue = stub.ListCases(supervision_pb2.ListCasesRequest(overdue=True), timeout=10)
    assert all(c.overdue for c in overdue.cases) and overdue.cases
    for region in ("43", "4307"):
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListCases(supervision_pb2.ListCasesRequest(region=region), timeout=10)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    figures = stub.GetStatistics(
        supervision_pb2.StatisticsRequest(by=supervision_pb2.DIMENSION_HALL), timeout=10
    )
    assert figures.total.received >= 3 and {r.key for r in figures.rows} >= {VILLAGE[0]}
    warnings = stub.ListWarnings(supervision_pb2.ListWarningsRequest(), timeout=10)
    assert {w.kind for w in warnings.warnings} >= {
        common_pb2.WARNING_KIND_YELLOW, common_pb2.WARNING_KIND_RED
    }  # fmt: skip
    # A hall certificate may not read supervision at all.
    hall = supervision_pb2_grpc.SupervisionStub(_hall_channel(node, VILLAGE[0]))
    with pytest.raises(grpc.RpcError) as caught:
        hall.ListCases(supervision_pb2.ListCasesRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_followers_report_lag_and_health(node: NodeProcess) -> None:
    metrics = urllib.request.urlopen(node.metrics_url, timeout=10).read().decode()
    for follower in ("cases", "statistics"):
        assert f'tongban_follower_lag_events{{follower="{follower}"}}' in metrics
        assert f'tongban_follower_failed{{follower="{follower}"}} 0.0' in metrics
    assert 'tongban_supervision_warnings_total{kind="RED"}' in metrics
    health = health_pb2_grpc.HealthStub(_hall_channel(node, VILLAGE[0]))
    answer = health.Check(health_pb2.HealthCheckRequest(service="tongban.projections"), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_a_stopped_projection_shows_in_health_while_the_node_takes_commands(
    tmp_path: Path, fresh_postgres_db: str
) -> None:
    with NodeProcess(tmp_path / "node", database_url=fresh_postgres_db) as node:
        for hall_id, region in (VILLAGE, COUNTY):
            node.add_hall(hall_id, region)
        node.start()
        with _client(node, COUNTY[0]) as county:
            case = _submit(county)
            # An operator's mistake the projection cannot live with: no row may say ACCEPTED.
            with psycopg.connect(fresh_postgres_db, autocommit=True) as connection:
                connection.execute(
                    "ALTER TABLE projection_cases ADD CONSTRAINT no_accepted "
                    "CHECK (state <> 'ACCEPTED')"
                )
            health = health_pb2_grpc.HealthStub(_hall_channel(node, COUNTY[0]))
            watch = health.Watch(
                health_pb2.HealthCheckRequest(service="tongban.projections"), timeout=PATIENCE
            )
            _until(watch, lambda r: r.status == health_pb2.HealthCheckResponse.SERVING)
            _send(county, "accept", case_id=case)
            _until(watch, lambda r: r.status == health_pb2.HealthCheckResponse.NOT_SERVING)
            watch.cancel()
            # The node still takes commands; the queries say why they cannot answer.
            _send(county, "start_handling", case_id=case)
            overall = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert overall.status == health_pb2.HealthCheckResponse.SERVING
            stub = case_exchange_pb2_grpc.CaseExchangeStub(_hall_channel(node, COUNTY[0]))
            with pytest.raises(grpc.RpcError) as caught:
                stub.ListQueue(case_exchange_pb2.ListQueueRequest(), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "projection 'cases' stopped at notification" in (caught.value.details() or "")
        metrics = urllib.request.urlopen(node.metrics_url, timeout=10).read().decode()
        assert 'tongban_follower_failed{follower="cases"} 1.0' in metrics

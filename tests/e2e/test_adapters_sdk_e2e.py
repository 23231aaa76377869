"""The hall SDK against a real node over mutual TLS: every refusal the node makes arrives as the
adapters' error tree (adapters/errors.py) with the node's field violations, never as a raw
``grpc.RpcError``; a command needs an idempotency key, and a retry under it replays.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from tongban.v1 import case_exchange_pb2, common_pb2

from adapters.errors import (
    AccessDenied,
    AdapterError,
    CaseNotFound,
    CommandInvalid,
    Conflict,
    InputError,
    NodeRefused,
    TransientFailure,
)
from adapters.sdk import HallClient, RetryPolicy
from tests.e2e.conftest import VILLAGE
from tests.e2e.test_adapters_support import closed_port, id_number
from tests.harness.node import NodeProcess

pytestmark = pytest.mark.e2e

APPLICANT = common_pb2.Applicant(
    name="村民丙", id_number=id_number("43090219500101003"), phone="13700000003"
)
MATERIAL = common_pb2.Material(
    name="居民身份证", sha256=hashlib.sha256(b"id").hexdigest(), media_type="image/png", size=2
)


@pytest.fixture
def village(node: NodeProcess) -> Iterator[HallClient]:
    with node.client(VILLAGE[0], retry=RetryPolicy(attempts=2)) as client:
        yield client


def refusal(call: Callable[[], Any]) -> NodeRefused:
    """The error ``call`` raises: a NodeRefused (a raw gRPC error fails the test)."""
    with pytest.raises(AdapterError) as caught:
        call()
    assert isinstance(caught.value, NodeRefused), repr(caught.value)
    assert not isinstance(caught.value, grpc.RpcError)
    return caught.value


def submit(client: HallClient, key: str, **changes: Any) -> case_exchange_pb2.CommandReply:
    fields: dict[str, Any] = {
        "item_code": "200101001000",
        "applicant": APPLICANT,
        "materials": [MATERIAL],
    }
    fields.update(changes)
    return client.send("submit", idempotency_key=key, **fields)


def test_a_retry_under_the_same_key_replays_and_other_content_is_a_conflict(
    village: HallClient,
) -> None:
    key = f"room-{uuid.uuid4().hex}"
    first = submit(village, key)
    again = submit(village, key)  # the caller's own retry: signed anew, the same act
    assert (again.case_id, again.replayed) == (first.case_id, True)
    other = refusal(lambda: submit(village, key, item_code="200202001000"))
    assert type(other) is Conflict and other.code == grpc.StatusCode.ALREADY_EXISTS
    assert [e.WhichOneof("event") for e in village.history(first.case_id).events] == ["submitted"]


def test_a_command_without_a_key_never_leaves_the_hall(village: HallClient) -> None:
    case_id = submit(village, f"room-{uuid.uuid4().hex}").case_id
    with pytest.raises(TypeError, match="idempotency_key"):
        village.send("accept", case_id=case_id)  # type: ignore[call-arg]
    with pytest.raises(InputError, match="idempotency_key"):
        village.send("accept", case_id=case_id, idempotency_key="")
    assert village.get_case(case_id).state == common_pb2.CASE_STATE_RECEIVED


def test_the_nodes_refusals_are_the_error_tree(node: NodeProcess, village: HallClient) -> None:
    case_id = submit(village, f"room-{uuid.uuid4().hex}").case_id
    village.send("accept", case_id=case_id, idempotency_key=f"{case_id}/accept")

    twice = refusal(lambda: village.send("accept", case_id=case_id, idempotency_key=f"{case_id}/2"))
    assert type(twice) is Conflict and twice.code == grpc.StatusCode.FAILED_PRECONDITION

    invalid = refusal(lambda: village.send("accept", case_id="nope", idempotency_key="bad-id-0001"))
    assert type(invalid) is CommandInvalid
    assert invalid.violations and invalid.violations[0][0].endswith("case_id"), invalid.violations

    missing = refusal(lambda: village.get_case(str(uuid.uuid4())))
    assert type(missing) is CaseNotFound and not missing.transient

    signed = village.sign("withdraw", case_id=case_id, reason="x", idempotency_key="forged-0001")
    forged = case_exchange_pb2.SignedCommand()
    forged.CopyFrom(signed)
    forged.signature = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    unsigned = refusal(lambda: village.send_signed("withdraw", forged))
    assert type(unsigned) is AccessDenied and unsigned.code == grpc.StatusCode.UNAUTHENTICATED
    assert village.get_case(case_id).state == common_pb2.CASE_STATE_ACCEPTED


def test_a_node_that_cannot_be_reached_is_a_transient_failure(node: NodeProcess) -> None:
    policy = RetryPolicy(attempts=3, initial_backoff=0.05, max_backoff=0.1)
    target = f"127.0.0.1:{closed_port()}"
    with HallClient.connect(target, node.credentials(VILLAGE[0]), retry=policy) as away:
        calls: dict[str, Callable[[], Any]] = {
            "send": lambda: submit(away, "room-unreachable-0001"),
            "get_case": lambda: away.get_case(str(uuid.uuid4())),
            "history": lambda: away.history(str(uuid.uuid4())),
            "items": away.items,
        }
        for name, call in calls.items():
            failure = refusal(call)
            assert type(failure) is TransientFailure and failure.transient, name
            assert failure.code == grpc.StatusCode.UNAVAILABLE, name

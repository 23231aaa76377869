"""The hall SDK against an in-process gRPC server: required idempotency keys, gRPC's own retry
policy on the retryable codes only, and every failed call turned into the adapters' error tree
(never a raw ``grpc.RpcError``). The same is checked against a real node in
tests/e2e/test_adapters_sdk_e2e.py.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from tongban.v1 import case_exchange_pb2, case_exchange_pb2_grpc

import adapters
from adapters import errors
from adapters.errors import (
    CLASS_OF_CODE,
    RETRYABLE_CODES,
    AccessDenied,
    AdapterError,
    CaseNotFound,
    CommandInvalid,
    ConfigError,
    Conflict,
    InputError,
    NodeFault,
    NodeRefused,
    TransientFailure,
    from_rpc_error,
)
from adapters.sdk import MAX_ATTEMPTS, HallClient, HallCredentials, RetryPolicy, sign_command

ADAPTERS = Path(adapters.__file__).parent
FAST = {"initial_backoff": 0.01, "max_backoff": 0.05}


class FakeNode(case_exchange_pb2_grpc.CaseExchangeServicer):
    """Answers ``Accept`` with the codes in ``script`` (one per attempt, then OK) and records
    every request; ``Withdraw`` refuses with rich ``google.rpc.Status`` details."""

    def __init__(self) -> None:
        self.script: list[grpc.StatusCode] = []
        self.received: list[bytes] = []
        self.lock = threading.Lock()

    def Accept(self, request: Any, context: Any) -> Any:  # noqa: N802 - the RPC's name
        with self.lock:
            self.received.append(request.SerializeToString())
            code = self.script.pop(0) if self.script else None
        if code is not None:
            context.abort(code, f"scripted {code.name}")
        return case_exchange_pb2.CommandReply(case_id="c-1", version=len(self.received))

    def Withdraw(self, request: Any, context: Any) -> Any:  # noqa: N802 - the RPC's name
        with self.lock:
            self.received.append(request.SerializeToString())
        details = []
        for message in (
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field="command.withdraw.reason", description="must not be empty"
                    )
                ]
            ),
            error_details_pb2.ErrorInfo(reason="InvalidInput", domain="tongban"),
        ):
            packed = any_pb2.Any()
            packed.Pack(message)
            details.append(packed)
        status = status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT,
            message="command.withdraw.reason: must not be empty",
            details=details,
        )
        context.abort_with_status(rpc_status.to_status(status))

    def GetCase(self, request: Any, context: Any) -> Any:  # noqa: N802 - the RPC's name
        context.abort(grpc.StatusCode.NOT_FOUND, "no such case")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, FakeNode]]:
    node = FakeNode()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    case_exchange_pb2_grpc.add_CaseExchangeServicer_to_server(node, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", node
    server.stop(grace=None)


@pytest.fixture
def fake(served: tuple[str, FakeNode]) -> FakeNode:
    node = served[1]
    node.script.clear()
    node.received.clear()
    return node


CREDENTIALS = HallCredentials("hn-shatou-v201", "430902104201", Ed25519PrivateKey.generate())


def client(target: str, **retry: Any) -> HallClient:
    return HallClient.connect(target, CREDENTIALS, retry=RetryPolicy(**{**FAST, **retry}))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ------------------------------------------------------------------ idempotency keys


def test_every_command_needs_an_idempotency_key() -> None:
    """No random default: a missing key is a TypeError naming it (and a mypy error), an empty
    or malformed one an InputError on ``idempotency_key``; nothing is signed or sent."""
    with HallClient(grpc.insecure_channel("localhost:1"), CREDENTIALS) as hall:
        for method in (hall.sign, hall.send):
            with pytest.raises(TypeError, match="idempotency_key"):
                method("accept", case_id="c")  # type: ignore[call-arg]
            for bad in ("", "short", "x" * 129, "键-0000000001", "tab\there-1"):
                with pytest.raises(InputError, match="idempotency_key") as caught:
                    method("accept", case_id="c", idempotency_key=bad)
                assert caught.value.field == "idempotency_key"
        signed = hall.sign("accept", case_id="c", idempotency_key="room-0001/accept")
    header = case_exchange_pb2.Command.FromString(signed.command).header
    assert header.idempotency_key == "room-0001/accept"
    with pytest.raises(InputError, match="idempotency_key"):
        sign_command(CREDENTIALS, "accept", case_exchange_pb2.Accept(), idempotency_key="",
                     operator="op")  # fmt: skip
    for name in ("sign", "send"):
        parameter = inspect.signature(getattr(HallClient, name)).parameters["idempotency_key"]
        assert parameter.default is inspect.Parameter.empty and parameter.annotation == "str"


def test_the_sdks_own_mistakes_are_input_errors() -> None:
    with HallClient(grpc.insecure_channel("localhost:1"), CREDENTIALS) as hall:
        with pytest.raises(InputError, match="unknown action 'fly'") as caught:
            hall.sign("fly", idempotency_key="key-00000001")
        assert caught.value.field == "action"
        with pytest.raises(InputError, match="register_hall"):  # an admin command
            hall.send_signed("register_hall", case_exchange_pb2.SignedCommand())
        with pytest.raises(InputError, match="no_such_field"):
            hall.sign("accept", idempotency_key="key-00000001", no_such_field=1)
    with pytest.raises(ConfigError, match="cannot load signing key"):
        HallCredentials.load_signing_key(Path("/nonexistent/signing.key"))


# ------------------------------------------------------------------ the retry policy


def test_retryable_codes_are_retried_with_the_same_bytes(
    served: tuple[str, FakeNode], fake: FakeNode
) -> None:
    """gRPC's retry policy sends the very same signed bytes again on a retryable code."""
    fake.script = [grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE]
    with client(served[0]) as hall:
        reply = hall.send("accept", case_id="c-1", idempotency_key="room-0001/accept")
    assert reply.version == 3
    assert len(fake.received) == 3 and len(set(fake.received)) == 1


@pytest.mark.parametrize("code", sorted(RETRYABLE_CODES, key=lambda c: c.name))
def test_each_retryable_code_is_retried_up_to_the_attempts(
    served: tuple[str, FakeNode], fake: FakeNode, code: grpc.StatusCode
) -> None:
    fake.script = [code] * 10
    with client(served[0], attempts=3) as hall, pytest.raises(TransientFailure) as caught:
        hall.send("accept", case_id="c-1", idempotency_key="room-0001/accept")
    assert len(fake.received) == 3
    assert caught.value.code == code and caught.value.transient
    assert not isinstance(caught.value, grpc.RpcError)


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.FAILED_PRECONDITION],
)
def test_other_codes_are_not_retried(
    served: tuple[str, FakeNode], fake: FakeNode, code: grpc.StatusCode
) -> None:
    fake.script = [code]
    with client(served[0]) as hall, pytest.raises(NodeRefused) as caught:
        hall.send("accept", case_id="c-1", idempotency_key="room-0001/accept")
    assert len(fake.received) == 1
    assert caught.value.code == code and not caught.value.transient
    assert isinstance(caught.value, CLASS_OF_CODE[code])


def test_one_attempt_turns_retries_off(served: tuple[str, FakeNode], fake: FakeNode) -> None:
    fake.script = [grpc.StatusCode.UNAVAILABLE]
    with client(served[0], attempts=1) as hall, pytest.raises(TransientFailure):
        hall.send("accept", case_id="c-1", idempotency_key="room-0001/accept")
    assert len(fake.received) == 1


def test_the_policy_is_grpcs_service_config_with_the_one_set_of_codes() -> None:
    config = json.loads(RetryPolicy(attempts=4, initial_backoff=0.5).service_config())
    [method] = config["methodConfig"]
    assert method["name"] == [{}]  # every method of every service on the channel
    policy = method["retryPolicy"]
    assert policy["maxAttempts"] == 4 and policy["initialBackoff"] == "0.500s"
    assert set(policy["retryableStatusCodes"]) == {code.name for code in RETRYABLE_CODES}
    assert {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    } == RETRYABLE_CODES
    assert grpc.StatusCode.INTERNAL not in RETRYABLE_CODES
    assert "retryPolicy" not in json.loads(RetryPolicy(attempts=1).service_config())[
        "methodConfig"][0]  # fmt: skip
    for attempts in (0, MAX_ATTEMPTS + 1):
        with pytest.raises(ConfigError, match="1 to 5"):
            RetryPolicy(attempts=attempts)
    with pytest.raises(ConfigError, match="backoff"):
        RetryPolicy(initial_backoff=2, max_backoff=1)
    delays = RetryPolicy(initial_backoff=1, max_backoff=4).delays()
    waits = [next(delays) for _ in range(5)]
    assert all(0.5 * cap <= wait <= cap for wait, cap in zip(waits, [1, 2, 4, 4, 4], strict=True))


def test_one_set_of_retryable_codes_in_the_adapters() -> None:
    """The retryable codes are listed once (adapters.errors); no other module names them as a
    set, and no module runs a backoff loop of its own around a call."""
    for path in ADAPTERS.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        if path.name != "errors.py":
            assert not re.search(r"frozenset\(\s*\{\s*grpc\.StatusCode", source), path.name
        assert "time.sleep" not in source, path.name


# ------------------------------------------------------------------ the error tree


def test_every_status_code_has_a_class_and_transient_is_the_retryable_set() -> None:
    assert set(CLASS_OF_CODE) == set(grpc.StatusCode)
    for code, cls in CLASS_OF_CODE.items():
        refusal = NodeRefused.of(code, "m")
        assert type(refusal) is cls and issubclass(cls, NodeRefused)
        assert refusal.transient == (code in RETRYABLE_CODES) == (cls is TransientFailure)
        assert str(refusal) == f"{code.name}: m"
    assert NodeRefused.of(grpc.StatusCode.NOT_FOUND).message == "NOT_FOUND"
    assert issubclass(NodeRefused, AdapterError) and not issubclass(NodeRefused, grpc.RpcError)
    assert {CommandInvalid, AccessDenied, CaseNotFound, Conflict, NodeFault} <= set(
        CLASS_OF_CODE.values()
    )


def test_the_tree_in_the_docstring_names_every_error_class() -> None:
    """Every AdapterError subclass defined anywhere in ``adapters`` is drawn in
    adapters/errors.py's docstring, and none is defined outside that module."""
    assert errors.__doc__ is not None
    for path in ADAPTERS.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        classes = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
        for node in classes:
            bases = {getattr(base, "id", getattr(base, "attr", "")) for base in node.bases}
            if path.name != "errors.py":
                assert "Exception" not in bases and not bases & set(dir(errors)), (
                    f"{path.name}: {node.name} is an exception outside adapters/errors.py"
                )
            elif bases & {"Exception", *dir(errors)} and node.name != "FieldError":
                assert re.search(rf"\b{node.name}\b", errors.__doc__), node.name


def test_no_module_but_the_sdk_catches_grpc_errors() -> None:
    """The one conversion is HallClient._call (via errors.from_rpc_error)."""
    for path in ADAPTERS.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        count = len(re.findall(r"except \(?[\w., ]*grpc\.RpcError", source))
        assert count == (1 if path.name == "sdk.py" else 0), path.name


def test_the_nodes_details_are_read_into_the_refusal(
    served: tuple[str, FakeNode], fake: FakeNode
) -> None:
    with client(served[0]) as hall, pytest.raises(CommandInvalid) as caught:
        hall.send("withdraw", case_id="c-1", idempotency_key="room-0001/withdraw")
    refusal = caught.value
    assert refusal.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refusal.violations == (("command.withdraw.reason", "must not be empty"),)
    assert refusal.reason == "InvalidInput" and refusal.field_suffix() == "reason"
    info = error_details_pb2.ErrorInfo()
    assert len(refusal.details) == 2 and refusal.details[1].Unpack(info)
    assert info.domain == "tongban"  # the whole status is kept, not only what is read out
    assert len(fake.received) == 1  # INVALID_ARGUMENT is not retried


def test_no_public_method_lets_a_grpc_error_out(
    served: tuple[str, FakeNode], fake: FakeNode
) -> None:
    """Against a node that is not there and one that refuses: always the tree, never gRPC's."""
    down = client(f"127.0.0.1:{closed_port()}", attempts=2)
    with down, client(served[0]) as up:
        signed = up.sign("accept", case_id="c-1", idempotency_key="room-0001/accept")
        calls = {
            "send": lambda hall: hall.send("accept", case_id="c", idempotency_key="room-000001"),
            "send_signed": lambda hall: hall.send_signed("accept", signed),
            "get_case": lambda hall: hall.get_case("c-1"),
            "history": lambda hall: hall.history("c-1"),
            "items": lambda hall: hall.items(),
        }
        for name, call in calls.items():
            with pytest.raises(TransientFailure) as unreachable:
                call(down)
            assert unreachable.value.code == grpc.StatusCode.UNAVAILABLE, name
            fake.script = [grpc.StatusCode.PERMISSION_DENIED]
            with pytest.raises(AdapterError) as refused:  # a raw RpcError would fail the test
                call(up)
            assert isinstance(refused.value, NodeRefused), name
            assert not isinstance(refused.value, grpc.RpcError), name
        with pytest.raises(CaseNotFound):
            up.get_case("c-1")


def test_from_rpc_error_reads_anything() -> None:
    """A bare RpcError (no code) is UNKNOWN; a status detail contradicting the call is ignored."""
    bare = from_rpc_error(grpc.RpcError("odd"))
    assert type(bare) is NodeFault and bare.code == grpc.StatusCode.UNKNOWN
    personal = [
        case_exchange_pb2.PersonalValue(field=f"submit.applicant.{name}")
        for name in ("name", "id_number", "phone")
    ]
    refusal = NodeRefused.of(
        grpc.StatusCode.INVALID_ARGUMENT, "bad", (("personal[1].value", "'<redacted>': x"),)
    ).resolve_personal(personal)
    assert type(refusal) is CommandInvalid
    assert refusal.violations == (("command.submit.applicant.id_number", "'<redacted>': x"),)
    assert refusal.field_suffix() == "applicant.id_number"


def test_the_fake_node_gets_the_signed_command(
    served: tuple[str, FakeNode], fake: FakeNode
) -> None:
    """A sanity check that the fake server really got the SDK's signed command."""
    with client(served[0]) as hall:
        hall.send("accept", case_id="c-1", idempotency_key="room-0002/accept")
    signed = case_exchange_pb2.SignedCommand.FromString(fake.received[0])
    CREDENTIALS.signing_key.public_key().verify(signed.signature, signed.command)
    command = case_exchange_pb2.Command.FromString(signed.command)
    assert command.accept.case_id == "c-1" and command.header.hall_id == "hn-shatou-v201"


def test_an_agents_step_is_signed_with_the_agents_own_key(
    served: tuple[str, FakeNode], fake: FakeNode
) -> None:
    """``send(..., acting_agent=..., agent_key=...)`` and ``sign_command(..., agent=...,
    agent_key=...)``: the header names the agent and the agent's key, not the hall's, signs."""
    agent_key = Ed25519PrivateKey.generate()
    with client(served[0]) as hall:
        hall.send("accept", case_id="c-1", idempotency_key="room-0003/accept",
                  acting_agent="dby-07", agent_key=agent_key)  # fmt: skip
    offline = sign_command(CREDENTIALS, "accept", case_exchange_pb2.Accept(case_id="c-1"),
                           idempotency_key="room-0004/accept", operator="op-1", agent="dby-07",
                           agent_key=agent_key)  # fmt: skip
    for signed in (case_exchange_pb2.SignedCommand.FromString(fake.received[0]), offline):
        command = case_exchange_pb2.Command.FromString(signed.command)
        assert (command.header.agent, command.header.hall_id) == ("dby-07", "hn-shatou-v201")
        agent_key.public_key().verify(signed.signature, signed.command)
        with pytest.raises(InvalidSignature):
            CREDENTIALS.signing_key.public_key().verify(signed.signature, signed.command)
    # Without a key of their own, the agent's step is signed by the hall, naming the agent.
    under_hall = sign_command(CREDENTIALS, "accept", case_exchange_pb2.Accept(case_id="c-1"),
                              idempotency_key="room-0005/accept", operator="op-1",
                              agent="dby-08")  # fmt: skip
    CREDENTIALS.signing_key.public_key().verify(under_hall.signature, under_hall.command)
    assert case_exchange_pb2.Command.FromString(under_hall.command).header.agent == "dby-08"

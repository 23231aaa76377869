"""The authorisation matrix: every role × the case, admin, audit and supervision RPCs of a real
node over mutual TLS (the materials RPCs: ``test_materials_e2e.py``).

No reply may reveal to a caller not entitled to it that a case exists, its state, its holder or
the applicant's personal data: a hall that is no party to a case gets exactly the answer it gets
for a case that does not exist; auditors, peers and admins never see personal data in clear; a
role that may not call an RPC gets PERMISSION_DENIED naming only its own role. Requests that do
not parse are INVALID_ARGUMENT with a field violation.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from tongban.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    case_exchange_pb2,
    case_exchange_pb2_grpc,
    common_pb2,
    supervision_pb2,
    supervision_pb2_grpc,
)

from adapters.errors import NodeRefused
from adapters.sdk import HallClient, RetryPolicy
from hub.bootstrap import load_admin_key
from hub.commands.signing import CommandSigner
from hub.domain.values import id_number_with_check
from tests.e2e.conftest import TOWNSHIP, VILLAGE
from tests.harness.node import NodeProcess

pytestmark = pytest.mark.e2e


def send(client: HallClient, action: str, **fields: Any) -> Any:
    """``client.send`` with a fresh idempotency key unless the test gives one."""
    fields.setdefault("idempotency_key", uuid.uuid4().hex)
    return client.send(action, **fields)


def sign(client: HallClient, action: str, **fields: Any) -> Any:
    """``client.sign`` with a fresh idempotency key unless the test gives one."""
    fields.setdefault("idempotency_key", uuid.uuid4().hex)
    return client.sign(action, **fields)


APPLICANT = common_pb2.Applicant(
    name="王秀兰", id_number=id_number_with_check("43090219480101002"), phone="13907379999"
)
PERSONAL = [APPLICANT.name.encode(), APPLICANT.id_number.encode(), APPLICANT.phone.encode()]
MISSING = "0b7e1b5c-8a6e-4f39-9c51-7b1a8f9a2a11"

#: role → (certificate role, certificate name)
ROLES = {
    "party hall": ("hall", VILLAGE[0]),
    "other hall": ("hall", TOWNSHIP[0]),
    "auditor": ("auditor", "auditor-matrix"),
    "peer": ("peer", "tongban-42"),
    "admin": ("admin", "operator"),
    "supervisor": ("supervisor", "jiancha"),  # of 益阳市 (4309), where the halls are
}

#: The case commands (one per lifecycle RPC) with plausible arguments.
CASE_COMMANDS: dict[str, dict[str, Any]] = {
    "request_correction": {"missing": ["户口簿"], "notice": "补齐"},
    "resubmit": {"materials": [common_pb2.Material(
        name="户口簿", sha256=hashlib.sha256(b"h").hexdigest(), media_type="image/png", size=9)]},
    "accept": {},
    "reject_at_intake": {"reason": "x"},
    "hand_off": {"to_hall": TOWNSHIP[0], "reason": "x"},
    "acknowledge_handoff": {},
    "start_handling": {},
    "suspend": {"reason": common_pb2.SUSPENSION_REASON_HEARING, "note": "x"},
    "resume": {},
    "escalate": {"to_hall": TOWNSHIP[0], "reason": "x"},
    "open_joint_tasks": {"tasks": [common_pb2.JointTask(task_id="a", hall_id=TOWNSHIP[0],
                                                        department="d")]},
    "complete_joint_task": {"task_id": "a", "approved": True, "note": "x"},
    "decide": {"approved": True, "reason": "x"},
    "conclude": {},
    "record_certificate": {"certificate_id": "C-1"},
    "issue_certificate": {"type_code": "150001", "issuer_code": "11430902MB0000001X",
                          "authority": "x", "valid_until": ""},
    "suspend_certificate": {"reason": "x"},
    "reinstate_certificate": {"reason": "x"},
    "revoke_certificate": {"reason": "x"},
    "deliver": {"method": common_pb2.DELIVERY_METHOD_WINDOW},
    "rate": {"rating": common_pb2.RATING_SATISFIED, "comment": "x"},
    "complete_rectification": {"report": "x", "follow_up": "x"},
    "archive": {},
    "withdraw": {"reason": "x"},
    "dispatch_by_post": {"carrier": "EMS", "tracking_number": "1190000000001"},
    "deposit_in_locker": {"locker_id": "L-1", "compartment": "A1", "code_hash": "ab" * 32,
                          "hold_hours": 1},
    "pick_up_from_locker": {"locker_id": "L-1", "compartment": "A1"},
    "return_to_window": {"reason": "x"},
}  # fmt: skip


def _rpc(action: str) -> str:
    return "".join(part.title() for part in action.split("_"))


@pytest.fixture(scope="module")
def case_id(node: NodeProcess) -> str:
    with node.client(VILLAGE[0], retry=RetryPolicy(attempts=1)) as village:
        reply = send(village,
            "submit",
            item_code="200202001000",
            applicant=APPLICANT,
            competent_region=TOWNSHIP[1],
            materials=[common_pb2.Material(name="身份证", sha256=hashlib.sha256(b"i").hexdigest(),
                                           media_type="image/png", size=9)],
        )  # fmt: skip
    return str(reply.case_id)


@pytest.fixture(scope="module")
def channels(node: NodeProcess) -> Iterator[dict[str, grpc.Channel]]:
    opened = {}
    for role, (kind, name) in ROLES.items():
        if kind == "hall":
            certificate, key = node.halls[name].certificate, node.halls[name].private_key
        else:
            region = "4309" if kind == "supervisor" else ""
            certificate, key = node.issue(kind, name, region=region)
        credentials = grpc.ssl_channel_credentials(
            (node.pki / "ca.pem").read_bytes(), key.read_bytes(), certificate.read_bytes()
        )
        opened[role] = grpc.secure_channel(node.target, credentials)
    yield opened
    for channel in opened.values():
        channel.close()


def _outcome(call: Callable[[], Any]) -> tuple[str, bytes]:
    """("OK", reply bytes) or (status name, message and details bytes)."""
    try:
        reply = call()
        if isinstance(reply, Iterator):  # a stream: read it to its end (or its deadline)
            return "OK", b"".join(r.SerializeToString() for r in reply)
    except grpc.RpcError as error:  # a raw stub's call
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        details = status.SerializeToString() if status is not None else b""
        return error.code().name, (error.details() or "").encode() + details
    except NodeRefused as refusal:  # the SDK's call: the same status, read once by the SDK
        status = status_pb2.Status(
            code=refusal.code.value[0], message=refusal.message, details=refusal.details
        )
        return refusal.code.name, refusal.message.encode() + status.SerializeToString()
    return "OK", reply.SerializeToString()


def _assert_private(role: str, rpc: str, data: bytes) -> None:
    for value in PERSONAL:
        assert value not in data, f"{role} got personal data from {rpc}"


def _signer(node: NodeProcess, hall_id: str) -> HallClient:
    return node.client(hall_id, retry=RetryPolicy(attempts=1))


def test_case_commands(node: NodeProcess, case_id: str, channels: dict[str, grpc.Channel]) -> None:
    """Non-hall roles may send no hall command; a hall that is no party gets NOT_FOUND, worded
    exactly as for a case that does not exist; nothing leaks personal data or state."""
    with _signer(node, TOWNSHIP[0]) as other, _signer(node, VILLAGE[0]) as party:
        for action, fields in CASE_COMMANDS.items():
            rpc = _rpc(action)
            # Another hall, signing with its own key, about the village's case and a missing one.
            code, data = _outcome(lambda: send(other, action, case_id=case_id, **fields))  # noqa: B023
            missing_code, missing_data = _outcome(
                lambda: send(other, action, case_id=MISSING, **fields)  # noqa: B023
            )
            assert code == missing_code == "NOT_FOUND", (action, code, data)
            assert data.replace(case_id.encode(), b"X") == missing_data.replace(
                MISSING.encode(), b"X"
            ), action
            for leak in (b"RECEIVED", VILLAGE[0].encode(), b"holder"):
                assert leak not in data, (action, leak)
            # Every non-hall role, presenting the party hall's genuine signed command.
            signed = sign(party, action, case_id=case_id, **fields)
            for role in ("auditor", "peer", "admin", "supervisor"):
                stub = case_exchange_pb2_grpc.CaseExchangeStub(channels[role])
                code, data = _outcome(lambda: getattr(stub, rpc)(signed, timeout=5))  # noqa: B023
                assert code == "PERMISSION_DENIED", (role, action, code)
                assert b"RECEIVED" not in data
                _assert_private(role, rpc, data)


def test_reading_cases(node: NodeProcess, case_id: str, channels: dict[str, grpc.Channel]) -> None:
    reads = {
        "GetCase": lambda stub, case: stub.GetCase(
            case_exchange_pb2.GetCaseRequest(case_id=case), timeout=5),
        "GetCaseHistory": lambda stub, case: stub.GetCaseHistory(
            case_exchange_pb2.GetCaseRequest(case_id=case), timeout=5),
    }  # fmt: skip
    expected = {
        "party hall": "OK",
        "other hall": "NOT_FOUND",
        "auditor": "OK",
        "peer": "PERMISSION_DENIED",
        "admin": "PERMISSION_DENIED",
        "supervisor": "PERMISSION_DENIED",  # the Supervision service, never a case's history
    }
    for role, channel in channels.items():
        stub = case_exchange_pb2_grpc.CaseExchangeStub(channel)
        for rpc, read in reads.items():
            code, data = _outcome(lambda: read(stub, case_id))  # noqa: B023
            assert code == expected[role], (role, rpc, code)
            if role == "party hall" and rpc == "GetCaseHistory":
                # The intake hall is entitled to its applicant's data.
                assert APPLICANT.name.encode() in data
            else:
                _assert_private(role, rpc, data)
            if role == "other hall":
                missing_code, missing_data = _outcome(lambda: read(stub, MISSING))  # noqa: B023
                assert missing_code == code
                assert data.replace(case_id.encode(), b"X") == missing_data.replace(
                    MISSING.encode(), b"X"
                )
        items = _outcome(lambda: stub.ListItems(case_exchange_pb2.ListItemsRequest(), timeout=5))  # noqa: B023
        assert items[0] == "OK"
        queue = case_exchange_pb2.ListQueueRequest()
        _assert_private(role, "ListQueue", _outcome(lambda: stub.ListQueue(queue, timeout=5))[1])  # noqa: B023
        watch = case_exchange_pb2.WatchQueueRequest()
        _assert_private(role, "WatchQueue", _outcome(lambda: stub.WatchQueue(watch, timeout=5))[1])  # noqa: B023


def test_the_audit_service(
    node: NodeProcess, case_id: str, channels: dict[str, grpc.Channel]
) -> None:
    calls = {
        "GetCheckpoint": lambda s: s.GetCheckpoint(audit_pb2.GetCheckpointRequest(), timeout=5),
        "GetInclusionProof": lambda s: s.GetInclusionProof(
            audit_pb2.InclusionProofRequest(index=0), timeout=5),
        "GetConsistencyProof": lambda s: s.GetConsistencyProof(
            audit_pb2.ConsistencyProofRequest(from_size=1), timeout=5),
        "GetCaseHistory": lambda s: s.GetCaseHistory(
            audit_pb2.AuditCaseRequest(case_id=case_id), timeout=5),
        "StreamEntries": lambda s: s.StreamEntries(
            audit_pb2.StreamEntriesRequest(start=0), timeout=1),
        "GetFinalCheckpoint": lambda s: s.GetFinalCheckpoint(
            audit_pb2.FinalCheckpointRequest(index=0), timeout=5),
    }  # fmt: skip
    for role, channel in channels.items():
        stub = audit_pb2_grpc.AuditStub(channel)
        for rpc, call in calls.items():
            code, data = _outcome(lambda: call(stub))  # noqa: B023
            if role.endswith("hall") or role == "supervisor":
                assert code == "PERMISSION_DENIED", (role, rpc)
            else:
                # Allowed (a stream ends at its deadline; the log may not be checkpointed yet).
                assert code in {"OK", "DEADLINE_EXCEEDED", "NOT_FOUND"}, (role, rpc, code)
            _assert_private(role, rpc, data)


def test_hall_administration(
    node: NodeProcess, case_id: str, channels: dict[str, grpc.Channel]
) -> None:
    admin = CommandSigner(
        load_admin_key(node.data_dir / "secrets" / "admin.key"),
        node=node.origin, operator="operator", admin="operator",
    )  # fmt: skip

    def signed(action: str, **fields: Any) -> case_exchange_pb2.SignedCommand:
        command = admin.sign(action, **fields)
        return case_exchange_pb2.SignedCommand(command=command.command, signature=command.signature)

    mutations = {
        "RetireHall": signed("retire_hall", hall_id="no-such-hall", reason="x"),
        "ErasePersonalData": signed("erase_personal_data", case_id=MISSING, reason="x"),
    }
    for role, channel in channels.items():
        stub = admin_pb2_grpc.HallAdminStub(channel)
        for rpc, request in mutations.items():
            code, data = _outcome(lambda: getattr(stub, rpc)(request, timeout=5))  # noqa: B023
            assert code == ("NOT_FOUND" if role == "admin" else "PERMISSION_DENIED"), (role, rpc)
            _assert_private(role, rpc, data)
        code, data = _outcome(
            lambda: stub.GetHall(admin_pb2.GetHallRequest(hall_id=VILLAGE[0]), timeout=5)  # noqa: B023
        )
        denied = role in ("peer", "supervisor")
        assert code == ("PERMISSION_DENIED" if denied else "OK"), (role, code)
    # An admin certificate (of this node's CA) of a name the node never made an admin, with a
    # command that name signed: the signer is unknown, UNAUTHENTICATED.
    ghost = CommandSigner(Ed25519PrivateKey.generate(), node=node.origin, operator="ghost",
                          admin="ghost")  # fmt: skip
    command = ghost.sign("retire_hall", hall_id=VILLAGE[0], reason="x")
    certificate, key = node.issue("admin", "ghost")
    credentials = grpc.ssl_channel_credentials(
        (node.pki / "ca.pem").read_bytes(), key.read_bytes(), certificate.read_bytes()
    )
    with grpc.secure_channel(node.target, credentials) as channel:
        request = case_exchange_pb2.SignedCommand(command=command.command,
                                                  signature=command.signature)  # fmt: skip
        code, data = _outcome(
            lambda: admin_pb2_grpc.HallAdminStub(channel).RetireHall(request, timeout=5)
        )
    assert code == "UNAUTHENTICATED" and b"no such admin" in data, (code, data)


def test_the_supervision_service(
    node: NodeProcess, case_id: str, channels: dict[str, grpc.Channel]
) -> None:
    """Supervisors (their region) and auditors read it, nothing personal in any reply; halls,
    peers and admins may not."""
    calls = {
        "ListCases": lambda s: s.ListCases(supervision_pb2.ListCasesRequest(), timeout=5),
        "ListWarnings": lambda s: s.ListWarnings(supervision_pb2.ListWarningsRequest(), timeout=5),
        "ListRatings": lambda s: s.ListRatings(supervision_pb2.ListRatingsRequest(), timeout=5),
        "GetStatistics": lambda s: s.GetStatistics(supervision_pb2.StatisticsRequest(
            by=supervision_pb2.DIMENSION_HALL), timeout=5),
        "RankWindows": lambda s: s.RankWindows(
            supervision_pb2.RankWindowsRequest(month="2026-12"), timeout=5),
    }  # fmt: skip
    for role, channel in channels.items():
        stub = supervision_pb2_grpc.SupervisionStub(channel)
        for rpc, call in calls.items():
            code, data = _outcome(lambda: call(stub))  # noqa: B023
            allowed = role in ("supervisor", "auditor")
            assert code == ("OK" if allowed else "PERMISSION_DENIED"), (role, rpc, code, data)
            _assert_private(role, rpc, data)


def test_a_request_that_does_not_parse_is_invalid_argument(
    channels: dict[str, grpc.Channel],
) -> None:
    for method in ("/tongban.v1.CaseExchange/GetCase", "/tongban.v1.CaseExchange/Submit",
                   "/tongban.v1.Audit/GetCheckpoint", "/tongban.v1.HallAdmin/GetHall"):  # fmt: skip
        call = channels["auditor"].unary_unary(
            method, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw
        )
        with pytest.raises(grpc.RpcError) as caught:
            call(b"\xff\xff\xff\xff", timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
        status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
        assert status is not None
        bad_request = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad_request)
        assert bad_request.field_violations[0].field == "request"

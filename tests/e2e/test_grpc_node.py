"""A real node process over mutual TLS: lifecycle, standard services, and the bad-input matrix.

Every refusal is checked twice: the status code (and its details) the client sees, and that the
node's event store did not grow.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from tongban.v1 import (
    admin_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    case_exchange_pb2,
    case_exchange_pb2_grpc,
    common_pb2,
)

from adapters.errors import NodeRefused
from adapters.sdk import HallClient, HallCredentials, RetryPolicy, TLSConfig
from hub.bootstrap import load_admin_key
from hub.commands.signing import CommandSigner
from hub.domain.values import id_number_with_check
from hub.pki import Role, load_ca
from ledger import (
    Verifier,
    WitnessPolicy,
    leaf_hash,
    open_checkpoint,
    verify_inclusion,
    verify_receipt,
)
from tests.e2e.conftest import COUNTY, TOWNSHIP, VILLAGE
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


ELDER_CARD = "200202001000"  # township-level item with a certificate


APPLICANT = common_pb2.Applicant(
    name="李秀英", id_number=id_number_with_check("43090219560312002"), phone="13807370001"
)
MATERIAL = common_pb2.Material(
    name="居民身份证", sha256=hashlib.sha256(b"id").hexdigest(), media_type="image/jpeg", size=900
)


def _stored_events(node: NodeProcess) -> int:
    with sqlite3.connect(node.directory / "data" / "events.sqlite3") as connection:
        (count,) = connection.execute("SELECT count(*) FROM stored_events").fetchone()
    return int(count)


@pytest.fixture(scope="module")
def village(node: NodeProcess) -> Iterator[HallClient]:
    with node.client(VILLAGE[0], operator="op-v", retry=RetryPolicy(attempts=1)) as client:
        yield client


@pytest.fixture(scope="module")
def township(node: NodeProcess) -> Iterator[HallClient]:
    with node.client(TOWNSHIP[0], operator="op-t", retry=RetryPolicy(attempts=1)) as client:
        yield client


def _channel(node: NodeProcess, role: str, name: str) -> grpc.Channel:
    certificate, key = node.issue(role, name)
    credentials = grpc.ssl_channel_credentials(
        (node.pki / "ca.pem").read_bytes(), key.read_bytes(), certificate.read_bytes()
    )
    return grpc.secure_channel(node.target, credentials)


def _submit(client: HallClient, **changes: Any) -> case_exchange_pb2.CommandReply:
    fields: dict[str, Any] = {
        "item_code": ELDER_CARD,
        "applicant": APPLICANT,
        "materials": [MATERIAL],
        "competent_region": TOWNSHIP[1],
    }
    fields.update(changes)
    return send(client, "submit", **fields)


def test_health_and_reflection_are_served(node: NodeProcess) -> None:
    with _channel(node, "auditor", "health-checker") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "tongban.v1.CaseExchange", "tongban.v1.HallAdmin"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in response.list_services_response.service}
        assert {"tongban.v1.CaseExchange", "tongban.v1.HallAdmin", "grpc.health.v1.Health"} <= names


def test_a_case_travels_from_village_to_township_over_mtls(
    node: NodeProcess, village: HallClient, township: HallClient
) -> None:
    reply = _submit(village)
    case_id = reply.case_id
    assert reply.version == 1
    send(village, "hand_off", case_id=case_id, to_hall=TOWNSHIP[0], reason="代办")
    send(township, "acknowledge_handoff", case_id=case_id)
    for action, fields in (
        ("accept", {}),
        ("start_handling", {}),
        ("decide", {"approved": True, "reason": "符合条件"}),
        ("conclude", {}),
        ("record_certificate", {"certificate_id": "HN-LNYDZ-0001"}),
        ("deliver", {"method": common_pb2.DELIVERY_METHOD_WINDOW}),
    ):
        send(township, action, case_id=case_id, **fields)
    view = township.get_case(case_id)
    assert view.state == common_pb2.CASE_STATE_DELIVERED
    assert view.holder == TOWNSHIP[0]
    assert view.version == 9
    history = village.history(case_id)  # the intake hall may read the case it took in
    kinds = [event.WhichOneof("event") for event in history.events]
    assert kinds[0] == "submitted"
    assert kinds[-1] == "delivered"
    assert history.events[0].submitted.applicant.name == APPLICANT.name
    assert history.events[2].actor.hall_id == TOWNSHIP[0]


def test_a_retry_returns_the_first_result(node: NodeProcess, village: HallClient) -> None:
    signed = sign(
        village,
        "submit",
        idempotency_key="retry-key-0001",
        item_code=ELDER_CARD,
        applicant=APPLICANT,
        materials=[MATERIAL],
        competent_region=TOWNSHIP[1],
    )
    first = village.send_signed("submit", signed)
    size = _stored_events(node)
    again = village.send_signed("submit", signed)
    assert (again.case_id, again.version, again.replayed) == (first.case_id, 1, True)
    assert _stored_events(node) == size


def _status(error: grpc.RpcError | NodeRefused) -> tuple[grpc.StatusCode, str, list[Any]]:
    """Code, message and the BadRequest/ErrorInfo details of a refusal: the SDK's NodeRefused
    (which keeps every status detail) or a raw stub's grpc.RpcError."""
    if isinstance(error, NodeRefused):
        code, message, raw = error.code, error.message, list(error.details)
    else:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        code, message = error.code(), error.details() or ""
        raw = list(status.details) if status is not None else []
    details: list[Any] = []
    for detail in raw:
        for kind in (error_details_pb2.BadRequest, error_details_pb2.ErrorInfo):
            if detail.Is(kind.DESCRIPTOR):
                unpacked = kind()
                detail.Unpack(unpacked)
                details.append(unpacked)
    return code, message, details


def _refused(node: NodeProcess, call: Callable[[], Any]) -> tuple[grpc.StatusCode, str, list[Any]]:
    size = _stored_events(node)
    with pytest.raises((grpc.RpcError, NodeRefused)) as caught:
        call()
    assert _stored_events(node) == size, "a refused call stored something"
    return _status(caught.value)


def test_malformed_bytes_and_wrong_actions(node: NodeProcess, village: HallClient) -> None:
    garbage = case_exchange_pb2.SignedCommand(command=b"\xff\xff\xff", signature=b"x" * 64)
    code, message, details = _refused(node, lambda: village.send_signed("submit", garbage))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a Command" in message
    assert details[0].field_violations[0].field == "command"
    accept = sign(village, "accept", case_id="00000000-0000-0000-0000-000000000000")
    code, message, _ = _refused(node, lambda: village.send_signed("submit", accept))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "this RPC takes a 'submit' command" in message
    empty = case_exchange_pb2.SignedCommand()
    code, _, _ = _refused(node, lambda: village.send_signed("submit", empty))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("label", "changes", "field", "text"),
    [
        ("unknown item", {"item_code": "999999999999"}, "command.submit.item_code", "catalogue"),
        ("unknown region", {"competent_region": "439999"}, "command.submit.competent_region",
         "2023 edition"),
        ("malformed region", {"competent_region": "43x"}, "command.submit.competent_region",
         "12 digits"),
        ("bad digest", {"materials": [common_pb2.Material(name="x", sha256="00",
                        media_type="image/png", size=1)]},
         "command.submit.materials[0].sha256", "SHA-256"),
        ("empty material", {"materials": [common_pb2.Material(name="x",
                            sha256=hashlib.sha256(b"").hexdigest(), media_type="image/png",
                            size=0)]},
         "command.submit.materials[0].size", "empty"),
        ("oversize material", {"materials": [common_pb2.Material(name="x",
                               sha256=hashlib.sha256(b"").hexdigest(), media_type="image/png",
                               size=10**12)]},
         "command.submit.materials[0].size", "limit"),
        ("bad id number", {"applicant": common_pb2.Applicant(name="x", id_number="123",
                           phone="1")},
         "personal[1].value", "18-character"),
    ],
)  # fmt: skip
def test_bad_submissions_are_invalid_argument_with_the_field(
    node: NodeProcess, village: HallClient, label: str, changes: dict[str, Any], field: str,
    text: str,
) -> None:  # fmt: skip
    code, message, details = _refused(node, lambda: _submit(village, **changes))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, message
    assert text in message
    violation = details[0].field_violations[0]
    assert violation.field == field
    assert "<redacted>" in message or APPLICANT.id_number not in message


def test_wrong_types_and_values_in_commands(node: NodeProcess, village: HallClient) -> None:
    code, message, details = _refused(node, lambda: send(village, "accept", case_id="nope"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details[0].field_violations[0].field == "command.accept.case_id"
    case_id = _submit(village).case_id
    code, message, _ = _refused(
        node, lambda: send(village, "rate", case_id=case_id, rating=99, comment="x")
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a Rating value" in message
    code, message, _ = _refused(
        node,
        lambda: send(village, "suspend", case_id=case_id, note="x"),  # reason unset
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "SuspensionReason must be given" in message


def test_forbidden_transition_and_not_holder(
    node: NodeProcess, village: HallClient, township: HallClient
) -> None:
    case_id = _submit(village).case_id
    code, message, details = _refused(node, lambda: send(village, "conclude", case_id=case_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "'conclude' is not allowed in state RECEIVED" in message
    assert details[0].reason == "TransitionRefused"
    assert details[0].metadata["state"] == "RECEIVED"
    # A hall that is no party to the case learns nothing: the same answer as for no case.
    code, message, _ = _refused(node, lambda: send(township, "accept", case_id=case_id))
    assert code == grpc.StatusCode.NOT_FOUND
    missing = "0b7e1b5c-8a6e-4f39-9c51-7b1a8f9a2a11"
    code_missing, message_missing, _ = _refused(
        node, lambda: send(township, "accept", case_id=missing)
    )
    assert code_missing == grpc.StatusCode.NOT_FOUND
    assert message.replace(case_id, "X") == message_missing.replace(missing, "X")
    assert "hn-shatou-v201" not in message and "RECEIVED" not in message


def test_same_key_with_another_payload_is_already_exists(
    node: NodeProcess, village: HallClient
) -> None:
    _submit(village, idempotency_key="reused-key-0001")
    code, message, _ = _refused(
        node,
        lambda: _submit(
            village,
            idempotency_key="reused-key-0001",
            materials=[
                common_pb2.Material(
                    name="户口簿",
                    sha256=hashlib.sha256(b"h").hexdigest(),
                    media_type="image/png",
                    size=10,
                )
            ],
        ),
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "different payload" in message


def test_missing_and_bad_signatures_are_unauthenticated(
    node: NodeProcess, village: HallClient
) -> None:
    signed = sign(village, "submit", item_code=ELDER_CARD, applicant=APPLICANT,
                          materials=[MATERIAL], competent_region=TOWNSHIP[1])  # fmt: skip
    unsigned = case_exchange_pb2.SignedCommand(command=signed.command)
    code, message, _ = _refused(node, lambda: village.send_signed("submit", unsigned))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "not signed" in message
    # Tamper with the signed bytes so they still parse: change the operator's name.
    command = case_exchange_pb2.Command.FromString(signed.command)
    command.header.operator = "op-forged"
    tampered = case_exchange_pb2.SignedCommand(
        command=command.SerializeToString(), signature=signed.signature
    )
    code, message, _ = _refused(node, lambda: village.send_signed("submit", tampered))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "does not verify" in message
    # Signed by another key than the hall's.
    stranger = HallCredentials(
        VILLAGE[0], VILLAGE[1], Ed25519PrivateKey.generate(), village.credentials.tls
    )
    with HallClient.connect(node.target, stranger, retry=RetryPolicy(attempts=1)) as forger:
        code, _, _ = _refused(node, lambda: _submit(forger))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_certificate_must_match_role_and_hall(node: NodeProcess, village: HallClient) -> None:
    # A hall's certificate with another hall's name in the signed header.
    impostor = HallCredentials(
        TOWNSHIP[0], TOWNSHIP[1], village.credentials.signing_key, village.credentials.tls
    )
    with HallClient.connect(node.target, impostor, retry=RetryPolicy(attempts=1)) as client:
        code, message, _ = _refused(node, lambda: _submit(client))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "signed in another name" in message
    # An auditor certificate may read but not submit.
    certificate, key = node.issue("auditor", "auditor-1")
    tls = TLSConfig((node.pki / "ca.pem").read_bytes(), certificate.read_bytes(), key.read_bytes())
    auditor = HallCredentials(VILLAGE[0], VILLAGE[1], village.credentials.signing_key, tls)
    with HallClient.connect(node.target, auditor, retry=RetryPolicy(attempts=1)) as client:
        code, message, _ = _refused(node, lambda: _submit(client))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "auditor certificate may not call this" in message
        case_id = _submit(village).case_id
        assert client.get_case(case_id).state == common_pb2.CASE_STATE_RECEIVED


def test_unregistered_hall_is_refused(node: NodeProcess) -> None:
    certificate, key = node.issue("hall", "hn-ghost-hall")
    tls = TLSConfig((node.pki / "ca.pem").read_bytes(), certificate.read_bytes(), key.read_bytes())
    ghost = HallCredentials("hn-ghost-hall", VILLAGE[1], Ed25519PrivateKey.generate(), tls)
    with HallClient.connect(node.target, ghost, retry=RetryPolicy(attempts=1)) as client:
        code, message, _ = _refused(node, lambda: _submit(client))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "no such hall" in message


def test_expired_or_foreign_certificates_cannot_connect(
    node: NodeProcess, village: HallClient, tmp_path: Any
) -> None:
    ca = load_ca(node.pki)
    now = datetime.now(UTC)
    expired = ca.issue(
        Role.HALL,
        VILLAGE[0],
        not_before=now - timedelta(days=30),
        not_after=now - timedelta(days=1),
    )
    tls = TLSConfig((node.pki / "ca.pem").read_bytes(), expired.certificate_pem,
                    expired.private_key_pem)  # fmt: skip
    creds = HallCredentials(VILLAGE[0], VILLAGE[1], village.credentials.signing_key, tls)
    with HallClient.connect(node.target, creds, retry=RetryPolicy(attempts=1)) as client:
        code, _, _ = _refused(node, lambda: _submit(client))
    assert code == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails
    from hub.pki import init_ca

    foreign_ca = init_ca(tmp_path / "foreign", "elsewhere")
    foreign = foreign_ca.issue(Role.HALL, VILLAGE[0])
    tls = TLSConfig((node.pki / "ca.pem").read_bytes(), foreign.certificate_pem,
                    foreign.private_key_pem)  # fmt: skip
    creds = HallCredentials(VILLAGE[0], VILLAGE[1], village.credentials.signing_key, tls)
    with HallClient.connect(node.target, creds, retry=RetryPolicy(attempts=1)) as client:
        code, _, _ = _refused(node, lambda: _submit(client))
    assert code == grpc.StatusCode.UNAVAILABLE


def test_oversize_commands_are_refused(node: NodeProcess, village: HallClient) -> None:
    many = [MATERIAL] * 600  # a valid command, but larger than a command may be (48 KiB)
    code, message, _ = _refused(node, lambda: _submit(village, materials=many))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "larger than" in message
    huge = case_exchange_pb2.SignedCommand(command=b"x" * (5 * 1024 * 1024), signature=b"")
    code, _, _ = _refused(node, lambda: village.send_signed("submit", huge))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def _admin(node: NodeProcess) -> CommandSigner:
    """The node's first admin (``tongban init`` made its key in the data directory)."""
    key = load_admin_key(node.data_dir / "secrets" / "admin.key")
    return CommandSigner(key, node=node.origin, operator="operator", admin="operator")


def _signed(command: Any) -> case_exchange_pb2.SignedCommand:
    return case_exchange_pb2.SignedCommand(command=command.command, signature=command.signature)


def test_admin_rotates_and_retires_halls(node: NodeProcess) -> None:
    hall_id, region = COUNTY
    admin_signer = _admin(node)
    with _channel(node, "admin", "operator") as channel:
        admin = admin_pb2_grpc.HallAdminStub(channel)
        with node.client(hall_id, retry=RetryPolicy(attempts=1)) as county:
            send(county, "submit", item_code="070303001000", applicant=APPLICANT,
                        materials=[MATERIAL])  # fmt: skip
            new_key = Ed25519PrivateKey.generate()
            raw = new_key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            public = base64.b64encode(raw).decode()
            rotate = _signed(admin_signer.sign("rotate_hall_key", hall_id=hall_id,
                                               public_key=public))  # fmt: skip
            hall = admin.RotateHallKey(rotate, timeout=5)
            assert hall.public_key == public
            assert [k.public_key for k in hall.keys][-1] == public and len(hall.keys) == 2
            # The old key is now refused.
            code, message, _ = _refused(node, lambda: send(county,
                "submit", item_code="070303001000", applicant=APPLICANT, materials=[MATERIAL]))  # fmt: skip
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert "current key" in message
        rotated = HallCredentials(hall_id, region.ljust(12, "0"), new_key,
                                  node.credentials(hall_id).tls)  # fmt: skip
        with HallClient.connect(node.target, rotated, retry=RetryPolicy(attempts=1)) as county:
            case_id = send(county, "submit", item_code="070303001000", applicant=APPLICANT,
                           materials=[MATERIAL]).case_id  # fmt: skip
            retire = _signed(admin_signer.sign("retire_hall", hall_id=hall_id, reason="撤并"))
            admin.RetireHall(retire, timeout=5)
            code, message, _ = _refused(node, lambda: send(county,
                "submit", item_code="070303001000", applicant=APPLICANT, materials=[MATERIAL]))  # fmt: skip
            assert code == grpc.StatusCode.UNAUTHENTICATED or "retired" in message
            assert "retired" in message
            # Its certificate is still valid, but a retired hall reads nothing either: not its
            # cases (the applicant in clear), not its queue.
            for read in (lambda: county.get_case(case_id), lambda: county.history(case_id)):
                code, message, _ = _refused(node, read)
                assert (code, "retired" in message) == (grpc.StatusCode.PERMISSION_DENIED, True)
        files = node.halls[hall_id]
        credentials = grpc.ssl_channel_credentials(
            (node.pki / "ca.pem").read_bytes(),
            files.private_key.read_bytes(),
            files.certificate.read_bytes(),
        )
        with grpc.secure_channel(node.target, credentials) as hall_channel:
            queue = case_exchange_pb2_grpc.CaseExchangeStub(hall_channel).ListQueue
            code, message, _ = _refused(
                node, lambda: queue(case_exchange_pb2.ListQueueRequest(), timeout=5)
            )
            assert (code, "retired" in message) == (grpc.StatusCode.PERMISSION_DENIED, True)
        # A hall from another province is refused by this node.
        foreign = _signed(admin_signer.sign(
            "register_hall", hall_id="gd-yuexiu-hall", name="越秀区政务服务中心",
            region="440104000000", windows=["1"], public_key=public))  # fmt: skip
        code, message, details = _refused(node, lambda: admin.RegisterHall(foreign, timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details[0].field_violations[0].field == "command.register_hall.region"
    # An admin certificate of another name than the signing admin is refused.
    with _channel(node, "admin", "someone-else") as channel:
        retire = _signed(admin_signer.sign("retire_hall", hall_id=VILLAGE[0], reason="x"))
        with pytest.raises(grpc.RpcError) as caught:
            admin_pb2_grpc.HallAdminStub(channel).RetireHall(retire, timeout=5)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A hall certificate cannot administer.
    with _channel(node, "hall", "hn-not-admin") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            admin_pb2_grpc.HallAdminStub(channel).RetireHall(retire, timeout=5)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _wait_for_checkpoint(audit: Any, at_least: int) -> Any:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(grpc.RpcError):
            checkpoint = audit.GetCheckpoint(audit_pb2.GetCheckpointRequest(), timeout=5)
            if checkpoint.size >= at_least:
                return checkpoint
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of size {at_least} within 20 s")


def test_auditors_get_verifiable_checkpoints_proofs_and_receipts(
    node: NodeProcess, village: HallClient
) -> None:
    case_id = _submit(village).case_id
    send(village, "accept", case_id=case_id)
    log_key = (node.directory / "data" / "log.vkey").read_text().strip()
    verifier = Verifier.from_key(log_key)
    size = _stored_events(node)
    with _channel(node, "auditor", "auditor-2") as channel:
        audit = audit_pb2_grpc.AuditStub(channel)
        checkpoint = _wait_for_checkpoint(audit, size)
        signed = open_checkpoint(checkpoint.note, [verifier])
        assert signed.checkpoint.size == checkpoint.size
        proof = audit.GetInclusionProof(
            audit_pb2.InclusionProofRequest(index=3, tree_size=checkpoint.size), timeout=5
        )
        verify_inclusion(
            leaf_hash(proof.leaf), 3, checkpoint.size, list(proof.hashes), signed.checkpoint.root
        )
        history = audit.GetCaseHistory(audit_pb2.AuditCaseRequest(case_id=case_id), timeout=5)
        assert [e.event.WhichOneof("event") for e in history.events] == ["submitted", "accepted"]
        for entry in history.events:
            verified = verify_receipt(entry.receipt.encode(), [verifier], WitnessPolicy(0, ()))
            assert verified.leaf.aggregate_id == UUID(case_id)
        # Each event's signed command, checkable with the hall's public key alone, and with
        # no personal data in it or in the event.
        submitted = history.events[0].event.submitted
        assert (
            not submitted.HasField("applicant") and len(submitted.applicant_commitments.name) == 32
        )
        hall_key = node.credentials(VILLAGE[0]).signing_key.public_key()
        assert len(history.commands) == 2
        for command in history.commands:
            hall_key.verify(command.signature, command.command)
            assert command.signer == VILLAGE[0]
            for value in (APPLICANT.name, APPLICANT.id_number, APPLICANT.phone):
                assert value.encode() not in command.command
            assert verify_receipt(command.receipt.encode(), [verifier], WitnessPolicy(0, ()))
        assert {e.command_index for e in history.events} == {c.index for c in history.commands}
        consistency = audit.GetConsistencyProof(
            audit_pb2.ConsistencyProofRequest(from_size=1, to_size=checkpoint.size), timeout=5
        )
        assert consistency.to_size == checkpoint.size
        entries = audit.StreamEntries(audit_pb2.StreamEntriesRequest(start=0), timeout=3)
        first = [next(entries) for _ in range(3)]
        entries.cancel()
        assert [e.index for e in first] == [0, 1, 2]
        with pytest.raises(grpc.RpcError) as caught:
            audit.GetInclusionProof(
                audit_pb2.InclusionProofRequest(index=10**6, tree_size=checkpoint.size), timeout=5
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with _channel(node, "hall", "hn-curious-hall") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            audit_pb2_grpc.AuditStub(channel).GetCheckpoint(
                audit_pb2.GetCheckpointRequest(), timeout=5
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED

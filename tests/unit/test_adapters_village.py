"""The village outbox and forwarder: ordering, holding, signing once, surviving restarts.

The outbox is a real SQLite file under tmp_path; the node is replaced by a small in-memory
transport that answers like the node's idempotency does (the real node is in the e2e tests).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tongban.v1 import case_exchange_pb2, common_pb2

from adapters.connection import AdapterError
from adapters.sdk import HallClient, HallCredentials
from adapters.village import (
    Forwarder,
    Outbox,
    Signer,
    describe,
    material_from_file,
    message_from_json,
)

HALL = "hn-shatou-v201"
REGION = "430902104201"


class FakeRpcError(grpc.RpcError):
    """A failed call as grpcio raises it (code and details)."""

    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class Node:
    """Answers signed commands like the node: first result per idempotency key, case ids
    assigned on submit; ``down`` makes every call UNAVAILABLE; ``refuse`` refuses by key."""

    def __init__(self) -> None:
        self.down = False
        self.refuse: dict[str, grpc.StatusCode] = {}
        self.results: dict[str, case_exchange_pb2.CommandReply] = {}
        self.received: list[tuple[str, bytes]] = []
        self.versions: dict[str, int] = {}

    def send_signed(
        self, action: str, signed: case_exchange_pb2.SignedCommand
    ) -> case_exchange_pb2.CommandReply:
        if self.down:
            raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")
        command = case_exchange_pb2.Command.FromString(signed.command)
        assert command.WhichOneof("action") == action
        key = command.header.idempotency_key
        self.received.append((action, signed.command))
        if key in self.refuse:
            raise FakeRpcError(self.refuse[key], f"refused {action}")
        if key in self.results:
            first = self.results[key]
            return case_exchange_pb2.CommandReply(
                case_id=first.case_id, version=first.version, replayed=True
            )
        if action == "submit":
            case_id = str(uuid.uuid4())
        else:
            case_id = getattr(command, action).case_id
            assert case_id, "a follow-up must carry the case id"
        self.versions[case_id] = self.versions.get(case_id, 0) + 1
        reply = case_exchange_pb2.CommandReply(case_id=case_id, version=self.versions[case_id])
        self.results[key] = reply
        return reply

    def actions(self) -> list[str]:
        return [action for action, _ in self.received]


@pytest.fixture
def credentials() -> HallCredentials:
    return HallCredentials(HALL, REGION, Ed25519PrivateKey.generate())


@pytest.fixture
def outbox(tmp_path: Path, credentials: HallCredentials) -> Outbox:
    box = Outbox(tmp_path / "outbox.sqlite3", credentials)
    yield box  # type: ignore[misc]
    box.close()


def application(item: str = "200101001000") -> case_exchange_pb2.SubmitCase:
    return case_exchange_pb2.SubmitCase(
        item_code=item,
        applicant=common_pb2.Applicant(name="村民", id_number="11010519491231002X", phone="1"),
        materials=[common_pb2.Material(name="身份证", sha256="ab" * 32, media_type="image/png",
                                       size=3)],
    )  # fmt: skip


def test_signer_builds_what_the_sdk_builds(credentials: HallCredentials) -> None:
    """The offline signer and HallClient.sign agree on everything but the time."""
    channel = grpc.insecure_channel("localhost:1")  # never used: signing needs no network
    try:
        sdk = HallClient(channel, credentials).sign(
            "hand_off", idempotency_key="key-00001", operator="op", case_id="c", to_hall="h2"
        )
    finally:
        channel.close()
    ours = Signer(credentials).sign(
        "hand_off",
        case_exchange_pb2.HandOff(case_id="c", to_hall="h2"),
        idempotency_key="key-00001",
        operator="op",
    )
    a = case_exchange_pb2.Command.FromString(sdk.command)
    b = case_exchange_pb2.Command.FromString(ours.command)
    a.header.ClearField("issued_at")
    b.header.ClearField("issued_at")
    assert a == b
    credentials.signing_key.public_key().verify(ours.signature, ours.command)


def test_submit_is_signed_at_once_followups_wait_for_the_case_id(outbox: Outbox) -> None:
    submitted = outbox.submit(application(), ref="A", operator="clerk")
    accepted = outbox.follow("A", "accept", operator="clerk")
    assert submitted.signed and not accepted.signed
    assert accepted.held_by == "waiting for the case id from the submit"
    assert [c.status for c in outbox.commands()] == ["pending", "pending"]


def test_forwarder_sends_in_order_and_fills_in_the_case_id(outbox: Outbox) -> None:
    node = Node()
    outbox.submit(application(), ref="A", operator="clerk")
    outbox.follow("A", "accept", operator="clerk")
    outbox.submit(application(), ref="B", operator="clerk")
    outbox.follow("A", "start_handling", operator="clerk")
    result = Forwarder(outbox, node).drain()
    assert result.interrupted is None and len(result.sent) == 4
    assert node.actions() == ["submit", "submit", "accept", "start_handling"]
    case_a = outbox.lane_case_id("A")
    assert case_a and all(c.case_id == case_a for c in outbox.commands(ref="A"))
    accept = case_exchange_pb2.Command.FromString(node.received[2][1])
    assert accept.accept.case_id == case_a and accept.header.operator == "clerk"
    assert outbox.counts()["sent"] == 4


def test_offline_stops_the_pass_and_keeps_everything(outbox: Outbox) -> None:
    node = Node()
    node.down = True
    outbox.submit(application(), ref="A", operator="clerk")
    outbox.submit(application(), ref="B", operator="clerk")
    forwarder = Forwarder(outbox, node)
    result = forwarder.forward_once()
    assert result.interrupted is not None and result.interrupted.code == grpc.StatusCode.UNAVAILABLE
    assert result.remaining == 2
    first, second = outbox.commands()
    assert (first.status, first.attempts, first.error_code) == ("pending", 1, "UNAVAILABLE")
    assert second.attempts == 0  # nothing overtakes the command that could not be delivered
    node.down = False
    assert len(forwarder.drain().sent) == 2


def test_refusal_holds_only_the_same_case(outbox: Outbox) -> None:
    node = Node()
    bad = outbox.submit(application("999999999999"), ref="C", operator="clerk")
    node.refuse[bad.idempotency_key] = grpc.StatusCode.INVALID_ARGUMENT
    outbox.follow("C", "accept", operator="clerk")
    outbox.submit(application(), ref="A", operator="clerk")
    outbox.follow("A", "accept", operator="clerk")
    result = Forwarder(outbox, node).drain()
    assert [c.action for c in result.failed] == ["submit"]
    statuses = {(c.ref, c.action): c for c in outbox.commands()}
    assert statuses[("C", "submit")].status == "failed"
    assert statuses[("C", "submit")].error_code == "INVALID_ARGUMENT"
    assert statuses[("C", "accept")].status == "held"
    assert statuses[("C", "accept")].held_by == f"#{bad.seq} failed"
    assert statuses[("A", "accept")].status == "sent"
    assert "[INVALID_ARGUMENT] refused submit" in describe(outbox.commands())

    # Retry after the cause is fixed: the same bytes go again, and the follower after them.
    del node.refuse[bad.idempotency_key]
    sent_before = next(data for action, data in node.received if action == "submit")
    outbox.retry(bad.seq)
    assert len(Forwarder(outbox, node).drain().sent) == 2
    resent = [data for action, data in node.received if action == "submit"]
    assert resent.count(sent_before) == 2  # byte-identical resend
    assert outbox.counts() == {"pending": 0, "held": 0, "sent": 4, "failed": 0, "cancelled": 0}


def test_cancel_a_failed_submit_cancels_its_followers(outbox: Outbox) -> None:
    node = Node()
    bad = outbox.submit(application(), ref="C", operator="clerk")
    node.refuse[bad.idempotency_key] = grpc.StatusCode.PERMISSION_DENIED
    outbox.follow("C", "accept", operator="clerk")
    Forwarder(outbox, node).drain()
    cancelled = outbox.cancel(bad.seq)
    assert [c.action for c in cancelled] == ["submit", "accept"]
    assert {c.status for c in cancelled} == {"cancelled"}
    with pytest.raises(AdapterError, match="no longer be cancelled"):
        outbox.cancel(bad.seq)
    with pytest.raises(AdapterError, match="only a failed command"):
        outbox.retry(bad.seq)


def test_cancel_a_failed_followup_releases_the_next(outbox: Outbox) -> None:
    node = Node()
    outbox.submit(application(), ref="A", operator="clerk")
    bad = outbox.follow("A", "start_handling", operator="clerk")  # before accept: refused
    node.refuse[bad.idempotency_key] = grpc.StatusCode.FAILED_PRECONDITION
    outbox.follow("A", "withdraw", case_exchange_pb2.Withdraw(reason="申请人撤回"), operator="c")
    forwarder = Forwarder(outbox, node)
    forwarder.drain()
    assert [c.status for c in outbox.commands(ref="A")] == ["sent", "failed", "held"]
    outbox.cancel(bad.seq)
    forwarder.drain()
    assert [c.status for c in outbox.commands(ref="A")] == ["sent", "cancelled", "sent"]


def test_a_resend_after_a_crash_is_identical_and_replayed(
    tmp_path: Path, credentials: HallCredentials
) -> None:
    """Acknowledged by the node but not recorded locally (crash): resent byte for byte."""
    node = Node()
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path, credentials) as box:
        box.submit(application(), ref="A", operator="clerk")
        follow = box.follow("A", "accept", operator="clerk")
        Forwarder(box, node).drain()
    with Outbox(path, credentials) as box:
        # Simulate the crash window by putting the acknowledged command back to pending.
        box._db.execute("UPDATE commands SET status = 'pending' WHERE seq = ?", (follow.seq,))
    with Outbox(path, credentials) as box:  # a restart
        result = Forwarder(box, node).drain()
        [resent] = result.sent
        assert resent.replayed and resent.version == 2
    accepts = [data for action, data in node.received if action == "accept"]
    assert len(accepts) == 2 and accepts[0] == accepts[1]
    assert node.versions == {resent.case_id: 2}  # the node acted once per command


def test_queued_commands_survive_a_restart(tmp_path: Path, credentials: HallCredentials) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path, credentials) as box:
        box.submit(application(), ref="A", operator="clerk")
        box.follow("A", "accept", operator="clerk")
    with Outbox(path, credentials) as box:
        assert [c.action for c in box.commands()] == ["submit", "accept"]
        node = Node()
        assert len(Forwarder(box, node).drain().sent) == 2


def test_outbox_is_bound_to_one_hall(tmp_path: Path, credentials: HallCredentials) -> None:
    path = tmp_path / "outbox.sqlite3"
    Outbox(path, credentials).close()
    other = HallCredentials("another-hall", REGION, Ed25519PrivateKey.generate())
    with pytest.raises(AdapterError, match="belongs to hall_id"):
        Outbox(path, other)


def test_queuing_is_idempotent_by_reference_and_key(outbox: Outbox) -> None:
    first = outbox.submit(application(), ref="A", operator="clerk")
    assert outbox.submit(application(), ref="A", operator="clerk").seq == first.seq
    with pytest.raises(AdapterError, match="other content"):
        outbox.submit(application("200202001000"), ref="A", operator="clerk")
    one = outbox.follow("A", "accept", operator="clerk", idempotency_key="room-op-000001")
    again = outbox.follow("A", "accept", operator="clerk", idempotency_key="room-op-000001")
    assert one.seq == again.seq
    with pytest.raises(AdapterError, match="another command"):
        outbox.follow("A", "withdraw", operator="clerk", idempotency_key="room-op-000001")


def test_references_and_case_ids(outbox: Outbox) -> None:
    with pytest.raises(AdapterError, match="unknown reference"):
        outbox.follow("nope", "accept", operator="clerk")
    with pytest.raises(AdapterError, match="look like a case id"):
        outbox.submit(application(), ref=str(uuid.uuid4()), operator="clerk")
    with pytest.raises(AdapterError, match="use submit"):
        outbox.follow("A", "submit", operator="clerk")
    with pytest.raises(AdapterError, match="unknown action"):
        outbox.follow("A", "fly", operator="clerk")
    # A case the hall already holds: addressed by its id, signed at once.
    case_id = str(uuid.uuid4())
    queued = outbox.follow(case_id, "accept", operator="clerk")
    assert queued.signed and queued.case_id == case_id


def test_material_from_file(tmp_path: Path) -> None:
    scan = tmp_path / "id.png"
    scan.write_bytes(b"\x89PNG" + b"x" * 100)
    material = material_from_file("居民身份证", scan)
    assert material.size == 104 and material.media_type == "image/png"
    assert len(material.sha256) == 64
    (tmp_path / "empty.pdf").write_bytes(b"")
    with pytest.raises(AdapterError, match="empty"):
        material_from_file("x", tmp_path / "empty.pdf")
    with pytest.raises(AdapterError, match="cannot read"):
        material_from_file("x", tmp_path / "missing.pdf")


def test_message_from_json() -> None:
    message = message_from_json("hand_off", '{"to_hall": "hn-shatou-town", "reason": "转镇"}')
    assert message == case_exchange_pb2.HandOff(to_hall="hn-shatou-town", reason="转镇")
    with pytest.raises(AdapterError, match="--json for accept"):
        message_from_json("accept", '{"nope": 1}')


def test_retry_with_a_new_key_after_rotation(tmp_path: Path, credentials: HallCredentials) -> None:
    """A command signed with a key rotated out while it waited: re-signed, same key and body."""
    node = Node()
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path, credentials) as box:
        queued = box.submit(application(), ref="A", operator="clerk")
        node.refuse[queued.idempotency_key] = grpc.StatusCode.UNAUTHENTICATED
        Forwarder(box, node).drain()
        old_bytes = node.received[0][1]
    rotated = HallCredentials(HALL, REGION, Ed25519PrivateKey.generate())
    with Outbox(path, rotated) as box:
        del node.refuse[queued.idempotency_key]
        again = box.retry(queued.seq, resign=True)
        assert again.status == "pending" and again.signed
        Forwarder(box, node).drain()
    new_bytes = node.received[1][1]
    old, new = (case_exchange_pb2.Command.FromString(b) for b in (old_bytes, new_bytes))
    assert old == new  # the same command (key, body, time); only the signature differs

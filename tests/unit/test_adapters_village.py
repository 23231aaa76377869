"""The village outbox and forwarder: ordering, holding, signing once, surviving restarts.

The outbox is a real SQLite file under tmp_path; the node is replaced by a small in-memory
transport that answers like the node's idempotency does and checks what the real node checks of
a submit's personal values (the real node is in the e2e tests).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import Message
from tongban.v1 import case_exchange_pb2, common_pb2

from adapters.errors import AdapterError, ConfigError, InputError, NodeRefused
from adapters.sdk import HallClient, HallCredentials, commitment, sign_command
from adapters.village import (
    SCHEMA_VERSION,
    Forwarder,
    Outbox,
    QueuedCommand,
    Signer,
    describe,
    material_from_file,
    message_from_json,
    queue_key,
    to_json,
)

HALL = "hn-shatou-v201"
REGION = "430902104201"
PERSON = common_pb2.Applicant(name="村民甲", id_number="11010519491231002X", phone="13712345678")


def refused(code: grpc.StatusCode, details: str = "") -> NodeRefused:
    """A failed call as the SDK raises it (the SDK's own mapping is tested in test_sdk.py)."""
    return NodeRefused.of(code, details)


class Node:
    """Answers signed commands like the node: first result per idempotency key, case ids
    assigned on submit; ``down`` makes every call UNAVAILABLE; ``refuse`` refuses by key."""

    def __init__(self) -> None:
        self.down = False
        self.refuse: dict[str, grpc.StatusCode] = {}
        self.results: dict[str, case_exchange_pb2.CommandReply] = {}
        self.received: list[tuple[str, bytes]] = []
        self.signed: list[case_exchange_pb2.SignedCommand] = []
        self.versions: dict[str, int] = {}

    def send_signed(
        self, action: str, signed: case_exchange_pb2.SignedCommand
    ) -> case_exchange_pb2.CommandReply:
        if self.down:
            raise refused(grpc.StatusCode.UNAVAILABLE, "connection refused")
        command = case_exchange_pb2.Command.FromString(signed.command)
        assert command.WhichOneof("action") == action
        assert command.header.deferred, "every outbox command is deferred"
        if action == "submit":
            assert_opens(command, signed)
        else:
            assert not signed.personal
        key = command.header.idempotency_key
        self.received.append((action, signed.command))
        self.signed.append(signed)
        if key in self.refuse:
            raise refused(self.refuse[key], f"refused {action}")
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


def assert_opens(
    command: case_exchange_pb2.Command, signed: case_exchange_pb2.SignedCommand
) -> None:
    """The submit's signed applicant fields are 32-byte commitments that the personal values
    beside the bytes open, and no clear value is in the signed bytes."""
    values = {value.field: value for value in signed.personal}
    assert set(values) == {f"submit.applicant.{f}" for f in ("name", "id_number", "phone")}
    for path, value in values.items():
        digest = getattr(command.submit.applicant, path.rsplit(".", 1)[1])
        assert len(digest) == 32 and 16 <= len(value.salt) <= 64
        assert commitment(path, value.salt, value.value) == digest
        assert value.value.encode() not in signed.command


@pytest.fixture
def credentials() -> HallCredentials:
    return HallCredentials(HALL, REGION, Ed25519PrivateKey.generate())


@pytest.fixture
def outbox(tmp_path: Path, credentials: HallCredentials) -> Outbox:
    box = Outbox(tmp_path / "outbox.sqlite3", credentials)
    yield box  # type: ignore[misc]
    box.close()


def submit(
    box: Outbox, ref: str, item: str = "200101001000", *, applicant: common_pb2.Applicant = PERSON
) -> QueuedCommand:
    """Queue a 收件 as the command line does without --idem-key: with a fresh key."""
    return box.submit(
        application(item),
        applicant=applicant,
        ref=ref,
        operator="clerk",
        idempotency_key=queue_key(),
    )


def follow(box: Outbox, target: str, action: str, body: Message | None = None) -> QueuedCommand:
    """Queue a follow-up as the command line does without --idem-key: with a fresh key."""
    return box.follow(target, action, body, operator="clerk", idempotency_key=queue_key())


def application(item: str = "200101001000") -> case_exchange_pb2.SubmitCase:
    return case_exchange_pb2.SubmitCase(
        item_code=item,
        materials=[common_pb2.Material(name="身份证", sha256="ab" * 32, media_type="image/png",
                                       size=3)],
    )  # fmt: skip


def test_signer_builds_what_the_sdk_builds(credentials: HallCredentials) -> None:
    """The offline signer and HallClient.sign agree on everything but the time and ``deferred``
    (every outbox command is deferred)."""
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
    assert b.header.deferred and not a.header.deferred
    assert b.header.node == a.header.node == "tongban/43"
    for command in (a, b):
        command.header.ClearField("issued_at")
        command.header.ClearField("deferred")
    assert a == b
    credentials.signing_key.public_key().verify(ours.signature, ours.command)


def test_submit_is_signed_at_once_followups_wait_for_the_case_id(outbox: Outbox) -> None:
    submitted = submit(outbox, "A")
    accepted = follow(outbox, "A", "accept")
    assert submitted.signed and not accepted.signed
    assert accepted.held_by == "waiting for the case id from the submit"
    assert [c.status for c in outbox.commands()] == ["pending", "pending"]


def test_forwarder_sends_in_order_and_fills_in_the_case_id(outbox: Outbox) -> None:
    node = Node()
    submit(outbox, "A")
    follow(outbox, "A", "accept")
    submit(outbox, "B")
    follow(outbox, "A", "start_handling")
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
    submit(outbox, "A")
    submit(outbox, "B")
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
    bad = submit(outbox, "C", "999999999999")
    node.refuse[bad.idempotency_key] = grpc.StatusCode.INVALID_ARGUMENT
    follow(outbox, "C", "accept")
    submit(outbox, "A")
    follow(outbox, "A", "accept")
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
    bad = submit(outbox, "C")
    node.refuse[bad.idempotency_key] = grpc.StatusCode.PERMISSION_DENIED
    follow(outbox, "C", "accept")
    Forwarder(outbox, node).drain()
    cancelled = outbox.cancel(bad.seq)
    assert [c.action for c in cancelled] == ["submit", "accept"]
    assert {c.status for c in cancelled} == {"cancelled"}
    with pytest.raises(InputError, match="no longer be cancelled"):
        outbox.cancel(bad.seq)
    with pytest.raises(InputError, match="only a failed command"):
        outbox.retry(bad.seq)


def test_cancel_a_failed_followup_releases_the_next(outbox: Outbox) -> None:
    node = Node()
    submit(outbox, "A")
    bad = follow(outbox, "A", "start_handling")  # before accept: refused
    node.refuse[bad.idempotency_key] = grpc.StatusCode.FAILED_PRECONDITION
    follow(outbox, "A", "withdraw", case_exchange_pb2.Withdraw(reason="申请人撤回"))
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
        submit(box, "A")
        accepted = follow(box, "A", "accept")
        Forwarder(box, node).drain()
    with Outbox(path, credentials) as box:
        # Simulate the crash window by putting the acknowledged command back to pending.
        box._db.execute("UPDATE commands SET status = 'pending' WHERE seq = ?", (accepted.seq,))
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
        submit(box, "A")
        follow(box, "A", "accept")
    with Outbox(path, credentials) as box:
        assert [c.action for c in box.commands()] == ["submit", "accept"]
        node = Node()
        assert len(Forwarder(box, node).drain().sent) == 2


def test_outbox_is_bound_to_one_hall(tmp_path: Path, credentials: HallCredentials) -> None:
    path = tmp_path / "outbox.sqlite3"
    Outbox(path, credentials).close()
    other = HallCredentials("another-hall", REGION, Ed25519PrivateKey.generate())
    with pytest.raises(ConfigError, match="belongs to hall_id"):
        Outbox(path, other)


def test_queuing_is_idempotent_by_reference_and_key(outbox: Outbox) -> None:
    first = submit(outbox, "A")
    assert submit(outbox, "A").seq == first.seq
    with pytest.raises(InputError, match="other content"):
        submit(outbox, "A", "200202001000")
    someone_else = common_pb2.Applicant(name="村民乙", id_number=PERSON.id_number, phone="1")
    with pytest.raises(InputError, match="other content"):
        submit(outbox, "A", applicant=someone_else)
    one = outbox.follow("A", "accept", operator="clerk", idempotency_key="room-op-000001")
    again = outbox.follow("A", "accept", operator="clerk", idempotency_key="room-op-000001")
    assert one.seq == again.seq
    with pytest.raises(InputError, match="another command"):
        outbox.follow("A", "withdraw", operator="clerk", idempotency_key="room-op-000001")
    # The same key and act on another reference is another act, not a retry of this one.
    submit(outbox, "B")
    with pytest.raises(InputError, match="another command"):
        outbox.follow("B", "accept", operator="clerk", idempotency_key="room-op-000001")


def test_a_submit_queued_again_with_the_rooms_key_alone_is_the_queued_one(outbox: Outbox) -> None:
    """The room's software retries ``village submit --idem-key K`` without a ``--ref``: it gets
    the command queued the first time (under the reference made then), not a second 收件."""

    def by_key(item: str = "200101001000", ref: str = "") -> QueuedCommand:
        return outbox.submit(application(item), applicant=PERSON, ref=ref, operator="clerk",
                             idempotency_key="room-V2024-031-submit")  # fmt: skip

    first = by_key()
    again = by_key()
    assert (again.seq, again.ref) == (first.seq, first.ref)
    assert by_key(ref=first.ref).seq == first.seq
    assert len(outbox.commands()) == 1
    with pytest.raises(InputError, match="other content") as changed:
        by_key("200202001000")
    assert changed.value.field == "idempotency_key"
    with pytest.raises(InputError, match="another command"):
        by_key(ref="V2024-032")  # the key of one 收件 given for another


def test_references_and_case_ids(outbox: Outbox) -> None:
    with pytest.raises(InputError, match="unknown reference"):
        follow(outbox, "nope", "accept")
    with pytest.raises(InputError, match="look like a case id"):
        submit(outbox, str(uuid.uuid4()))
    with pytest.raises(InputError, match="use submit"):
        follow(outbox, "A", "submit")
    with pytest.raises(InputError, match="unknown action"):
        follow(outbox, "A", "fly")
    with pytest.raises(InputError, match="unknown action"):  # an admin command, not a hall's
        follow(outbox, "A", "register_hall")
    # A case the hall already holds: addressed by its id, signed at once.
    case_id = str(uuid.uuid4())
    queued = follow(outbox, case_id, "accept")
    assert queued.signed and queued.case_id == case_id


def test_material_from_file(tmp_path: Path) -> None:
    scan = tmp_path / "id.png"
    scan.write_bytes(b"\x89PNG" + b"x" * 100)
    material = material_from_file("居民身份证", scan)
    assert material.size == 104 and material.media_type == "image/png"
    assert len(material.sha256) == 64
    (tmp_path / "empty.pdf").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        material_from_file("x", tmp_path / "empty.pdf")
    with pytest.raises(InputError, match="cannot read"):
        material_from_file("x", tmp_path / "missing.pdf")


def test_message_from_json() -> None:
    message = message_from_json("hand_off", '{"to_hall": "hn-shatou-town", "reason": "转镇"}')
    assert message == case_exchange_pb2.HandOff(to_hall="hn-shatou-town", reason="转镇")
    with pytest.raises(InputError, match="--json: for accept"):
        message_from_json("accept", '{"nope": 1}')


def test_retry_with_a_new_key_after_rotation(tmp_path: Path, credentials: HallCredentials) -> None:
    """A command signed with a key rotated out while it waited: re-signed with the new key, the
    same key, body and time, committing to the same applicant with fresh salts."""
    node = Node()
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path, credentials) as box:
        queued = submit(box, "A")
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
    rotated.signing_key.public_key().verify(node.signed[1].signature, new_bytes)
    first, second = node.signed
    assert [(v.field, v.value) for v in first.personal] == [
        (v.field, v.value) for v in second.personal
    ]
    assert {v.salt for v in first.personal}.isdisjoint(v.salt for v in second.personal)
    old, new = (case_exchange_pb2.Command.FromString(b) for b in (old_bytes, new_bytes))
    assert old.submit.applicant != new.submit.applicant
    old.submit.ClearField("applicant")
    new.submit.ClearField("applicant")
    assert old == new  # the same command (key, body, time) otherwise


# ------------------------------------------------------------------ the wire contract


def test_outbox_commands_are_deferred_and_keep_their_queue_time(outbox: Outbox) -> None:
    """Signed at once or only once the case id is known: deferred, issued when queued."""
    node = Node()
    submit(outbox, "A")
    accepted = follow(outbox, "A", "accept")  # signed after the submit's reply
    known = follow(outbox, str(uuid.uuid4()), "withdraw")  # signed at once
    # The clerk queued the accept two days ago (the network was down since).
    two_days_ago = (datetime.now(UTC) - timedelta(days=2)).isoformat(timespec="milliseconds")
    outbox._db.execute(
        "UPDATE commands SET created_at = ? WHERE seq = ?", (two_days_ago, accepted.seq)
    )
    assert not outbox.get(accepted.seq).signed and known.signed

    Forwarder(outbox, node).drain()
    created = {c.action: datetime.fromisoformat(c.created_at) for c in outbox.commands()}
    assert created["accept"] == datetime.fromisoformat(two_days_ago)
    for action, data in node.received:
        header = case_exchange_pb2.Command.FromString(data).header
        assert header.deferred, action
        assert header.issued_at.ToDatetime(tzinfo=UTC) == created[action], action
        assert header.node == "tongban/43" and header.hall_id == HALL


def test_stored_signed_command_keeps_personal_values_across_restarts(
    tmp_path: Path, credentials: HallCredentials
) -> None:
    """The whole SignedCommand is stored: every send, also after reopening, is identical."""
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path, credentials) as box:
        queued = submit(box, "A")
        first = box.ensure_signed(queued.seq)
        assert box.ensure_signed(queued.seq) == first
    command = case_exchange_pb2.Command.FromString(first.command)
    assert_opens(command, first)
    assert {v.field: v.value for v in first.personal} == {
        "submit.applicant.name": PERSON.name,
        "submit.applicant.id_number": PERSON.id_number,
        "submit.applicant.phone": PERSON.phone,
    }
    credentials.signing_key.public_key().verify(first.signature, first.command)

    node = Node()
    node.down = True
    with Outbox(path, credentials) as box:  # a restart
        assert box.ensure_signed(queued.seq).SerializeToString() == first.SerializeToString()
        Forwarder(box, node).drain()  # offline: nothing sent
    node.down = False
    with Outbox(path, credentials) as box:  # another restart, then the node is back
        Forwarder(box, node).drain()
        box._db.execute("UPDATE commands SET status = 'pending' WHERE seq = ?", (queued.seq,))
        [again] = Forwarder(box, node).drain().sent  # acknowledged, but not recorded: resent
        assert again.replayed
    assert [s.SerializeToString() for s in node.signed] == [first.SerializeToString()] * 2


def test_status_output_has_no_personal_data(outbox: Outbox) -> None:
    node = Node()
    bad = submit(outbox, "C", "999999999999")
    node.refuse[bad.idempotency_key] = grpc.StatusCode.INVALID_ARGUMENT
    follow(outbox, "C", "accept")
    Forwarder(outbox, node).drain()
    shown = to_json(outbox.commands()) + describe(outbox.commands())
    shown += json.dumps([c.to_json() for c in outbox.commands()], ensure_ascii=False)
    for value in (PERSON.name, PERSON.id_number, PERSON.phone):
        assert value not in shown


def test_outbox_is_bound_to_one_node(tmp_path: Path, credentials: HallCredentials) -> None:
    path = tmp_path / "outbox.sqlite3"
    Outbox(path, credentials).close()
    elsewhere = HallCredentials(HALL, REGION, credentials.signing_key, node="tongban/4309")
    with pytest.raises(ConfigError, match="belongs to node='tongban/43'"):
        Outbox(path, elsewhere)
    # The default origin and the same origin given explicitly are the same node.
    Outbox(path, HallCredentials(HALL, REGION, credentials.signing_key, node="tongban/43")).close()


#: The outbox schema of version 1: the applicant inside the submit's body, Command bytes and
#: signature in two columns.
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE lanes (ref TEXT PRIMARY KEY, case_id TEXT, created_at TEXT NOT NULL);
CREATE TABLE commands (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ref TEXT NOT NULL REFERENCES lanes(ref),
    action TEXT NOT NULL, idempotency_key TEXT NOT NULL UNIQUE, operator TEXT NOT NULL,
    body BLOB NOT NULL, command BLOB, signature BLOB,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0, case_id TEXT, version INTEGER, replayed INTEGER,
    error_code TEXT, error_message TEXT, created_at TEXT NOT NULL, last_attempt_at TEXT,
    sent_at TEXT
);
CREATE INDEX commands_by_status ON commands (status, seq);
CREATE INDEX commands_by_ref ON commands (ref, seq);
"""


def v1_submit_body(applicant: common_pb2.Applicant) -> bytes:
    """A v1 SubmitCase: item code, the applicant in clear as field 2, materials."""
    person = applicant.SerializeToString()
    return (
        case_exchange_pb2.SubmitCase(item_code="200101001000").SerializeToString()
        + b"\x12" + bytes([len(person)]) + person
        + case_exchange_pb2.SubmitCase(materials=application().materials).SerializeToString()
    )  # fmt: skip


def test_a_v1_outbox_is_migrated_in_place(tmp_path: Path, credentials: HallCredentials) -> None:
    """Applicants leave the bodies; unacknowledged commands are signed anew under the current
    contract (commitments, node, deferred, the original time) before they are sent."""
    path = tmp_path / "outbox.sqlite3"
    queued_at = (datetime.now(UTC) - timedelta(days=1)).isoformat(timespec="milliseconds")
    case_b = str(uuid.uuid4())
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("schema_version", "1"), ("hall_id", HALL), ("region", REGION)],
        )
        db.executemany(
            "INSERT INTO lanes VALUES (?, ?, ?)", [("A", None, queued_at), ("B", case_b, queued_at)]
        )
        rows = [
            ("A", "submit", "vil-a-submit", v1_submit_body(PERSON), b"old", b"sig", "pending"),
            ("A", "accept", "vil-a-accept", b"", None, None, "pending"),
            ("B", "submit", "vil-b-submit", v1_submit_body(PERSON), b"sent-bytes", b"sig", "sent"),
            ("B", "withdraw", "vil-b-withdraw", b"", b"old", b"sig", "failed"),
        ]
        db.executemany(
            "INSERT INTO commands (ref, action, idempotency_key, operator, body, command,"
            " signature, status, created_at) VALUES (?, ?, ?, 'clerk', ?, ?, ?, ?, ?)",
            [(*row, queued_at) for row in rows],
        )

    with Outbox(path, credentials) as box:
        meta = dict(box._db.execute("SELECT key, value FROM meta").fetchall())
        assert meta == {
            "schema_version": str(SCHEMA_VERSION), "hall_id": HALL, "region": REGION,
            "node": "tongban/43",
        }  # fmt: skip
        stored = {r["idempotency_key"]: r for r in box._db.execute("SELECT * FROM commands")}
        submit_a = stored["vil-a-submit"]
        assert common_pb2.Applicant.FromString(submit_a["applicant"]) == PERSON
        body = case_exchange_pb2.SubmitCase.FromString(submit_a["body"])
        assert body == application() and PERSON.name.encode() not in bytes(submit_a["body"])
        assert submit_a["signed"] is None and stored["vil-b-withdraw"]["signed"] is None
        sent = case_exchange_pb2.SignedCommand.FromString(stored["vil-b-submit"]["signed"])
        assert sent.command == b"sent-bytes"  # the record of what was sent is kept
        assert [c.status for c in box.commands()] == ["pending", "pending", "sent", "failed"]

        node = Node()
        result = Forwarder(box, node).drain()
        assert [c.action for c in result.sent] == ["submit", "accept"]
        resigned = case_exchange_pb2.Command.FromString(node.received[0][1])
        assert resigned.header.deferred and resigned.header.node == "tongban/43"
        assert resigned.header.issued_at.ToDatetime(tzinfo=UTC) == datetime.fromisoformat(queued_at)
        assert resigned.submit.item_code == "200101001000"
        box.retry(stored["vil-b-withdraw"]["seq"])
        assert [c.action for c in Forwarder(box, node).drain().sent] == ["withdraw"]
        newer = submit(box, "C")
        assert newer.seq == 5 and newer.signed
    with Outbox(path, credentials) as box:  # opening a migrated outbox again changes nothing
        assert [c.status for c in box.commands()] == ["sent"] * 4 + ["pending"]
        assert box.ensure_signed(5) == box.ensure_signed(5)


def test_an_outbox_of_a_newer_schema_is_refused(
    tmp_path: Path, credentials: HallCredentials
) -> None:
    path = tmp_path / "outbox.sqlite3"
    Outbox(path, credentials).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    with pytest.raises(ConfigError, match="schema version 3"):
        Outbox(path, credentials)


# ------------------------------------------------------------------ keys and files


def test_every_queued_command_needs_an_idempotency_key(outbox: Outbox) -> None:
    """No random default: the caller passes its own key, or asks for a fresh one deliberately
    (queue_key); a missing, empty or malformed key is refused naming the parameter."""
    with pytest.raises(TypeError, match="idempotency_key"):
        outbox.submit(application(), applicant=PERSON, ref="A", operator="clerk")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="idempotency_key"):
        outbox.follow("A", "accept", operator="clerk")  # type: ignore[call-arg]
    for bad in ("", "short", "钥匙-0000000001", "x" * 129):
        with pytest.raises(InputError, match="idempotency_key") as caught:
            outbox.submit(
                application(), applicant=PERSON, ref="A", operator="c", idempotency_key=bad
            )
        assert caught.value.field == "idempotency_key"
    assert outbox.commands() == []  # nothing was queued
    queued = outbox.submit(application(), applicant=PERSON, ref="A", operator="c",
                           idempotency_key="room-2024-0031")  # fmt: skip
    assert queued.idempotency_key == "room-2024-0031"
    assert queue_key() != queue_key() and queue_key().startswith("vil-")


def test_a_file_that_is_no_outbox_is_a_config_error(
    tmp_path: Path, credentials: HallCredentials
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database, just notes\n" * 100)
    with pytest.raises(ConfigError, match="cannot be used as an outbox"):
        Outbox(text, credentials)
    with pytest.raises(ConfigError, match="cannot open the outbox"):
        Outbox(tmp_path, credentials)  # a directory
    assert issubclass(ConfigError, AdapterError) and issubclass(InputError, AdapterError)


def test_a_command_that_cannot_be_signed_fails_alone(outbox: Outbox) -> None:
    """A follow-up queued by an older adapter with a key the SDK now refuses (too short) is
    marked failed when the forwarder would sign it; the other cases go on."""
    node = Node()
    submit(outbox, "A")
    later = follow(outbox, "A", "accept")  # unsigned until the submit's reply
    outbox._db.execute("UPDATE commands SET idempotency_key = 'old-1' WHERE seq = ?", (later.seq,))
    submit(outbox, "B")
    result = Forwarder(outbox, node).drain()
    assert [c.ref for c in result.sent] == ["A", "B"]
    [failed] = result.failed
    assert failed.seq == later.seq and failed.error_code == "INVALID_ARGUMENT"
    assert "not signed" in failed.error_message and "idempotency_key" in failed.error_message


# ---------------------------------------------------------------- scanned files at sync time


class FileNode(Node):
    """The in-memory node, also taking material uploads (``upload_fails``: status per name)."""

    def __init__(self) -> None:
        super().__init__()
        self.uploads: list[tuple[str, bytes]] = []
        self.upload_fails: dict[str, grpc.StatusCode] = {}
        self.events: list[str] = []

    def upload_material(self, source: Path) -> common_pb2.Material:
        if self.down:
            raise refused(grpc.StatusCode.UNAVAILABLE, "connection refused")
        if source.name in self.upload_fails:
            raise refused(self.upload_fails[source.name], "refused upload")
        data = source.read_bytes()
        self.uploads.append((source.name, data))
        self.events.append(f"upload {source.name}")
        return material_from_file(source.name, source)

    def send_signed(
        self, action: str, signed: case_exchange_pb2.SignedCommand
    ) -> case_exchange_pb2.CommandReply:
        reply = super().send_signed(action, signed)
        self.events.append(action)
        return reply


def submit_with_scans(box: Outbox, ref: str, *paths: Path) -> QueuedCommand:
    materials = [material_from_file(path.stem, path) for path in paths]
    return box.submit(
        case_exchange_pb2.SubmitCase(item_code="200101001000", materials=materials),
        applicant=PERSON,
        ref=ref,
        operator="clerk",
        idempotency_key=queue_key(),
        files=list(zip(materials, paths, strict=True)),
    )


def scans(tmp_path: Path, *names: str) -> list[Path]:
    paths = []
    for name in names:
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(f"scan of {name}".encode() * 50)
        paths.append(path)
    return paths


def test_scans_are_uploaded_before_the_command_that_lists_them(
    outbox: Outbox, tmp_path: Path
) -> None:
    card, form = scans(tmp_path, "身份证", "申请表")
    submit_with_scans(outbox, "A-1", card, form)
    follow(outbox, "A-1", "accept")
    node = FileNode()
    result = Forwarder(outbox, node).drain()
    assert len(result.sent) == 2
    assert node.events == ["upload 身份证.jpg", "upload 申请表.jpg", "submit", "accept"]
    assert outbox.file_counts() == {"pending": 0, "uploaded": 2, "failed": 0}
    # Nothing is uploaded twice, also for another case listing the same scan.
    submit_with_scans(outbox, "B-1", card)
    Forwarder(outbox, node).drain()
    assert [name for name, _ in node.uploads] == ["身份证.jpg", "申请表.jpg"]


def test_an_upload_that_cannot_reach_the_node_holds_the_command(
    outbox: Outbox, tmp_path: Path
) -> None:
    (card,) = scans(tmp_path, "身份证")
    submit_with_scans(outbox, "A-1", card)
    node = FileNode()
    node.down = True
    result = Forwarder(outbox, node).forward_once()
    assert result.interrupted is not None and result.interrupted.transient
    assert result.remaining == 1
    assert node.received == []
    assert outbox.file_counts()["pending"] == 1
    node.down = False
    Forwarder(outbox, node).drain()
    assert node.events == ["upload 身份证.jpg", "submit"]


def test_a_refused_or_changed_scan_is_named_and_the_command_still_goes(
    outbox: Outbox, tmp_path: Path
) -> None:
    card, form = scans(tmp_path, "身份证", "申请表")
    submit_with_scans(outbox, "A-1", card, form)
    form.write_bytes(b"another file now")  # changed on disk after it was queued
    node = FileNode()
    node.upload_fails["身份证.jpg"] = grpc.StatusCode.INVALID_ARGUMENT
    result = Forwarder(outbox, node).drain()
    assert [c.action for c in result.sent] == ["submit"]
    assert outbox.file_counts() == {"pending": 0, "uploaded": 0, "failed": 2}
    errors = {Path(f["path"]).name: f["error"] for f in outbox.failed_files()}
    assert errors["身份证.jpg"].startswith("INVALID_ARGUMENT")
    assert "changed on disk" in errors["申请表.jpg"]


def test_a_missing_scan_file_is_named(outbox: Outbox, tmp_path: Path) -> None:
    (card,) = scans(tmp_path, "身份证")
    submit_with_scans(outbox, "A-1", card)
    card.unlink()

    class SdkLike(FileNode):
        def upload_material(self, source: Path) -> common_pb2.Material:
            raise InputError("source", f"cannot read {source}: No such file or directory")

    Forwarder(outbox, SdkLike()).drain()
    (failed,) = outbox.failed_files()
    assert "cannot read" in failed["error"]


def test_files_must_belong_to_the_submit(outbox: Outbox, tmp_path: Path) -> None:
    (card,) = scans(tmp_path, "身份证")
    other = material_from_file("other", card)
    with pytest.raises(InputError, match="files"):
        outbox.submit(
            application(),
            applicant=PERSON,
            ref="A-1",
            operator="clerk",
            idempotency_key=queue_key(),
            files=[(other, card)],
        )
    assert outbox.commands() == []


def test_an_agent_with_a_key_signs_their_steps_and_the_hall_signs_the_rest(
    tmp_path: Path, credentials: HallCredentials
) -> None:
    """A 代办员 registered with a key of their own signs every step naming them, even one
    signed only when forwarded (its case id was not known when it was queued)."""
    agent_key = Ed25519PrivateKey.generate()
    box = Outbox(tmp_path / "outbox.sqlite3", credentials, agent_keys={"dby-07": agent_key})
    try:
        box.submit(application(), applicant=PERSON, ref="A", operator="clerk",
                   idempotency_key=queue_key(), agent="dby-07")  # fmt: skip
        box.follow("A", "accept", operator="clerk", idempotency_key=queue_key(), agent="dby-07")
        follow(box, "A", "start_handling")  # the room's clerk: the hall's key
        node = Node()
        assert len(Forwarder(box, node).drain().sent) == 3
    finally:
        box.close()
    submitted, accepted, handled = node.signed
    for signed in (submitted, accepted):
        agent_key.public_key().verify(signed.signature, signed.command)
        assert case_exchange_pb2.Command.FromString(signed.command).header.agent == "dby-07"
    credentials.signing_key.public_key().verify(handled.signature, handled.command)


def test_an_agents_key_signs_only_a_step_that_names_the_agent(
    credentials: HallCredentials,
) -> None:
    with pytest.raises(InputError, match="names the agent"):
        sign_command(credentials, "hand_off", case_exchange_pb2.HandOff(case_id="c", to_hall="h2"),
                     idempotency_key="key-00001", operator="op",
                     agent_key=Ed25519PrivateKey.generate())  # fmt: skip

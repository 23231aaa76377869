"""Delivery channels over gRPC with mutual TLS against a real ``tongban serve``: the locker's
deposit and pickup through ``tongban adapter locker`` (a wrong code is PERMISSION_DENIED and
exit 1), post dispatch and confirmation through the SDK, a kiosk registered with
``tongban hall register --kind kiosk`` printing after an identity check, and each refusal with
its status and field (docs/certificates.md, "Delivery")."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tongban.v1 import common_pb2

from adapters.errors import AdapterError, NodeRefused
from adapters.sdk import HallClient, RetryPolicy
from tests.e2e.conftest import TOWNSHIP
from tests.e2e.test_adapters_support import connection_args, id_number, run_adapter
from tests.harness.node import HallFiles, NodeProcess

pytestmark = pytest.mark.e2e

APPLICANT = common_pb2.Applicant(
    name="送达测试", id_number=id_number("43090219500101005"), phone="13700000005"
)
MATERIAL = common_pb2.Material(
    name="居民身份证", sha256=hashlib.sha256(b"id").hexdigest(), media_type="image/png", size=2
)


KIOSK = "hn-shatou-kiosk-1"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with the township hall and a kiosk of the same township, serving over mTLS."""
    with NodeProcess(tmp_path_factory.mktemp("delivery")) as process:
        process.add_hall(*TOWNSHIP)
        _kiosk(process, KIOSK)
        process.start()
        yield process


def _ready(client: HallClient) -> str:
    """A township case of the elder card, approved, concluded and its certificate issued."""
    key = uuid.uuid4().hex
    case_id = client.send(
        "submit", idempotency_key=f"dl-{key}-0", item_code="200202001000",
        applicant=APPLICANT, materials=[MATERIAL],
    ).case_id  # fmt: skip
    for number, (action, fields) in enumerate(
        [
            ("accept", {}),
            ("start_handling", {}),
            ("decide", {"approved": True, "reason": "符合条件"}),
            ("conclude", {}),
            (
                "issue_certificate",
                {
                    "type_code": "150001",
                    "issuer_code": "11430902MB0000001X",
                    "authority": "长春镇人民政府",
                    "valid_until": "",
                },
            ),
        ],
        start=1,
    ):
        client.send(action, idempotency_key=f"dl-{key}-{number}", case_id=case_id, **fields)
    return str(case_id)


def _refusal(call: object) -> NodeRefused:
    with pytest.raises(AdapterError) as caught:
        call()  # type: ignore[operator]
    assert isinstance(caught.value, NodeRefused), repr(caught.value)
    return caught.value


def test_the_locker_through_the_adapter_command(node: NodeProcess, tmp_path: Path) -> None:
    with node.client(TOWNSHIP[0], retry=RetryPolicy(attempts=1)) as town:
        case_id = _ready(town)
        key_file = tmp_path / "locker" / "pickup.key"
        where = ["--case-id", case_id, "--locker", "ZZ-E-001", "--compartment", "A03",
                 "--key-file", str(key_file), *connection_args(node, TOWNSHIP[0])]  # fmt: skip
        deposited = run_adapter("locker", "deposit", *where, "--hold-hours", "24")
        assert deposited.returncode == 0, deposited.stderr
        code = deposited.stdout.strip().rsplit(" ", 1)[-1]
        assert code.isdigit() and len(code) == 6
        # Run again (the clerk did not see the answer): the node's first result, the same code.
        again = run_adapter("locker", "deposit", *where, "--hold-hours", "24")
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == (
            f"deposited in ZZ-E-001#A03 (deposited before: the same code); pickup code {code}"
        )
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert town.get_case(case_id).state == common_pb2.CASE_STATE_IN_LOCKER
        wrong = "000000" if code != "000000" else "111111"
        refused = run_adapter("locker", "pick-up", *where, "--code", wrong)
        assert refused.returncode == 1
        assert "wrong pickup code" in refused.stderr and "4 attempts left" in refused.stderr
        assert "Traceback" not in refused.stderr
        picked = run_adapter("locker", "pick-up", *where, "--code", code)
        assert picked.returncode == 0, picked.stderr
        view = town.get_case(case_id)
        assert view.state == common_pb2.CASE_STATE_DELIVERED
        delivered = town.history(case_id).events[-1]
        assert delivered.WhichOneof("event") == "delivered"
        assert delivered.delivered.method == common_pb2.DELIVERY_METHOD_LOCKER
        assert delivered.delivered.place == "ZZ-E-001#A03"


def test_post_and_its_refusals_over_grpc(node: NodeProcess) -> None:
    with node.client(TOWNSHIP[0], retry=RetryPolicy(attempts=1)) as town:
        case_id = _ready(town)
        bad = _refusal(lambda: town.send(
            "dispatch_by_post", idempotency_key=uuid.uuid4().hex, case_id=case_id,
            carrier="EMS", tracking_number="",
        ))  # fmt: skip
        assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "command.dispatch_by_post.tracking_number" in str(bad)
        town.send("dispatch_by_post", idempotency_key=uuid.uuid4().hex, case_id=case_id,
                  carrier="EMS", tracking_number="1190000000009")  # fmt: skip
        early = _refusal(lambda: town.send(
            "rate", idempotency_key=uuid.uuid4().hex, case_id=case_id,
            rating=common_pb2.RATING_SATISFIED,
        ))  # fmt: skip
        assert early.code == grpc.StatusCode.FAILED_PRECONDITION
        town.send("deliver", idempotency_key=uuid.uuid4().hex, case_id=case_id,
                  method=common_pb2.DELIVERY_METHOD_POST, note="本人签收")  # fmt: skip
        assert town.get_case(case_id).state == common_pb2.CASE_STATE_DELIVERED


def _kiosk(node: NodeProcess, hall_id: str) -> HallFiles:
    """A kiosk registered with ``tongban hall register --kind kiosk`` and its credentials."""
    certificate, key = node.issue("hall", hall_id)
    signing_key = node.directory / "certs" / f"{hall_id}.signing.key"
    private = Ed25519PrivateKey.generate()
    signing_key.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    shown = node.run("hall", "register", "--hall-id", hall_id, "--name", "自助终端",
                     "--region", TOWNSHIP[1], "--window", "打印口", "--kind", "kiosk",
                     "--public-key", base64.b64encode(public).decode(), "--json")  # fmt: skip
    assert '"kind": "kiosk"' in shown
    files = HallFiles(hall_id, TOWNSHIP[1], certificate, key, signing_key)
    node.halls[hall_id] = files
    return files


def test_a_kiosk_prints_after_an_identity_check(node: NodeProcess) -> None:
    with (
        node.client(TOWNSHIP[0], retry=RetryPolicy(attempts=1)) as town,
        node.client(KIOSK, retry=RetryPolicy(attempts=1)) as kiosk,
    ):
        case_id = _ready(town)
        unchecked = _refusal(lambda: kiosk.send(
            "deliver", idempotency_key=uuid.uuid4().hex, case_id=case_id,
            method=common_pb2.DELIVERY_METHOD_KIOSK, id_card_read=APPLICANT.id_number,
        ))  # fmt: skip
        assert unchecked.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "command.deliver.identity_check" in str(unchecked)
        staffed = _refusal(lambda: town.send(
            "deliver", idempotency_key=uuid.uuid4().hex, case_id=case_id,
            method=common_pb2.DELIVERY_METHOD_KIOSK,
            identity_check=common_pb2.IDENTITY_CHECK_ID_CARD,
        ))  # fmt: skip
        assert staffed.code == grpc.StatusCode.PERMISSION_DENIED
        stranger = _refusal(lambda: kiosk.send(
            "deliver", idempotency_key=uuid.uuid4().hex, case_id=case_id,
            method=common_pb2.DELIVERY_METHOD_KIOSK, id_card_read=id_number("43090219800101001"),
            identity_check=common_pb2.IDENTITY_CHECK_ID_CARD_AND_FACE,
        ))  # fmt: skip
        assert stranger.code == grpc.StatusCode.PERMISSION_DENIED
        kiosk.send("deliver", idempotency_key=uuid.uuid4().hex, case_id=case_id,
                   method=common_pb2.DELIVERY_METHOD_KIOSK, id_card_read=APPLICANT.id_number,
                   identity_check=common_pb2.IDENTITY_CHECK_ID_CARD_AND_FACE)  # fmt: skip
        assert town.get_case(case_id).state == common_pb2.CASE_STATE_DELIVERED

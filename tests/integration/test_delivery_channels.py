"""Delivery channels (送达) on a real node store: each step is a signed hall command in the log
with who, where and when; the case is DELIVERED only when the applicant has the result; the
locker's pickup code is never stored, only its keyed hash; the gate and the auditor refuse a
step the case did not allow (docs/certificates.md, "Delivery")."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from tongban.v1 import common_pb2

from adapters.sdk import pickup_code_hash as sdk_pickup_code_hash
from hub.bootstrap import open_node_projections
from hub.commands.model import PersonalValue
from hub.domain.case import Case
from hub.domain.custody import (
    KIOSK_ID_NUMBER_FIELD,
    LOCKER_MAX_ATTEMPTS,
    PICKUP_CODE_FIELD,
    pickup_code_hash,
)
from hub.domain.values import CaseState, DeliveryMethod, IdentityCheck, id_number_with_check
from hub.errors import (
    IntegrityViolation,
    InvalidInput,
    NotFound,
    PermissionRefused,
    TransitionRefused,
)
from hub.integrity.audit import audit_store
from hub.integrity.store import ReadOnlyStore
from hub.projections.queries import Names, statistics
from hub.settings import Settings
from ledger import Verifier
from tests.harness.inprocess import APPLICANT, InProcessNode

pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")

TOWNSHIP = "430902104000"
ISSUER = "11430902MB0000001X"
CODE = "Q7Z9K2"  # distinctive, so a search of the store's bytes cannot match by chance
LOCKER_KEY = bytes.fromhex("5a" * 8 + "c3" * 8 + "e1" * 8 + "0f" * 8)
#: What a kiosk sends beside its signed print: the ID number it read from the applicant's card.
READ = (PersonalValue(KIOSK_ID_NUMBER_FIELD, APPLICANT.id_number, b""),)
OTHER_ID = id_number_with_check("43090219800101001")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[InProcessNode]:
    started = InProcessNode.start(Settings(data_dir=tmp_path / "node"))
    started.add_hall("t-hall", TOWNSHIP, windows=("综合窗口", "发证窗口"))
    yield started
    started.close()


def _ready(node: InProcessNode, key: str, at: datetime | None = None) -> str:
    """An approved elder-card case with its certificate issued: ready to deliver (each step
    signed at ``at``, forwarded later, when given)."""
    hall = node.halls["t-hall"]
    when: dict[str, Any] = {"deferred": True, "issued_at": at} if at else {}
    case = str(node.submit(hall, key=key, **when).case_id)
    for action, arguments in (
        ("accept", {}),
        ("start_handling", {}),
        ("decide", {"approved": True, "reason": "符合条件"}),
        ("conclude", {}),
        ("issue_certificate", {"type_code": "150001", "issuer_code": ISSUER,
                               "authority": "益阳市资阳区长春镇人民政府", "valid_until": ""}),
    ):  # fmt: skip
        node.run(hall, action, case_id=case, **arguments, **when)
    return case


def _run(node: InProcessNode, action: str, case: str, **fields: Any) -> Any:
    return node.run(node.halls["t-hall"], action, case_id=case, **fields)


def _deposit(node: InProcessNode, case: str, hours: int = 48, **sign: Any) -> Any:
    code_hash = pickup_code_hash(UUID(case), CODE, LOCKER_KEY)
    signed = node.halls["t-hall"].sign(
        "deposit_in_locker", case_id=case, locker_id="ZZ-E-001", compartment="A03",
        code_hash=code_hash, hold_hours=hours, **sign,
    )  # fmt: skip
    return node.app.execute(signed)


def _pick_up(node: InProcessNode, case: str, code: str, key: str | None = None) -> Any:
    signed = node.halls["t-hall"].sign(
        "pick_up_from_locker", idempotency_key=key, case_id=case, locker_id="ZZ-E-001",
        compartment="A03", personal=(PersonalValue(PICKUP_CODE_FIELD, code, LOCKER_KEY),),
    )  # fmt: skip
    return node.app.execute(signed, expected="pick_up_from_locker")


def _events(node: InProcessNode, case: str) -> list[Any]:
    return node.app.case_history(UUID(case))


def _figures(node: InProcessNode) -> Any:
    """The node's statistics projection, caught up, for the township."""
    projections = open_node_projections(node.settings, node.app)
    try:
        projections.create_tables()
        projections.catch_up()
        names = Names(node.app.regions, node.app.catalogue)
        return statistics(projections.store, names, region=TOWNSHIP, by="region")[1]
    finally:
        projections.close()


def _audit(node: InProcessNode) -> list[str]:
    node.integrator().catch_up()
    verifier = Verifier.from_key((node.settings.data_dir / "log.vkey").read_text().strip())
    with ReadOnlyStore(sqlite_path=node.settings.sqlite_path) as store:
        report = audit_store(store, [verifier], origin=node.settings.origin)
    return [str(finding) for finding in report.findings]


def test_the_window_records_who_where_and_when(node: InProcessNode) -> None:
    case = _ready(node, "deliver-window-01")
    size = node.log_size()
    with pytest.raises(InvalidInput) as refused:
        _run(node, "deliver", case, method=common_pb2.DELIVERY_METHOD_WINDOW, place="没有的窗口")
    assert refused.value.field == "command.deliver.place"
    assert node.log_size() == size
    _run(node, "deliver", case, method=common_pb2.DELIVERY_METHOD_WINDOW, place="发证窗口")
    delivered = _events(node, case)[-1]
    assert isinstance(delivered, Case.Delivered)
    assert (delivered.method, delivered.place) == (DeliveryMethod.WINDOW, "发证窗口")
    assert (delivered.actor.hall_id, delivered.actor.operator) == ("t-hall", "op-t-hall")
    assert abs(delivered.timestamp - datetime.now(UTC)) < timedelta(minutes=5)
    _run(node, "rate", case, rating=common_pb2.RATING_SATISFIED, comment="")
    assert _audit(node) == []


def test_post_is_delivered_only_when_confirmed(node: InProcessNode) -> None:
    case = _ready(node, "deliver-post-01")
    with pytest.raises(InvalidInput) as refused:
        _run(node, "dispatch_by_post", case, carrier="EMS", tracking_number=" ")
    assert refused.value.field == "command.dispatch_by_post.tracking_number"
    _run(node, "dispatch_by_post", case, carrier="EMS", tracking_number="1190000000001")
    posted = node.app.get_case(UUID(case))
    assert posted.state is CaseState.IN_POST and posted.tracking_number == "1190000000001"
    # Posted is concluded, not delivered, in the statistics; and the certificate's status may
    # still change meanwhile.
    assert _figures(node)["concluded"] == 1 and _figures(node)["delivered"] == 0
    _run(node, "suspend_certificate", case, reason="核查")
    _run(node, "reinstate_certificate", case, reason="核查完毕")
    size = node.log_size()
    # In the post: not rated, not archived, not handed over at the window meanwhile.
    with pytest.raises(TransitionRefused):
        _run(node, "rate", case, rating=common_pb2.RATING_SATISFIED, comment="")
    with pytest.raises(TransitionRefused):
        _run(node, "archive", case)
    with pytest.raises(TransitionRefused, match="in the post"):
        _run(node, "deliver", case, method=common_pb2.DELIVERY_METHOD_WINDOW)
    assert node.log_size() == size
    _run(node, "deliver", case, method=common_pb2.DELIVERY_METHOD_POST, note="本人签收")
    assert node.app.get_case(UUID(case)).state is CaseState.DELIVERED
    assert _figures(node)["delivered"] == 1
    _run(node, "rate", case, rating=common_pb2.RATING_SATISFIED, comment="")
    _run(node, "archive", case)
    assert _audit(node) == []


def test_a_returned_letter_goes_back_to_the_window_and_out_another_way(
    node: InProcessNode,
) -> None:
    case = _ready(node, "deliver-post-02")
    _run(node, "dispatch_by_post", case, carrier="EMS", tracking_number="1190000000002")
    with pytest.raises(InvalidInput) as refused:
        _run(node, "return_to_window", case, reason="退件", window="没有的窗口")
    assert refused.value.field == "command.return_to_window.window"
    _run(node, "return_to_window", case, reason="地址不详, 退件", window="发证窗口")
    back = node.app.get_case(UUID(case))
    assert back.state is CaseState.CERTIFICATE_ISSUED and back.window == "发证窗口"
    _run(node, "deliver", case, method=common_pb2.DELIVERY_METHOD_ONLINE, place="湘易办")
    assert node.app.get_case(UUID(case)).state is CaseState.DELIVERED
    assert _audit(node) == []


def test_the_locker_keeps_only_a_keyed_hash_and_delivers_with_the_right_code(
    node: InProcessNode,
) -> None:
    case = _ready(node, "deliver-locker-01")
    # The SDK's keyed hash is the node's (two implementations of one rule).
    assert sdk_pickup_code_hash(case, CODE, LOCKER_KEY) == pickup_code_hash(
        UUID(case), CODE, LOCKER_KEY
    )
    with pytest.raises(InvalidInput) as refused:
        node.run(node.halls["t-hall"], "deposit_in_locker", case_id=case, locker_id="ZZ-E-001",
                 compartment="A03", code_hash=CODE, hold_hours=48)  # fmt: skip
    assert refused.value.field == "command.deposit_in_locker.code_hash"
    _deposit(node, case)
    waiting = node.app.get_case(UUID(case))
    assert waiting.state is CaseState.IN_LOCKER and waiting.locker == ("ZZ-E-001", "A03")
    # A wrong code: refused, and counted (recorded in the log as a custody event).
    with pytest.raises(PermissionRefused, match=f"{LOCKER_MAX_ATTEMPTS - 1} attempts left"):
        _pick_up(node, case, "000000", key="pickup-wrong-0001")
    size = node.log_size()
    with pytest.raises(PermissionRefused, match=f"{LOCKER_MAX_ATTEMPTS - 1} attempts left"):
        _pick_up(node, case, "000000", key="pickup-wrong-0001")  # the retry: the same answer
    assert node.log_size() == size
    assert isinstance(_events(node, case)[-1], Case.LockerCodeRefused)
    # A pickup without the code, or with a malformed one, stores nothing.
    with pytest.raises(InvalidInput) as refused:
        node.run(node.halls["t-hall"], "pick_up_from_locker", case_id=case,
                 locker_id="ZZ-E-001", compartment="A03")  # fmt: skip
    assert refused.value.field == "personal"
    with pytest.raises(InvalidInput) as refused:
        _pick_up(node, case, "1")
    assert (refused.value.field, refused.value.value) == ("personal[0].value", "<redacted>")
    with pytest.raises(InvalidInput) as refused:
        node.run(node.halls["t-hall"], "pick_up_from_locker", case_id=case, locker_id="ZZ-E-001",
                 compartment="B01",
                 personal=(PersonalValue(PICKUP_CODE_FIELD, CODE, LOCKER_KEY),))  # fmt: skip
    assert refused.value.field == "command.pick_up_from_locker.compartment"
    assert node.log_size() == size
    _pick_up(node, case, CODE)
    delivered = _events(node, case)[-1]
    assert isinstance(delivered, Case.Delivered)
    assert (delivered.method, delivered.place) == (DeliveryMethod.LOCKER, "ZZ-E-001#A03")
    assert node.app.get_case(UUID(case)).state is CaseState.DELIVERED
    assert _audit(node) == []
    # Neither the code nor the locker's key is anywhere in the store (events, log, records).
    node.close()
    stored = b"".join(
        path.read_bytes() for path in node.settings.data_dir.rglob("*") if path.is_file()
    )
    for secret in (CODE.encode(), LOCKER_KEY, LOCKER_KEY.hex().encode()):
        assert secret not in stored


def test_too_many_wrong_codes_lock_the_deposit_until_it_goes_back_to_the_window(
    node: InProcessNode,
) -> None:
    case = _ready(node, "deliver-locker-02")
    _deposit(node, case)
    with pytest.raises(TransitionRefused, match="waits for the applicant"):
        _run(node, "return_to_window", case, reason="取回")  # neither expired nor locked
    for attempt in range(LOCKER_MAX_ATTEMPTS):
        with pytest.raises(PermissionRefused, match="wrong pickup code"):
            _pick_up(node, case, f"99990{attempt}")
    size = node.log_size()
    with pytest.raises(TransitionRefused, match="locked"):
        _pick_up(node, case, CODE)  # even the right code, now
    assert node.log_size() == size
    _run(node, "return_to_window", case, reason="多次输错取件码")
    _run(node, "deliver", case, method=common_pb2.DELIVERY_METHOD_WINDOW)
    assert node.app.get_case(UUID(case)).state is CaseState.DELIVERED
    assert _audit(node) == []


def test_an_expired_deposit_is_returned_to_the_window(node: InProcessNode) -> None:
    # Deposited (deferred commands, signed three hours ago) for one hour: expired now.
    earlier = datetime.now(UTC) - timedelta(hours=3)
    case = _ready(node, "deliver-locker-03", at=earlier)
    _deposit(node, case, hours=1, deferred=True, issued_at=earlier)
    with pytest.raises(TransitionRefused, match="expired"):
        _pick_up(node, case, CODE)
    _run(node, "return_to_window", case, reason="逾期未取")
    assert node.app.get_case(UUID(case)).state is CaseState.CERTIFICATE_ISSUED
    _deposit(node, case)  # and it may go into a locker again
    _pick_up(node, case, CODE)
    assert node.app.get_case(UUID(case)).state is CaseState.DELIVERED
    assert _audit(node) == []


def test_a_kiosk_prints_only_after_an_identity_check(node: InProcessNode) -> None:
    kiosk = node.add_hall("t-kiosk-01", "430902104000", kind=common_pb2.HALL_KIND_KIOSK)
    far_kiosk = node.add_hall("far-kiosk-01", "430903001000", kind=common_pb2.HALL_KIND_KIOSK)
    case = _ready(node, "deliver-kiosk-01")
    size = node.log_size()
    with pytest.raises(InvalidInput) as refused:
        node.run(kiosk, "deliver", case_id=case, method=common_pb2.DELIVERY_METHOD_KIOSK,
                 personal=READ)  # fmt: skip
    assert refused.value.field == "command.deliver.identity_check"
    with pytest.raises(InvalidInput) as refused:  # the ID number read must come along
        node.run(kiosk, "deliver", case_id=case, method=common_pb2.DELIVERY_METHOD_KIOSK,
                 identity_check=common_pb2.IDENTITY_CHECK_ID_CARD)  # fmt: skip
    assert refused.value.field == "personal"
    with pytest.raises(PermissionRefused, match="not the applicant's"):  # someone else's card
        node.run(kiosk, "deliver", case_id=case, method=common_pb2.DELIVERY_METHOD_KIOSK,
                 identity_check=common_pb2.IDENTITY_CHECK_ID_CARD,
                 personal=(PersonalValue(KIOSK_ID_NUMBER_FIELD, OTHER_ID, b""),))  # fmt: skip
    with pytest.raises(PermissionRefused, match="only by printing"):
        node.run(kiosk, "deliver", case_id=case, method=common_pb2.DELIVERY_METHOD_WINDOW)
    with pytest.raises(NotFound):  # a kiosk of another county does not see the case
        node.run(far_kiosk, "deliver", case_id=case, method=common_pb2.DELIVERY_METHOD_KIOSK,
                 identity_check=common_pb2.IDENTITY_CHECK_ID_CARD_AND_FACE)  # fmt: skip
    with pytest.raises(PermissionRefused, match="only a self-service kiosk"):
        _run(node, "deliver", case, method=common_pb2.DELIVERY_METHOD_KIOSK,
             identity_check=common_pb2.IDENTITY_CHECK_ID_CARD)  # fmt: skip
    assert node.log_size() == size
    node.run(kiosk, "deliver", case_id=case, method=common_pb2.DELIVERY_METHOD_KIOSK,
             identity_check=common_pb2.IDENTITY_CHECK_ID_CARD_AND_FACE, personal=READ)  # fmt: skip
    printed = _events(node, case)[-1]
    assert isinstance(printed, Case.Delivered)
    assert (printed.method, printed.identity_check, printed.actor.hall_id) == (
        DeliveryMethod.KIOSK,
        IdentityCheck.ID_CARD_AND_FACE,
        "t-kiosk-01",
    )
    # After the applicant's personal data is erased there is nothing to compare the card with.
    erased = _ready(node, "deliver-kiosk-02")
    node.app.execute(node.admin.sign("erase_personal_data", case_id=erased, reason="申请删除"))
    with pytest.raises(PermissionRefused, match="erased"):
        node.run(kiosk, "deliver", case_id=erased, method=common_pb2.DELIVERY_METHOD_KIOSK,
                 identity_check=common_pb2.IDENTITY_CHECK_ID_CARD, personal=READ)  # fmt: skip
    assert _audit(node) == []


def _allow_anything(self: Case, *args: Any) -> None:
    """A node that skips its own rule (and, for the auditor's test, its gate's too)."""


def test_a_pickup_after_expiry_is_refused_by_the_gate(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    earlier = datetime.now(UTC) - timedelta(hours=3)
    case = _ready(node, "deliver-forge-01", at=earlier)
    _deposit(node, case, hours=1, deferred=True, issued_at=earlier)
    node.integrator().catch_up()
    with monkeypatch.context() as patched:
        patched.setattr(Case, "check_pickup", _allow_anything)
        _pick_up(node, case, CODE)  # expired: not allowed
    with pytest.raises(IntegrityViolation, match="pick_up_from_locker"):
        node.integrator().catch_up()


def test_an_early_return_from_the_locker_is_refused_by_the_gate(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = _ready(node, "deliver-forge-02")
    _deposit(node, case)
    node.integrator().catch_up()
    with monkeypatch.context() as patched:
        patched.setattr(Case, "check_return", _allow_anything)
        _run(node, "return_to_window", case, reason="取回")  # the applicant still has time
    with pytest.raises(IntegrityViolation, match="return_to_window"):
        node.integrator().catch_up()


def test_a_print_by_a_staffed_hall_past_the_gate_is_named_by_the_auditor(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = _ready(node, "deliver-forge-03")
    node.integrator().catch_up()
    # A node whose rule and gate both let a staffed hall claim a kiosk's print (skipping the
    # identity check): the auditor, with the genuine rule, names the leaf.
    with monkeypatch.context() as patched:
        patched.setattr(Case, "check_delivery", _allow_anything)
        _run(node, "deliver", case, method=common_pb2.DELIVERY_METHOD_KIOSK)
        node.integrator().catch_up()
    findings = _audit(node)
    assert len(findings) == 1
    assert "invalid transition" in findings[0] and "kiosk" in findings[0]


def test_no_delivery_before_the_certificate(node: InProcessNode) -> None:
    hall = node.halls["t-hall"]
    case = str(node.submit(hall, key="deliver-early-01").case_id)
    for action, arguments in (("accept", {}), ("start_handling", {}),
                              ("decide", {"approved": True, "reason": "符合条件"}),
                              ("conclude", {})):  # fmt: skip
        node.run(hall, action, case_id=case, **arguments)
    size = node.log_size()
    with pytest.raises(TransitionRefused, match="issue the certificate first"):
        _run(node, "dispatch_by_post", case, carrier="EMS", tracking_number="1190000000003")
    with pytest.raises(TransitionRefused, match="issue the certificate first"):
        _deposit(node, case)
    assert node.log_size() == size


def test_a_window_hand_over_of_a_posted_result_is_refused_by_the_gate(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    posted = _ready(node, "deliver-forge-10")
    _run(node, "dispatch_by_post", posted, carrier="EMS", tracking_number="1190000000004")
    node.integrator().catch_up()
    with monkeypatch.context() as patched:
        patched.setattr(Case, "check_delivery", _allow_anything)
        _run(node, "deliver", posted, method=common_pb2.DELIVERY_METHOD_WINDOW)
    with pytest.raises(IntegrityViolation, match="deliver: .*in the post"):
        node.integrator().catch_up()


def test_a_pickup_from_another_compartment_is_refused_by_the_gate(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = _ready(node, "deliver-forge-20")
    _deposit(node, case)
    node.integrator().catch_up()
    with monkeypatch.context() as patched:
        patched.setattr(Case, "check_pickup", _allow_anything)
        signed = node.halls["t-hall"].sign(
            "pick_up_from_locker", case_id=case, locker_id="ZZ-E-001", compartment="B09",
            personal=(PersonalValue(PICKUP_CODE_FIELD, CODE, LOCKER_KEY),),
        )  # fmt: skip
        node.app.execute(signed)
    with pytest.raises(IntegrityViolation, match="not in this locker compartment"):
        node.integrator().catch_up()


def test_a_kiosk_print_without_an_identity_check_is_refused_by_the_gate(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    kiosk = node.add_hall("t-kiosk-03", TOWNSHIP, kind=common_pb2.HALL_KIND_KIOSK)
    case = _ready(node, "deliver-forge-30")
    node.integrator().catch_up()
    with monkeypatch.context() as patched:
        patched.setattr(Case, "check_delivery", _allow_anything)
        node.run(kiosk, "deliver", case_id=case, method=common_pb2.DELIVERY_METHOD_KIOSK,
                 personal=READ)  # fmt: skip
    with pytest.raises(IntegrityViolation, match="identity check"):
        node.integrator().catch_up()

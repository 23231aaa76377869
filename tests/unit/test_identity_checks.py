"""Identity checks (身份证识别, 人脸识别, 生存认证) as case events, and the items that need them."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from uuid import uuid4

import grpc
import pytest
from factories import COUNTY, COUNTY_HALL, TOWNSHIP_HALL, applicant, material
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from tongban.v1 import case_exchange_pb2, common_pb2

from hub.api.errors import status_code_for, to_status
from hub.commands.model import RecordIdentityCheck
from hub.commands.wire import parse_command
from hub.domain.case import Case
from hub.domain.items import Catalogue
from hub.domain.regions import RegionCode
from hub.domain.values import (
    CaseKind,
    CaseState,
    CheckResult,
    CrossRegionMode,
    IdentityCheckMethod,
    ScoreBand,
)
from hub.errors import (
    CheckMissing,
    ConfigurationError,
    InvalidInput,
    PermissionRefused,
    TransitionRefused,
)

M = IdentityCheckMethod
PENSION = "040323001000"  # 养老金领取资格认证: a yearly 生存认证


def _case(*checks: IdentityCheckMethod) -> Case:
    return Case.submit(
        case_id=uuid4(),
        actor=COUNTY_HALL,
        item_code=PENSION,
        item_name="养老金领取资格认证",
        kind=CaseKind.IMMEDIATE,
        mode=CrossRegionMode.LOCAL,
        intake_region=RegionCode(COUNTY),
        competent_region=RegionCode(COUNTY),
        applicant=applicant(),
        materials=(material(),),
        promised_days=0,
        statutory_days=0,
        produces_certificate=False,
        required_checks=checks,
    )


def test_the_pension_item_requires_a_yearly_proof_of_life() -> None:
    catalogue = Catalogue.load_default()
    item = catalogue.get(PENSION)
    assert item.required_checks == (M.LIVENESS,)
    assert item.recurs_every_months == 12
    assert "养老金领取资格认证" in item.name
    # Items that do not say need no check.
    assert catalogue.get("200202001000").required_checks == ()


def test_accept_is_refused_naming_the_missing_check_and_changes_nothing() -> None:
    case = _case(M.ID_CARD_READ, M.LIVENESS)
    case.collect_events()
    with pytest.raises(CheckMissing) as refused:
        case.accept(COUNTY_HALL)
    assert refused.value.check == "ID_CARD_READ"
    assert "ID_CARD_READ" in str(refused.value) and PENSION in str(refused.value)
    assert status_code_for(refused.value) is grpc.StatusCode.FAILED_PRECONDITION
    assert "ID_CARD_READ" in to_status(refused.value).message
    assert case.state is CaseState.RECEIVED and not case.collect_events()
    # The card is read: now the proof of life is what is missing.
    case.record_identity_check(COUNTY_HALL, M.ID_CARD_READ, "reader-3", CheckResult.PASSED,
                               ScoreBand.HIGH)  # fmt: skip
    with pytest.raises(CheckMissing, match="LIVENESS"):
        case.accept(COUNTY_HALL)


def test_a_failed_check_does_not_count_and_a_passed_one_lets_the_case_be_accepted() -> None:
    case = _case(M.LIVENESS)
    case.record_identity_check(COUNTY_HALL, M.LIVENESS, "app-7", CheckResult.FAILED, ScoreBand.LOW)
    with pytest.raises(CheckMissing, match="LIVENESS"):
        case.accept(COUNTY_HALL)
    case.record_identity_check(
        COUNTY_HALL, M.LIVENESS, "app-7", CheckResult.PASSED, ScoreBand.MEDIUM
    )
    case.accept(COUNTY_HALL)
    assert case.state is CaseState.ACCEPTED
    checks = [e for e in case.collect_events() if isinstance(e, Case.IdentityChecked)]
    assert [(e.method, e.result, e.score_band, e.device_id) for e in checks] == [
        (M.LIVENESS, CheckResult.FAILED, ScoreBand.LOW, "app-7"),
        (M.LIVENESS, CheckResult.PASSED, ScoreBand.MEDIUM, "app-7"),
    ]
    assert all(e.actor == COUNTY_HALL for e in checks)  # who did it (hall, operator, region)


def test_a_resubmission_also_accepts_and_is_refused_without_the_check() -> None:
    case = _case(M.FACE_MATCH)
    case.request_correction(COUNTY_HALL, ("社会保障卡",), "补齐")
    with pytest.raises(CheckMissing, match="FACE_MATCH"):
        case.resubmit(COUNTY_HALL, (material("社会保障卡", b"s"),))
    assert case.state is CaseState.AWAITING_CORRECTION


def test_only_the_holder_records_a_check_and_the_device_is_named() -> None:
    case = _case(M.LIVENESS)
    with pytest.raises(PermissionRefused):
        case.record_identity_check(
            TOWNSHIP_HALL, M.LIVENESS, "app-1", CheckResult.PASSED, ScoreBand.HIGH
        )
    with pytest.raises(InvalidInput, match="device_id"):
        case.record_identity_check(COUNTY_HALL, M.LIVENESS, " ", CheckResult.PASSED, ScoreBand.HIGH)
    assert case.passed_checks == ()


def test_a_device_id_has_1_to_128_characters() -> None:
    case = _case(M.LIVENESS)
    for bad in ("", "x" * 129):
        with pytest.raises(InvalidInput) as refused:
            case.record_identity_check(COUNTY_HALL, M.LIVENESS, bad, CheckResult.PASSED,
                                       ScoreBand.HIGH)  # fmt: skip
        assert refused.value.field == "device_id"
        assert refused.value.within("record_identity_check").field == (
            "command.record_identity_check.device_id"
        )
    assert case.passed_checks == () and len(case.collect_events()) == 1  # only the submission
    case.record_identity_check(COUNTY_HALL, M.LIVENESS, "x" * 128, CheckResult.PASSED,
                               ScoreBand.HIGH)  # fmt: skip
    assert case.passed_checks == (M.LIVENESS,)


def test_a_check_is_recorded_while_the_case_is_taken_in_or_handled_only() -> None:
    def check(case: Case) -> None:
        case.record_identity_check(COUNTY_HALL, M.FACE_MATCH, "cam-1", CheckResult.PASSED,
                                   ScoreBand.HIGH)  # fmt: skip

    correcting = _case()
    correcting.request_correction(COUNTY_HALL, ("社会保障卡",), "补齐")
    check(correcting)  # AWAITING_CORRECTION
    case = _case()
    check(case)  # RECEIVED
    case.accept(COUNTY_HALL)
    check(case)  # ACCEPTED
    case.start_handling(COUNTY_HALL)
    check(case)  # HANDLING
    case.decide(COUNTY_HALL, True, "符合条件")
    for closed in (case, _withdrawn()):
        with pytest.raises(TransitionRefused) as refused:
            check(closed)
        assert status_code_for(refused.value) is grpc.StatusCode.FAILED_PRECONDITION
    checked = [e for e in case.collect_events() if isinstance(e, Case.IdentityChecked)]
    assert len(checked) == 3


def _withdrawn() -> Case:
    case = _case()
    case.withdraw(COUNTY_HALL, "申请人撤回")
    return case


def test_the_refusal_names_the_check_in_its_reason_and_its_message() -> None:
    case = _case(M.LIVENESS)
    with pytest.raises(CheckMissing) as refused:
        case.accept(COUNTY_HALL)
    status = to_status(refused.value)
    assert status.message.endswith(
        "item 040323001000 requires the identity check LIVENESS, which has not passed"
    )
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain, info.metadata["check"]) == ("CheckMissing", "tongban",
                                                                  "LIVENESS")  # fmt: skip


def test_the_shipped_catalogue_has_two_items_requiring_a_yearly_proof_of_life() -> None:
    catalogue = Catalogue.load_default()
    requiring = {
        item.code: (item.required_checks, item.recurs_every_months)
        for item in catalogue
        if item.required_checks
    }
    assert requiring == {
        "040309001000": ((M.LIVENESS,), 12),  # 城乡居民养老保险待遇领取资格认证
        PENSION: ((M.LIVENESS,), 12),  # 企业职工基本养老保险待遇领取资格认证
    }


def test_the_event_records_exactly_the_checks_outcome() -> None:
    """``IdentityChecked`` holds who (the actor), when (its time) and the four signed fields:
    no field for a photo, a template or a score."""
    own = {f.name for f in dataclasses.fields(Case.IdentityChecked)} - {
        f.name for f in dataclasses.fields(Case.HallEvent)
    }
    assert own == {"method", "device_id", "result", "score_band"}
    assert {"actor", "timestamp"} <= {f.name for f in dataclasses.fields(Case.IdentityChecked)}


def _command(**body: object) -> case_exchange_pb2.Command:
    stamp = Timestamp()
    stamp.FromDatetime(datetime(2026, 3, 2, 9, tzinfo=UTC))
    return case_exchange_pb2.Command(
        header=case_exchange_pb2.CommandHeader(
            idempotency_key="check-0001",
            hall_id="c-hall",
            operator="op-c",
            region=COUNTY,
            issued_at=stamp,
            node="tongban/43",
        ),
        record_identity_check=case_exchange_pb2.RecordIdentityCheck(**body),  # type: ignore[arg-type]
    )


BODY = {
    "case_id": str(uuid4()),
    "method": common_pb2.IDENTITY_CHECK_METHOD_LIVENESS,
    "device_id": "app-7",
    "result": common_pb2.CHECK_RESULT_PASSED,
    "score_band": common_pb2.SCORE_BAND_HIGH,
}


def test_the_wire_command_parses_to_the_outcome_only() -> None:
    parsed = parse_command(_command(**BODY).SerializeToString(), "record_identity_check")
    action = parsed.action
    assert isinstance(action, RecordIdentityCheck)
    assert (action.method, action.result, action.score_band, action.device_id) == (
        M.LIVENESS, CheckResult.PASSED, ScoreBand.HIGH, "app-7",
    )  # fmt: skip
    # The message has no field for a score, a photo or a template.
    names = set(case_exchange_pb2.RecordIdentityCheck.DESCRIPTOR.fields_by_name)
    assert names == {"case_id", "method", "device_id", "result", "score_band"}


@pytest.mark.parametrize(
    "smuggled",
    [
        bytes([0x9A, 0x06, 4]) + b"\xff\xd8\xff\xe0",  # field 99, a JPEG's first bytes
        bytes([0x30, 0x5F]),  # field 6 (varint): a raw score of 95
    ],
)
def test_a_command_with_fields_the_node_does_not_know_is_refused(smuggled: bytes) -> None:
    """Signed bytes are stored as they are: unknown bytes (a photo, a raw score) are refused,
    never kept."""
    body = case_exchange_pb2.RecordIdentityCheck(**BODY)  # type: ignore[arg-type]
    tampered = case_exchange_pb2.RecordIdentityCheck.FromString(body.SerializeToString() + smuggled)
    command = _command(**BODY)
    command.record_identity_check.CopyFrom(tampered)
    with pytest.raises(InvalidInput) as refused:
        parse_command(command.SerializeToString(), "record_identity_check")
    assert refused.value.field == "command.record_identity_check"
    assert "nothing was stored" in str(refused.value)


def test_an_unspecified_method_result_or_band_is_refused_by_name() -> None:
    for name in ("method", "result", "score_band"):
        body = dict(BODY, **{name: 0})
        with pytest.raises(InvalidInput) as refused:
            parse_command(_command(**body).SerializeToString(), "record_identity_check")
        assert refused.value.field == f"command.record_identity_check.{name}"


def test_a_catalogue_naming_an_unknown_or_repeated_check_is_refused() -> None:
    entry = json.loads(
        json.dumps(next(i for i in json.loads(_shipped())["items"] if i["code"] == PENSION))
    )
    for checks, words in ((["PALM_PRINT"], "unknown value"), (["LIVENESS", "LIVENESS"], "twice")):
        entry["required_checks"] = checks
        with pytest.raises(ConfigurationError, match=words) as refused:
            Catalogue.from_json(json.dumps({"items": [entry]}), source="test")
        assert "required_checks" in str(refused.value)


def _shipped() -> str:
    from importlib import resources

    return (resources.files("hub.domain") / "data" / "service_items.json").read_text("utf-8")

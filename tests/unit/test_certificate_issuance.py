"""Issuing a certificate in the case's lifecycle: only on a concluded, approved certificate item,
only by the holding hall of the competent region; the identifier, region and holder follow from
the case (the holder is a commitment, never the ID number)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from factories import COUNTY, COUNTY_HALL, TOWNSHIP, TOWNSHIP_HALL, new_case

from hub.domain.case import Case, step_time
from hub.domain.certificates import CertificateIdentifier, serial_for
from hub.domain.regions import RegionCode
from hub.domain.values import Actor, CaseState
from hub.errors import InvalidInput, PermissionRefused, TransitionRefused

ISSUER = "11430902MB0000001X"


def _concluded(approved: bool = True, *, produces_certificate: bool = True) -> Case:
    case = new_case(actor=TOWNSHIP_HALL, produces_certificate=produces_certificate)
    case.accept(TOWNSHIP_HALL)
    case.start_handling(TOWNSHIP_HALL)
    case.decide(TOWNSHIP_HALL, approved=approved, reason="理由")
    case.conclude(TOWNSHIP_HALL)
    case.collect_events()
    return case


def test_an_approved_concluded_case_gets_its_certificate() -> None:
    case = _concluded()
    case.issue_certificate(TOWNSHIP_HALL, "150001", ISSUER, "资阳区民政局", "2099-12-31")
    (event,) = case.collect_events()
    assert isinstance(event, Case.CertificateIssued)
    assert case.state is CaseState.CERTIFICATE_ISSUED
    identifier = CertificateIdentifier.parse(event.certificate_id)
    assert identifier == CertificateIdentifier("150001", ISSUER, serial_for(case.id), "01")
    assert case.certificate_id == event.certificate_id
    assert event.region == TOWNSHIP
    # The holder is the salted commitment, never the ID number.
    assert event.holder == case.applicant.commitments.id_number  # type: ignore[union-attr]
    # Then it may be delivered.
    assert "deliver" in case.allowed_commands()


@pytest.mark.parametrize(
    ("setup", "error", "text"),
    [
        (lambda: _concluded(approved=False), TransitionRefused, "denied"),
        (lambda: _concluded(produces_certificate=False), TransitionRefused, "no certificate"),
    ],
)
def test_no_certificate_for_a_denied_case_or_an_item_without_one(
    setup: object, error: type[Exception], text: str
) -> None:
    case = setup()  # type: ignore[operator]
    with pytest.raises(error, match=text):
        case.issue_certificate(TOWNSHIP_HALL, "150001", ISSUER, "民政局", "")
    assert case.state is CaseState.CONCLUDED
    assert not case.collect_events()


def test_not_before_the_case_is_concluded() -> None:
    case = new_case(actor=TOWNSHIP_HALL)
    case.accept(TOWNSHIP_HALL)
    with pytest.raises(TransitionRefused):
        case.issue_certificate(TOWNSHIP_HALL, "150001", ISSUER, "民政局", "")


def test_only_a_hall_of_the_competent_region_issues() -> None:
    # A case handed to a county hall: the competent region is the township's.
    case = new_case(actor=TOWNSHIP_HALL, competent=TOWNSHIP)
    case.hand_off(TOWNSHIP_HALL, COUNTY_HALL.hall_id, RegionCode(COUNTY), "转")
    case.acknowledge_handoff(COUNTY_HALL)
    case.accept(COUNTY_HALL)
    # (the county cannot decide either, so let the state be set as if another hall had)
    case.state = CaseState.CONCLUDED
    case.approved = True
    case.collect_events()
    with pytest.raises(PermissionRefused, match="competent region"):
        case.issue_certificate(COUNTY_HALL, "150001", ISSUER, "民政局", "")
    assert not case.collect_events()


def test_only_the_holder_issues() -> None:
    case = _concluded()
    with pytest.raises(PermissionRefused):
        case.issue_certificate(Actor("other", "op", TOWNSHIP), "150001", ISSUER, "民政局", "")


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (("15001", ISSUER, "民政局", ""), "type_code"),
        (("150001", "11430902MB000001", "民政局", ""), "issuer_code"),
        (("150001", "11430902MB0000001I", "民政局", ""), "issuer_code"),
        (("150001", ISSUER, " ", ""), "authority"),
        (("150001", ISSUER, "民政局", "2099-13-01"), "valid_until"),
        (("150001", ISSUER, "民政局", "2000-01-01"), "valid_until"),
        (("150001", ISSUER, "民政局", "20990301"), "valid_until"),  # ISO, but not YYYY-MM-DD
        (("150001", ISSUER, "民政局", "2099-W09-6"), "valid_until"),
    ],
)
def test_bad_arguments_name_the_field_and_change_nothing(
    arguments: tuple[str, str, str, str], field: str
) -> None:
    case = _concluded()
    with pytest.raises(InvalidInput) as refused:
        case.issue_certificate(TOWNSHIP_HALL, *arguments)
    assert refused.value.field == field
    assert case.state is CaseState.CONCLUDED
    assert not case.collect_events()


def test_a_validity_ends_after_the_issue_day_in_china_standard_time() -> None:
    """Issued at 07:00 on 2026-03-16 in Beijing (still the 15th in UTC): valid until the 16th
    would end the day it was issued, and is refused; the 17th is the first day allowed."""
    issued_at = datetime(2026, 3, 16, 7, tzinfo=timezone(timedelta(hours=8)))
    for valid_until, allowed in (("2026-03-16", False), ("2026-03-17", True)):
        case = _concluded()
        with step_time(issued_at):
            if allowed:
                case.issue_certificate(TOWNSHIP_HALL, "150001", ISSUER, "民政局", valid_until)
            else:
                with pytest.raises(InvalidInput, match="after the issue date"):
                    case.issue_certificate(TOWNSHIP_HALL, "150001", ISSUER, "民政局", valid_until)
        assert case.state is (CaseState.CERTIFICATE_ISSUED if allowed else CaseState.CONCLUDED)

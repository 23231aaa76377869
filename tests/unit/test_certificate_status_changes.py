"""Suspending, reinstating and revoking a certificate in the case's lifecycle: only the hall
holding the case in the competent region, only on a certificate issued here; reinstate only
from suspended, revoked is final; a refusal records nothing."""

from __future__ import annotations

import pytest
from factories import COUNTY, COUNTY_HALL, TOWNSHIP, TOWNSHIP_HALL, new_case

from hub.domain.case import Case
from hub.domain.certificates import CertificateStatus
from hub.domain.regions import RegionCode
from hub.domain.values import Actor, CaseState, DeliveryMethod
from hub.errors import InvalidInput, PermissionRefused, TransitionRefused

ISSUER = "11430902MB0000001X"


def _issued() -> Case:
    case = new_case(actor=TOWNSHIP_HALL)
    case.accept(TOWNSHIP_HALL)
    case.start_handling(TOWNSHIP_HALL)
    case.decide(TOWNSHIP_HALL, approved=True, reason="理由")
    case.conclude(TOWNSHIP_HALL)
    case.issue_certificate(TOWNSHIP_HALL, "150001", ISSUER, "资阳区民政局", "")
    case.collect_events()
    return case


def test_suspend_reinstate_revoke_and_revoked_is_final() -> None:
    case = _issued()
    assert case.certificate_status is CertificateStatus.VALID
    case.suspend_certificate(TOWNSHIP_HALL, "核查")
    assert case.certificate_status is CertificateStatus.SUSPENDED
    case.reinstate_certificate(TOWNSHIP_HALL, "核查完毕")
    assert case.certificate_status is CertificateStatus.VALID
    case.deliver(TOWNSHIP_HALL, DeliveryMethod.WINDOW, "")  # the case goes on meanwhile
    case.suspend_certificate(TOWNSHIP_HALL, "再次核查")
    case.revoke_certificate(TOWNSHIP_HALL, "以欺骗手段取得")
    events = case.collect_events()
    assert [type(e) for e in events] == [
        Case.CertificateSuspended, Case.CertificateReinstated, Case.Delivered,
        Case.CertificateSuspended, Case.CertificateRevoked,
    ]  # fmt: skip
    assert case.certificate_status is CertificateStatus.REVOKED
    assert case.state is CaseState.DELIVERED  # the case's own state is untouched
    for command in ("reinstate_certificate", "suspend_certificate", "revoke_certificate"):
        with pytest.raises(TransitionRefused, match="revoked"):
            getattr(case, command)(TOWNSHIP_HALL, "再来")
    assert not case.collect_events()


def test_reinstate_only_from_suspended() -> None:
    case = _issued()
    with pytest.raises(TransitionRefused, match="the certificate is valid"):
        case.reinstate_certificate(TOWNSHIP_HALL, "恢复")
    case.suspend_certificate(TOWNSHIP_HALL, "核查")
    with pytest.raises(TransitionRefused, match="suspended"):
        case.suspend_certificate(TOWNSHIP_HALL, "再暂停")
    assert len(case.collect_events()) == 1


def test_only_the_holding_hall_of_the_competent_region() -> None:
    case = _issued()
    with pytest.raises(PermissionRefused, match="does not hold"):
        case.revoke_certificate(Actor("other", "op", TOWNSHIP), "撤销")
    # A holder outside the competent region (set up as the issuance test does).
    handed = new_case(actor=TOWNSHIP_HALL, competent=TOWNSHIP)
    handed.hand_off(TOWNSHIP_HALL, COUNTY_HALL.hall_id, RegionCode(COUNTY), "转")
    handed.acknowledge_handoff(COUNTY_HALL)
    handed.state, handed.certificate_status = CaseState.DELIVERED, CertificateStatus.VALID
    handed.collect_events()
    with pytest.raises(PermissionRefused, match="competent region"):
        handed.revoke_certificate(COUNTY_HALL, "撤销")
    assert not case.collect_events() and not handed.collect_events()


def test_no_status_change_without_an_issued_certificate() -> None:
    recorded = new_case(actor=TOWNSHIP_HALL)
    for step in ("accept", "start_handling"):
        getattr(recorded, step)(TOWNSHIP_HALL)
    recorded.decide(TOWNSHIP_HALL, approved=True, reason="理由")
    with pytest.raises(TransitionRefused):
        recorded.revoke_certificate(TOWNSHIP_HALL, "撤销")  # not even concluded
    recorded.conclude(TOWNSHIP_HALL)
    recorded.record_certificate(TOWNSHIP_HALL, "C-1")  # issued elsewhere: not ours to revoke
    recorded.collect_events()
    with pytest.raises(TransitionRefused, match="no certificate was issued here"):
        recorded.revoke_certificate(TOWNSHIP_HALL, "撤销")
    assert not recorded.collect_events()


def test_the_reason_is_required_and_named() -> None:
    case = _issued()
    with pytest.raises(InvalidInput) as refused:
        case.suspend_certificate(TOWNSHIP_HALL, " ")
    assert refused.value.field == "reason"
    assert case.certificate_status is CertificateStatus.VALID and not case.collect_events()

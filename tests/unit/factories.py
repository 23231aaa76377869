"""Builders for domain objects used across the unit tests (plain functions, no I/O)."""

from __future__ import annotations

import hashlib
from uuid import UUID, uuid4

from hub.domain.case import Case
from hub.domain.regions import RegionCode
from hub.domain.values import (
    Actor,
    ApplicantCommitments,
    CaseKind,
    CrossRegionMode,
    Material,
    SealedApplicant,
)

VILLAGE = "430902104201"
TOWNSHIP = "430902104000"
COUNTY = "430902000000"
CITY = "430900000000"

VILLAGE_HALL = Actor("v-room", "op-v", VILLAGE)
TOWNSHIP_HALL = Actor("t-hall", "op-t", TOWNSHIP)
COUNTY_HALL = Actor("c-hall", "op-c", COUNTY)
OTHER_COUNTY_DEPT = Actor("c-dept", "op-d", COUNTY)


def material(name: str = "居民身份证", content: bytes = b"scan") -> Material:
    """A material referenced by the digest of ``content``."""
    return Material(name, hashlib.sha256(content).hexdigest(), "application/pdf", 1024)


def applicant() -> SealedApplicant:
    """An applicant as a case stores it: commitments (and, here, no ciphertext)."""
    digest = hashlib.sha256(b"commitment").hexdigest()
    return SealedApplicant(ApplicantCommitments(digest, digest, digest), b"")


def new_case(
    *,
    actor: Actor = VILLAGE_HALL,
    kind: CaseKind = CaseKind.PROMISED,
    competent: str = TOWNSHIP,
    produces_certificate: bool = True,
    case_id: UUID | None = None,
) -> Case:
    """A freshly submitted case (not saved)."""
    return Case.submit(
        case_id=case_id or uuid4(),
        actor=actor,
        item_code="200202001000",
        item_name="老年人优待证办理",
        kind=kind,
        mode=CrossRegionMode.LOCAL,
        intake_region=RegionCode(actor.region),
        competent_region=RegionCode(competent),
        applicant=applicant(),
        materials=(material(),),
        promised_days=5,
        statutory_days=20,
        produces_certificate=produces_certificate,
    )

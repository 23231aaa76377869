"""The domain's value objects check themselves when made: each refusal names the field, and a
refusal about personal data never carries the value (it reaches callers and logs)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hub.domain.values import (
    MAX_MATERIAL_BYTES,
    MAX_PERSONAL_CHARS,
    Actor,
    AgentAuthorisation,
    AgentRole,
    Applicant,
    ApplicantCommitments,
    JointTask,
    Material,
    id_number_with_check,
)
from hub.errors import InvalidInput

ID_NUMBER = id_number_with_check("61092919900101002")
WRONG_CHECK = ID_NUMBER[:-1] + ("1" if ID_NUMBER[-1] != "1" else "2")
DIGEST = "ab" * 32


@pytest.mark.parametrize(
    ("make", "field", "reason"),
    [
        (lambda: Applicant("  ", ID_NUMBER, "13800000000"), "applicant.name", "must not be empty"),
        (lambda: Applicant("张" * (MAX_PERSONAL_CHARS + 1), ID_NUMBER, "13800000000"),
         "applicant.name", f"at most {MAX_PERSONAL_CHARS} characters"),
        (lambda: Applicant("张三", ID_NUMBER, "1" * (MAX_PERSONAL_CHARS + 1)),
         "applicant.phone", f"at most {MAX_PERSONAL_CHARS} characters"),
        (lambda: Applicant("张三", "61092919900101", "13800000000"), "applicant.id_number",
         "must be an 18-character resident ID number"),
        (lambda: Applicant("张三", WRONG_CHECK, "13800000000"), "applicant.id_number",
         "check character does not match (GB 11643)"),
        (lambda: AgentAuthorisation(agent_id="a", role=AgentRole.ACTING, witness_role="村委会主任",
                                    witness_commitment="张三的证人"),
         "agent.witness_commitment", "a commitment is 64 lowercase hex"),
    ],
)  # fmt: skip
def test_personal_values_are_refused_naming_the_field_never_the_value(
    make: Callable[[], object], field: str, reason: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        make()
    assert (refused.value.field, refused.value.reason) == (field, reason)
    assert refused.value.value == "<redacted>"
    for personal in ("张", ID_NUMBER[:14], "138000", "证人"):
        assert personal not in str(refused.value)


@pytest.mark.parametrize(
    ("make", "field", "reason"),
    [
        (lambda: Actor("", "王芳", "430902104000"), "actor.hall_id", "must not be empty"),
        (lambda: Actor("hn-shatou-town", "", "430902104000"), "actor.operator", "must not be empty"),
        (lambda: AgentAuthorisation(role=AgentRole.GUIDING), "agent.agent_id",
         "name the agent this authorisation is for"),
        (lambda: AgentAuthorisation(agent_id="代办 1", role=AgentRole.ACTING,
                                    letter_sha256=DIGEST),
         "agent.agent_id", "1-64 letters, digits, . _ -"),
        (lambda: AgentAuthorisation(agent_id="a1", letter_sha256=DIGEST), "agent.role",
         "帮办 (GUIDING) or 代办 (ACTING)"),
        (lambda: AgentAuthorisation(agent_id="a1", role=AgentRole.ACTING), "agent.letter_sha256",
         "give exactly one authorisation: a 委托书's digest, or an oral one's witness"),
        (lambda: AgentAuthorisation(agent_id="a1", role=AgentRole.ACTING, letter_sha256=DIGEST,
                                    witness_role="村委会主任", witness_commitment=DIGEST),
         "agent.letter_sha256", "give exactly one authorisation"),
        (lambda: AgentAuthorisation(agent_id="a1", role=AgentRole.ACTING, letter_sha256="AB"),
         "agent.letter_sha256", "64 lowercase hex"),
        (lambda: AgentAuthorisation(agent_id="a1", role=AgentRole.ACTING,
                                    witness_commitment=DIGEST),
         "agent.witness_role", "the witness's role (e.g. 村委会主任)"),
        (lambda: ApplicantCommitments(DIGEST, DIGEST, "00"), "applicant.phone",
         "a commitment is 32 bytes (SHA-256)"),
        (lambda: Material(" ", DIGEST, "application/pdf", 1), "material.name", "must not be empty"),
        (lambda: Material("户口簿", DIGEST.upper(), "application/pdf", 1), "material.sha256",
         "must be 64 lowercase hex digits (SHA-256)"),
        (lambda: Material("户口簿", DIGEST, "pdf", 1), "material.media_type", "not a media type"),
        (lambda: Material("户口簿", DIGEST, "application/pdf", 0), "material.size",
         "an empty material is not accepted"),
        (lambda: Material("户口簿", DIGEST, "application/pdf", MAX_MATERIAL_BYTES + 1),
         "material.size", f"larger than the limit of {MAX_MATERIAL_BYTES} bytes"),
        (lambda: JointTask("", "hb-wuhan@420100000000", "社保"), "joint_task.task_id",
         "must not be empty"),
        (lambda: JointTask("t1", "hb-wuhan@420100000000", " "), "joint_task.department",
         "must not be empty"),
    ],
)  # fmt: skip
def test_values_are_refused_naming_the_field(
    make: Callable[[], object], field: str, reason: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        make()
    assert refused.value.field == field
    assert refused.value.reason.startswith(reason)


def test_valid_values_are_made() -> None:
    assert Applicant("张三", ID_NUMBER, "13800000000").id_number.endswith(ID_NUMBER[-1])
    assert not AgentAuthorisation()  # no agent
    oral = AgentAuthorisation(
        agent_id="hn-agent-01",
        role=AgentRole.ACTING,
        witness_role="村委会主任",
        witness_commitment=DIGEST,
    )
    assert oral and oral.witness_role == "村委会主任"
    assert Material("户口簿", DIGEST, "application/pdf", MAX_MATERIAL_BYTES).size

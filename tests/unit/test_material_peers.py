"""Which peer may fetch a case's materials (docs/materials.md): a peer keeping one of the regions
the case touches — its competent region, or that of another node's hall the case was handed to
or given a 联办 task — and no other."""

from __future__ import annotations

from factories import COUNTY, COUNTY_HALL, new_case

from hub.api.materials import decided_by
from hub.domain.values import CaseKind, JointTask


def test_the_competent_region_and_every_tasked_region_share_a_case() -> None:
    case = new_case(actor=COUNTY_HALL, competent=COUNTY, kind=CaseKind.JOINT)
    case.accept(COUNTY_HALL)
    case.start_handling(COUNTY_HALL)
    assert decided_by(case, "43") and not decided_by(case, "42")
    case.open_joint_tasks(
        COUNTY_HALL,
        (JointTask("pension", "hb-wuhan@420100000000", "社保"), JointTask("tax", "tax", "税务")),
    )
    assert decided_by(case, "42")  # 湖北 keeps the hall given a task
    assert decided_by(case, "4201")
    assert not decided_by(case, "61")  # 陕西 has no part in it
    assert not decided_by(case, "4202")

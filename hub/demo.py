"""The seed story inside one province (湖南省), run on the embedded default store.

Four cases, each step a command signed by the acting hall's own key and checked by the node
exactly as one arriving over gRPC, printed with the case state rebuilt from the stored events:

1. a villager's application at a village service room of 沙头镇 (430902104, 资阳区, 益阳市), handed
   to the township hall, decided and concluded there;
2. a 最低生活保障 application escalated from the village to the county;
3. a joint case (企业开办“一件事”) across two county departments;
4. a 户口迁移 application with a correction: the clock pauses until the resubmission;
5. 沙头镇's 代办员: an agent's home visit to a pensioner for the yearly 生存认证, taken offline
   (signed at the pensioner's home, forwarded later as deferred commands), and an agent-run case
   handled at the township with the applicant's 委托书.

The halls are registered by the node's admin with signed admin commands, each with a fresh
signing key (a re-run on a kept store rotates the existing halls' keys).
"""

from __future__ import annotations

import hashlib
import os
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tongban.v1 import common_pb2

from hub.application.hub import HubApplication
from hub.bootstrap import public_key_b64
from hub.commands.signing import CommandSigner
from hub.domain.case import Case
from hub.domain.commitments import commitment
from hub.domain.hall import key_id
from hub.domain.regions import RegionCode
from hub.domain.values import Applicant, id_number_with_check
from hub.errors import AlreadyExists, NotFound, TongbanError

Printer = Callable[[str], None]

VILLAGE = "430902104201"  # a villagers' committee of 沙头镇
TOWNSHIP = "430902104000"  # 沙头镇
COUNTY = "430902000000"  # 资阳区


@dataclass(frozen=True)
class DemoHall:
    """A hall the demo registers."""

    hall_id: str
    name: str
    region: str
    windows: tuple[str, ...]


HALLS = (
    DemoHall("hn-shatou-v201", "沙头镇201村便民服务室", VILLAGE, ("代办窗口",)),
    DemoHall("hn-shatou-town", "沙头镇政务服务中心", TOWNSHIP, ("综合窗口1", "综合窗口2")),
    DemoHall("hn-ziyang-hall", "资阳区政务服务中心", COUNTY, ("综合窗口", "出件窗口")),
    DemoHall("hn-ziyang-amr", "资阳区市场监督管理局窗口", COUNTY, ("登记窗口",)),
    DemoHall("hn-ziyang-tax", "资阳区税务局窗口", COUNTY, ("办税窗口",)),
)


def _material(name: str, content: str) -> common_pb2.Material:
    data = content.encode("utf-8")
    return common_pb2.Material(
        name=name,
        sha256=hashlib.sha256(data).hexdigest(),
        media_type="application/pdf",
        size=len(data) * 1000,
    )


class Story:
    """Runs each hall's signed commands through the node and prints each step."""

    def __init__(self, app: HubApplication, out: Printer) -> None:
        self.app = app
        self.out = out

    def step(self, label: str, hall: CommandSigner, action: str, **fields: Any) -> UUID:
        """Sign and run one command; print the state rebuilt from the store."""
        result = self.app.execute(hall.sign(action, **fields), expected=action)
        case = self.app.get_case(result.case_id)
        self.out(f"  · {_pad(label, 34)} → {describe(case)}")
        return result.case_id

    def history(self, case_id: UUID) -> None:
        """Print the stored events of a case (with the agent who acted for the applicant)."""
        self.out("    stored events (replayed from the event store):")
        for event in self.app.case_history(case_id):
            actor = getattr(event, "actor", None)
            who = f"{actor.hall_id}/{actor.operator}" if actor else ""
            if actor is not None and actor.agent:
                who += f" 代办员 {actor.agent}"
            name = type(event).__name__
            stamp = event.timestamp.strftime("%H:%M:%S.%f")[:-3]
            self.out(f"      v{event.originator_version:<2} {stamp} {name:<22} {who}")


def _pad(text: str, width: int) -> str:
    """Left-justify for a terminal, where a CJK character takes two columns."""
    columns = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    return text + " " * max(0, width - columns)


def describe(case: Case) -> str:
    """One line: state, holder, clock."""
    clock = "running" if case.clock_running else "paused" if case.paused_since else "stopped"
    extra = f" → {case.pending_receiver}" if case.pending_receiver else ""
    paused = f", paused {case.paused_seconds:.1f}s so far" if case.paused_seconds else ""
    return f"{case.state.name:<19} holder={case.holder}{extra}  clock {clock}{paused}"


def register_halls(app: HubApplication, admin: CommandSigner, out: Printer) -> list[CommandSigner]:
    """Register the demo's halls (or rotate their keys on a kept store); their signers."""
    signers = []
    regions = app.regions
    for number, hall in enumerate(HALLS, 1):
        key = Ed25519PrivateKey.generate()
        public = public_key_b64(key)
        try:
            app.get_hall(hall.hall_id)
        except NotFound:
            app.execute(
                admin.sign(
                    "register_hall",
                    hall_id=hall.hall_id,
                    name=hall.name,
                    region=hall.region,
                    windows=list(hall.windows),
                    public_key=public,
                )
            )
        else:
            app.execute(admin.sign("rotate_hall_key", hall_id=hall.hall_id, public_key=public))
        level = RegionCode(hall.region).level
        place = regions.full_name(RegionCode(hall.region))
        out(f"  {hall.hall_id:<16} {hall.name} ({level.label}) — {place}")
        signers.append(
            CommandSigner(
                key,
                node=app.policy.origin,
                operator=f"op-{number}",
                hall_id=hall.hall_id,
                region=hall.region,
            )
        )
    return signers


def run_demo(
    app: HubApplication, admin: CommandSigner, out: Printer = print, pause_seconds: float = 1.0
) -> list[UUID]:
    """Run the seed story against ``app``, the halls registered by ``admin``; the four cases."""
    story = Story(app, out)
    regions = app.regions
    out(f"Tongban demo — node for {regions.full_name(RegionCode.parse('43'))}")
    out(f"region codes: edition {regions.edition}; catalogue: {len(app.catalogue)} items\n")
    out("Halls (registered by the node's admin, each with its own signing key)")
    village, township, county, amr, tax = register_halls(app, admin, out)
    applicant = Applicant("李秀英", id_number_with_check("43090219560312002"), "13807370001")
    ids = [
        _village_to_township(story, village, township, applicant),
        _escalation(story, village, county, applicant, pause_seconds),
        _joint_case(story, county, amr, tax),
        _correction(story, county, pause_seconds),
        *_agents(story, village, township, county),
    ]
    out("\nEvery state above was rebuilt from the stored events after each command.")
    return ids


def _village_to_township(
    story: Story, village: CommandSigner, township: CommandSigner, applicant: Applicant
) -> UUID:
    item = story.app.catalogue.get("200202001000")
    story.out(f"\n1. {item.name}: taken in at the village, handled and concluded at the township")
    case_id = story.step(
        "收件 at the village service room", village, "submit",
        item_code=item.code, applicant=applicant, competent_region=TOWNSHIP,
        materials=[_material("居民身份证", "id"), _material("一寸照片", "photo")],
    )  # fmt: skip
    case = str(case_id)
    story.step("转办 to the township hall", village, "hand_off", case_id=case,
               to_hall=township.hall_id, reason="代办: 村级代收, 乡镇办理")  # fmt: skip
    story.step("township acknowledges", township, "acknowledge_handoff", case_id=case)
    story.step("受理", township, "accept", case_id=case)
    story.step("承办", township, "start_handling", case_id=case)
    story.step("决定: 准予", township, "decide", case_id=case, approved=True,
               reason="年满60周岁, 材料齐全")  # fmt: skip
    story.step("办结", township, "conclude", case_id=case)
    story.step("制证", township, "record_certificate", case_id=case,
               certificate_id=f"HN-LNYDZ-{case_id.hex[:10].upper()}")  # fmt: skip
    story.step("送达 at the window", township, "deliver", case_id=case,
               method=common_pb2.DELIVERY_METHOD_WINDOW)  # fmt: skip
    story.step("好差评: 非常满意", township, "rate", case_id=case,
               rating=common_pb2.RATING_VERY_SATISFIED, comment="在村里就能申请")  # fmt: skip
    story.step("归档", township, "archive", case_id=case)
    story.history(case_id)
    return case_id


def _escalation(
    story: Story,
    village: CommandSigner,
    county: CommandSigner,
    applicant: Applicant,
    pause_seconds: float,
) -> UUID:
    item = story.app.catalogue.get("040312001000")
    story.out(f"\n2. {item.name}: taken in at the village, escalated (上报) to the county")
    case_id = story.step(
        "收件 at the village service room", village, "submit",
        item_code=item.code, applicant=applicant,
        materials=[_material("低保申请书", "form"), _material("家庭收入说明", "income")],
    )  # fmt: skip
    case = str(case_id)
    story.step("受理", village, "accept", case_id=case)
    story.step("承办: 村级初审", village, "start_handling", case_id=case)
    story.step("上报 to 资阳区", village, "escalate", case_id=case, to_hall=county.hall_id,
               reason="低保由县级民政部门审核确认")  # fmt: skip
    story.step("county acknowledges", county, "acknowledge_handoff", case_id=case)
    story.step("特别程序: 公示 (clock paused)", county, "suspend", case_id=case,
               reason=common_pb2.SUSPENSION_REASON_PUBLIC_NOTICE,
               note="村务公开栏公示7天")  # fmt: skip
    time.sleep(pause_seconds)
    story.step("公示 ends (clock resumes)", county, "resume", case_id=case)
    story.step("决定: 准予", county, "decide", case_id=case, approved=True,
               reason="家庭人均收入低于当地低保标准")  # fmt: skip
    story.step("办结", county, "conclude", case_id=case)
    if story.app.get_case(case_id).produces_certificate:
        story.step("制证", county, "record_certificate", case_id=case,
                   certificate_id=f"HN-DB-{case_id.hex[:10].upper()}")  # fmt: skip
    story.step("送达 by post", county, "deliver", case_id=case,
               method=common_pb2.DELIVERY_METHOD_POST, note="邮寄至申请人")  # fmt: skip
    story.history(case_id)
    return case_id


def _joint_case(
    story: Story, county: CommandSigner, amr: CommandSigner, tax: CommandSigner
) -> UUID:
    item = story.app.catalogue.get("200319001000YJS01")
    story.out(f"\n3. {item.name}: a joint case across two county departments")
    applicant = Applicant("王建国", id_number_with_check("43090219850706001"), "13907370002")
    case_id = story.step(
        "收件 at the county hall", county, "submit", item_code=item.code, applicant=applicant,
        materials=[_material("企业开办申请表", "company"), _material("住所证明", "address")],
    )  # fmt: skip
    case = str(case_id)
    story.step("受理", county, "accept", case_id=case)
    story.step("承办", county, "start_handling", case_id=case)
    tasks = [
        common_pb2.JointTask(
            task_id="amr-register", hall_id=amr.hall_id, department="市场监督管理局: 设立登记"
        ),
        common_pb2.JointTask(
            task_id="tax-invoice", hall_id=tax.hall_id, department="税务局: 发票申领"
        ),
    ]
    story.step("联办: open two department tasks", county, "open_joint_tasks", case_id=case,
               tasks=tasks)  # fmt: skip
    story.step("市场监管 completes its task", amr, "complete_joint_task", case_id=case,
               task_id="amr-register", approved=True, note="营业执照已核准")  # fmt: skip
    story.step("税务 completes its task (joined)", tax, "complete_joint_task", case_id=case,
               task_id="tax-invoice", approved=True, note="发票已核定")  # fmt: skip
    story.step("决定: 准予", county, "decide", case_id=case, approved=True,
               reason="各部门办理完毕")  # fmt: skip
    story.step("办结", county, "conclude", case_id=case)
    if story.app.get_case(case_id).produces_certificate:
        story.step("制证", county, "record_certificate", case_id=case,
                   certificate_id=f"HN-YYZZ-{case_id.hex[:10].upper()}")  # fmt: skip
    story.step("送达 online", county, "deliver", case_id=case,
               method=common_pb2.DELIVERY_METHOD_ONLINE)  # fmt: skip
    story.history(case_id)
    return case_id


def _correction(story: Story, county: CommandSigner, pause_seconds: float) -> UUID:
    item = story.app.catalogue.get("070303001000")
    story.out(f"\n4. {item.name}: a correction (补正) pauses the clock")
    applicant = Applicant("赵敏", id_number_with_check("43090219920214002"), "13707370003")
    case_id = story.step(
        "收件 at the county hall", county, "submit", item_code=item.code, applicant=applicant,
        materials=[_material("居民身份证", "id2")],
    )  # fmt: skip
    case = str(case_id)
    story.step("一次性告知: 2 materials missing", county, "request_correction", case_id=case,
               missing=["居民户口簿", "准予迁入证明"], notice="请一次性补齐以下材料")  # fmt: skip
    time.sleep(pause_seconds)
    story.step("补正: materials resubmitted", county, "resubmit", case_id=case,
               materials=[_material("居民户口簿", "hukou"),
                          _material("准予迁入证明", "permit")])  # fmt: skip
    story.step("承办", county, "start_handling", case_id=case)
    story.step("决定: 准予", county, "decide", case_id=case, approved=True,
               reason="符合迁入条件")  # fmt: skip
    story.step("办结", county, "conclude", case_id=case)
    found: Case = story.app.get_case(case_id)
    story.out(
        f"    supervision clock counted {found.clock_seconds(found.modified_on):.2f}s; the "
        f"{found.paused_seconds:.2f}s spent awaiting correction were not counted"
    )
    story.history(case_id)
    return case_id


#: The 代办员 of the demo: one of 沙头镇201村's village agents, and one at the township hall.
VILLAGE_AGENT = "dby-v201-01"
TOWNSHIP_AGENT = "dby-town-03"


def _register_agent(
    story: Story,
    hall: CommandSigner,
    agent_id: str,
    person: Applicant,
    key: Ed25519PrivateKey | None = None,
) -> str:
    """Register an agent (with ``key``: one who signs their own steps with it); the id used."""
    public_key = public_key_b64(key) if key is not None else ""
    try:
        story.app.execute(
            hall.sign("register_agent", agent_id=agent_id, person=person, public_key=public_key)
        )
    except AlreadyExists:
        if key is not None:
            # A re-run on a kept store: the first run's agent signs with a key this run does
            # not have (it was never written down), so this run's agent gets an id of its own.
            return _register_agent(story, hall, f"{agent_id}-{os.urandom(2).hex()}", person, key)
    signs = (
        f"signs with a key of their own, {key_id(public_key)}"
        if key is not None
        else "acts under the hall's key"
    )
    story.out(f"  · 代办员 {agent_id} registered at {hall.hall_id} (personal data sealed; {signs})")
    return agent_id


def _agents(
    story: Story, village: CommandSigner, township: CommandSigner, county: CommandSigner
) -> list[UUID]:
    story.out("\n5. 沙头镇's 代办员 (agents acting for applicants)")
    # The village agent carries a phone with a key of their own: every step they take at a
    # home is signed by them, not by the room.
    agent_key = Ed25519PrivateKey.generate()
    village_agent = _register_agent(
        story,
        village,
        VILLAGE_AGENT,
        Applicant("刘代办", id_number_with_check("43090219780505001"), "13907370011"),
        agent_key,
    )
    _register_agent(
        story,
        township,
        TOWNSHIP_AGENT,
        Applicant("陈代办", id_number_with_check("43090219820909002"), "13907370012"),
    )
    return [
        _home_visit(story, village, county, village_agent, agent_key),
        _agent_at_township(story, township),
    ]


def _home_visit(
    story: Story,
    village: CommandSigner,
    county: CommandSigner,
    agent_id: str,
    agent_key: Ed25519PrivateKey,
) -> UUID:
    item = story.app.catalogue.get("040323001000")
    story.out(
        f"  5a. {item.name}: a home visit (上门办) with a 生存认证, taken offline at the "
        "pensioner's home and forwarded when the agent is back in range"
    )
    pensioner = Applicant("周爷爷", id_number_with_check("43090219400303001"), "13707370021")
    # The witness of the oral authorisation: the node gets a salted commitment to the name only.
    witness = commitment("submit.agent.witness", os.urandom(32), "张主任").hex()
    visited = story.app.clock() - timedelta(hours=3)  # signed at the home, 3 hours ago
    offline: dict[str, Any] = {
        "deferred": True,
        "acting_agent": agent_id,
        "agent_key": agent_key,
    }
    case_id = story.step(
        "收件 at the home (oral authorisation)", village, "submit", item_code=item.code,
        applicant=pensioner, materials=[_material("社会保障卡", "sscard")],
        channel=common_pb2.INTAKE_CHANNEL_HOME_VISIT,
        agent=common_pb2.AgentAuthorisation(
            agent_id=agent_id, role=common_pb2.AGENT_ROLE_ACTING,
            witness_role="村委会主任", witness_commitment=witness,
        ),
        issued_at=visited, **offline,
    )  # fmt: skip
    case = str(case_id)
    try:
        village_accept = village.sign("accept", case_id=case, issued_at=visited, **offline)
        story.app.execute(village_accept)
    except TongbanError as refused:
        story.out(f"  · 受理 before the 生存认证 is refused: {refused}")
    story.step("生存认证 with the room's phone app", village, "record_identity_check",
               case_id=case, method=common_pb2.IDENTITY_CHECK_METHOD_LIVENESS,
               device_id="sb-app-0042", result=common_pb2.CHECK_RESULT_PASSED,
               score_band=common_pb2.SCORE_BAND_HIGH,
               issued_at=visited + timedelta(minutes=5), **offline)  # fmt: skip
    story.step("受理 (forwarded, deferred)", village, "accept", case_id=case,
               issued_at=visited + timedelta(minutes=6), **offline)  # fmt: skip
    story.step("转办 to the county's 社保 window", village, "hand_off", case_id=case,
               to_hall=county.hall_id, reason="县级社会保险经办机构认定",
               issued_at=visited + timedelta(minutes=7), **offline)  # fmt: skip
    story.step("county acknowledges", county, "acknowledge_handoff", case_id=case)
    story.step("决定: 认证通过", county, "decide", case_id=case, approved=True,
               reason="生存认证通过, 继续发放养老金")  # fmt: skip
    story.step("办结", county, "conclude", case_id=case)
    story.step("送达 online", county, "deliver", case_id=case,
               method=common_pb2.DELIVERY_METHOD_ONLINE)  # fmt: skip
    story.history(case_id)
    return case_id


def _agent_at_township(story: Story, township: CommandSigner) -> UUID:
    item = story.app.catalogue.get("200202001000")
    story.out(f"  5b. {item.name}: an agent-run case (代办, with a signed 委托书) at the township")
    elder = Applicant("吴奶奶", id_number_with_check("43090219450808002"), "13707370022")
    letter = _material("委托书", "letter")
    by_agent: dict[str, Any] = {"acting_agent": TOWNSHIP_AGENT}
    case_id = story.step(
        "收件 by the agent at the window", township, "submit", item_code=item.code,
        applicant=elder, materials=[_material("居民身份证", "id-wu"), letter],
        channel=common_pb2.INTAKE_CHANNEL_AGENT, window="综合窗口1",
        agent=common_pb2.AgentAuthorisation(
            agent_id=TOWNSHIP_AGENT, role=common_pb2.AGENT_ROLE_ACTING,
            letter_sha256=letter.sha256,
        ),
        **by_agent,
    )  # fmt: skip
    case = str(case_id)
    story.step("受理", township, "accept", case_id=case)
    story.step("承办", township, "start_handling", case_id=case)
    story.step("决定: 准予", township, "decide", case_id=case, approved=True,
               reason="年满60周岁, 委托书齐全")  # fmt: skip
    story.step("办结", township, "conclude", case_id=case)
    story.step("制证", township, "record_certificate", case_id=case,
               certificate_id=f"HN-LNYDZ-{case_id.hex[:10].upper()}")  # fmt: skip
    story.step("送达: the agent collects it", township, "deliver", case_id=case,
               method=common_pb2.DELIVERY_METHOD_WINDOW, note="代办员代领", **by_agent)  # fmt: skip
    story.history(case_id)
    return case_id

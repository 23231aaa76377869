"""The seed story inside one province (湖南省), run on the embedded default store.

Four cases, each step printed with the case state rebuilt from the stored events:

1. a villager's application at a village service room of 沙头镇 (430902104, 资阳区, 益阳市), handed
   to the township hall, decided and concluded there;
2. a 最低生活保障 application escalated from the village to the county;
3. a joint case (企业开办“一件事”) across two county departments;
4. a 户口迁移 application with a correction: the clock pauses until the resubmission.
"""

from __future__ import annotations

import base64
import hashlib
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.application.hub import HubApplication
from hub.application.idempotency import CommandResult
from hub.domain.case import Case
from hub.domain.regions import RegionCode
from hub.domain.values import (
    Actor,
    Applicant,
    DeliveryMethod,
    JointTask,
    Material,
    Rating,
    SuspensionReason,
    id_number_with_check,
)
from hub.errors import NotFound

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

    def actor(self, operator: str) -> Actor:
        """This hall acting through ``operator``."""
        return Actor(self.hall_id, operator, self.region)


HALLS = (
    DemoHall("hn-shatou-v201", "沙头镇201村便民服务室", VILLAGE, ("代办窗口",)),
    DemoHall("hn-shatou-town", "沙头镇政务服务中心", TOWNSHIP, ("综合窗口1", "综合窗口2")),
    DemoHall("hn-ziyang-hall", "资阳区政务服务中心", COUNTY, ("综合窗口", "出件窗口")),
    DemoHall("hn-ziyang-amr", "资阳区市场监督管理局窗口", COUNTY, ("登记窗口",)),
    DemoHall("hn-ziyang-tax", "资阳区税务局窗口", COUNTY, ("办税窗口",)),
)


def _public_key() -> str:
    raw = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode("ascii")


def _material(name: str, content: str) -> Material:
    data = content.encode("utf-8")
    return Material(name, hashlib.sha256(data).hexdigest(), "application/pdf", len(data) * 1000)


class Story:
    """Runs commands with fresh idempotency keys and prints each step."""

    def __init__(self, app: HubApplication, out: Printer) -> None:
        self.app = app
        self.out = out
        self._counter = 0

    def key(self) -> str:
        """A fresh idempotency key, as a hall system would generate."""
        self._counter += 1
        return f"demo-{time.time_ns()}-{self._counter:04d}"

    def step(self, label: str, run: Callable[[str], CommandResult]) -> UUID:
        """Run one command and print the state rebuilt from the store."""
        result = run(self.key())
        case = self.app.get_case(result.case_id)
        self.out(f"  · {_pad(label, 34)} → {describe(case)}")
        return result.case_id

    def history(self, case_id: UUID) -> None:
        """Print the stored events of a case."""
        self.out("    stored events (replayed from the event store):")
        for event in self.app.case_history(case_id):
            actor = getattr(event, "actor", None)
            who = f"{actor.hall_id}/{actor.operator}" if actor else ""
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


def run_demo(app: HubApplication, out: Printer = print, pause_seconds: float = 1.0) -> list[UUID]:
    """Run the seed story against ``app``; returns the ids of the four cases."""
    story = Story(app, out)
    regions = app.regions
    out(f"Tongban demo — node for {regions.full_name(RegionCode.parse('43'))}")
    out(f"region codes: edition {regions.edition}; catalogue: {len(app.catalogue)} items\n")

    out("Halls")
    for hall in HALLS:
        try:
            app.get_hall(hall.hall_id)
        except NotFound:
            app.register_hall(
                hall_id=hall.hall_id,
                name=hall.name,
                region=hall.region,
                windows=hall.windows,
                public_key=_public_key(),
            )
        level = RegionCode(hall.region).level
        place = regions.full_name(RegionCode(hall.region))
        out(f"  {hall.hall_id:<16} {hall.name} ({level.label}) — {place}")
    village, township, county, amr, tax = (h.actor(f"op-{n}") for n, h in enumerate(HALLS, 1))
    applicant = Applicant("李秀英", id_number_with_check("43090219560312002"), "13807370001")
    ids = [
        _village_to_township(story, app, village, township, applicant),
        _escalation(story, app, village, county, applicant, pause_seconds),
        _joint_case(story, county, amr, tax),
        _correction(story, county, pause_seconds),
    ]
    out("\nEvery state above was rebuilt from the stored events after each command.")
    return ids


def _village_to_township(
    story: Story, app: HubApplication, village: Actor, township: Actor, applicant: Applicant
) -> UUID:
    item = app.catalogue.get("200202001000")
    story.out(f"\n1. {item.name}: taken in at the village, handled and concluded at the township")
    case_id = story.step(
        "收件 at the village service room",
        lambda k: story.app.submit(
            idempotency_key=k,
            actor=village,
            item_code=item.code,
            applicant=applicant,
            materials=[_material("居民身份证", "id"), _material("一寸照片", "photo")],
            competent_region=TOWNSHIP,
        ),
    )
    a = story.app
    story.step("转办 to the township hall", lambda k: a.hand_off(
        idempotency_key=k, actor=village, case_id=case_id, to_hall=township.hall_id,
        reason="代办: 村级代收, 乡镇办理"))  # fmt: skip
    story.step("township acknowledges", lambda k: a.acknowledge_handoff(
        idempotency_key=k, actor=township, case_id=case_id))  # fmt: skip
    story.step("受理", lambda k: a.accept(idempotency_key=k, actor=township, case_id=case_id))
    story.step("承办", lambda k: a.start_handling(
        idempotency_key=k, actor=township, case_id=case_id))  # fmt: skip
    story.step("决定: 准予", lambda k: a.decide(
        idempotency_key=k, actor=township, case_id=case_id, approved=True,
        reason="年满60周岁, 材料齐全"))  # fmt: skip
    story.step("办结", lambda k: a.conclude(idempotency_key=k, actor=township, case_id=case_id))
    story.step("制证", lambda k: a.record_certificate(
        idempotency_key=k, actor=township, case_id=case_id,
        certificate_id=f"HN-LNYDZ-{case_id.hex[:10].upper()}"))  # fmt: skip
    window = DeliveryMethod.WINDOW
    story.step("送达 at the window", lambda k: a.deliver(
        idempotency_key=k, actor=township, case_id=case_id, method=window))  # fmt: skip
    story.step("好差评: 非常满意", lambda k: a.rate(
        idempotency_key=k, actor=township, case_id=case_id, rating=Rating.VERY_SATISFIED,
        comment="在村里就能申请"))  # fmt: skip
    story.step("归档", lambda k: a.archive(idempotency_key=k, actor=township, case_id=case_id))
    story.history(case_id)
    return case_id


def _escalation(
    story: Story,
    app: HubApplication,
    village: Actor,
    county: Actor,
    applicant: Applicant,
    pause_seconds: float,
) -> UUID:
    item = app.catalogue.get("040312001000")
    story.out(f"\n2. {item.name}: taken in at the village, escalated (上报) to the county")
    a = story.app
    case_id = story.step(
        "收件 at the village service room",
        lambda k: a.submit(
            idempotency_key=k,
            actor=village,
            item_code=item.code,
            applicant=applicant,
            materials=[_material("低保申请书", "form"), _material("家庭收入说明", "income")],
        ),
    )
    story.step("受理", lambda k: a.accept(idempotency_key=k, actor=village, case_id=case_id))
    story.step("承办: 村级初审", lambda k: a.start_handling(
        idempotency_key=k, actor=village, case_id=case_id))  # fmt: skip
    story.step("上报 to 资阳区", lambda k: a.escalate(
        idempotency_key=k, actor=village, case_id=case_id, to_hall=county.hall_id,
        reason="低保由县级民政部门审核确认"))  # fmt: skip
    story.step("county acknowledges", lambda k: a.acknowledge_handoff(
        idempotency_key=k, actor=county, case_id=case_id))  # fmt: skip
    story.step("特别程序: 公示 (clock paused)", lambda k: a.suspend(
        idempotency_key=k, actor=county, case_id=case_id,
        reason=SuspensionReason.PUBLIC_NOTICE, note="村务公开栏公示7天"))  # fmt: skip
    time.sleep(pause_seconds)
    story.step("公示 ends (clock resumes)", lambda k: a.resume(
        idempotency_key=k, actor=county, case_id=case_id))  # fmt: skip
    story.step("决定: 准予", lambda k: a.decide(
        idempotency_key=k, actor=county, case_id=case_id, approved=True,
        reason="家庭人均收入低于当地低保标准"))  # fmt: skip
    story.step("办结", lambda k: a.conclude(idempotency_key=k, actor=county, case_id=case_id))
    if a.get_case(case_id).produces_certificate:
        story.step("制证", lambda k: a.record_certificate(
            idempotency_key=k, actor=county, case_id=case_id,
            certificate_id=f"HN-DB-{case_id.hex[:10].upper()}"))  # fmt: skip
    story.step("送达 by post", lambda k: a.deliver(
        idempotency_key=k, actor=county, case_id=case_id, method=DeliveryMethod.POST,
        note="邮寄至申请人"))  # fmt: skip
    story.history(case_id)
    return case_id


def _joint_case(story: Story, county: Actor, amr: Actor, tax: Actor) -> UUID:
    a = story.app
    item = a.catalogue.get("200319001000YJS01")
    story.out(f"\n3. {item.name}: a joint case across two county departments")
    applicant = Applicant("王建国", id_number_with_check("43090219850706001"), "13907370002")
    case_id = story.step(
        "收件 at the county hall",
        lambda k: a.submit(
            idempotency_key=k,
            actor=county,
            item_code=item.code,
            applicant=applicant,
            materials=[_material("企业开办申请表", "company"), _material("住所证明", "address")],
        ),
    )
    story.step("受理", lambda k: a.accept(idempotency_key=k, actor=county, case_id=case_id))
    story.step("承办", lambda k: a.start_handling(idempotency_key=k, actor=county, case_id=case_id))
    tasks = [
        JointTask("amr-register", amr.hall_id, "市场监督管理局: 设立登记"),
        JointTask("tax-invoice", tax.hall_id, "税务局: 发票申领"),
    ]
    story.step("联办: open two department tasks", lambda k: a.open_joint_tasks(
        idempotency_key=k, actor=county, case_id=case_id, tasks=tasks))  # fmt: skip
    story.step("市场监管 completes its task", lambda k: a.complete_joint_task(
        idempotency_key=k, actor=amr, case_id=case_id, task_id="amr-register", approved=True,
        note="营业执照已核准"))  # fmt: skip
    story.step("税务 completes its task (joined)", lambda k: a.complete_joint_task(
        idempotency_key=k, actor=tax, case_id=case_id, task_id="tax-invoice", approved=True,
        note="发票已核定"))  # fmt: skip
    story.step("决定: 准予", lambda k: a.decide(
        idempotency_key=k, actor=county, case_id=case_id, approved=True,
        reason="各部门办理完毕"))  # fmt: skip
    story.step("办结", lambda k: a.conclude(idempotency_key=k, actor=county, case_id=case_id))
    if a.get_case(case_id).produces_certificate:
        story.step("制证", lambda k: a.record_certificate(
            idempotency_key=k, actor=county, case_id=case_id,
            certificate_id=f"HN-YYZZ-{case_id.hex[:10].upper()}"))  # fmt: skip
    online = DeliveryMethod.ONLINE
    story.step("送达 online", lambda k: a.deliver(
        idempotency_key=k, actor=county, case_id=case_id, method=online))  # fmt: skip
    story.history(case_id)
    return case_id


def _correction(story: Story, county: Actor, pause_seconds: float) -> UUID:
    a = story.app
    item = a.catalogue.get("070303001000")
    story.out(f"\n4. {item.name}: a correction (补正) pauses the clock")
    applicant = Applicant("赵敏", id_number_with_check("43090219920214002"), "13707370003")
    case_id = story.step(
        "收件 at the county hall",
        lambda k: a.submit(
            idempotency_key=k,
            actor=county,
            item_code=item.code,
            applicant=applicant,
            materials=[_material("居民身份证", "id2")],
        ),
    )
    story.step("一次性告知: 2 materials missing", lambda k: a.request_correction(
        idempotency_key=k, actor=county, case_id=case_id,
        missing=["居民户口簿", "准予迁入证明"], notice="请一次性补齐以下材料"))  # fmt: skip
    time.sleep(pause_seconds)
    story.step("补正: materials resubmitted", lambda k: a.resubmit(
        idempotency_key=k, actor=county, case_id=case_id,
        materials=[_material("居民户口簿", "hukou"),
                   _material("准予迁入证明", "permit")]))  # fmt: skip
    story.step("承办", lambda k: a.start_handling(idempotency_key=k, actor=county, case_id=case_id))
    story.step("决定: 准予", lambda k: a.decide(
        idempotency_key=k, actor=county, case_id=case_id, approved=True,
        reason="符合迁入条件"))  # fmt: skip
    story.step("办结", lambda k: a.conclude(idempotency_key=k, actor=county, case_id=case_id))
    case = a.get_case(case_id)
    story.out(
        f"    supervision clock counted {case.clock_seconds(case.modified_on):.2f}s; the "
        f"{case.paused_seconds:.2f}s spent awaiting correction were not counted"
    )
    story.history(case_id)
    return case_id

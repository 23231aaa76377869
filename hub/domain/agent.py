"""The ``Agent`` aggregate: a 代办员 registered at a hall, who acts for applicants.

An agent belongs to one hall and acts under that hall's signing key: a command the agent takes
is signed by the hall and names the agent in its header (``CommandHeader.agent``), and every
event it produces records the agent in its :class:`~hub.domain.values.Actor`. The agent's name,
ID number and phone are personal data: the hall signs salted commitments to them and the node
keeps the clear values sealed, exactly as an applicant's (:class:`SealedApplicant`).
"""

from __future__ import annotations

import re
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from hub.domain.values import Actor, SealedApplicant
from hub.errors import InvalidInput, PermissionRefused, TransitionRefused

_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def agent_aggregate_id(hall_id: str, agent_id: str) -> UUID:
    """An agent is addressed by its hall and its id there (so another hall's agent is unknown)."""
    return uuid5(NAMESPACE_URL, f"tongban:agent:{hall_id}:{agent_id}")


class Agent(Aggregate):
    """A 代办员 of one hall."""

    class Registered(Aggregate.Created):
        """The hall registered the agent."""

        actor: Actor
        agent_id: str
        person: SealedApplicant

        def apply(self, aggregate: Agent) -> None:
            aggregate.hall_id = self.actor.hall_id
            aggregate.agent_id = self.agent_id
            aggregate.person = self.person

    class Retired(Aggregate.Event):
        """The agent no longer acts for the hall."""

        actor: Actor
        reason: str

        def apply(self, aggregate: Agent) -> None:
            aggregate.retired = True

    def __init__(self) -> None:
        self.hall_id = ""
        self.agent_id = ""
        self.person: SealedApplicant | None = None
        self.retired = False

    @classmethod
    def register(cls, *, actor: Actor, agent_id: str, person: SealedApplicant) -> Agent:
        """Register ``agent_id`` at the acting hall."""
        if not _AGENT_ID.fullmatch(agent_id):
            raise InvalidInput("agent_id", agent_id, "1-64 letters, digits, . _ -")
        if actor.agent:
            raise PermissionRefused(actor.hall_id, "an agent does not register agents")
        return cls._create(
            cls.Registered,
            id=agent_aggregate_id(actor.hall_id, agent_id),
            actor=actor,
            agent_id=agent_id,
            person=person,
        )

    def retire(self, actor: Actor, reason: str) -> None:
        """Retire the agent (final): it can no longer act."""
        if actor.hall_id != self.hall_id or actor.agent:
            raise PermissionRefused(actor.hall_id, "only the agent's hall retires its agent")
        if self.retired:
            raise TransitionRefused("retire_agent", "RETIRED", f"agent {self.agent_id}")
        if not reason.strip():
            raise InvalidInput("reason", reason, "must not be empty")
        self.trigger_event(self.Retired, actor=actor, reason=reason)

    def check_active(self) -> None:
        """Raise unless the agent may act now."""
        if self.retired:
            raise PermissionRefused(self.hall_id, f"agent {self.agent_id} is retired")

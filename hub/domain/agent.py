"""The ``Agent`` aggregate: a 代办员 registered at a hall, who acts for applicants.

An agent belongs to one hall. A command the agent takes names the agent in its header
(``CommandHeader.agent``) and every event it produces records the agent in its
:class:`~hub.domain.values.Actor`. Who signs it depends on the registration: an agent registered
with a public key of their own signs their steps with it (and only with it: the hall's signature
on a step naming that agent is refused), so the log proves the agent, not only the hall, took
the step; an agent registered without one acts under the hall's key. The agent's name,
ID number and phone are personal data: the hall signs salted commitments to them and the node
keeps the clear values sealed, exactly as an applicant's (:class:`SealedApplicant`).
"""

from __future__ import annotations

import re
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from hub.domain.hall import decode_public_key, key_id
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
        #: The agent's own base64 Ed25519 public key; empty: the agent acts under the hall's.
        public_key: str

        def apply(self, aggregate: Agent) -> None:
            aggregate.hall_id = self.actor.hall_id
            aggregate.agent_id = self.agent_id
            aggregate.person = self.person
            aggregate.public_key = self.public_key

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
        self.public_key = ""
        self.retired = False

    @classmethod
    def register(
        cls, *, actor: Actor, agent_id: str, person: SealedApplicant, public_key: str = ""
    ) -> Agent:
        """Register ``agent_id`` at the acting hall; ``public_key``: the agent's own signing
        key (base64 Ed25519), or empty for an agent acting under the hall's key."""
        if not _AGENT_ID.fullmatch(agent_id):
            raise InvalidInput("agent_id", agent_id, "1-64 letters, digits, . _ -")
        if actor.agent:
            raise PermissionRefused(actor.hall_id, "an agent does not register agents")
        if public_key:
            decode_public_key(public_key)
        return cls._create(
            cls.Registered,
            id=agent_aggregate_id(actor.hall_id, agent_id),
            actor=actor,
            agent_id=agent_id,
            person=person,
            public_key=public_key,
        )

    @property
    def signs_own_steps(self) -> bool:
        """Whether the agent signs with a key of their own (else under the hall's)."""
        return bool(self.public_key)

    @property
    def key_id(self) -> str:
        """The id of the agent's own key; empty when the agent has none."""
        return key_id(self.public_key) if self.public_key else ""

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

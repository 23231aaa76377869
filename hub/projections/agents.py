"""The ``agents`` projection: each hall's 代办员, and how many cases and home visits they acted in.

Tables (PostgreSQL: beside the event store; SQLite: in ``projections.sqlite3``):

``projection_agents``
    one row per agent a hall of this node registered: hall, agent id, the id of the agent's own
    signing key (empty: the agent acts under the hall's key), when registered, when retired and
    why. **No personal data**: the agent's name, ID number and phone stay sealed in
    the log (``tongban agents --names`` opens only the name, and prints it masked).
``projection_agent_cases``
    one row per (hall, agent, case) the agent acted in — any case event whose ``actor.agent``
    names them (the command header's ``agent``) — and whether the case was taken in at the
    applicant's home (its signed channel ``HOME_VISIT``: a 上门办 home visit).

So an agent's figures are counts of distinct cases, whatever number of steps they took in each;
the rows follow from the log alone and a rebuild gives the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking

from hub.domain.agent import Agent
from hub.domain.case import Case
from hub.domain.hall import key_id
from hub.domain.values import IntakeChannel
from hub.projections.cases import _event_topics
from hub.projections.runner import BUSY_SETTLE, ViewProjection
from hub.projections.store import Cursor, ProjectionStore, from_iso, iso

#: Loads a case's stored events up to a version (:func:`hub.projections.node.history_loader`).
HistoryLoad = Callable[[UUID, int], Sequence[Any]]


@dataclass(frozen=True)
class AgentRow:
    """One agent as the view holds it, with their counts (no personal data)."""

    hall_id: str
    agent_id: str
    #: The id of the agent's own signing key; empty: the agent acts under the hall's key.
    key_id: str
    registered_at: datetime | None
    retired_at: datetime | None
    retired_reason: str
    cases: int
    home_visits: int


class AgentsProjection(ViewProjection):
    """Agents by hall, with the cases and home visits they acted in (module docstring)."""

    name = "agents"
    topics: tuple[str, ...] = _event_topics(Agent, Case)
    tables: ClassVar[tuple[str, ...]] = ("projection_agents", "projection_agent_cases")
    #: Read by supervisors and operators, never by a step: a busy node's steps in few batches.
    settle: ClassVar[float] = BUSY_SETTLE

    def __init__(self, view: ProjectionStore, load: HistoryLoad) -> None:
        super().__init__(view)
        self._load = load

    def create_statements(self) -> list[str]:
        text = "TEXT NOT NULL"
        return [
            "CREATE TABLE IF NOT EXISTS projection_agents ("
            f"hall_id {text}, agent_id {text}, key_id {text}, registered_at {text}, "
            "retired_at TEXT, "
            f"retired_reason {text}, PRIMARY KEY (hall_id, agent_id))",
            "CREATE TABLE IF NOT EXISTS projection_agent_cases ("
            f"hall_id {text}, agent_id {text}, case_id {text}, home_visit INTEGER NOT NULL, "
            "PRIMARY KEY (hall_id, agent_id, case_id))",
        ]

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        event = domain_event
        if isinstance(event, Agent.Registered):
            self.cursor.execute(
                self.sql(
                    "INSERT INTO projection_agents (hall_id, agent_id, key_id, registered_at, "
                    "retired_at, retired_reason) VALUES (%s, %s, %s, %s, NULL, '') "
                    "ON CONFLICT (hall_id, agent_id) DO NOTHING"
                ),
                (
                    event.actor.hall_id,
                    event.agent_id,
                    key_id(event.public_key) if event.public_key else "",
                    iso(event.timestamp),
                ),
            )
        elif isinstance(event, Agent.Retired):
            # A retirement is signed by the agent's own hall (the aggregate checks it).
            self.cursor.execute(
                self.sql(
                    "UPDATE projection_agents SET retired_at = %s, retired_reason = %s "
                    "WHERE hall_id = %s AND agent_id = %s"
                ),
                (iso(event.timestamp), event.reason, event.actor.hall_id, self._agent_id(event)),
            )
        elif isinstance(event, Case.Submitted | Case.Event):
            actor = getattr(event, "actor", None)
            if actor is None or not actor.agent:
                return  # a step no agent took (or the node's own act)
            self.cursor.execute(
                self.sql(
                    "INSERT INTO projection_agent_cases (hall_id, agent_id, case_id, home_visit) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (hall_id, agent_id, case_id) DO NOTHING"
                ),
                (actor.hall_id, actor.agent, str(event.originator_id), int(self._home(event))),
            )

    def _agent_id(self, event: Agent.Retired) -> str:
        """The retired agent's id (the Retired event names the aggregate, not the id)."""
        (registered, *_rest) = self._load(event.originator_id, 1)
        return str(registered.agent_id)

    def _home(self, event: Any) -> bool:
        """Whether the case was taken in at the applicant's home (its signed channel)."""
        submitted = event if isinstance(event, Case.Submitted) else None
        if submitted is None:
            (submitted, *_rest) = self._load(event.originator_id, 1)
        return bool(submitted.channel is IntakeChannel.HOME_VISIT)


def agents(
    store: ProjectionStore, *, hall_id: str = "", include_retired: bool = False
) -> list[AgentRow]:
    """The agents of ``hall_id`` (every hall when empty), by hall and agent id; retired ones
    only with ``include_retired``."""
    where = ["1 = 1"]
    params: list[Any] = []
    if hall_id:
        where.append("a.hall_id = %s")
        params.append(hall_id)
    if not include_retired:
        where.append("a.retired_at IS NULL")

    def read(cursor: Cursor) -> list[AgentRow]:
        cursor.execute(
            store.dialect.sql(
                "SELECT a.hall_id, a.agent_id, a.key_id, a.registered_at, a.retired_at, "
                "a.retired_reason, "
                "COUNT(c.case_id), COALESCE(SUM(c.home_visit), 0) FROM projection_agents a "
                "LEFT JOIN projection_agent_cases c ON c.hall_id = a.hall_id "
                f"AND c.agent_id = a.agent_id WHERE {' AND '.join(where)} "
                "GROUP BY a.hall_id, a.agent_id, a.key_id, a.registered_at, a.retired_at, "
                "a.retired_reason "
                "ORDER BY a.hall_id, a.agent_id"
            ),
            params,
        )
        return [
            AgentRow(
                hall, agent, key, from_iso(registered), from_iso(retired), reason, int(n), int(h)
            )
            for hall, agent, key, registered, retired, reason, n, h in cursor.fetchall()
        ]

    return store.read(read)


def agents_report(rows: list[AgentRow], names: dict[tuple[str, str], str] | None = None) -> Any:
    """``tongban agents``: each agent with their counts; ``names`` (masked) when asked for."""
    from hub.projections.report import Report, when

    columns = [
        "hall", "agent", "signs with", "registered", "retired", "reason", "cases", "home visits",
    ]  # fmt: skip
    if names is not None:
        columns.insert(2, "name (masked)")
    report = Report(columns)
    for row in rows:
        cells: list[Any] = [
            row.hall_id, row.agent_id, f"own key {row.key_id}" if row.key_id else "hall's key",
            when(row.registered_at), when(row.retired_at),
            row.retired_reason, row.cases, row.home_visits,
        ]  # fmt: skip
        document: dict[str, Any] = {
            "hall_id": row.hall_id, "agent_id": row.agent_id, "key_id": row.key_id,
            "registered_at": row.registered_at.isoformat() if row.registered_at else None,
            "retired_at": row.retired_at.isoformat() if row.retired_at else None,
            "retired_reason": row.retired_reason, "cases": row.cases,
            "home_visits": row.home_visits,
        }  # fmt: skip
        if names is not None:
            masked = names.get((row.hall_id, row.agent_id), "")
            cells.insert(2, masked)
            document["name_masked"] = masked
        report.rows.append(cells)
        report.documents.append(document)
    report.footer = (
        f"{len(rows)} agents, {sum(r.cases for r in rows)} cases, "
        f"{sum(r.home_visits for r in rows)} home visits"
    )
    return report


__all__ = ["AgentRow", "AgentsProjection", "agents", "agents_report"]

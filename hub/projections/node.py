"""A node's projections, put together: their store, their runners, their tables.

projections = open_projections(app, node_region="43")
projections.create_tables()       # once, at start-up
projections.catch_up()            # or: runner.run(stop) in the follower process
projections.runner("cases").rebuild(progress)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from hub.domain.codec import event_mapper
from hub.errors import InvalidInput
from hub.projections.agents import AgentsProjection
from hub.projections.appointments import AppointmentsProjection
from hub.projections.cases import CasesProjection
from hub.projections.runner import CaseHistories, ProjectionRunner, ViewProjection
from hub.projections.statistics import StatisticsProjection
from hub.projections.store import ProjectionStore, create_tables, open_projection_store

log = logging.getLogger("tongban.projections")

#: Every projection a node runs, by name.
NAMES = ("cases", "statistics", "appointments", "agents")


@dataclass
class Projections:
    """The projections of one node (one store, one runner each)."""

    store: ProjectionStore
    runners: dict[str, ProjectionRunner] = field(default_factory=dict)

    def runner(self, name: str) -> ProjectionRunner:
        """The runner of projection ``name``; InvalidInput naming the known ones otherwise."""
        if name not in self.runners:
            raise InvalidInput("projection", name, f"known projections: {', '.join(NAMES)}")
        return self.runners[name]

    def create_tables(self) -> None:
        """Create every projection's tables if missing, and rebuild from the log any projection
        whose tables an earlier version made in another shape (an upgrade)."""
        statements: list[str] = []
        for runner in self.runners.values():
            statements += runner.projection.create_statements()
        create_tables(self.store, statements)
        for runner in self.runners.values():
            if self.store.read(runner.projection.outdated):
                log.warning("the %s projection's tables are of an earlier version: rebuilding "
                            "it from the log", runner.projection.name)  # fmt: skip
                runner.rebuild()

    def catch_up(self) -> dict[str, int]:
        """Bring every projection up to the end of the log; their positions."""
        return {name: runner.catch_up() for name, runner in self.runners.items()}

    def close(self) -> None:
        """Release the store."""
        self.store.close()


def history_loader(recorder: Any) -> Callable[[UUID, int], Sequence[Any]]:
    """Loads a case's stored events up to a version, decoded (for :class:`CaseHistories`)."""
    mapper = event_mapper()

    def load(case_id: UUID, last: int) -> list[Any]:
        if last <= 0:
            return []
        return [mapper.to_domain_event(s) for s in recorder.select_events(case_id, lte=last)]

    return load


def open_projections(
    app: Any, *, node_region: str, names: Sequence[str] = NAMES, batch_size: int = 500
) -> Projections:
    """The projections of the node whose application is ``app`` (tables: create_tables)."""
    store = open_projection_store(app)
    projections = Projections(store)
    load = history_loader(app.recorder)
    for name in names:
        projection: ViewProjection
        if name == "cases":
            projection = CasesProjection(store, CaseHistories(load))
        elif name == "statistics":
            projection = StatisticsProjection(store, CaseHistories(load), node_region)
        elif name == "appointments":
            projection = AppointmentsProjection(store)
        elif name == "agents":
            projection = AgentsProjection(store, load)
        else:
            raise InvalidInput("projection", name, f"known projections: {', '.join(NAMES)}")
        projections.runners[name] = ProjectionRunner(
            projection, app.recorder, batch_size=batch_size
        )
    return projections


__all__ = ["NAMES", "Projections", "history_loader", "open_projections"]

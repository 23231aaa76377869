"""What erasing a case's personal data does to its materials.

Materials are scans of the applicant's documents (an ID card, a household register): personal
data. So when a case's personal data is erased (``tongban erase``), the files the case lists are
shredded too (their keys destroyed, their chunks deleted), unless another case whose personal
data is *not* erased lists the very same file: a file is stored once, and such a case still
needs it. The case keeps its material digests (they are in the signed commands and the log, and
every proof keeps verifying); asking for the file afterwards is NOT_FOUND.

Erasing runs after the erasure command is recorded, and may be run again at any time: a second
run shreds what a first one (stopped half-way) left, and nothing else.

Finding the other cases that list a file reads every submission and resubmission of the node
(the node keeps no digest index): proportional to the number of cases, which is fine for a rare,
deliberate act.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from hub.application.hub import HubApplication
from hub.domain.case import Case
from hub.errors import NotFound
from hub.materials.store import MaterialStore

#: Notifications read per query while looking for other cases that list a file.
_PAGE = 500


def erase_case_materials(app: HubApplication, store: MaterialStore, case_id: UUID) -> list[str]:
    """Shred the files of ``case_id`` (whose personal data is erased) that no other case with
    readable personal data lists; returns their digests. A case not erased, or a record that
    is not a case (a 预约办 appointment lists no files): nothing happens."""
    try:
        case = app.get_case(case_id)
    except NotFound:
        return []
    if not case.personal_data_erased:
        return []
    digests = {material.sha256 for material in case.materials}
    keep = digests_still_needed(app, digests, besides=case.id)
    shredded = sorted(digests - keep)
    store.shred(shredded)
    return shredded


def digests_still_needed(app: HubApplication, digests: set[str], *, besides: UUID) -> set[str]:
    """Those of ``digests`` that a case other than ``besides``, with its personal data not
    erased, lists."""
    if not digests:
        return set()
    topics = [get_topic(Case.Submitted), get_topic(Case.Resubmitted)]
    listing: dict[UUID, set[str]] = {}
    start: int | None = None
    while True:

        def page(after: int | None = start) -> list[Any]:
            return list(
                app.recorder.select_notifications(
                    start=after, limit=_PAGE, topics=topics, inclusive_of_start=after is None
                )
            )

        batch: list[Any] = app.storage.run(page)
        for notification in batch:
            if notification.originator_id == besides:
                continue
            event = app.mapper.to_domain_event(notification)
            assert isinstance(event, Case.Submitted | Case.Resubmitted)
            found = digests & {material.sha256 for material in event.materials}
            if found:
                listing.setdefault(notification.originator_id, set()).update(found)
        if len(batch) < _PAGE:
            break
        start = batch[-1].id
    needed: set[str] = set()
    for other, found in listing.items():
        if not app.get_case(other).personal_data_erased:
            needed |= found
    return needed


__all__ = ["digests_still_needed", "erase_case_materials"]

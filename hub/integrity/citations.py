"""Cross-citations between the logs of a federation, checked read-only from their stores.

Each node's audit (:mod:`hub.integrity.audit`) already proves, with the peers' log keys, that a
step another node sent is in that node's log (an inclusion proof under a checkpoint it signed).
With several nodes' stores at hand, an auditor can also follow every citation to the log it
names and compare:

* a **step record** (``PeerStep``) at node B names (origin, index): the origin's leaf at that
  index must be the very leaf the record carries (the hall's signed command);
* an **acknowledgement** (``PeerAcknowledgement``, stored) at node A names (peer, index): the
  peer's leaf at that index must be the step record of that envelope, and that record no later
  than the time the peer signed the acknowledgement: it applied the step before it said so.
  A peer that dates its receipt of a case later than it was (to make its own handling look
  quicker) is caught here, by its own signature; A's audit alone checks that A did not store
  the acknowledgement before the peer signed it;
* a **refusal** (``Case.TransferRefused``) at A names an envelope the peer refused: the peer's
  log must hold no step record of that envelope.

A citation to a node whose store was not given is counted, not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from uuid import UUID

from hub.commands.federation import MAX_CLOCK_SKEW, parse_ack
from hub.domain.case import Case
from hub.domain.codec import event_mapper
from hub.domain.federation import PeerAcknowledgement, PeerStep
from hub.errors import InvalidInput
from hub.integrity.store import ReadOnlyStore
from ledger import Authority, Leaf


@dataclass
class CitationReport:
    """What following the citations found."""

    checked: int = 0
    unchecked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No citation contradicts the log it names."""
        return not self.problems


def check_citations(stores: Mapping[str, ReadOnlyStore]) -> CitationReport:
    """Follow every citation between the logs of ``stores`` (origin → its store, read-only)."""
    report = CitationReport()
    mapper = event_mapper()
    for origin, store in stores.items():
        for _, stored in store.events():
            if not stored.topic.endswith(("PeerStep.Recorded", "PeerAcknowledgement.Recorded",
                                          "Case.TransferRefused")):  # fmt: skip
                continue
            event = mapper.to_domain_event(stored)
            if isinstance(event, PeerStep.Recorded):
                _step(origin, event, stores, report)
            elif isinstance(event, PeerAcknowledgement.Recorded | Case.TransferRefused):
                _answer(origin, event, stores, report)
    return report


def origin_of(store: ReadOnlyStore) -> str:
    """The log origin a store's genesis names."""
    for _, stored in store.events(batch=1):
        event = event_mapper().to_domain_event(stored)
        origin = getattr(event, "origin", "")
        if origin:
            return str(origin)
        break
    raise ValueError("the store holds no genesis")


def _leaf(store: ReadOnlyStore, index: int) -> Leaf | None:
    leaves = store.tables.leaves(store.cursor(), index, index + 1)
    return leaves[0] if leaves else None


def _step(
    origin: str,
    event: PeerStep.Recorded,
    stores: Mapping[str, ReadOnlyStore],
    report: CitationReport,
) -> None:
    other = stores.get(event.origin)
    if other is None:
        report.unchecked += 1
        return
    report.checked += 1
    leaf = _leaf(other, event.origin_index)
    if leaf is None or leaf.encode() != event.origin_leaf:
        report.problems.append(
            f"{origin}: the step of envelope {event.envelope_id} cites {event.origin}#"
            f"{event.origin_index}, which is not that command in {event.origin}'s log"
        )


def _answer(
    origin: str,
    event: PeerAcknowledgement.Recorded | Case.TransferRefused,
    stores: Mapping[str, ReadOnlyStore],
    report: CitationReport,
) -> None:
    other = stores.get(event.peer)
    if other is None:
        report.unchecked += 1
        return
    report.checked += 1
    stored = isinstance(event, PeerAcknowledgement.Recorded) and event.stored
    if not stored:
        if _holds_step_of(other, event.envelope_id):
            report.problems.append(
                f"{origin}: {event.peer} refused envelope {event.envelope_id}, but its log holds it"
            )
        return
    assert isinstance(event, PeerAcknowledgement.Recorded)
    leaf = _leaf(other, event.peer_index)
    record = None
    if leaf is not None and leaf.authority is Authority.PEER_COMMAND:
        history = other.history(leaf.aggregate_id, leaf.version + 1)
        if history:
            record = event_mapper().to_domain_event(history[-1])
    if not isinstance(record, PeerStep.Recorded) or record.envelope_id != event.envelope_id:
        report.problems.append(
            f"{origin}: the acknowledgement of envelope {event.envelope_id} cites {event.peer}#"
            f"{event.peer_index}, which is not that envelope's step in {event.peer}'s log"
        )
    else:
        try:
            signed_at = parse_ack(event.body).signed_at
        except InvalidInput as error:  # (the sender's own audit names it too)
            report.problems.append(f"{origin}: the acknowledgement of {event.envelope_id}: {error}")
            return
        if record.timestamp > signed_at + MAX_CLOCK_SKEW:  # (a clock set back a little)
            report.problems.append(
                f"{event.peer}: the step of envelope {event.envelope_id} is recorded as applied "
                f"at {record.timestamp.isoformat()}, after {event.peer} signed its "
                f"acknowledgement of it ({signed_at.isoformat()})"
            )


def _holds_step_of(store: ReadOnlyStore, envelope_id: UUID) -> bool:
    mapper = event_mapper()
    for _, stored in store.events():
        if stored.topic.endswith("PeerStep.Recorded"):
            event = mapper.to_domain_event(stored)
            if getattr(event, "envelope_id", None) == envelope_id:
                return True
    return False


__all__ = ["CitationReport", "check_citations", "origin_of"]

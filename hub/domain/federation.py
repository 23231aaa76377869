"""Cases shared between nodes: how halls of other nodes are named, and what a node records when
it applies a step another node took or learns that a peer stored one of its own.

**Naming.** Hall ids are unique within a node only. So a node names its own halls by their id
(``hn-shatou-town``) and every hall of another node by its id and 12-digit region code,
``sx-baihe-county@610929000000``. A hall addresses a hall of another province that way in its
commands (a 转办 to the competent region), and each node rewrites the names in the steps it
receives from a peer into its own naming: its own halls lose the region, the sender's halls gain
theirs. One rule, applied in one place (:func:`local_name`), by the node applying a step and by
the auditor checking it.

**Records.** A step taken at another node arrives in a signed envelope (docs/federation.md). The
node saves a :class:`PeerStep` record — the hall's signed command, that node's leaf for it, the
inclusion proof and the checkpoint it verifies under, the hall's key — immediately followed by
the events the step produced here, exactly as a :class:`~hub.domain.command_record.CommandRecord`
precedes the events of a local command. A peer's acknowledgement of an envelope this node sent is
saved as a :class:`PeerAcknowledgement` with the peer's signature. So each log cites the other:
the step record names (origin, index) of the command in the sender's log, and the
acknowledgement names (peer, index) of the step record in the peer's log.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from hub.errors import InvalidInput

_SEPARATOR = "@"
REGION_DIGITS = 12


def qualified(hall_id: str, region: str) -> str:
    """The name of another node's hall: ``hall_id@region``."""
    return f"{hall_id}{_SEPARATOR}{region}"


def split_name(name: str) -> tuple[str, str | None]:
    """``(hall_id, region)`` of a qualified name, ``(hall_id, None)`` of a plain one."""
    hall_id, separator, region = name.partition(_SEPARATOR)
    return (hall_id, region) if separator else (hall_id, None)


def within(region: str, node_region: str) -> bool:
    """Whether a 12-digit region code belongs to a node keeping ``node_region`` (2-6 digits)."""
    return region.startswith(node_region)


def check_remote_name(name: str, node_region: str, field: str) -> str:
    """The region of a qualified name naming another node's hall; InvalidInput otherwise."""
    hall_id, region = split_name(name)
    if region is None:
        raise InvalidInput(field, name, "expected hall_id@region")
    if not hall_id or len(region) != REGION_DIGITS or not region.isdigit():
        raise InvalidInput(
            field, name, f"name a hall of another node as hall_id@<{REGION_DIGITS}-digit region>"
        )
    if within(region, node_region):
        raise InvalidInput(
            field, name, "this hall is in this node's region: name it by its hall id alone"
        )
    return region


def local_name(name: str, region: str | None, node_region: str) -> str:
    """A hall's name as the node keeping ``node_region`` writes it.

    ``name`` is as another node wrote it: plain for that node's own hall (``region`` is then
    that hall's region, which the sender vouches for), or qualified for a hall elsewhere.
    """
    hall_id, named_region = split_name(name)
    where = named_region or region
    if where is None:
        raise InvalidInput("hall", name, "the region of this hall is not known")
    return hall_id if within(where, node_region) else qualified(hall_id, where)


def peer_step_id(origin: str, index: int) -> UUID:
    """The record of the step at ``index`` of ``origin``'s log: one per step, at every node."""
    return uuid5(NAMESPACE_URL, f"tongban:peer-step:{origin}:{index}")


def acknowledgement_id(envelope_id: UUID) -> UUID:
    """The record of the acknowledgement of one envelope."""
    return uuid5(NAMESPACE_URL, f"tongban:peer-ack:{envelope_id}")


class PeerStep(Aggregate):
    """A step another node took on a shared case, applied here."""

    class Recorded(Aggregate.Created):
        """The step's evidence; the events it produced here follow this one in the log."""

        envelope_id: UUID
        sender: str  # the node whose envelope brought the step
        envelope: bytes  # the envelope body as the sender signed it (the step's whole evidence)
        envelope_signature: bytes
        origin: str  # the node whose log holds the step
        origin_index: int
        origin_leaf: bytes  # that log's leaf of the step (leaf encoding v2)
        inclusion_proof: tuple[bytes, ...]
        checkpoint: bytes  # a checkpoint of ``origin`` the proof verifies under
        signer: str  # the hall, named here (hall_id@region)
        key_id: str
        hall_key: str  # the hall's public key (base64), as the origin vouches
        signed_bytes: bytes
        signature: bytes
        hall_regions: dict[str, str]  # regions of the origin's own halls the command names
        target_id: UUID
        first_version: int
        last_version: int

        def apply(self, aggregate: PeerStep) -> None:
            aggregate.envelope_id = self.envelope_id
            aggregate.sender = self.sender
            aggregate.origin = self.origin
            aggregate.origin_index = self.origin_index
            aggregate.target_id = self.target_id

    def __init__(self) -> None:
        self.envelope_id = UUID(int=0)
        self.sender = ""
        self.origin = ""
        self.origin_index = 0
        self.target_id = UUID(int=0)


class PeerAcknowledgement(Aggregate):
    """A peer's signed acknowledgement of an envelope this node sent."""

    class Recorded(Aggregate.Created):
        """The acknowledgement as signed: the peer's body bytes and signature."""

        envelope_id: UUID
        peer: str
        key_id: str
        body: bytes
        signature: bytes
        stored: bool  # False: the peer refused the step
        peer_index: int  # the peer's leaf of the step record (when stored)
        reason: str

        def apply(self, aggregate: PeerAcknowledgement) -> None:
            aggregate.envelope_id = self.envelope_id
            aggregate.peer = self.peer
            aggregate.stored = self.stored
            aggregate.peer_index = self.peer_index

    def __init__(self) -> None:
        self.envelope_id = UUID(int=0)
        self.peer = ""
        self.stored = False
        self.peer_index = 0


__all__ = [
    "PeerAcknowledgement",
    "PeerStep",
    "acknowledgement_id",
    "check_remote_name",
    "local_name",
    "peer_step_id",
    "qualified",
    "split_name",
    "within",
]

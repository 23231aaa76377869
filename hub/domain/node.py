"""The node's own aggregate: its genesis, which names its log and its first admin.

The first event of every node's log is :class:`Node.Initialised`, made by ``tongban init``. It
records the node's origin, region and log key, and the admins whose Ed25519 keys may sign admin
commands (registering, re-keying and retiring halls, erasing personal data). An auditor reads
the admins' keys from this event, as it reads each hall's keys from the hall registry's events,
so the whole chain of who may sign what is in the log itself, under the log key.

The node is accountable for these events itself: their leaves have the ``NODE`` authority and
the node's checkpoint signature covers them.
"""

from __future__ import annotations

import re
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from hub.domain.hall import decode_public_key
from hub.errors import InvalidInput

NODE_ID: UUID = uuid5(NAMESPACE_URL, "tongban:node")
"""The aggregate id of a node's genesis (one per log)."""

_ADMIN_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{2,63}$")


class Node(Aggregate):
    """A node's genesis and its admins."""

    class Initialised(Aggregate.Created):
        """``tongban init``: the log's origin, region and key, and the first admin."""

        origin: str
        region: str
        log_key: str
        admin: str
        admin_key: str

        def apply(self, aggregate: Node) -> None:
            aggregate.origin = self.origin
            aggregate.region = self.region
            aggregate.log_key = self.log_key
            aggregate.admins = {self.admin: self.admin_key}

    def __init__(self) -> None:
        self.origin = ""
        self.region = ""
        self.log_key = ""
        self.admins: dict[str, str] = {}

    @classmethod
    def initialise(
        cls, *, origin: str, region: str, log_key: str, admin: str, admin_key: str
    ) -> Node:
        """The genesis of a node's log."""
        if not _ADMIN_NAME.fullmatch(admin):
            raise InvalidInput("admin", admin, "use 3-64 of a-z, 0-9, '.', '-'")
        decode_public_key(admin_key, "admin_key")
        return cls._create(
            cls.Initialised,
            id=NODE_ID,
            origin=origin,
            region=region,
            log_key=log_key,
            admin=admin,
            admin_key=admin_key,
        )

    def admin_key(self, admin: str) -> str:
        """The public key of ``admin``; InvalidInput when the node has no such admin."""
        key = self.admins.get(admin)
        if key is None:
            raise InvalidInput("command.header.admin", admin, "no such admin at this node")
        return key


__all__ = ["NODE_ID", "Node"]

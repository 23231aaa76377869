"""Command records: every signed command the node accepted, saved with the events it produced.

A record is an aggregate whose id is derived from (signer, idempotency key). It is saved in the
same ``Application.save()`` call as the events the command produced, *before* them, so the
notification log (and so the ledger) holds each record immediately followed by its events. Its
ledger leaf carries the signer, the key id, the signature and the exact signed bytes; the leaves
of the events that follow name it as their cause. So every event a hall or an admin caused is
bound in the log to the one signed command that authorised it, and anyone with the public keys
can check that binding (:mod:`hub.integrity.binding`).

The record is also the idempotency record: a retry finds it and returns its result; a concurrent
duplicate loses the race on the record's (id, version) key and then finds the winner's record. A
failed first attempt stores no record, so a retry runs the command for real: a duplicate is never
acknowledged when the first attempt failed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from hub.errors import InvalidInput

MAX_KEY_LENGTH = 128

#: Who signs a command: a hall, or an admin of the node.
HALL = "hall"
ADMIN = "admin"


@dataclass(frozen=True)
class CommandResult:
    """What a command returns: the aggregate it acted on and its version afterwards."""

    aggregate_id: UUID
    version: int
    replayed: bool = False

    @property
    def case_id(self) -> UUID:
        """The case a case command acted on (the same as ``aggregate_id``)."""
        return self.aggregate_id


def record_id(signer_kind: str, signer: str, key: str) -> UUID:
    """The record's aggregate id; keys are scoped per signer."""
    return uuid5(NAMESPACE_URL, f"tongban:idempotency:{signer_kind}:{signer}:{key}")


def check_key(key: str) -> None:
    """Keys are printable ASCII, 8-128 characters (UUIDs, ULIDs and the like)."""
    if not 8 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise InvalidInput(
            "command.header.idempotency_key",
            key,
            f"use 8-{MAX_KEY_LENGTH} printable ASCII characters",
        )


def payload_digest(action: str, payload: dict[str, Any]) -> str:
    """SHA-256 of the action and its canonical JSON arguments (the header's time excluded)."""
    canonical = json.dumps(
        {"command": action, "payload": payload},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CommandRecord(Aggregate):
    """One signed command the node accepted, and its first result."""

    class Recorded(Aggregate.Created):
        """A signed command ran; the events it produced follow this one in the log."""

        signer_kind: str
        signer: str
        key: str
        action: str
        digest: str
        target_id: UUID
        first_version: int
        last_version: int
        signed_bytes: bytes
        signature: bytes
        key_id: str
        issued_at: datetime
        deferred: bool

        def apply(self, aggregate: CommandRecord) -> None:
            aggregate.signer_kind = self.signer_kind
            aggregate.signer = self.signer
            aggregate.action = self.action
            aggregate.digest = self.digest
            aggregate.target_id = self.target_id
            aggregate.last_version = self.last_version

    def __init__(self) -> None:
        self.signer_kind = ""
        self.signer = ""
        self.action = ""
        self.digest = ""
        self.target_id = UUID(int=0)
        self.last_version = 0

    @classmethod
    def record(
        cls,
        *,
        signer_kind: str,
        signer: str,
        key: str,
        action: str,
        digest: str,
        target_id: UUID,
        first_version: int,
        last_version: int,
        signed_bytes: bytes,
        signature: bytes,
        key_id: str,
        issued_at: datetime,
        deferred: bool,
        timestamp: datetime | None = None,
    ) -> CommandRecord:
        """Create the record of a command that produced versions first..last of ``target_id``.

        ``timestamp``: when the node received the command (the bound of its events' business
        time, see :func:`hub.domain.case.business_time`).
        """
        return cls._create(
            cls.Recorded,
            id=record_id(signer_kind, signer, key),
            timestamp=timestamp,
            signer_kind=signer_kind,
            signer=signer,
            key=key,
            action=action,
            digest=digest,
            target_id=target_id,
            first_version=first_version,
            last_version=last_version,
            signed_bytes=signed_bytes,
            signature=signature,
            key_id=key_id,
            issued_at=issued_at,
            deferred=deferred,
        )

    @property
    def result(self) -> CommandResult:
        """The first result, marked as replayed."""
        return CommandResult(self.target_id, self.last_version, replayed=True)

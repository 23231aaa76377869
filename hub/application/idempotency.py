"""Idempotency records: the first result of every command, saved with the command's events.

A record is an aggregate whose id is derived from (hall, idempotency key). It is saved in the same
``Application.save()`` call as the events the command produced, so either both are stored or
neither is. A retry finds the record and returns its result; a concurrent duplicate loses the race
on the record's (id, version) key and then finds the winner's record. A failed first attempt
stores no record, so a retry runs the command for real: a duplicate is never acknowledged when the
first attempt failed.

The record also keeps what the hall signed (command bytes and signature, once halls sign), so the
ledger leaf of this event commits to the hall's own signature.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from hub.errors import InvalidInput

MAX_KEY_LENGTH = 128


@dataclass(frozen=True)
class CommandResult:
    """What a command returns: the case it acted on and the case's version afterwards."""

    case_id: UUID
    version: int
    replayed: bool = False


def record_id(hall_id: str, key: str) -> UUID:
    """The record's aggregate id; keys are scoped per hall."""
    return uuid5(NAMESPACE_URL, f"tongban:idempotency:{hall_id}:{key}")


def check_key(key: str) -> None:
    """Keys are printable ASCII, 8-128 characters (UUIDs, ULIDs and the like)."""
    if not 8 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise InvalidInput(
            "idempotency_key", key, f"use 8-{MAX_KEY_LENGTH} printable ASCII characters"
        )


def payload_digest(command: str, payload: dict[str, Any]) -> str:
    """SHA-256 of the command name and its canonical JSON arguments."""
    canonical = json.dumps(
        {"command": command, "payload": payload},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CommandRecord(Aggregate):
    """The first outcome of one (hall, idempotency key)."""

    class Recorded(Aggregate.Created):
        """A command ran and produced its result."""

        hall_id: str
        key: str
        command: str
        digest: str
        case_id: UUID
        case_version: int
        signed_bytes: bytes
        signature: bytes

        def apply(self, aggregate: CommandRecord) -> None:
            aggregate.hall_id = self.hall_id
            aggregate.key = self.key
            aggregate.command = self.command
            aggregate.digest = self.digest
            aggregate.case_id = self.case_id
            aggregate.case_version = self.case_version

    def __init__(self) -> None:
        self.hall_id = ""
        self.key = ""
        self.command = ""
        self.digest = ""
        self.case_id = UUID(int=0)
        self.case_version = 0

    @classmethod
    def record(
        cls,
        *,
        hall_id: str,
        key: str,
        command: str,
        digest: str,
        result: CommandResult,
        signed_bytes: bytes = b"",
        signature: bytes = b"",
    ) -> CommandRecord:
        """Create the record of a command's first result."""
        return cls._create(
            cls.Recorded,
            id=record_id(hall_id, key),
            hall_id=hall_id,
            key=key,
            command=command,
            digest=digest,
            case_id=result.case_id,
            case_version=result.version,
            signed_bytes=signed_bytes,
            signature=signature,
        )

    @property
    def result(self) -> CommandResult:
        """The first result, marked as replayed."""
        return CommandResult(self.case_id, self.case_version, replayed=True)

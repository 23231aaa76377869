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

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eventsourcing.domain import Aggregate

from hub.domain.hall import Hall, decode_public_key
from hub.errors import InvalidInput, SignatureRefused

MAX_KEY_LENGTH = 128


@dataclass(frozen=True)
class HallSignature:
    """What a hall signed: the exact command bytes it sent and its Ed25519 signature."""

    command_bytes: bytes
    signature: bytes

    def verify(self, hall: Hall) -> VerifiedSignature:
        """Check the signature with the hall's current key; a rotated-out key is refused."""
        if _verifies(hall.current_key, self.signature, self.command_bytes):
            return VerifiedSignature(
                self.command_bytes, self.signature, hall_key_id(hall.current_key)
            )
        if any(_verifies(old, self.signature, self.command_bytes) for old in hall.public_keys):
            raise SignatureRefused(hall.hall_id, "signed with a rotated-out key")
        raise SignatureRefused(
            hall.hall_id, "does not verify over the command bytes with the hall's current key"
        )


@dataclass(frozen=True)
class VerifiedSignature:
    """A hall signature that verified, with the id of the key that made it."""

    command_bytes: bytes
    signature: bytes
    key_id: str


def _verifies(public_key_b64: str, signature: bytes, message: bytes) -> bool:
    public = Ed25519PublicKey.from_public_bytes(decode_public_key(public_key_b64))
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def hall_key_id(public_key_b64: str) -> str:
    """A short, stable id of a hall key: the first 8 bytes of SHA-256 of the raw key, in hex."""
    return hashlib.sha256(decode_public_key(public_key_b64)).hexdigest()[:16]


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
        key_id: str

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
        key_id: str = "",
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
            key_id=key_id,
        )

    @property
    def result(self) -> CommandResult:
        """The first result, marked as replayed."""
        return CommandResult(self.case_id, self.case_version, replayed=True)

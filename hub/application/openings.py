"""Opening the commitments a hall signed with the clear values sent beside the signed bytes.

A command that carries personal data (a submission's applicant, an agent's registration, a
booking's applicant and address) signs only salted commitments; the clear values travel in
``SignedCommand.personal`` as (wire path, value, salt). One function checks them for every such
command, so a value that does not open its commitment is refused the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hub.commands.model import PersonalValue
from hub.domain.commitments import MAX_SALT_BYTES, MIN_SALT_BYTES, opens
from hub.errors import InvalidInput


@dataclass(frozen=True)
class Opened:
    """The clear values by field name, their salts by wire path, and where each path was in
    ``personal`` (to name the value when a later check of the caller refuses it)."""

    values: dict[str, str]
    salts: dict[str, bytes]
    positions: dict[str, int]

    def refuse(self, path: str, reason: str) -> InvalidInput:
        """The error naming the sent value of ``path`` (never echoing it)."""
        return InvalidInput(f"personal[{self.positions[path]}].value", "<redacted>", reason)


def open_commitments(
    commitments: Any, wanted: Sequence[str], personal: Sequence[PersonalValue]
) -> Opened:
    """Each ``wanted`` wire path's clear value and salt, opening the hex commitment of the same
    (last) name on ``commitments``; InvalidInput naming the value at fault otherwise: a field
    not committed or sent twice, one missing, a salt of the wrong size, a value that does not
    open its commitment."""
    given: dict[str, tuple[int, PersonalValue]] = {}
    for number, value in enumerate(personal):
        if value.field not in wanted or value.field in given:
            raise InvalidInput(
                f"personal[{number}].field",
                value.field,
                f"not a committed field of this command (expected {', '.join(wanted)})",
            )
        given[value.field] = (number, value)
    values: dict[str, str] = {}
    salts: dict[str, bytes] = {}
    for path in wanted:
        if path not in given:
            raise InvalidInput("personal", path, "missing: send the clear value and its salt")
        number, value = given[path]
        if not MIN_SALT_BYTES <= len(value.salt) <= MAX_SALT_BYTES:
            raise InvalidInput(
                f"personal[{number}].salt",
                f"{len(value.salt)} bytes",
                f"use {MIN_SALT_BYTES}-{MAX_SALT_BYTES} random bytes",
            )
        name = path.rsplit(".", 1)[1]
        if not opens(bytes.fromhex(getattr(commitments, name)), path, value.salt, value.value):
            raise InvalidInput(
                f"personal[{number}].value",
                "<redacted>",
                f"does not open the signed commitment command.{path}",
            )
        values[name] = value.value
        salts[path] = value.salt
    return Opened(values, salts, {path: number for path, (number, _) in given.items()})

"""Building and signing wire commands on the node's side: the CLI's admin commands, the demo.

Hall systems sign with the SDK (:mod:`adapters.sdk`), which implements the same wire contract
independently; both are checked against the same vectors in docs/wire-api.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from tongban.v1 import case_exchange_pb2, common_pb2

from hub.commands.model import PersonalValue, SignedCommand
from hub.domain.commitments import commitment
from hub.domain.values import APPLICANT_FIELDS, Applicant


def seal_applicant(
    applicant: Applicant, action: str = "submit", part: str = "applicant"
) -> tuple[common_pb2.ApplicantCommitments, tuple[PersonalValue, ...]]:
    """Commitments to ``applicant``'s fields (fresh salts) and the clear values to send beside
    (``part``: the field holding them, ``person`` for an agent's registration)."""
    digests: dict[str, bytes] = {}
    values = []
    for field in APPLICANT_FIELDS:
        path = f"{action}.{part}.{field}"
        salt = os.urandom(32)
        value = getattr(applicant, field)
        digests[field] = commitment(path, salt, value)
        values.append(PersonalValue(path, value, salt))
    return common_pb2.ApplicantCommitments(**digests), tuple(values)


def seal_appointee(
    applicant: Applicant, address: str = ""
) -> tuple[common_pb2.AppointmentCommitments, tuple[PersonalValue, ...]]:
    """预约办: commitments to a booking's applicant and (a home visit) address, fresh salts."""
    digests: dict[str, bytes] = {}
    values = []
    clear = {field: getattr(applicant, field) for field in APPLICANT_FIELDS}
    if address:
        clear["address"] = address
    for field, value in clear.items():
        path = f"book_appointment.applicant.{field}"
        salt = os.urandom(32)
        digests[field] = commitment(path, salt, value)
        values.append(PersonalValue(path, value, salt))
    return common_pb2.AppointmentCommitments(**digests), tuple(values)


def sign_command(
    key: Ed25519PrivateKey,
    action: str,
    body: Message,
    *,
    node: str,
    idempotency_key: str,
    operator: str,
    hall_id: str = "",
    region: str = "",
    admin: str = "",
    issued_at: datetime | None = None,
    deferred: bool = False,
    personal: tuple[PersonalValue, ...] = (),
    agent: str = "",
) -> SignedCommand:
    """Serialise a ``Command`` once and sign exactly those bytes."""
    stamp = Timestamp()
    stamp.FromDatetime(issued_at or datetime.now(UTC))
    command = case_exchange_pb2.Command(
        header=case_exchange_pb2.CommandHeader(
            idempotency_key=idempotency_key,
            hall_id=hall_id,
            operator=operator,
            region=region,
            issued_at=stamp,
            node=node,
            deferred=deferred,
            admin=admin,
            agent=agent,
        )
    )
    getattr(command, action).CopyFrom(body)
    data = command.SerializeToString()
    return SignedCommand(data, key.sign(data), personal)


def body_of(action: str, fields: Mapping[str, object]) -> Message:
    """The action's message with ``fields`` set (``body_of("accept", {"case_id": ...})``)."""
    message_class = type(getattr(case_exchange_pb2.Command(), action))
    values = dict(fields)
    for name, value in values.items():
        if isinstance(value, datetime):  # e.g. an appointment's slot
            stamp = Timestamp()
            stamp.FromDatetime(value)
            values[name] = stamp
    message: Message = message_class(**values)
    return message


class CommandSigner:
    """One signer (a hall's operator, or an admin) making signed commands for one node.

    ``signer.sign("submit", item_code=..., applicant=Applicant(...), materials=[...])``: an
    ``applicant`` given in clear is turned into commitments, its values sent beside the bytes.
    """

    def __init__(
        self,
        key: Ed25519PrivateKey,
        *,
        node: str,
        operator: str,
        hall_id: str = "",
        region: str = "",
        admin: str = "",
    ) -> None:
        self.key = key
        self.node = node
        self.operator = operator
        self.hall_id = hall_id
        self.region = region
        self.admin = admin
        self._counter = 0

    def new_key(self) -> str:
        """A fresh idempotency key, as a hall system would generate."""
        self._counter += 1
        return f"{self.hall_id or self.admin}-{os.urandom(6).hex()}-{self._counter:05d}"

    def sign(
        self,
        action: str,
        *,
        idempotency_key: str | None = None,
        issued_at: datetime | None = None,
        deferred: bool = False,
        operator: str | None = None,
        personal: tuple[PersonalValue, ...] = (),
        acting_agent: str = "",
        agent_key: Ed25519PrivateKey | None = None,
        **fields: object,
    ) -> SignedCommand:
        """A signed ``action`` command with ``fields`` (wire field names); ``personal``: values
        sent beside the bytes (a locker pickup's code); ``acting_agent``: the hall's agent
        (代办员) who takes the step (the header's ``agent``); ``agent_key``: that agent's own
        signing key, when they were registered with one (it signs instead of the hall's)."""
        for part in ("applicant", "person"):
            person = fields.pop(part, None)
            if isinstance(person, Applicant) and action == "book_appointment":
                address = str(fields.pop("address", ""))
                fields[part], personal = seal_appointee(person, address)
            elif isinstance(person, Applicant):
                fields[part], personal = seal_applicant(person, action, part)
            elif person is not None:
                fields[part] = person
        return sign_command(
            self.key if agent_key is None else agent_key,
            action,
            body_of(action, fields),
            node=self.node,
            idempotency_key=idempotency_key or self.new_key(),
            operator=operator or self.operator,
            hall_id=self.hall_id,
            region=self.region,
            admin=self.admin,
            issued_at=issued_at,
            deferred=deferred,
            personal=personal,
            agent=acting_agent,
        )

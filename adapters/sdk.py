"""The hall SDK: a client for the CaseExchange service that signs every command.

    client = HallClient.connect("hub.example:7443", HallCredentials.from_files(...))
    reply = client.send("submit", item_code="200202001000", applicant=..., materials=[...])
    client.send("accept", case_id=reply.case_id)

What it does for the caller:

- mutual TLS with the hall's certificate (or an insecure channel for the demo node);
- builds the ``Command`` with a header (hall, operator, region, the node it is for, idempotency
  key, time), serialises it once, signs those exact bytes with the hall's Ed25519 key, and sends
  bytes and signature;
- never signs personal data: an applicant given in clear becomes one salted commitment per field
  in the signed bytes, and the clear values travel beside them (``SignedCommand.personal``), as
  docs/wire-api.md specifies;
- retries with exponential backoff on UNAVAILABLE (and DEADLINE_EXCEEDED), re-sending the very
  same signed bytes, so the hub's idempotency returns the first result instead of acting twice;
- a default deadline on every call.

It talks to the hub only through the generated ``tongban.v1`` stubs: no hub code is imported.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from tongban.v1 import case_exchange_pb2, case_exchange_pb2_grpc, common_pb2

T = TypeVar("T")

#: Status codes worth retrying: the request may not have reached the hub, or the hub was down.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

_CASE_EXCHANGE = case_exchange_pb2.DESCRIPTOR.services_by_name["CaseExchange"]

#: The RPC method of each hall command ("hand_off" → "HandOff"); the admin actions of the
#: Command oneof belong to the HallAdmin service, not to a hall.
RPC_OF_ACTION = {
    f.name: rpc
    for f in case_exchange_pb2.Command.DESCRIPTOR.oneofs_by_name["action"].fields
    if (rpc := "".join(part.title() for part in f.name.split("_")))
    in _CASE_EXCHANGE.methods_by_name
}


class SDKError(Exception):
    """Base class of the SDK's own errors (configuration, files)."""


@dataclass(frozen=True)
class TLSConfig:
    """PEM bytes of the CA, the hall's client certificate and its key."""

    ca: bytes
    certificate: bytes
    private_key: bytes
    #: Override the server name checked against the node certificate (tests, IP targets).
    server_name: str = ""

    @classmethod
    def from_files(cls, ca: Path, certificate: Path, private_key: Path) -> TLSConfig:
        """Read the three PEM files, naming the one that cannot be read."""

        def read(path: Path) -> bytes:
            try:
                return Path(path).read_bytes()
            except OSError as error:
                raise SDKError(f"cannot read {path}: {error.strerror}") from None

        return cls(read(ca), read(certificate), read(private_key))


@dataclass(frozen=True)
class HallCredentials:
    """Who the client acts as: the hall, its region, its signing key, and its TLS identity.

    ``node`` is the log origin of the node the hall belongs to (every command names it, and any
    other node refuses it); by default ``tongban/<the region's two province digits>``, a node's
    default origin.
    """

    hall_id: str
    region: str
    signing_key: Ed25519PrivateKey
    tls: TLSConfig | None = None
    node: str = ""

    @property
    def node_origin(self) -> str:
        """The node the hall's commands are for."""
        return self.node or f"tongban/{self.region[:2]}"

    @staticmethod
    def load_signing_key(path: Path) -> Ed25519PrivateKey:
        """Read a PKCS#8 PEM Ed25519 key (``tongban pki signing-key`` writes one)."""
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError) as error:
            raise SDKError(f"cannot load signing key {path}: {error}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SDKError(f"{path} is not an Ed25519 key")
        return key


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter, for retryable status codes only."""

    attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def run(self, call: Callable[[], T]) -> T:
        """Run ``call``, retrying retryable failures; the last error is raised."""
        delay = self.initial_backoff
        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except grpc.RpcError as error:
                if attempt == self.attempts or error.code() not in RETRYABLE:
                    raise
            self.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(self.max_backoff, delay * self.multiplier)
        raise AssertionError("unreachable")  # pragma: no cover


def open_channel(
    target: str, tls: TLSConfig | None, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A channel to the node: mutual TLS with ``tls``, or insecure (demo node) when None."""
    channel_options = list(options)
    if tls is None:
        return grpc.insecure_channel(target, options=channel_options)
    if tls.server_name:
        channel_options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.secure_channel(
        target,
        grpc.ssl_channel_credentials(tls.ca, tls.private_key, tls.certificate),
        options=channel_options,
    )


#: The domain tag of a personal-field commitment (docs/wire-api.md, "Commitments").
COMMITMENT_TAG = b"tongban/commitment/v1"
#: The applicant's personal fields, committed to in a Submit.
APPLICANT_FIELDS = ("name", "id_number", "phone")


def commitment(field: str, salt: bytes, value: str) -> bytes:
    """SHA-256("tongban/commitment/v1" || 0x00 || field || 0x00 || salt || UTF-8 value)."""
    return hashlib.sha256(
        COMMITMENT_TAG + b"\x00" + field.encode() + b"\x00" + salt + value.encode("utf-8")
    ).digest()


def commit_applicant(
    applicant: common_pb2.Applicant, action: str = "submit"
) -> tuple[common_pb2.ApplicantCommitments, list[case_exchange_pb2.PersonalValue]]:
    """Commitments to ``applicant`` (a fresh 32-byte salt per field) and the clear values."""
    digests: dict[str, bytes] = {}
    personal = []
    for name in APPLICANT_FIELDS:
        path = f"{action}.applicant.{name}"
        salt = os.urandom(32)
        value = getattr(applicant, name)
        digests[name] = commitment(path, salt, value)
        personal.append(case_exchange_pb2.PersonalValue(field=path, value=value, salt=salt))
    return common_pb2.ApplicantCommitments(**digests), personal


def sign_command(
    credentials: HallCredentials,
    action: str,
    body: Message,
    *,
    idempotency_key: str,
    operator: str,
    issued_at: datetime | None = None,
    deferred: bool = False,
    applicant: common_pb2.Applicant | None = None,
) -> case_exchange_pb2.SignedCommand:
    """Build the ``Command`` (header + ``body`` as ``action``), serialise it once, and sign
    exactly those bytes. Needs no channel, so an offline adapter can sign while queueing.

    ``applicant`` (a Submit's, in clear) is committed to in the signed bytes and sent beside
    them. ``deferred``: the command is forwarded later than it was signed (an outbox, a register
    import); its ``issued_at`` is kept as the time of the act.
    """
    stamp = Timestamp()
    if issued_at is None:
        stamp.GetCurrentTime()
    else:
        stamp.FromDatetime(issued_at)
    command = case_exchange_pb2.Command(
        header=case_exchange_pb2.CommandHeader(
            idempotency_key=idempotency_key,
            hall_id=credentials.hall_id,
            operator=operator,
            region=credentials.region,
            issued_at=stamp,
            node=credentials.node_origin,
            deferred=deferred,
        )
    )
    part = getattr(command, action)
    part.CopyFrom(body)
    personal: list[case_exchange_pb2.PersonalValue] = []
    if applicant is not None:
        commitments, personal = commit_applicant(applicant, action)
        part.applicant.CopyFrom(commitments)
    data = command.SerializeToString()
    return case_exchange_pb2.SignedCommand(
        command=data, signature=credentials.signing_key.sign(data), personal=personal
    )


class HallClient:
    """A hall's connection to its node."""

    def __init__(
        self,
        channel: grpc.Channel,
        credentials: HallCredentials,
        *,
        operator: str = "system",
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.channel = channel
        self.credentials = credentials
        self.operator = operator
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.stub = case_exchange_pb2_grpc.CaseExchangeStub(channel)

    @classmethod
    def connect(
        cls,
        target: str,
        credentials: HallCredentials,
        *,
        channel_options: Sequence[tuple[str, Any]] = (),
        **options: Any,
    ) -> HallClient:
        """Open a channel (mutual TLS when the credentials carry TLS files)."""
        return cls(open_channel(target, credentials.tls, channel_options), credentials, **options)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def __enter__(self) -> HallClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ commands

    def sign(
        self,
        action: str,
        body: Message | None = None,
        *,
        idempotency_key: str | None = None,
        operator: str | None = None,
        applicant: common_pb2.Applicant | None = None,
        **fields: Any,
    ) -> case_exchange_pb2.SignedCommand:
        """Build, serialise and sign a command; the bytes are what the hub verifies.

        A Submit's ``applicant`` is given in clear; the SDK commits to it (see sign_command).
        """
        if action not in RPC_OF_ACTION:
            raise SDKError(f"unknown action {action!r}; known: {', '.join(sorted(RPC_OF_ACTION))}")
        if body is None:
            body = type(getattr(case_exchange_pb2.Command(), action))(**fields)
        return sign_command(
            self.credentials,
            action,
            body,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
            operator=operator or self.operator,
            applicant=applicant,
        )

    def send_signed(
        self, action: str, signed: case_exchange_pb2.SignedCommand
    ) -> case_exchange_pb2.CommandReply:
        """Send an already signed command, retrying the same bytes on UNAVAILABLE."""
        method = getattr(self.stub, RPC_OF_ACTION[action])
        reply: case_exchange_pb2.CommandReply = self.retry.run(
            lambda: method(signed, timeout=self.timeout)
        )
        return reply

    def send(
        self,
        action: str,
        body: Message | None = None,
        *,
        idempotency_key: str | None = None,
        operator: str | None = None,
        applicant: common_pb2.Applicant | None = None,
        **fields: Any,
    ) -> case_exchange_pb2.CommandReply:
        """Sign and send one command: ``send("accept", case_id=...)``."""
        signed = self.sign(
            action,
            body,
            idempotency_key=idempotency_key,
            operator=operator,
            applicant=applicant,
            **fields,
        )
        return self.send_signed(action, signed)

    # ------------------------------------------------------------------ queries

    def get_case(self, case_id: str) -> case_exchange_pb2.CaseView:
        """The case's current state."""
        request = case_exchange_pb2.GetCaseRequest(case_id=case_id)
        view: case_exchange_pb2.CaseView = self.retry.run(
            lambda: self.stub.GetCase(request, timeout=self.timeout)
        )
        return view

    def history(self, case_id: str) -> case_exchange_pb2.CaseHistory:
        """The case's stored events."""
        request = case_exchange_pb2.GetCaseRequest(case_id=case_id)
        history: case_exchange_pb2.CaseHistory = self.retry.run(
            lambda: self.stub.GetCaseHistory(request, timeout=self.timeout)
        )
        return history

    def items(self) -> Iterable[Any]:
        """The node's service-item catalogue."""
        request = case_exchange_pb2.ListItemsRequest()
        response: case_exchange_pb2.ListItemsResponse = self.retry.run(
            lambda: self.stub.ListItems(request, timeout=self.timeout)
        )
        return list(response.items)

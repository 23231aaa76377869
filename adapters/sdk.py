"""The hall SDK: a client for the CaseExchange service that signs every command.

    credentials = HallCredentials(hall_id, region, HallCredentials.load_signing_key(path), tls)
    with HallClient.connect("hub.example:7443", credentials) as client:
        reply = client.send("submit", idempotency_key="room-2024-0031", item_code="200202001000",
                            applicant=..., materials=[...])
        client.send("accept", idempotency_key="room-2024-0031/accept", case_id=reply.case_id)

What it does for the caller:

- mutual TLS with the hall's certificate (or an insecure channel for the demo node);
- builds the ``Command`` with a header (hall, operator, region, the node it is for, idempotency
  key, time), serialises it once, signs those exact bytes with the hall's Ed25519 key, and sends
  bytes and signature;
- never signs personal data: an applicant given in clear becomes one salted commitment per field
  in the signed bytes, and the clear values travel beside them (``SignedCommand.personal``), as
  docs/wire-api.md specifies;
- requires an idempotency key for every command it signs (there is no random default: a key the
  caller derives from its own record is what makes the caller's own retry safe), and checks it
  against the wire contract (8-128 printable ASCII characters);
- retries on :data:`adapters.errors.RETRYABLE_CODES` with gRPC's own retry policy
  (:class:`RetryPolicy`, the channel's service config), re-sending the very same signed bytes,
  so the node's idempotency returns the first result instead of acting twice;
- a default deadline on every call (it bounds the call with all its attempts);
- turns every failed call into a :class:`adapters.errors.NodeRefused` (one mapping,
  :func:`adapters.errors.from_rpc_error`): no ``grpc.RpcError`` leaves its methods. Its own
  mistakes are :class:`~adapters.errors.ConfigError` (files, keys) and
  :class:`~adapters.errors.InputError` (an unknown action, a missing key, a wrong field).

It talks to the hub only through the generated ``tongban.v1`` stubs: no hub code is imported.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import mimetypes
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from tongban.v1 import (
    case_exchange_pb2,
    case_exchange_pb2_grpc,
    common_pb2,
    materials_pb2,
    materials_pb2_grpc,
)

from adapters.errors import (
    RETRYABLE_CODES,
    ConfigError,
    InputError,
    MaterialMismatch,
    from_rpc_error,
)

T = TypeVar("T")

_CASE_EXCHANGE = case_exchange_pb2.DESCRIPTOR.services_by_name["CaseExchange"]

#: The RPC method of each hall command ("hand_off" → "HandOff"); the admin actions of the
#: Command oneof belong to the HallAdmin service, not to a hall.
RPC_OF_ACTION = {
    f.name: rpc
    for f in case_exchange_pb2.Command.DESCRIPTOR.oneofs_by_name["action"].fields
    if (rpc := "".join(part.title() for part in f.name.split("_")))
    in _CASE_EXCHANGE.methods_by_name
}


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
                raise ConfigError(f"cannot read {path}: {error.strerror}") from None

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
            raise ConfigError(f"cannot load signing key {path}: {error}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path} is not an Ed25519 key")
        return key


#: gRPC's own ceiling on ``maxAttempts`` (a larger value would silently count as 5).
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is retried on :data:`adapters.errors.RETRYABLE_CODES`: gRPC's own retry
    policy, set on the channel as its service config (:meth:`service_config`).

    gRPC re-sends the very same request (the same signed bytes) after a jittered exponential
    backoff — ``initial_backoff`` growing by ``multiplier`` up to ``max_backoff`` seconds — up to
    ``attempts`` times in all, within the call's deadline; every other code ends the call at
    once. ``attempts=1`` turns retries off. :meth:`delays` gives the same schedule to a loop
    that waits between passes itself (the village forwarder), so there is one backoff.
    """

    attempts: int = MAX_ATTEMPTS
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.attempts <= MAX_ATTEMPTS:
            raise ConfigError(
                f"retry attempts must be 1 to {MAX_ATTEMPTS} (gRPC's limit), got {self.attempts}"
            )
        if not 0 < self.initial_backoff <= self.max_backoff or self.multiplier < 1:
            raise ConfigError(
                "retry backoff: need 0 < initial_backoff <= max_backoff and multiplier >= 1"
            )

    def service_config(self) -> str:
        """The channel's ``grpc.service_config``: this policy for every method."""
        method: dict[str, Any] = {"name": [{}]}
        if self.attempts > 1:
            method["retryPolicy"] = {
                "maxAttempts": self.attempts,
                "initialBackoff": f"{self.initial_backoff:.3f}s",
                "maxBackoff": f"{self.max_backoff:.3f}s",
                "backoffMultiplier": self.multiplier,
                "retryableStatusCodes": sorted(code.name for code in RETRYABLE_CODES),
            }
        return json.dumps({"methodConfig": [method]})

    def delays(self) -> Iterator[float]:
        """Waits that grow from ``initial_backoff`` to ``max_backoff``, each jittered down to
        half (many halls coming back at once do not all call at the same moment); endless."""
        delay = self.initial_backoff
        while True:
            yield delay * random.uniform(0.5, 1.0)
            delay = min(self.max_backoff, delay * self.multiplier)


def open_channel(
    target: str,
    tls: TLSConfig | None,
    options: Sequence[tuple[str, Any]] = (),
    *,
    retry: RetryPolicy | None = None,
) -> grpc.Channel:
    """A channel to the node: mutual TLS with ``tls``, or insecure (demo node) when None;
    calls on it are retried by ``retry`` (default: :class:`RetryPolicy` ``()``)."""
    channel_options: list[tuple[str, Any]] = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", (retry or RetryPolicy()).service_config()),
        *options,
    ]
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
    applicant: common_pb2.Applicant, action: str = "submit", part: str = "applicant"
) -> tuple[common_pb2.ApplicantCommitments, list[case_exchange_pb2.PersonalValue]]:
    """Commitments to ``applicant`` (a fresh 32-byte salt per field) and the clear values
    (``part``: the field holding them, ``person`` for an agent's registration)."""
    digests: dict[str, bytes] = {}
    personal = []
    for name in APPLICANT_FIELDS:
        path = f"{action}.{part}.{name}"
        salt = os.urandom(32)
        value = getattr(applicant, name)
        digests[name] = commitment(path, salt, value)
        personal.append(case_exchange_pb2.PersonalValue(field=path, value=value, salt=salt))
    return common_pb2.ApplicantCommitments(**digests), personal


def commit_appointee(
    applicant: common_pb2.Applicant, address: str = ""
) -> tuple[common_pb2.AppointmentCommitments, list[case_exchange_pb2.PersonalValue]]:
    """预约办: commitments to a booking's applicant and (a home visit) address, fresh salts."""
    clear = {name: getattr(applicant, name) for name in APPLICANT_FIELDS}
    if address:
        clear["address"] = address
    digests: dict[str, bytes] = {}
    personal = []
    for name, value in clear.items():
        path = f"book_appointment.applicant.{name}"
        salt = os.urandom(32)
        digests[name] = commitment(path, salt, value)
        personal.append(case_exchange_pb2.PersonalValue(field=path, value=value, salt=salt))
    return common_pb2.AppointmentCommitments(**digests), personal


#: The domain tag of a locker pickup code's keyed hash (docs/certificates.md, "Delivery").
PICKUP_CODE_TAG = b"tongban/pickup-code/v1"
#: The field under which a pickup sends the typed code (and the locker's key as its salt).
PICKUP_CODE_FIELD = "pick_up_from_locker.pickup_code"
#: The field under which a kiosk sends the ID number it read from the applicant's card.
KIOSK_ID_NUMBER_FIELD = "deliver.applicant.id_number"


def pickup_code_hash(case_id: str, code: str, key: bytes) -> str:
    """What a hall signs when it deposits a result in a locker: HMAC-SHA256 under the locker's
    own ``key`` (16-64 bytes, kept by the locker system) of the case id and the pickup code."""
    message = PICKUP_CODE_TAG + b"\x00" + case_id.encode() + b"\x00" + code.encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def check_idempotency_key(key: str) -> str:
    """``key`` if it is a usable idempotency key (8-128 printable ASCII characters, the wire
    contract); else :class:`~adapters.errors.InputError` naming ``idempotency_key``."""
    if not isinstance(key, str) or not key:
        raise InputError(
            "idempotency_key",
            "required for every command: derive it from your own record of the act (a request "
            "id, a register number), so that your own retry is recognised instead of acting twice",
        )
    if not (8 <= len(key) <= 128 and key.isascii() and key.isprintable()):
        raise InputError(
            "idempotency_key", f"{key!r}: use 8-128 printable ASCII characters (docs/wire-api.md)"
        )
    return key


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
    address: str = "",
    pickup_code: tuple[str, bytes] | None = None,
    id_card_read: str | None = None,
    agent: str = "",
    agent_key: Ed25519PrivateKey | None = None,
) -> case_exchange_pb2.SignedCommand:
    """Build the ``Command`` (header + ``body`` as ``action``), serialise it once, and sign
    exactly those bytes. Needs no channel, so an offline adapter can sign while queueing.

    ``agent`` names the hall's 代办员 who takes the step. An agent registered with a key of
    their own signs with it: give it as ``agent_key`` (the node refuses the hall's signature on
    that agent's steps); an agent registered without one acts under the hall's key.

    ``applicant`` (a Submit's, in clear) is committed to in the signed bytes and sent beside
    them; ``pickup_code`` (a locker pickup's typed code and the locker's key) and
    ``id_card_read`` (the ID number a kiosk read before printing) are sent beside them only.
    ``deferred``: the command is forwarded later than it was signed (an outbox, a register
    import); its ``issued_at`` is kept as the time of the act. ``idempotency_key`` is required
    (:func:`check_idempotency_key`).
    """
    check_idempotency_key(idempotency_key)
    if agent_key is not None and not agent:
        raise InputError("agent", "an agent's key signs only a step that names the agent")
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
            agent=agent,
        )
    )
    part = getattr(command, action)
    part.CopyFrom(body)
    personal: list[case_exchange_pb2.PersonalValue] = []
    if applicant is not None and action == "book_appointment":
        # 预约办: the applicant and, for a home visit, its ``address``.
        booked, personal = commit_appointee(applicant, address)
        part.applicant.CopyFrom(booked)
    elif applicant is not None:
        # An agent's registration commits to the agent (``person``), a submission to the
        # applicant: the same three fields.
        field = "person" if action == "register_agent" else "applicant"
        commitments, personal = commit_applicant(applicant, action, field)
        getattr(part, field).CopyFrom(commitments)
    if pickup_code is not None:
        code, key = pickup_code
        personal.append(
            case_exchange_pb2.PersonalValue(field=PICKUP_CODE_FIELD, value=code, salt=key)
        )
    if id_card_read is not None:
        personal.append(
            case_exchange_pb2.PersonalValue(field=KIOSK_ID_NUMBER_FIELD, value=id_card_read)
        )
    data = command.SerializeToString()
    signing_key = credentials.signing_key if agent_key is None else agent_key
    return case_exchange_pb2.SignedCommand(
        command=data, signature=signing_key.sign(data), personal=personal
    )


class HallClient:
    """A hall's connection to its node.

    Every method either returns the node's answer or raises an
    :class:`~adapters.errors.AdapterError`: a failed call is a
    :class:`~adapters.errors.NodeRefused` (after the channel's retry policy), never a
    ``grpc.RpcError``. ``stub`` is the raw generated stub, for callers that want gRPC itself
    (futures, streaming); its errors are gRPC's.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        credentials: HallCredentials,
        *,
        operator: str = "system",
        timeout: float = 10.0,
    ) -> None:
        """Use ``channel`` as it is; open it with :func:`open_channel` (or use :meth:`connect`)
        to have calls retried."""
        self.channel = channel
        self.credentials = credentials
        self.operator = operator
        self.timeout = timeout
        self.stub = case_exchange_pb2_grpc.CaseExchangeStub(channel)
        #: The raw Materials stub (uploads and downloads of material files).
        self.materials = materials_pb2_grpc.MaterialsStub(channel)

    @classmethod
    def connect(
        cls,
        target: str,
        credentials: HallCredentials,
        *,
        retry: RetryPolicy | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        operator: str = "system",
        timeout: float = 10.0,
    ) -> HallClient:
        """Open a channel (mutual TLS when the credentials carry TLS files) whose calls are
        retried by ``retry`` (default :class:`RetryPolicy` ``()``; ``attempts=1``: no retries);
        ``timeout`` bounds each call with all its attempts."""
        channel = open_channel(target, credentials.tls, channel_options, retry=retry)
        return cls(channel, credentials, operator=operator, timeout=timeout)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def __enter__(self) -> HallClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, rpc: str, request: Message) -> Any:
        """One unary call to the node: a failure leaves as a NodeRefused."""
        return self._guarded(lambda: getattr(self.stub, rpc)(request, timeout=self.timeout))

    def _guarded(self, call: Callable[[], T]) -> T:
        """The one place the client calls the node (a unary call, or a whole material
        transfer): a failed call leaves as a NodeRefused (:func:`from_rpc_error`)."""
        try:
            return call()
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    # ------------------------------------------------------------------ commands

    def sign(
        self,
        action: str,
        body: Message | None = None,
        *,
        idempotency_key: str,
        operator: str | None = None,
        applicant: common_pb2.Applicant | None = None,
        address: str = "",
        pickup_code: tuple[str, bytes] | None = None,
        id_card_read: str | None = None,
        acting_agent: str = "",
        agent_key: Ed25519PrivateKey | None = None,
        **fields: Any,
    ) -> case_exchange_pb2.SignedCommand:
        """Build, serialise and sign a command; the bytes are what the node verifies.

        ``idempotency_key`` is required: the same key with the same arguments is answered with
        the first result, so derive it from the caller's own record of the act. A Submit's
        ``applicant`` is given in clear; the SDK commits to it (see :func:`sign_command`).
        ``acting_agent`` names the 代办员 who takes the step; ``agent_key`` is that agent's own
        signing key when they were registered with one (it then signs instead of the hall).
        """
        if action not in RPC_OF_ACTION:
            raise InputError(
                "action", f"unknown action {action!r}; known: {', '.join(sorted(RPC_OF_ACTION))}"
            )
        if body is None:
            try:
                body = type(getattr(case_exchange_pb2.Command(), action))(**fields)
            except (TypeError, ValueError) as error:
                raise InputError(action, str(error)) from None
        return sign_command(
            self.credentials,
            action,
            body,
            idempotency_key=idempotency_key,
            operator=operator or self.operator,
            applicant=applicant,
            address=address,
            pickup_code=pickup_code,
            id_card_read=id_card_read,
            agent=acting_agent,
            agent_key=agent_key,
        )

    def send_signed(
        self, action: str, signed: case_exchange_pb2.SignedCommand
    ) -> case_exchange_pb2.CommandReply:
        """Send an already signed command (retried as the very same bytes)."""
        if action not in RPC_OF_ACTION:
            raise InputError(
                "action", f"unknown action {action!r}; known: {', '.join(sorted(RPC_OF_ACTION))}"
            )
        reply: case_exchange_pb2.CommandReply = self._call(RPC_OF_ACTION[action], signed)
        return reply

    def send(
        self,
        action: str,
        body: Message | None = None,
        *,
        idempotency_key: str,
        operator: str | None = None,
        applicant: common_pb2.Applicant | None = None,
        address: str = "",
        pickup_code: tuple[str, bytes] | None = None,
        id_card_read: str | None = None,
        acting_agent: str = "",
        agent_key: Ed25519PrivateKey | None = None,
        **fields: Any,
    ) -> case_exchange_pb2.CommandReply:
        """Sign and send one command: ``send("accept", idempotency_key=..., case_id=...)``.

        ``address``: a home visit's (预约办 ``book_appointment``), committed to like the
        applicant."""
        signed = self.sign(
            action,
            body,
            idempotency_key=idempotency_key,
            operator=operator,
            applicant=applicant,
            address=address,
            pickup_code=pickup_code,
            id_card_read=id_card_read,
            acting_agent=acting_agent,
            agent_key=agent_key,
            **fields,
        )
        return self.send_signed(action, signed)

    # ------------------------------------------------------------------ queries

    def get_case(self, case_id: str) -> case_exchange_pb2.CaseView:
        """The case's current state."""
        view: case_exchange_pb2.CaseView = self._call(
            "GetCase", case_exchange_pb2.GetCaseRequest(case_id=case_id)
        )
        return view

    def history(self, case_id: str) -> case_exchange_pb2.CaseHistory:
        """The case's stored events."""
        history: case_exchange_pb2.CaseHistory = self._call(
            "GetCaseHistory", case_exchange_pb2.GetCaseRequest(case_id=case_id)
        )
        return history

    def appointments(
        self,
        day: str,
        *,
        hall_id: str = "",
        state: common_pb2.AppointmentState.ValueType = common_pb2.APPOINTMENT_STATE_UNSPECIFIED,
    ) -> case_exchange_pb2.ListAppointmentsResponse:
        """预约办: the hall's appointments of ``day`` (YYYY-MM-DD, China time), by start."""
        response: case_exchange_pb2.ListAppointmentsResponse = self._call(
            "ListAppointments",
            case_exchange_pb2.ListAppointmentsRequest(
                hall_id=hall_id or self.credentials.hall_id, day=day, state=state
            ),
        )
        return response

    def items(self) -> Iterable[Any]:
        """The node's service-item catalogue."""
        response: case_exchange_pb2.ListItemsResponse = self._call(
            "ListItems", case_exchange_pb2.ListItemsRequest()
        )
        return list(response.items)

    # ------------------------------------------------------------------ material files

    def upload_material(
        self,
        source: Path | str | IO[bytes],
        *,
        name: str = "",
        media_type: str = "",
    ) -> common_pb2.Material:
        """Upload a material file (a scan, a PDF, 高拍仪 output) to the node, by its digest.

        ``source`` is a path or a binary file object that can seek (the file is read twice:
        once for its SHA-256, once to send it). Returns the ``Material`` to list in a command:
        ``name`` defaults to the file name, ``media_type`` is guessed from the file name. The node
        checks size and digest and keeps each distinct file once; uploading a file again is
        harmless, so after a transient failure (:class:`~adapters.errors.TransientFailure`,
        raised when the channel's retry policy could not help: gRPC replays a stream only while
        its first 256 KiB are buffered) calling it again is safe. Every failure is a
        :class:`~adapters.errors.NodeRefused`.
        """
        with _opened(source, "rb") as handle:
            label = name or _file_name(source)
            if not label:
                raise InputError("name", "give the material's name (the file object has none)")
            start = handle.tell()
            sha256, size = _digest_of(handle)
            if size == 0:
                raise InputError("source", f"{label!r} is empty: a material has at least one byte")

            def messages() -> Iterator[materials_pb2.UploadChunk]:
                handle.seek(start)
                header = materials_pb2.MaterialHeader(sha256=sha256, size=size)
                yield materials_pb2.UploadChunk(header=header)
                for chunk in iter(lambda: handle.read(TRANSFER_CHUNK), b""):
                    yield materials_pb2.UploadChunk(data=chunk)

            self._guarded(
                lambda: self.materials.Upload(messages(), timeout=self._transfer_timeout(size))
            )
        guessed = mimetypes.guess_type(_file_name(source) or label)[0]
        kind = media_type or guessed or "application/octet-stream"
        return common_pb2.Material(name=label, sha256=sha256, media_type=kind, size=size)

    def download_material(
        self,
        case_id: str,
        sha256: str,
        destination: Path | str | IO[bytes],
        *,
        timeout: float = 600.0,
    ) -> int:
        """Download a material of a case this hall is a party to; returns its size.

        ``destination`` is a path (written to a temporary file beside it and renamed into place
        only once every byte matched ``sha256``, so a failed download leaves nothing there) or
        a binary file object (written as the bytes arrive: discard it when this raises).
        :class:`~adapters.errors.MaterialMismatch` when the bytes do not match the digest;
        :class:`~adapters.errors.CaseNotFound` (NOT_FOUND) when the node does not give this hall
        the file — no such case or file, or not this hall's case, alike. ``timeout`` bounds the
        call; after a transient failure, calling it again starts the download afresh.
        """
        request = materials_pb2.DownloadRequest(case_id=case_id, sha256=sha256)
        if not isinstance(destination, str | Path):
            return self._guarded(
                lambda: _receive(
                    self.materials.Download(request, timeout=timeout), sha256, destination
                )
            )
        target = Path(destination)
        partial = target.with_name(f".{target.name}.part-{os.urandom(4).hex()}")
        try:

            def attempt() -> int:
                with partial.open("wb") as handle:
                    replies = self.materials.Download(request, timeout=timeout)
                    size = _receive(replies, sha256, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
                return size

            size = self._guarded(attempt)
            os.replace(partial, target)
            return size
        except OSError as error:
            raise ConfigError(f"cannot write {target}: {error.strerror}") from None
        finally:
            partial.unlink(missing_ok=True)

    def _transfer_timeout(self, size: int) -> float:
        """A transfer's deadline: the client's timeout, and more for a large file."""
        return max(self.timeout, self.timeout + size / TRANSFER_MIN_RATE)


#: Bytes per message of a material transfer (gRPC's message limit is 4 MiB).
TRANSFER_CHUNK = 1024 * 1024
#: The slowest link a material transfer's deadline allows for (bytes per second).
TRANSFER_MIN_RATE = 256 * 1024


def _file_name(source: Path | str | IO[bytes]) -> str:
    if isinstance(source, str | Path):
        return Path(source).name
    name = getattr(source, "name", "")
    return Path(name).name if isinstance(name, str) else ""


class _opened:  # noqa: N801 - used like open()
    """A path opened (and closed), or a caller's file object used as it is."""

    def __init__(self, source: Path | str | IO[bytes], mode: str) -> None:
        self.source = source
        self.mode = mode
        self.handle: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        if isinstance(self.source, str | Path):
            try:
                self.handle = Path(self.source).open(self.mode)
            except OSError as error:
                raise InputError("source", f"cannot read {self.source}: {error.strerror}") from None
            return self.handle
        if not self.source.seekable():
            raise InputError(
                "source", "the file object cannot seek (it is read twice: digest, then send)"
            )
        return self.source

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()


def _digest_of(handle: IO[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for chunk in iter(lambda: handle.read(TRANSFER_CHUNK), b""):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _receive(replies: Iterable[Any], sha256: str, sink: IO[bytes]) -> int:
    """Write a download's bytes to ``sink``, checking them against ``sha256``."""
    replies = iter(replies)
    first = next(replies, None)
    if first is None or first.WhichOneof("part") != "header":
        raise MaterialMismatch(sha256, "the node's reply does not start with the file's header")
    size = int(first.header.size)
    if first.header.sha256 != sha256:
        raise MaterialMismatch(sha256, f"the node sends {first.header.sha256} instead")
    digest = hashlib.sha256()
    received = 0
    for reply in replies:
        data = reply.data
        received += len(data)
        if received > size:
            raise MaterialMismatch(sha256, f"more than the {size} bytes announced")
        digest.update(data)
        sink.write(data)
    if received != size:
        raise MaterialMismatch(sha256, f"{received} bytes arrived, {size} were announced")
    if digest.hexdigest() != sha256:
        raise MaterialMismatch(sha256, f"the bytes hash to {digest.hexdigest()}")
    return size

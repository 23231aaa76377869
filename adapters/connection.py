"""What every adapter shares: how to reach the hub, and how to read the hub's refusals.

The adapters never import ``hub``; they know the node only through the wire API. This module
holds the pieces all three adapters need on top of :mod:`adapters.sdk`:

- :class:`HubConnection`, the frozen connection settings (target, hall identity, key files),
  built once by :mod:`adapters.cli` from flags and environment variables, so that nothing deep
  in an adapter reads the environment;
- :func:`open_client`, which opens the SDK client with channel options suited to adapters that
  must notice quickly when a node comes back after a long outage;
- :class:`RpcFailure`, a plain reading of a failed call (status code, message, the field
  violations the hub packs into ``google.rpc.Status`` details), so each adapter can translate a
  refusal into its vendor's own field names;
- :class:`ItemCatalogue`, a cached view of the node's service-item catalogue (``ListItems``),
  used to check a vendor's 办件类型 code against the item's kind.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tongban.v1 import case_exchange_pb2, common_pb2

from adapters.sdk import (
    HallClient,
    HallCredentials,
    RetryPolicy,
    SDKError,
    TLSConfig,
    open_channel,
)

#: gRPC keeps reconnecting a broken channel with exponential backoff, by default up to two
#: minutes apart. An adapter that waited out a long outage should see the node within seconds
#: of its return, so the backoff is capped much lower.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 3000),
)

#: A node's log origin: printable ASCII without blanks or ``+`` (the C2SP note origin rules).
_NODE_ORIGIN = re.compile(r"[\x21-\x2a\x2c-\x7e]{1,128}")

#: Codes after which the same command may succeed later unchanged: the node was unreachable or
#: busy, the call ran out of time, or another writer changed the case first (ABORTED).
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


class AdapterError(Exception):
    """A configuration or input problem an adapter reports to its operator (no traceback)."""


@dataclass(frozen=True)
class HubConnection:
    """How an adapter reaches its node and whom it acts as.

    ``signing_key`` is the hall's Ed25519 command-signing key (PKCS#8 PEM). ``ca``,
    ``certificate`` and ``private_key`` are the mutual-TLS files issued by the node's CA; they
    are required unless ``insecure`` is set (a demo node started with ``--insecure``). ``node``
    is the log origin of the node the hall's commands are for (every command names it, and any
    other node refuses it); empty means the SDK's default, ``tongban/<the region's first two
    digits>``.
    """

    hall_id: str
    region: str
    signing_key: Path | None
    target: str = ""
    ca: Path | None = None
    certificate: Path | None = None
    private_key: Path | None = None
    server_name: str = ""
    insecure: bool = False
    operator: str = "adapter"
    timeout: float = 10.0
    retry_attempts: int = 5
    node: str = ""

    def signing_credentials(self) -> HallCredentials:
        """Hall identity and signing key only: enough to sign commands while offline."""
        return self._credentials(with_tls=False)

    def credentials(self) -> HallCredentials:
        """The SDK credentials; names the setting that is missing or unreadable."""
        return self._credentials(with_tls=not self.insecure)

    def _credentials(self, *, with_tls: bool) -> HallCredentials:
        if not self.hall_id:
            raise AdapterError("the hall id is not set (--hall-id or TONGBAN_ADAPTER_HALL_ID)")
        if not (len(self.region) == 12 and self.region.isdigit()):
            raise AdapterError(
                f"the hall's region must be a 12-digit code, got {self.region!r} "
                "(--region or TONGBAN_ADAPTER_REGION)"
            )
        if self.node and not _NODE_ORIGIN.fullmatch(self.node):
            raise AdapterError(
                f"the node origin {self.node!r} is not a log origin such as tongban/43 "
                "(--node or TONGBAN_NODE)"
            )
        try:
            if self.signing_key is None:
                raise AdapterError(
                    "the hall's signing key is not set "
                    "(--signing-key or TONGBAN_ADAPTER_SIGNING_KEY)"
                )
            key = HallCredentials.load_signing_key(self.signing_key)
            tls = None
            if with_tls:
                ca, certificate, private_key = self.ca, self.certificate, self.private_key
                if ca is None or certificate is None or private_key is None:
                    given = {"--ca": ca, "--cert": certificate, "--key": private_key}
                    missing = [flag for flag, value in given.items() if value is None]
                    raise AdapterError(
                        f"mutual TLS needs {', '.join(missing)} (or --insecure for a demo node)"
                    )
                tls = TLSConfig.from_files(ca, certificate, private_key)
                if self.server_name:
                    tls = TLSConfig(tls.ca, tls.certificate, tls.private_key, self.server_name)
        except SDKError as error:
            raise AdapterError(str(error)) from None
        return HallCredentials(self.hall_id, self.region, key, tls, node=self.node)


def open_client(
    connection: HubConnection,
    *,
    credentials: HallCredentials | None = None,
    retry: RetryPolicy | None = None,
) -> HallClient:
    """Open an SDK client for ``connection``, with :data:`CHANNEL_OPTIONS` on its channel."""
    if not connection.target:
        raise AdapterError("the node address is not set (--target or TONGBAN_ADAPTER_TARGET)")
    credentials = credentials or connection.credentials()
    channel = open_channel(connection.target, credentials.tls, CHANNEL_OPTIONS)
    return HallClient(
        channel,
        credentials,
        operator=connection.operator,
        timeout=connection.timeout,
        retry=retry or RetryPolicy(attempts=max(1, connection.retry_attempts)),
    )


@dataclass(frozen=True)
class RpcFailure:
    """A failed gRPC call, read once: code, message and the hub's machine-readable details."""

    code: grpc.StatusCode
    message: str
    #: ``(field path, description)`` from a ``google.rpc.BadRequest`` detail: full wire paths,
    #: e.g. ``("command.submit.materials[0].sha256", ...)``, ``("command.header.issued_at",
    #: ...)`` or, for a clear personal value sent beside the signed bytes, ``("personal[1].value",
    #: "'<redacted>': ...")`` (see :meth:`resolve_personal`).
    violations: tuple[tuple[str, str], ...] = ()
    #: ``ErrorInfo.reason``: the hub's error class, e.g. ``IdempotencyConflict``.
    reason: str = ""

    @property
    def transient(self) -> bool:
        """Whether sending the very same command again later may succeed."""
        return self.code in TRANSIENT_CODES

    @classmethod
    def from_error(cls, error: grpc.RpcError) -> RpcFailure:
        """Read ``error``; anything that is not a proper ``grpc.Call`` counts as UNKNOWN."""
        code_of = getattr(error, "code", None)
        details_of = getattr(error, "details", None)
        code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
        if not isinstance(code, grpc.StatusCode):
            code = grpc.StatusCode.UNKNOWN
        message = (details_of() if callable(details_of) else "") or code.name
        violations: list[tuple[str, str]] = []
        reason = ""
        status = None
        if isinstance(error, grpc.Call):
            try:
                status = rpc_status.from_call(error)
            except ValueError:
                # A status detail that contradicts the call's own code: ignore the detail.
                status = None
        details: list[Any] = list(status.details) if status is not None else []
        for detail in details:
            bad_request = error_details_pb2.BadRequest()
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(bad_request):
                violations.extend((v.field, v.description) for v in bad_request.field_violations)
            elif detail.Unpack(info):
                reason = info.reason
        return cls(code, str(message), tuple(violations), reason)

    def resolve_personal(self, personal: Sequence[case_exchange_pb2.PersonalValue]) -> RpcFailure:
        """The failure with ``personal[i]...`` violation paths named by the field they carry.

        The node names a refused clear value by its place in ``SignedCommand.personal``
        (``personal[1].value``); with the values that were sent, that becomes the committed
        field's own path (``command.submit.applicant.id_number``), which an adapter can map to
        its vendor's field. Descriptions are kept as they are (the node never echoes a value).
        """
        resolved = []
        for path, description in self.violations:
            match = _PERSONAL_PATH.fullmatch(path)
            if match and int(match.group(1)) < len(personal):
                resolved.append((f"command.{personal[int(match.group(1))].field}", description))
            else:
                resolved.append((path, description))
        return replace(self, violations=tuple(resolved))

    def field_suffix(self) -> str:
        """The last segments of the first violation's field after the action name.

        ``command.submit.applicant.id_number`` → ``applicant.id_number``,
        ``command.header.issued_at`` → ``issued_at``; a field the application named directly
        (``item_code``) is returned as it is.
        """
        if not self.violations:
            return ""
        field = self.violations[0][0]
        parts = field.split(".")
        if parts[0] == "command" and len(parts) > 2:
            parts = parts[2:]
        return ".".join(parts)


_PERSONAL_PATH = re.compile(r"personal\[(\d+)\](?:\.\w+)?")


class ItemCatalogue:
    """The node's service-item catalogue, fetched on first use and refreshed when a code is
    missing (at most every ``refresh_after`` seconds, so an unknown code cannot hammer the node).
    Thread-safe: the gateway serves requests on many threads.
    """

    def __init__(
        self,
        fetch: Callable[[], list[common_pb2.ServiceItem]],
        *,
        refresh_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._refresh_after = refresh_after
        self._clock = clock
        self._items: dict[str, common_pb2.ServiceItem] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    @classmethod
    def of_client(cls, client: HallClient, **options: Any) -> ItemCatalogue:
        """A catalogue read through ``client.items()``."""
        return cls(lambda: list(client.items()), **options)

    def get(self, code: str) -> common_pb2.ServiceItem | None:
        """The item with ``code``, or None; raises ``grpc.RpcError`` when the node is away."""
        with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or (
                code not in self._items and now - self._fetched_at >= self._refresh_after
            )
            if stale:
                self._items = {item.code: item for item in self._fetch()}
                self._fetched_at = now
            return self._items.get(code)


def kind_name(kind: int) -> str:
    """``CASE_KIND_PROMISED`` → ``PROMISED`` (for messages)."""
    return common_pb2.CaseKind.Name(kind).removeprefix("CASE_KIND_")  # type: ignore[arg-type]


def gb11643_ok(id_number: str) -> bool:
    """Whether an 18-character resident ID number has the right GB 11643 check character.

    The hub checks this too; checking it at the adapter lets each adapter name its own field.
    """
    if len(id_number) != 18 or not id_number[:17].isdigit():
        return False
    weights = [pow(2, 17 - i, 11) for i in range(17)]
    total = sum(int(digit) * weight for digit, weight in zip(id_number[:17], weights, strict=True))
    return "10X98765432"[total % 11] == id_number[17]

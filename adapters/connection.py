"""What every adapter shares: how to reach the hub, and how to read the hub's refusals.

The adapters never import ``hub``; they know the node only through the wire API. This module
holds the pieces all three adapters need on top of :mod:`adapters.sdk`:

- :class:`HubConnection`, the frozen connection settings (target, hall identity, key files),
  built once by :mod:`adapters.cli` from flags and environment variables, so that nothing deep
  in an adapter reads the environment;
- :func:`open_client`, which opens the SDK client with the retry policy of the settings and
  channel options suited to adapters that must notice quickly when a node comes back after a
  long outage;
- :class:`ItemCatalogue`, a cached view of the node's service-item catalogue (``ListItems``),
  used to check a vendor's 办件类型 code against the item's kind.

A failed call reaches an adapter as an :class:`adapters.errors.NodeRefused` (its code, message
and the field violations the node packs into ``google.rpc.Status`` details), so each adapter can
translate a refusal into its vendor's own field names; the errors are in :mod:`adapters.errors`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tongban.v1 import common_pb2

from adapters.errors import ConfigError
from adapters.sdk import HallClient, HallCredentials, RetryPolicy, TLSConfig

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

#: Region codes of other lengths that the node itself accepts in some places (``tongban regions``
#: prints them short: ``430902104`` for a township); the adapters want all 12 digits.
_SHORT_REGION_LENGTHS = (2, 4, 6, 9)


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

    def retry_policy(self) -> RetryPolicy:
        """The retry policy of ``retry_attempts`` (1 to 5)."""
        try:
            return RetryPolicy(attempts=self.retry_attempts)
        except ConfigError as error:
            raise ConfigError(f"{error} (--retries or TONGBAN_ADAPTER_RETRIES)") from None

    def signing_credentials(self) -> HallCredentials:
        """Hall identity and signing key only: enough to sign commands while offline."""
        return self._credentials(with_tls=False)

    def credentials(self) -> HallCredentials:
        """The SDK credentials; names the setting that is missing or unreadable."""
        return self._credentials(with_tls=not self.insecure)

    def _credentials(self, *, with_tls: bool) -> HallCredentials:
        if not self.hall_id:
            raise ConfigError("the hall id is not set (--hall-id or TONGBAN_ADAPTER_HALL_ID)")
        if not (len(self.region) == 12 and self.region.isdigit()):
            hint = ""
            if self.region.isdigit() and len(self.region) in _SHORT_REGION_LENGTHS:
                hint = f"; pad a short code with zeros: {self.region.ljust(12, '0')}"
            raise ConfigError(
                f"the hall's region must be a 12-digit code, got {self.region!r}{hint} "
                "(--region or TONGBAN_ADAPTER_REGION)"
            )
        if self.node and not _NODE_ORIGIN.fullmatch(self.node):
            raise ConfigError(
                f"the node origin {self.node!r} is not a log origin such as tongban/43 "
                "(--node or TONGBAN_ADAPTER_NODE)"
            )
        if self.signing_key is None:
            raise ConfigError(
                "the hall's signing key is not set (--signing-key or TONGBAN_ADAPTER_SIGNING_KEY)"
            )
        key = HallCredentials.load_signing_key(self.signing_key)
        tls = None
        if with_tls:
            ca, certificate, private_key = self.ca, self.certificate, self.private_key
            if ca is None or certificate is None or private_key is None:
                given = {"--ca": ca, "--cert": certificate, "--key": private_key}
                missing = [flag for flag, value in given.items() if value is None]
                raise ConfigError(
                    f"mutual TLS needs {', '.join(missing)} (or --insecure for a demo node)"
                )
            tls = TLSConfig.from_files(ca, certificate, private_key)
            if self.server_name:
                tls = TLSConfig(tls.ca, tls.certificate, tls.private_key, self.server_name)
        return HallCredentials(self.hall_id, self.region, key, tls, node=self.node)


def open_client(
    connection: HubConnection,
    *,
    credentials: HallCredentials | None = None,
    retry: RetryPolicy | None = None,
) -> HallClient:
    """Open an SDK client for ``connection``: its retry policy (``retry`` overrides it) and
    :data:`CHANNEL_OPTIONS` on the channel."""
    if not connection.target:
        raise ConfigError("the node address is not set (--target or TONGBAN_ADAPTER_TARGET)")
    policy = retry or connection.retry_policy()
    credentials = credentials or connection.credentials()
    return HallClient.connect(
        connection.target,
        credentials,
        retry=policy,
        channel_options=CHANNEL_OPTIONS,
        operator=connection.operator,
        timeout=connection.timeout,
    )


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
        """The item with ``code``, or None; raises :class:`~adapters.errors.NodeRefused` when
        the catalogue cannot be read."""
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

"""One frozen settings object, built once at start-up.

Read from environment variables (``TONGBAN_*``) and, when ``TONGBAN_CONFIG`` names one, a TOML file
whose keys are the same names in lower case without the prefix (``database_url = "..."``). The
environment wins over the file. Nothing else in the code reads the environment.

The embedded default needs nothing but ``tongban init``, which creates the node's keys under the
data directory and a SQLite store there (see :mod:`hub.bootstrap`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import psycopg
from psycopg.conninfo import conninfo_to_dict

from hub.domain.case import CLOCK_WINDOW
from hub.domain.values import MAX_MATERIAL_BYTES
from hub.errors import ConfigurationError

_KEYS = {
    "data_dir": "TONGBAN_DATA_DIR",
    "database_url": "TONGBAN_DATABASE_URL",
    "node_region": "TONGBAN_NODE_REGION",
    "origin": "TONGBAN_ORIGIN",
    "catalogue": "TONGBAN_CATALOGUE",
    "cipher_keys": "TONGBAN_CIPHER_KEYS",
    "cipher_active_key": "TONGBAN_CIPHER_ACTIVE_KEY",
    "listen": "TONGBAN_LISTEN",
    "tls_dir": "TONGBAN_TLS_DIR",
    "checkpoint_every": "TONGBAN_CHECKPOINT_EVERY",
    "checkpoint_interval_ms": "TONGBAN_CHECKPOINT_INTERVAL_MS",
    "group_commit": "TONGBAN_GROUP_COMMIT",
    "clock_window_s": "TONGBAN_CLOCK_WINDOW_S",
    "deferred_max_age_days": "TONGBAN_DEFERRED_MAX_AGE_DAYS",
    "processes": "TONGBAN_PROCESSES",
    "workers": "TONGBAN_WORKERS",
    "max_streams": "TONGBAN_MAX_STREAMS",
    "metrics_listen": "TONGBAN_METRICS_LISTEN",
    "log_level": "TONGBAN_LOG_LEVEL",
    "log_format": "TONGBAN_LOG_FORMAT",
    "storage_timeout_s": "TONGBAN_STORAGE_TIMEOUT_S",
    "max_material_bytes": "TONGBAN_MAX_MATERIAL_BYTES",
    "federation": "TONGBAN_FEDERATION",
    "witness_listen": "TONGBAN_WITNESS_LISTEN",
    "witness_tls": "TONGBAN_WITNESS_TLS",
    "witness_interval_s": "TONGBAN_WITNESS_INTERVAL_S",
    "rectification_days": "TONGBAN_RECTIFICATION_DAYS",
    "web_listen": "TONGBAN_WEB_LISTEN",
    "status_list_ttl_s": "TONGBAN_STATUS_LIST_TTL_S",
}


def _default_data_dir(environ: Mapping[str, str]) -> Path:
    home = environ.get("HOME") or str(Path.home())
    base = environ.get("XDG_DATA_HOME") or str(Path(home) / ".local" / "share")
    return Path(base) / "tongban"


@dataclass(frozen=True)
class Settings:
    """Everything configurable about a node."""

    data_dir: Path
    #: ``postgresql://user:password@host:port/dbname`` (or libpq ``key=value``); None selects
    #: the embedded SQLite store.
    database_url: str | None = None
    #: The region whose books this node keeps (normally a province, 2 digits).
    node_region: str = "43"
    #: Log origin name used in checkpoints; defaults to ``tongban/<node_region>``.
    origin: str = ""
    #: Path of an operator's service-item catalogue; None uses the shipped one.
    catalogue: Path | None = None
    #: Key ring ``id:base64,...`` for encryption at rest; empty: the ring ``tongban init`` wrote
    #: under data_dir/secrets.
    cipher_keys: str = field(default="", repr=False)
    cipher_active_key: str = ""
    #: Address the gRPC server listens on.
    listen: str = "127.0.0.1:7443"
    #: Sign a log checkpoint every N leaves or T milliseconds, whichever comes first.
    checkpoint_every: int = 1000
    checkpoint_interval_ms: int = 1000
    #: Directory with ca.pem, node.pem and node.key (``tongban pki init``); None: data_dir/pki.
    tls_dir: Path | None = None
    #: Concurrent commands share event-store transactions (hub.application.group_commit): more
    #: commands per second when the store's write lock is the limit, same order and outcomes.
    group_commit: bool = True
    #: How far (seconds) a command's signed time may be from the node's clock, either way.
    clock_window_s: int = int(CLOCK_WINDOW.total_seconds())
    #: How old (days) a deferred command (village outbox, register import) may be.
    deferred_max_age_days: int = 30
    #: Serving processes (0: one per CPU); the integrator runs in a process of its own.
    processes: int = 0
    #: Threads per serving process that answer unary calls.
    workers: int = 16
    #: Server streams a serving process keeps open at once (RESOURCE_EXHAUSTED beyond).
    max_streams: int = 64
    #: Where /metrics is served (port 0: a free port, printed at start-up).
    metrics_listen: str = "127.0.0.1:0"
    #: Log level, and ``json`` (one object per line) or ``text``.
    log_level: str = "INFO"
    log_format: str = "json"
    #: How long (seconds) a call waits for the store before it answers UNAVAILABLE.
    storage_timeout_s: int = 5
    #: The largest material file a hall may upload (bytes); at most what a command may list.
    max_material_bytes: int = MAX_MATERIAL_BYTES
    #: The federation file (peers, keys, Kafka, witnessing; docs/federation.md); None: a node
    #: on its own.
    federation: Path | None = None
    #: Where the witness endpoint (C2SP tlog-witness, ``POST /add-checkpoint``) listens when a
    #: federation file is given (port 0: a free port, printed at start-up).
    witness_listen: str = "127.0.0.1:7444"
    #: Serve the witness endpoint over HTTPS with the node's server certificate (the protocol
    #: authenticates by signatures, so plain HTTP is safe; TLS only hides what is asked).
    witness_tls: bool = False
    #: Seconds between re-submissions of the latest checkpoint to each peer's witness (a new
    #: checkpoint is submitted as soon as it is signed).
    witness_interval_s: int = 60

    #: Working days a 差评's rectification (整改) is given; each province sets its own.
    rectification_days: int = 15
    #: Where the dashboard and the public screens are served over HTTPS (port 0: a free one).
    web_listen: str = "127.0.0.1:8443"
    #: Seconds a certificate status list (`tongban cert status-list`) stays current: verifiers
    #: answer "status unknown" with an older one (docs/certificates.md, "Status").
    status_list_ttl_s: int = 86400

    @property
    def pki_dir(self) -> Path:
        """Where the node's CA and server certificate live."""
        return self.tls_dir or self.data_dir / "pki"

    def __post_init__(self) -> None:
        if not (self.node_region.isdigit() and len(self.node_region) in (2, 4, 6)):
            raise ConfigurationError(
                f"TONGBAN_NODE_REGION={self.node_region!r}: expected a 2, 4 or 6 digit region code"
            )
        if self.database_url is not None:
            _check_database_url(self.database_url)
        for name in (
            "checkpoint_every",
            "checkpoint_interval_ms",
            "clock_window_s",
            "deferred_max_age_days",
            "workers",
            "max_streams",
            "storage_timeout_s",
            "witness_interval_s",
            "max_material_bytes",
            "rectification_days",
            "status_list_ttl_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{_KEYS[name]} must be positive")
        if self.max_material_bytes > MAX_MATERIAL_BYTES:
            raise ConfigurationError(
                f"{_KEYS['max_material_bytes']}={self.max_material_bytes}: at most "
                f"{MAX_MATERIAL_BYTES} (the largest material a command may list)"
            )
        if self.processes < 0:
            raise ConfigurationError(f"{_KEYS['processes']} must be 0 (one per CPU) or more")
        if self.log_format not in ("json", "text"):
            raise ConfigurationError(f"{_KEYS['log_format']}={self.log_format!r}: json or text")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigurationError(
                f"{_KEYS['log_level']}={self.log_level!r}: DEBUG, INFO, WARNING or ERROR"
            )
        if not self.origin:
            object.__setattr__(self, "origin", f"tongban/{self.node_region}")

    @property
    def sqlite_path(self) -> Path:
        """Where the embedded event store lives."""
        return self.data_dir / "events.sqlite3"

    def with_changes(self, **changes: object) -> Settings:
        """A copy with some values replaced (tests and the demo use this)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: the process environment) and its file."""
        environ = os.environ if environ is None else environ
        unknown = sorted(
            name
            for name in environ
            if name.startswith("TONGBAN_")
            and name not in _VARIABLES
            and not name.startswith(NOT_THE_NODES)
        )
        if unknown:
            raise ConfigurationError(
                f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                f"the node reads {', '.join(sorted(_VARIABLES))} (see README.md)"
            )
        values: dict[str, str] = {}
        config_file = environ.get("TONGBAN_CONFIG")
        if config_file:
            values.update(_read_file(Path(config_file)))
        for name, variable in _KEYS.items():
            if environ.get(variable):
                values[name] = environ[variable]
        data_dir = Path(values.pop("data_dir", "") or _default_data_dir(environ))
        catalogue = values.pop("catalogue", "")
        tls_dir = values.pop("tls_dir", "")
        federation = values.pop("federation", "")
        numbers: dict[str, Any] = {
            name: _whole_number(name, values.pop(name)) for name in _INT_KEYS if name in values
        }
        flags: dict[str, Any] = {
            name: _flag(name, values.pop(name)) for name in _BOOL_KEYS if name in values
        }
        return cls(
            **numbers,
            **flags,
            data_dir=data_dir,
            catalogue=Path(catalogue) if catalogue else None,
            tls_dir=Path(tls_dir) if tls_dir else None,
            federation=Path(federation) if federation else None,
            database_url=values.pop("database_url", None) or None,
            **cast("dict[str, Any]", values),
        )


#: Every variable the node reads.
_VARIABLES = frozenset({*_KEYS.values(), "TONGBAN_CONFIG"})

#: ``TONGBAN_*`` families that are not the node's: the hall-side adapters' and the test
#: harness's. The node leaves them alone; every other unknown ``TONGBAN_*`` name is refused, so
#: a mistyped setting is never silently ignored.
NOT_THE_NODES = (
    "TONGBAN_ADAPTER_",
    "TONGBAN_GATEWAY_",
    "TONGBAN_VILLAGE_",
    "TONGBAN_IMPORT_",
    "TONGBAN_TEST_",
)

_INT_KEYS = (
    "checkpoint_every",
    "checkpoint_interval_ms",
    "clock_window_s",
    "deferred_max_age_days",
    "processes",
    "workers",
    "max_streams",
    "storage_timeout_s",
    "witness_interval_s",
    "max_material_bytes",
    "rectification_days",
    "status_list_ttl_s",
)
_BOOL_KEYS = ("group_commit", "witness_tls")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _whole_number(name: str, value: str) -> int:
    if not value.strip().isdigit():
        raise ConfigurationError(f"{_KEYS[name]}={value!r}: expected a whole number")
    return int(value)


def _flag(name: str, value: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case; a TOML boolean arrives as "True")."""
    word = value.strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ConfigurationError(f"{_KEYS[name]}={value!r}: expected 1/true/yes/on or 0/false/no/off")


def _check_database_url(url: str) -> None:
    """Accept a ``postgresql://`` URL or a libpq ``key=value`` string; never echo a password."""
    is_url = url.startswith(("postgresql://", "postgres://"))
    if not is_url and ("://" in url or "=" not in url):
        raise ConfigurationError(
            "TONGBAN_DATABASE_URL must be a postgresql:// URL or a libpq 'key=value' string "
            f"(got {url.split(':', 1)[0]}:...)"
        )
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        raise ConfigurationError(f"TONGBAN_DATABASE_URL is malformed: {error}") from None


def _read_file(path: Path) -> dict[str, str]:
    try:
        document = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigurationError(f"TONGBAN_CONFIG={path}: {error}") from None
    unknown = sorted(set(document) - set(_KEYS))
    if unknown:
        raise ConfigurationError(f"TONGBAN_CONFIG={path}: unknown keys {', '.join(unknown)}")
    return {key: str(value) for key, value in document.items()}

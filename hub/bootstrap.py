"""The composition root: turns :class:`~hub.settings.Settings` into a running application.

This is the only place that knows how settings map onto the event store's configuration, where
generated keys live, and which catalogue and region registry a node uses.
"""

from __future__ import annotations

import os
from pathlib import Path

from eventsourcing.persistence import InterfaceError, OperationalError
from psycopg.conninfo import conninfo_to_dict

from hub.application.cipher import ACTIVE_ENV, KEYS_ENV, new_key, parse_key_ring
from hub.application.hub import HubApplication
from hub.domain.items import Catalogue
from hub.domain.regions import RegionRegistry
from hub.errors import ConfigurationError, StorageUnavailable
from hub.integrator import LedgerIntegrator, open_ledger_view
from hub.settings import Settings
from ledger import LedgerError, Signer

CIPHER_TOPIC = "hub.application.cipher:KeyRingCipher"


def persistence_env(settings: Settings, *, create_tables: bool = True) -> dict[str, str]:
    """The eventsourcing environment for the configured store."""
    env = {"CREATE_TABLE": "y" if create_tables else "n"}
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        env.update(
            PERSISTENCE_MODULE="eventsourcing.sqlite",
            SQLITE_DBNAME=str(settings.sqlite_path),
            SQLITE_LOCK_TIMEOUT="10",
        )
        return env
    params = conninfo_to_dict(settings.database_url)
    env.update(
        PERSISTENCE_MODULE="eventsourcing.postgres",
        POSTGRES_DBNAME=str(params.get("dbname", "")),
        POSTGRES_HOST=str(params.get("host", "localhost")),
        POSTGRES_PORT=str(params.get("port", "5432")),
        POSTGRES_USER=str(params.get("user", "")),
        POSTGRES_PASSWORD=str(params.get("password", "")),
        POSTGRES_POOL_SIZE="10",
        POSTGRES_MAX_OVERFLOW="10",
    )
    return env


def cipher_env(settings: Settings) -> dict[str, str]:
    """Key ring for encryption at rest: from settings, else generated once under data_dir."""
    keys, active = settings.cipher_keys, settings.cipher_active_key
    if not keys:
        keys, active = _load_or_create_key_ring(settings.data_dir / "secrets" / "cipher-keys")
    if not active:
        active = list(parse_key_ring(keys))[-1]
    return {"CIPHER_TOPIC": CIPHER_TOPIC, KEYS_ENV: keys, ACTIVE_ENV: active}


def _load_or_create_key_ring(path: Path) -> tuple[str, str]:
    if path.exists():
        lines = path.read_text("ascii").split()
        if len(lines) != 2:
            raise ConfigurationError(f"{path}: expected two lines, the key ring and the active id")
        return lines[0], lines[1]
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys = f"k1:{new_key()}"
    # Written with 0600 from the start so the key is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{keys}\nk1\n")
    return keys, "k1"


def load_or_create_log_signer(settings: Settings) -> Signer:
    """The node's log signing key (C2SP note signer), generated once under data_dir/secrets."""
    path = settings.data_dir / "secrets" / "log.key"
    if path.exists():
        try:
            return Signer.from_key(path.read_text("ascii").strip())
        except (LedgerError, ValueError) as error:
            raise ConfigurationError(f"{path}: not a signer key: {error}") from None
    signer = Signer.generate(settings.origin)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(signer.key_string() + "\n")
    (settings.data_dir / "log.vkey").write_text(signer.verifier_key() + "\n")
    return signer


def build_integrator(settings: Settings, app: HubApplication) -> LedgerIntegrator:
    """The ledger integrator of ``app``, writing into the same database."""
    return LedgerIntegrator(
        app,
        open_ledger_view(app),
        load_or_create_log_signer(settings),
        origin=settings.origin,
        checkpoint_every=settings.checkpoint_every,
        checkpoint_interval=settings.checkpoint_interval_ms / 1000,
    )


def build_application(
    settings: Settings, *, create_tables: bool = True, require_signatures: bool = False
) -> HubApplication:
    """A node's application configured from ``settings``.

    ``require_signatures``: refuse unsigned commands (a node serving halls over mTLS).
    """
    catalogue = (
        Catalogue.load(settings.catalogue) if settings.catalogue else Catalogue.load_default()
    )
    try:
        env = {**persistence_env(settings, create_tables=create_tables), **cipher_env(settings)}
        return HubApplication(
            env,
            regions=RegionRegistry.load_default(),
            catalogue=catalogue,
            require_signatures=require_signatures,
            group_commit=settings.group_commit,
        )
    except (OperationalError, InterfaceError, OSError) as error:
        where = "PostgreSQL" if settings.database_url else str(settings.sqlite_path)
        raise StorageUnavailable(f"event store at {where} is unavailable: {error}") from error

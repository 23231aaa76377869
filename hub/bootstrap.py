"""The composition root: turns :class:`~hub.settings.Settings` into a running node.

This is the only place that knows how settings map onto the event store's configuration, where the
node's keys live, and which catalogue and region registry a node uses.

**Keys are made on purpose, never by accident.** :func:`initialise` (``tongban init``) creates a
node's keys under ``<data dir>/secrets`` — the log signing key, the at-rest key ring (random key
ids), the pseudonym key and the first admin's command-signing key — and records the node's genesis
in the store (its log key and first admin) and the key ring's fingerprints, and the federation keys
(the witness key that cosigns peers' checkpoints, the X25519 key personal data from peers is sealed
to; ``tongban init`` adds these to a node initialised before they existed). Every other entry point
loads the keys with :func:`load_node_keys`, which refuses to run without them (naming ``tongban
init``), and :func:`build_application` refuses a store whose genesis names another log key or whose
recorded fingerprints do not match the key ring: a data directory and a store that do not belong
together never write a byte.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eventsourcing.persistence import InterfaceError, OperationalError, ProgrammingError
from psycopg.conninfo import conninfo_to_dict

from hub.application.cipher import (
    KeyRingCipher,
    new_key,
    new_key_id,
    parse_key_ring,
)
from hub.application.hub import HubApplication, NodePolicy
from hub.application.postgres_store import POSTGRES_PERSISTENCE
from hub.application.recorders import recorder_topic
from hub.application.sqlite_store import SQLITE_PERSISTENCE
from hub.application.vault import PersonalDataVault
from hub.certificates import IssuerKey, TrustBundle, TrustedIssuer
from hub.commands.signing import CommandSigner
from hub.domain.items import Catalogue
from hub.domain.node import Node
from hub.domain.regions import RegionRegistry
from hub.errors import ConfigurationError, InvalidInput, StorageUnavailable, StoreMismatch
from hub.integrity.integrator import HeadGuard, LedgerIntegrator, open_ledger_view
from hub.materials.fetch import MaterialFetcher, PeerClientCertificate
from hub.materials.store import MaterialStore
from hub.projections.node import Projections, open_projections
from hub.relay.config import FederationConfig, encryption_key_text, load_federation
from hub.settings import Settings
from ledger import LedgerError, Signer, Verifier
from ledger.cosignature import Cosigner

if TYPE_CHECKING:
    from hub.relay.node import Relay
    from hub.web.certificates import CertificateFeed
    from hub.witnessing.config import WitnessingConfig

#: The first admin's name unless ``tongban init --admin`` gives another.
DEFAULT_ADMIN = "operator"


@dataclass(frozen=True)
class NodePaths:
    """Where a node's keys and state live under its data directory."""

    data_dir: Path

    @property
    def secrets(self) -> Path:
        """Private keys, mode 0700."""
        return self.data_dir / "secrets"

    @property
    def log_key(self) -> Path:
        """The log's C2SP note signer key."""
        return self.secrets / "log.key"

    @property
    def log_vkey(self) -> Path:
        """The log's public verifier key, for auditors."""
        return self.data_dir / "log.vkey"

    @property
    def cipher_keys(self) -> Path:
        """The at-rest key ring and its active key id (two lines)."""
        return self.secrets / "cipher-keys"

    @property
    def pseudonym_key(self) -> Path:
        """The key of the subjects' keyed hashes (finds a person's cases for erasure)."""
        return self.secrets / "pseudonym.key"

    @property
    def admin_key(self) -> Path:
        """The first admin's command-signing key (PKCS#8 PEM)."""
        return self.secrets / "admin.key"

    @property
    def head(self) -> Path:
        """The last checkpoint this node signed (outside the database, see HeadGuard)."""
        return self.data_dir / "ledger" / "head"

    @property
    def witness_key(self) -> Path:
        """The node's witness key: its cosignatures of peers' checkpoints (C2SP cosignature)."""
        return self.secrets / "witness.key"

    @property
    def certificate_issuer_key(self) -> Path:
        """The node's certificate-issuer key (PKCS#8 PEM): it signs electronic certificates."""
        return self.secrets / "certificate-issuer.key"

    @property
    def certificate_issuer_since(self) -> Path:
        """When the certificate-issuer key was made (ISO time): the start of its period."""
        return self.secrets / "certificate-issuer.since"

    @property
    def certificate_issuers_retired(self) -> Path:
        """The public halves of retired certificate-issuer keys and their periods (JSON)."""
        return self.data_dir / "certificate-issuers-retired.json"

    @property
    def encryption_key(self) -> Path:
        """The node's X25519 key: personal data peers send it is sealed to its public half."""
        return self.secrets / "encryption.key"


@dataclass(frozen=True)
class NodeKeys:
    """A node's secret keys, loaded from its data directory (or the settings)."""

    signer: Signer
    cipher: KeyRingCipher
    pseudonym_key: bytes
    #: Where the cipher keys came from: the data directory's file, or the settings.
    cipher_file: Path | None


def _write_secret(path: Path, content: bytes) -> None:
    """Create ``path`` with mode 0600 (never readable by others, never overwritten)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)


def write_key_ring(path: Path, keys: dict[str, bytes], active: str) -> None:
    """Replace the key-ring file atomically (0600): the ring on one line, the active id below."""
    ring = ",".join(f"{key_id}:{base64.b64encode(key).decode()}" for key_id, key in keys.items())
    temporary = path.with_suffix(".tmp")
    temporary.unlink(missing_ok=True)
    _write_secret(temporary, f"{ring}\n{active}\n".encode("ascii"))
    os.replace(temporary, path)


def load_node_keys(settings: Settings) -> NodeKeys:
    """The node's keys; ConfigurationError naming ``tongban init`` when they are missing."""
    paths = NodePaths(settings.data_dir)
    missing = [p for p in (paths.log_key, paths.pseudonym_key) if not p.exists()]
    if not settings.cipher_keys and not paths.cipher_keys.exists():
        missing.append(paths.cipher_keys)
    if missing:
        raise ConfigurationError(
            f"no node keys in {settings.data_dir} (missing {', '.join(p.name for p in missing)}): "
            "create them once with `tongban init`, or point TONGBAN_DATA_DIR at the node's "
            "data directory"
        )
    try:
        signer = Signer.from_key(paths.log_key.read_text("ascii").strip())
    except (LedgerError, ValueError, OSError) as error:
        raise ConfigurationError(f"{paths.log_key}: not a log signer key: {error}") from None
    if settings.cipher_keys:
        keys, active = parse_key_ring(settings.cipher_keys), settings.cipher_active_key
        cipher_file = None
    else:
        lines = paths.cipher_keys.read_text("ascii").split()
        if len(lines) != 2:
            raise ConfigurationError(
                f"{paths.cipher_keys}: expected two lines, the key ring and the active id"
            )
        keys, active = parse_key_ring(lines[0]), lines[1]
        cipher_file = paths.cipher_keys
    if not active:
        active = list(keys)[-1]
    try:
        pseudonym = base64.b64decode(paths.pseudonym_key.read_text("ascii").strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ConfigurationError(f"{paths.pseudonym_key}: not base64: {error}") from None
    return NodeKeys(signer, KeyRingCipher(keys, active), pseudonym, cipher_file)


@dataclass(frozen=True)
class FederationKeys:
    """The keys a node needs among peers, besides its log key."""

    #: Cosigns other logs' checkpoints (name ``<origin>/witness``).
    witness: Cosigner
    #: Opens personal data sealed to this node (HPKE, RFC 9180).
    encryption: X25519PrivateKey


def witness_name(origin: str) -> str:
    """The name a node's witness key carries: ``<log origin>/witness``."""
    return f"{origin}/witness"


def load_federation_keys(settings: Settings) -> FederationKeys:
    """The node's witness and encryption keys; ConfigurationError naming ``tongban init``."""
    paths = NodePaths(settings.data_dir)
    missing = [p for p in (paths.witness_key, paths.encryption_key) if not p.exists()]
    if missing:
        raise ConfigurationError(
            f"no federation keys in {settings.data_dir} (missing "
            f"{', '.join(p.name for p in missing)}): run `tongban init` once more, which adds "
            "them to an initialised node without touching its other keys"
        )
    try:
        witness = Cosigner.from_key(paths.witness_key.read_text("ascii").strip())
    except (LedgerError, ValueError, OSError) as error:
        raise ConfigurationError(f"{paths.witness_key}: not a witness key: {error}") from None
    try:
        raw = base64.b64decode(paths.encryption_key.read_text("ascii").strip(), validate=True)
        encryption = X25519PrivateKey.from_private_bytes(raw)
    except (binascii.Error, ValueError, OSError) as error:
        raise ConfigurationError(
            f"{paths.encryption_key}: not an X25519 private key: {error}"
        ) from None
    return FederationKeys(witness, encryption)


def _create_federation_keys(settings: Settings) -> bool:
    """Create whichever federation key is missing; True if one was created."""
    paths = NodePaths(settings.data_dir)
    created = False
    if not paths.witness_key.exists():
        witness = Cosigner.generate(witness_name(settings.origin))
        _write_secret(paths.witness_key, (witness.key_string() + "\n").encode("ascii"))
        created = True
    if not paths.encryption_key.exists():
        raw = X25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        _write_secret(paths.encryption_key, base64.b64encode(raw) + b"\n")
        created = True
    return created


def _create_certificate_issuer_key(settings: Settings) -> bool:
    """Create the certificate-issuer key if missing (as for the federation keys); True if so."""
    paths = NodePaths(settings.data_dir)
    if paths.certificate_issuer_key.exists():
        return False
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    since = datetime.now(UTC).replace(microsecond=0).isoformat()
    _write_secret(paths.certificate_issuer_since, (since + "\n").encode("ascii"))
    _write_secret(paths.certificate_issuer_key, pem)
    return True


def load_certificate_issuer(settings: Settings) -> IssuerKey:
    """The node's certificate-issuer key; ConfigurationError naming ``tongban init``.

    The key may sign from when it was made (kept beside it): the start of its period in the
    trust bundle.
    """
    paths = NodePaths(settings.data_dir)
    path = paths.certificate_issuer_key
    if not path.exists():
        raise ConfigurationError(
            f"no certificate-issuer key in {settings.data_dir} (missing {path.name}): run "
            "`tongban init` once more, which adds it to an initialised node without touching "
            "its other keys"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"certificate-issuer key {path}: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{path} is not an Ed25519 key")
    try:
        since = datetime.fromisoformat(paths.certificate_issuer_since.read_text("ascii").strip())
    except (OSError, ValueError) as error:
        raise ConfigurationError(
            f"{paths.certificate_issuer_since}: when the certificate-issuer key was made: {error}"
        ) from None
    return IssuerKey(key, settings.origin, settings.node_region, since)


def retired_certificate_issuers(settings: Settings) -> tuple[TrustedIssuer, ...]:
    """The node's retired certificate-issuer keys (``tongban keys rotate-issuer``), each with
    the period it signed in: they stay in the trust bundle so what they signed still verifies."""
    path = NodePaths(settings.data_dir).certificate_issuers_retired
    if not path.exists():
        return ()
    return TrustBundle.from_json(path.read_text("utf-8"), str(path)).issuers


def rotate_certificate_issuer(settings: Settings) -> tuple[TrustedIssuer, IssuerKey]:
    """Replace the certificate-issuer key with a new one; the old key's public half is kept
    in the retired list, its period ended now. Returns the retired entry and the new key.

    Order matters for a crash: the retired list is written first (atomically), then the new
    key replaces the old one (atomically), so at every moment the old key's public half is
    known; its private half is gone once the new key is in place (a retired key never signs
    again).
    """
    paths = NodePaths(settings.data_dir)
    current = load_certificate_issuer(settings)
    now = max(datetime.now(UTC).replace(microsecond=0), current.not_before)
    retired = current.trusted(not_after=now)
    kept = [i for i in retired_certificate_issuers(settings) if i.kid != retired.kid]
    listing = TrustBundle((*kept, retired)).to_json().encode("utf-8") + b"\n"
    _replace_file(paths.certificate_issuers_retired, listing, 0o644)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # The new key keeps the node's start (certificate-issuer.since): it may sign the
    # certificate of any event of this node, also of a case issued before the rotation whose
    # file is written again; the old key may sign nothing dated after its end.
    _replace_file(paths.certificate_issuer_key, pem, 0o600)
    return retired, load_certificate_issuer(settings)


def trust_bundle_text(settings: Settings) -> str:
    """The node's trust bundle (``tongban trust export``): its issuer keys, the retired ones
    with the end of their period, and its log with the witnesses and k of its federation."""
    from hub.certificate_log import TrustedLog, logs_to_json

    # Retired issuer keys stay, with the end of their period: what they signed still verifies.
    issuers = tuple(
        # Each key's lists are current for at most the node's time to live (the verifier
        # refuses a list claiming longer: a stolen retired key cannot make one for years).
        dataclasses.replace(issuer, status_list_ttl_s=settings.status_list_ttl_s)
        for issuer in (
            *retired_certificate_issuers(settings),
            load_certificate_issuer(settings).trusted(),
        )
    )
    witnessing = witnessing_config(settings)
    log = TrustedLog(
        settings.origin,
        (load_node_keys(settings).signer.verifier_key(),),
        tuple(t.verifier_key for t in witnessing.targets) if witnessing else (),
        witnessing.witness_k if witnessing else 0,
    )
    return logs_to_json(TrustBundle(issuers).to_json(), (log,))


def build_certificate_feed(
    settings: Settings, app: HubApplication, clock: Callable[[], datetime] | None = None
) -> CertificateFeed | None:
    """What the web server gives verifiers: the status list (signed with the issuer key,
    recorded in ``app``'s log when published) and the trust bundle; None without an issuer key
    (a node initialised before certificates, until `tongban init` runs again)."""
    from hub.certificate_log import PublishedList, publish_status_list
    from hub.web.certificates import CertificateFeed

    if not NodePaths(settings.data_dir).certificate_issuer_key.exists():
        return None
    view = open_ledger_view(app)
    ttl_s = settings.status_list_ttl_s

    def publish(now: datetime) -> PublishedList:
        # The key is read at each publication: after `tongban keys rotate-issuer` the next
        # list is signed with the new key without a restart.
        key = load_certificate_issuer(settings)
        return publish_status_list(app, view, key, now=now, ttl_s=ttl_s)

    return CertificateFeed(publish, lambda: trust_bundle_text(settings), clock or app.clock)


def _replace_file(path: Path, content: bytes, mode: int) -> None:
    """Write ``path`` atomically (a temporary file renamed over it) with ``mode``."""
    temporary = path.with_name(path.name + ".new")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def load_admin_key(path: Path) -> Ed25519PrivateKey:
    """An admin's command-signing key (PKCS#8 PEM, as ``tongban init`` writes it)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"cannot load the admin key {path}: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{path} is not an Ed25519 key")
    return key


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """The base64 raw public key of an Ed25519 private key."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def persistence_env(settings: Settings, *, create_tables: bool = True) -> dict[str, str]:
    """The eventsourcing environment for the configured store."""
    env = {
        "CREATE_TABLE": "y" if create_tables else "n",
        "APPLICATION_RECORDER_TOPIC": recorder_topic(postgres=settings.database_url is not None),
    }
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        env.update(
            PERSISTENCE_MODULE=SQLITE_PERSISTENCE,
            SQLITE_DBNAME=str(settings.sqlite_path),
            SQLITE_LOCK_TIMEOUT="10",
        )
        return env
    params = conninfo_to_dict(settings.database_url)
    env.update(
        PERSISTENCE_MODULE=POSTGRES_PERSISTENCE,
        POSTGRES_DBNAME=str(params.get("dbname", "")),
        POSTGRES_HOST=str(params.get("host", "localhost")),
        POSTGRES_PORT=str(params.get("port", "5432")),
        POSTGRES_USER=str(params.get("user", "")),
        POSTGRES_PASSWORD=str(params.get("password", "")),
        POSTGRES_POOL_SIZE="10",
        POSTGRES_MAX_OVERFLOW="10",
        # How long a call waits for a pooled connection; our recorder tries each statement once,
        # so a call against a store that is down fails after TONGBAN_STORAGE_TIMEOUT_S (and the
        # application's StorageGuard then fails the next ones at once until it is back).
        POSTGRES_CONNECT_TIMEOUT=str(settings.storage_timeout_s),
    )
    return env


def load_federation_file(settings: Settings) -> FederationConfig | None:
    """The node's federation file, checked (None for a node on its own)."""
    if settings.federation is None:
        return None
    return load_federation(
        settings.federation, own_region=settings.node_region, own_origin=settings.origin
    )


def _policy(settings: Settings, *, with_peers: bool = True) -> NodePolicy:
    # The peers' regions only let halls name halls of other nodes. A federation file that does
    # not exist yet (an operator registering halls before assembling it) is not needed for
    # that; `tongban serve` loads it strictly (relay, witness) and stops if it is missing.
    exists = settings.federation is not None and settings.federation.exists()
    federation = load_federation_file(settings) if with_peers and exists else None
    return NodePolicy(
        origin=settings.origin,
        region=settings.node_region,
        clock_window=timedelta(seconds=settings.clock_window_s),
        deferred_max_age=timedelta(days=settings.deferred_max_age_days),
        peers=tuple((peer.origin, peer.region) for peer in federation.peers) if federation else (),
        rectification_days=settings.rectification_days,
    )


def _certificate_check(settings: Settings) -> Any:
    """Checks a certificate another node issued, at the off-site window, with that node's
    trust bundle from the federation file (None: no peer names one)."""
    exists = settings.federation is not None and settings.federation.exists()
    federation = load_federation_file(settings) if exists else None
    if federation is None or not any(p.certificate_issuers for p in federation.peers):
        return None

    def check(case: Any, token: str, now: Any) -> None:
        from hub.certificates import check_carried_certificate

        peer = federation.peer_for_region(case.competent_region)
        if peer is None or peer.certificate_issuers is None:
            if token:
                raise InvalidInput(
                    "certificate_token", "<token>",
                    "no trust bundle of the issuing node in the federation file: cannot check",
                )  # fmt: skip
            return
        check_carried_certificate(
            token, peer.certificate_issuers, case_id=str(case.id),
            certificate_id=case.certificate_id, now=now,
        )  # fmt: skip

    return check


def peer_log_keys(settings: Settings) -> dict[str, Verifier]:
    """The federation's log keys by origin (for the gate and the auditor)."""
    federation = load_federation_file(settings)
    if federation is None:
        return {}
    return {peer.origin: peer.log_verifier() for peer in federation.peers}


def federation_identity(settings: Settings) -> dict[str, str]:
    """This node's entry for its peers' federation files (public keys only)."""
    keys = load_node_keys(settings)
    federation = load_federation_keys(settings)
    return {
        "region": settings.node_region,
        "origin": settings.origin,
        "log_key": keys.signer.verifier_key(),
        "witness_key": federation.witness.verifier_key(),
        "encryption_key": encryption_key_text(federation.encryption.public_key()),
        "ca_certificate": str(settings.pki_dir / "ca.pem"),
        "address": settings.listen,
    }


def build_relay(settings: Settings, app: HubApplication) -> Relay | None:
    """The node's relay when it has a federation file (None otherwise)."""
    federation = load_federation_file(settings)
    if federation is None:
        return None
    # Imported here: the relay brings in the Kafka client, which the command-line calls that
    # never relay (most of them) need not load at every start.
    from hub.relay.node import Relay

    keys = load_node_keys(settings)
    federation_keys = load_federation_keys(settings)

    def fetch_materials(peer: Any, case_id: Any, materials: Any) -> Any:
        # Built when first needed: a node without a peer certificate still relays steps, and
        # its fetches wait (with a warning naming `tongban pki peer-cert`) until it has one.
        return build_material_fetcher(settings, app).fetch_case_materials(peer, case_id, materials)

    return Relay(
        app,
        open_ledger_view(app),
        federation,
        signer=keys.signer,
        witness=federation_keys.witness,
        encryption_key=federation_keys.encryption,
        fetch_materials=fetch_materials,
    )


def _open(
    settings: Settings, keys: NodeKeys, *, create_tables: bool, with_peers: bool = True
) -> HubApplication:
    catalogue = (
        Catalogue.load(settings.catalogue) if settings.catalogue else Catalogue.load_default()
    )
    try:
        app = HubApplication(
            persistence_env(settings, create_tables=create_tables),
            policy=_policy(settings, with_peers=with_peers),
            vault=PersonalDataVault(keys.cipher, keys.pseudonym_key),
            regions=RegionRegistry.load_default(),
            catalogue=catalogue,
            group_commit=settings.group_commit,
        )
        if with_peers:
            app.certificate_check = _certificate_check(settings)
        return app
    except (OperationalError, InterfaceError, ProgrammingError, OSError) as error:
        where = "PostgreSQL" if settings.database_url else str(settings.sqlite_path)
        raise StorageUnavailable(f"event store at {where} is unavailable: {error}") from error


def build_application(settings: Settings, *, create_tables: bool = True) -> HubApplication:
    """A node's application configured from ``settings``, checked against its store.

    Refuses (StoreMismatch) a store that was never initialised, whose genesis names another log
    key, or whose key ring's fingerprints or wrapped keys do not match the configured ring.
    """
    keys = load_node_keys(settings)
    app = _open(settings, keys, create_tables=create_tables)
    try:
        if create_tables:
            MaterialStore.of(app).create_tables()
        check_store(app, keys)
    except BaseException:
        app.close()
        raise
    return app


def check_store(app: HubApplication, keys: NodeKeys) -> None:
    """The store must be this node's: its genesis and key ring must match the keys."""
    genesis = app.genesis()
    mine = keys.signer.verifier_key()
    if genesis.log_key != mine:
        raise StoreMismatch(
            f"this data directory's log key ({mine.split('+')[1]}) is not the key of the store's "
            f"log ({genesis.log_key.split('+')[1]}): the data directory and the store belong to "
            "different nodes"
        )
    recorded = app.keys.keyring()
    ours = keys.cipher.fingerprints()
    for key_id, print_ in ours.items():
        if key_id in recorded and recorded[key_id] != print_:
            raise StoreMismatch(
                f"at-rest key {key_id!r} is not the key the store recorded under that id "
                "(another node's key ring?)"
            )
    missing = {key_id: n for key_id, n in app.keys.key_ids_in_use().items() if key_id not in ours}
    files = {
        key_id: n
        for key_id, n in MaterialStore.of(app).key_ids_in_use().items()
        if key_id not in ours
    }
    if missing or files:
        listed = ", ".join(
            [f"{key_id} ({n} cases)" for key_id, n in sorted(missing.items())]
            + [f"{key_id} ({n} material files)" for key_id, n in sorted(files.items())]
        )
        raise StoreMismatch(
            f"at-rest keys {listed} wrap personal data but are not in the key ring: put them "
            "back (removing a key never erases data; use `tongban erase` for that)"
        )
    unrecorded = {key_id: p for key_id, p in ours.items() if key_id not in recorded}
    if unrecorded:
        app.keys.record_keys(unrecorded)


def initialise(settings: Settings, *, admin: str = DEFAULT_ADMIN) -> tuple[Node, bool]:
    """``tongban init``: create the node's keys (once) and record its genesis (once).

    Returns the genesis and whether anything was created. Refuses a store initialised by
    another node's keys.
    """
    paths = NodePaths(settings.data_dir)
    created = False
    if not paths.log_key.exists():
        existing = [
            p for p in (paths.pseudonym_key, paths.cipher_keys, paths.admin_key) if p.exists()
        ]
        if existing:
            raise ConfigurationError(
                f"{settings.data_dir} holds some node keys but no log key "
                f"({', '.join(p.name for p in existing)}): restore the missing key, or start "
                "from an empty data directory"
            )
        signer = Signer.generate(settings.origin)
        _write_secret(paths.log_key, (signer.key_string() + "\n").encode("ascii"))
        paths.log_vkey.write_text(signer.verifier_key() + "\n")
        _write_secret(paths.pseudonym_key, base64.b64encode(os.urandom(32)) + b"\n")
        if not settings.cipher_keys:
            key_id = new_key_id()
            write_key_ring(paths.cipher_keys, {key_id: base64.b64decode(new_key())}, key_id)
        admin_key = Ed25519PrivateKey.generate()
        _write_secret(
            paths.admin_key,
            admin_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        created = True
    # Federation keys came later than the others: an initialised node gets them here too.
    created = _create_federation_keys(settings) or created
    created = _create_certificate_issuer_key(settings) or created
    keys = load_node_keys(settings)
    # Initialising needs no peers: the federation file may be written after `tongban init`
    # (it names this node's own public keys, which init makes).
    app = _open(settings, keys, create_tables=True, with_peers=False)
    try:
        MaterialStore.of(app).create_tables()
        try:
            genesis = app.genesis()
        except StoreMismatch:
            admin_public = public_key_b64(load_admin_key(paths.admin_key))
            genesis = app.initialise(
                log_key=keys.signer.verifier_key(), admin=admin, admin_key=admin_public
            )
            created = True
        check_store(app, keys)
    finally:
        app.close()
    return genesis, created


def build_integrator(settings: Settings, app: HubApplication) -> LedgerIntegrator:
    """The ledger integrator of ``app``, writing into the same database.

    Refuses (StoreMismatch) to run on a stored log behind the last checkpoint this node signed.
    """
    keys = load_node_keys(settings)
    return LedgerIntegrator(
        app,
        open_ledger_view(app),
        keys.signer,
        origin=settings.origin,
        head=HeadGuard(NodePaths(settings.data_dir).head, keys.signer),
        checkpoint_every=settings.checkpoint_every,
        checkpoint_interval=settings.checkpoint_interval_ms / 1000,
        peers=peer_log_keys(settings),
    )


def open_node_projections(settings: Settings, app: HubApplication) -> Projections:
    """The node's projections (queues, supervision, statistics) over ``app``'s log."""
    return open_projections(app, node_region=settings.node_region)


def admin_signer(
    settings: Settings, app: HubApplication, key_file: Path | None = None, operator: str = ""
) -> CommandSigner:
    """A signer for admin commands with the admin key in ``key_file`` (default: the one
    ``tongban init`` made), named as the node's genesis names that key."""
    path = key_file or NodePaths(settings.data_dir).admin_key
    key = load_admin_key(path)
    public = public_key_b64(key)
    names = [name for name, known in app.genesis().admins.items() if known == public]
    if not names:
        raise ConfigurationError(f"{path} is not the key of an admin of this node")
    return CommandSigner(key, node=settings.origin, operator=operator or names[0], admin=names[0])


def witnessing_config(settings: Settings) -> WitnessingConfig | None:
    """What witnessing needs, from the federation file (None: no federation file configured).

    Peers' witness keys and the ``[[witnesses]]`` are the witnesses of this node's log (k =
    ``relay.witness_k``); peers' logs and the ``[[witnessed_logs]]`` are the logs this node
    cosigns.
    """
    from hub.relay.config import load_federation
    from hub.witnessing.config import WitnessingConfig, WitnessTarget
    from ledger import CosignatureVerifier

    if settings.federation is None:
        return None
    federation = load_federation(
        settings.federation, own_region=settings.node_region, own_origin=settings.origin
    )
    keys = load_node_keys(settings)
    return WitnessingConfig(
        origin=settings.origin,
        log_key=keys.signer.verifier_key(),
        witness_k=federation.witness_k,
        # The peers' witnesses, then the ones from outside the federation: (key, url, CA).
        targets=tuple(
            WitnessTarget(
                name=CosignatureVerifier.from_key(key).name,
                verifier_key=key,
                url=url,
                ca_certificate=ca_certificate,
            )
            for key, url, ca_certificate in [
                *((p.witness_key, p.witness_url, p.ca_certificate) for p in federation.peers),
                *((w.witness_key, w.url, w.ca_certificate) for w in federation.witnesses),
            ]
        ),
        logs=tuple(
            [(peer.origin, (peer.log_key,)) for peer in federation.peers]
            + [(log.origin, (log.log_key,)) for log in federation.witnessed_logs]
        ),
    )


def build_material_store(settings: Settings, app: HubApplication) -> MaterialStore:
    """The node's material store, in ``app``'s database, with the configured size limit."""
    return MaterialStore.of(app, max_bytes=settings.max_material_bytes)


def load_peers(settings: Settings) -> FederationConfig | None:
    """The federation file (``TONGBAN_FEDERATION``), checked; None when there is none."""
    if settings.federation is None:
        return None
    return load_federation(
        settings.federation, own_region=settings.node_region, own_origin=settings.origin
    )


def build_material_fetcher(settings: Settings, app: HubApplication) -> MaterialFetcher:
    """Fetches cases' materials from peers into this node's store, presenting this node's peer
    certificate (``<pki dir>/peer.pem``, ``tongban pki peer-cert``)."""
    return MaterialFetcher(
        build_material_store(settings, app), PeerClientCertificate.in_directory(settings.pki_dir)
    )

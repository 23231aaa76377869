"""The federation file: which peer nodes this node exchanges cases with, and how to trust them.

One TOML file, named by ``TONGBAN_FEDERATION`` (or ``federation`` in the settings file), read
and checked once at start-up. Every mistake is a :class:`~hub.errors.ConfigurationError` that
names the file and the entry (``peers[1].log_key``), so an operator fixes it without guessing::

    [kafka]
    bootstrap = ["kafka-1:9092", "kafka-2:9092"]   # the brokers every node of the federation uses
    topic_prefix = "tongban.v1"                     # inbox of region R: "<prefix>.<R>.inbox"

    [relay]
    resend_after_s = 30      # an envelope not acknowledged by then is sent again, same id
    witness_k = 1            # a checkpoint is final once k of the witnesses below cosigned it

    [[peers]]
    region = "42"                                  # the province (or pilot region) it keeps
    name = "湖北省"                                 # for people; optional
    origin = "tongban/42"                          # its log's origin
    log_key = "tongban/42+8c1e2f3a+AbC..."         # C2SP note verifier key of its log
    witness_key = "tongban/42/witness+5d6e7f80+AbC..."  # verifier key of its cosignatures
    encryption_key = "x25519:BASE64"               # HPKE key: personal data sealed to it
    ca_certificate = "peers/42-ca.pem"             # its CA, for peer mTLS (relative to this file)
    address = "node-42.example.org:7443"           # its gRPC endpoint (materials, witnessing)
    inbox_topic = "tongban.v1.42.inbox"            # optional: overrides the prefix rule
    witness_url = "http://node-42.example.org:7444"  # optional: its tlog-witness endpoint
    trust_bundle = "peers/42-trust.json"           # optional: its certificate issuers
                                                   # (`tongban trust export` there)

    [[witnessed_logs]]                             # optional: other C2SP logs this node witnesses
    origin = "transparency.example/log"            # the log's origin line
    log_key = "transparency.example/log+12ab34cd+AbC..."   # its note verifier key

    [[witnesses]]                                  # optional: witnesses from outside the federation
    witness_key = "witness.example/w1+0a1b2c3d+AbC..."     # verifier key of its cosignatures
    url = "https://witness.example/tlog-witness"   # its tlog-witness submission prefix
    ca_certificate = "witnesses/w1-ca.pem"         # optional: its HTTPS CA (default: the system's)
    name = "an outside witness"                    # optional, for people

A peer's ``trust_bundle`` holds its certificate-issuer keys: this node checks a certificate that
peer issued offline before its window hands it over (docs/certificates.md, "Delivery").

A peer with a ``witness_url`` is asked to cosign this node's checkpoints there (C2SP
tlog-witness, see docs/witnessing.md), and so is every ``[[witnesses]]`` entry (a standard witness
from outside the federation); ``relay.witness_k`` counts the cosignatures of both. Every peer's log
is witnessed here, and so is every ``[[witnessed_logs]]`` entry (a log from outside the
federation).

``tongban federation identity`` prints this node's own ``[[peers]]`` entry for its peers' files.
A peer's region must not overlap this node's or another peer's: every region code belongs to
exactly one node, which is how a handoff finds its destination.
"""

from __future__ import annotations

import base64
import binascii
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from hub.certificates import TrustBundle
from hub.errors import ConfigurationError
from ledger import LedgerError, Verifier
from ledger.cosignature import CosignatureVerifier

#: Topics are "<prefix>.<region>.inbox" unless a peer names its own.
DEFAULT_TOPIC_PREFIX = "tongban.v1"
DEFAULT_RESEND_AFTER_S = 30.0
ENCRYPTION_KEY_PREFIX = "x25519:"

_REGION = re.compile(r"^\d{2}(\d{2}){0,2}$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")

_TOP_LEVEL = {"kafka", "relay", "peers", "witnessed_logs", "witnesses"}
_WITNESSED_KEYS = {"origin", "log_key", "name"}
_WITNESS_KEYS = {"name", "witness_key", "url", "ca_certificate"}
_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(:\d{1,5})?(/[A-Za-z0-9._~/%-]*)?$")
_KAFKA_KEYS = {"bootstrap", "topic_prefix"}
_RELAY_KEYS = {"resend_after_s", "witness_k"}
_PEER_KEYS = {
    "region",
    "name",
    "origin",
    "log_key",
    "witness_key",
    "encryption_key",
    "ca_certificate",
    "address",
    "inbox_topic",
    "witness_url",
    "trust_bundle",
}


def inbox_topic(prefix: str, region: str) -> str:
    """The topic a node of ``region`` consumes: envelopes and acknowledgements addressed to it."""
    return f"{prefix}.{region}.inbox"


@dataclass(frozen=True)
class Peer:
    """Another node of the federation, as this node trusts it."""

    region: str
    name: str
    origin: str
    log_key: str
    witness_key: str
    encryption_key: bytes
    ca_certificate: Path
    address: str
    inbox_topic: str
    #: Its tlog-witness submission prefix (``http(s)://host:port[/prefix]``); "" if none.
    witness_url: str = ""
    #: Its certificate issuers (its ``tongban trust export``), if the file names them.
    certificate_issuers: TrustBundle | None = None

    def log_verifier(self) -> Verifier:
        """Verifies the peer's checkpoints."""
        return Verifier.from_key(self.log_key)

    def witness_verifier(self) -> CosignatureVerifier:
        """Verifies the peer's cosignatures of other logs' checkpoints."""
        verifier = CosignatureVerifier.from_key(self.witness_key)
        assert isinstance(verifier, CosignatureVerifier)  # from_key builds its own class
        return verifier

    def encryption_public_key(self) -> X25519PublicKey:
        """The key personal data for this peer is sealed to."""
        return X25519PublicKey.from_public_bytes(self.encryption_key)

    def keeps(self, region_code: str) -> bool:
        """Whether a region code (2 to 12 digits) belongs to this peer's books."""
        return region_code.startswith(self.region)


@dataclass(frozen=True)
class WitnessedLog:
    """A C2SP log from outside the federation whose checkpoints this node cosigns."""

    origin: str
    log_key: str
    name: str

    def log_verifier(self) -> Verifier:
        """Verifies the log's checkpoints."""
        return Verifier.from_key(self.log_key)


@dataclass(frozen=True)
class OutsideWitness:
    """A witness from outside the federation that this node asks to cosign its checkpoints."""

    #: Its cosignature verifier key (the key's name is the witness's name in the protocol).
    witness_key: str
    #: Its tlog-witness submission prefix (``http(s)://host[:port][/prefix]``).
    url: str
    #: The CA of its HTTPS endpoint; None: the system's trusted CAs.
    ca_certificate: Path | None
    name: str

    def witness_verifier(self) -> CosignatureVerifier:
        """Verifies its cosignatures."""
        verifier = CosignatureVerifier.from_key(self.witness_key)
        assert isinstance(verifier, CosignatureVerifier)  # from_key builds its own class
        return verifier


@dataclass(frozen=True)
class FederationConfig:
    """The whole federation file, checked."""

    path: Path
    bootstrap: tuple[str, ...]
    topic_prefix: str
    resend_after_s: float
    witness_k: int
    peers: tuple[Peer, ...]
    #: Logs from outside the federation that this node witnesses.
    witnessed_logs: tuple[WitnessedLog, ...] = ()
    #: Witnesses from outside the federation that this node asks to cosign its own log.
    witnesses: tuple[OutsideWitness, ...] = ()

    def own_inbox(self, region: str) -> str:
        """The topic this node (keeping ``region``) consumes."""
        return inbox_topic(self.topic_prefix, region)

    def peer_for_region(self, region_code: str) -> Peer | None:
        """The peer whose books hold ``region_code``, or None."""
        for peer in self.peers:
            if peer.keeps(region_code):
                return peer
        return None

    def peer_by_origin(self, origin: str) -> Peer | None:
        """The peer whose log is ``origin``, or None."""
        for peer in self.peers:
            if peer.origin == origin:
                return peer
        return None


def load_federation(path: Path, *, own_region: str, own_origin: str) -> FederationConfig:
    """Read and check the federation file; ConfigurationError naming the entry at fault."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"federation file {path} does not exist") from None
    except OSError as error:
        raise ConfigurationError(f"federation file {path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"federation file {path}: not valid TOML: {error}") from None
    return parse_federation(data, path=path, own_region=own_region, own_origin=own_origin)


def parse_federation(
    data: Mapping[str, Any], *, path: Path, own_region: str, own_origin: str
) -> FederationConfig:
    """Check already-parsed TOML (see :func:`load_federation`)."""

    def fail(where: str, problem: str) -> ConfigurationError:
        return ConfigurationError(f"federation file {path}: {where}: {problem}")

    _only(data, _TOP_LEVEL, "", fail)
    kafka = _table(data, "kafka", fail)
    relay = _table(data, "relay", fail)
    _only(kafka, _KAFKA_KEYS, "kafka.", fail)
    _only(relay, _RELAY_KEYS, "relay.", fail)

    bootstrap = kafka.get("bootstrap", [])
    if isinstance(bootstrap, str):
        bootstrap = [bootstrap]
    if not isinstance(bootstrap, list) or not all(isinstance(b, str) for b in bootstrap):
        raise fail("kafka.bootstrap", "a list of host:port strings")
    for number, address in enumerate(bootstrap):
        if not _ADDRESS.match(address):
            raise fail(f"kafka.bootstrap[{number}]", f"{address!r} is not host:port")
    if not bootstrap:
        raise fail("kafka.bootstrap", "name at least one broker (host:port)")
    prefix = kafka.get("topic_prefix", DEFAULT_TOPIC_PREFIX)
    if not isinstance(prefix, str) or not _TOPIC.match(prefix):
        raise fail("kafka.topic_prefix", "letters, digits, '.', '_' or '-'")

    resend = relay.get("resend_after_s", DEFAULT_RESEND_AFTER_S)
    if isinstance(resend, bool) or not isinstance(resend, int | float) or resend <= 0:
        raise fail("relay.resend_after_s", "a positive number of seconds")

    raw_peers = data.get("peers", [])
    if not isinstance(raw_peers, list):
        raise fail("peers", "use [[peers]] tables, one per peer node")
    peers = tuple(
        _peer(entry, number, path, prefix, fail) for number, entry in enumerate(raw_peers)
    )
    _check_regions(peers, own_region, own_origin, fail)

    witnesses = _outside_witnesses(data.get("witnesses", []), peers, path, fail)
    witness_k = relay.get("witness_k", min(1, len(peers)))
    if isinstance(witness_k, bool) or not isinstance(witness_k, int) or witness_k < 0:
        raise fail("relay.witness_k", "a whole number, 0 or more")
    if witness_k > len(peers) + len(witnesses):
        raise fail(
            "relay.witness_k",
            f"{witness_k} of {len(peers)} peers and {len(witnesses)} [[witnesses]] can never "
            "be met",
        )
    witnessed = _witnessed_logs(data.get("witnessed_logs", []), peers, own_origin, fail)
    return FederationConfig(
        path=path,
        bootstrap=tuple(bootstrap),
        topic_prefix=prefix,
        resend_after_s=float(resend),
        witness_k=witness_k,
        peers=peers,
        witnessed_logs=witnessed,
        witnesses=witnesses,
    )


def _outside_witnesses(
    raw: Any, peers: Sequence[Peer], path: Path, fail: Any
) -> tuple[OutsideWitness, ...]:
    if not isinstance(raw, list):
        raise fail("witnesses", "use [[witnesses]] tables, one per witness")
    # A witness is known by its key's name: two entries of one name would count one witness
    # twice towards witness_k.
    taken = {peer.witness_verifier().name: f"peers[{n}]'s witness" for n, peer in enumerate(peers)}
    witnesses: list[OutsideWitness] = []
    for number, entry in enumerate(raw):
        where = f"witnesses[{number}]"
        if not isinstance(entry, dict):
            raise fail(where, "a table with witness_key and url")
        _only(entry, _WITNESS_KEYS, f"{where}.", fail)
        values = _strings(entry, sorted(_WITNESS_KEYS), where, fail)
        if not values["witness_key"]:
            raise fail(f"{where}.witness_key", "missing")
        try:
            verifier = CosignatureVerifier.from_key(values["witness_key"])
        except (LedgerError, ValueError) as error:
            raise fail(f"{where}.witness_key", f"not a cosignature verifier key: {error}") from None
        if verifier.name in taken:
            raise fail(f"{where}.witness_key", f"{verifier.name!r} is {taken[verifier.name]}")
        taken[verifier.name] = where
        url = values["url"].rstrip("/")
        if not url:
            raise fail(f"{where}.url", "missing")
        if not _URL.match(url):
            raise fail(f"{where}.url", f"{url!r} is not an http(s)://host:port URL")
        ca_path = None
        if values["ca_certificate"]:
            ca_path = _certificate(values["ca_certificate"], path, f"{where}.ca_certificate", fail)
        witnesses.append(
            OutsideWitness(values["witness_key"], url, ca_path, values["name"] or verifier.name)
        )
    return tuple(witnesses)


def _strings(
    entry: Mapping[str, Any], keys: Sequence[str], where: str, fail: Any
) -> dict[str, str]:
    """The entry's values of ``keys``, stripped ("" when absent); each must be a string."""
    values: dict[str, str] = {}
    for key in keys:
        value = entry.get(key, "")
        if not isinstance(value, str):
            raise fail(f"{where}.{key}", "a string")
        values[key] = value.strip()
    return values


def _certificate(given: str, path: Path, where: str, fail: Any) -> Path:
    """The CA certificate file ``given`` names (relative to the federation file), checked to
    hold a PEM certificate."""
    ca_path = Path(given)
    if not ca_path.is_absolute():
        ca_path = path.parent / ca_path
    try:
        x509.load_pem_x509_certificate(ca_path.read_bytes())
    except OSError as error:
        raise fail(where, f"{ca_path}: {error.strerror or error}") from None
    except ValueError:
        raise fail(where, f"{ca_path}: not a PEM certificate") from None
    return ca_path


def _witnessed_logs(
    raw: Any, peers: Sequence[Peer], own_origin: str, fail: Any
) -> tuple[WitnessedLog, ...]:
    if not isinstance(raw, list):
        raise fail("witnessed_logs", "use [[witnessed_logs]] tables, one per log")
    taken = {peer.origin: "a peer's log" for peer in peers}
    taken[own_origin] = "this node's own log"
    logs: list[WitnessedLog] = []
    for number, entry in enumerate(raw):
        where = f"witnessed_logs[{number}]"
        if not isinstance(entry, dict):
            raise fail(where, "a table with origin and log_key")
        _only(entry, _WITNESSED_KEYS, f"{where}.", fail)
        values = _strings(entry, ("origin", "log_key", "name"), where, fail)
        origin, log_key = values["origin"], values["log_key"]
        if not origin:
            raise fail(f"{where}.origin", "missing")
        if not log_key:
            raise fail(f"{where}.log_key", "missing")
        try:
            verifier = Verifier.from_key(log_key)
        except (LedgerError, ValueError) as error:
            raise fail(f"{where}.log_key", f"not a C2SP verifier key: {error}") from None
        if verifier.name != origin:
            raise fail(f"{where}.log_key", f"names the log {verifier.name!r}, not {origin!r}")
        if origin in taken:
            raise fail(f"{where}.origin", f"{origin!r} is {taken[origin]}")
        taken[origin] = f"witnessed_logs[{len(logs)}]"
        logs.append(WitnessedLog(origin, log_key, values["name"] or origin))
    return tuple(logs)


def _peer(entry: Any, number: int, path: Path, prefix: str, fail: Any) -> Peer:
    where = f"peers[{number}]"
    if not isinstance(entry, dict):
        raise fail(where, "a table of the peer's keys")
    _only(entry, _PEER_KEYS, f"{where}.", fail)

    def text(key: str, *, required: bool = True) -> str:
        value = entry.get(key, "")
        if not isinstance(value, str):
            raise fail(f"{where}.{key}", "a string")
        if required and not value.strip():
            raise fail(f"{where}.{key}", "missing")
        return value.strip()

    region = text("region")
    if not _REGION.match(region):
        raise fail(f"{where}.region", f"{region!r}: a 2, 4 or 6 digit region code")
    origin = text("origin")
    log_key = text("log_key")
    try:
        verifier = Verifier.from_key(log_key)
    except (LedgerError, ValueError) as error:
        raise fail(f"{where}.log_key", f"not a C2SP verifier key: {error}") from None
    if verifier.name != origin:
        raise fail(f"{where}.log_key", f"names the log {verifier.name!r}, not {origin!r}")
    witness_key = text("witness_key")
    try:
        CosignatureVerifier.from_key(witness_key)
    except (LedgerError, ValueError) as error:
        raise fail(f"{where}.witness_key", f"not a cosignature verifier key: {error}") from None
    encryption_key = _encryption_key(text("encryption_key"), f"{where}.encryption_key", fail)
    ca_path = _certificate(text("ca_certificate"), path, f"{where}.ca_certificate", fail)
    address = text("address")
    if not _ADDRESS.match(address):
        raise fail(f"{where}.address", f"{address!r} is not host:port")
    topic = text("inbox_topic", required=False) or inbox_topic(prefix, region)
    if not _TOPIC.match(topic):
        raise fail(f"{where}.inbox_topic", "letters, digits, '.', '_' or '-'")
    witness_url = text("witness_url", required=False).rstrip("/")
    if witness_url and not _URL.match(witness_url):
        raise fail(f"{where}.witness_url", f"{witness_url!r} is not an http(s)://host:port URL")
    return Peer(
        region=region,
        name=text("name", required=False) or region,
        origin=origin,
        log_key=log_key,
        witness_key=witness_key,
        encryption_key=encryption_key,
        ca_certificate=ca_path,
        address=address,
        inbox_topic=topic,
        witness_url=witness_url,
        certificate_issuers=_trust_bundle(
            text("trust_bundle", required=False), where, path, origin, fail
        ),
    )


def _trust_bundle(name: str, where: str, path: Path, origin: str, fail: Any) -> TrustBundle | None:
    """The peer's certificate issuers, every one of them the peer's own (its log's origin)."""
    if not name:
        return None
    bundle_path = Path(name) if Path(name).is_absolute() else path.parent / name
    try:
        text = bundle_path.read_text("utf-8")
    except OSError as error:
        raise fail(f"{where}.trust_bundle", f"{bundle_path}: {error.strerror or error}") from None
    try:
        bundle = TrustBundle.from_json(text, str(bundle_path))
    except ConfigurationError as error:
        raise fail(f"{where}.trust_bundle", str(error)) from None
    for number, issuer in enumerate(bundle.issuers):
        if issuer.origin != origin:
            raise fail(
                f"{where}.trust_bundle",
                f"issuers[{number}] is a key of {issuer.origin!r}, not of this peer ({origin!r})",
            )
    if not bundle.issuers:
        raise fail(f"{where}.trust_bundle", "names no issuer")
    return bundle


def _encryption_key(text: str, where: str, fail: Any) -> bytes:
    if not text.startswith(ENCRYPTION_KEY_PREFIX):
        raise fail(where, f"expected {ENCRYPTION_KEY_PREFIX}<base64 of 32 bytes>")
    try:
        raw = base64.b64decode(text[len(ENCRYPTION_KEY_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise fail(where, "not base64") from None
    if len(raw) != 32:
        raise fail(where, f"an X25519 public key has 32 bytes, not {len(raw)}")
    return raw


def encryption_key_text(key: X25519PublicKey) -> str:
    """The federation file's form of an HPKE public key."""
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return ENCRYPTION_KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def _check_regions(peers: Sequence[Peer], own_region: str, own_origin: str, fail: Any) -> None:
    seen: dict[str, int] = {}
    for number, peer in enumerate(peers):
        where = f"peers[{number}]"
        if peer.origin == own_origin:
            raise fail(f"{where}.origin", f"{peer.origin!r} is this node's own log")
        if peer.region.startswith(own_region) or own_region.startswith(peer.region):
            raise fail(f"{where}.region", f"{peer.region} overlaps this node's region {own_region}")
        for region, other in seen.items():
            if peer.region.startswith(region) or region.startswith(peer.region):
                raise fail(f"{where}.region", f"{peer.region} overlaps peers[{other}] ({region})")
        seen[peer.region] = number
        origins = [p.origin for p in peers[:number]]
        if peer.origin in origins:
            raise fail(
                f"{where}.origin", f"{peer.origin!r} is also peers[{origins.index(peer.origin)}]"
            )


def _table(data: Mapping[str, Any], key: str, fail: Any) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise fail(key, f"use a [{key}] table")
    return value


def _only(table: Mapping[str, Any], allowed: set[str], prefix: str, fail: Any) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise fail(
            f"{prefix}{unknown[0]}",
            f"unknown key (expected one of {', '.join(sorted(allowed))})",
        )


__all__ = [
    "DEFAULT_TOPIC_PREFIX",
    "FederationConfig",
    "OutsideWitness",
    "Peer",
    "WitnessedLog",
    "encryption_key_text",
    "inbox_topic",
    "load_federation",
    "parse_federation",
]

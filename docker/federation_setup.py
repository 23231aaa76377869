"""The federation's one-shot setup job: keys, certificates and federation files for every node.

docker/compose.yaml runs it twice per ``docker compose up``, in the node image, before any node
starts (both runs are idempotent: what exists is kept, so keys are made once and never again):

``passwords`` (service ``setup-passwords``, before the databases start)
    a random password per node's PostgreSQL (``POSTGRES_PASSWORD_FILE`` of ``postgres-NAME``),
    and the node's settings file with its ``database_url`` (``TONGBAN_CONFIG``), in the node's
    own volume — no password is in the compose file, an image or an environment variable.

``init`` (service ``setup``, once the databases are healthy), for each node of the plan:
    1. ``tongban init`` — the node's keys (log, at-rest key ring, pseudonym, first admin, witness,
       X25519 encryption) in its data volume, and its genesis in its database;
    2. its CA, in the setup job's own volume only, and its server certificate (role ``node``,
       named after its host and ``localhost``) with the CA certificate in its data volume — the
       CA key never enters a volume a serving node mounts;
    3. for every other node: a ``peer`` certificate issued by that node's CA, in this node's data
       volume (``pki/peers/<peer region>/<name>.pem``), to call that peer over mutual TLS;
    4. its halls: a ``hall`` certificate, a command-signing key, the CA certificate (and a bearer
       token for a gateway hall) in the hall's adapter volume, and the hall registered with the
       node (``tongban hall register``, signed with the first admin's key);
    5. its public identity (``federation/peers/<region>.toml``: its ``[[peers]]`` entry, see
       ``peer_identity.py``) and its CA certificate (``federation/ca/<region>.pem``).
    Then every node's federation file, ``federation/<region>.toml``: the plan's ``[kafka]`` and
    ``[relay]`` tables and the identities of all the other nodes, checked with the node's own
    loader (``hub.relay.config.load_federation``) before it is written. These are rewritten on
    every run, so a node added to the plan reaches every federation file.

The plan is docker/federation.toml. The volumes are mounted under one root (``--root``)::

    <root>/ca/<node>/               ca.pem, ca.key            (volume "ca": this job only)
    <root>/federation/              <region>.toml, peers/, ca/  (volume "federation")
    <root>/nodes/<node>/data/       the node's TONGBAN_DATA_DIR (volume "<node>-data")
    <root>/nodes/<node>/db/         password                  (volume "<node>-db-password")
    <root>/halls/<hall id>/         the hall's credentials    (volume "hall-<hall id>")

With ``--as-user NAME`` and started as root, the job makes those mount points NAME's (a new
volume mounted where the image has no directory belongs to root) and then drops to NAME for
everything else: every key is made by the unprivileged user the nodes run as.

Exit status 0, or 2 with one line naming what is wrong (the plan's entry, a command's error).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # peer_identity, beside this file

from peer_identity import peer_entry, render_peer, toml_string

from hub.errors import ConfigurationError
from hub.pki import NAME_PATTERN, Role, init_ca, load_ca
from hub.relay.config import load_federation

#: The admin ``tongban init`` names in each node's genesis.
ADMIN = "operator"
#: The node's own name inside its certificates (``tongban pki init`` uses the same).
NODE_CERTIFICATE_NAME = "node"

_REGION = re.compile(r"^\d{2}$")
_HALL_REGION = re.compile(r"^\d{12}$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.-]+:\d{1,5}$")


class SetupError(Exception):
    """Something the operator fixes (the plan, a volume, a failed command); one line."""


# ------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Database:
    """Where a node's PostgreSQL is (the password is the job's to make)."""

    host: str
    port: int
    user: str
    dbname: str

    def url(self, password: str) -> str:
        """The node's ``database_url``."""
        return f"postgresql://{self.user}:{password}@{self.host}:{self.port}/{self.dbname}"


@dataclass(frozen=True)
class Hall:
    """A hall of a node, served by an adapter of the compose file."""

    hall_id: str
    name: str
    region: str
    windows: tuple[str, ...]
    gateway: bool


@dataclass(frozen=True)
class Node:
    """One node of the federation."""

    name: str
    display: str
    region: str
    address: str
    database: Database
    halls: tuple[Hall, ...]

    @property
    def host(self) -> str:
        """The host name its peers and halls dial (named in its server certificate)."""
        return self.address.rsplit(":", 1)[0]

    @property
    def origin(self) -> str:
        """Its log origin (the node's default, ``tongban/<region>``)."""
        return f"tongban/{self.region}"


@dataclass(frozen=True)
class Plan:
    """docker/federation.toml, checked."""

    kafka: Mapping[str, Any]
    relay: Mapping[str, Any]
    nodes: tuple[Node, ...]


def load_plan(path: Path) -> Plan:
    """Read and check the plan; SetupError naming the entry at fault."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise SetupError(f"plan {path}: {error}") from None

    def fail(where: str, problem: str) -> SetupError:
        return SetupError(f"plan {path}: {where}: {problem}")

    def text(table: Mapping[str, Any], key: str, where: str) -> str:
        value = table.get(key)
        if not isinstance(value, str) or not value.strip():
            raise fail(f"{where}.{key}", "a non-empty string")
        return value.strip()

    nodes: list[Node] = []
    for number, raw in enumerate(data.get("nodes", [])):
        where = f"nodes[{number}]"
        name = text(raw, "name", where)
        if not NAME_PATTERN.match(name):
            raise fail(f"{where}.name", f"{name!r}: lower-case letters, digits, '.', '-'")
        region = text(raw, "region", where)
        if not _REGION.match(region):
            raise fail(f"{where}.region", f"{region!r}: a 2-digit province code")
        address = text(raw, "address", where)
        if not _ADDRESS.match(address):
            raise fail(f"{where}.address", f"{address!r} is not host:port")
        db = raw.get("database")
        if not isinstance(db, dict):
            raise fail(f"{where}.database", "a table: host, port, user, dbname")
        port = db.get("port", 5432)
        if isinstance(port, bool) or not isinstance(port, int):
            raise fail(f"{where}.database.port", "a port number")
        database = Database(
            text(db, "host", f"{where}.database"),
            port,
            text(db, "user", f"{where}.database"),
            text(db, "dbname", f"{where}.database"),
        )
        halls: list[Hall] = []
        for index, hall in enumerate(raw.get("halls", [])):
            at = f"{where}.halls[{index}]"
            hall_id = text(hall, "id", at)
            if not NAME_PATTERN.match(hall_id):
                raise fail(f"{at}.id", f"{hall_id!r}: lower-case letters, digits, '.', '-'")
            hall_region = text(hall, "region", at)
            if not _HALL_REGION.match(hall_region) or not hall_region.startswith(region):
                raise fail(f"{at}.region", f"{hall_region!r}: 12 digits inside region {region}")
            windows = hall.get("windows")
            if not isinstance(windows, list) or not windows:
                raise fail(f"{at}.windows", "a list of at least one window")
            halls.append(
                Hall(
                    hall_id,
                    text(hall, "name", at),
                    hall_region,
                    tuple(str(window) for window in windows),
                    bool(hall.get("gateway", False)),
                )
            )
        nodes.append(
            Node(
                name,
                str(raw.get("display", "")) or region,
                region,
                address,
                database,
                tuple(halls),
            )
        )
    if not nodes:
        raise fail("nodes", "name at least one node")
    for label, values in (
        ("name", [n.name for n in nodes]),
        ("region", [n.region for n in nodes]),
        ("halls.id", [h.hall_id for n in nodes for h in n.halls]),
    ):
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise fail(f"nodes[].{label}", f"{', '.join(repeated)} appears more than once")
    kafka, relay = data.get("kafka", {}), data.get("relay", {})
    if not isinstance(kafka, dict) or not isinstance(relay, dict):
        raise fail("kafka/relay", "tables, as in a federation file")
    return Plan(kafka, relay, tuple(nodes))


# ---------------------------------------------------------------------------------- the volumes


@dataclass(frozen=True)
class Layout:
    """Where the setup job finds each volume (see the module docstring)."""

    root: Path

    def ca(self, node: Node) -> Path:
        """The node's CA (ca.pem, ca.key): the job's volume only."""
        return self.root / "ca" / node.name

    @property
    def federation(self) -> Path:
        """Every node's federation file, identities and CA certificates (public)."""
        return self.root / "federation"

    def data(self, node: Node) -> Path:
        """The node's data directory (its volume)."""
        return self.root / "nodes" / node.name / "data"

    def db(self, node: Node) -> Path:
        """The directory of its PostgreSQL password file."""
        return self.root / "nodes" / node.name / "db"

    def hall(self, hall: Hall) -> Path:
        """A hall's adapter credentials."""
        return self.root / "halls" / hall.hall_id

    def mount_points(self, plan: Plan) -> list[Path]:
        """Every volume's directory."""
        points = [self.root / "ca", self.federation]
        for node in plan.nodes:
            points += [self.data(node), self.db(node), *(self.hall(h) for h in node.halls)]
        return points


def password_file(layout: Layout, node: Node) -> Path:
    """The node's database password (``POSTGRES_PASSWORD_FILE`` of its PostgreSQL)."""
    return layout.db(node) / "password"


def settings_file(layout: Layout, node: Node) -> Path:
    """The node's settings file with its ``database_url`` (its ``TONGBAN_CONFIG``)."""
    return layout.data(node) / "secrets" / "settings.toml"


def federation_file(layout: Layout, node: Node) -> Path:
    """The node's federation file (its ``TONGBAN_FEDERATION``)."""
    return layout.federation / f"{node.region}.toml"


def peer_certificate_dir(data_dir: Path, peer: Node) -> Path:
    """Where a node keeps the certificate a peer's CA issued it (``<name>.pem``, ``.key``)."""
    return data_dir / "pki" / "peers" / peer.region


#: A gateway hall's bearer token, and the hall's signing key, in its volume.
GATEWAY_TOKEN = "gateway.token"
SIGNING_KEY = "signing.key"


def settings_toml(node: Node, password: str) -> str:
    """The node's settings file: its database (with the password), nothing else."""
    return (
        "# Written by the setup job (docker/federation_setup.py): the node's database, with its\n"
        "# password. The node's other settings are TONGBAN_* variables in compose.yaml.\n"
        f"database_url = {toml_string(node.database.url(password))}\n"
    )


def federation_toml(plan: Plan, node: Node, peers: Sequence[Mapping[str, str]]) -> str:
    """The node's federation file, with the given peer entries."""
    lines = [
        f"# The federation file of node {node.region} ({node.display}), written by the setup job",
        "# (docker/federation_setup.py) from its peers' identities; each run writes it again.",
        "# The format is hub/relay/config.py's.",
        "",
        "[kafka]",
    ]
    for table, values in (("kafka", plan.kafka), ("relay", plan.relay)):
        if table == "relay":
            lines += ["", "[relay]"]
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    text = "\n".join(lines) + "\n"
    for entry in peers:
        text += "\n" + render_peer(entry)
    return text


# --------------------------------------------------------------------------------- the steps


def _write(path: Path, content: str) -> None:
    """Replace ``path`` atomically, mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
    os.replace(temporary, path)


def _say(line: str) -> None:
    print(f"setup: {line}", flush=True)


def node_environment(layout: Layout, node: Node) -> dict[str, str]:
    """The environment ``tongban`` runs with for ``node``: its data directory and settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}
    return {
        **base,
        "TONGBAN_DATA_DIR": str(layout.data(node)),
        "TONGBAN_CONFIG": str(settings_file(layout, node)),
        "TONGBAN_NODE_REGION": node.region,
    }


def tongban(environment: Mapping[str, str], *arguments: str) -> str:
    """Run a ``tongban`` command; its output, or SetupError with its error line."""
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli", *arguments],
        env=dict(environment),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        why = result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        raise SetupError(f"tongban {' '.join(arguments[:2])}: {why[0]}")
    return result.stdout


def make_passwords(plan: Plan, layout: Layout) -> None:
    """Step ``passwords``: each database's password and each node's settings file."""
    for node in plan.nodes:
        path = password_file(layout, node)
        if not path.exists():
            _write(path, secrets.token_urlsafe(32))
            _say(f"{node.name}: made the database password ({path})")
        password = path.read_text("ascii").strip()
        _write(settings_file(layout, node), settings_toml(node, password))


def init_node(layout: Layout, node: Node) -> None:
    """``tongban init``, the CA and the node's server certificate."""
    if not settings_file(layout, node).exists():
        raise SetupError(f"{node.name}: no settings file: run the 'passwords' step first")
    environment = node_environment(layout, node)
    first_line = tongban(environment, "init", "--admin", ADMIN).splitlines()[0]
    _say(f"{node.name}: {first_line}")
    ca_dir, pki = layout.ca(node), layout.data(node) / "pki"
    # Not `tongban pki init`: it writes the node's serving key beside the CA key, and here the
    # two live in different volumes (the CA's is never mounted by a serving node).
    if not (ca_dir / "ca.pem").exists():
        init_ca(ca_dir, node.name)
        _say(f"{node.name}: made its CA in {ca_dir}")
    ca = load_ca(ca_dir)
    if not (pki / "node.pem").exists():
        issued = ca.issue(
            Role.NODE,
            NODE_CERTIFICATE_NAME,
            dns_names=(node.host, "localhost"),
            ip_addresses=("127.0.0.1",),
        )
        issued.write(pki)
        _say(f"{node.name}: issued its server certificate for {node.host} in {pki}")
    shutil.copyfile(ca_dir / "ca.pem", pki / "ca.pem")


def issue_peer_certificates(plan: Plan, layout: Layout) -> None:
    """Every node gets a ``peer`` certificate from every other node's CA."""
    for node in plan.nodes:
        for peer in plan.nodes:
            if peer is node:
                continue
            out = peer_certificate_dir(layout.data(node), peer)
            if (out / f"{node.name}.pem").exists():
                continue
            tongban(node_environment(layout, node), "pki", "issue", "--dir",
                    str(layout.ca(peer)), "--role", "peer", "--name", node.name,
                    "--out", str(out))  # fmt: skip
            shutil.copyfile(layout.ca(peer) / "ca.pem", out / "ca.pem")
            _say(f"{node.name}: peer certificate from {peer.name}'s CA in {out}")


def set_up_halls(layout: Layout, node: Node) -> None:
    """Each hall's credentials in its adapter's volume, and the hall registered."""
    environment = node_environment(layout, node)
    listed = json.loads(tongban(environment, "hall", "list", "--json"))
    registered = {hall["hall_id"] for hall in listed["halls"]}
    for hall in node.halls:
        directory = layout.hall(hall)
        if not (directory / f"{hall.hall_id}.pem").exists():
            tongban(environment, "pki", "issue", "--dir", str(layout.ca(node)),
                    "--role", "hall", "--name", hall.hall_id, "--out", str(directory))  # fmt: skip
        signing_key = directory / SIGNING_KEY
        if not signing_key.exists():
            tongban(environment, "pki", "signing-key", "--out", str(signing_key))
        shutil.copyfile(layout.ca(node) / "ca.pem", directory / "ca.pem")
        if hall.gateway and not (directory / GATEWAY_TOKEN).exists():
            _write(directory / GATEWAY_TOKEN, secrets.token_urlsafe(32))
        if hall.hall_id not in registered:
            shown = json.loads(tongban(environment, "pki", "show-key", str(signing_key), "--json"))
            windows = [argument for window in hall.windows for argument in ("--window", window)]
            tongban(environment, "hall", "register", "--hall-id", hall.hall_id,
                    "--name", hall.name, "--region", hall.region, *windows,
                    "--public-key", shown["public_key"])  # fmt: skip
            _say(f"{node.name}: registered hall {hall.hall_id} (credentials in {directory})")


def publish_identity(layout: Layout, node: Node) -> dict[str, str]:
    """The node's ``[[peers]]`` entry and CA certificate, in the federation volume."""
    ca_certificate = layout.federation / "ca" / f"{node.region}.pem"
    ca_certificate.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(layout.ca(node) / "ca.pem", ca_certificate)
    entry = peer_entry(
        layout.data(node),
        region=node.region,
        name=node.display,
        address=node.address,
        ca_certificate=f"ca/{node.region}.pem",
    )
    _write(layout.federation / "peers" / f"{node.region}.toml", render_peer(entry))
    return entry


def write_federation_files(
    plan: Plan, layout: Layout, identities: Mapping[str, Mapping[str, str]]
) -> None:
    """Each node's federation file, checked with the node's own loader before it is used."""
    for node in plan.nodes:
        peers = [identities[peer.name] for peer in plan.nodes if peer is not node]
        path = federation_file(layout, node)
        candidate = path.with_name(f".{path.name}.check")
        _write(candidate, federation_toml(plan, node, peers))
        try:
            load_federation(candidate, own_region=node.region, own_origin=node.origin)
        except ConfigurationError as error:
            raise SetupError(str(error)) from None
        os.replace(candidate, path)
        _say(f"{node.name}: federation file {path} ({len(peers)} peers)")


def set_up(plan: Plan, layout: Layout) -> None:
    """Step ``init`` (see the module docstring)."""
    for node in plan.nodes:
        init_node(layout, node)
    issue_peer_certificates(plan, layout)
    identities = {}
    for node in plan.nodes:
        set_up_halls(layout, node)
        identities[node.name] = publish_identity(layout, node)
    write_federation_files(plan, layout, identities)
    for node in plan.nodes:
        _say(f"{node.name}: log key (for auditors) {identities[node.name]['log_key']}")


# ---------------------------------------------------------------------------------- privileges


def drop_privileges(layout: Layout, plan: Plan, user: str) -> None:
    """As root: give the volumes' mount points to ``user``, then become ``user`` for good."""
    if os.geteuid() != 0:
        return
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise SetupError(f"--as-user {user}: no such user") from None
    for point in layout.mount_points(plan):
        point.mkdir(parents=True, exist_ok=True)
        os.chown(point, account.pw_uid, account.pw_gid)
        point.chmod(0o700)
    os.setgroups([])
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)
    os.environ["HOME"] = account.pw_dir


def main(argv: Sequence[str] | None = None) -> int:
    """``federation_setup.py {passwords,init} --plan FILE --root DIR [--as-user NAME]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["passwords", "init"])
    parser.add_argument("--plan", required=True, type=Path, help="docker/federation.toml")
    parser.add_argument("--root", required=True, type=Path, help="where the volumes are")
    parser.add_argument("--as-user", help="started as root: become this user (see above)")
    args = parser.parse_args(argv)
    os.umask(0o077)
    try:
        plan = load_plan(args.plan)
        layout = Layout(args.root)
        if args.as_user:
            drop_privileges(layout, plan, args.as_user)
        if args.step == "passwords":
            make_passwords(plan, layout)
        else:
            set_up(plan, layout)
    except (SetupError, ConfigurationError) as error:
        print(f"setup: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

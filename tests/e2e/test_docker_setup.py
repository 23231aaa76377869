"""The federation's setup job for real, and what the compose file runs with its output.

This machine has no Docker engine, so the volumes are directories and each node's PostgreSQL is
a database of the test cluster (password authentication, as in the compose file). Everything
else is what compose runs: ``docker/federation_setup.py`` with docker/federation.toml (only the
databases' addresses changed), then ``tongban serve`` with a node service's environment from
docker/compose.yaml, the node's health check, and a YZ gateway started through
``docker/entrypoint.sh`` with its service's environment. Only the listening ports are this
machine's free ones instead of the containers' fixed ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from adapters.errors import CaseNotFound
from adapters.sdk import HallClient, HallCredentials, TLSConfig
from hub.pki import Role, load_ca
from hub.relay.config import load_federation
from ledger.cosignature import Cosigner
from tests.harness.compose import DOCKER, PLAN_FILE, load_compose, service_environment
from tests.harness.compose import setup_module as load_setup_module
from tests.harness.processes import free_tcp_port

pytestmark = pytest.mark.e2e

setup = load_setup_module()
COMPOSE = load_compose()
PLAN = setup.load_plan(PLAN_FILE)
SCRIPT = DOCKER / "federation_setup.py"
HEALTHCHECK = DOCKER / "healthcheck.py"
KEY_FILES = ("log.key", "cipher-keys", "pseudonym.key", "admin.key", "witness.key",
             "encryption.key")  # fmt: skip


def run_setup(step: str, plan: Path, root: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), step, "--plan", str(plan), "--root", str(root)],
        env=clean, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


class Federation:
    """The setup job's output under ``root``, with the databases it was given."""

    def __init__(self, root: Path, plan: Path, databases: dict[str, str]) -> None:
        self.root = root
        self.plan = plan
        self.layout = setup.Layout(root)
        self.databases = databases
        self.first_run = ""


@pytest.fixture(scope="module")
def federation(postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """docker/federation.toml set up under a temporary root, each node on its own database."""
    root = tmp_path_factory.mktemp("volumes")
    server = conninfo_to_dict(postgres_dsn)
    suffix = uuid.uuid4().hex[:8]
    text = PLAN_FILE.read_text()
    names = {}
    for node in PLAN.nodes:
        role = f"tongban_{node.name}_{suffix}"
        names[node.name] = role
        text = re.sub(
            rf'database = \{{ host = "{re.escape(node.database.host)}"[^}}]*\}}',
            f'database = {{ host = "{server["host"]}", port = {server["port"]}, '
            f'user = "{role}", dbname = "{role}" }}',
            text,
        )
    plan = root.parent / f"plan-{suffix}.toml"
    plan.write_text(text)
    result = run_setup("passwords", plan, root)
    assert result.returncode == 0, result.stderr
    # What the postgres image does with POSTGRES_PASSWORD_FILE: the role, with that password.
    layout = setup.Layout(root)
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        for node in PLAN.nodes:
            password = setup.password_file(layout, node).read_text().strip()
            role = sql.Identifier(names[node.name])
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(password))
            )
            admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(role, role))
    made = Federation(root, plan, names)
    try:
        result = run_setup("init", plan, root)
        assert result.returncode == 0, result.stderr
        made.first_run = result.stdout
        yield made
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            for role in names.values():
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(role)))  # fmt: skip
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _fingerprints(root: Path) -> dict[str, str]:
    """SHA-256 of every key, certificate and password the job wrote."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and (
            path.suffix in (".key", ".pem")
            or path.name in (*KEY_FILES, "password", "gateway.token")
        )
    }


def test_the_setup_job_makes_every_nodes_keys_certificates_and_halls(
    federation: Federation,
) -> None:
    layout = federation.layout
    for node in PLAN.nodes:
        data = layout.data(node)
        for name in KEY_FILES:
            path = data / "secrets" / name
            assert path.exists(), path
            assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
        assert (data / "log.vkey").read_text().startswith(f"{node.origin}+")
        for name in ("ca.pem", "node.pem", "node.key"):
            assert (data / "pki" / name).exists()
        assert f"{node.name}: node {node.origin} initialised" in federation.first_run
        # The node's settings file holds its database with the password its PostgreSQL was
        # given (the server checks passwords: scram-sha-256), and nothing else.
        settings = tomllib.loads(setup.settings_file(layout, node).read_text())
        assert list(settings) == ["database_url"]
        with psycopg.connect(settings["database_url"]) as connection:
            connection.execute("SELECT 1")
        password = setup.password_file(layout, node).read_text().strip()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(settings["database_url"].replace(password, password[::-1]))
    assert "log key (for auditors)" in federation.first_run


def test_the_ca_keys_are_only_in_the_setup_jobs_volume(federation: Federation) -> None:
    root = federation.root
    ca_keys = sorted(path.relative_to(root) for path in root.rglob("ca.key"))
    assert ca_keys == sorted(Path("ca", node.name, "ca.key") for node in PLAN.nodes)
    # No other private key in the CA volume either: the node's serving key is in its own.
    assert sorted(p.name for p in (root / "ca").rglob("*")) == sorted(
        [node.name for node in PLAN.nodes] + ["ca.pem", "ca.key"] * len(PLAN.nodes)
    )


def test_a_second_run_changes_no_key_and_registers_nothing_twice(federation: Federation) -> None:
    before = _fingerprints(federation.root)
    result = run_setup("init", federation.plan, federation.root)
    assert result.returncode == 0, result.stderr
    assert "already initialised" in result.stdout
    assert "registered hall" not in result.stdout
    assert _fingerprints(federation.root) == before
    passwords = run_setup("passwords", federation.plan, federation.root)
    assert passwords.returncode == 0, passwords.stderr
    assert _fingerprints(federation.root) == before


def test_each_nodes_federation_file_names_every_other_node_as_it_is(
    federation: Federation,
) -> None:
    layout = federation.layout
    for node in PLAN.nodes:
        config = load_federation(
            setup.federation_file(layout, node), own_region=node.region, own_origin=node.origin
        )
        assert config.witness_k == PLAN.relay["witness_k"]
        assert sorted(p.region for p in config.peers) == sorted(
            o.region for o in PLAN.nodes if o is not node
        )
        for peer in config.peers:
            other = next(o for o in PLAN.nodes if o.region == peer.region)
            assert peer.log_key == (layout.data(other) / "log.vkey").read_text().strip()
            assert peer.ca_certificate.read_bytes() == (layout.ca(other) / "ca.pem").read_bytes()
            assert peer.inbox_topic == f"{PLAN.kafka['topic_prefix']}.{other.region}.inbox"
            # The stand-in for `tongban federation identity` prints the entry that was used.
            printed = subprocess.run(
                [sys.executable, str(DOCKER / "peer_identity.py"), "--data-dir",
                 str(layout.data(other)), "--region", other.region, "--name", other.display,
                 "--address", other.address, "--ca-certificate", f"ca/{other.region}.pem"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            published = layout.federation / "peers" / f"{other.region}.toml"
            assert printed == published.read_text()
            assert printed in setup.federation_file(layout, node).read_text()
            # Its witness and encryption keys are the public halves of the other's secrets.
            secrets = layout.data(other) / "secrets"
            witness = Cosigner.from_key((secrets / "witness.key").read_text().strip())
            assert peer.witness_key == witness.verifier_key()
            encryption = X25519PrivateKey.from_private_bytes(
                base64.b64decode((secrets / "encryption.key").read_text().strip())
            )
            assert peer.encryption_public_key().public_bytes_raw() == (
                encryption.public_key().public_bytes_raw()
            )
            # Peer mTLS: this node holds a peer certificate from the other node's CA.
            issued = setup.peer_certificate_dir(layout.data(node), other) / f"{node.name}.pem"
            identity = load_ca(layout.ca(other)).verify(issued.read_bytes())
            assert (identity.role, identity.name) == (Role.PEER, node.name)


def _start(command: list[str], env: dict[str, str], log: Path, ready: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ready in log.read_text():
            return process
        if process.poll() is not None:
            break
        time.sleep(0.05)
    _stop(process)
    raise AssertionError(f"{' '.join(command)} did not start:\n{log.read_text()}")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _health(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args],
        env=env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_a_node_serves_with_its_compose_environment_and_its_adapter_connects(
    federation: Federation, tmp_path: Path
) -> None:
    node = next(n for n in PLAN.nodes if n.name == "hunan")
    hall = next(h for h in node.halls if h.gateway)
    port = free_tcp_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")},
        **service_environment(COMPOSE, f"node-{node.name}", federation.root),
        # This machine's ports instead of the container's.
        "TONGBAN_LISTEN": f"127.0.0.1:{port}",
        "TONGBAN_METRICS_LISTEN": "127.0.0.1:0",
        "TONGBAN_PROCESSES": "1",
    }
    node_process = _start(
        [sys.executable, "-m", "hub.cli", "serve", "--grace", "1"],
        environment, tmp_path / "node.log", "tongban: serving on",
    )  # fmt: skip
    try:
        health = _health(environment)
        assert health.returncode == 0, health.stderr

        # The hall's credentials from its volume: the node knows the hall (NOT_FOUND for a
        # case that does not exist, not UNAUTHENTICATED), and its registered key is the one
        # in the volume.
        directory = federation.layout.hall(hall)
        credentials = HallCredentials(
            hall.hall_id,
            hall.region,
            HallCredentials.load_signing_key(directory / setup.SIGNING_KEY),
            TLSConfig.from_files(
                directory / "ca.pem",
                directory / f"{hall.hall_id}.pem",
                directory / f"{hall.hall_id}.key",
            ),
            node=node.origin,
        )
        with (
            HallClient.connect(f"localhost:{port}", credentials) as client,
            pytest.raises(CaseNotFound),
        ):
            client.get_case(str(uuid.uuid4()))
        shown = subprocess.run(
            [sys.executable, "-m", "hub.cli", "hall", "show", hall.hall_id, "--json"],
            env=environment, capture_output=True, text=True, check=True,
        )  # fmt: skip
        key = subprocess.run(
            [sys.executable, "-m", "hub.cli", "pki", "show-key", "--json",
             str(directory / setup.SIGNING_KEY)],
            env=environment, capture_output=True, text=True, check=True,
        )  # fmt: skip
        registered = json.loads(shown.stdout)
        assert registered["current_key_id"] == json.loads(key.stdout)["key_id"]
        assert registered["windows"] == list(hall.windows)

        # The gateway, through the image's entry point, with its service's environment: it
        # reads its token from the file the setup job wrote, and its health check passes.
        gateway_port = free_tcp_port()
        gateway_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")},
            **service_environment(COMPOSE, f"gateway-{node.name}", federation.root),
            "TONGBAN_ADAPTER_TARGET": f"localhost:{port}",
            "TONGBAN_GATEWAY_LISTEN": f"127.0.0.1:{gateway_port}",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        gateway = _start(
            ["sh", str(DOCKER / "entrypoint.sh"), "adapter", "gateway"],
            gateway_env, tmp_path / "gateway.log", "listening on",
        )  # fmt: skip
        try:
            health = _health(gateway_env, "gateway")
            assert health.returncode == 0, health.stderr
            url = f"http://127.0.0.1:{gateway_port}/api/v1/health"
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(url, timeout=10)
            assert refused.value.code == 401  # the token is required
            token = (directory / setup.GATEWAY_TOKEN).read_text().strip()
            assert token not in json.dumps(COMPOSE)
        finally:
            _stop(gateway)
    finally:
        _stop(node_process)
    stopped = _health(environment)
    assert stopped.returncode == 1
    assert "does not answer" in stopped.stderr


def test_the_setup_job_refuses_to_init_before_the_passwords_step(tmp_path: Path) -> None:
    result = run_setup("init", PLAN_FILE, tmp_path)
    assert result.returncode == 2
    assert "run the 'passwords' step first" in result.stderr
    assert not list(tmp_path.rglob("*.key"))

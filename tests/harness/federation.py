"""A federation of nodes in one process: each with its own store, keys, CA, integrator and relay.

    with Federation.start(tmp_path, broker, regions=("43", "61")) as federation:
        hunan, shaanxi = federation.nodes["43"], federation.nodes["61"]
        ...                                      # halls sign commands at their node
        federation.wait(lambda: ..., "the case reached 61")

Each node writes its federation file from the others' public identities (what
``tongban federation identity`` prints), so the files are exactly what an operator assembles.
The integrators and relays run in threads and are stopped, and the stores closed, on exit.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hub.bootstrap import (
    admin_signer,
    build_application,
    build_relay,
    federation_identity,
    load_certificate_issuer,
)
from hub.certificates import TrustBundle
from hub.pki import init_ca
from hub.relay.config import encryption_key_text
from hub.relay.node import Relay
from hub.settings import Settings
from ledger.cosignature import Cosigner

from .inprocess import InProcessNode
from .node import NodeProcess

TOPIC_PREFIX = "tongban.test"


def federation_file(
    path: Path,
    bootstrap: str,
    peers: list[dict[str, str]],
    *,
    resend_after_s: float = 30.0,
    topic_prefix: str = TOPIC_PREFIX,
) -> Path:
    """Write a federation file naming ``peers`` (identities as ``federation_identity`` gives)."""
    lines = [
        "[kafka]",
        f'bootstrap = ["{bootstrap}"]',
        f'topic_prefix = "{topic_prefix}"',
        "",
        "[relay]",
        f"resend_after_s = {resend_after_s}",
        f"witness_k = {min(1, len(peers))}",
    ]
    for peer in peers:
        lines += ["", "[[peers]]"]
        lines += [f'{key} = "{value}"' for key, value in peer.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tomllib.loads(path.read_text(encoding="utf-8"))  # a file the node can read
    return path


@dataclass
class Member:
    """One node of the federation."""

    region: str
    node: InProcessNode
    relay: Relay | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def app(self) -> Any:
        return self.node.app

    @property
    def origin(self) -> str:
        return self.node.settings.origin


class Federation:
    """Nodes that know each other (see the module docstring)."""

    def __init__(self, members: dict[str, Member]) -> None:
        self.nodes = members

    @classmethod
    @contextmanager
    def start(
        cls,
        directory: Path,
        bootstrap: str,
        *,
        regions: tuple[str, ...] = ("43", "61"),
        resend_after_s: float = 30.0,
        database_urls: dict[str, str] | None = None,
        run: bool = True,
    ) -> Iterator[Federation]:
        # Topics of their own: tests share one broker.
        prefix = f"{TOPIC_PREFIX}.{uuid.uuid4().hex[:8]}"
        with ExitStack() as stack:
            members: dict[str, Member] = {}
            settings: dict[str, Settings] = {}
            for region in regions:
                data = directory / f"node-{region}"
                base = Settings(
                    data_dir=data,
                    node_region=region,
                    database_url=(database_urls or {}).get(region),
                    checkpoint_interval_ms=100,
                    listen=f"127.0.0.1:{7400 + int(region)}",
                )
                init_ca(base.pki_dir, f"node-{region}")
                settings[region] = base
                node = InProcessNode.start(base)
                stack.callback(node.close)
                members[region] = Member(region, node)
            identities = {region: federation_identity(s) for region, s in settings.items()}
            for region, base in settings.items():
                # Each node's certificate issuers, as `tongban trust export` writes them: its
                # peers check the certificates it issues offline with them.
                bundle = directory / f"trust-{region}.json"
                issuer = load_certificate_issuer(base).trusted()
                bundle.write_text(TrustBundle((issuer,)).to_json() + "\n", encoding="utf-8")
                identities[region]["trust_bundle"] = str(bundle)
            for region, base in settings.items():
                path = federation_file(
                    directory / f"federation-{region}.toml",
                    bootstrap,
                    [identity for other, identity in identities.items() if other != region],
                    resend_after_s=resend_after_s,
                    topic_prefix=prefix,
                )
                member = members[region]
                member.node.close()
                configured = base.with_changes(federation=path)
                app = build_application(configured)
                member.node = InProcessNode(configured, app, admin_signer(configured, app))
                stack.callback(member.node.close)
            federation = cls(members)
            for member in members.values():
                if run:
                    federation.run(member)
                    stack.callback(federation.halt, member)
                else:  # the test moves the messages itself
                    member.relay = build_relay(member.node.settings, member.node.app)
            yield federation

    def outgoing(self, member: Member) -> list[tuple[Any, bytes]]:
        """Integrate, queue and build every message ``member`` would send now (rows, bytes)."""
        assert member.relay is not None
        member.node.integrator().catch_up()
        member.relay.project_pending()
        messages = []
        for row in member.relay.store.due(member.relay.config.resend_after_s, limit=1000):
            message = member.relay.publisher.message_for(row)
            if message is not None:
                messages.append((row, message))
        return messages

    def run(self, member: Member) -> None:
        """Start the member's integrator and relay threads."""
        member.stop = threading.Event()
        integrator = member.node.integrator()
        member.relay = build_relay(member.node.settings, member.node.app)
        assert member.relay is not None
        member.relay.attach(integrator)
        threads = [
            threading.Thread(target=integrator.run, args=(member.stop,), daemon=True),
            threading.Thread(target=member.relay.run, args=(member.stop,), daemon=True),
        ]
        for thread in threads:
            thread.start()
        member.threads = threads

    def halt(self, member: Member) -> None:
        """Stop the member's integrator and relay (its store stays open)."""
        member.stop.set()
        for thread in member.threads:
            thread.join(timeout=30)
        member.threads = []

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
        """Wait until ``condition()`` is true (polled; the relays work in their threads)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = condition()
            except Exception:  # not there yet (a case that has not arrived raises NotFound)
                value = None
            if value:
                return value
            for member in self.nodes.values():
                if member.relay is not None and member.relay.failure:
                    raise AssertionError(f"{member.origin}: {member.relay.failure}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting until {what}")
            time.sleep(0.05)


# Federation files for NodeProcess nodes (tests/e2e), from each node's data directory.


def peer_entry(node: NodeProcess, *, region: str, address: str, name: str = "") -> str:
    """The ``[[peers]]`` table that names ``node`` in another node's federation file."""
    secrets = node.data_dir / "secrets"
    witness = Cosigner.from_key((secrets / "witness.key").read_text().strip())
    raw = base64.b64decode((secrets / "encryption.key").read_text().strip())
    encryption = X25519PrivateKey.from_private_bytes(raw).public_key()
    return "\n".join(
        [
            "[[peers]]",
            f'region = "{region}"',
            f'name = "{name or region}"',
            f'origin = "{node.origin}"',
            f'log_key = "{node.log_key}"',
            f'witness_key = "{witness.verifier_key()}"',
            f'encryption_key = "{encryption_key_text(encryption)}"',
            f'ca_certificate = "{node.pki / "ca.pem"}"',
            f'address = "{address}"',
            "",
        ]
    )


def write_federation(path: Path, entries: Sequence[str], bootstrap: str = "localhost:9092") -> Path:
    """A federation file with ``entries`` (and a broker address the test may not use)."""
    text = "\n".join([f'[kafka]\nbootstrap = ["{bootstrap}"]\n', *entries])
    path.write_text(text, encoding="utf-8")
    return path


@contextmanager
def node_processes(
    root: Path,
    bootstrap: str,
    database_urls: dict[str, str],
    halls: dict[str, tuple[str, str]],
    *,
    resend_after_s: float = 2.0,
) -> Iterator[dict[str, NodeProcess]]:
    """Real ``tongban serve`` nodes (one per region of ``database_urls``), each with its own
    database, federation file, peer certificate and ``halls`` (region → (hall id, hall region)),
    started in region order so that later nodes' files carry the earlier nodes' real addresses
    (for fetching material files); stopped on exit."""
    with ExitStack() as stack:
        made: dict[str, NodeProcess] = {}
        for region, url in database_urls.items():
            node = NodeProcess(
                root / region,
                database_url=url,
                extra_env={
                    "TONGBAN_NODE_REGION": region,
                    "TONGBAN_CHECKPOINT_INTERVAL_MS": "200",
                    "TONGBAN_WITNESS_LISTEN": "127.0.0.1:0",
                },
                processes=1,
            )
            node.run("pki", "peer-cert")
            made[region] = node
        identities = {
            region: json.loads(node.run("federation", "identity", "--json"))
            for region, node in made.items()
        }
        prefix = f"{TOPIC_PREFIX}.{uuid.uuid4().hex[:8]}"
        for region, (hall_id, hall_region) in halls.items():
            made[region].add_hall(hall_id, hall_region)
        for region, node in made.items():
            peers = [
                {**identity, "address": made[other].target if made[other].port else "localhost:1"}
                for other, identity in identities.items()
                if other != region
            ]
            path = federation_file(
                root / region / "federation.toml", bootstrap, peers,
                resend_after_s=resend_after_s, topic_prefix=prefix,
            )  # fmt: skip
            node.env["TONGBAN_FEDERATION"] = str(path)
            stack.callback(node.stop)
            node.start()
        yield made


def wait_for(
    condition: Callable[[], Any], what: str, nodes: Sequence[NodeProcess], timeout: float = 180.0
) -> Any:
    """Poll ``condition`` (its errors count as "not yet") until it is truthy, and return it;
    after ``timeout`` seconds fail naming ``what``, with the tail of each node's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(Exception):
            value = condition()
            if value:
                return value
        time.sleep(0.2)
    logs = "\n".join(f"--- {n.origin}\n{n.log()[-3000:]}" for n in nodes)
    raise AssertionError(f"timed out waiting until {what}; the nodes' logs:\n{logs}")

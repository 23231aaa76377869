"""Federation files for nodes of the test harness: each node's ``[[peers]]`` entry, from its
data directory (log key, witness key, encryption key, CA certificate) and its address.

    entry = peer_entry(node_a, region="43", address=node_a.target)
    write_federation(node_b.directory / "federation.toml", [entry])

Plain Python (no pytest), so benchmarks can use it too.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hub.relay.config import encryption_key_text
from ledger.cosignature import Cosigner
from tests.harness.node import NodeProcess


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

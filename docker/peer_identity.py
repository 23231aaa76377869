"""A node's own ``[[peers]]`` entry, for the federation files of its peers.

A stand-in until ``tongban federation identity`` prints the same entry: the setup job
(``docker/federation_setup.py``) imports :func:`peer_entry` and :func:`render_peer` from here,
and this file goes once that command exists. It reads only what ``tongban init`` wrote into
the node's data directory, and prints only public keys:

* ``log_key`` — ``<data dir>/log.vkey``, the verifier key of the node's log (its origin is the
  key's name);
* ``witness_key`` — the verifier key of ``<data dir>/secrets/witness.key``, the key the node
  cosigns its peers' checkpoints with;
* ``encryption_key`` — ``x25519:`` and the public half of ``<data dir>/secrets/encryption.key``,
  the key peers seal personal data to.

Run in the node image (it uses the node's own key loaders)::

    python /opt/tongban/docker/peer_identity.py --data-dir /var/lib/tongban --region 43 \\
        --name 湖南省 --address node-hunan:7443 --ca-certificate ca/43.pem
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from hub.bootstrap import NodePaths, load_federation_keys
from hub.relay.config import encryption_key_text
from hub.settings import Settings
from ledger import Verifier

#: The keys of a ``[[peers]]`` entry, in the order they are written.
PEER_KEYS = (
    "region",
    "name",
    "origin",
    "log_key",
    "witness_key",
    "encryption_key",
    "ca_certificate",
    "address",
)


def peer_entry(
    data_dir: Path, *, region: str, name: str, address: str, ca_certificate: str
) -> dict[str, str]:
    """The node's ``[[peers]]`` entry from its data directory (public keys only)."""
    log_key = NodePaths(data_dir).log_vkey.read_text("ascii").strip()
    keys = load_federation_keys(Settings(data_dir=data_dir, node_region=region))
    return {
        "region": region,
        "name": name,
        "origin": Verifier.from_key(log_key).name,
        "log_key": log_key,
        "witness_key": keys.witness.verifier_key(),
        "encryption_key": encryption_key_text(keys.encryption.public_key()),
        "ca_certificate": ca_certificate,
        "address": address,
    }


def toml_string(value: str) -> str:
    """A TOML basic string.

    JSON's string escapes (``\\"``, ``\\\\``, ``\\n``, ``\\uXXXX``) are all TOML escapes too; the
    files written with it are read back with ``tomllib`` before they are used. (No TOML writer
    is a dependency of the node, and these files hold only strings, numbers and lists.)
    """
    return json.dumps(value, ensure_ascii=False)


def render_peer(entry: Mapping[str, str]) -> str:
    """The ``[[peers]]`` table of one entry."""
    lines = ["[[peers]]"]
    lines += [f"{key} = {toml_string(entry[key])}" for key in PEER_KEYS if key in entry]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the node's ``[[peers]]`` entry."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--region", required=True)
    parser.add_argument("--name", default="")
    parser.add_argument("--address", required=True, help="host:port where peers reach it")
    parser.add_argument("--ca-certificate", required=True, help="path of its CA certificate")
    args = parser.parse_args(argv)
    entry = peer_entry(
        args.data_dir,
        region=args.region,
        name=args.name or args.region,
        address=args.address,
        ca_certificate=args.ca_certificate,
    )
    sys.stdout.write(render_peer(entry))
    return 0


if __name__ == "__main__":
    sys.exit(main())

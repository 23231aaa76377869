"""The federation file's witnessing entries: each peer's witness_url and [[witnessed_logs]],
checked with errors naming the entry; and the witnessing configuration built from them."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import NameOID

from hub.errors import ConfigurationError
from hub.relay.config import parse_federation
from ledger import Cosigner, Signer


def _ca(path: Path) -> Path:
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peer CA")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, None)
    )
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def _peer(tmp_path: Path, region: str, **extra: Any) -> dict[str, Any]:
    origin = f"tongban/{region}"
    raw = X25519PrivateKey.generate().public_key().public_bytes_raw()
    return {
        "region": region,
        "origin": origin,
        "log_key": Signer.generate(origin).verifier_key(),
        "witness_key": Cosigner.generate(f"{origin}/witness").verifier_key(),
        "encryption_key": "x25519:" + base64.b64encode(raw).decode(),
        "ca_certificate": str(_ca(tmp_path / f"{region}-ca.pem")),
        "address": f"node-{region}.example:7443",
        **extra,
    }


def _parse(tmp_path: Path, data: dict[str, Any]) -> Any:
    document = {"kafka": {"bootstrap": ["127.0.0.1:9092"]}, **data}
    return parse_federation(
        document, path=tmp_path / "federation.toml", own_region="43", own_origin="tongban/43"
    )


def test_witness_urls_and_witnessed_logs_are_read(tmp_path: Path) -> None:
    outside = Signer.generate("transparency.example/log")
    config = _parse(
        tmp_path,
        {
            "relay": {"witness_k": 1},
            "peers": [
                _peer(tmp_path, "42", witness_url="https://node-42.example:7444/"),
                _peer(tmp_path, "61"),
            ],
            "witnessed_logs": [
                {"origin": "transparency.example/log", "log_key": outside.verifier_key()}
            ],
        },
    )
    assert [p.witness_url for p in config.peers] == ["https://node-42.example:7444", ""]
    (log,) = config.witnessed_logs
    assert (log.origin, log.name) == ("transparency.example/log", "transparency.example/log")
    assert log.log_verifier().name == "transparency.example/log"


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"peers": "PEER:witness_url=ftp://x"}, "peers[0].witness_url"),
        ({"peers": "PEER:witness_url=node-42:7444"}, "peers[0].witness_url"),
        ({"witnessed_logs": {"origin": "x"}}, "witnessed_logs"),
        ({"witnessed_logs": [{"origin": "a.example/log"}]}, "witnessed_logs[0].log_key"),
        ({"witnessed_logs": [{"log_key": "LOG"}]}, "witnessed_logs[0].origin"),
        (
            {"witnessed_logs": [{"origin": "b.example/log", "log_key": "LOG"}]},
            "witnessed_logs[0].log_key",
        ),
        (
            {"witnessed_logs": [{"origin": "a.example/log", "log_key": "not a key"}]},
            "witnessed_logs[0].log_key",
        ),
        (
            {"witnessed_logs": [{"origin": "a.example/log", "log_key": "LOG", "url": "x"}]},
            "witnessed_logs[0].url",
        ),
        (
            {"witnessed_logs": [{"origin": "tongban/43", "log_key": "OWN"}]},
            "witnessed_logs[0].origin",
        ),
        (
            {"witnessed_logs": [{"origin": "tongban/42", "log_key": "PEERLOG"}]},
            "witnessed_logs[0].origin",
        ),
        (
            {"witnessed_logs": [{"origin": "a.example/log", "log_key": "LOG"}] * 2},
            "witnessed_logs[1].origin",
        ),
    ],
)
def test_mistakes_name_the_entry(tmp_path: Path, data: dict[str, Any], where: str) -> None:
    keys = {
        "LOG": Signer.generate("a.example/log").verifier_key(),
        "OWN": Signer.generate("tongban/43").verifier_key(),
        "PEERLOG": Signer.generate("tongban/42").verifier_key(),
    }
    document: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, str) and value.startswith("PEER:"):
            name, _, url = value[5:].partition("=")
            document[key] = [_peer(tmp_path, "42", **{name: url})]
        elif isinstance(value, list):
            document[key] = [
                {k: keys.get(v, v) if isinstance(v, str) else v for k, v in entry.items()}
                for entry in value
            ]
        else:
            document[key] = value
    if "witnessed_logs" in document and "peers" not in document:
        document["peers"] = [_peer(tmp_path, "42")]
    with pytest.raises(ConfigurationError) as refused:
        _parse(tmp_path, document)
    assert f"federation.toml: {where}:" in str(refused.value)

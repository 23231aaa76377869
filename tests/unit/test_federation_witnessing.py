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
from hub.relay.config import load_federation, parse_federation
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


def test_outside_witnesses_are_read_and_count_towards_witness_k(tmp_path: Path) -> None:
    outside = Cosigner.generate("witness.example/w1")
    plain = Cosigner.generate("witness.example/w2")
    _ca(tmp_path / "w1-ca.pem")
    config = _parse(
        tmp_path,
        {
            "relay": {"witness_k": 3},  # of one peer and two outside witnesses
            "peers": [_peer(tmp_path, "42", witness_url="http://node-42.example:7444")],
            "witnesses": [
                {
                    "witness_key": outside.verifier_key(),
                    "url": "https://witness.example/tlog-witness/",
                    "ca_certificate": "w1-ca.pem",  # relative to the federation file
                    "name": "一个外部见证者",
                },
                {"witness_key": plain.verifier_key(), "url": "http://w2.example:8080"},
            ],
        },
    )
    first, second = config.witnesses
    assert (first.url, first.ca_certificate, first.name) == (
        "https://witness.example/tlog-witness",
        tmp_path / "w1-ca.pem",
        "一个外部见证者",
    )
    assert (second.ca_certificate, second.name) == (None, "witness.example/w2")
    assert first.witness_verifier().name == "witness.example/w1"
    assert config.witness_k == 3


@pytest.mark.parametrize(
    ("witnesses", "witness_k", "where", "problem"),
    [
        ({"url": "x"}, 0, "witnesses", "use [[witnesses]] tables"),
        ([{"url": "http://w.example"}], 0, "witnesses[0].witness_key", "missing"),
        ([{"witness_key": "W1"}], 0, "witnesses[0].url", "missing"),
        ([{"witness_key": "W1", "url": "ftp://w.example"}], 0, "witnesses[0].url", "is not"),
        ([{"witness_key": "not a key", "url": "http://w.example"}], 0,
         "witnesses[0].witness_key", "not a cosignature verifier key"),
        ([{"witness_key": "W1", "url": "http://w.example", "ca_certificate": "none.pem"}], 0,
         "witnesses[0].ca_certificate", "none.pem"),
        ([{"witness_key": "W1", "url": "http://w.example", "key": "x"}], 0,
         "witnesses[0].key", "unknown key"),
        ([{"witness_key": "W1", "url": "http://a.example"},
          {"witness_key": "W1", "url": "http://b.example"}], 0,
         "witnesses[1].witness_key", "'witness.example/w1' is witnesses[0]"),
        ([{"witness_key": "PEERWITNESS", "url": "http://a.example"}], 0,
         "witnesses[0].witness_key", "is peers[0]'s witness"),
        ([{"witness_key": "W1", "url": "http://w.example"}], 3, "relay.witness_k",
         "3 of 1 peers and 1 [[witnesses]] can never be met"),
    ],
)  # fmt: skip
def test_outside_witness_mistakes_name_the_entry(
    tmp_path: Path, witnesses: Any, witness_k: int, where: str, problem: str
) -> None:
    peer = _peer(tmp_path, "42")
    keys = {
        "W1": Cosigner.generate("witness.example/w1").verifier_key(),
        "PEERWITNESS": Cosigner.generate("tongban/42/witness").verifier_key(),
    }
    if isinstance(witnesses, list):
        witnesses = [{k: keys.get(v, v) for k, v in entry.items()} for entry in witnesses]
    with pytest.raises(ConfigurationError) as refused:
        _parse(
            tmp_path,
            {"relay": {"witness_k": witness_k}, "peers": [peer], "witnesses": witnesses},
        )
    assert f"federation.toml: {where}:" in str(refused.value)
    assert problem in str(refused.value)


@pytest.mark.parametrize(
    ("regions", "where", "problem"),
    [
        (("4309",), "peers[0].region", "4309 overlaps this node's region 43"),
        (("61", "6109"), "peers[1].region", "6109 overlaps peers[0] (61)"),
        (("4",), "peers[0].region", "'4': a 2, 4 or 6 digit region code"),
    ],
)
def test_a_peer_whose_region_overlaps_is_named(
    tmp_path: Path, regions: tuple[str, ...], where: str, problem: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        _parse(tmp_path, {"peers": [_peer(tmp_path, region) for region in regions]})
    assert f"federation.toml: {where}: {problem}" in str(refused.value)


def test_a_peer_log_key_of_another_origin_is_named(tmp_path: Path) -> None:
    peer = {**_peer(tmp_path, "61"), "log_key": Signer.generate("tongban/42").verifier_key()}
    with pytest.raises(ConfigurationError) as refused:
        _parse(tmp_path, {"peers": [peer]})
    assert "peers[0].log_key: names the log 'tongban/42', not 'tongban/61'" in str(refused.value)


def _changed_peer(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """Peer 61's entry with ``changes`` (None: the key removed)."""
    peer = {**_peer(tmp_path, "61"), **changes}
    return {key: value for key, value in peer.items() if value is not None}


@pytest.mark.parametrize(
    ("document", "where", "problem"),
    [
        ({"kafka": {"bootstrap": 9092}}, "kafka.bootstrap", "a list of host:port strings"),
        ({"kafka": {"bootstrap": ["kafka-1"]}}, "kafka.bootstrap[0]", "'kafka-1' is not host:port"),
        ({"kafka": {"bootstrap": []}}, "kafka.bootstrap", "name at least one broker"),
        ({"kafka": {"bootstrap": "k:9092", "topic_prefix": "a b"}}, "kafka.topic_prefix",
         "letters, digits"),
        ({"kafka": {"bootstrap": "k:9092", "acks": 1}}, "kafka.acks", "unknown key"),
        ({"kafka": "k:9092"}, "kafka", "use a [kafka] table"),
        ({"relay": {"resend_after_s": 0}}, "relay.resend_after_s", "a positive number"),
        ({"relay": {"resend_after_s": True}}, "relay.resend_after_s", "a positive number"),
        ({"relay": {"witness_k": -1}}, "relay.witness_k", "a whole number, 0 or more"),
        ({"peers": {"region": "61"}}, "peers", "use [[peers]] tables"),
        ({"peers": ["61"]}, "peers[0]", "a table of the peer's keys"),
        ({"peers": "PEER:port=7443"}, "peers[0].port", "unknown key"),
        ({"peers": "PEER:origin="}, "peers[0].origin", "missing"),
        ({"peers": "PEER:address=7443"}, "peers[0].address", "a string"),
        ({"peers": "PEER:address=node-61"}, "peers[0].address", "'node-61' is not host:port"),
        ({"peers": "PEER:log_key=tongban/61+00+AA"}, "peers[0].log_key",
         "not a C2SP verifier key"),
        ({"peers": "PEER:witness_key=x"}, "peers[0].witness_key",
         "not a cosignature verifier key"),
        ({"peers": "PEER:encryption_key=AAAA"}, "peers[0].encryption_key",
         "expected x25519:<base64 of 32 bytes>"),
        ({"peers": "PEER:encryption_key=x25519:%%%"}, "peers[0].encryption_key", "not base64"),
        ({"peers": "PEER:encryption_key=x25519:AAAA"}, "peers[0].encryption_key",
         "an X25519 public key has 32 bytes, not 3"),
        ({"peers": "PEER:ca_certificate=absent.pem"}, "peers[0].ca_certificate", "absent.pem"),
        ({"peers": "PEER:ca_certificate=federation.toml"}, "peers[0].ca_certificate",
         "not a PEM certificate"),
        ({"peers": "PEER:inbox_topic=inbox 61"}, "peers[0].inbox_topic", "letters, digits"),
        ({"peers": "PEER:origin=tongban/43"}, "peers[0].origin",
         "'tongban/43' is this node's own log"),
        ({"peers": "TWICE"}, "peers[1].origin", "'tongban/61' is also peers[0]"),
        ({"nodes": []}, "nodes", "unknown key"),
    ],
)  # fmt: skip
def test_the_relay_and_peer_mistakes_name_the_entry(
    tmp_path: Path, document: dict[str, Any], where: str, problem: str
) -> None:
    (tmp_path / "federation.toml").write_text("# not a certificate\n")
    peers = document.get("peers")
    if isinstance(peers, str) and peers.startswith("PEER:"):
        key, _, value = peers[5:].partition("=")
        changes: dict[str, Any] = {key: int(value) if value.isdigit() else value}
        if key == "origin" and value:  # the log key names the origin it verifies
            changes["log_key"] = Signer.generate(value).verifier_key()
        document = {**document, "peers": [_changed_peer(tmp_path, **changes)]}
    elif peers == "TWICE":  # one origin for two regions
        document = {**document, "peers": [_peer(tmp_path, "61"), _changed_peer(tmp_path)]}
        document["peers"][1]["region"] = "62"
    with pytest.raises(ConfigurationError) as refused:
        _parse(tmp_path, document)
    assert f"federation.toml: {where}: " in str(refused.value)
    assert problem in str(refused.value).partition(f"{where}: ")[2]


def test_a_federation_file_that_is_absent_or_not_toml_is_named(tmp_path: Path) -> None:
    path = tmp_path / "federation.toml"
    with pytest.raises(ConfigurationError, match=f"federation file {path} does not exist"):
        load_federation(path, own_region="43", own_origin="tongban/43")
    path.write_text("[kafka\nbootstrap = 1\n")
    with pytest.raises(ConfigurationError, match="federation.toml: not valid TOML"):
        load_federation(path, own_region="43", own_origin="tongban/43")
    path.write_bytes(b"\xff\xfe[kafka]\n")
    with pytest.raises(ConfigurationError, match="federation.toml: not valid TOML"):
        load_federation(path, own_region="43", own_origin="tongban/43")
    path.unlink()
    path.mkdir()  # unreadable as a file
    with pytest.raises(ConfigurationError, match="federation.toml: Is a directory"):
        load_federation(path, own_region="43", own_origin="tongban/43")

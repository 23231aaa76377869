"""The node's PKI: CA creation, issued certificates, identities, and real mutual TLS with gRPC.

Everything runs under ``tmp_path``; the gRPC test listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    PolicyBuilder,
    Store,
    VerificationError,
)

from hub.errors import ConfigurationError, InvalidInput
from hub.pki import (
    CA_CERTIFICATE_FILE,
    CA_KEY_FILE,
    CertificateAuthority,
    CertificateRejected,
    Identity,
    Role,
    identity_from_auth_context,
    identity_from_certificate,
    init_ca,
    load_ca,
    load_pem_files,
)

NOW = datetime.now(UTC)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return init_ca(tmp_path / "ca", "gd-node")


@pytest.fixture
def other_ca(tmp_path: Path) -> CertificateAuthority:
    return init_ca(tmp_path / "other-ca", "zj-node")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _extension(cert: x509.Certificate, kind: type[Any]) -> Any:
    return cert.extensions.get_extension_for_class(kind)


# --- the CA ---------------------------------------------------------------------------------


def test_init_ca_writes_certificate_and_private_key(tmp_path: Path) -> None:
    directory = tmp_path / "pki" / "ca"
    ca = init_ca(directory, "gd-node")

    key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERTIFICATE_FILE
    assert _mode(key_path) == 0o600
    assert _mode(cert_path) & 0o022 == 0  # nobody else may write the trust root
    assert _mode(directory) == 0o700  # created by init_ca: private
    assert ca.node_name == "gd-node"

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert == ca.certificate
    assert cert.subject.rfc4514_string() == "CN=Tongban CA gd-node"
    assert cert.issuer == cert.subject
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    constraints = _extension(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = _extension(cert, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= timedelta(days=3650)
    cert.verify_directly_issued_by(cert)  # self-signed

    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()


def test_init_ca_key_file_is_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        init_ca(tmp_path / "ca", "gd-node")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "ca" / CA_KEY_FILE) == 0o600


@pytest.mark.parametrize("existing", [CA_CERTIFICATE_FILE, CA_KEY_FILE])
def test_init_ca_refuses_to_overwrite(tmp_path: Path, existing: str) -> None:
    directory = tmp_path / "ca"
    directory.mkdir()
    (directory / existing).write_bytes(b"precious")
    with pytest.raises(ConfigurationError, match=rf"{existing} exists already; refusing"):
        init_ca(directory, "gd-node")
    # Nothing was touched or half-written.
    assert sorted(p.name for p in directory.iterdir()) == [existing]
    assert (directory / existing).read_bytes() == b"precious"


def test_init_ca_refuses_a_second_ca_in_the_same_directory(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    before = (tmp_path / "ca" / CA_KEY_FILE).read_bytes()
    with pytest.raises(ConfigurationError, match="refusing to overwrite the CA"):
        init_ca(tmp_path / "ca", "gd-node")
    assert (tmp_path / "ca" / CA_KEY_FILE).read_bytes() == before


@pytest.mark.parametrize(
    "bad", ["", "GD", "gd", "-gd-node", "gd_node", "gd/node", "Gd-node", "a" * 65]
)
def test_init_ca_rejects_a_bad_node_name(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        init_ca(tmp_path / "ca", bad)
    assert caught.value.field == "node_name"
    assert not (tmp_path / "ca").exists()


def test_load_ca_round_trips(ca: CertificateAuthority, tmp_path: Path) -> None:
    loaded = load_ca(tmp_path / "ca")
    assert loaded.certificate == ca.certificate
    assert loaded.node_name == "gd-node"
    # The loaded CA issues certificates that the original accepts.
    issued = loaded.issue(Role.HALL, "hall-440103")
    assert ca.verify(issued.certificate_pem) == Identity(Role.HALL, "hall-440103")


def test_load_ca_names_the_missing_directory_or_file(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    with pytest.raises(
        ConfigurationError, match=r"CA directory .*nowhere does not exist.*pki init"
    ):
        load_ca(tmp_path / "nowhere")
    (tmp_path / "ca" / CA_KEY_FILE).unlink()
    with pytest.raises(
        ConfigurationError, match=rf"CA private key file .*{CA_KEY_FILE} does not exist"
    ):
        load_ca(tmp_path / "ca")


def test_load_ca_names_a_broken_file(ca: CertificateAuthority, tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    good = (directory / CA_CERTIFICATE_FILE).read_bytes()
    (directory / CA_CERTIFICATE_FILE).write_bytes(b"-----BEGIN CERTIFICATE-----\nnope\n")
    with pytest.raises(
        ConfigurationError,
        match=rf"CA certificate file .*{CA_CERTIFICATE_FILE} holds no readable PEM",
    ):
        load_ca(directory)
    (directory / CA_CERTIFICATE_FILE).write_bytes(good)
    (directory / CA_KEY_FILE).write_bytes(b"")
    with pytest.raises(ConfigurationError, match=rf"CA private key file .*{CA_KEY_FILE} is empty"):
        load_ca(directory)


def test_load_ca_refuses_a_key_of_another_ca(
    ca: CertificateAuthority, other_ca: CertificateAuthority, tmp_path: Path
) -> None:
    (tmp_path / "ca" / CA_KEY_FILE).write_bytes((tmp_path / "other-ca" / CA_KEY_FILE).read_bytes())
    with pytest.raises(ConfigurationError, match="does not belong to"):
        load_ca(tmp_path / "ca")


def test_load_ca_refuses_a_leaf_certificate(ca: CertificateAuthority, tmp_path: Path) -> None:
    leaf = ca.issue(Role.NODE, "gd-node")
    directory = tmp_path / "leaf-as-ca"
    directory.mkdir()
    (directory / CA_CERTIFICATE_FILE).write_bytes(leaf.certificate_pem)
    (directory / CA_KEY_FILE).write_bytes(leaf.private_key_pem)
    with pytest.raises(ConfigurationError, match="is not a CA"):
        load_ca(directory)


# --- issued certificates --------------------------------------------------------------------


def _named(role: Role, name: str) -> str:
    """``name`` as ``role`` allows it: a supervisor's name ends with its region code."""
    return f"{name}.4309" if role is Role.SUPERVISOR else name


@pytest.mark.parametrize("role", list(Role))
def test_issued_certificate_chains_to_the_ca(ca: CertificateAuthority, role: Role) -> None:
    issued = ca.issue(role, _named(role, "someone-1"))
    cert = issued.certificate

    # 1. The raw signature, with nothing but the CA's public key.
    public_key = ca.certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    public_key.verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
    )
    cert.verify_directly_issued_by(ca.certificate)

    # 2. Full RFC 5280 path validation as a TLS client certificate (every role is a client).
    verifier = PolicyBuilder().store(Store([ca.certificate])).build_client_verifier()
    verified = verifier.verify(cert, [])
    assert verified.chain == [cert, ca.certificate]
    assert verified.subjects is not None
    assert (
        x509.UniformResourceIdentifier(f"tongban://{role.value}/{_named(role, 'someone-1')}")
        in verified.subjects
    )

    # 3. The module's own check agrees.
    assert ca.verify(issued.certificate_pem) == Identity(role, _named(role, "someone-1"))


@pytest.mark.parametrize("role", [Role.NODE, Role.PEER])
def test_server_roles_verify_as_tls_servers_for_their_host_names(
    ca: CertificateAuthority, role: Role
) -> None:
    cert = ca.issue(
        role,
        "gd-node",
        dns_names=("localhost", "hub.gd.example"),
        ip_addresses=("127.0.0.1", "::1"),
    ).certificate
    for host in ("localhost", "hub.gd.example"):
        verifier = (
            PolicyBuilder().store(Store([ca.certificate])).build_server_verifier(x509.DNSName(host))
        )
        assert verifier.verify(cert, [])[0] == cert
    wrong = (
        PolicyBuilder()
        .store(Store([ca.certificate]))
        .build_server_verifier(x509.DNSName("evil.example"))
    )
    with pytest.raises(VerificationError):
        wrong.verify(cert, [])


@pytest.mark.parametrize("role", [Role.HALL, Role.AUDITOR, Role.ADMIN])
def test_client_roles_are_not_server_certificates(ca: CertificateAuthority, role: Role) -> None:
    cert = ca.issue(role, "client-1").certificate
    verifier = (
        PolicyBuilder()
        .store(Store([ca.certificate]))
        .build_server_verifier(x509.DNSName("localhost"))
    )
    with pytest.raises(VerificationError):
        verifier.verify(cert, [])


@pytest.mark.parametrize("role", list(Role))
def test_issued_certificate_extensions(ca: CertificateAuthority, role: Role) -> None:
    cert = ca.issue(role, _named(role, "hall-440103")).certificate

    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == _named(
        role, "hall-440103"
    )
    assert (
        cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == role.value
    )
    assert cert.issuer == ca.certificate.subject
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    assert cert.serial_number > 2**64  # random, not a counter

    eku = _extension(cert, x509.ExtendedKeyUsage).value
    expected = {ExtendedKeyUsageOID.CLIENT_AUTH}
    if role in (Role.NODE, Role.PEER):
        expected.add(ExtendedKeyUsageOID.SERVER_AUTH)
    assert set(eku) == expected

    usage = _extension(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.key_cert_sign and not usage.value.key_encipherment
    constraints = _extension(cert, x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca

    aki = _extension(cert, x509.AuthorityKeyIdentifier).value
    ca_ski = _extension(ca.certificate, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest

    san = _extension(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"tongban://{role.value}/{_named(role, 'hall-440103')}"
    ]
    if role in (Role.NODE, Role.PEER):
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    else:
        assert san.get_values_for_type(x509.DNSName) == []
        assert san.get_values_for_type(x509.IPAddress) == []


def test_each_certificate_gets_its_own_key_and_serial(ca: CertificateAuthority) -> None:
    first, second = ca.issue(Role.HALL, "hall-1a"), ca.issue(Role.HALL, "hall-1a")
    assert first.private_key_pem != second.private_key_pem
    assert first.certificate.serial_number != second.certificate.serial_number


def test_default_validity_starts_slightly_in_the_past(ca: CertificateAuthority) -> None:
    cert = ca.issue(Role.HALL, "hall-1a", valid_days=30).certificate
    now = datetime.now(UTC)
    assert now - timedelta(minutes=10) < cert.not_valid_before_utc < now
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30)


def test_an_expired_certificate_can_be_made_for_tests(ca: CertificateAuthority) -> None:
    issued = ca.issue(
        Role.HALL,
        "hall-old",
        not_before=NOW - timedelta(days=30),
        not_after=NOW - timedelta(days=1),
    )
    assert issued.certificate.not_valid_after_utc < datetime.now(UTC)
    with pytest.raises(CertificateRejected, match="not valid at validation time"):
        ca.verify(issued.certificate_pem)
    # Its identity still reads: the chain and validity checks belong to TLS (or ca.verify).
    assert identity_from_certificate(issued.certificate_pem).name == "hall-old"


def test_verify_checks_validity_at_the_given_time(ca: CertificateAuthority) -> None:
    issued = ca.issue(
        Role.HALL,
        "hall-next",
        not_before=NOW + timedelta(days=1),
        not_after=NOW + timedelta(days=10),
    )
    with pytest.raises(CertificateRejected, match="not valid at validation time"):
        ca.verify(issued.certificate_pem)
    assert ca.verify(issued.certificate_pem, at=NOW + timedelta(days=2)) == Identity(
        Role.HALL, "hall-next"
    )


def test_a_certificate_from_another_ca_does_not_verify(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    foreign = other_ca.issue(Role.HALL, "hall-440103")
    public_key = ca.certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    with pytest.raises(InvalidSignature):
        public_key.verify(
            foreign.certificate.signature,
            foreign.certificate.tbs_certificate_bytes,
            ec.ECDSA(hashes.SHA256()),
        )
    with pytest.raises(ValueError, match="Issuer certificate subject does not match"):
        foreign.certificate.verify_directly_issued_by(ca.certificate)
    verifier = PolicyBuilder().store(Store([ca.certificate])).build_client_verifier()
    with pytest.raises(VerificationError):
        verifier.verify(foreign.certificate, [])
    with pytest.raises(
        CertificateRejected, match="issued by 'CN=Tongban CA zj-node', not by this CA"
    ):
        ca.verify(foreign.certificate_pem)


def test_a_ca_of_the_same_name_is_still_another_ca(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    impostor = init_ca(tmp_path / "impostor", "gd-node")
    assert impostor.certificate.subject == ca.certificate.subject
    with pytest.raises(CertificateRejected, match="signature does not verify with this CA's key"):
        ca.verify(impostor.issue(Role.ADMIN, "ops-1").certificate_pem)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "ab",
        "Hall-1",
        "-hall",
        ".hall",
        "hall_1",
        "hall/1",
        "hall 1",
        "../etc",
        "大厅一",
        "a" * 65,
    ],
)
def test_bad_names_are_rejected(ca: CertificateAuthority, bad: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        ca.issue(Role.HALL, bad)
    assert caught.value.field == "name"
    assert caught.value.value == bad
    assert "lowercase letters" in caught.value.reason


def test_names_at_the_edges_are_accepted(ca: CertificateAuthority) -> None:
    for name in ("abc", "440103001", "gd.gz.tianhe-01", "a" * 64):
        assert ca.issue(Role.HALL, name).identity == Identity(Role.HALL, name)


def test_an_unknown_role_is_rejected(ca: CertificateAuthority) -> None:
    with pytest.raises(InvalidInput, match="unknown role"):
        ca.issue("citizen", "hall-1a")  # type: ignore[arg-type]
    assert ca.issue("auditor", "audit-1").role is Role.AUDITOR  # type: ignore[arg-type]


def test_host_names_are_for_server_roles_only(ca: CertificateAuthority) -> None:
    with pytest.raises(InvalidInput, match="client-only") as caught:
        ca.issue(Role.HALL, "hall-1a", dns_names=("hall.example",))
    assert caught.value.field == "dns_names"
    with pytest.raises(InvalidInput, match="client-only"):
        ca.issue(Role.AUDITOR, "audit-1", ip_addresses=("10.0.0.1",))
    assert ca.issue(Role.HALL, "hall-1a", dns_names=(), ip_addresses=()).role is Role.HALL


def test_server_roles_need_a_valid_host(ca: CertificateAuthority) -> None:
    with pytest.raises(InvalidInput, match="needs at least one DNS name or IP address"):
        ca.issue(Role.NODE, "gd-node", dns_names=(), ip_addresses=())
    with pytest.raises(InvalidInput, match="not a DNS host name"):
        ca.issue(Role.NODE, "gd-node", dns_names=("bad_host!",))
    with pytest.raises(InvalidInput, match="not an IPv4 or IPv6 address"):
        ca.issue(Role.PEER, "zj-node", ip_addresses=("300.1.1.1",))


def test_validity_is_checked(ca: CertificateAuthority) -> None:
    with pytest.raises(InvalidInput, match="must be later than not_before"):
        ca.issue(Role.HALL, "hall-1a", not_before=NOW, not_after=NOW - timedelta(seconds=1))
    with pytest.raises(InvalidInput, match="timezone-aware"):
        ca.issue(Role.HALL, "hall-1a", not_before=datetime(2030, 1, 1))
    with pytest.raises(InvalidInput, match=">= 1"):
        ca.issue(Role.HALL, "hall-1a", valid_days=0)
    with pytest.raises(InvalidInput, match="would outlive the CA") as caught:
        ca.issue(Role.HALL, "hall-1a", valid_days=4000)
    assert caught.value.field == "valid_days"


def test_write_creates_pem_and_private_key(ca: CertificateAuthority, tmp_path: Path) -> None:
    issued = ca.issue(Role.HALL, "hall-440103")
    out = tmp_path / "out" / "halls"
    cert_path, key_path = issued.write(out)
    assert (cert_path, key_path) == (out / "hall-440103.pem", out / "hall-440103.key")
    assert cert_path.read_bytes() == issued.certificate_pem
    assert key_path.read_bytes() == issued.private_key_pem
    assert _mode(key_path) == 0o600
    assert _mode(out) == 0o700
    # The files load as a gRPC endpoint's credentials.
    assert (
        load_pem_files(cert_path, key_path, tmp_path / "ca" / CA_CERTIFICATE_FILE)[0]
        == issued.certificate_pem
    )


def test_write_refuses_to_overwrite(ca: CertificateAuthority, tmp_path: Path) -> None:
    first = ca.issue(Role.HALL, "hall-440103")
    first.write(tmp_path)
    with pytest.raises(ConfigurationError, match=r"hall-440103.pem exists already; refusing"):
        ca.issue(Role.HALL, "hall-440103").write(tmp_path)
    assert (tmp_path / "hall-440103.key").read_bytes() == first.private_key_pem


# --- identities -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_identity_round_trips_in_pem_and_der(ca: CertificateAuthority, role: Role) -> None:
    name = _named(role, "name-of.some-1")
    issued = ca.issue(role, name)
    expected = Identity(role, name)
    assert issued.identity == expected
    assert identity_from_certificate(issued.certificate_pem) == expected
    der = issued.certificate.public_bytes(serialization.Encoding.DER)
    assert identity_from_certificate(der) == expected
    assert expected.uri == f"tongban://{role.value}/{name}"
    assert Identity.from_uri(expected.uri) == expected


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("https://hall/hall-1a", "does not start with 'tongban://'"),
        ("tongban://hall", "exactly one '/'"),
        ("tongban://hall/a/b", "exactly one '/'"),
        ("tongban://citizen/hall-1a", "unknown role 'citizen'"),
        ("tongban://hall/Hall_1", "name 'Hall_1' does not match"),
        ("tongban://supervisor/jiancha", "ends with its region code"),  # a peer CA could sign it
    ],
)
def test_malformed_identity_uris_are_rejected(uri: str, reason: str) -> None:
    with pytest.raises(CertificateRejected, match=reason):
        Identity.from_uri(uri)


def _self_signed(san: list[x509.GeneralName] | None) -> bytes:
    """A certificate built by hand, to present identities the CA would never issue."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hall-1a")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
    )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("san", "reason"),
    [
        (None, "has no subjectAltName"),
        ([x509.DNSName("hall-1a")], "has no tongban://<role>/<name> URI"),
        ([x509.UniformResourceIdentifier("https://example.org/hall-1a")], "has no tongban://"),
        ([x509.UniformResourceIdentifier("tongban://mayor/hall-1a")], "unknown role 'mayor'"),
        ([x509.UniformResourceIdentifier("tongban://hall/")], "name '' does not match"),
        (
            [
                x509.UniformResourceIdentifier("tongban://hall/hall-1a"),
                x509.UniformResourceIdentifier("tongban://admin/hall-1a"),
            ],
            "more than one identity",
        ),
    ],
)
def test_certificates_without_a_proper_identity_are_rejected(
    san: list[x509.GeneralName] | None, reason: str
) -> None:
    with pytest.raises(CertificateRejected, match=reason):
        identity_from_certificate(_self_signed(san))


def test_the_identity_uri_is_authoritative_not_the_subject() -> None:
    pem = _self_signed(
        [x509.DNSName("x.example"), x509.UniformResourceIdentifier("tongban://auditor/audit-7")]
    )
    # The subject says CN=hall-1a; only the URI counts.
    assert identity_from_certificate(pem) == Identity(Role.AUDITOR, "audit-7")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "is empty"),
        (
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
            "not a readable PEM X.509 certificate",
        ),
        (b"-----BEGIN CERTIFICATE-----\ntruncated", "not a readable PEM X.509 certificate"),
        (b"\x30\x03\x02\x01\x01", "not a readable DER X.509 certificate"),
        (b"hello", "not a readable DER X.509 certificate"),
    ],
)
def test_malformed_certificates_give_a_clear_error(data: bytes, reason: str) -> None:
    with pytest.raises(CertificateRejected, match=reason) as caught:
        identity_from_certificate(data)
    assert caught.value.field == "certificate"
    assert isinstance(caught.value, InvalidInput)


def test_identity_from_auth_context_reads_the_pem(ca: CertificateAuthority) -> None:
    issued = ca.issue(Role.PEER, "zj-node")
    context = {
        "transport_security_type": [b"ssl"],
        "x509_pem_cert": [issued.certificate_pem],
        "x509_subject_alternative_name": [b"tongban://peer/zj-node", b"localhost", b"127.0.0.1"],
        "x509_common_name": [b"zj-node"],
    }
    assert identity_from_auth_context(context) == Identity(Role.PEER, "zj-node")


def test_identity_from_auth_context_falls_back_to_the_san_list() -> None:
    context = {
        "transport_security_type": [b"ssl"],
        "x509_subject_alternative_name": [b"localhost", b"tongban://hall/hall-440103"],
    }
    assert identity_from_auth_context(context) == Identity(Role.HALL, "hall-440103")


@pytest.mark.parametrize(
    ("context", "reason"),
    [
        ({}, "presented no client certificate"),
        (
            {"transport_security_type": [b"ssl"], "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"]},
            "no client certificate",
        ),
        ({"transport_security_type": [b"insecure"]}, "not TLS"),
        ({"transport_security_type": [b"ssl"], "x509_pem_cert": [b"junk"]}, "not a readable DER"),
        (
            {
                "transport_security_type": [b"ssl"],
                "x509_subject_alternative_name": [b"tongban://hall/a-1", b"tongban://admin/a-1"],
            },
            "more than one",
        ),
    ],
)
def test_identity_from_auth_context_refusals(context: dict[str, list[bytes]], reason: str) -> None:
    with pytest.raises(CertificateRejected, match=reason):
        identity_from_auth_context(context)


# --- load_pem_files -------------------------------------------------------------------------


@pytest.fixture
def node_files(ca: CertificateAuthority, tmp_path: Path) -> tuple[Path, Path, Path]:
    cert, key = ca.issue(Role.NODE, "gd-node").write(tmp_path / "node")
    return cert, key, tmp_path / "ca" / CA_CERTIFICATE_FILE


def test_load_pem_files_returns_the_bytes(node_files: tuple[Path, Path, Path]) -> None:
    cert, key, ca_file = node_files
    assert load_pem_files(cert, key, ca_file) == (
        cert.read_bytes(),
        key.read_bytes(),
        ca_file.read_bytes(),
    )


def test_load_pem_files_names_the_file_at_fault(
    node_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    cert, key, ca_file = node_files
    missing = tmp_path / "missing.pem"
    with pytest.raises(
        ConfigurationError, match=r"TLS certificate file .*missing.pem does not exist"
    ):
        load_pem_files(missing, key, ca_file)
    with pytest.raises(
        ConfigurationError, match=r"TLS private key file .*missing.pem does not exist"
    ):
        load_pem_files(cert, missing, ca_file)
    with pytest.raises(
        ConfigurationError, match=r"TLS CA certificate file .*missing.pem does not exist"
    ):
        load_pem_files(cert, key, missing)
    with pytest.raises(ConfigurationError, match=r"TLS certificate file .*node is a directory"):
        load_pem_files(tmp_path / "node", key, ca_file)
    # Swapped files: a key where the certificate belongs, and the other way round.
    with pytest.raises(
        ConfigurationError,
        match=r"TLS certificate file .*gd-node.key holds no readable PEM certificate",
    ):
        load_pem_files(key, key, ca_file)
    with pytest.raises(
        ConfigurationError,
        match=r"TLS private key file .*gd-node.pem holds no readable PEM private key",
    ):
        load_pem_files(cert, cert, ca_file)


def test_load_pem_files_refuses_a_key_of_another_certificate(
    ca: CertificateAuthority, node_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    cert, _, ca_file = node_files
    _, other_key = ca.issue(Role.NODE, "gd-node-2").write(tmp_path / "other")
    with pytest.raises(
        ConfigurationError, match=r"gd-node-2.key does not belong to TLS certificate .*gd-node.pem"
    ):
        load_pem_files(cert, other_key, ca_file)


def test_load_pem_files_refuses_an_encrypted_key(
    node_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    cert, key, ca_file = node_files
    loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigurationError, match="is encrypted"):
        load_pem_files(cert, encrypted, ca_file)

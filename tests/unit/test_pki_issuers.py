"""Identity bound to the issuing CA: attack tests first.

A node trusts its own CA and, for federation, every peer's CA (the federation file). The TLS
handshake only says that *some* trusted CA issued a client certificate; :class:`ClientTrust`
says which one, and refuses every identity that CA may not vouch for: a peer's CA may issue
only ``peer`` identities (bound to that peer's region), never a hall, auditor or admin of this
node. Everything runs under ``tmp_path``; no sockets (the real handshake is in the e2e tests).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from hub.errors import ConfigurationError
from hub.pki import (
    CertificateAuthority,
    CertificateRejected,
    ClientTrust,
    Identity,
    Role,
    init_ca,
)


@pytest.fixture
def own(tmp_path: Path) -> CertificateAuthority:
    return init_ca(tmp_path / "own", "hunan")


@pytest.fixture
def hubei(tmp_path: Path) -> CertificateAuthority:
    return init_ca(tmp_path / "hubei", "hubei")


@pytest.fixture
def shaanxi(tmp_path: Path) -> CertificateAuthority:
    return init_ca(tmp_path / "shaanxi", "shaanxi")


@pytest.fixture
def trust(
    own: CertificateAuthority, hubei: CertificateAuthority, shaanxi: CertificateAuthority
) -> ClientTrust:
    return ClientTrust(
        own.certificate_pem, {"42": hubei.certificate_pem, "61": shaanxi.certificate_pem}
    )


def context(pem: bytes) -> dict[str, list[bytes]]:
    """What grpc's auth_context() holds after a mutual-TLS handshake."""
    return {"transport_security_type": [b"ssl"], "x509_pem_cert": [pem]}


# --- the attacks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.HALL, Role.AUDITOR, Role.ADMIN, Role.NODE])
def test_a_peer_ca_cannot_issue_an_identity_of_this_node(
    trust: ClientTrust, hubei: CertificateAuthority, role: Role
) -> None:
    # The peer's CA names a hall that really is registered here (its certificate name is the
    # hall id): it must not be able to act or read as that hall.
    names = {Role.HALL: "hn-shatou-town", Role.AUDITOR: "audit-hn", Role.ADMIN: "operator"}
    forged = hubei.issue(role, names.get(role, "node"))
    with pytest.raises(
        CertificateRejected, match=r"CA of peer region 42, which may issue only peer"
    ):
        trust.identify(context(forged.certificate_pem))
    with pytest.raises(CertificateRejected):
        trust.peer_region(context(forged.certificate_pem))


def test_a_peer_certificate_speaks_only_for_the_region_of_its_own_ca(
    trust: ClientTrust, hubei: CertificateAuthority, shaanxi: CertificateAuthority
) -> None:
    # Shaanxi's CA issues a certificate whose *name* claims Hubei: the region comes from the
    # issuing CA, never from the name.
    claims_hubei = shaanxi.issue(Role.PEER, "hubei")
    assert trust.peer_region(context(claims_hubei.certificate_pem)) == "61"
    real_hubei = hubei.issue(Role.PEER, "hubei")
    assert trust.peer_region(context(real_hubei.certificate_pem)) == "42"


def test_a_ca_of_the_same_name_as_ours_is_not_ours(
    tmp_path: Path, own: CertificateAuthority, trust: ClientTrust
) -> None:
    # Another CA created with our node name (same subject DN) issues a hall certificate: it
    # neither verifies against our key nor belongs to a peer, so it is no one.
    impostor = init_ca(tmp_path / "impostor", "hunan")
    assert impostor.certificate.subject == own.certificate.subject
    forged = impostor.issue(Role.HALL, "hn-shatou-town")
    with pytest.raises(CertificateRejected, match="not issued by any CA this node trusts"):
        trust.identify(context(forged.certificate_pem))


def test_without_the_certificate_itself_nothing_is_bound_when_peers_are_trusted(
    trust: ClientTrust,
) -> None:
    # grpc builds without x509_pem_cert give only the SAN strings: the issuer is unknown, so
    # with peer CAs trusted the identity cannot be bound and is refused.
    san_only = {
        "transport_security_type": [b"ssl"],
        "x509_subject_alternative_name": [b"tongban://hall/hn-shatou-town"],
    }
    with pytest.raises(CertificateRejected, match="issuing CA"):
        trust.identify(san_only)


def test_a_peer_ca_that_is_our_own_is_refused(own: CertificateAuthority) -> None:
    with pytest.raises(ConfigurationError, match="peer region 42 is this node.s own CA"):
        ClientTrust(own.certificate_pem, {"42": own.certificate_pem})


def test_one_ca_for_two_peers_is_refused(
    own: CertificateAuthority, hubei: CertificateAuthority
) -> None:
    with pytest.raises(ConfigurationError, match="regions 42 and 61 name the same CA"):
        ClientTrust(own.certificate_pem, {"42": hubei.certificate_pem, "61": hubei.certificate_pem})


def test_a_peer_ca_that_is_no_ca_is_refused(
    own: CertificateAuthority, hubei: CertificateAuthority
) -> None:
    leaf = hubei.issue(Role.PEER, "hubei")
    with pytest.raises(ConfigurationError, match="region 42 .* is not a CA"):
        ClientTrust(own.certificate_pem, {"42": leaf.certificate_pem})


# --- what is accepted ----------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.HALL, Role.AUDITOR, Role.ADMIN, Role.PEER])
def test_our_own_ca_vouches_for_every_role(
    trust: ClientTrust, own: CertificateAuthority, role: Role
) -> None:
    issued = own.issue(role, "caller-1")
    assert trust.identify(context(issued.certificate_pem)) == Identity(role, "caller-1")
    # ... but a peer certificate of our own CA belongs to no federation peer.
    assert trust.peer_region(context(issued.certificate_pem)) is None


def test_a_peer_ca_vouches_for_its_peer(trust: ClientTrust, hubei: CertificateAuthority) -> None:
    issued = hubei.issue(Role.PEER, "hubei")
    assert trust.identify(context(issued.certificate_pem)) == Identity(Role.PEER, "hubei")


def test_without_peers_the_san_list_still_serves(own: CertificateAuthority) -> None:
    alone = ClientTrust(own.certificate_pem)
    san_only = {
        "transport_security_type": [b"ssl"],
        "x509_subject_alternative_name": [b"tongban://hall/hn-shatou-town"],
    }
    assert alone.identify(san_only) == Identity(Role.HALL, "hn-shatou-town")


def test_the_server_trusts_every_ca_and_nothing_else(
    trust: ClientTrust,
    own: CertificateAuthority,
    hubei: CertificateAuthority,
    shaanxi: CertificateAuthority,
) -> None:
    from cryptography import x509

    roots = x509.load_pem_x509_certificates(trust.root_certificates)
    expected = [own.certificate, hubei.certificate, shaanxi.certificate]
    assert [c.public_bytes(serialization.Encoding.DER) for c in roots] == [
        c.public_bytes(serialization.Encoding.DER) for c in expected
    ]


def test_from_files_names_the_file_at_fault(tmp_path: Path, own: CertificateAuthority) -> None:
    own_path = tmp_path / "own" / "ca.pem"
    with pytest.raises(ConfigurationError, match="missing.pem"):
        ClientTrust.from_files(own_path, {"42": tmp_path / "missing.pem"})

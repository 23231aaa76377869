"""The node's own PKI: a small certificate authority for mutual TLS between a node and its callers.

Every node runs its own CA (see DESIGN.md, "Halls and signatures"). It issues one certificate per
caller — hall systems, auditors, peer nodes, administrators — and one server certificate for the
node itself. gRPC checks the chain during the TLS handshake; afterwards the servicers read *who*
the caller is from the certificate with :func:`identity_from_auth_context`.

The identity lives in one place only: a URI subjectAltName ``tongban://<role>/<name>``. The subject
(CN = name, OU = role) repeats it for humans and for tools such as ``openssl x509 -text``, but it
is never consulted for authorisation: subject attributes are free text that other tooling rewrites
and compares loosely, whereas a single typed SAN entry has exactly one reading.

This module only builds and reads certificates; it does not decide what a role may do (that is the
gRPC layer's authorisation, by role and by the case's current holder). It uses the ``cryptography``
X.509 API only, never an ``openssl`` subprocess, so it behaves the same on every platform.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from hub.errors import ConfigurationError, InvalidInput

__all__ = [
    "CA_CERTIFICATE_FILE",
    "CA_KEY_FILE",
    "NAME_PATTERN",
    "URI_SCHEME",
    "AuthContext",
    "CertificateAuthority",
    "CertificateRejected",
    "ClientTrust",
    "Identity",
    "IssuedCertificate",
    "Role",
    "identity_from_auth_context",
    "identity_from_certificate",
    "init_ca",
    "load_ca",
    "load_pem_files",
]

#: File names inside a CA directory.
CA_CERTIFICATE_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"

#: The scheme of the identity URI SAN: ``tongban://<role>/<name>``.
URI_SCHEME = "tongban"

#: Names of halls, auditors, peers, admins and nodes. The same rule as hall ids in the hall
#: registry (hub.domain.hall), so a hall's certificate name *is* its hall id. It is also safe as a
#: file name (no "/", no leading "."), which matters because certificates are written as
#: ``<name>.pem`` / ``<name>.key``, and needs no escaping inside the identity URI.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{2,63}$")

#: A supervisor's name: a label, a dot, and a 2, 4, 6, 9 or 12 digit region code.
_SUPERVISOR_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*\.(\d{2}|\d{4}|\d{6}|\d{9}|\d{12})$")

# One DNS label (RFC 1123): letters, digits and inner hyphens, at most 63 characters.
_DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_DNS_NAME_MAX = 253

_CA_CN_PREFIX = "Tongban CA "

# Certificates start a few minutes in the past: a freshly issued certificate must already be valid
# on a caller whose clock is slightly behind the node's, or the first handshake fails mysteriously.
_CLOCK_SKEW = timedelta(minutes=5)

# Files holding private keys are created with this mode from the start (never chmod'ed after
# writing), so there is no moment at which another local user could read the key.
_PRIVATE_MODE = 0o600
_PUBLIC_MODE = 0o644
_PRIVATE_DIR_MODE = 0o700

# How much of an unparseable input to quote in an error message: enough to recognise it.
_QUOTE_BYTES = 40


class Role(enum.StrEnum):
    """What a certificate's holder is, and therefore what it may be authorised to do.

    The value is the ``<role>`` part of the identity URI and the certificate's OU.
    """

    #: A hall system (via its adapter): acts on cases it holds, reads what it submitted or holds.
    HALL = "hall"
    #: An auditor or supervisor: read-only access to logs, proofs and case histories.
    AUDITOR = "auditor"
    #: Another region's node: federation (handoffs, acknowledgements, checkpoint witnessing).
    PEER = "peer"
    #: An operator: manages the hall registry (register, rotate keys, retire).
    ADMIN = "admin"
    #: A supervisor (电子监察, 政务服务管理办公室) of one region: reads the supervision views and
    #: statistics of that region and below. The name ends with the region's code after a dot
    #: (``jiancha.4309``): the CA that issues the certificate decides the region.
    SUPERVISOR = "supervisor"
    #: The node's own gRPC server certificate.
    NODE = "node"

    @property
    def is_server(self) -> bool:
        """Whether certificates of this role also serve TLS (and so carry DNS/IP names).

        A node serves its gRPC API; a peer is another node, whose certificate from *this* CA may
        also be presented when it serves. Halls, auditors and admins are clients only.
        """
        return self in (Role.NODE, Role.PEER)


class CertificateRejected(InvalidInput):
    """A presented certificate is missing, unreadable, untrusted or names no Tongban identity.

    A subclass of :class:`~hub.errors.InvalidInput` (field ``certificate`` or ``auth_context``),
    so it is handled like any bad input; the gRPC layer may map it to UNAUTHENTICATED, which is
    the more precise status for a caller whose identity cannot be established.
    """


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a caller is: a role and a name, as written in its certificate's URI SAN."""

    role: Role
    name: str

    def __post_init__(self) -> None:
        # Validate here too, so an Identity is valid wherever it was made.
        if not isinstance(self.role, Role):
            raise InvalidInput("role", self.role, "must be a hub.pki.Role")
        _check_name(self.name, "name")
        if self.role is Role.SUPERVISOR and not _SUPERVISOR_NAME.fullmatch(self.name):
            raise InvalidInput(
                "name",
                self.name,
                "a supervisor's name ends with its region code after a dot (jiancha.4309)",
            )

    @property
    def uri(self) -> str:
        """The URI SAN form, ``tongban://<role>/<name>``."""
        return f"{URI_SCHEME}://{self.role.value}/{self.name}"

    def __str__(self) -> str:
        return self.uri

    @property
    def region(self) -> str:
        """A supervisor's region code (the digits after the name's last dot); else empty."""
        if self.role is not Role.SUPERVISOR:
            return ""
        return self.name.rsplit(".", 1)[-1]

    @classmethod
    def from_uri(cls, uri: str) -> Identity:
        """Parse ``tongban://<role>/<name>``; raise :class:`CertificateRejected` otherwise."""
        prefix = f"{URI_SCHEME}://"
        if not uri.startswith(prefix):
            raise CertificateRejected("identity_uri", uri, f"does not start with {prefix!r}")
        parts = uri[len(prefix) :].split("/")
        if len(parts) != 2:
            raise CertificateRejected(
                "identity_uri", uri, f"expected {prefix}<role>/<name> with exactly one '/'"
            )
        role_text, name = parts
        try:
            role = Role(role_text)
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise CertificateRejected(
                "identity_uri", uri, f"unknown role {role_text!r} (known: {known})"
            ) from None
        if not NAME_PATTERN.fullmatch(name):
            raise CertificateRejected(
                "identity_uri", uri, f"name {name!r} does not match {NAME_PATTERN.pattern}"
            )
        try:
            return cls(role, name)
        except InvalidInput as error:  # a role's own naming rule (a supervisor's region)
            raise CertificateRejected("identity_uri", uri, error.reason) from None


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A freshly issued leaf certificate with its private key, both PEM-encoded."""

    role: Role
    name: str
    certificate_pem: bytes
    private_key_pem: bytes

    def __post_init__(self) -> None:
        # The name becomes a file name in write(); never let one escape the directory.
        _check_name(self.name, "name")

    @property
    def identity(self) -> Identity:
        """The identity this certificate carries."""
        return Identity(self.role, self.name)

    @property
    def certificate(self) -> x509.Certificate:
        """The parsed certificate."""
        return x509.load_pem_x509_certificate(self.certificate_pem)

    def write(self, directory: Path, stem: str = "") -> tuple[Path, Path]:
        """Write ``<name>.pem`` and ``<name>.key`` (mode 0600) into ``directory`` (``stem``
        instead of the name when given, e.g. ``peer`` for a node's own peer certificate).

        Existing files are never overwritten: a key in use elsewhere must not be silently
        replaced, so re-issuing means removing (or moving) the old pair first. Returns the paths
        (certificate, key).
        """
        directory = Path(directory)
        _make_private_directory(directory)
        if stem:
            _check_name(stem, "stem")
        cert_path = directory / f"{stem or self.name}.pem"
        key_path = directory / f"{stem or self.name}.key"
        _refuse_existing((cert_path, key_path), what=f"certificate for {self.identity}")
        _write_pair(key_path, self.private_key_pem, cert_path, self.certificate_pem)
        return cert_path, key_path


class CertificateAuthority:
    """A node's CA: its self-signed certificate and private key, able to issue leaf certificates."""

    __slots__ = ("certificate", "node_name", "private_key")

    def __init__(
        self, certificate: x509.Certificate, private_key: ec.EllipticCurvePrivateKey
    ) -> None:
        """Pair a CA certificate with its key; raise ConfigurationError if they do not belong.

        Prefer :func:`init_ca` and :func:`load_ca`; this constructor is for callers that already
        hold the parsed objects.
        """
        if not _is_ca(certificate):
            raise ConfigurationError(
                f"certificate {certificate.subject.rfc4514_string()} is not a CA certificate "
                "(basicConstraints CA:true is missing)"
            )
        if certificate.public_key() != private_key.public_key():
            raise ConfigurationError(
                f"the private key does not belong to CA certificate "
                f"{certificate.subject.rfc4514_string()}"
            )
        self.certificate = certificate
        self.private_key = private_key
        self.node_name = _node_name_of(certificate)

    def __repr__(self) -> str:
        return f"CertificateAuthority(node_name={self.node_name!r})"

    @property
    def certificate_pem(self) -> bytes:
        """The CA certificate in PEM: the trust root that clients and the server load."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        role: Role,
        name: str,
        *,
        dns_names: Sequence[str] = ("localhost",),
        ip_addresses: Sequence[str] = ("127.0.0.1",),
        valid_days: int = 365,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> IssuedCertificate:
        """Issue a leaf certificate (new ECDSA P-256 key) for ``role``/``name``.

        The certificate carries the identity URI SAN ``tongban://<role>/<name>``, subject
        CN=name / OU=role, keyUsage digitalSignature, extendedKeyUsage clientAuth (plus serverAuth
        and the DNS/IP SANs for the server roles NODE and PEER), and an authorityKeyIdentifier.

        ``dns_names``/``ip_addresses`` only apply to NODE and PEER; for a client role they must be
        left at their defaults (or empty), because a hall certificate that names hosts would be
        accepted as a server certificate for them. ``not_before``/``not_after`` (timezone-aware)
        override the validity window, e.g. to make an expired certificate for a test; by default
        it runs from a few minutes ago for ``valid_days`` days. The certificate may not outlive
        the CA.
        """
        role = _check_role(role)
        _check_name(name, "name")
        dns = tuple(dns_names)
        ips = tuple(ip_addresses)
        if role.is_server:
            san_hosts = _host_names(dns, ips)
            if not san_hosts:
                raise InvalidInput(
                    "dns_names",
                    dns,
                    f"a {role.value} certificate serves TLS and needs at least one DNS name "
                    "or IP address",
                )
        else:
            # Accept the untouched defaults (callers such as the CLI may always pass them) but
            # refuse explicitly chosen host names: silently dropping them would surprise.
            if dns not in ((), ("localhost",)):
                raise InvalidInput(
                    "dns_names",
                    dns,
                    f"a {role.value} certificate is client-only and names no hosts",
                )
            if ips not in ((), ("127.0.0.1",)):
                raise InvalidInput(
                    "ip_addresses",
                    ips,
                    f"a {role.value} certificate is client-only and names no hosts",
                )
            san_hosts = []
        start, end = self._validity(valid_days, not_before, not_after)

        key = ec.generate_private_key(ec.SECP256R1())
        identity = Identity(role, name)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, name),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
            ]
        )
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if role.is_server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            # 159 random bits: unpredictable serials are the standard defence against
            # chosen-prefix collisions and make accidental reuse impossible.
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    # ECDHE-ECDSA handshakes only need signatures (no key encipherment).
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            # The identity URI comes first; host names follow for server roles. The SAN is
            # critical only if the subject were empty (RFC 5280), which it never is here.
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(identity.uri), *san_hosts]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(self.private_key, hashes.SHA256())
        )
        return IssuedCertificate(
            role=role,
            name=name,
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
            private_key_pem=_private_key_pem(key),
        )

    def verify(self, pem_or_der: bytes, *, at: datetime | None = None) -> Identity:
        """Check that a certificate was issued by this CA and is valid ``at`` (default: now).

        Uses cryptography's RFC 5280 path validation as a TLS client-certificate (signature,
        validity, extensions, clientAuth usage) — the same judgement the TLS server makes — then
        returns the certificate's identity. Raises :class:`CertificateRejected` with the reason.
        Useful offline (the CLI, tests); a gRPC server relies on the handshake instead.
        """
        certificate = _parse_certificate(pem_or_der)
        moment = at if at is not None else datetime.now(UTC)
        verifier = (
            PolicyBuilder().store(Store([self.certificate])).time(moment).build_client_verifier()
        )
        try:
            verifier.verify(certificate, [])
        except VerificationError as exc:
            raise CertificateRejected(
                "certificate",
                certificate.subject.rfc4514_string(),
                f"does not verify against CA {self.certificate.subject.rfc4514_string()!r} "
                f"at {moment.isoformat()}: {self._explain(certificate, exc)}",
            ) from None
        return _identity_of(certificate)

    def _explain(self, certificate: x509.Certificate, error: VerificationError) -> str:
        """A clearer reason than the path builder's for the two commonest trust failures.

        When no chain is found, cryptography reports only "candidates exhausted"; an operator
        needs to know whether the certificate comes from another CA altogether, or from a CA
        of the same name (e.g. a CA directory that was re-created).
        """
        if certificate.issuer != self.certificate.subject:
            return f"it was issued by {certificate.issuer.rfc4514_string()!r}, not by this CA"
        try:
            certificate.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature):
            return "its signature does not verify with this CA's key (another CA of the same name?)"
        return str(error)

    def _validity(
        self, valid_days: int, not_before: datetime | None, not_after: datetime | None
    ) -> tuple[datetime, datetime]:
        """Resolve and check a leaf's validity window."""
        if isinstance(valid_days, bool) or not isinstance(valid_days, int) or valid_days < 1:
            raise InvalidInput("valid_days", valid_days, "must be a whole number of days >= 1")
        for field, moment in (("not_before", not_before), ("not_after", not_after)):
            if moment is not None and moment.utcoffset() is None:
                raise InvalidInput(field, moment, "must be timezone-aware (e.g. tzinfo=UTC)")
        start = not_before if not_before is not None else datetime.now(UTC) - _CLOCK_SKEW
        end = not_after if not_after is not None else start + timedelta(days=valid_days)
        if end <= start:
            raise InvalidInput(
                "not_after", end.isoformat(), f"must be later than not_before {start.isoformat()}"
            )
        ca_end = self.certificate.not_valid_after_utc
        if end > ca_end:
            # A leaf that outlives its CA would simply stop verifying when the CA expires;
            # say so now rather than let it fail in production.
            raise InvalidInput(
                "not_after" if not_after is not None else "valid_days",
                end.isoformat() if not_after is not None else valid_days,
                f"the certificate would outlive the CA, which expires {ca_end.isoformat()}",
            )
        return start, end


def init_ca(directory: Path, node_name: str, *, valid_days: int = 3650) -> CertificateAuthority:
    """Create a node CA in ``directory``: ``ca.pem`` and ``ca.key`` (mode 0600).

    The CA is self-signed, ECDSA P-256, CN "Tongban CA <node_name>", basicConstraints CA:true
    pathlen 0 (it signs leaves only, no intermediate CAs), keyUsage keyCertSign/cRLSign.
    Refuses with ConfigurationError if either file exists already: overwriting a CA would orphan
    every certificate it issued.
    """
    _check_name(node_name, "node_name")
    if isinstance(valid_days, bool) or not isinstance(valid_days, int) or valid_days < 1:
        raise InvalidInput("valid_days", valid_days, "must be a whole number of days >= 1")
    directory = Path(directory)
    cert_path = directory / CA_CERTIFICATE_FILE
    key_path = directory / CA_KEY_FILE
    _refuse_existing((cert_path, key_path), what="CA")

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{_CA_CN_PREFIX}{node_name}")])
    start = datetime.now(UTC) - _CLOCK_SKEW
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # Leaves point at this key through their authorityKeyIdentifier.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _make_private_directory(directory)
    _write_pair(
        key_path,
        _private_key_pem(key),
        cert_path,
        certificate.public_bytes(serialization.Encoding.PEM),
    )
    return CertificateAuthority(certificate, key)


def load_ca(directory: Path) -> CertificateAuthority:
    """Load the CA that :func:`init_ca` wrote; ConfigurationError names the file at fault."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigurationError(
            f"CA directory {directory} does not exist; create one with "
            f"`tongban pki init --dir {directory} --node NAME`"
        )
    cert_path = directory / CA_CERTIFICATE_FILE
    key_path = directory / CA_KEY_FILE
    certificate = _load_certificates(cert_path, "CA certificate")[0]
    key = _load_private_key(key_path, "CA private key")
    if not _is_ca(certificate):
        raise ConfigurationError(
            f"CA certificate {cert_path}: {certificate.subject.rfc4514_string()} is not a CA "
            "(basicConstraints CA:true is missing)"
        )
    if certificate.public_key() != key.public_key():
        raise ConfigurationError(f"CA private key {key_path} does not belong to {cert_path}")
    return CertificateAuthority(certificate, key)


def identity_from_certificate(pem_or_der: bytes) -> Identity:
    """Read the ``tongban://<role>/<name>`` URI SAN of a PEM or DER certificate.

    This does not check who issued the certificate: call it on a certificate that TLS (or
    :meth:`CertificateAuthority.verify`) has already validated. Raises :class:`CertificateRejected`
    if the bytes are no certificate, or it has no, several or a malformed identity URI.
    """
    return _identity_of(_parse_certificate(pem_or_der))


#: What ``grpc.ServicerContext.auth_context()`` returns. At run time grpc gives lists of bytes
#: (``Mapping[str, Sequence[bytes]]``); the types-grpcio stubs declare ``Mapping[str, bytes]`` for
#: the sync server and ``Mapping[str, Iterable[bytes]]`` for grpc.aio. Accepting all three lets
#: servicers pass ``context.auth_context()`` straight in under ``mypy --strict``.
AuthContext = Mapping[str, Iterable[bytes] | bytes]


@functools.lru_cache(maxsize=4096)
def _cached_identity(pem: bytes) -> Identity:
    # Every call on a connection presents the same certificate; parsing it with cryptography each
    # time cost about 6 % of a node's CPU per command. The result depends only on the bytes (the
    # chain was verified in the TLS handshake), and a refusal raises, which is not cached.
    return identity_from_certificate(pem)


def identity_from_auth_context(auth_context: AuthContext) -> Identity:
    """The caller's identity from grpc's ``ServicerContext.auth_context()``.

    grpc fills the mapping after a successful mutual-TLS handshake, so the chain is already
    verified against the server's root certificates. The PEM leaf (``x509_pem_cert``) is parsed
    with cryptography, which tells URI SANs apart from DNS names; grpc's flattened
    ``x509_subject_alternative_name`` list (strings without their types) is only a fallback for
    servers whose grpc build does not expose the PEM. Raises :class:`CertificateRejected` when the
    connection is not TLS or the client presented no certificate.
    """
    security = _auth_values(auth_context, "transport_security_type")
    if security and security[0] != b"ssl":
        raise CertificateRejected(
            "auth_context",
            security[0].decode("ascii", "replace"),
            "the connection is not TLS; mutual TLS with a client certificate is required",
        )
    pems = _auth_values(auth_context, "x509_pem_cert")
    if pems:
        if len(pems) != 1:
            raise CertificateRejected(
                "auth_context", f"{len(pems)} certificates", "expected exactly one peer certificate"
            )
        return _cached_identity(bytes(pems[0]))
    names = _auth_values(auth_context, "x509_subject_alternative_name")
    uris = [
        n.decode("utf-8", "replace") for n in names if n.startswith(f"{URI_SCHEME}://".encode())
    ]
    if len(uris) == 1:
        return Identity.from_uri(uris[0])
    if len(uris) > 1:
        raise CertificateRejected(
            "auth_context", uris, "the peer certificate names more than one tongban:// identity"
        )
    raise CertificateRejected(
        "auth_context",
        sorted(auth_context),
        "the peer presented no client certificate; mutual TLS is required",
    )


class ClientTrust:
    """Which CA may vouch for which caller: identities bound to their issuing CA.

    A node trusts its own CA and, once it federates, the CA of every peer node (the federation
    file's ``ca_certificate``), so the TLS server's root certificates are all of them
    (:attr:`root_certificates`). The handshake then only proves that *one* of those CAs issued
    the client's certificate; this class finds out which, and refuses what it may not issue:

    * the node's own CA may issue every role (halls, auditors, admins, and peers);
    * a peer's CA may issue only ``peer`` identities, and a peer certificate speaks for the
      region of the CA that issued it (:meth:`peer_region`), whatever name it carries.

    So a federation partner's CA can never mint a hall, auditor or admin of this node, nor a
    peer of another region. The issuer is found by verifying the leaf's signature with each
    CA's key (never by comparing names: two CAs may share a subject), and remembered per
    certificate, since every call on a connection presents the same one.
    """

    def __init__(self, own_ca: bytes, peer_cas: Mapping[str, bytes] | None = None) -> None:
        """``own_ca``: this node's CA certificate (PEM); ``peer_cas``: each peer region's CA
        certificate (PEM). ConfigurationError when a peer's CA is ours, shared by two
        regions, or no CA at all."""
        self._own = _only_ca(own_ca, "this node's CA certificate")
        own_key = _public_der(self._own)
        self._peers: list[tuple[str, x509.Certificate]] = []
        seen: dict[bytes, str] = {}
        for region, pem in (peer_cas or {}).items():
            certificate = _only_ca(pem, f"the CA certificate of peer region {region}")
            key = _public_der(certificate)
            if key == own_key:
                raise ConfigurationError(
                    f"the CA certificate of peer region {region} is this node's own CA: a peer "
                    "needs its own CA, or this node's halls could be named by the peer"
                )
            if key in seen:
                raise ConfigurationError(
                    f"peer regions {seen[key]} and {region} name the same CA: each peer node "
                    "has its own CA, which speaks for its region only"
                )
            seen[key] = region
            self._peers.append((region, certificate))
        pems = [self._own, *(certificate for _, certificate in self._peers)]
        self.root_certificates = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in pems)
        self._issuer = functools.lru_cache(maxsize=4096)(self._issuer_of)

    @classmethod
    def from_files(cls, own_ca: Path, peer_cas: Mapping[str, Path] | None = None) -> ClientTrust:
        """Read the CA certificates; ConfigurationError names the file at fault."""
        own = _read(Path(own_ca), "TLS CA certificate")
        peers = {
            region: _read(Path(path), f"CA certificate of peer region {region}")
            for region, path in (peer_cas or {}).items()
        }
        return cls(own, peers)

    @property
    def peer_regions(self) -> tuple[str, ...]:
        """The regions whose CAs are trusted, in the order given."""
        return tuple(region for region, _ in self._peers)

    def identify(self, auth_context: AuthContext) -> Identity:
        """The caller's identity, refused (:class:`CertificateRejected`) when its issuing CA
        may not vouch for it."""
        return self._identify(auth_context)[0]

    def peer_region(self, auth_context: AuthContext) -> str | None:
        """The region of the peer whose CA issued the caller's certificate; None when this
        node's own CA issued it (such a caller is no federation peer)."""
        return self._identify(auth_context)[1]

    def _identify(self, auth_context: AuthContext) -> tuple[Identity, str | None]:
        identity = identity_from_auth_context(auth_context)
        pems = _auth_values(auth_context, "x509_pem_cert")
        if not pems:
            if self._peers:
                raise CertificateRejected(
                    "auth_context",
                    str(identity),
                    "the server's gRPC does not expose the client certificate, so its issuing "
                    "CA (this node's or a peer's) cannot be told; refusing",
                )
            return identity, None  # only our own CA is trusted: it issued this one
        region = self._issuer(bytes(pems[0]))
        if region is not None and identity.role is not Role.PEER:
            raise CertificateRejected(
                "certificate",
                str(identity),
                f"issued by the CA of peer region {region}, which may issue only peer "
                "identities; halls, auditors and admins of this node come from its own CA",
            )
        return identity, region

    def _issuer_of(self, pem: bytes) -> str | None:
        """None for this node's own CA, a region for that peer's CA; anyone else is refused."""
        certificate = _parse_certificate(pem)
        if _issued_by(certificate, self._own):
            return None
        for region, ca in self._peers:
            if _issued_by(certificate, ca):
                return region
        raise CertificateRejected(
            "certificate",
            certificate.subject.rfc4514_string(),
            "not issued by any CA this node trusts (its own or a federation peer's)",
        )


def _issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _public_der(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _only_ca(pem: bytes, what: str) -> x509.Certificate:
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise ConfigurationError(f"{what} is not a PEM certificate: {error}") from None
    if not _is_ca(certificate):
        raise ConfigurationError(
            f"{what} ({certificate.subject.rfc4514_string()}) is not a CA certificate"
        )
    return certificate


def load_pem_files(cert_path: Path, key_path: Path, ca_path: Path) -> tuple[bytes, bytes, bytes]:
    """Read and check the PEM files of one TLS endpoint: its certificate, its key, the trusted CA.

    Returns the raw bytes (certificate chain, private key, root certificates) as
    ``grpc.ssl_server_credentials`` / ``grpc.ssl_channel_credentials`` expect them. Each file is
    parsed first so that a wrong path or a swapped file fails at start-up with the file's name,
    instead of as an opaque handshake failure on the first call. Also checks that the key belongs
    to the certificate.
    """
    cert_path, key_path, ca_path = Path(cert_path), Path(key_path), Path(ca_path)
    cert_pem = _read(cert_path, "TLS certificate")
    key_pem = _read(key_path, "TLS private key")
    ca_pem = _read(ca_path, "TLS CA certificate")
    certificate = _parse_pem_certificates(cert_pem, cert_path, "TLS certificate")[0]
    key = _parse_private_key(key_pem, key_path, "TLS private key")
    _parse_pem_certificates(ca_pem, ca_path, "TLS CA certificate")
    if certificate.public_key() != key.public_key():
        raise ConfigurationError(
            f"TLS private key {key_path} does not belong to TLS certificate {cert_path} "
            f"({certificate.subject.rfc4514_string()})"
        )
    return cert_pem, key_pem, ca_pem


# --- helpers ----------------------------------------------------------------------------------


def _auth_values(auth_context: AuthContext, key: str) -> list[bytes]:
    """The values of one auth-context property as a list, whatever shape the caller's grpc gave."""
    values = auth_context.get(key)
    if values is None:
        return []
    if isinstance(values, bytes):
        return [values]
    return [bytes(value) for value in values]


def _check_role(role: object) -> Role:
    if isinstance(role, Role):
        return role
    try:
        return Role(str(role))
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise InvalidInput("role", role, f"unknown role (known: {known})") from None


def _check_name(name: object, field: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidInput(
            field,
            name,
            "must be 3-64 characters of lowercase letters, digits, '.' and '-', starting with "
            f"a letter or digit ({NAME_PATTERN.pattern})",
        )


def _host_names(dns_names: Iterable[str], ip_addresses: Iterable[str]) -> list[x509.GeneralName]:
    """Validate host names and addresses and turn them into SAN entries."""
    entries: list[x509.GeneralName] = []
    for dns in dns_names:
        labels = dns.split(".") if isinstance(dns, str) else []
        if not labels or len(dns) > _DNS_NAME_MAX or not all(map(_DNS_LABEL.fullmatch, labels)):
            raise InvalidInput(
                "dns_names", dns, "not a DNS host name (ASCII labels of letters, digits, '-')"
            )
        entries.append(x509.DNSName(dns.lower()))
    for ip in ip_addresses:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise InvalidInput("ip_addresses", ip, "not an IPv4 or IPv6 address") from None
        entries.append(x509.IPAddress(address))
    return entries


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _node_name_of(certificate: x509.Certificate) -> str:
    """The node name from the CA's CN "Tongban CA <node>" (the whole CN for foreign CAs)."""
    common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = common_names[0].value if common_names else ""
    text = cn if isinstance(cn, str) else cn.decode("utf-8", "replace")
    return text.removeprefix(_CA_CN_PREFIX)


def _identity_of(certificate: x509.Certificate) -> Identity:
    subject = certificate.subject.rfc4514_string()
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        raise CertificateRejected(
            "certificate",
            subject,
            "has no subjectAltName; a Tongban certificate names its holder in a "
            f"{URI_SCHEME}://<role>/<name> URI",
        ) from None
    uris = [
        uri
        for uri in san.value.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.lower().startswith(f"{URI_SCHEME}:")
    ]
    if not uris:
        raise CertificateRejected(
            "certificate", subject, f"has no {URI_SCHEME}://<role>/<name> URI in its subjectAltName"
        )
    if len(uris) > 1:
        # Two identities in one certificate would let the holder pick whichever suits it.
        raise CertificateRejected(
            "certificate", subject, f"names more than one identity in its subjectAltName: {uris}"
        )
    return Identity.from_uri(uris[0])


def _quote(data: bytes) -> bytes:
    return data[:_QUOTE_BYTES]


def _parse_certificate(pem_or_der: bytes) -> x509.Certificate:
    """Parse one certificate, PEM or DER (told apart by the PEM armour)."""
    if not isinstance(pem_or_der, bytes | bytearray | memoryview):
        raise CertificateRejected(
            "certificate", type(pem_or_der).__name__, "expected PEM or DER bytes"
        )
    data = bytes(pem_or_der)
    if not data.strip():
        raise CertificateRejected("certificate", data, "is empty")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        kind = "PEM" if data.lstrip().startswith(b"-----BEGIN") else "DER"
        raise CertificateRejected(
            "certificate", _quote(data), f"not a readable {kind} X.509 certificate: {exc}"
        ) from None


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"{what} file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigurationError(f"{what} file {path} is a directory, not a file") from None
    except PermissionError:
        raise ConfigurationError(
            f"{what} file {path} is not readable (permission denied)"
        ) from None
    except OSError as exc:
        raise ConfigurationError(f"{what} file {path} cannot be read: {exc.strerror}") from None
    if not data.strip():
        raise ConfigurationError(f"{what} file {path} is empty")
    return data


def _parse_pem_certificates(data: bytes, path: Path, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigurationError(
            f"{what} file {path} holds no readable PEM certificate: {exc}"
        ) from None


def _parse_private_key(data: bytes, path: Path, what: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        # cryptography raises TypeError for a key that needs a password we did not give.
        raise ConfigurationError(
            f"{what} file {path} is encrypted; Tongban expects an unencrypted PEM key "
            "protected by file permissions"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(
            f"{what} file {path} holds no readable PEM private key: {exc}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError(
            f"{what} file {path} holds a {type(key).__name__.lstrip('_')}, "
            "expected an ECDSA (elliptic curve) key"
        )
    return key


def _load_certificates(path: Path, what: str) -> list[x509.Certificate]:
    return _parse_pem_certificates(_read(path, what), path, what)


def _load_private_key(path: Path, what: str) -> ec.EllipticCurvePrivateKey:
    return _parse_private_key(_read(path, what), path, what)


def _private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # PKCS#8 without a passphrase: grpc loads it directly; the file mode protects it.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _refuse_existing(paths: Iterable[Path], *, what: str) -> None:
    # Checked up front for both files so that a refusal leaves nothing half-written.
    for path in paths:
        if path.exists():
            raise ConfigurationError(
                f"{path} exists already; refusing to overwrite the {what} (move it away first)"
            )


def _make_private_directory(directory: Path) -> None:
    try:
        # A new directory is private (0700): it is about to hold private keys. An existing
        # directory keeps its mode; the key files themselves are 0600 either way.
        directory.mkdir(mode=_PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigurationError(f"{directory} exists and is not a directory") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot create directory {directory}: {exc.strerror}") from None


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` exclusively with ``mode`` and write ``data`` to it.

    ``O_EXCL`` makes creation atomic (a racing writer cannot be overwritten) and the mode is
    applied by ``open`` itself, so a private key is never readable by others, not even briefly.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise ConfigurationError(f"{path} exists already; refusing to overwrite it") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot create {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise ConfigurationError(f"cannot write {path}: {exc.strerror}") from None


def _write_pair(key_path: Path, key_pem: bytes, cert_path: Path, cert_pem: bytes) -> None:
    """Write a key (0600) and its certificate; never leave a key without its certificate."""
    _write_new_file(key_path, key_pem, _PRIVATE_MODE)
    try:
        _write_new_file(cert_path, cert_pem, _PUBLIC_MODE)
    except ConfigurationError:
        key_path.unlink(missing_ok=True)
        raise

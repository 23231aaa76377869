"""Fetching a case's materials from the peer node that took the case in.

When this node receives a case handed off from a peer (the relay), the case's material files
are still at the peer: only their digests travelled in the signed command. The relay then calls
:meth:`MaterialFetcher.fetch_case_materials` with the peer, the case id and the materials the
case lists. For each one the fetcher

* skips it when this node already holds the file (files are stored once, by digest);
* otherwise calls the peer's ``PeerMaterials.Fetch`` over mutual TLS — presenting this node's
  peer certificate (``<pki dir>/peer.pem``, issued by this node's own CA with
  ``tongban pki peer-cert``), and checking the peer's server certificate against the peer's CA
  from the federation file — and streams the bytes into this node's store, which checks the
  size and the SHA-256 of every byte before the file becomes visible.

It returns a :class:`FetchReport` that names every material that is **missing** (the peer does
not hold it, or does not give it to this node: the peer answers NOT_FOUND either way) or
**altered** (the bytes do not match the digest, or the peer's own copy is damaged). Nothing
altered is ever stored. A peer that cannot be reached, or refuses this node as a whole (its
certificate), raises :class:`~hub.errors.PeerUnavailable`: the relay tries again later, and
files fetched before the failure are kept (a retry skips them).

Every file fetched, or found here already, is recorded as held for the case
(:func:`~hub.materials.store.case_holder`), which lets the halls that are parties to the case at
this node download it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import grpc
from tongban.v1 import materials_pb2, materials_pb2_grpc

from hub.errors import ConfigurationError, InvalidInput, PeerUnavailable
from hub.materials.store import MaterialStore, case_holder

#: File names of this node's peer client certificate in its PKI directory.
PEER_CERTIFICATE_FILE = "peer.pem"
PEER_KEY_FILE = "peer.key"

#: The slowest transfer a fetch waits for (bytes per second), on top of FETCH_BASE_SECONDS:
#: the deadline of one file's fetch grows with its size.
FETCH_MIN_RATE = 256 * 1024
FETCH_BASE_SECONDS = 30.0


class PeerEndpoint(Protocol):
    """What the fetcher needs of a peer (``hub.relay.config.Peer`` has it)."""

    @property
    def region(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def ca_certificate(self) -> Path: ...


class MaterialLike(Protocol):
    """A material as a case lists it (``hub.domain.values.Material`` has it)."""

    @property
    def name(self) -> str: ...

    @property
    def sha256(self) -> str: ...

    @property
    def size(self) -> int: ...


@dataclass(frozen=True)
class WantedMaterial:
    """A material of the case: its name (for people), its digest and its size."""

    name: str
    sha256: str
    size: int

    @classmethod
    def of(cls, item: MaterialLike | tuple[str, str, int]) -> WantedMaterial:
        """From a case's material or a ``(name, sha256, size)`` tuple."""
        if isinstance(item, tuple):
            return cls(*item)
        return cls(item.name, item.sha256, item.size)


@dataclass(frozen=True)
class MaterialProblem:
    """A material that could not be fetched, and why."""

    name: str
    sha256: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.sha256[:12]}…): {self.reason}"


@dataclass(frozen=True)
class FetchReport:
    """What :meth:`MaterialFetcher.fetch_case_materials` did for one case."""

    case_id: UUID
    peer: str
    #: Digests fetched from the peer and stored now.
    fetched: tuple[str, ...] = ()
    #: Digests this node held already.
    present: tuple[str, ...] = ()
    #: Not held by the peer, or not given to this node.
    missing: tuple[MaterialProblem, ...] = ()
    #: Bytes that do not match the digest (never stored), or damaged at the peer.
    altered: tuple[MaterialProblem, ...] = ()

    @property
    def complete(self) -> bool:
        """Whether this node now holds every material of the case."""
        return not self.missing and not self.altered

    def describe(self) -> str:
        """One line per problem (empty when complete), for logs and operators."""
        lines = [f"missing: {problem}" for problem in self.missing]
        lines += [f"altered: {problem}" for problem in self.altered]
        return "\n".join(lines)


@dataclass(frozen=True)
class PeerClientCertificate:
    """This node's client certificate for calls to peers (role ``peer``, from its own CA)."""

    certificate: Path
    private_key: Path

    @classmethod
    def in_directory(cls, directory: Path) -> PeerClientCertificate:
        """``peer.pem`` and ``peer.key`` in the node's PKI directory (``pki peer-cert``)."""
        return cls(directory / PEER_CERTIFICATE_FILE, directory / PEER_KEY_FILE)

    def read(self) -> tuple[bytes, bytes]:
        """(certificate chain, private key) PEM; ConfigurationError naming a missing file."""
        try:
            return self.certificate.read_bytes(), self.private_key.read_bytes()
        except OSError as error:
            raise ConfigurationError(
                f"this node's peer certificate {error.filename}: {error.strerror}; issue it "
                "with `tongban pki peer-cert`"
            ) from None


@dataclass
class _Outcome:
    fetched: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    missing: list[MaterialProblem] = field(default_factory=list)
    altered: list[MaterialProblem] = field(default_factory=list)


class MaterialFetcher:
    """Fetches the materials of cases from peers into this node's store (module docstring)."""

    def __init__(
        self,
        store: MaterialStore,
        client: PeerClientCertificate,
        *,
        min_rate: int = FETCH_MIN_RATE,
        base_seconds: float = FETCH_BASE_SECONDS,
    ) -> None:
        self.store = store
        self.client = client
        self.min_rate = min_rate
        self.base_seconds = base_seconds

    def fetch_case_materials(
        self,
        peer: PeerEndpoint,
        case_id: UUID | str,
        materials: Iterable[MaterialLike | tuple[str, str, int]],
    ) -> FetchReport:
        """Fetch every material of ``case_id`` this node lacks from ``peer``; see the module
        docstring. Raises PeerUnavailable when the peer cannot be reached or refuses this node
        as a whole, StorageUnavailable when this node's store is down."""
        case = UUID(str(case_id))
        wanted = _distinct(WantedMaterial.of(item) for item in materials)
        outcome = _Outcome()
        holder = case_holder(case)
        channel: grpc.Channel | None = None
        try:
            for material in wanted:
                if self.store.get(material.sha256) is not None:
                    self.store.add_holder(material.sha256, holder)
                    outcome.present.append(material.sha256)
                    continue
                if channel is None:
                    channel = self._channel(peer)
                stub = materials_pb2_grpc.PeerMaterialsStub(channel)
                self._fetch_one(stub, peer, case, material, outcome)
        finally:
            if channel is not None:
                channel.close()
        return FetchReport(
            case_id=case,
            peer=peer.region,
            fetched=tuple(outcome.fetched),
            present=tuple(outcome.present),
            missing=tuple(outcome.missing),
            altered=tuple(outcome.altered),
        )

    def _channel(self, peer: PeerEndpoint) -> grpc.Channel:
        certificate, key = self.client.read()
        try:
            root = Path(peer.ca_certificate).read_bytes()
        except OSError as error:
            raise ConfigurationError(
                f"the CA certificate of peer region {peer.region} {peer.ca_certificate}: "
                f"{error.strerror}"
            ) from None
        credentials = grpc.ssl_channel_credentials(root, key, certificate)
        return grpc.secure_channel(
            peer.address,
            credentials,
            options=[("grpc.max_receive_message_length", 4 * 1024 * 1024 + 1024)],
        )

    def _fetch_one(
        self,
        stub: materials_pb2_grpc.PeerMaterialsStub,
        peer: PeerEndpoint,
        case: UUID,
        material: WantedMaterial,
        outcome: _Outcome,
    ) -> None:
        request = materials_pb2.FetchRequest(case_id=str(case), sha256=material.sha256)
        deadline = self.base_seconds + material.size / self.min_rate
        try:
            replies = stub.Fetch(request, timeout=deadline)
            problem = self._store(replies, case, material)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = (error.details() if isinstance(error, grpc.Call) else "") or code.name
            if code is grpc.StatusCode.NOT_FOUND:
                outcome.missing.append(
                    MaterialProblem(
                        material.name,
                        material.sha256,
                        f"peer region {peer.region} does not give it to this node (it does not "
                        "hold the file, or not for this case)",
                    )
                )
                return
            if code is grpc.StatusCode.DATA_LOSS:
                outcome.altered.append(
                    MaterialProblem(
                        material.name,
                        material.sha256,
                        f"peer region {peer.region} holds a damaged copy: {details}",
                    )
                )
                return
            raise PeerUnavailable(
                peer.region, f"fetching {material.sha256} failed: {code.name}: {details}"
            ) from None
        if problem is None:
            outcome.fetched.append(material.sha256)
        else:
            outcome.altered.append(MaterialProblem(material.name, material.sha256, problem))

    def _store(self, replies: Iterator[Any], case: UUID, material: WantedMaterial) -> str | None:
        """Stream the peer's reply into the store; the problem when the bytes are wrong."""
        first = next(replies, None)
        if first is None or first.WhichOneof("part") != "header":
            return "the peer's reply does not start with the file's header"
        header = first.header
        if header.sha256 != material.sha256 or header.size != material.size:
            return (
                f"the peer announces {header.sha256 or '(no digest)'} of {header.size} bytes, "
                f"the case lists {material.sha256} of {material.size} bytes"
            )
        try:
            writer = self.store.writer(material.sha256, material.size, case_holder(case))
        except InvalidInput as error:
            return f"this node cannot take it: {error.reason}"
        try:
            for reply in replies:
                if reply.WhichOneof("part") != "data":
                    raise InvalidInput("header", "", "sent twice")
                writer.write(reply.data)
            writer.finish()
        except InvalidInput as error:
            writer.abort()
            return f"the bytes received do not match: {error}"
        except BaseException:
            writer.abort()
            raise
        return None


def _distinct(items: Iterable[WantedMaterial]) -> list[WantedMaterial]:
    seen: dict[str, WantedMaterial] = {}
    for item in items:
        seen.setdefault(item.sha256, item)
    return list(seen.values())


__all__ = [
    "PEER_CERTIFICATE_FILE",
    "PEER_KEY_FILE",
    "FetchReport",
    "MaterialFetcher",
    "MaterialProblem",
    "PeerClientCertificate",
    "PeerEndpoint",
    "WantedMaterial",
]

"""The Materials service (halls) and the PeerMaterials service (peer nodes).

Both run on the server's event loop (``grpc.aio``) and hand every store access — a chunk
sealed and written, or read and opened — to a small thread pool of their own, so a long upload
or download never holds one of the unary workers and never blocks the loop.

Who may do what:

* ``Upload``: a hall certificate (of this node's CA) of a registered hall that is not retired.
  The hall is recorded as a holder of the bytes it showed (see :mod:`hub.materials.store`).
* ``Download``: a hall that is a party to the case, for a digest the case lists, when the file
  was shown to the node by a party to the case (or fetched for it from a peer).
* ``Fetch``: a peer certificate issued by a federation peer's own CA (see
  :class:`hub.pki.ClientTrust`), for a case one of whose regions that peer keeps (its
  competent region, or that of a hall the case was handed to or tasked: :func:`decided_by`),
  under the same holder rule.

Every refusal about a case or a file is the same NOT_FOUND("material <digest>"), whether the
case does not exist, the caller is no party, the case does not list the digest, or the node does
not hold the file: a caller learns nothing about what exists. Materials need caller identities,
so a node serving without TLS (``--insecure``) refuses these calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from uuid import UUID

import grpc
from tongban.v1 import materials_pb2

from hub.api.errors import as_tongban_error
from hub.api.handlers import StreamLimit, add_service
from hub.api.servicer import Authenticator, Caller
from hub.application.hub import HubApplication
from hub.domain.case import Case
from hub.domain.federation import within
from hub.errors import InvalidInput, NotFound, PermissionRefused, TongbanError
from hub.materials.chunks import check_digest
from hub.materials.store import MaterialStore, hall_holder
from hub.pki import CertificateRejected, Identity, Role

T = TypeVar("T")

MATERIALS = materials_pb2.DESCRIPTOR.services_by_name["Materials"]
PEER_MATERIALS = materials_pb2.DESCRIPTOR.services_by_name["PeerMaterials"]

#: The region of the federation peer whose CA issued the caller's certificate (None: not one).
PeerRegion = Callable[[grpc.ServicerContext], str | None]

#: Threads per serving process that read and write chunks for open material streams.
IO_THREADS = 4

#: Domain field names of the store → the upload's wire fields.
_UPLOAD_FIELDS = {"sha256": "header.sha256", "size": "header.size"}


def _no_peer(context: grpc.ServicerContext) -> str | None:
    return None


class _Streams:
    """Runs store work on the services' own threads, with errors as hub errors."""

    def __init__(self, threads: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="materials")

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, work, *args)
        except TongbanError:
            raise
        except Exception as error:
            mapped = as_tongban_error(error)
            if mapped is None:
                raise
            raise mapped from error


def _identified(identity: Identity | None) -> Identity:
    if identity is None:
        raise CertificateRejected(
            "auth_context",
            "no client certificate",
            "materials are served only over mutual TLS (a node started with --insecure has no "
            "caller identities)",
        )
    return identity


def _on_the_wire(error: InvalidInput) -> InvalidInput:
    field = _UPLOAD_FIELDS.get(error.field, error.field)
    return InvalidInput(field, error.value, error.reason)


def _request(case_id: str, sha256: str) -> tuple[UUID, str]:
    """The request's case id and digest; malformed ones are INVALID_ARGUMENT by field."""
    try:
        case = UUID(case_id)
    except ValueError:
        raise InvalidInput("case_id", case_id, "not a case id (a UUID)") from None
    return case, check_digest(sha256, "sha256")


class MaterialsServicer:
    """Upload and download for halls (see the module docstring)."""

    def __init__(
        self, app: HubApplication, store: MaterialStore, authenticate: Authenticator
    ) -> None:
        self.app = app
        self.store = store
        self.authenticate = authenticate
        self.streams = _Streams(IO_THREADS)

    def _hall(self, context: grpc.ServicerContext) -> Identity:
        identity = _identified(self.authenticate(context))
        Caller(identity).require(Role.HALL)
        return identity

    async def Upload(self, requests: AsyncIterator[Any], context: Any) -> Any:  # noqa: N802
        hall = self._hall(context)
        run = self.streams.run
        # Only a registered hall that is not retired may store files here (as it may act).
        await run(self._active, hall.name)
        messages = aiter(requests)
        first = await anext(messages, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidInput(
                "header", "", "the first message must be the header (sha256 and size)"
            )
        try:
            writer = await run(
                self.store.writer, first.header.sha256, first.header.size, hall_holder(hall.name)
            )
        except InvalidInput as error:
            raise _on_the_wire(error) from None
        try:
            async for message in messages:
                if message.WhichOneof("part") != "data":
                    raise InvalidInput("header", "", "only the first message is a header")
                await run(writer.write, message.data)
            stored = await run(writer.finish)
        except Exception as error:
            # Refused: the upload's chunks are gone before the hall hears of it.
            await run(writer.abort)
            raise _on_the_wire(error) if isinstance(error, InvalidInput) else error from None
        except BaseException:
            # The hall hung up half-way (the call is cancelled): nothing of it is kept either.
            self.streams.pool.submit(writer.abort)
            raise
        return materials_pb2.StoredMaterial(sha256=stored.sha256, size=stored.size)

    def _active(self, hall_id: str) -> None:
        self.app.reading_hall(hall_id)

    async def Download(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        hall = self._hall(context)
        case_id, sha256 = _request(request.case_id, request.sha256)

        def authorise() -> Any:
            try:
                case = self.app.case_for_hall(case_id, hall.name)
            except NotFound:
                raise NotFound("material", sha256) from None
            return self.store.check_case(case, sha256)

        async for message in _send(self.streams, self.store, sha256, authorise):
            yield message


class PeerMaterialsServicer:
    """Fetch for federation peers (see the module docstring)."""

    def __init__(
        self,
        app: HubApplication,
        store: MaterialStore,
        authenticate: Authenticator,
        peer_region: PeerRegion,
    ) -> None:
        self.app = app
        self.store = store
        self.authenticate = authenticate
        self.peer_region = peer_region
        self.streams = _Streams(IO_THREADS)

    async def Fetch(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        identity = _identified(self.authenticate(context))
        Caller(identity).require(Role.PEER)
        region = self.peer_region(context)
        if region is None:
            raise PermissionRefused(
                identity.name,
                "only a federation peer's certificate (issued by that peer's own CA, named in "
                "this node's federation file) may fetch materials",
            )
        case_id, sha256 = _request(request.case_id, request.sha256)

        def authorise() -> Any:
            try:
                case = self.app.get_case(case_id)
            except NotFound:
                raise NotFound("material", sha256) from None
            if not decided_by(case, region):
                raise NotFound("material", sha256)
            return self.store.check_case(case, sha256)

        async for message in _send(self.streams, self.store, sha256, authorise):
            yield message


def decided_by(case: Case, region: str) -> bool:
    """Whether the peer keeping ``region`` shares ``case``: it keeps one of the case's regions
    (the competent region, or that of a hall of its the case was sent to or tasked), so the
    relay gave it a copy of the case and its hall may need the files."""
    return any(within(own, region) for own in case.regions())


async def _send(
    streams: _Streams, store: MaterialStore, sha256: str, authorise: Callable[[], Any]
) -> AsyncIterator[Any]:
    """Header, then the file's chunks, each read and opened on the services' threads."""
    stored = await streams.run(authorise)
    chunks = await streams.run(store.read, sha256)
    yield materials_pb2.MaterialChunk(
        header=materials_pb2.MaterialHeader(sha256=stored.sha256, size=stored.size)
    )
    while True:
        chunk = await streams.run(next, chunks, None)
        if chunk is None:
            return
        yield materials_pb2.MaterialChunk(data=chunk)


def add_material_services(
    app: HubApplication, store: MaterialStore, peer_region: PeerRegion | None = None
) -> Callable[[Any, Authenticator, StreamLimit], list[str]]:
    """For ``NodeServer(extra_services=...)``: registers Materials and PeerMaterials; returns
    their full names. ``peer_region``: the federation peer of a caller's certificate
    (``ClientTrust.peer_region``); without it no caller is a peer."""

    def add(server: Any, authenticate: Authenticator, streams: StreamLimit) -> list[str]:
        return [
            add_service(server, MaterialsServicer(app, store, authenticate), MATERIALS, streams),
            add_service(
                server,
                PeerMaterialsServicer(app, store, authenticate, peer_region or _no_peer),
                PEER_MATERIALS,
                streams,
            ),
        ]

    return add


__all__ = [
    "MATERIALS",
    "PEER_MATERIALS",
    "MaterialsServicer",
    "PeerMaterialsServicer",
    "add_material_services",
    "decided_by",
]

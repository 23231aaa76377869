"""The fetcher against a peer that lies: this node checks every digest itself.

A real gRPC server over mutual TLS on loopback plays a peer node whose PeerMaterials service
sends what a compromised or broken node would (other bytes under the right header, more bytes
than announced, another digest); the fetcher, with a real SQLite store, must name each as
altered and store none of it. Then the honest case, an unreachable peer, and a peer whose server
certificate comes from another CA than the federation file names (a man in the middle).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any
from uuid import uuid4

import grpc
import pytest
from tongban.v1 import materials_pb2, materials_pb2_grpc

from hub.bootstrap import build_material_store
from hub.errors import PeerUnavailable
from hub.materials.fetch import MaterialFetcher, PeerClientCertificate, WantedMaterial
from hub.materials.store import MaterialStore
from hub.pki import CertificateAuthority, Role, init_ca
from hub.settings import Settings
from tests.harness.inprocess import InProcessNode

GOOD = b"the scan the case lists" * 1000
SHA = hashlib.sha256(GOOD).hexdigest()


class LyingPeer(materials_pb2_grpc.PeerMaterialsServicer):
    """Sends, for each digest, what ``behaviour`` says."""

    def __init__(self) -> None:
        self.behaviour = "honest"
        self.calls = 0

    def Fetch(self, request: Any, context: Any) -> Iterator[Any]:  # noqa: N802
        self.calls += 1
        header = materials_pb2.MaterialHeader(sha256=request.sha256, size=len(GOOD))
        data = GOOD
        if self.behaviour == "other bytes":
            data = GOOD[:-1] + b"!"
        elif self.behaviour == "more bytes":
            data = GOOD + b"extra"
        elif self.behaviour == "another digest":
            header = materials_pb2.MaterialHeader(sha256="0" * 64, size=len(GOOD))
        elif self.behaviour == "no header":
            yield materials_pb2.MaterialChunk(data=GOOD)
            return
        yield materials_pb2.MaterialChunk(header=header)
        for at in range(0, len(data), 4096):
            yield materials_pb2.MaterialChunk(data=data[at : at + 4096])


class Peer:
    """What the fetcher needs of a peer (as hub.relay.config.Peer has it)."""

    def __init__(self, address: str, ca_certificate: Path) -> None:
        self.region = "43"
        self.address = address
        self.ca_certificate = ca_certificate


@pytest.fixture
def cas(tmp_path: Path) -> tuple[CertificateAuthority, CertificateAuthority]:
    return init_ca(tmp_path / "hunan", "hunan"), init_ca(tmp_path / "shaanxi", "shaanxi")


@pytest.fixture
def peer_server(
    tmp_path: Path, cas: tuple[CertificateAuthority, CertificateAuthority]
) -> Iterator[tuple[LyingPeer, int]]:
    hunan, shaanxi = cas
    node = hunan.issue(Role.NODE, "node")
    servicer = LyingPeer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    materials_pb2_grpc.add_PeerMaterialsServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(node.private_key_pem, node.certificate_pem)],
        root_certificates=shaanxi.certificate_pem,
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield servicer, port
    server.stop(0)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[InProcessNode]:
    started = InProcessNode.start(Settings(data_dir=tmp_path / "shaanxi-node"))
    yield started
    started.close()


@pytest.fixture
def fetcher(
    tmp_path: Path, node: InProcessNode, cas: tuple[CertificateAuthority, CertificateAuthority]
) -> MaterialFetcher:
    _hunan, shaanxi = cas
    certificate, key = shaanxi.issue(Role.PEER, "shaanxi").write(tmp_path / "client", "peer")
    return MaterialFetcher(
        build_material_store(node.settings, node.app), PeerClientCertificate(certificate, key)
    )


def chunk_rows(store: MaterialStore) -> int:
    def count(cursor: Any) -> int:
        cursor.execute("SELECT COUNT(*) AS n FROM tongban_material_chunks")
        return int(cursor.fetchone()["n"])

    return store._run(count)


def peer_at(tmp_path: Path, port: int) -> Peer:
    return Peer(f"localhost:{port}", tmp_path / "hunan" / "ca.pem")


@pytest.mark.parametrize("behaviour", ["other bytes", "more bytes", "another digest", "no header"])
def test_a_lying_peer_is_named_altered_and_nothing_is_stored(
    tmp_path: Path,
    peer_server: tuple[LyingPeer, int],
    fetcher: MaterialFetcher,
    behaviour: str,
) -> None:
    servicer, port = peer_server
    servicer.behaviour = behaviour
    case_id = uuid4()
    report = fetcher.fetch_case_materials(
        peer_at(tmp_path, port), case_id, [("身份证", SHA, len(GOOD))]
    )
    assert report.fetched == ()
    assert [(p.name, p.sha256) for p in report.altered] == [("身份证", SHA)]
    assert not report.complete
    store: MaterialStore = fetcher.store
    assert store.get(SHA) is None
    assert store.count() == 0
    assert chunk_rows(store) == 0


def test_an_honest_peer_is_fetched_once(
    tmp_path: Path, peer_server: tuple[LyingPeer, int], fetcher: MaterialFetcher
) -> None:
    servicer, port = peer_server
    case_id = uuid4()
    wanted = [WantedMaterial("身份证", SHA, len(GOOD)), ("身份证 (again)", SHA, len(GOOD))]
    report = fetcher.fetch_case_materials(peer_at(tmp_path, port), case_id, wanted)
    assert (report.fetched, report.complete, servicer.calls) == ((SHA,), True, 1)
    assert b"".join(fetcher.store.read(SHA)) == GOOD
    # Held already: no second call.
    again = fetcher.fetch_case_materials(peer_at(tmp_path, port), uuid4(), wanted)
    assert (again.present, servicer.calls) == ((SHA,), 1)


def test_an_unreachable_peer_raises_unavailable(tmp_path: Path, fetcher: MaterialFetcher) -> None:
    with pytest.raises(PeerUnavailable, match="UNAVAILABLE"):
        fetcher.fetch_case_materials(
            Peer("localhost:1", tmp_path / "hunan" / "ca.pem"), uuid4(), [("x", SHA, len(GOOD))]
        )


def test_a_server_certificate_of_another_ca_is_refused(
    tmp_path: Path, peer_server: tuple[LyingPeer, int], fetcher: MaterialFetcher
) -> None:
    # The federation file names another CA for 湖南 than the one the server presents.
    other = init_ca(tmp_path / "man-in-the-middle", "hunan")
    _servicer, port = peer_server
    peer = Peer(f"localhost:{port}", tmp_path / "man-in-the-middle" / "ca.pem")
    with pytest.raises(PeerUnavailable):
        fetcher.fetch_case_materials(peer, uuid4(), [("x", SHA, len(GOOD))])
    assert fetcher.store.count() == 0
    assert other.certificate_pem  # (the CA exists; its files were written)

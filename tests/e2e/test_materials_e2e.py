"""Materials end to end: real ``tongban serve`` processes over mutual TLS.

One node: halls upload scans by digest through the SDK, a party downloads them, anyone else gets
the NOT_FOUND a missing file gets; bad uploads are INVALID_ARGUMENT naming the field and leave
nothing in the node's database; other roles may not upload.

Two nodes with federation files and peer certificates (湖南 43 takes a case in for 白河县 in 陕西
61): 陕西's node fetches the case's materials from 湖南's over PeerMaterials (``tongban materials
fetch``, a real process), every digest checked; a byte altered in 湖南's store is named altered,
a material never uploaded is named missing. Attacks first: a hall certificate issued by a peer's
CA is refused (UNAUTHENTICATED) even when it names a real hall; a peer of another region, a peer
certificate of the node's own CA and an untrusted CA get nothing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tongban.v1 import (
    case_exchange_pb2,
    case_exchange_pb2_grpc,
    common_pb2,
    materials_pb2,
    materials_pb2_grpc,
)

from adapters.errors import CaseNotFound, CommandInvalid, NodeRefused
from adapters.sdk import HallClient, RetryPolicy
from hub.application.cipher import KeyRingCipher, parse_key_ring
from hub.domain.values import id_number_with_check
from hub.materials.chunks import ChunkSeal
from tests.harness.federation import peer_entry, write_federation
from tests.harness.node import TONGBAN, NodeProcess

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
VILLAGE = ("hn-shatou-v201", "430902104201")
TOWNSHIP = ("hn-shatou-town", "430902104000")
APPLICANT = common_pb2.Applicant(
    name="陈桂花", id_number=id_number_with_check("61092919700101002"), phone="13907371234"
)
#: 居民身份证换领: decided at county level; 湖南 may take it in for other provinces (异地代收代办).
ID_CARD_RENEWAL = "070302001000"
BAIHE_COUNTY = "610929000000"  # 白河县, 陕西


def scan(size: int, seed: bytes) -> bytes:
    """``size`` pseudo-random bytes, like a scan."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def channel(node: NodeProcess, certificate: Path, key: Path) -> grpc.Channel:
    """A channel to ``node`` presenting ``certificate`` (checking the node against its CA)."""
    credentials = grpc.ssl_channel_credentials(
        (node.pki / "ca.pem").read_bytes(), key.read_bytes(), certificate.read_bytes()
    )
    return grpc.secure_channel(node.target, credentials)


def status(call: Callable[[], Any]) -> tuple[str, str]:
    """(status name, message) of a raw call; ("OK", "") when it succeeds. Streams are read."""
    try:
        reply = call()
        if isinstance(reply, Iterator):
            list(reply)
    except grpc.RpcError as error:
        return error.code().name, error.details() or ""
    return "OK", ""


def upload_messages(sha256: str, size: int, data: bytes) -> Iterator[materials_pb2.UploadChunk]:
    yield materials_pb2.UploadChunk(header=materials_pb2.MaterialHeader(sha256=sha256, size=size))
    for at in range(0, len(data), 300_000):
        yield materials_pb2.UploadChunk(data=data[at : at + 300_000])


def violations(error: grpc.RpcError) -> list[str]:
    found = rpc_status.from_call(error)  # type: ignore[arg-type]
    fields = []
    for detail in found.details if found is not None else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields


def stored_rows(node: NodeProcess) -> tuple[int, int]:
    """(files held, chunks) in the node's SQLite database, read beside the running node."""
    with sqlite3.connect(f"file:{node.data_dir / 'events.sqlite3'}?mode=ro", uri=True) as db:
        files = db.execute(
            "SELECT COUNT(*) FROM tongban_materials WHERE wrapped_key IS NOT NULL"
        ).fetchone()[0]
        chunks = db.execute("SELECT COUNT(*) FROM tongban_material_chunks").fetchone()[0]
    return int(files), int(chunks)


# ================================================================================ one node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    directory = tmp_path_factory.mktemp("materials-node")
    with NodeProcess(directory, extra_env={"TONGBAN_MAX_MATERIAL_BYTES": str(6 * MiB)}) as process:
        for hall_id, region in (VILLAGE, TOWNSHIP):
            process.add_hall(hall_id, region)
        process.start()
        yield process


def client(node: NodeProcess, hall_id: str) -> HallClient:
    return node.client(hall_id, retry=RetryPolicy(attempts=1))


def submit(hall: HallClient, materials: list[common_pb2.Material]) -> str:
    reply = hall.send(
        "submit",
        idempotency_key=uuid.uuid4().hex,
        item_code="200202001000",
        applicant=APPLICANT,
        competent_region=TOWNSHIP[1],
        materials=materials,
    )
    return str(reply.case_id)


def test_a_party_downloads_what_was_uploaded_and_no_one_else_does(
    node: NodeProcess, tmp_path: Path
) -> None:
    data = scan(3 * MiB + 17, b"household register")
    with client(node, VILLAGE[0]) as village, client(node, TOWNSHIP[0]) as township:
        material = village.upload_material(write(tmp_path, "户口簿.jpg", data), name="户口簿")
        assert (material.sha256, material.size) == (hashlib.sha256(data).hexdigest(), len(data))
        assert material.media_type == "image/jpeg"
        # Uploading it again stores nothing new.
        files, chunks = stored_rows(node)
        assert village.upload_material(tmp_path / "户口簿.jpg").sha256 == material.sha256
        assert stored_rows(node) == (files, chunks)

        case_id = submit(village, [material])
        target = tmp_path / "downloaded.jpg"
        assert village.download_material(case_id, material.sha256, target) == len(data)
        assert target.read_bytes() == data

        # The township hall is no party: the same NOT_FOUND as for no such case or file.
        answers = set()
        for case, digest in (
            (case_id, material.sha256),
            (str(uuid.uuid4()), material.sha256),
            (case_id, hashlib.sha256(b"no such file").hexdigest()),
        ):
            with pytest.raises(CaseNotFound) as refused:
                township.download_material(case, digest, tmp_path / "nothing")
            answers.add(refused.value.message.replace(digest, "<digest>"))
        assert answers == {"material <digest> not found"}
        assert not (tmp_path / "nothing").exists()
        assert not list(tmp_path.glob(".nothing.part-*"))


@pytest.mark.parametrize(
    ("declare", "field"),
    [("another digest", "header.sha256"), ("a larger size", "header.size"),
     ("a smaller size", "data"), ("over the limit", "header.size")],
)  # fmt: skip
def test_a_bad_upload_is_invalid_argument_and_stores_nothing(
    node: NodeProcess, declare: str, field: str
) -> None:
    data = scan(2 * MiB + 3, declare.encode())
    sha256, size = hashlib.sha256(data).hexdigest(), len(data)
    if declare == "another digest":
        sha256 = hashlib.sha256(data + b"x").hexdigest()
    elif declare == "a larger size":
        size += 1
    elif declare == "a smaller size":
        size -= 1
    else:
        size = 6 * MiB + 1
    before = stored_rows(node)
    hall = node.halls[VILLAGE[0]]
    with channel(node, hall.certificate, hall.private_key) as open_channel:
        stub = materials_pb2_grpc.MaterialsStub(open_channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Upload(upload_messages(sha256, size, data), timeout=30)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violations(refused.value) == [field]
    assert stored_rows(node) == before


def test_an_upload_must_start_with_its_header(node: NodeProcess) -> None:
    hall = node.halls[VILLAGE[0]]
    with channel(node, hall.certificate, hall.private_key) as open_channel:
        stub = materials_pb2_grpc.MaterialsStub(open_channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Upload(iter([materials_pb2.UploadChunk(data=b"x")]), timeout=10)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert violations(refused.value) == ["header"]
        # Bytes that are no UploadChunk at all.
        garbage = open_channel.stream_unary(
            "/tongban.v1.Materials/Upload",
            request_serializer=lambda raw: raw,
            response_deserializer=materials_pb2.StoredMaterial.FromString,
        )
        with pytest.raises(grpc.RpcError) as unparsed:
            garbage(iter([b"\xff\xff\xff"]), timeout=10)
        assert unparsed.value.code() is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("role", ["auditor", "peer", "admin"])
def test_only_halls_upload_and_download(node: NodeProcess, role: str, tmp_path: Path) -> None:
    certificate, key = node.issue(role, f"{role}-materials")
    data = scan(100, role.encode())
    with channel(node, certificate, key) as open_channel:
        stub = materials_pb2_grpc.MaterialsStub(open_channel)
        code, _ = status(
            lambda: stub.Upload(upload_messages(hashlib.sha256(data).hexdigest(), 100, data))
        )
        assert code == "PERMISSION_DENIED"
        code, _ = status(
            lambda: stub.Download(
                materials_pb2.DownloadRequest(case_id=str(uuid.uuid4()), sha256="a" * 64),
                timeout=10,
            )
        )
        assert code == "PERMISSION_DENIED"


def test_a_hall_the_node_does_not_know_stores_nothing(node: NodeProcess) -> None:
    certificate, key = node.issue("hall", "hn-not-registered")  # a certificate, no registration
    data = scan(100, b"unregistered")
    before = stored_rows(node)
    with channel(node, certificate, key) as open_channel:
        stub = materials_pb2_grpc.MaterialsStub(open_channel)
        code, message = status(
            lambda: stub.Upload(upload_messages(hashlib.sha256(data).hexdigest(), 100, data))
        )
    assert (code, "no such hall" in message) == ("UNAUTHENTICATED", True)
    assert stored_rows(node) == before


def test_a_retired_hall_stores_nothing(node: NodeProcess) -> None:
    """A hall the admin retired keeps a valid certificate, but may no longer store files: its
    upload is PERMISSION_DENIED and nothing is written."""
    hall = node.add_hall("hn-shatou-v299", "430902104299")  # 撤并: merged into the township
    node.run("hall", "retire", "--hall-id", hall.hall_id, "--reason", "撤并村")
    data = scan(100, b"retired")
    before = stored_rows(node)
    with channel(node, hall.certificate, hall.private_key) as open_channel:
        stub = materials_pb2_grpc.MaterialsStub(open_channel)
        code, message = status(
            lambda: stub.Upload(upload_messages(hashlib.sha256(data).hexdigest(), 100, data))
        )
    assert (code, "retired" in message) == ("PERMISSION_DENIED", True)
    assert stored_rows(node) == before


def test_the_sdk_names_a_refusal_by_its_field(node: NodeProcess, tmp_path: Path) -> None:
    with client(node, VILLAGE[0]) as village:
        with pytest.raises(CommandInvalid) as refused:
            village.upload_material(write(tmp_path, "big.pdf", scan(6 * MiB + 1, b"big")))
        assert [field for field, _ in refused.value.violations] == ["header.size"]
        with pytest.raises(CommandInvalid):
            village.download_material(str(uuid.uuid4()), "NOT-A-DIGEST", tmp_path / "x")


def test_materials_services_are_in_health_and_reflection(node: NodeProcess) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    certificate, key = node.issue("auditor", "health-materials")
    with channel(node, certificate, key) as open_channel:
        health = health_pb2_grpc.HealthStub(open_channel)
        for service in ("tongban.v1.Materials", "tongban.v1.PeerMaterials"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("how", ["tongban erase", "HallAdmin.ErasePersonalData"])
def test_erasing_a_case_erases_the_files_only_it_lists(
    node: NodeProcess, tmp_path: Path, how: str
) -> None:
    from tongban.v1 import admin_pb2_grpc

    from hub.bootstrap import load_admin_key
    from hub.commands.signing import CommandSigner

    own = write(tmp_path, "身份证.jpg", scan(MiB + 1, how.encode()))
    shared = write(tmp_path, "申请表.pdf", scan(1000, b"shared form " + how.encode()))
    with client(node, VILLAGE[0]) as village:
        own_material = village.upload_material(own)
        shared_material = village.upload_material(shared)
        erased_case = submit(village, [own_material, shared_material])
        other_case = submit(village, [shared_material])
        files_before, chunks_before = stored_rows(node)

        if how == "tongban erase":
            out = node.run("erase", "--case", erased_case, "--reason", "申请人要求删除")
            assert "and 1 material files only it listed" in out
            # Run again (as after a stop between the two steps): it finishes, changes nothing.
            again = node.run("erase", "--case", erased_case, "--reason", "申请人要求删除")
            assert "was erased before" in again
        else:
            admin = CommandSigner(
                load_admin_key(node.data_dir / "secrets" / "admin.key"),
                node=node.origin, operator="operator", admin="operator",
            )  # fmt: skip
            command = admin.sign(
                "erase_personal_data", case_id=erased_case, reason="申请人要求删除"
            )
            certificate, key = node.issue("admin", "operator")  # the admin the key belongs to
            signed = case_exchange_pb2.SignedCommand(
                command=command.command, signature=command.signature
            )
            with channel(node, certificate, key) as admin_channel:
                erase = admin_pb2_grpc.HallAdminStub(admin_channel).ErasePersonalData
                # UNAVAILABLE (the store busy past its timeout on a loaded machine) is retried
                # with the same signed bytes, as every client is told to (docs/wire-api.md).
                for attempt in range(5):
                    try:
                        erase(signed, timeout=30)
                        break
                    except grpc.RpcError as error:
                        if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == 4:
                            raise
        # The file only the erased case listed is gone (key destroyed, chunks deleted) ...
        assert stored_rows(node) == (files_before - 1, chunks_before - 2)
        for case in (erased_case, other_case):
            with pytest.raises(CaseNotFound):
                village.download_material(case, own_material.sha256, tmp_path / "gone")
        # ... the shared one stays for the other case, and the erased case no longer gives it.
        back = tmp_path / "back.pdf"
        village.download_material(other_case, shared_material.sha256, back)
        assert back.read_bytes() == shared.read_bytes()
        with pytest.raises(CaseNotFound):
            village.download_material(erased_case, shared_material.sha256, back)


def test_a_village_outbox_uploads_its_scans_when_it_syncs(
    node: NodeProcess, tmp_path: Path
) -> None:
    from tests.e2e.test_adapters_support import connection_args, id_number, run_adapter

    scan_file = write(tmp_path, "身份证.jpg", scan(1_500_000, b"village scan"))
    room = ["--db", str(tmp_path / "outbox.sqlite3"), *connection_args(node, VILLAGE[0])]
    queued = run_adapter(
        "village", "submit", "--ref", "V-scan-1", "--item", "200202001000",
        "--competent-region", TOWNSHIP[1], "--name", "村民乙",
        "--id-number", id_number("43090219500101004"), "--phone", "13700000001",
        "--material", f"居民身份证={scan_file}", *room,
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    forwarded = run_adapter("village", "forward", "--once", *room)
    assert forwarded.returncode == 0, forwarded.stdout + forwarded.stderr
    assert "file 身份证.jpg: uploaded" in forwarded.stdout + forwarded.stderr
    status = json.loads(run_adapter("village", "status", "--json", *room).stdout)
    assert status["files"] == {"pending": 0, "uploaded": 1, "failed": 0}
    (submitted,) = status["commands"]
    digest = hashlib.sha256(scan_file.read_bytes()).hexdigest()
    with client(node, VILLAGE[0]) as village:
        target = tmp_path / "back.jpg"
        village.download_material(submitted["case_id"], digest, target)
    assert target.read_bytes() == scan_file.read_bytes()


def test_an_upload_the_hall_abandons_leaves_nothing(node: NodeProcess) -> None:
    from tests.e2e.test_adapters_support import wait_until

    data = scan(3 * MiB, b"abandoned")
    before = stored_rows(node)
    release = threading.Event()

    def messages() -> Iterator[materials_pb2.UploadChunk]:
        yield from upload_messages(hashlib.sha256(data).hexdigest(), len(data), data[: 2 * MiB])
        release.wait(30)  # the hall's software stops here, then hangs up

    hall = node.halls[VILLAGE[0]]
    with channel(node, hall.certificate, hall.private_key) as open_channel:
        call = materials_pb2_grpc.MaterialsStub(open_channel).Upload.future(messages(), timeout=60)
        assert wait_until(lambda: stored_rows(node)[1] == before[1] + 2, timeout=30)
        call.cancel()
        release.set()
    assert wait_until(lambda: stored_rows(node) == before, timeout=30)


def test_start_up_sweeps_what_a_crash_left_and_refuses_a_bad_federation(tmp_path: Path) -> None:
    fresh = NodeProcess(tmp_path / "node", node_name="sweeping")
    with sqlite3.connect(fresh.data_dir / "events.sqlite3") as db:
        db.execute(
            "INSERT INTO tongban_material_chunks (blob_id, seq, ciphertext, created_at) "
            "VALUES ('00ff', 0, x'00', 0)"
        )
    # A federation file that names this node's own CA for a peer: refused at start-up.
    other = NodeProcess(
        tmp_path / "other", node_name="other", extra_env={"TONGBAN_NODE_REGION": "61"}
    )
    entry = peer_entry(other, region="61", address="localhost:1")
    own_ca = str(fresh.pki / "ca.pem")
    bad = write_federation(
        tmp_path / "bad.toml", [entry.replace(str(other.pki / "ca.pem"), own_ca)]
    )
    fresh.env["TONGBAN_FEDERATION"] = str(bad)
    with pytest.raises(RuntimeError, match="peer region 61 is this node's own CA"):
        fresh.start()
    good = write_federation(tmp_path / "good.toml", [entry])
    fresh.env["TONGBAN_FEDERATION"] = str(good)
    with fresh:
        fresh.start()
        assert stored_rows(fresh) == (0, 0)


# ================================================================================ two nodes


class Federation:
    """湖南 (43) and 陕西 (61) serving, each naming the other; 湖北 (42) a trusted third CA."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hunan = NodeProcess(root / "hunan", node_name="hunan",
                                 extra_env={"TONGBAN_NODE_REGION": "43"})  # fmt: skip
        self.shaanxi = NodeProcess(root / "shaanxi", node_name="shaanxi",
                                   extra_env={"TONGBAN_NODE_REGION": "61"})  # fmt: skip
        # 湖北 is a peer 湖南 trusts too, but does not decide this case; it need not run.
        self.hubei = NodeProcess(root / "hubei", node_name="hubei",
                                 extra_env={"TONGBAN_NODE_REGION": "42"})  # fmt: skip
        for peer in (self.shaanxi, self.hubei, self.hunan):
            peer.run("pki", "peer-cert")

    def start(self) -> Federation:
        hunan_file = write_federation(
            self.root / "hunan.federation.toml",
            [peer_entry(self.shaanxi, region="61", address="localhost:1"),
             peer_entry(self.hubei, region="42", address="localhost:1")],
        )  # fmt: skip
        self.hunan.env["TONGBAN_FEDERATION"] = str(hunan_file)
        self.hunan.add_hall(*TOWNSHIP)
        self.hunan.start()
        shaanxi_file = write_federation(
            self.root / "shaanxi.federation.toml",
            [peer_entry(self.hunan, region="43", address=self.hunan.target)],
        )
        self.shaanxi.env["TONGBAN_FEDERATION"] = str(shaanxi_file)
        self.shaanxi.start()
        return self

    def stop(self) -> None:
        self.shaanxi.stop()
        self.hunan.stop()


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    started = Federation(tmp_path_factory.mktemp("federation"))
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture(scope="module")
def offsite_case(
    federation: Federation, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A case 湖南's township hall took in for 白河县 (陕西), with three materials: two uploaded
    (one of them is altered in 湖南's store later), one never uploaded."""
    files = tmp_path_factory.mktemp("offsite")
    contents = {
        "身份证": scan(2 * MiB + 11, b"id card"),
        "户口簿": scan(700_000, b"register"),
        "照片": scan(50_000, b"photo"),
    }
    with federation.hunan.client(TOWNSHIP[0], retry=RetryPolicy(attempts=1)) as hall:
        uploaded = {
            name: hall.upload_material(write(files, f"{name}.jpg", data), name=name)
            for name, data in contents.items()
            if name != "照片"
        }
        photo = common_pb2.Material(
            name="照片", sha256=hashlib.sha256(contents["照片"]).hexdigest(),
            media_type="image/jpeg", size=len(contents["照片"]),
        )  # fmt: skip
        materials = [uploaded["身份证"], uploaded["户口簿"], photo]
        reply = hall.send(
            "submit",
            idempotency_key=uuid.uuid4().hex,
            item_code=ID_CARD_RENEWAL,
            applicant=APPLICANT,
            competent_region=BAIHE_COUNTY,
            materials=materials,
        )
    return {"case_id": str(reply.case_id), "materials": materials, "contents": contents}


def fetch(node: NodeProcess, case_id: str, materials: list[common_pb2.Material]) -> Any:
    """``tongban materials fetch`` at ``node`` (a real process): its JSON report and exit code."""
    specs = [f"--material={m.name}={m.sha256}:{m.size}" for m in materials]
    result = subprocess.run(
        [*TONGBAN, "materials", "fetch", "--peer", "43", "--case", case_id, "--json", *specs],
        env=node.env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.stdout, result.stderr
    return json.loads(result.stdout), result.returncode


def alter_a_stored_byte(node: NodeProcess, sha256: str, *, reseal: bool) -> None:
    """Change one byte of a stored file in ``node``'s database (the node keeps running).

    ``reseal``: as an insider holding the node's key ring would, re-encrypt the altered chunk
    properly, so that only the digest check can notice; otherwise flip a ciphertext byte.
    """
    database = node.data_dir / "events.sqlite3"
    with sqlite3.connect(database) as db:
        blob, count, wrapped = db.execute(
            "SELECT blob_id, chunk_count, wrapped_key FROM tongban_materials WHERE sha256 = ?",
            (sha256,),
        ).fetchone()
        (stored,) = db.execute(
            "SELECT ciphertext FROM tongban_material_chunks WHERE blob_id = ? AND seq = 0",
            (blob,),
        ).fetchone()
        if reseal:
            ring, active = (node.data_dir / "secrets" / "cipher-keys").read_text().split()
            key = KeyRingCipher(parse_key_ring(ring), active).decrypt(bytes(wrapped))
            seal = ChunkSeal(key, bytes.fromhex(blob), count)
            plain = bytearray(seal.open(0, bytes(stored)) or b"")
            plain[1000] ^= 0x01
            altered = seal.seal(0, bytes(plain))
        else:
            changed = bytearray(stored)
            changed[1000] ^= 0x01
            altered = bytes(changed)
        db.execute(
            "UPDATE tongban_material_chunks SET ciphertext = ? WHERE blob_id = ? AND seq = 0",
            (altered, blob),
        )


def test_a_hall_certificate_from_a_peers_ca_is_refused(
    federation: Federation, offsite_case: dict[str, Any]
) -> None:
    # 陕西's CA — trusted by 湖南 for peer calls — issues a certificate naming 湖南's real hall.
    certificate, key = federation.shaanxi.issue("hall", TOWNSHIP[0])
    case_id, material = offsite_case["case_id"], offsite_case["materials"][0]
    with channel(federation.hunan, certificate, key) as forged:
        cases = case_exchange_pb2_grpc.CaseExchangeStub(forged)
        code, message = status(
            lambda: cases.GetCase(case_exchange_pb2.GetCaseRequest(case_id=case_id), timeout=10)
        )
        assert code == "UNAUTHENTICATED"
        assert "CA of peer region 61, which may issue only peer identities" in message
        download = materials_pb2_grpc.MaterialsStub(forged).Download
        code, _ = status(
            lambda: download(
                materials_pb2.DownloadRequest(case_id=case_id, sha256=material.sha256), timeout=10
            )
        )
        assert code == "UNAUTHENTICATED"
    # The genuine hall (湖南's own CA) reads the case.
    with federation.hunan.client(TOWNSHIP[0]) as genuine:
        assert genuine.get_case(case_id).case_id == case_id


def test_only_the_deciding_peer_fetches(
    federation: Federation, offsite_case: dict[str, Any]
) -> None:
    case_id, material = offsite_case["case_id"], offsite_case["materials"][1]
    request = materials_pb2.FetchRequest(case_id=case_id, sha256=material.sha256)

    def fetch_as(certificate: Path, key: Path) -> tuple[str, str]:
        with channel(federation.hunan, certificate, key) as open_channel:
            stub = materials_pb2_grpc.PeerMaterialsStub(open_channel)
            return status(lambda: stub.Fetch(request, timeout=10))

    def as_missing(message: str) -> str:
        return message.replace(material.sha256, "<digest>")

    # 湖北 is a trusted peer, but the case is decided in 陕西: nothing, as for a missing file.
    hubei = federation.hubei.pki
    code, message = fetch_as(hubei / "peer.pem", hubei / "peer.key")
    assert (code, as_missing(message)) == ("NOT_FOUND", "material <digest> not found")
    # A peer certificate of 湖南's own CA belongs to no federation peer.
    code, message = fetch_as(*federation.hunan.issue("peer", "self-issued-peer"))
    assert code == "PERMISSION_DENIED"
    # A hall of 湖南 is no peer.
    hall = federation.hunan.halls[TOWNSHIP[0]]
    assert fetch_as(hall.certificate, hall.private_key)[0] == "PERMISSION_DENIED"
    # A CA no one trusts cannot even connect.
    stranger = NodeProcess(federation.root / "stranger", node_name="stranger")
    code, _ = fetch_as(*stranger.issue("peer", "stranger"))
    assert code == "UNAVAILABLE"
    # 陕西, which decides the case, gets the file.
    shaanxi = federation.shaanxi.pki
    assert fetch_as(shaanxi / "peer.pem", shaanxi / "peer.key") == ("OK", "")


def test_the_competent_node_fetches_the_materials_and_names_what_is_wrong(
    federation: Federation, offsite_case: dict[str, Any]
) -> None:
    case_id = offsite_case["case_id"]
    id_card, register, photo = offsite_case["materials"]
    hunan, shaanxi = federation.hunan, federation.shaanxi

    # The register's stored bytes at 湖南 are altered (a flipped ciphertext byte); the photo was
    # never uploaded there.
    alter_a_stored_byte(hunan, register.sha256, reseal=False)
    report, code = fetch(shaanxi, case_id, offsite_case["materials"])
    assert code == 1
    assert report["fetched"] == [id_card.sha256]
    assert [(p["name"], p["sha256"]) for p in report["missing"]] == [("照片", photo.sha256)]
    assert [(p["name"], p["sha256"]) for p in report["altered"]] == [("户口簿", register.sha256)]
    assert "damaged copy" in report["altered"][0]["reason"]
    # 陕西 holds exactly the good file, with its bytes; nothing of the others.
    files, _chunks = stored_rows(shaanxi)
    assert files == 1
    with sqlite3.connect(shaanxi.data_dir / "events.sqlite3") as db:
        held = {row[0] for row in db.execute("SELECT sha256 FROM tongban_materials")}
        holders = {row[0] for row in db.execute("SELECT holder FROM tongban_material_holders")}
    assert held == {id_card.sha256}
    assert holders == {f"case:{case_id}"}

    # Fetching again skips what is held, and names the same problems.
    report, code = fetch(shaanxi, case_id, offsite_case["materials"])
    assert (report["fetched"], report["present"], code) == ([], [id_card.sha256], 1)

    # The hall uploads the photo after all: the next fetch gets it. The damaged register stays
    # damaged at 湖南 (a file held is never overwritten) and stays named.
    with hunan.client(TOWNSHIP[0]) as hall:
        hall.upload_material(write(federation.root, "照片.jpg", offsite_case["contents"]["照片"]))
    report, code = fetch(shaanxi, case_id, offsite_case["materials"])
    assert report["fetched"] == [photo.sha256]
    assert [p["sha256"] for p in report["altered"]] == [register.sha256]
    assert report["missing"] == []


def test_bytes_altered_behind_the_encryption_are_named_altered(
    federation: Federation, tmp_path: Path
) -> None:
    # An insider at 湖南 with the key ring re-encrypts an altered chunk: the encryption is
    # intact, only the digest shows it. 湖南 stops the stream (DATA_LOSS) and 陕西 stores nothing.
    data = scan(MiB + 5, b"resealed")
    hunan, shaanxi = federation.hunan, federation.shaanxi
    with hunan.client(TOWNSHIP[0], retry=RetryPolicy(attempts=1)) as hall:
        material = hall.upload_material(write(tmp_path, "营业执照.pdf", data))
        case_id = str(
            hall.send(
                "submit",
                idempotency_key=uuid.uuid4().hex,
                item_code=ID_CARD_RENEWAL,
                applicant=APPLICANT,
                competent_region=BAIHE_COUNTY,
                materials=[material],
            ).case_id
        )
        alter_a_stored_byte(hunan, material.sha256, reseal=True)
        # The node's own hall gets a DATA_LOSS too, never the altered bytes as good ones.
        with pytest.raises(NodeRefused) as broken:
            hall.download_material(case_id, material.sha256, tmp_path / "out.pdf")
        assert broken.value.code is grpc.StatusCode.DATA_LOSS
        assert not (tmp_path / "out.pdf").exists()
    report, code = fetch(shaanxi, case_id, [material])
    assert code == 1
    assert [p["sha256"] for p in report["altered"]] == [material.sha256]
    with sqlite3.connect(shaanxi.data_dir / "events.sqlite3") as db:
        held = {row[0] for row in db.execute("SELECT sha256 FROM tongban_materials")}
    assert material.sha256 not in held


def test_a_peer_certificate_is_no_hall(federation: Federation) -> None:
    shaanxi = federation.shaanxi.pki
    with channel(federation.hunan, shaanxi / "peer.pem", shaanxi / "peer.key") as peer:
        stub = materials_pb2_grpc.MaterialsStub(peer)
        data = b"x" * 10
        code, _ = status(
            lambda: stub.Upload(upload_messages(hashlib.sha256(data).hexdigest(), 10, data))
        )
        assert code == "PERMISSION_DENIED"

"""A node as an operator runs it (docs/operations.md): several serving processes on one port,
start-up that fails loudly, capped streams that never hold a worker, metrics, structured logs,
and a store outage answered fast and recovered from without a restart."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_reflection.v1alpha import reflection_pb2
from tongban.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    case_exchange_pb2,
    case_exchange_pb2_grpc,
    common_pb2,
)

from hub.bootstrap import public_key_b64
from hub.domain.values import id_number_with_check
from hub.serving import _stop
from tests.harness.availability import service_unavailable
from tests.harness.errors import ServiceUnavailable
from tests.harness.federation import peer_entry, wait_for, write_federation
from tests.harness.node import TONGBAN, NodeProcess
from tests.harness.processes import command_line

pytestmark = pytest.mark.e2e

APPLICANT = common_pb2.Applicant(
    name="运维测试", id_number=id_number_with_check("43090219700101003"), phone="13800001111"
)
VILLAGE = ("hn-ops-village", "430902104201")
MATERIAL = common_pb2.Material(
    name="身份证", sha256=hashlib.sha256(b"i").hexdigest(), media_type="image/png", size=9
)
ROOT = Path(__file__).resolve().parents[2]


def _channel(node: NodeProcess, role: str, name: str) -> grpc.Channel:
    if role == "hall":
        files = node.halls[name]
        certificate, key = files.certificate, files.private_key
    elif (node.directory / "certs" / f"{name}.pem").exists():
        certificate, key = (
            node.directory / "certs" / f"{name}.pem",
            node.directory / "certs" / f"{name}.key",
        )
    else:
        certificate, key = node.issue(role, name)
    credentials = grpc.ssl_channel_credentials(
        (node.pki / "ca.pem").read_bytes(), key.read_bytes(), certificate.read_bytes()
    )
    return grpc.secure_channel(node.target, credentials)


def _signed_submit(node: NodeProcess, key: str) -> case_exchange_pb2.SignedCommand:
    from adapters.sdk import sign_command

    return sign_command(
        node.credentials(VILLAGE[0]),
        "submit",
        case_exchange_pb2.SubmitCase(
            item_code="200202001000",
            competent_region="430902104000",
            materials=[
                common_pb2.Material(
                    name="身份证",
                    sha256=hashlib.sha256(b"i").hexdigest(),
                    media_type="image/png",
                    size=9,
                )
            ],
        ),
        idempotency_key=key,
        operator="op",
        applicant=APPLICANT,
    )


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    directory = tmp_path_factory.mktemp("ops-node")
    with NodeProcess(
        directory, extra_env={"TONGBAN_MAX_STREAMS": "2", "TONGBAN_WORKERS": "2"}
    ) as process:
        process.add_hall(*VILLAGE)
        process.start()
        yield process


def test_several_serving_processes_share_one_port(node: NodeProcess) -> None:
    # Below the supervisor (through the fork server): the follower, the two serving processes
    # and the web process, each named in `ps` with the node's log origin.
    titles = sorted(command_line(pid) for pid in node.tree()[1:])
    node_processes = [title for title in titles if title.startswith("tongban ")]
    assert node_processes == [
        f"tongban {name} {node.origin}" for name in ("follower", "server-0", "server-1", "web")
    ], titles
    serving = [line for line in node.log().splitlines() if "serving on port" in line]
    assert len(serving) == 2
    # Both answer on the one port: many new connections all succeed.
    for _ in range(6):
        with _channel(node, "auditor", "ops-auditor") as channel:
            stub = case_exchange_pb2_grpc.CaseExchangeStub(channel)
            assert stub.ListItems(case_exchange_pb2.ListItemsRequest(), timeout=10).items


def test_streams_are_capped_and_never_hold_a_worker(node: NodeProcess) -> None:
    """With 2 unary workers and at most 2 streams per process: 2 open streams leave the workers
    free (6 unary calls at once are all answered), and a third stream is RESOURCE_EXHAUSTED.
    (One channel is one connection, so all its calls reach the same serving process.)"""
    with _channel(node, "auditor", "ops-streams") as channel:
        audit = audit_pb2_grpc.AuditStub(channel)
        streams = [
            audit.StreamEntries(audit_pb2.StreamEntriesRequest(start=0), timeout=60)
            for _ in range(2)
        ]
        try:
            for stream in streams:
                next(stream)  # open, and holding its place
            stub = case_exchange_pb2_grpc.CaseExchangeStub(channel)
            results: list[Any] = []

            def list_items() -> None:
                results.append(stub.ListItems(case_exchange_pb2.ListItemsRequest(), timeout=10))

            threads = [threading.Thread(target=list_items) for _ in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=20)
            assert len(results) == 6
            third = audit.StreamEntries(audit_pb2.StreamEntriesRequest(start=0), timeout=10)
            with pytest.raises(grpc.RpcError) as caught:
                next(third)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            for stream in streams:
                stream.cancel()


def test_reflection_v1_and_v1alpha_are_served(node: NodeProcess) -> None:
    with _channel(node, "auditor", "ops-reflection") as channel:
        for service in ("grpc.reflection.v1.ServerReflection",
                        "grpc.reflection.v1alpha.ServerReflection"):  # fmt: skip
            call = channel.stream_stream(
                f"/{service}/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            (response,) = list(call(iter([request]), timeout=10))
            names = {s.name for s in response.list_services_response.service}
            assert {"tongban.v1.CaseExchange", "tongban.v1.Audit", service} <= names


def _metrics(node: NodeProcess) -> str:
    with urllib.request.urlopen(node.metrics_url, timeout=10) as response:
        return str(response.read().decode())


def _submits_counted(node: NodeProcess) -> float:
    found = re.search(r'^tongban_commands_total\{action="submit"\} (\S+)$', _metrics(node), re.M)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_calls_and_report_the_integrator(node: NodeProcess) -> None:
    with _channel(node, "hall", VILLAGE[0]) as channel:
        stub = case_exchange_pb2_grpc.CaseExchangeStub(channel)
        before = _submits_counted(node)
        signed = _signed_submit(node, f"ops-metrics-{uuid.uuid4().hex}")
        first = stub.Submit(signed, timeout=60)
        again = stub.Submit(signed, timeout=60)  # the same bytes: the stored result, replayed
        assert again.case_id == first.case_id
        assert _submits_counted(node) == before + 1  # first results only
        with pytest.raises(grpc.RpcError) as refused:
            stub.Submit(case_exchange_pb2.SignedCommand(command=b"\xff"), timeout=60)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    text = _metrics(node)
    assert 'tongban_rpcs_total{code="OK",method="CaseExchange/Submit"}' in text
    assert 'tongban_rpcs_total{code="INVALID_ARGUMENT",method="CaseExchange/Submit"}' in text
    assert 'tongban_rpc_seconds_bucket{le="0.1",method="CaseExchange/Submit"}' in text
    assert 'tongban_commands_total{action="submit"}' in text
    assert 'tongban_follower_lag_events{follower="integrator"}' in text
    assert 'tongban_follower_failed{follower="integrator"} 0.0' in text
    assert "tongban_ledger_leaves" in text
    assert "tongban_open_streams" in text
    assert "tongban_commit_queue 0.0" in text  # nothing waits once the call was answered


def test_logs_are_json_with_one_line_per_command_and_no_personal_data(node: NodeProcess) -> None:
    key = f"ops-logs-{uuid.uuid4().hex}"
    signed = _signed_submit(node, key)
    with _channel(node, "hall", VILLAGE[0]) as channel:
        stub = case_exchange_pb2_grpc.CaseExchangeStub(channel)
        reply = stub.Submit(signed, metadata=(("x-request-id", "req-ops-0001"),), timeout=10)
        stub.Submit(signed, timeout=10)  # again, without a request id: replayed

    def mine() -> list[dict[str, Any]]:
        records = [json.loads(line) for line in node.log().splitlines() if line.startswith("{")]
        return [
            r
            for r in records
            if r.get("message") == "command" and r.get("aggregate_id") == reply.case_id
        ]

    first, again = wait_for(lambda: len(mine()) == 2 and mine(), "both lines logged", [node])
    assert first["action"] == "submit" and first["signer"] == VILLAGE[0]
    assert first["request_id"] == "req-ops-0001"
    assert {"time", "level", "logger"} <= set(first)
    assert (first["version"], first["replayed"]) == (1, False)
    assert (again["version"], again["replayed"]) == (1, True)
    assert again["request_id"] and again["request_id"] != "req-ops-0001"  # a fresh one
    log = node.log()
    for value in (APPLICANT.name, APPLICANT.id_number, APPLICANT.phone):
        assert value not in log


def _serve(
    data: Path, *args: str, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}
    env.update({"TONGBAN_DATA_DIR": str(data), **(extra or {})})
    return subprocess.run(
        [*TONGBAN, "serve", "--listen", "127.0.0.1:0", "--processes", "1", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _tongban(data: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}
    env["TONGBAN_DATA_DIR"] = str(data)
    subprocess.run([*TONGBAN, *args], env=env, cwd=ROOT, check=True, capture_output=True)


def test_fatal_start_up_errors_exit_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "node"
    _tongban(data, "init")
    _tongban(data, "pki", "init", "--node", "ops-node")

    def fails(result: subprocess.CompletedProcess[str], says: str) -> None:
        assert result.returncode != 0, result.stdout
        assert "Traceback" not in result.stderr, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("tongban:") and says in last, result.stderr

    # Missing TLS files.
    shutil.move(data / "pki" / "node.key", tmp_path / "node.key")
    began = time.monotonic()
    fails(_serve(data), "node.key")
    shutil.move(tmp_path / "node.key", data / "pki" / "node.key")
    # The port is in use.
    with socket_bound() as port:
        fails(_serve(data, "--listen", f"127.0.0.1:{port}"), "cannot listen")
    # A mistyped setting.
    fails(_serve(data, extra={"TONGBAN_LISTNE": "x"}), "unknown setting TONGBAN_LISTNE")
    # The store is unreachable.
    fails(
        _serve(data, extra={"TONGBAN_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
                            "TONGBAN_STORAGE_TIMEOUT_S": "2"}),
        "unavailable",
    )  # fmt: skip
    # Another node's keys against this store.
    other = tmp_path / "other"
    _tongban(other, "init")
    _tongban(other, "pki", "init", "--node", "other-node")
    with (
        sqlite3.connect(data / "events.sqlite3") as source,
        sqlite3.connect(other / "events.sqlite3") as target,
    ):
        source.backup(target)
    fails(_serve(other), "different nodes")
    assert time.monotonic() - began < 60
    # The store restored from a backup older than the last checkpoint this node signed (its
    # head file, kept in the data directory, names a checkpoint the restored log is behind).
    backup = tmp_path / "backup.sqlite3"
    with sqlite3.connect(data / "events.sqlite3") as live, sqlite3.connect(backup) as copy:
        live.backup(copy)
    public = public_key_b64(Ed25519PrivateKey.generate())
    _tongban(data, "hall", "register", "--hall-id", "hn-ops-hall", "--name", "运维大厅",
             "--region", "430902000000", "--window", "综合窗口", "--public-key", public)  # fmt: skip
    _tongban(data, "ledger", "integrate")  # signs a checkpoint over the registration
    with sqlite3.connect(backup) as copy, sqlite3.connect(data / "events.sqlite3") as live:
        copy.backup(live)
    fails(_serve(data), "restored from an older backup")


def _unavailable(call: Any) -> bool:
    """Run ``call``; True if it was answered UNAVAILABLE (any other error is raised)."""
    try:
        call()
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return True
    return False


class socket_bound:  # noqa: N801 - used as a context manager
    """A port held by another (non-sharing) socket."""

    def __enter__(self) -> int:
        import socket

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen()
        return int(self.socket.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.socket.close()


@pytest.fixture
def outage_cluster() -> Iterator[Any]:
    """A PostgreSQL of this test's own, which it may stop and start."""
    from tests.harness.postgres import PostgresCluster

    try:
        cluster = PostgresCluster().start()
    except ServiceUnavailable as error:
        service_unavailable(error)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_store_that_goes_away_gives_unavailable_fast_and_the_node_recovers(
    tmp_path: Path, outage_cluster: Any
) -> None:
    dsn = outage_cluster.dsn
    with NodeProcess(
        tmp_path / "node", database_url=dsn, extra_env={"TONGBAN_STORAGE_TIMEOUT_S": "2"},
        processes=1,
    ) as node:  # fmt: skip
        node.add_hall(*VILLAGE)
        node.start()
        with _channel(node, "hall", VILLAGE[0]) as channel:
            stub = case_exchange_pb2_grpc.CaseExchangeStub(channel)
            stub.Submit(_signed_submit(node, "ops-before-outage"), timeout=10)
            outage_cluster.halt()
            codes, took = [], []
            for number in range(5):
                began = time.monotonic()
                with pytest.raises(grpc.RpcError) as caught:
                    stub.Submit(_signed_submit(node, f"ops-during-{number}"), timeout=30)
                took.append(time.monotonic() - began)
                codes.append(caught.value.code())
            assert set(codes) == {grpc.StatusCode.UNAVAILABLE}
            assert took[0] < 10  # bounded by the storage timeout (2 s) and the retries
            assert max(took[1:]) < 1  # the next ones at once, while the store stays down
            outage_cluster.resume()
            # The node recovers by itself: a probe gets through within a second or so. The
            # client retries UNAVAILABLE, as the SDK does, with the same signed bytes.
            after = _signed_submit(node, "ops-after-outage")
            # Generous: on a loaded 2-core machine the restarted store itself takes a while.
            deadline = time.monotonic() + 90
            while _unavailable(lambda: stub.Submit(after, timeout=10)):
                assert time.monotonic() < deadline, "the node did not recover"
                time.sleep(0.2)
        # Nothing of the refused commands was stored; before and after were.
        with psycopg.connect(dsn) as conn:
            keys = {
                json.loads(bytes(row[0]))["key"]
                for row in conn.execute(
                    "SELECT state FROM tongban_events WHERE topic LIKE %s",
                    ("%CommandRecord.Recorded",),
                )
            }
        assert {"ops-before-outage", "ops-after-outage"} <= keys
        assert not any(key.startswith("ops-during") for key in keys)


def test_a_node_whose_broker_is_down_stops_by_itself_when_asked(tmp_path: Path) -> None:
    """While the broker cannot be reached, the relay's Kafka clients hand control back to the
    relay's loops every couple of seconds (each says the broker is unreachable and tries again),
    so SIGTERM stops every process of the node by itself: none is killed at the deadline."""
    peer = NodeProcess(tmp_path / "61", extra_env={"TONGBAN_NODE_REGION": "61"}, processes=1)
    node = NodeProcess(
        tmp_path / "43",
        extra_env={
            "TONGBAN_NODE_REGION": "43",
            "TONGBAN_FEDERATION": str(tmp_path / "43" / "federation.toml"),
        },
        processes=1,
    )
    # Port 9 (discard) on loopback: nothing listens there, every connection is refused.
    write_federation(
        tmp_path / "43" / "federation.toml",
        [peer_entry(peer, region="61", address="localhost:1")],
        bootstrap="127.0.0.1:9",
    )
    unreachable = "broker unreachable, the inbox waits"

    def connecting_again() -> bool:
        # The consumer loop gave up once, and its next client is connecting now (kafka-python
        # says so): the stop below comes while a client waits for the broker.
        log = node.log()
        return unreachable in log and "Attempting bootstrap" in log.rsplit(unreachable, 1)[1]

    with node:
        node.start()
        wait_for(connecting_again, "the relay's consumer tried the broker again", [node])
        # (A federation node has a witness process too, named in `ps` like the others.)
        assert f"tongban witness {node.origin}" in {command_line(pid) for pid in node.tree()}
        node.stop()
    log = node.log()
    assert "did not stop within" not in log, log[-3000:]
    assert node.returncode == 0, log[-3000:]


def test_a_stopped_node_leaves_nothing_in_the_temporary_directory(tmp_path: Path) -> None:
    """``tongban serve`` keeps its processes' metric files in a temporary directory of its own
    while it runs, and removes it when it stops (a directory per run used to pile up in /tmp)."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    with NodeProcess(tmp_path / "node", extra_env={"TMPDIR": str(temporary)}, processes=1) as node:
        node.start()
        with urllib.request.urlopen(node.metrics_url, timeout=10) as response:
            assert b"tongban_ledger_leaves" in response.read()  # read from those files
        # (Besides multiprocessing's own pymp-* directory, for its fork server's socket.)
        assert [p.name[:16] for p in temporary.glob("tongban-*")] == ["tongban-metrics-"]
        node.stop()
    assert node.returncode == 0
    assert list(temporary.iterdir()) == []


def test_a_node_starts_when_its_temporary_directory_is_too_deep_for_a_unix_socket(
    tmp_path: Path,
) -> None:
    """The fork server's socket lives in the temporary directory, and a Unix socket's path is at
    most 107 bytes: with a deeper ``$TMPDIR`` the node says so and uses /tmp instead of failing
    to start with "af_unix path too long" (the tests under pytest-xdist have such paths)."""
    temporary = tmp_path / ("t" * max(1, 100 - len(str(tmp_path))))
    temporary.mkdir()
    assert len(str(temporary)) >= 100
    with NodeProcess(tmp_path / "node", extra_env={"TMPDIR": str(temporary)}, processes=1) as node:
        node.start()
        with urllib.request.urlopen(node.metrics_url, timeout=10) as response:
            assert b"tongban_ledger_leaves" in response.read()
        node.stop()
    assert node.returncode == 0
    assert "too deep for the fork server's socket; using /tmp" in node.log()


def test_a_killed_supervisor_leaves_no_process_behind(tmp_path: Path) -> None:
    """SIGKILL to ``tongban serve`` (a crash, or an operator's kill -9): the processes it
    started, forked by its fork server, see their lifeline close and exit by themselves, so a
    restarted node never runs beside a follower or a server of the old one."""
    with NodeProcess(tmp_path / "node", processes=1) as node:
        node.start()
        started = node.tree()
        assert len(started) >= 4  # the supervisor, the fork server, a follower, a server, ...
        node.kill_supervisor()
    wait_for(
        lambda: not any(_running(pid) for pid in started),
        "every process of the killed node exited",
        [node],
        timeout=30,
    )


def test_a_node_whose_process_dies_stops_and_exits_non_zero(tmp_path: Path) -> None:
    """One of the node's processes dies (here the follower, killed): the supervisor stops the
    others and exits 1, naming it, so systemd or another supervisor restarts the node whole."""
    with NodeProcess(tmp_path / "node", processes=1) as node:
        node.start()
        titles = {command_line(pid): pid for pid in node.tree()}
        follower = titles[f"tongban follower {node.origin}"]
        os.kill(follower, signal.SIGKILL)
        assert node.wait(timeout=60) == 1
    assert f"follower (pid {follower}) exited with -9: stopping the node" in node.log()


def test_sigint_stops_a_node_as_sigterm_does(tmp_path: Path) -> None:
    """Ctrl-C at a terminal: every process stops by itself and the exit code is 0."""
    with NodeProcess(tmp_path / "node", processes=1) as node:
        node.start()
        started = node.tree()
        assert node.pid is not None
        os.kill(node.pid, signal.SIGINT)
        assert node.wait(timeout=60) == 0
    # (The fork server and multiprocessing's resource tracker follow the supervisor out.)
    wait_for(lambda: not any(_running(pid) for pid in started), "every process exited", [node],
             timeout=30)  # fmt: skip
    assert "did not stop within" not in node.log()


def test_an_insecure_node_speaks_plaintext_and_still_checks_every_signature(
    tmp_path: Path,
) -> None:
    """``tongban serve --insecure`` (local demos): no TLS on gRPC or the web pages, but every
    command is still signed by a registered hall's key and checked. (Its log is for a person
    here: ``TONGBAN_LOG_FORMAT=text``.)"""
    text_log = {"TONGBAN_LOG_FORMAT": "text"}
    with NodeProcess(tmp_path / "node", processes=1, extra_env=text_log) as node:
        node.add_hall(*VILLAGE)
        # Without TLS the node knows no caller: it refuses to serve anywhere but loopback.
        for listen, web in (("0.0.0.0:0", "127.0.0.1:0"), ("127.0.0.1:0", "0.0.0.0:0")):
            refused = subprocess.run(
                [*TONGBAN, "serve", "--insecure", "--listen", listen, "--web", web],
                env=node.env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert refused.returncode != 0
            assert "serves only on a loopback address" in refused.stderr, refused.stderr
        node.start("--insecure")
        assert node.web_url.startswith("http://")
        with grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
            stub = case_exchange_pb2_grpc.CaseExchangeStub(channel)
            answer = stub.Submit(_signed_submit(node, "ops-insecure-1"), timeout=30)
            assert answer.case_id
            forged = _signed_submit(node, "ops-insecure-2")
            forged.signature = bytes(64)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Submit(forged, timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with urllib.request.urlopen(node.web_url, timeout=10) as page:
            assert page.status == 200
    lines = node.log().splitlines()
    assert any("serving on port" in line for line in lines)
    assert not any(line.startswith("{") for line in lines)  # no JSON: lines for a person


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent has not asked yet


def _ignore_sigterm(ready: Any) -> None:  # runs in a spawned child
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.send("ready")
    while True:
        time.sleep(60)


def test_a_process_that_ignores_sigterm_is_killed_at_the_deadline_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The supervisor's stop: a child still running ``grace`` + 5 s after SIGTERM is killed,
    and the log names it (the line the test above looks for, never found there)."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_ignore_sigterm, args=(theirs,), name="stubborn")
    child.start()
    try:
        assert ours.poll(60) and ours.recv() == "ready"  # its SIGTERM handler is in place
        with caplog.at_level("WARNING", logger="tongban.serve"):
            _stop([("stubborn", child, ours)], grace=0.0)
        assert not child.is_alive()
        assert child.exitcode == -signal.SIGKILL
        assert f"stubborn (pid {child.pid}) did not stop within 5 s of SIGTERM: killed" in (
            caplog.text
        )
    finally:
        if child.is_alive():
            child.kill()
            child.join()

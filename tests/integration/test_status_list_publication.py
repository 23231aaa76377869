"""Status lists in the log and over HTTP, on a real node store and a real web server.

Each published status list is recorded as a node-authored event; the integrity gate and the
auditor recompute its bitstrings from the log up to its ``log_size`` and refuse a list that
hides a revocation. The node's web server (uvicorn) serves every verifier the same signed list
with cache headers from its time to live, and the trust bundle; httpx fetches them.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gzip
import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from hub.bootstrap import build_certificate_feed, load_certificate_issuer
from hub.certificate_log import publish_status_list
from hub.certificates import TrustBundle, Verdict, check_status, verify_certificate
from hub.domain.case import Case
from hub.domain.status_lists import (
    PUBLISHED_TOPIC,
    StatusListPublication,
    bits_digest,
    digest_of_log,
)
from hub.domain.values import Actor
from hub.errors import IntegrityViolation
from hub.integrity.audit import audit_store
from hub.integrity.store import ReadOnlyStore
from hub.projections.queries import Names
from hub.projections.store import open_projection_store
from hub.settings import Settings
from hub.web.app import WebContext
from hub.web.certificates import STATUS_LIST_PATH, TRUST_BUNDLE_PATH
from hub.web.server import bind, serve_web, web_server
from ledger import Authority, Leaf, Verifier
from tests.harness.inprocess import InProcessNode
from tests.harness.tamper import integrate_without_the_gate

pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")

TOWNSHIP = "430902104000"
ISSUER = "11430902MB0000001X"
TTL_S = 3600


@pytest.fixture
def node(tmp_path: Path) -> Iterator[InProcessNode]:
    settings = Settings(data_dir=tmp_path / "node", status_list_ttl_s=TTL_S)
    started = InProcessNode.start(settings)
    started.add_hall("t-hall", TOWNSHIP)
    yield started
    started.close()


def _issued(node: InProcessNode, key: str) -> str:
    hall = node.halls["t-hall"]
    case = str(node.submit(hall, key=key).case_id)
    for action, arguments in (
        ("accept", {}),
        ("start_handling", {}),
        ("decide", {"approved": True, "reason": "符合条件"}),
        ("conclude", {}),
        ("issue_certificate", {"type_code": "150001", "issuer_code": ISSUER,
                               "authority": "益阳市资阳区长春镇人民政府", "valid_until": ""}),
    ):  # fmt: skip
        node.run(hall, action, case_id=case, **arguments)
    return case


def _token(node: InProcessNode, case: str) -> str:
    from hub.certificates import claims_for, sign_certificate
    from hub.domain.case import Case

    history = node.app.case_history(UUID(case))
    event = [e for e in history if isinstance(e, Case.CertificateIssued)][-1]
    view = node.integrator().view
    leaf = view.read(lambda c: view.tables.leaf_for(c, UUID(case), event.originator_version))
    assert leaf is not None
    claims = claims_for(node.app.get_case(UUID(case)), event, leaf.index, node.settings.origin)
    return sign_certificate(claims, load_certificate_issuer(node.settings))


def _audit(node: InProcessNode) -> list[str]:
    verifier = Verifier.from_key((node.settings.data_dir / "log.vkey").read_text().strip())
    with ReadOnlyStore(sqlite_path=node.settings.sqlite_path) as store:
        report = audit_store(store, [verifier], origin=node.settings.origin)
    return [str(finding) for finding in report.findings]


def _publications(node: InProcessNode) -> list[tuple[int, Any]]:
    """The status-list publications in the log: (leaf index, event)."""
    view = node.integrator().view
    size = node.log_size()
    leaves = view.read(lambda c: view.tables.leaves(c, 0, size))
    found = []
    for leaf in leaves:
        if leaf.topic == PUBLISHED_TOPIC:
            assert leaf.authority is Authority.NODE
            found.append((leaf.index, node.app.repository.get(leaf.aggregate_id)))
    return found


@pytest.fixture
def web(node: InProcessNode) -> Iterator[str]:
    """The node's web application on a real uvicorn server; yields its base URL."""
    app = node.app
    store = open_projection_store(app)
    feed = build_certificate_feed(node.settings, app)
    assert feed is not None
    context = WebContext(
        store, Names(app.regions, app.catalogue), app.catalogue, node.settings.node_region,
        app.clock, certificates=feed,
    )  # fmt: skip
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    loop = asyncio.new_event_loop()
    stop, ready = asyncio.Event(), asyncio.Event()
    failure: list[BaseException] = []

    def run() -> None:
        async def main() -> None:
            await serve_web(web_server(context, None), sock, stop, ready)

        try:
            loop.run_until_complete(main())
        except BaseException as error:  # reported by the fixture, not lost in the thread
            failure.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started = threading.Event()
    loop.call_soon_threadsafe(lambda: asyncio.ensure_future(_set_when(ready, started)))
    assert started.wait(30), failure
    yield f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)
    sock.close()
    store.close()
    assert not failure, failure


async def _set_when(ready: asyncio.Event, started: threading.Event) -> None:
    await ready.wait()
    started.set()


def _decoded_bits(token: str) -> tuple[dict[str, Any], bytes, bytes]:
    payload = token.split(".")[1]
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))

    def bits(member: str) -> bytes:
        text = body[member]
        return gzip.decompress(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))

    return body, bits("revocation"), bits("suspension")


def test_the_web_server_serves_one_list_to_everyone_and_records_it_in_the_log(
    node: InProcessNode, web: str
) -> None:
    revoked, kept = _issued(node, "list-web-00001"), _issued(node, "list-web-00002")
    node.run(node.halls["t-hall"], "revoke_certificate", case_id=revoked, reason="撤销")
    node.integrator().catch_up()

    with httpx.Client(base_url=web) as client:
        first = client.get(STATUS_LIST_PATH)
        second = client.get(STATUS_LIST_PATH)
        bundle_response = client.get(TRUST_BUNDLE_PATH)
        # Herd privacy: every verifier gets the very same bytes.
        assert first.status_code == 200 and first.content == second.content
        assert first.headers["content-type"] == "application/jwt"
        cache = first.headers["cache-control"]
        assert cache.startswith("public, max-age=")
        max_age = int(cache.removeprefix("public, max-age="))
        assert 0 < max_age <= TTL_S // 2
        signed = parsedate_to_datetime(first.headers["last-modified"])
        expires = parsedate_to_datetime(first.headers["expires"])
        assert (expires - signed).total_seconds() == TTL_S // 2
        etag = first.headers["etag"]
        assert etag == f'"{hashlib.sha256(first.text.strip().encode()).hexdigest()}"'
        unchanged = client.get(STATUS_LIST_PATH, headers={"If-None-Match": etag})
        assert unchanged.status_code == 304 and unchanged.content == b""
        assert bundle_response.status_code == 200
        assert bundle_response.headers["cache-control"] == "no-cache"
        assert bundle_response.json()["logs"] == [{
            "origin": node.settings.origin,
            "log_keys": [(node.settings.data_dir / "log.vkey").read_text().strip()],
            "witness_keys": [], "witness_k": 0,  # no federation file: no witnesses
        }]  # fmt: skip

    # A verifier with what it fetched: the list reads the certificates' entries.
    bundle = TrustBundle.from_json(bundle_response.text)
    now = datetime.now(UTC)
    for case, verdict in ((revoked, Verdict.REVOKED), (kept, Verdict.VALID)):
        result = check_status(
            verify_certificate(_token(node, case), bundle, now=now), first.text, bundle, now=now
        )
        assert result.verdict is verdict, result.reason

    # The list's publication is a node-authored leaf; the auditor accepts it, and anyone can
    # match the served list to it: the token's digest and the bitstrings' digest.
    node.integrator().catch_up()
    ((index, published),) = _publications(node)
    body, revocation, suspension = _decoded_bits(first.text)
    assert published.token_digest == hashlib.sha256(first.text.strip().encode()).hexdigest()
    assert published.bits_digest == bits_digest(body["size"], revocation, suspension)
    assert published.log_size == body["log_size"] <= index
    assert (published.valid_from, published.valid_until) == (
        body["valid_from"], body["valid_until"],
    )  # fmt: skip
    assert _audit(node) == []


def test_a_list_that_hides_a_revocation_is_refused_by_the_gate(node: InProcessNode) -> None:
    case = _issued(node, "list-hide-0001")
    node.run(node.halls["t-hall"], "revoke_certificate", case_id=case, reason="撤销")
    size = node.integrator().catch_up()
    key = load_certificate_issuer(node.settings)
    # The digest of a list of the same log without the revocation.
    hidden = StatusListPublication.publish(
        origin=node.settings.origin, log_size=size,
        bits_digest=digest_of_log(size, frozenset(), frozenset()), token_digest="0" * 64,
        kid=key.kid, valid_from=1, valid_until=2,
    )  # fmt: skip
    node.app.save_records(hidden)
    with pytest.raises(IntegrityViolation, match="content mismatch.*status list"):
        node.integrator().catch_up()


def test_a_list_of_leaves_not_yet_in_the_log_is_refused_by_the_gate(node: InProcessNode) -> None:
    size = node.integrator().catch_up()
    ahead = StatusListPublication.publish(
        origin=node.settings.origin, log_size=size + 5,
        bits_digest=digest_of_log(size + 5, frozenset(), frozenset()), token_digest="1" * 64,
        kid="k", valid_from=1, valid_until=2,
    )  # fmt: skip
    node.app.save_records(ahead)
    with pytest.raises(IntegrityViolation, match=f"status list of {size + 5} leaves recorded"):
        node.integrator().catch_up()


def test_a_list_of_another_log_is_refused_by_the_gate_and_named_by_the_auditor(
    node: InProcessNode,
) -> None:
    """A status list recorded in this log must be this log's: one that names another origin
    (another node's list, copied in) is refused by the gate; logged past the gate with the log
    key, the auditor names it."""
    size = node.integrator().catch_up()
    foreign = StatusListPublication.publish(
        origin="tongban/99", log_size=size,
        bits_digest=digest_of_log(size, frozenset(), frozenset()), token_digest="4" * 64,
        kid="k", valid_from=1, valid_until=2,
    )  # fmt: skip
    node.app.save_records(foreign)
    with pytest.raises(IntegrityViolation, match="a status list of tongban/99"):
        node.integrator().catch_up()
    integrate_without_the_gate(node.integrator())
    assert _audit(node) == [f"index {size}: unauthorised event: a status list of tongban/99"]


def test_a_status_list_leaf_over_another_event_is_named_by_the_auditor(
    node: InProcessNode,
) -> None:
    """A rogue operator with the log key logs an event no command produced (a withdrawal)
    under a leaf that claims a status list, an act of the node's own that needs no signed
    command: the auditor names the leaf's topic and that its event is no status list."""
    hall = node.halls["t-hall"]
    case_id = node.submit(hall, key="list-mask-0001").case_id
    size = node.integrator().catch_up()
    case = node.app.get_case(case_id)
    actor = Actor(hall.hall_id, hall.operator, hall.region)
    case.trigger_event(Case.Withdrawn, actor=actor, reason="never asked for")
    node.app.save(case)

    def as_a_status_list(_index: int, _notification: Notification, leaf: Leaf) -> Leaf:
        return dataclasses.replace(leaf, topic=PUBLISHED_TOPIC)

    integrate_without_the_gate(node.integrator(), as_a_status_list)
    withdrawn = get_topic(Case.Withdrawn)
    assert sorted(_audit(node)) == [
        f"index {size}: topic: stored {withdrawn}, logged {PUBLISHED_TOPIC}",
        f"index {size}: unauthorised event: {PUBLISHED_TOPIC} is not a status list",
    ]


def test_a_hiding_list_past_the_gate_is_named_by_the_auditor(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = _issued(node, "list-audit-001")
    node.run(node.halls["t-hall"], "revoke_certificate", case_id=case, reason="撤销")
    node.integrator().catch_up()
    key = load_certificate_issuer(node.settings)
    genuine = publish_status_list(
        node.app, node.integrator().view, key, now=datetime.now(UTC), ttl_s=TTL_S
    )
    assert genuine.revoked == 1
    size = node.integrator().catch_up()  # the genuine list passes the genuine gate
    hidden = digest_of_log(size, frozenset(), frozenset())
    hiding = StatusListPublication.publish(
        origin=node.settings.origin, log_size=size, bits_digest=hidden,
        token_digest="2" * 64, kid=key.kid, valid_from=1, valid_until=2,
    )  # fmt: skip
    node.app.save_records(hiding)
    # A node whose gate skips the recomputation (it believes whatever digest it is given).
    with monkeypatch.context() as patched:
        patched.setattr("hub.integrity.binding.digest_of_log", lambda *args: hidden)
        node.integrator().catch_up()
    findings = _audit(node)
    # The auditor, with the genuine recomputation, names exactly the hiding list.
    assert len(findings) == 1, findings
    assert "content mismatch" in findings[0] and f"status list of {size} leaves" in findings[0]


def test_the_next_list_after_a_rotation_is_signed_with_the_new_key(node: InProcessNode) -> None:
    from datetime import timedelta

    from hub.bootstrap import NodePaths, rotate_certificate_issuer

    moments = [datetime.now(UTC)]
    feed = build_certificate_feed(node.settings, node.app, clock=lambda: moments[-1])
    assert feed is not None
    before, _ = feed.current()
    rotate_certificate_issuer(node.settings)
    moments.append(moments[0] + timedelta(seconds=TTL_S // 2))  # the next list is due
    after, _ = feed.current()

    def kid(token: str) -> str:
        header = token.split(".", maxsplit=1)[0]
        return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])

    assert kid(after.token) == load_certificate_issuer(node.settings).kid != kid(before.token)
    # A node without an issuer key serves no list.
    NodePaths(node.settings.data_dir).certificate_issuer_key.unlink()
    assert build_certificate_feed(node.settings, node.app) is None


def test_the_cli_records_each_list_it_writes_and_nothing_when_it_writes_none(
    node: InProcessNode, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    def tongban(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}
        env["TONGBAN_DATA_DIR"] = str(node.settings.data_dir)
        return subprocess.run(
            [sys.executable, "-m", "hub.cli", *args], env=env, capture_output=True, text=True,
            check=False, cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip

    node.integrator().catch_up()
    listed = tongban("cert", "status-list", "--out", str(tmp_path / "status.jws"))
    assert listed.returncode == 0, listed.stderr
    assert "goes into the log" in listed.stdout
    node.integrator().catch_up()
    ((_, published),) = _publications(node)
    token = (tmp_path / "status.jws").read_text().strip()
    assert published.token_digest == hashlib.sha256(token.encode()).hexdigest()
    # An existing file is never overwritten, and then no list is recorded either.
    again = tongban("cert", "status-list", "--out", str(tmp_path / "status.jws"))
    assert again.returncode == 2 and "never overwritten" in again.stderr
    node.integrator().catch_up()
    assert len(_publications(node)) == 1
    assert (tmp_path / "status.jws").read_text().strip() == token
    assert _audit(node) == []


def test_the_same_list_published_twice_is_one_record(node: InProcessNode) -> None:
    node.integrator().catch_up()
    key, now = load_certificate_issuer(node.settings), datetime.now(UTC)
    view = node.integrator().view
    first = publish_status_list(node.app, view, key, now=now, ttl_s=TTL_S)
    again = publish_status_list(node.app, view, key, now=now, ttl_s=TTL_S)
    assert again == first  # the same bytes, the same record
    node.integrator().catch_up()
    assert len(_publications(node)) == 1

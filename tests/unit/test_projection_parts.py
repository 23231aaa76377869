"""The projections' pure parts: rates without data, page tokens, which errors stop a projection,
the wire names of the figures, supervisor identities, and the web pages' caller identity."""

from __future__ import annotations

import sqlite3
import ssl
from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, OperationalError
from tongban.v1 import supervision_pb2

from hub.api.supervision import figures_to_proto
from hub.errors import InvalidInput
from hub.pki import Identity, Role, init_ca
from hub.projections import queries
from hub.projections.queries import Figures
from hub.projections.runner import transient
from hub.projections.statistics import COUNTERS
from hub.projections.store import Dialect, from_iso, iso
from hub.web.tls import caller_identity
from tests.harness.story import cst


def test_a_rate_without_anything_to_count_is_none_not_zero() -> None:
    figures = Figures()
    assert figures.rate("on_time", "concluded") is None
    assert figures.on_time_rate == 0.0  # the wire's double: 0 with its counts beside it
    figures.add([1 if name in ("concluded", "on_time", "received") else 0 for name in COUNTERS])
    assert figures.rate("on_time", "concluded") == 1.0
    assert figures.rate("online", "received") == 0.0


def test_every_counter_has_its_field_on_the_wire() -> None:
    figures = Figures()
    figures.add(list(range(1, len(COUNTERS) + 1)))
    message = figures_to_proto(figures)
    assert message.received == 1 and message.concluded_on_time == COUNTERS.index("on_time") + 1
    assert message.bad_ratings == COUNTERS.index("bad") + 1
    counted = {f.name for f in supervision_pb2.Figures.DESCRIPTOR.fields if f.type != f.TYPE_DOUBLE}
    assert len(counted) == len(COUNTERS)


def test_times_are_stored_as_fixed_width_utc_text_that_sorts_like_time() -> None:
    early, late = cst(2026, 3, 9, 23, 59), cst(2026, 3, 10, 0, 1)
    assert iso(early) == "2026-03-09T15:59:00.000000Z"
    assert iso(early) < iso(late)  # type: ignore[operator]
    assert from_iso(iso(late)) == late
    assert Dialect("sqlite").sql("a = %s AND b = %s") == "a = ? AND b = ?"
    assert Dialect("postgres").sql("a = %s") == "a = %s"


def test_a_page_token_the_node_did_not_give_is_refused_naming_the_field() -> None:
    for token in ("not base64!", "bm90IGpzb24", "WzFd"):  # garbage, not JSON, a short key
        with pytest.raises(InvalidInput) as caught:
            queries._after(token, 3)
        assert caught.value.field == "page_token"
    with pytest.raises(InvalidInput) as caught:
        queries._limit(501)
    assert caught.value.field == "page_size"
    assert queries._limit(0) == queries.DEFAULT_PAGE


def test_an_unreachable_store_is_retried_and_anything_else_stops_the_projection() -> None:
    assert transient(OperationalError("connection refused"))
    assert transient(sqlite3.OperationalError("database is locked"))
    assert transient(psycopg.OperationalError("server closed the connection"))
    assert not transient(IntegrityError("check constraint"))
    assert not transient(ValueError("not JSON"))
    assert not transient(psycopg.errors.CheckViolation("no_accepted"))


def test_a_supervisors_name_carries_its_region() -> None:
    assert Identity(Role.SUPERVISOR, "jiancha.4309").region == "4309"
    assert Identity(Role.AUDITOR, "audit-01").region == ""
    for name in ("jiancha", "jiancha.43a", "jiancha.123"):
        with pytest.raises(InvalidInput, match="ends with its region code"):
            Identity(Role.SUPERVISOR, name)


def test_the_web_pages_read_the_identity_of_the_tls_client_certificate(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", "test")
    issued = ca.issue(Role.SUPERVISOR, "jiancha.430902")
    pem = ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(issued.certificate_pem.decode()))
    scope = {"extensions": {"tls": {"client_cert_chain": [pem]}}}
    identity = caller_identity(scope)
    assert identity == Identity(Role.SUPERVISOR, "jiancha.430902")
    assert caller_identity({"extensions": {"tls": {"client_cert_chain": []}}}) is None
    assert caller_identity({}) is None
    garbage = {"extensions": {"tls": {"client_cert_chain": ["-----BEGIN CERTIFICATE-----"]}}}
    assert caller_identity(garbage) is None

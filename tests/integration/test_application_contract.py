"""The application's contract, run against every event store backend: SQLite and PostgreSQL.

One suite, two backends (like the eventsourcing library's own recorder contract tests): every test
here runs once on the embedded SQLite store and once on a real PostgreSQL database.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg.conninfo import make_conninfo

from hub.application.cipher import new_key
from hub.application.hub import HubApplication
from hub.bootstrap import build_application
from hub.domain.values import (
    Actor,
    Applicant,
    CaseState,
    DeliveryMethod,
    Material,
    Rating,
    id_number_with_check,
)
from hub.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    PermissionRefused,
    StorageUnavailable,
    TongbanError,
    TransitionRefused,
)
from hub.settings import Settings

VILLAGE = Actor("v-room", "op-v", "430902104201")
TOWNSHIP = Actor("t-hall", "op-t", "430902104000")
COUNTY = Actor("c-hall", "op-c", "430902000000")
ELDER_CARD = "200202001000"  # 老年人优待证办理: township level, issues a certificate
APPLICANT = Applicant("李秀英", id_number_with_check("43090219560312002"), "13807370001")


def _key() -> str:
    raw = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode()


def _material(name: str = "居民身份证") -> Material:
    return Material(name, hashlib.sha256(name.encode()).hexdigest(), "application/pdf", 2048)


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for a fresh, empty store of each backend."""
    keys = f"k1:{new_key()}"
    if request.param == "sqlite":
        return Settings(data_dir=tmp_path, cipher_keys=keys, cipher_active_key="k1")
    dsn = request.getfixturevalue("fresh_postgres_db")
    return Settings(data_dir=tmp_path, database_url=dsn, cipher_keys=keys, cipher_active_key="k1")


@pytest.fixture
def app(settings: Settings) -> Iterator[HubApplication]:
    application = build_application(settings)
    for actor, name in (
        (VILLAGE, "村便民服务室"),
        (TOWNSHIP, "镇政务服务中心"),
        (COUNTY, "区政务服务中心"),
    ):
        application.register_hall(
            hall_id=actor.hall_id, name=name, region=actor.region, windows=["1"], public_key=_key()
        )
    yield application
    application.close()


def _log_size(app: HubApplication) -> int:
    return app.recorder.max_notification_id() or 0


def _submit(app: HubApplication, key: str = "key-submit-0001", **changes: Any) -> Any:
    arguments: dict[str, Any] = {
        "idempotency_key": key,
        "actor": VILLAGE,
        "item_code": ELDER_CARD,
        "applicant": APPLICANT,
        "materials": [_material()],
    }
    arguments.update(changes)
    return app.submit(**arguments)


def test_lifecycle_is_stored_and_rebuilt_by_a_new_application(
    app: HubApplication, settings: Settings
) -> None:
    case_id = _submit(app).case_id
    steps: list[tuple[str, Actor, dict[str, Any]]] = [
        ("hand_off", VILLAGE, {"to_hall": TOWNSHIP.hall_id, "reason": "代办"}),
        ("acknowledge_handoff", TOWNSHIP, {}),
        ("accept", TOWNSHIP, {}),
        ("start_handling", TOWNSHIP, {}),
        ("decide", TOWNSHIP, {"approved": True, "reason": "符合条件"}),
        ("conclude", TOWNSHIP, {}),
        ("record_certificate", TOWNSHIP, {"certificate_id": "C-0001"}),
        ("deliver", TOWNSHIP, {"method": DeliveryMethod.WINDOW}),
        ("rate", TOWNSHIP, {"rating": Rating.VERY_SATISFIED, "comment": "好"}),
        ("archive", TOWNSHIP, {}),
    ]
    for number, (command, actor, arguments) in enumerate(steps):
        result = getattr(app, command)(
            idempotency_key=f"key-step-{number:04d}", actor=actor, case_id=case_id, **arguments
        )
        assert result.version == number + 2
    case = app.get_case(case_id)
    assert case.state is CaseState.ARCHIVED
    # A second application on the same store (a restarted node) sees the same case.
    reopened = build_application(settings, create_tables=False)
    try:
        again = reopened.get_case(case_id)
        assert again.state is CaseState.ARCHIVED
        assert again.version == case.version
        assert again.applicant == APPLICANT
        history = [type(e).__name__ for e in reopened.case_history(case_id)]
        assert history[0] == "Submitted"
        assert history[-1] == "Archived"
        assert len(history) == 11
    finally:
        reopened.close()


def test_retry_with_the_same_key_returns_the_first_result(app: HubApplication) -> None:
    first = _submit(app)
    size = _log_size(app)
    retry = _submit(app)
    assert retry.case_id == first.case_id
    assert retry.version == first.version
    assert retry.replayed
    assert not first.replayed
    assert _log_size(app) == size
    # The same holds for a command on the case, even after the case moved on.
    accepted = app.accept(idempotency_key="key-accept-01", actor=VILLAGE, case_id=first.case_id)
    app.start_handling(idempotency_key="key-handle-01", actor=VILLAGE, case_id=first.case_id)
    again = app.accept(idempotency_key="key-accept-01", actor=VILLAGE, case_id=first.case_id)
    assert (again.case_id, again.version, again.replayed) == (first.case_id, accepted.version, True)


def test_same_key_with_another_payload_or_command_is_refused(app: HubApplication) -> None:
    first = _submit(app)
    size = _log_size(app)
    with pytest.raises(IdempotencyConflict, match="different payload"):
        _submit(app, materials=[_material("户口簿")])
    with pytest.raises(IdempotencyConflict, match="for 'submit', not 'accept'"):
        app.accept(idempotency_key="key-submit-0001", actor=VILLAGE, case_id=first.case_id)
    assert _log_size(app) == size
    # Keys are scoped per hall: another hall may use the same key for its own command.
    other = _submit(app, actor=TOWNSHIP)
    assert other.case_id != first.case_id


def test_concurrent_duplicates_create_one_case(app: HubApplication) -> None:
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def submit() -> None:
        barrier.wait()
        try:
            results.append(_submit(app, key="key-concurrent-1"))
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len({r.case_id for r in results}) == 1
    assert sum(not r.replayed for r in results) >= 1
    history = app.case_history(results[0].case_id)
    assert len(history) == 1


def test_a_command_that_loses_a_race_stores_nothing(
    app: HubApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    case_id = _submit(app).case_id
    stale = app.get_case(case_id)
    app.accept(idempotency_key="key-winner-01", actor=VILLAGE, case_id=case_id)
    size = _log_size(app)
    # The loser read the case before the winner saved.
    monkeypatch.setattr(app, "get_case", lambda _id, version=None: stale)
    with pytest.raises(ConcurrencyConflict, match="retry"):
        app.request_correction(
            idempotency_key="key-loser-001",
            actor=VILLAGE,
            case_id=case_id,
            missing=["户口簿"],
            notice="补齐",
        )
    assert _log_size(app) == size
    monkeypatch.undo()
    assert app.get_case(case_id).state is CaseState.ACCEPTED


BAD_INPUTS: list[tuple[str, dict[str, Any], type[TongbanError], str, str]] = [
    ("unknown item", {"item_code": "999999999999"}, InvalidInput, "item_code", "catalogue"),
    ("malformed item", {"item_code": "ELDER"}, InvalidInput, "item_code", "malformed"),
    ("unknown competent region", {"competent_region": "439999"}, InvalidInput,
     "competent_region", "2023 edition"),
    ("malformed competent region", {"competent_region": "43x"}, InvalidInput,
     "competent_region", "12 digits"),
    ("competent region at the wrong level", {"competent_region": "430902"}, InvalidInput,
     "competent_region", "TOWNSHIP level"),
    ("unknown hall", {"actor": Actor("ghost", "op", "430902104201")}, InvalidInput,
     "actor.hall_id", "no such hall"),
    ("hall claims another region", {"actor": Actor("v-room", "op", "430902104202")},
     PermissionRefused, "", "registered at 430902104201"),
    ("above-level hall without a competent region", {"actor": COUNTY}, PermissionRefused, "",
     "without naming its competent region"),
    ("no materials", {"materials": []}, InvalidInput, "materials", "at least one"),
    ("short key", {"idempotency_key": "k"}, InvalidInput, "idempotency_key", "8-128"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "changes", "error", "field", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_submissions_are_refused_and_store_nothing(
    app: HubApplication,
    label: str,
    changes: dict[str, Any],
    error: type[TongbanError],
    field: str,
    message: str,
) -> None:
    size = _log_size(app)
    with pytest.raises(error, match=message) as caught:
        _submit(app, **changes)
    if field:
        assert getattr(caught.value, "field", None) == field
    assert _log_size(app) == size


def test_wrong_state_wrong_hall_and_wrong_level_store_nothing(app: HubApplication) -> None:
    case_id = _submit(app).case_id
    size = _log_size(app)
    with pytest.raises(TransitionRefused, match="'conclude' is not allowed in state RECEIVED"):
        app.conclude(idempotency_key="key-bad-0001", actor=VILLAGE, case_id=case_id)
    with pytest.raises(PermissionRefused, match="held by hall v-room"):
        app.accept(idempotency_key="key-bad-0002", actor=TOWNSHIP, case_id=case_id)
    app.accept(idempotency_key="key-ok-00001", actor=VILLAGE, case_id=case_id)
    app.start_handling(idempotency_key="key-ok-00002", actor=VILLAGE, case_id=case_id)
    size = _log_size(app)
    with pytest.raises(PermissionRefused, match="VILLAGE hall .* cannot decide"):
        app.decide(
            idempotency_key="key-bad-0003",
            actor=VILLAGE,
            case_id=case_id,
            approved=True,
            reason="x",
        )
    with pytest.raises(InvalidInput, match="no such hall") as caught:
        app.hand_off(
            idempotency_key="key-bad-0004", actor=VILLAGE, case_id=case_id, to_hall="ghost",
            reason="x",
        )  # fmt: skip
    assert caught.value.field == "to_hall"
    with pytest.raises(NotFound, match="case"):
        app.accept(idempotency_key="key-bad-0005", actor=VILLAGE, case_id=uuid4())
    assert _log_size(app) == size
    # A refused command leaves its key unused: a correct retry with that key works.
    app.escalate(
        idempotency_key="key-bad-0003", actor=VILLAGE, case_id=case_id,
        to_hall=TOWNSHIP.hall_id, reason="上报",
    )  # fmt: skip
    assert app.get_case(case_id).state is CaseState.ESCALATED


def test_personal_data_is_encrypted_at_rest(app: HubApplication) -> None:
    _submit(app)
    stored = app.recorder.select_notifications(start=1, limit=1000)
    assert stored
    clear = [APPLICANT.name.encode(), APPLICANT.id_number.encode(), APPLICANT.phone.encode()]
    for notification in stored:
        assert notification.state.startswith(b"K1\x02k1")
        for value in clear:
            assert value not in notification.state


def test_keys_rotate_and_a_dropped_key_shreds(app: HubApplication, settings: Settings) -> None:
    old_case = _submit(app).case_id
    k1 = settings.cipher_keys
    k2 = f"k2:{new_key()}"
    rotated = build_application(
        settings.with_changes(cipher_keys=f"{k1},{k2}", cipher_active_key="k2"),
        create_tables=False,
    )
    try:
        assert rotated.get_case(old_case).applicant == APPLICANT
        new_case = _submit(rotated, key="key-after-rotation").case_id
        states = [n.state for n in rotated.recorder.select_notifications(start=1, limit=1000)]
        assert states[-1].startswith(b"K1\x02k2")
    finally:
        rotated.close()
    shredded = build_application(
        settings.with_changes(cipher_keys=k2, cipher_active_key="k2"), create_tables=False
    )
    try:
        assert shredded.get_case(new_case).applicant == APPLICANT
        with pytest.raises(Exception, match="'k1' is not in the key ring"):
            shredded.get_case(old_case)
    finally:
        shredded.close()


def test_hall_registry_registers_rotates_and_retires(app: HubApplication) -> None:
    with pytest.raises(AlreadyExists, match="already registered"):
        app.register_hall(
            hall_id=VILLAGE.hall_id, name="x", region=VILLAGE.region, windows=["1"],
            public_key=_key(),
        )  # fmt: skip
    with pytest.raises(InvalidInput) as caught:
        app.register_hall(
            hall_id="new-hall", name="x", region="439999", windows=["1"], public_key=_key()
        )
    assert caught.value.field == "region"
    with pytest.raises(InvalidInput, match="32 bytes"):
        app.register_hall(
            hall_id="new-hall", name="x", region="430902", windows=["1"], public_key="AAAA"
        )
    new_key_b64 = _key()
    hall = app.rotate_hall_key(TOWNSHIP.hall_id, new_key_b64)
    assert hall.current_key == new_key_b64
    assert len(app.get_hall(TOWNSHIP.hall_id).public_keys) == 2
    app.retire_hall(TOWNSHIP.hall_id, "机构撤并")
    assert app.get_hall(TOWNSHIP.hall_id).retired
    with pytest.raises(PermissionRefused, match="retired"):
        _submit(app, actor=TOWNSHIP, key="key-retired-01")
    case_id = _submit(app).case_id
    with pytest.raises(InvalidInput, match="retired") as refused:
        app.hand_off(
            idempotency_key="key-to-retired", actor=VILLAGE, case_id=case_id,
            to_hall=TOWNSHIP.hall_id, reason="x",
        )  # fmt: skip
    assert refused.value.field == "to_hall"


def test_an_unreachable_store_is_storage_unavailable(settings: Settings, tmp_path: Path) -> None:
    if settings.database_url is None:
        broken = settings.with_changes(data_dir=tmp_path / "file-not-dir")
        (tmp_path / "file-not-dir").write_text("not a directory")
    else:
        broken = settings.with_changes(
            database_url=make_conninfo(settings.database_url, dbname="no_such_database")
        )
    with pytest.raises(StorageUnavailable, match="unavailable"):
        build_application(broken)

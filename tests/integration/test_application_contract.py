"""The application's contract, run against every event store backend: SQLite and PostgreSQL.

One suite, two backends (like the eventsourcing library's own recorder contract tests): every test
here runs once on the embedded SQLite store and once on a real PostgreSQL database. Every command
is signed by the acting hall's key and goes through ``HubApplication.execute``.
"""

from __future__ import annotations

import base64
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from psycopg.conninfo import make_conninfo
from tongban.v1 import common_pb2

from hub.bootstrap import build_application, initialise
from hub.commands.model import SignedCommand
from hub.commands.signing import CommandSigner
from hub.domain.values import CaseState
from hub.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    ConfigurationError,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    PermissionRefused,
    SignatureRefused,
    StorageUnavailable,
    StoreMismatch,
    TongbanError,
    TransitionRefused,
)
from hub.settings import Settings
from tests.harness.inprocess import APPLICANT, InProcessNode, material, public_key_b64

VILLAGE_REGION = "430902104201"
TOWNSHIP_REGION = "430902104000"
COUNTY_REGION = "430902000000"


@pytest.fixture
def settings(store_url: str | None, tmp_path: Path) -> Settings:
    """Settings for a fresh, empty store of each backend."""
    return Settings(data_dir=tmp_path / "node", database_url=store_url)


@pytest.fixture
def node(settings: Settings) -> Iterator[InProcessNode]:
    started = InProcessNode.start(settings)
    started.add_hall("v-room", VILLAGE_REGION)
    started.add_hall("t-hall", TOWNSHIP_REGION)
    started.add_hall("c-hall", COUNTY_REGION)
    yield started
    started.close()


def _village(node: InProcessNode) -> CommandSigner:
    return node.halls["v-room"]


def _township(node: InProcessNode) -> CommandSigner:
    return node.halls["t-hall"]


def test_lifecycle_is_stored_and_rebuilt_by_a_new_application(node: InProcessNode) -> None:
    village, township = _village(node), _township(node)
    case_id = node.submit(village).case_id
    case = str(case_id)
    steps: list[tuple[str, CommandSigner, dict[str, Any]]] = [
        ("hand_off", village, {"to_hall": "t-hall", "reason": "代办"}),
        ("acknowledge_handoff", township, {}),
        ("accept", township, {}),
        ("start_handling", township, {}),
        ("decide", township, {"approved": True, "reason": "符合条件"}),
        ("conclude", township, {}),
        ("record_certificate", township, {"certificate_id": "C-0001"}),
        ("deliver", township, {"method": common_pb2.DELIVERY_METHOD_WINDOW}),
        ("rate", township, {"rating": common_pb2.RATING_VERY_SATISFIED, "comment": "好"}),
        ("archive", township, {}),
    ]
    for number, (action, hall, arguments) in enumerate(steps):
        result = node.run(hall, action, case_id=case, **arguments)
        assert result.version == number + 2
    assert node.app.get_case(case_id).state is CaseState.ARCHIVED
    # A second application on the same store (a restarted node) sees the same case.
    reopened = node.reopen()
    try:
        again = reopened.app.get_case(case_id)
        assert again.state is CaseState.ARCHIVED
        opened = reopened.app.open_applicant(again)
        assert opened is not None and opened.applicant == APPLICANT
        history = [type(e).__name__ for e in reopened.app.case_history(case_id)]
        assert history[0] == "Submitted"
        assert history[-1] == "Archived"
        assert len(history) == 11
    finally:
        reopened.close()


def test_a_case_at_several_versions_is_each_as_get_case_gives_it(node: InProcessNode) -> None:
    village, township = _village(node), _township(node)
    case_id = node.submit(village).case_id
    node.run(village, "hand_off", case_id=str(case_id), to_hall="t-hall", reason="代办")
    node.run(township, "acknowledge_handoff", case_id=str(case_id))
    cases = node.app.case_at_versions(case_id, [1, 3, 2])
    assert sorted(cases) == [1, 2, 3]
    for version, case in cases.items():
        alone = node.app.get_case(case_id, version=version)
        assert (case.version, case.state, case.holder) == (
            alone.version,
            alone.state,
            alone.holder,
        )
    assert cases[1] is not cases[3]  # each its own object: changing one changes no other
    assert cases[1].state is CaseState.RECEIVED and cases[3].version == 3
    with pytest.raises(NotFound):
        node.app.case_at_versions(uuid4(), [1])


def test_retry_with_the_same_key_returns_the_first_result(node: InProcessNode) -> None:
    village = _village(node)
    first = node.submit(village)
    size = node.log_size()
    retry = node.submit(village)  # signed again: another salt, another time, same key
    assert (retry.case_id, retry.version, retry.replayed) == (first.case_id, first.version, True)
    assert not first.replayed
    assert node.log_size() == size
    # The same holds for a command on the case, even after the case moved on.
    case = str(first.case_id)
    accepted = node.run(village, "accept", idempotency_key="key-accept-01", case_id=case)
    node.run(village, "start_handling", idempotency_key="key-handle-01", case_id=case)
    again = node.run(village, "accept", idempotency_key="key-accept-01", case_id=case)
    assert (again.case_id, again.version, again.replayed) == (first.case_id, accepted.version, True)


def test_a_late_retry_of_identical_bytes_still_gets_the_first_result(
    node: InProcessNode,
) -> None:
    village = _village(node)
    signed = village.sign(
        "submit",
        idempotency_key="key-late-0001",
        item_code="200202001000",
        applicant=APPLICANT,
        materials=[material()],
    )
    first = node.app.execute(signed)
    later = node.app.clock
    node.app.clock = lambda: later() + timedelta(hours=2)  # past the clock window
    try:
        again = node.app.execute(signed)
    finally:
        node.app.clock = later
    assert (again.case_id, again.replayed) == (first.case_id, True)


def test_same_key_with_another_payload_or_command_is_refused(node: InProcessNode) -> None:
    village, township = _village(node), _township(node)
    first = node.submit(village)
    size = node.log_size()
    with pytest.raises(IdempotencyConflict, match="different payload"):
        node.submit(village, materials=[material("户口簿")])
    with pytest.raises(IdempotencyConflict, match="for 'submit', not 'accept'"):
        node.run(village, "accept", idempotency_key="key-submit-0001", case_id=str(first.case_id))
    assert node.log_size() == size
    # Keys are scoped per hall: another hall may use the same key for its own command.
    other = node.submit(township)
    assert other.case_id != first.case_id


def test_concurrent_duplicates_create_one_case(node: InProcessNode) -> None:
    signed = _village(node).sign(
        "submit",
        idempotency_key="key-concurrent-1",
        item_code="200202001000",
        applicant=APPLICANT,
        materials=[material()],
    )
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def submit() -> None:
        barrier.wait()
        try:
            results.append(node.app.execute(signed))
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
    assert len(node.app.case_history(results[0].case_id)) == 1


def test_concurrent_copies_of_one_command_on_a_case_all_get_its_result(
    node: InProcessNode,
) -> None:
    """Copies of one Accept racing: the state check fails for the losers, yet they get the
    first result, never a refusal of the command's own effect."""
    village = _village(node)
    case = str(node.submit(village).case_id)
    for round_ in range(5):
        signed = village.sign("accept", idempotency_key=f"key-race-{round_:04d}", case_id=case)
        results: list[Any] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(3)

        def accept(
            signed: SignedCommand = signed,
            barrier: threading.Barrier = barrier,
            results: list[Any] = results,
            errors: list[BaseException] = errors,
        ) -> None:
            barrier.wait()
            try:
                results.append(node.app.execute(signed))
            except BaseException as error:  # collected and asserted below
                errors.append(error)

        threads = [threading.Thread(target=accept) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        if round_ == 0:
            assert errors == []
            assert len({(r.case_id, r.version) for r in results}) == 1
            assert [r.replayed for r in results].count(False) == 1
        # Later rounds: a new Accept is refused by the state machine for everyone alike.
        else:
            assert results == [] and all(isinstance(e, TransitionRefused) for e in errors)


def test_a_command_that_loses_a_race_stores_nothing(
    node: InProcessNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    village = _village(node)
    case_id = node.submit(village).case_id
    stale = node.app.get_case(case_id)
    node.run(village, "accept", idempotency_key="key-winner-01", case_id=str(case_id))
    size = node.log_size()
    # The loser read the case before the winner saved.
    monkeypatch.setattr(node.app, "get_case", lambda _id, version=None: stale)
    with pytest.raises(ConcurrencyConflict, match="retry"):
        node.run(
            village,
            "request_correction",
            idempotency_key="key-loser-001",
            case_id=str(case_id),
            missing=["户口簿"],
            notice="补齐",
        )
    assert node.log_size() == size
    monkeypatch.undo()
    assert node.app.get_case(case_id).state is CaseState.ACCEPTED


BAD_INPUTS: list[tuple[str, dict[str, Any], type[TongbanError], str, str]] = [
    ("unknown item", {"item_code": "999999999999"}, InvalidInput, "command.submit.item_code",
     "catalogue"),
    ("malformed item", {"item_code": "ELDER"}, InvalidInput, "command.submit.item_code",
     "malformed"),
    ("unknown competent region", {"competent_region": "439999"}, InvalidInput,
     "command.submit.competent_region", "2023 edition"),
    ("malformed competent region", {"competent_region": "43x"}, InvalidInput,
     "command.submit.competent_region", "12 digits"),
    ("competent region at the wrong level", {"competent_region": "430902"}, InvalidInput,
     "command.submit.competent_region", "TOWNSHIP level"),
    ("no materials", {"materials": []}, InvalidInput, "command.submit.materials", "at least one"),
    ("bad material digest", {"materials": [common_pb2.Material(
        name="x", sha256="00", media_type="application/pdf", size=1)]}, InvalidInput,
     "command.submit.materials[0].sha256", "SHA-256"),
    ("short key", {"idempotency_key": "k"}, InvalidInput, "command.header.idempotency_key",
     "8-128"),
    ("unknown intake window", {"window": "没有这个窗口"}, InvalidInput, "command.submit.window",
     "window"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "changes", "error", "field", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_submissions_are_refused_and_store_nothing(
    node: InProcessNode,
    label: str,
    changes: dict[str, Any],
    error: type[TongbanError],
    field: str,
    message: str,
) -> None:
    size = node.log_size()
    with pytest.raises(error, match=message) as caught:
        node.submit(_village(node), **changes)
    if field:
        assert getattr(caught.value, "field", None) == field
    assert node.log_size() == size


def test_signer_refusals_store_nothing(node: InProcessNode, settings: Settings) -> None:
    village = _village(node)
    size = node.log_size()
    ghost = CommandSigner(
        village.key, node=settings.origin, operator="op", hall_id="ghost", region=VILLAGE_REGION
    )
    with pytest.raises(SignatureRefused, match="no such hall"):
        node.submit(ghost)
    elsewhere = CommandSigner(
        village.key, node=settings.origin, operator="op", hall_id="v-room", region="430902104202"
    )
    with pytest.raises(PermissionRefused, match="registered at 430902104201"):
        node.submit(elsewhere)
    with pytest.raises(PermissionRefused, match="without naming its competent region"):
        node.submit(node.halls["c-hall"])
    # The header names exactly one signer, and a hall's names the person at the window.
    nobody = CommandSigner(
        village.key, node=settings.origin, operator="", hall_id="v-room", region=VILLAGE_REGION
    )
    with pytest.raises(InvalidInput, match="must not be empty") as caught:
        node.submit(nobody)
    assert caught.value.field == "command.header.operator"
    both = CommandSigner(village.key, node=settings.origin, operator="op", hall_id="v-room",
                         region=VILLAGE_REGION, admin="root")  # fmt: skip
    with pytest.raises(InvalidInput, match="a hall signs") as caught:
        node.submit(both)
    assert caught.value.field == "command.header.hall_id"
    assert node.log_size() == size


def test_wrong_state_wrong_hall_and_wrong_level_store_nothing(node: InProcessNode) -> None:
    village, township = _village(node), _township(node)
    case_id = node.submit(village).case_id
    case = str(case_id)
    size = node.log_size()
    with pytest.raises(TransitionRefused, match="'conclude' is not allowed in state RECEIVED"):
        node.run(village, "conclude", idempotency_key="key-bad-0001", case_id=case)
    # A hall that is no party to the case gets what it would get for no case at all.
    with pytest.raises(NotFound) as not_party:
        node.run(township, "accept", idempotency_key="key-bad-0002", case_id=case)
    with pytest.raises(NotFound) as no_case:
        node.run(township, "accept", idempotency_key="key-bad-0002", case_id=str(uuid4()))
    assert str(not_party.value).replace(case, "X") == str(no_case.value).replace(
        str(no_case.value.key), "X"
    )
    node.run(village, "accept", idempotency_key="key-ok-00001", case_id=case)
    node.run(village, "start_handling", idempotency_key="key-ok-00002", case_id=case)
    size = node.log_size()
    with pytest.raises(PermissionRefused, match="VILLAGE hall .* cannot decide"):
        node.run(village, "decide", idempotency_key="key-bad-0003", case_id=case, approved=True,
                 reason="x")  # fmt: skip
    with pytest.raises(InvalidInput, match="no such hall") as caught:
        node.run(village, "hand_off", idempotency_key="key-bad-0004", case_id=case,
                 to_hall="ghost", reason="x")  # fmt: skip
    assert caught.value.field == "command.hand_off.to_hall"
    assert node.log_size() == size
    # A refused command leaves its key unused: a correct retry with that key works.
    node.run(village, "escalate", idempotency_key="key-bad-0003", case_id=case,
             to_hall="t-hall", reason="上报")  # fmt: skip
    assert node.app.get_case(case_id).state is CaseState.ESCALATED


def test_no_personal_data_is_stored_or_signed_in_clear(node: InProcessNode) -> None:
    node.submit(_village(node))
    clear = [APPLICANT.name.encode(), APPLICANT.id_number.encode(), APPLICANT.phone.encode()]
    stored = node.app.recorder.select_notifications(start=1, limit=1000)
    assert stored
    for notification in stored:
        for value in clear:
            assert value not in notification.state  # neither the events nor the signed bytes
    case = node.app.get_case(stored[-1].originator_id)  # type: ignore[arg-type]
    opened = node.app.open_applicant(case)
    assert opened is not None and opened.applicant == APPLICANT


def test_personal_values_must_open_their_commitments(node: InProcessNode) -> None:
    village = _village(node)
    signed = village.sign(
        "submit",
        idempotency_key="key-open-0001",
        item_code="200202001000",
        applicant=APPLICANT,
        materials=[material()],
    )
    size = node.log_size()
    swapped = list(signed.personal)
    swapped[0], swapped[1] = (
        type(swapped[0])(swapped[0].field, swapped[1].value, swapped[0].salt),
        swapped[1],
    )
    cases = {
        "a value that does not open": (tuple(swapped), "personal[0].value"),
        "a missing value": (signed.personal[:2], "personal"),
        "an extra field": (
            (*signed.personal, type(swapped[0])("submit.applicant.x", "v", b"s" * 16)),
            "personal[3].field",
        ),
        "a short salt": (
            (
                type(swapped[0])(signed.personal[0].field, APPLICANT.name, b"s"),
                *signed.personal[1:],
            ),
            "personal[0].salt",
        ),
    }
    for label, (personal, field) in cases.items():
        with pytest.raises(InvalidInput) as caught:
            node.app.execute(SignedCommand(signed.command, signed.signature, personal))
        assert caught.value.field == field, label
        assert APPLICANT.name not in str(caught.value) and APPLICANT.id_number not in str(
            caught.value
        ), label
    assert node.log_size() == size
    # Personal values on a command that commits to none are refused as well.
    case = str(node.app.execute(signed).case_id)
    accept = village.sign("accept", case_id=case)
    with pytest.raises(InvalidInput, match="commits to no personal field"):
        node.app.execute(SignedCommand(accept.command, accept.signature, signed.personal))


def test_commands_are_bound_to_their_node_and_time(node: InProcessNode, settings: Settings) -> None:
    village = _village(node)
    size = node.log_size()
    foreign = CommandSigner(
        village.key, node="tongban/42", operator="op", hall_id="v-room", region=VILLAGE_REGION
    )
    with pytest.raises(InvalidInput, match="this node is 'tongban/43'") as caught:
        node.submit(foreign)
    assert caught.value.field == "command.header.node"
    now = datetime.now(UTC)
    for label, when, deferred, reason in [
        ("stale", now - timedelta(minutes=10), False, "from the node's time"),
        ("future", now + timedelta(minutes=10), False, "from the node's time"),
        ("deferred from the future", now + timedelta(hours=1), True, "from the future"),
        ("deferred too old", now - timedelta(days=31), True, "at most 30 days old"),
        ("from 2001", datetime(2001, 1, 1, tzinfo=UTC), False, "from the node's time"),
        ("from 2100", datetime(2100, 1, 1, tzinfo=UTC), True, "from the future"),
    ]:
        with pytest.raises(InvalidInput, match=reason) as caught:
            node.submit(village, key=f"key-time-{label[:6]}", issued_at=when, deferred=deferred)
        assert caught.value.field == "command.header.issued_at", label
    assert node.log_size() == size
    # A deferred command from yesterday (a village outbox that was offline) is accepted, and its
    # original time is kept beside the node's.
    yesterday = now - timedelta(days=1)
    result = node.submit(village, key="key-deferred-01", issued_at=yesterday, deferred=True)
    records = [
        n for n in node.app.recorder.select_notifications(start=1, limit=1000)
        if n.topic.endswith("CommandRecord.Recorded")
    ]  # fmt: skip
    record = node.app.mapper.to_domain_event(records[-1])
    assert record.deferred and abs(record.issued_at - yesterday) < timedelta(seconds=1)  # type: ignore[attr-defined]
    # The case's clock starts at that original time (its business time), not when the outbox
    # synced; the record keeps when the node received it.
    case = node.app.get_case(result.case_id)
    assert case.created_on == yesterday == case.clock_started_at
    assert record.timestamp > yesterday  # type: ignore[attr-defined]


def test_a_signature_must_be_the_signers_current_key(node: InProcessNode) -> None:
    village = _village(node)
    size = node.log_size()
    signed = village.sign(
        "submit", item_code="200202001000", applicant=APPLICANT, materials=[material()]
    )
    with pytest.raises(SignatureRefused, match="does not verify"):
        forged = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
        node.app.execute(SignedCommand(signed.command, forged, signed.personal))
    with pytest.raises(SignatureRefused, match="not signed"):
        node.app.execute(SignedCommand(signed.command, b"", signed.personal))
    old_key = village.key
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    new_key = Ed25519PrivateKey.generate()
    node.app.execute(
        node.admin.sign("rotate_hall_key", hall_id="v-room", public_key=public_key_b64(new_key))
    )
    with pytest.raises(SignatureRefused, match="does not verify"):
        node.app.execute(signed)  # signed with the rotated-out key
    assert node.log_size() == size + 2
    village.key = new_key
    node.submit(village, key="key-new-key-01")
    village.key = old_key


def test_hall_registry_registers_rotates_and_retires(node: InProcessNode) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    def key() -> str:
        return public_key_b64(Ed25519PrivateKey.generate())

    admin = node.admin
    register = {"name": "x", "windows": ["1"], "public_key": key()}
    with pytest.raises(AlreadyExists, match="already registered"):
        node.app.execute(admin.sign("register_hall", hall_id="v-room", region=VILLAGE_REGION,
                                    **register))  # fmt: skip
    with pytest.raises(InvalidInput) as caught:
        node.app.execute(admin.sign("register_hall", hall_id="new-hall", region="439999",
                                    **register))  # fmt: skip
    assert caught.value.field == "command.register_hall.region"
    with pytest.raises(InvalidInput, match="this node keeps region 43") as foreign:
        node.app.execute(admin.sign("register_hall", hall_id="gz-hall", region="440103",
                                    **register))  # fmt: skip
    assert foreign.value.field == "command.register_hall.region"
    with pytest.raises(InvalidInput, match="32 bytes"):
        node.app.execute(admin.sign("register_hall", hall_id="new-hall", region="430902",
                                    name="x", windows=["1"], public_key="AAAA"))  # fmt: skip
    rotated = key()
    node.app.execute(admin.sign("rotate_hall_key", hall_id="t-hall", public_key=rotated))
    assert node.app.get_hall("t-hall").current_key == rotated
    assert len(node.app.hall_key_versions("t-hall")) == 2
    node.app.execute(admin.sign("retire_hall", hall_id="t-hall", reason="机构撤并"))
    assert node.app.get_hall("t-hall").retired
    case_id = node.submit(_village(node)).case_id
    with pytest.raises(InvalidInput, match="retired") as refused:
        node.run(_village(node), "hand_off", case_id=str(case_id), to_hall="t-hall", reason="x")
    assert refused.value.field == "command.hand_off.to_hall"
    # A hall may not sign admin commands, nor an admin hall commands.
    with pytest.raises(InvalidInput, match="an admin signs 'register_hall'"):
        node.run(_village(node), "register_hall", hall_id="x-hall", region="430902",
                 name="x", windows=["1"], public_key=key())  # fmt: skip


def test_erasure_is_per_case_and_everything_else_keeps_working(node: InProcessNode) -> None:
    village = _village(node)
    erased_case = node.submit(village, key="key-erase-0001").case_id
    kept_case = node.submit(village, key="key-erase-0002").case_id
    assert set(node.app.cases_of_person(APPLICANT.id_number)) == {erased_case, kept_case}
    result = node.app.execute(
        node.admin.sign("erase_personal_data", case_id=str(erased_case), reason="申请人要求")
    )
    assert result.version == 2
    erased = node.app.get_case(erased_case)
    assert erased.personal_data_erased
    assert node.app.open_applicant(erased) is None
    assert node.app.cases_of_person(APPLICANT.id_number) == [kept_case]
    kept = node.app.open_applicant(node.app.get_case(kept_case))
    assert kept is not None and kept.applicant == APPLICANT
    # The case is still served and worked on; halls keep working.
    node.run(village, "accept", case_id=str(erased_case))
    assert node.app.get_case(erased_case).state is CaseState.ACCEPTED
    with pytest.raises(TransitionRefused, match="already erased"):
        node.app.execute(
            node.admin.sign("erase_personal_data", case_id=str(erased_case), reason="again")
        )


def test_rotating_at_rest_keys_loses_nothing(node: InProcessNode, settings: Settings) -> None:
    from hub.application.cipher import KeyRingCipher, new_key, new_key_id
    from hub.application.vault import PersonalDataVault
    from hub.bootstrap import NodePaths, load_node_keys, write_key_ring

    village = _village(node)
    before = node.submit(village, key="key-rotate-001").case_id
    node.run(node.halls["v-room"], "accept", case_id=str(before))
    keys = load_node_keys(settings)
    old_id = keys.cipher.active_id
    # What `tongban keys rotate` does: a new key, every per-case key re-wrapped, the old dropped.
    new_id = new_key_id()
    ring = {**keys.cipher.keys, new_id: base64.b64decode(new_key())}
    cipher = KeyRingCipher(ring, new_id)
    node.app.keys.record_keys(cipher.fingerprints())
    assert node.app.keys.rewrap(PersonalDataVault(cipher, keys.pseudonym_key).rewrap) == 1
    write_key_ring(NodePaths(settings.data_dir).cipher_keys, {new_id: ring[new_id]}, new_id)
    node.close()
    rotated = InProcessNode(settings, build_application(settings), node.admin, node.halls)
    try:
        assert rotated.app.keys.key_ids_in_use() == {new_id: 1}
        case = rotated.app.get_case(before)
        opened = rotated.app.open_applicant(case)
        assert opened is not None and opened.applicant == APPLICANT
        hall = rotated.app.get_hall("v-room")  # halls were never encrypted under the old key
        assert not hall.retired
        rotated.submit(village, key="key-rotate-002")
    finally:
        rotated.close()
    # Dropping a key that still wraps personal data is refused at start-up, naming the key.
    write_key_ring(NodePaths(settings.data_dir).cipher_keys, {old_id: keys.cipher.keys[old_id]},
                   old_id)  # fmt: skip
    with pytest.raises(StoreMismatch, match=f"{new_id} .*wrap personal data"):
        build_application(settings)


def test_keys_are_made_on_purpose_and_must_match_the_store(
    node: InProcessNode, settings: Settings, tmp_path: Path
) -> None:
    # No keys in a mistyped data directory: refused, naming `tongban init`, nothing created.
    mistyped = settings.with_changes(data_dir=tmp_path / "mistyped")
    with pytest.raises(ConfigurationError, match="tongban init"):
        build_application(mistyped)
    assert not (tmp_path / "mistyped" / "secrets").exists()
    # Another node's keys against this store: refused before anything is written.
    size = node.log_size()
    other = settings.with_changes(data_dir=tmp_path / "other-node")
    if settings.database_url is None:
        initialise(other)  # another node, with its own SQLite store ...
        with (
            sqlite3.connect(settings.sqlite_path) as source,
            sqlite3.connect(other.sqlite_path) as target,
        ):
            source.backup(target)  # ... replaced by a copy of this node's store
        with pytest.raises(StoreMismatch, match="different nodes"):
            build_application(other)
    else:
        with pytest.raises(StoreMismatch, match="different nodes"):
            initialise(other)  # a shared PostgreSQL pointed at from another data directory
    assert node.log_size() == size


def test_an_unreachable_store_is_storage_unavailable(settings: Settings, tmp_path: Path) -> None:
    initialise(settings)
    if settings.database_url is None:
        (settings.data_dir / "events.sqlite3").unlink()
        (settings.data_dir / "events.sqlite3").mkdir()
        broken = settings
    else:
        broken = settings.with_changes(
            database_url=make_conninfo(settings.database_url, dbname="no_such_database")
        )
    with pytest.raises(StorageUnavailable, match="unavailable"):
        build_application(broken)


def test_a_key_rotated_by_another_process_is_seen_by_the_next_command(
    node: InProcessNode,
) -> None:
    """Each serving process caches halls; a rotation or retirement made through another process
    must take effect at once (the cache fast-forwards on every read)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    village = _village(node)
    node.submit(village, key="key-cache-warm")  # the hall is now cached in node.app
    other = node.reopen()  # another serving process
    try:
        new_key = Ed25519PrivateKey.generate()
        other.app.execute(
            node.admin.sign("rotate_hall_key", hall_id="v-room", public_key=public_key_b64(new_key))
        )
        with pytest.raises(SignatureRefused, match="current key"):
            node.submit(village, key="key-cache-old")  # old key, through the first process
        other.app.execute(node.admin.sign("retire_hall", hall_id="v-room", reason="撤并"))
        old_key, village.key = village.key, new_key
        with pytest.raises(PermissionRefused, match="retired"):
            node.submit(village, key="key-cache-new")
        village.key = old_key
    finally:
        other.close()

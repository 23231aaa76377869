"""The delivery channels' rules in the domain (no I/O): custody states, the locker's attempts
and hold time, a peer's return of a deposit its node saw locked, and the off-site window's
certificate check when the federation file names no trust bundle for the issuing node."""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from factories import COUNTY, COUNTY_HALL, new_case
from test_federation_witnessing import _peer

from adapters.cli import build_parser
from hub.application.hub import HubApplication
from hub.bootstrap import _certificate_check
from hub.commands.model import Deliver
from hub.domain.case import Case, step_time
from hub.domain.custody import LOCKER_MAX_ATTEMPTS, pickup_code_hash
from hub.domain.values import Actor, CaseState, DeliveryMethod, IdentityCheck
from hub.errors import InvalidInput, TransitionRefused
from hub.settings import Settings

LOCKER = ("ZZ-E-001", "A03")


def _deposited(hours: int = 48) -> Case:
    case = new_case(actor=COUNTY_HALL, competent=COUNTY, produces_certificate=False)
    for step in ("accept", "start_handling"):
        getattr(case, step)(COUNTY_HALL)
    case.decide(COUNTY_HALL, approved=True, reason="准予")
    case.conclude(COUNTY_HALL)
    code_hash = pickup_code_hash(case.id, "482913", b"k" * 32)
    case.deposit_in_locker(COUNTY_HALL, *LOCKER, code_hash, hours)
    return case


def test_the_hold_time_runs_from_the_deposit() -> None:
    case = _deposited(hours=2)
    assert case.state is CaseState.IN_LOCKER and case.locker_expires_at is not None
    with step_time(case.locker_expires_at - timedelta(seconds=1)):
        with pytest.raises(TransitionRefused, match="waits for the applicant"):
            case.return_to_window(COUNTY_HALL, "取回")
        case.pick_up_from_locker(COUNTY_HALL, *LOCKER)
    assert case.state is CaseState.DELIVERED and case.delivery_method is DeliveryMethod.LOCKER
    late = _deposited(hours=2)
    assert late.locker_expires_at is not None
    with step_time(late.locker_expires_at):
        with pytest.raises(TransitionRefused, match="expired"):
            late.pick_up_from_locker(COUNTY_HALL, *LOCKER)
        late.return_to_window(COUNTY_HALL, "逾期未取")
    assert late.state is CaseState.CONCLUDED and late.locker is None


def test_wrong_codes_lock_the_deposit_and_only_then_may_it_be_returned() -> None:
    case = _deposited()
    for _ in range(LOCKER_MAX_ATTEMPTS):
        case.refuse_locker_code(COUNTY_HALL, *LOCKER)
    assert case.locker_attempts_left == 0
    with pytest.raises(TransitionRefused, match="locked"):
        case.pick_up_from_locker(COUNTY_HALL, *LOCKER)
    case.return_to_window(COUNTY_HALL, "多次输错")
    assert case.state is CaseState.CONCLUDED and case.locker_failed_attempts == 0


def test_a_hall_of_another_node_returns_what_its_node_saw_locked() -> None:
    """Wrong codes stay in the node that saw them; the peer's copy takes the return on trust
    of that node, as it takes the peer's own steps (the hall is named hall@region there)."""
    case = _deposited()
    remote = Actor(f"{COUNTY_HALL.hall_id}@{COUNTY}", "op", COUNTY)
    case.holder = remote.hall_id  # the copy at the peer: the other node's hall holds it
    case.return_to_window(remote, "多次输错")
    assert case.state is CaseState.CONCLUDED


def test_a_kiosk_print_names_its_check() -> None:
    fresh = new_case(actor=COUNTY_HALL, competent=COUNTY, produces_certificate=False)
    for step in ("accept", "start_handling"):
        getattr(fresh, step)(COUNTY_HALL)
    fresh.decide(COUNTY_HALL, approved=False, reason="不予")
    fresh.conclude(COUNTY_HALL)
    kiosk = Actor("kiosk-1", "kiosk", COUNTY)
    with pytest.raises(InvalidInput) as refused:
        fresh.deliver(kiosk, DeliveryMethod.KIOSK, "", hall_kind=_kind("KIOSK"))
    assert refused.value.field == "identity_check"
    fresh.deliver(kiosk, DeliveryMethod.KIOSK, "", "kiosk-1", IdentityCheck.ELECTRONIC_ID,
                  _kind("KIOSK"))  # fmt: skip
    assert fresh.state is CaseState.DELIVERED and fresh.delivery_place == "kiosk-1"


def _kind(name: str) -> object:
    from hub.domain.values import HallKind

    return HallKind[name]


def test_the_adapter_keeps_a_deposit_72_hours_by_default() -> None:
    args = build_parser({}).parse_args(
        ["locker", "deposit", "--case-id", "c", "--locker", "L", "--compartment", "A",
         "--key-file", "k", "--hall-id", "h", "--region", "430902104000"]
    )  # fmt: skip
    assert args.hold_hours == 72


def _offsite_case() -> types.SimpleNamespace:
    return types.SimpleNamespace(
        id=UUID(int=1), certificate_id="1.2.156.3005.2.110001.X", competent_region="610929000000"
    )


def _deliver(token: str) -> Deliver:
    return Deliver(UUID(int=1), DeliveryMethod.OFFSITE_WINDOW, "", "", IdentityCheck.UNSPECIFIED,
                   token)  # fmt: skip


def test_without_a_trust_bundle_for_the_issuer_a_token_is_refused_and_none_goes_on(
    tmp_path: Path,
) -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    app = types.SimpleNamespace(policy=types.SimpleNamespace(region="43"), certificate_check=None)
    with pytest.raises(InvalidInput, match="no trust bundle") as refused:
        HubApplication._check_carried_certificate(app, _offsite_case(), _deliver("a.b.c"), now)  # type: ignore[arg-type]
    assert refused.value.field == "certificate_token"
    HubApplication._check_carried_certificate(app, _offsite_case(), _deliver(""), now)  # type: ignore[arg-type]
    # A federation file whose trust bundles name another peer (42), not the issuer (61).
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from hub.certificates import IssuerKey, TrustBundle

    issuer = IssuerKey(Ed25519PrivateKey.generate(), "tongban/42", "42", now)
    (tmp_path / "42-trust.json").write_text(TrustBundle((issuer.trusted(),)).to_json())
    lines = ["[kafka]", 'bootstrap = ["127.0.0.1:9092"]']
    for peer in (_peer(tmp_path, "42", trust_bundle="42-trust.json"), _peer(tmp_path, "61")):
        lines += ["[[peers]]", *(f'{key} = "{value}"' for key, value in peer.items())]
    (tmp_path / "federation.toml").write_text("\n".join(lines) + "\n")
    settings = Settings(data_dir=tmp_path / "node", node_region="43",
                        federation=tmp_path / "federation.toml")  # fmt: skip
    check = _certificate_check(settings)
    with pytest.raises(InvalidInput, match="no trust bundle"):
        check(_offsite_case(), "a.b.c", now)
    check(_offsite_case(), "", now)
    # A token where none belongs: a window delivery of a certificate issued here.
    app.certificate_check = check
    local = types.SimpleNamespace(**{**vars(_offsite_case()), "competent_region": "430902000000"})
    with pytest.raises(InvalidInput, match="only an off-site window delivery"):
        HubApplication._check_carried_certificate(app, local, _deliver("a.b.c"), now)  # type: ignore[arg-type]


def test_a_pickup_another_node_checked_is_applied_here_even_if_it_arrives_late() -> None:
    case = _deposited(hours=1)
    remote = Actor(f"{COUNTY_HALL.hall_id}@{COUNTY}", "op", COUNTY)
    case.holder = remote.hall_id
    assert case.locker_expires_at is not None
    with step_time(case.locker_expires_at + timedelta(minutes=5)):
        case.pick_up_from_locker(remote, *LOCKER)
    assert case.state is CaseState.DELIVERED

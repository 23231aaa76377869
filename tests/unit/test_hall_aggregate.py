"""The hall aggregate's own rules: what a registration must give, a key used once, AB岗 staffed
by the hall itself with two different operators, and a retired hall that can do nothing more.
Each refusal names the field (or the state) and triggers no event."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.domain.hall import Hall
from hub.domain.regions import RegionCode
from hub.domain.values import Actor
from hub.errors import InvalidInput, PermissionRefused, TransitionRefused


def _key() -> str:
    return base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes_raw()).decode()


def _hall(**changes: object) -> Hall:
    given: dict[str, object] = {
        "hall_id": "hn-shatou-town",
        "name": "沙头镇便民服务中心",
        "region": RegionCode("430902104000"),
        "windows": ("综合窗口", "出件窗口"),
        "public_key": _key(),
        **changes,
    }
    return Hall.register(**given)  # type: ignore[arg-type]


SELF = Actor(hall_id="hn-shatou-town", operator="王芳", region="430902104000")


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"hall_id": "HN"}, "hall_id", "use 3-64 of a-z, 0-9, '.', '-'"),
        ({"name": "  "}, "name", "must not be empty"),
        ({"windows": ()}, "windows", "name at least one window"),
        ({"windows": ("综合窗口", " ")}, "windows", "name at least one window"),
        ({"public_key": "not base64!"}, "public_key", "not base64"),
        ({"public_key": base64.b64encode(b"short").decode()}, "public_key",
         "an Ed25519 public key has 32 bytes, got 5"),
    ],
)  # fmt: skip
def test_a_registration_missing_what_a_hall_needs_is_refused_naming_the_field(
    changes: dict[str, object], field: str, reason: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        _hall(**changes)
    assert (refused.value.field, refused.value.reason) == (field, reason)


def test_a_registered_hall_has_the_level_of_its_region_and_signs_with_its_latest_key() -> None:
    hall = _hall()
    assert hall.level.name == "TOWNSHIP"
    first, second = hall.current_key, _key()
    hall.rotate_key(second)
    assert hall.public_keys == (first, second) and hall.current_key == second


def test_a_key_the_hall_used_before_is_refused() -> None:
    hall = _hall()
    first = hall.current_key
    hall.rotate_key(_key())
    with pytest.raises(InvalidInput, match="this key was already used by the hall"):
        hall.rotate_key(first)
    assert len(hall.collect_events()) == 2  # registered, rotated once


def test_ab_posts_are_staffed_by_the_hall_itself_with_two_operators_at_one_of_its_windows() -> None:
    hall = _hall()
    hall.staff_window(SELF, "综合窗口", "王芳", "李强", a_post_absent=False)
    other = Actor(hall_id="hn-yiyang-city", operator="赵", region="430900000000")
    refusals: list[tuple[Actor, str, str, str, type[Exception], str]] = [
        (other, "综合窗口", "王芳", "李强", PermissionRefused, "a hall staffs its own windows only"),
        (SELF, "后台", "王芳", "李强", InvalidInput, "not a window of hall hn-shatou-town"),
        (SELF, "综合窗口", " ", "李强", InvalidInput, "name the operator of the A post"),
        (SELF, "综合窗口", "王芳", "", InvalidInput, "name another operator for the B post"),
        (SELF, "综合窗口", "王芳", "王芳", InvalidInput, "name another operator for the B post"),
    ]  # fmt: skip
    for actor, window, a_post, b_post, error, message in refusals:
        with pytest.raises(error, match=message):
            hall.staff_window(actor, window, a_post, b_post, a_post_absent=False)
    (_registered, staffed) = hall.collect_events()
    assert isinstance(staffed, Hall.WindowStaffed) and staffed.b_post == "李强"


def test_a_retired_hall_can_neither_rotate_its_key_nor_retire_again() -> None:
    hall = _hall()
    with pytest.raises(InvalidInput, match="must not be empty"):
        hall.retire(" ")
    hall.retire("并入益阳市政务服务中心")
    assert hall.retired
    with pytest.raises(TransitionRefused, match="'rotate_key' is not allowed in state RETIRED"):
        hall.rotate_key(_key())
    with pytest.raises(TransitionRefused, match="'retire' is not allowed in state RETIRED"):
        hall.retire("again")
    assert [type(e).__name__ for e in hall.collect_events()] == ["Registered", "Retired"]

"""The service-item catalogue: shipped data and the checks that stop a bad entry."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.domain.items import Catalogue
from hub.domain.regions import Level, RegionCode
from hub.domain.values import CaseKind, CrossRegionMode
from hub.errors import ConfigurationError, InvalidInput


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load_default()


def test_shipped_catalogue_covers_every_kind_mode_and_level(catalogue: Catalogue) -> None:
    assert len(catalogue) >= 25
    assert {item.kind for item in catalogue} == set(CaseKind)
    modes = {mode for item in catalogue for mode in item.cross_region_modes}
    assert modes == set(CrossRegionMode) - {CrossRegionMode.LOCAL}
    assert {item.competent_level for item in catalogue} == set(Level)
    assert any(item.certificate for item in catalogue)
    assert all(item.promised_days <= item.statutory_days for item in catalogue)


def test_seed_items_are_present(catalogue: Catalogue) -> None:
    names = " ".join(item.name for item in catalogue)
    for word in (
        "老年人优待证",  # 老年人证
        "资格认证",  # 生存认证
        "养老保险参保",  # 社保
        "医疗保险参保",  # 新农合/医保
        "惠农补贴",  # 涉农资金兑付
        "建房",  # 建房审批
        "户口迁移",  # 户籍
        "个体工商户",  # 营业执照
        "最低生活保障",  # 贫困证明's successor
    ):
        assert word in names, word


def _entry(**changes: Any) -> dict[str, Any]:
    entry = {
        "code": "000000000001",
        "name": "测试事项",
        "kind": "PROMISED",
        "department": "县级民政部门",
        "competent_level": "COUNTY",
        "legal_basis": ["《社会救助暂行办法》"],
        "conditions": ["条件"],
        "materials": [{"name": "居民身份证", "required": True, "form": "原件"}],
        "procedure": ["收件", "受理", "决定"],
        "promised_days": 5,
        "statutory_days": 20,
        "fee_basis": "无",
        "fee_standard": "不收费",
        "certificate": None,
        "cross_region_modes": [],
        "offsite_intake_provinces": [],
        "joint_departments": [],
    }
    entry.update(changes)
    return entry


def _load(*entries: dict[str, Any]) -> Catalogue:
    return Catalogue.from_json(json.dumps({"edition": "t", "items": list(entries)}), "test.json")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"code": "abc"}, "'code'"),
        ({"kind": "SOMETIMES"}, "'kind'"),
        ({"competent_level": "PLANET"}, "'competent_level'"),
        ({"promised_days": 30}, "'statutory_days'"),
        ({"promised_days": "5"}, "'promised_days'"),
        ({"promised_days": True}, "'promised_days'"),
        ({"kind": "IMMEDIATE"}, "'promised_days'"),
        ({"materials": []}, "'materials'"),
        ({"legal_basis": []}, "'legal_basis'"),
        ({"certificate": {"type_code": "12", "name": "x"}}, "'certificate.type_code'"),
        ({"cross_region_modes": ["OFFSITE_PROXY"]}, "'offsite_intake_provinces'"),
        ({"cross_region_modes": ["TELEPORT"]}, "'cross_region_modes'"),
        ({"kind": "JOINT"}, "'joint_departments'"),
        (
            {"offsite_intake_provinces": ["4"], "cross_region_modes": ["OFFSITE_PROXY"]},
            "'offsite_intake_provinces'",
        ),
        ({"name": " "}, "'name': must not be empty"),
        ({"fee_basis": None}, "'fee_basis'"),
        ({"promised_days": -1}, "'promised_days': must not be negative"),
        ({"legal_basis": ["《行政许可法》", " "]}, "'legal_basis': every entry must be"),
        ({"materials": [{"required": True}]}, "'materials[0]': needs a name"),
        ({"certificate": "居民身份证"}, "'certificate': expected an object or null"),
        ({"cross_region_modes": ["LOCAL"]}, "LOCAL is not a 跨省通办 mode"),
        ({"recurs_every_months": 121}, "'recurs_every_months': expected 0-120 months"),
        ({"recurs_every_months": True}, "'recurs_every_months'"),
    ],
)
def test_bad_entry_names_entry_and_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _load(_entry(), _entry(**{"code": "000000000002", **changes}))
    message = str(caught.value)
    assert "items[1]" in message
    assert field in message


def test_duplicate_codes_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="duplicate code"):
        _load(_entry(), _entry())


def test_not_json_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="not JSON"):
        Catalogue.from_json("{", "broken.json")


def test_a_document_without_items_or_with_an_entry_not_an_object_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="expected an object with 'items'"):
        Catalogue.from_json('{"edition": "t"}', "empty.json")
    with pytest.raises(ConfigurationError, match=r"items\[1\]: an entry must be an object"):
        Catalogue.from_json(json.dumps({"items": [_entry(), "070302001000"]}), "odd.json")
    entry = _entry()
    del entry["fee_standard"]
    with pytest.raises(ConfigurationError, match="'fee_standard'.*missing"):
        _load(entry)


def test_unknown_and_malformed_codes_are_invalid_input(catalogue: Catalogue) -> None:
    with pytest.raises(InvalidInput, match="not in the service-item catalogue"):
        catalogue.get("999999999999")
    with pytest.raises(InvalidInput, match="malformed"):
        catalogue.get("bad code")


def test_offsite_intake_rules() -> None:
    item = _load(
        _entry(cross_region_modes=["OFFSITE_PROXY"], offsite_intake_provinces=["42", "61"])
    ).get("000000000001")
    hunan = RegionCode.parse("430902")
    assert item.allows_intake_in(RegionCode.parse("430903"), hunan) is CrossRegionMode.LOCAL
    assert item.allows_intake_in(RegionCode.parse("421281"), hunan) is CrossRegionMode.OFFSITE_PROXY
    with pytest.raises(InvalidInput, match="off-site only in provinces 42, 61"):
        item.allows_intake_in(RegionCode.parse("110101"), hunan)
    # An item handled wholly online may be applied for from any province (全程网办).
    online = _load(_entry(cross_region_modes=["FULLY_ONLINE"])).get("000000000001")
    assert (
        online.allows_intake_in(RegionCode.parse("110101"), hunan) is CrossRegionMode.FULLY_ONLINE
    )
    local_only = _load(_entry()).get("000000000001")
    with pytest.raises(InvalidInput, match="not a 跨省通办 item"):
        local_only.allows_intake_in(RegionCode.parse("421281"), hunan)

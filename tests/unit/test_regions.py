"""Region codes and the region registry."""

from __future__ import annotations

import pytest

from hub.domain.regions import REGION_EDITION, Level, RegionCode, RegionRegistry, read_names
from hub.errors import ConfigurationError, InvalidInput


@pytest.fixture(scope="module")
def registry() -> RegionRegistry:
    return RegionRegistry.load_default()


def test_levels_follow_the_last_non_zero_segment() -> None:
    assert RegionCode.parse("43").level is Level.PROVINCE
    assert RegionCode.parse("4309").level is Level.CITY
    assert RegionCode.parse("430902").level is Level.COUNTY
    assert RegionCode.parse("430902104").level is Level.TOWNSHIP
    assert RegionCode.parse("430902104201").level is Level.VILLAGE


def test_ancestry_is_pure_code_arithmetic() -> None:
    village = RegionCode.parse("430902104201")
    assert [a.short for a in village.ancestors()] == ["430902104", "430902", "4309", "43"]
    assert RegionCode.parse("430902").contains(village)
    assert not RegionCode.parse("430903").contains(village)
    assert not village.contains(RegionCode.parse("430902"))
    assert village.province == RegionCode.parse("43")


def test_city_without_counties_skips_the_county_segment() -> None:
    # 东莞市 lists its townships directly: 4419 00 003.
    township = RegionCode.parse("441900003")
    assert township.level is Level.TOWNSHIP
    assert township.parent == RegionCode.parse("4419")
    assert list(township.ancestors()) == [RegionCode.parse("4419"), RegionCode.parse("44")]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("4309021", "2, 4, 6, 9 or 12 digits"),
        ("43090210420A", "2, 4, 6, 9 or 12 digits"),
        ("", "2, 4, 6, 9 or 12 digits"),
        ("00", "province segment 00"),
        ("４３", "2, 4, 6, 9 or 12 digits"),  # full-width digits are not ASCII
    ],
)
def test_malformed_codes_are_refused_naming_the_field(text: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        RegionCode.parse(text, field="intake_region")
    assert caught.value.field == "intake_region"
    assert reason in str(caught.value)


def test_registry_has_the_shipped_edition(registry: RegionRegistry) -> None:
    assert registry.edition == REGION_EDITION
    assert len(registry) > 40_000
    assert registry.full_name(RegionCode.parse("430902104")) == "湖南省益阳市资阳区沙头镇"
    assert registry.get("421281").name == "赤壁市"
    assert registry.get("610929").name == "白河县"


def test_children_and_parent(registry: RegionRegistry) -> None:
    children = registry.children(RegionCode.parse("430902"))
    names = [child.name for child in children]
    assert "沙头镇" in names
    assert all(child.level is Level.TOWNSHIP for child in children)
    parent = registry.parent(RegionCode.parse("430902104"))
    assert parent is not None
    assert parent.name == "资阳区"
    assert registry.parent(RegionCode.parse("43")) is None


def test_village_codes_are_checked_against_their_township(registry: RegionRegistry) -> None:
    village = registry.get("430902104201")
    assert village.level is Level.VILLAGE
    assert "村委会" in village.name
    with pytest.raises(InvalidInput, match="township is not a known region"):
        registry.get("430902999201")
    with pytest.raises(InvalidInput, match="001-399"):
        registry.get("430902104501")


def test_unknown_code_names_field_and_value(registry: RegionRegistry) -> None:
    with pytest.raises(InvalidInput) as caught:
        registry.validate("439999", field="competent_region")
    assert caught.value.field == "competent_region"
    assert caught.value.value == "439999000000"
    assert "2023 edition" in caught.value.reason


def test_the_division_code_rows_become_names_by_twelve_digit_code() -> None:
    rows = [
        ["code", "name", "provinceCode"],
        ["4309", "益阳市", "43"],
        ["430902104", "沙头镇", "43"],
    ]
    assert read_names("cities.csv", rows) == {"430900000000": "益阳市", "430902104000": "沙头镇"}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [["name", "code"], ["4309", "益阳市"]],
            "regions/x.csv: expected the columns code,name first",
        ),
        ([], "regions/x.csv: expected the columns code,name first"),
        (
            [["code", "name"], ["43", "湖南省"], ["431", "?"]],
            "regions/x.csv line 3: bad code '431'",
        ),
        ([["code", "name"], ["0012", "?"]], "regions/x.csv line 2: bad code '0012'"),
        ([["code", "name"], ["43a9", "?"]], "regions/x.csv line 2: bad code '43a9'"),
        ([["code", "name"], ["４３", "?"]], "regions/x.csv line 2: bad code '４３'"),
        ([["code", "name"], ["4309"]], "regions/x.csv line 2: bad code '4309'"),
        ([["code", "name"], []], "regions/x.csv line 2: bad code ''"),
    ],
)
def test_a_bad_division_code_row_is_named_by_file_and_line(
    rows: list[list[str]], message: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        read_names("x.csv", rows)
    assert str(raised.value) == message


def test_the_shipped_edition_loads_every_row(registry: RegionRegistry) -> None:
    assert len(registry) == 44_699
    assert registry.get("610929").name == "白河县"

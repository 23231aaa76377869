"""The service-item catalogue (政务服务事项目录).

The catalogue is a JSON data file shipped with the package (``data/service_items.json``) or given
by the operator. Every entry is checked when it is loaded; a bad entry stops start-up with a
:class:`~hub.errors.ConfigurationError` naming the entry and the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from hub.domain.regions import Level, RegionCode
from hub.domain.values import CaseKind, CrossRegionMode, IdentityCheckMethod
from hub.errors import ConfigurationError, InvalidInput

_CODE = re.compile(r"^[0-9]{12}[A-Z0-9]{0,8}$")
_CERTIFICATE_TYPE = re.compile(r"^[0-9]{6}$")


@dataclass(frozen=True)
class MaterialRequirement:
    """One entry of 申报材料."""

    name: str
    required: bool
    form: str


@dataclass(frozen=True)
class CertificateType:
    """The certificate an approved case produces."""

    type_code: str
    name: str


@dataclass(frozen=True)
class ServiceItem:
    """A catalogued service with its published guide fields (办事指南)."""

    code: str
    name: str
    kind: CaseKind
    department: str
    competent_level: Level
    legal_basis: tuple[str, ...]
    conditions: tuple[str, ...]
    materials: tuple[MaterialRequirement, ...]
    procedure: tuple[str, ...]
    promised_days: int
    statutory_days: int
    fee_basis: str
    fee_standard: str
    certificate: CertificateType | None
    cross_region_modes: tuple[CrossRegionMode, ...]
    offsite_intake_provinces: tuple[str, ...]
    joint_departments: tuple[str, ...]
    #: The identity checks (身份证识别, 人脸识别, 生存认证) a case needs passed before 受理.
    required_checks: tuple[IdentityCheckMethod, ...] = ()
    #: A periodic item (the yearly 生存认证 of a pensioner): every how many months; 0: not.
    recurs_every_months: int = 0

    def allows_intake_in(self, intake: RegionCode, competent: RegionCode) -> CrossRegionMode:
        """The cross-region mode for taking this item in at ``intake`` for ``competent``.

        Raises InvalidInput when the item may not be taken in there.
        """
        if intake.province == competent.province:
            return CrossRegionMode.LOCAL
        if CrossRegionMode.OFFSITE_PROXY in self.cross_region_modes:
            if intake.province.short in self.offsite_intake_provinces:
                return CrossRegionMode.OFFSITE_PROXY
            raise InvalidInput(
                "intake_region",
                intake.value,
                f"item {self.code} may be taken in off-site only in provinces "
                f"{', '.join(self.offsite_intake_provinces)}",
            )
        if CrossRegionMode.FULLY_ONLINE in self.cross_region_modes:
            return CrossRegionMode.FULLY_ONLINE
        raise InvalidInput(
            "competent_region",
            competent.value,
            f"item {self.code} is not a 跨省通办 item: intake and competent region must share "
            "a province",
        )

    def mode_for(
        self, intake: RegionCode, competent: RegionCode, home: RegionCode | None = None
    ) -> CrossRegionMode:
        """The case's mode: as :meth:`allows_intake_in`, and 全程网办 (``FULLY_ONLINE``) when
        an applicant whose home region is in another province applies at the competent
        region's own hall (the item must allow it)."""
        mode = self.allows_intake_in(intake, competent)
        if home is None or home.province == competent.province or mode is not CrossRegionMode.LOCAL:
            return mode
        if CrossRegionMode.FULLY_ONLINE not in self.cross_region_modes:
            raise InvalidInput(
                "home_region",
                home.value,
                f"item {self.code} is not a 全程网办 item: an applicant from another province "
                "applies through 异地代收代办 at a hall there",
            )
        return CrossRegionMode.FULLY_ONLINE


class Catalogue:
    """The service items a node offers, by code."""

    def __init__(self, items: list[ServiceItem], edition: str) -> None:
        self.edition = edition
        self._items = {item.code: item for item in items}

    @classmethod
    def load_default(cls) -> Catalogue:
        """The catalogue shipped with the package."""
        text = (resources.files("hub.domain") / "data" / "service_items.json").read_text("utf-8")
        return cls.from_json(text, source="service_items.json")

    @classmethod
    def load(cls, path: Path) -> Catalogue:
        """A catalogue from an operator's file."""
        try:
            text = path.read_text("utf-8")
        except UnicodeDecodeError as error:
            raise ConfigurationError(f"{path}: not UTF-8 text ({error.reason})") from None
        except OSError as error:
            raise ConfigurationError(f"catalogue {path}: cannot read: {error}") from None
        return cls.from_json(text, source=str(path))

    @classmethod
    def from_json(cls, text: str, source: str) -> Catalogue:
        """Parse and check every entry; the first bad one raises ConfigurationError."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigurationError(f"catalogue {source}: not JSON: {error}") from None
        if not isinstance(document, dict) or not isinstance(document.get("items"), list):
            raise ConfigurationError(f"catalogue {source}: expected an object with 'items'")
        items: list[ServiceItem] = []
        seen: set[str] = set()
        for position, entry in enumerate(document["items"]):
            item = _parse_item(entry, f"catalogue {source}: items[{position}]")
            if item.code in seen:
                raise ConfigurationError(
                    f"catalogue {source}: items[{position}] ({item.code}): field 'code': "
                    "duplicate code"
                )
            seen.add(item.code)
            items.append(item)
        return cls(items, str(document.get("edition", "")))

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[ServiceItem]:
        return iter(self._items.values())

    def get(self, code: str, field: str = "item_code") -> ServiceItem:
        """The item with ``code``; InvalidInput naming ``field`` when unknown."""
        item = self._items.get(code)
        if item is None:
            if not _CODE.fullmatch(code):
                raise InvalidInput(field, code, "malformed item code")
            raise InvalidInput(field, code, "not in the service-item catalogue")
        return item


def _parse_item(entry: Any, where: str) -> ServiceItem:
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{where}: an entry must be an object")
    label = f"{where} ({entry.get('code', '?')})"

    def fail(field: str, reason: str) -> ConfigurationError:
        return ConfigurationError(f"{label}: field {field!r}: {reason}")

    def get(field: str, kind: type | tuple[type, ...]) -> Any:
        if field not in entry:
            raise fail(field, "missing")
        value = entry[field]
        if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
            raise fail(field, f"expected {getattr(kind, '__name__', kind)}, got {value!r}")
        return value

    def texts(field: str, *, allow_empty: bool = False) -> tuple[str, ...]:
        values = get(field, list)
        if not allow_empty and not values:
            raise fail(field, "must not be empty")
        if any(not isinstance(v, str) or not v.strip() for v in values):
            raise fail(field, "every entry must be a non-empty string")
        return tuple(values)

    def enum_of(field: str, parse: Callable[[str], Any], value: str) -> Any:
        try:
            return parse(value)
        except (KeyError, ValueError):
            raise fail(field, f"unknown value {value!r}") from None

    code = get("code", str)
    if not _CODE.fullmatch(code):
        raise fail("code", f"{code!r} does not match {_CODE.pattern}")
    name = get("name", str)
    if not name.strip():
        raise fail("name", "must not be empty")
    kind = enum_of("kind", CaseKind, get("kind", str))
    level = enum_of("competent_level", Level.__getitem__, get("competent_level", str))
    promised = get("promised_days", int)
    statutory = get("statutory_days", int)
    if promised < 0:
        raise fail("promised_days", "must not be negative")
    if statutory < promised:
        raise fail("statutory_days", f"{statutory} is shorter than promised_days {promised}")
    if kind is CaseKind.IMMEDIATE and promised != 0:
        raise fail("promised_days", "an IMMEDIATE item is done on the spot (0 days)")
    materials = []
    for position, material in enumerate(get("materials", list)):
        if not isinstance(material, dict) or not str(material.get("name", "")).strip():
            raise fail(f"materials[{position}]", "needs a name")
        materials.append(
            MaterialRequirement(
                str(material["name"]), bool(material.get("required", True)), str(material["form"])
            )
        )
    if not materials:
        raise fail("materials", "must not be empty")
    certificate_entry = entry.get("certificate")
    certificate = None
    if certificate_entry is not None:
        if not isinstance(certificate_entry, dict):
            raise fail("certificate", "expected an object or null")
        type_code = str(certificate_entry.get("type_code", ""))
        if not _CERTIFICATE_TYPE.fullmatch(type_code):
            raise fail("certificate.type_code", f"{type_code!r} is not 6 digits")
        certificate = CertificateType(type_code, str(certificate_entry.get("name", "")))
    modes = tuple(
        enum_of("cross_region_modes", CrossRegionMode, m)
        for m in texts("cross_region_modes", allow_empty=True)
    )
    if CrossRegionMode.LOCAL in modes:
        raise fail("cross_region_modes", "LOCAL is not a 跨省通办 mode")
    provinces = texts("offsite_intake_provinces", allow_empty=True)
    for province in provinces:
        if not re.fullmatch(r"[1-9][0-9]", province):
            raise fail("offsite_intake_provinces", f"{province!r} is not a 2-digit province code")
    if (CrossRegionMode.OFFSITE_PROXY in modes) != bool(provinces):
        raise fail("offsite_intake_provinces", "non-empty exactly when OFFSITE_PROXY is a mode")
    joint = texts("joint_departments", allow_empty=True)
    if (kind is CaseKind.JOINT) != bool(joint):
        raise fail("joint_departments", "non-empty exactly when the kind is JOINT")
    checks = (
        tuple(
            enum_of("required_checks", IdentityCheckMethod, m)
            for m in texts("required_checks", allow_empty=True)
        )
        if "required_checks" in entry
        else ()
    )
    if len(set(checks)) != len(checks):
        raise fail("required_checks", "a check is listed twice")
    recurs = entry.get("recurs_every_months", 0)
    if not isinstance(recurs, int) or isinstance(recurs, bool) or not 0 <= recurs <= 120:
        raise fail("recurs_every_months", f"expected 0-120 months, got {recurs!r}")
    return ServiceItem(
        code=code,
        name=name,
        kind=kind,
        department=get("department", str),
        competent_level=level,
        legal_basis=texts("legal_basis"),
        conditions=texts("conditions"),
        materials=tuple(materials),
        procedure=texts("procedure"),
        promised_days=promised,
        statutory_days=statutory,
        fee_basis=get("fee_basis", str),
        fee_standard=get("fee_standard", str),
        certificate=certificate,
        cross_region_modes=modes,
        offsite_intake_provinces=provinces,
        joint_departments=joint,
        required_checks=checks,
        recurs_every_months=recurs,
    )

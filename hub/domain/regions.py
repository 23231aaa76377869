"""Region codes (区划代码) and the region registry.

A region code has 12 digits ``PP CC DD TTT VVV``: province, city, county/district, township and
village segments. A code's level is its last non-zero segment, and a code's ancestors are found by
zeroing segments from the right, so ancestry and level are pure functions of the code. (A few
cities have no county level, e.g. 东莞市: its townships 4419 00 003 skip the zero segment.)

The registry holds the official names of the first four levels from the statistical division codes
shipped as package data (with their edition, because codes are re-issued yearly). Village codes are
not in that data set; a village code is valid when its township exists and its 3-digit village
segment is in the official ranges (001-199 residents' committees, 200-399 villagers' committees).
"""

from __future__ import annotations

import csv
import enum
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources

from hub.errors import ConfigurationError, InvalidInput

#: Edition of the shipped division codes (reference date 2023-06-30).
REGION_EDITION = "2023"

# (start, end) of each segment in the 12-digit code, outermost first.
_SEGMENTS = ((0, 2), (2, 4), (4, 6), (6, 9), (9, 12))
_SHORT_LENGTHS = {2: 0, 4: 1, 6: 2, 9: 3, 12: 4}


class Level(enum.IntEnum):
    """Administrative level of a region or hall; a smaller value is a higher level."""

    PROVINCE = 1
    CITY = 2
    COUNTY = 3
    TOWNSHIP = 4
    VILLAGE = 5

    @property
    def label(self) -> str:
        """Chinese name of the level."""
        return _LEVEL_LABELS[self]


_LEVEL_LABELS = {
    Level.PROVINCE: "省",
    Level.CITY: "市",
    Level.COUNTY: "区/县",
    Level.TOWNSHIP: "乡镇/街道",
    Level.VILLAGE: "村/社区",
}


@dataclass(frozen=True, order=True)
class RegionCode:
    """A 12-digit region code. Build one with :meth:`parse`, which accepts the short forms too."""

    value: str

    def __post_init__(self) -> None:
        if len(self.value) != 12 or not self.value.isascii() or not self.value.isdigit():
            raise InvalidInput("region", self.value, "a region code has 12 digits")
        if self.value[:2] == "00":
            raise InvalidInput("region", self.value, "province segment 00 does not exist")
        # Note: a zero segment may sit above a non-zero one. Cities without counties (东莞市
        # 4419, 中山市 4420, 儋州市 4604) list townships directly: 441900003 is a township.

    @classmethod
    def parse(cls, text: str, field: str = "region") -> RegionCode:
        """Parse a 2, 4, 6, 9 or 12 digit code, padding the short forms with zeros."""
        text = text.strip()
        if not text.isascii() or not text.isdigit() or len(text) not in _SHORT_LENGTHS:
            raise InvalidInput(field, text, "expected a region code of 2, 4, 6, 9 or 12 digits")
        try:
            return cls(text.ljust(12, "0"))
        except InvalidInput as error:
            raise InvalidInput(field, text, error.reason) from None

    @property
    def level(self) -> Level:
        """The level is that of the last non-zero segment."""
        return _level_of(self.value)

    @property
    def short(self) -> str:
        """The code without its trailing zero segments (``430902104`` for a township)."""
        return self.value[: _SEGMENTS[self.level - 1][1]]

    @property
    def province(self) -> RegionCode:
        """The province this code belongs to."""
        return self.ancestor_at(Level.PROVINCE)

    def ancestor_at(self, level: Level) -> RegionCode:
        """The region at ``level`` containing this one (itself when at that level)."""
        if level > self.level:
            raise InvalidInput("level", level.name, f"{self.value} is above that level")
        end = _SEGMENTS[level - 1][1]
        return RegionCode(self.value[:end].ljust(12, "0"))

    @property
    def parent(self) -> RegionCode | None:
        """The region one level up, or None for a province."""
        for level in range(self.level - 1, 0, -1):
            ancestor = self.ancestor_at(Level(level))
            if ancestor != self:
                return ancestor
        return None

    def ancestors(self) -> Iterator[RegionCode]:
        """Parents up to the province, nearest first."""
        parent = self.parent
        while parent is not None:
            yield parent
            parent = parent.parent

    def contains(self, other: RegionCode) -> bool:
        """True when ``other`` is this region or lies inside it."""
        return other.level >= self.level and other.ancestor_at(self.level) == self

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Region:
    """A named region of the registry."""

    code: RegionCode
    name: str

    @property
    def level(self) -> Level:
        """Level of the region."""
        return self.code.level


class RegionRegistry:
    """Official regions of one edition, with parent, children, level and validation queries."""

    def __init__(self, names: dict[str, str], edition: str) -> None:
        """``names``: the official name of each known region, by its 12-digit code."""
        self.edition = edition
        # Names by plain code, Regions made when asked for: every command-line call and node
        # process loads the registry, and building 45,000 objects took most of its load time.
        self._names = names
        #: Child codes by parent, built on the first ``children`` call: walking 45,000 codes up
        #: to their parents takes longer than loading them, and only listings need it.
        self._children: dict[RegionCode, list[RegionCode]] | None = None

    @classmethod
    @functools.cache
    def load_default(cls) -> RegionRegistry:
        """The registry of the shipped edition (cached: loading reads about 45,000 rows)."""
        data = resources.files("hub.domain") / "data" / "regions"
        names: dict[str, str] = {}
        for filename in ("provinces.csv", "cities.csv", "areas.csv", "streets.csv"):
            lines = (data / filename).read_text(encoding="utf-8").splitlines()
            names.update(read_names(filename, csv.reader(lines)))
        return cls(names, REGION_EDITION)

    def __len__(self) -> int:
        return len(self._names)

    def get(self, code: RegionCode | str, field: str = "region") -> Region:
        """Return the region for ``code``, or raise InvalidInput naming ``field``.

        Village codes are accepted when their township exists and the village segment is in
        001-399; they get a name from their number because the data set has no village names.
        """
        parsed = code if isinstance(code, RegionCode) else RegionCode.parse(code, field)
        name = self._names.get(parsed.value)
        if name is not None:
            return Region(parsed, name)
        if parsed.level == Level.VILLAGE:
            township = self._names.get(parsed.ancestor_at(Level.TOWNSHIP).value)
            village = int(parsed.value[9:])
            if township is None:
                raise InvalidInput(field, parsed.value, "its township is not a known region")
            if not 1 <= village <= 399:
                raise InvalidInput(field, parsed.value, "village segment must be 001-399")
            kind = "社区居委会" if village < 200 else "村委会"
            return Region(parsed, f"{village:03d}号{kind}")
        raise InvalidInput(field, parsed.value, f"not a region of the {self.edition} edition")

    def validate(self, code: str, field: str = "region") -> RegionCode:
        """Parse and check ``code``; raise InvalidInput naming ``field`` when unknown."""
        return self.get(code, field).code

    def parent(self, code: RegionCode) -> Region | None:
        """The parent region, or None for a province."""
        parent = code.parent
        return None if parent is None else self.get(parent)

    def children(self, code: RegionCode) -> list[Region]:
        """Known child regions, in code order (villages are not listed)."""
        if self._children is None:
            index: dict[RegionCode, list[RegionCode]] = {}
            for value in self._names:
                known = RegionCode(value)
                parent = known.parent
                if parent is not None:
                    index.setdefault(parent, []).append(known)
            for children in index.values():
                children.sort()
            # Assigned once complete: a thread that reads it meanwhile builds its own copy.
            self._children = index
        return [Region(child, self._names[child.value]) for child in self._children.get(code, [])]

    def path(self, code: RegionCode) -> list[Region]:
        """The region and its ancestors, province first: 湖南省 / 益阳市 / 资阳区 / 沙头镇."""
        region = self.get(code)
        return [*(self.get(a) for a in reversed(list(code.ancestors()))), region]

    def full_name(self, code: RegionCode) -> str:
        """Names from the province down, joined without separators as on official documents."""
        return "".join(region.name for region in self.path(code))


def read_names(filename: str, rows: Iterable[list[str]]) -> dict[str, str]:
    """Official names by 12-digit code from the rows of one division-code CSV file (a header
    ``code,name,...`` first); raises ConfigurationError naming the file and line of a bad row."""
    rows = iter(rows)
    if next(rows, [])[:2] != ["code", "name"]:
        raise ConfigurationError(f"regions/{filename}: expected the columns code,name first")
    names: dict[str, str] = {}
    for line_number, row in enumerate(rows, start=2):
        code = row[0] if row else ""
        # The checks of RegionCode.parse, inline: the registry's load runs this 45,000 times.
        if (
            len(row) < 2
            or len(code) not in _SHORT_LENGTHS
            or not code.isascii()
            or not code.isdigit()
            or code.startswith("00")
        ):
            raise ConfigurationError(f"regions/{filename} line {line_number}: bad code {code!r}")
        names[code.ljust(12, "0")] = row[1]
    return names


@functools.lru_cache(maxsize=65_536)
def _level_of(value: str) -> Level:
    # Cached: every command asks the level of its halls' regions several times, and a node
    # knows a few thousand regions at most.
    level = Level.PROVINCE
    for number, (start, end) in enumerate(_SEGMENTS, start=1):
        if set(value[start:end]) != {"0"}:
            level = Level(number)
    return level

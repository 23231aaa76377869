"""hub.output: headed tables aligned by display width (CJK takes two cells), readable JSON."""

from __future__ import annotations

import enum
import io
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest

from hub.cli import main
from hub.output import plain, print_json, print_table


def _width(text: str) -> int:
    """Terminal cells of ``text``, measured independently of rich: wide and fullwidth are 2."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _starts(line: str, cells: list[str]) -> list[int]:
    """The display column at which each of ``cells`` starts in ``line`` (searched in order)."""
    starts, position = [], 0
    for cell in cells:
        position = line.index(cell, position)
        starts.append(_width(line[:position]))
        position += len(cell)
    return starts


def test_a_table_has_a_header_row_and_columns_aligned_for_cjk_text() -> None:
    out = io.StringIO()
    rows = [
        ["430902104", "沙头镇", "TOWNSHIP", 12],
        ["430902401", "长春经济开发区", "TOWNSHIP", 7],
        ["4309", "Yiyang 益阳市", "CITY", 1234],
    ]
    print_table(["code", "name", "level", "count"], rows, file=out)
    header, rule, *body = out.getvalue().splitlines()
    assert header.split() == ["code", "name", "level", "count"]
    assert set(rule) == {"-"}  # plain ASCII under the header when not a terminal
    assert len(body) == 3
    columns = [
        _starts(line, [str(c) for c in row[:3]]) for line, row in zip(body, rows, strict=True)
    ]
    assert columns[0] == columns[1] == columns[2] == _starts(header, ["code", "name", "level"])
    # Numbers are right-aligned: every count ends in the same display column.
    ends = {_width(line) for line in body}
    assert len(ends) == 1 and _width(header) == ends.pop()


def test_a_plain_table_has_no_colour_codes_no_trailing_spaces_and_never_wraps() -> None:
    out = io.StringIO()
    long = "很长的名称" * 60  # far wider than any terminal
    print_table(["a", "b"], [["[bold]x[/bold]", long], [None, "y"]], file=out)
    text = out.getvalue()
    assert "\x1b" not in text
    assert all(line == line.rstrip() for line in text.splitlines())
    assert len(text.splitlines()) == 4  # header, rule, two rows: nothing wrapped
    assert "[bold]x[/bold]" in text  # cells are text, never markup
    assert long in text


def test_a_row_with_the_wrong_number_of_cells_is_a_bug() -> None:
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 headers"):
        print_table(["a", "b"], [["only one"]], file=io.StringIO())


class _Level(enum.IntEnum):
    TOWNSHIP = 4


@dataclass(frozen=True)
class _Item:
    name: str
    level: _Level
    tags: tuple[str, ...]
    where: Path
    case: UUID


def test_json_is_readable_utf8_and_plain() -> None:
    out = io.StringIO()
    item = _Item("沙头镇", _Level.TOWNSHIP, ("一窗受理",), Path("/tmp/x"), UUID(int=1))
    print_json({"items": [item], "ok": True, "none": None}, file=out)
    text = out.getvalue()
    assert "\\u" not in text and "沙头镇" in text
    assert json.loads(text) == {
        "items": [
            {
                "name": "沙头镇",
                "level": "TOWNSHIP",
                "tags": ["一窗受理"],
                "where": "/tmp/x",
                "case": "00000000-0000-0000-0000-000000000001",
            }
        ],
        "ok": True,
        "none": None,
    }
    with pytest.raises(TypeError, match="cannot print a object"):
        plain(object())


def test_json_is_utf8_even_where_the_locale_is_not() -> None:
    raw = io.BytesIO()
    latin = io.TextIOWrapper(raw, encoding="latin-1")
    print_json({"name": "湖南省"}, file=latin)
    latin.flush()
    assert json.loads(raw.getvalue().decode("utf-8")) == {"name": "湖南省"}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["catalogue"], ["code", "name", "kind", "level", "promised", "days"]),
        (["regions", "430902"], ["code", "name", "level"]),
    ],
)
def test_catalogue_and_regions_print_headed_aligned_tables(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: list[str]
) -> None:
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    header_at = next(n for n, line in enumerate(lines) if line.split()[:2] == ["code", "name"])
    header, rule, *rows = lines[header_at:]
    assert header.split()[: len(expected)] == expected
    assert set(rule) == {"-"}
    name_column = _starts(header, ["code", "name"])[1]
    table = [row for row in rows if row and len(row.split()[0]) >= 9]  # not "39 items, ..."
    assert len(table) >= 5
    for row in table:
        code, name = row.split()[:2]
        assert any("\u4e00" <= c <= "\u9fff" for c in name)
        assert _starts(row, [code, name])[1] == name_column, row


def test_regions_json_is_one_readable_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["regions", "430902", "--json"]) == 0
    out = capsys.readouterr().out
    assert "\\u" not in out
    document = json.loads(out)
    assert document["full_name"] == "湖南省益阳市资阳区"
    assert document["level"] == "COUNTY"
    assert {
        "code": "430902104000",
        "short": "430902104",
        "name": "沙头镇",
        "level": "TOWNSHIP",
    } in (document["children"])


def test_catalogue_json_is_one_readable_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalogue", "--json"]) == 0
    out = capsys.readouterr().out
    assert "\\u" not in out
    document = json.loads(out)
    item = next(i for i in document["items"] if i["code"] == "200202001000")
    assert item["name"] == "老年人优待证办理"
    assert item["kind"] == "IMMEDIATE" and item["competent_level"] == "TOWNSHIP"
    assert document["edition"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_header_is_bold_and_the_table_fits_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    out = _Terminal()
    print_table(["code", "name"], [["430902104", "沙头镇" * 20]], file=out)
    text = out.getvalue()
    assert "\x1b[1m" in text  # bold header
    plain_lines = [line for line in text.splitlines() if "\x1b" not in line]
    assert all(_width(line) <= 40 for line in plain_lines)  # long cells wrap in the window
    assert text.count("沙") == text.count("镇") == 20  # folded onto more lines, nothing cut


def test_a_locale_that_cannot_encode_chinese_gets_escapes_not_a_traceback() -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}
    env["PYTHONIOENCODING"] = "ascii"
    table = subprocess.run(
        [sys.executable, "-m", "hub.cli", "regions", "4309"],
        cwd=root, env=env, capture_output=True, check=False,
    )  # fmt: skip
    assert table.returncode == 0 and table.stderr == b""
    assert b"\\u76ca\\u9633\\u5e02" in table.stdout  # 益阳市, escaped
    document = subprocess.run(
        [sys.executable, "-m", "hub.cli", "regions", "4309", "--json"],
        cwd=root, env=env, capture_output=True, check=False,
    )  # fmt: skip
    assert document.returncode == 0 and document.stderr == b""
    assert json.loads(document.stdout.decode("utf-8"))["name"] == "益阳市"  # JSON stays UTF-8

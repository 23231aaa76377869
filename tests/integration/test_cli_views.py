"""``tongban queue|cases|warnings|ratings|stats`` and ``tongban projections rebuild|status`` on a
real node's store: headed tables aligned for CJK text, ``--json`` as one readable UTF-8 document,
``--csv`` for spreadsheets; the operator never needs a case id to find a case."""

from __future__ import annotations

import csv
import io
import json
import os
import unicodedata
from pathlib import Path

import pytest

from hub.cli import main
from hub.projections.node import open_projections
from hub.projections.supervisor import Supervisor
from hub.settings import Settings
from tests.harness.story import FOOD_LICENCE, HOUSEHOLD_MOVE, SupervisionStory, cst

COUNTY = "hn-ziyang-hall"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node whose county hall holds an overdue deferred case, a fresh one, and a paused one,
    with the supervisor's warnings recorded; the CLI reads it by TONGBAN_DATA_DIR alone."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("cli") / "node")
    story = SupervisionStory.start(settings)
    try:
        story.at(cst(2026, 3, 9, 8, 30))
        late = story.submit("village", HOUSEHOLD_MOVE, cst(2026, 3, 6, 16), deferred=True)
        story.run("village", "hand_off", cst(2026, 3, 6, 16, 5), deferred=True, case_id=late,
                  to_hall=COUNTY, reason="县级事项")  # fmt: skip
        story.run("county", "acknowledge_handoff", cst(2026, 3, 9, 9), case_id=late)
        story.submit("county", FOOD_LICENCE, cst(2026, 3, 9, 10), window="出件窗口")
        paused = story.submit("county", HOUSEHOLD_MOVE, cst(2026, 3, 9, 11))
        story.run("county", "request_correction", cst(2026, 3, 9, 11, 5), case_id=paused,
                  missing=["户口簿"], notice="一次性告知")  # fmt: skip
        projections = open_projections(story.app, node_region="43")
        projections.create_tables()
        projections.catch_up()
        story.at(cst(2026, 3, 16, 9))
        Supervisor(story.app, projections.store).record_due()
        projections.close()
    finally:
        story.close()
    return settings.data_dir


@pytest.fixture(autouse=True)
def environment(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TONGBAN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TONGBAN_DATA_DIR", str(data_dir))


def _run(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> str:
    assert main(list(argv)) == code, capsys.readouterr()
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out if code == 0 else captured.err


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _columns_aligned(lines: list[str], cell_of_line: list[str]) -> bool:
    starts = {
        _width(line[: line.index(cell)]) for line, cell in zip(lines, cell_of_line, strict=True)
    }
    return len(starts) == 1


def test_a_queue_is_a_headed_table_most_urgent_first_aligned_for_chinese(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = _run(capsys, "queue", COUNTY, "--as-of", "2026-03-16T10:00")
    header, rule, *rows, summary = out.splitlines()
    assert header.split()[:3] == ["case", "id", "state"] and set(rule) == {"-"}
    assert len(rows) == 3 and summary.startswith("3 shown")
    # The deferred case (due March 14th) is overdue and first; the paused one has no deadline.
    assert "OVERDUE" in rows[0] and "2026-03-14 00:00" in rows[0] and "RED" in rows[0]
    assert "paused" in rows[2]
    # Every row's window starts at the same display column, after item names in Chinese.
    windows = ["综合窗口", "出件窗口", "综合窗口"]
    assert _columns_aligned([header, *rows], ["window", *windows])
    overdue = _run(capsys, "queue", COUNTY, "--overdue", "--as-of", "2026-03-16T10:00")
    assert len(overdue.splitlines()) == 4  # header, rule, the one case, summary
    by_window = _run(capsys, "queue", COUNTY, "--window", "出件窗口", "--as-of", "2026-03-16")
    assert "食品经营许可" in by_window and "户口迁移" not in by_window


def test_json_is_readable_utf8_and_csv_opens_in_a_spreadsheet(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _run(capsys, "queue", COUNTY, "--json", "--as-of", "2026-03-16T10:00")
    assert "户口迁移" in text and "\\u" not in text
    document = json.loads(text)
    first = document["entries"][0]
    assert first["overdue"] and first["due_at"] == "2026-03-14T00:00:00+08:00"
    assert first["received_at"] == "2026-03-06T16:00:00+08:00"
    assert first["warnings"] == ["YELLOW", "RED"] and document["position"] > 0
    table = _run(capsys, "stats", "--by", "window", "--csv")
    assert table.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(table.lstrip("\ufeff"))))
    assert rows[0][:3] == ["window", "name", "办件量"]
    assert [row[0] for row in rows[1:]] == [
        "hn-shatou-v201/代办窗口", f"{COUNTY}/出件窗口", f"{COUNTY}/综合窗口", "total"
    ]  # fmt: skip
    assert rows[-1][2] == "3"


def test_cases_warnings_ratings_and_the_window_ranking(capsys: pytest.CaptureFixture[str]) -> None:
    near = _run(capsys, "cases", "--region", "4309", "--as-of", "2026-03-13T13:00",
                "--near-deadline", "--json")  # fmt: skip
    (entry,) = json.loads(near)["entries"]
    assert entry["near_deadline"] and entry["yellow_at"] == "2026-03-13T12:00:00+08:00"
    warnings = json.loads(_run(capsys, "warnings", "--json"))["entries"]
    assert sorted(w["kind"] for w in warnings) == ["RED", "YELLOW"]
    header, _rule, summary = _run(capsys, "ratings").splitlines()  # an empty, headed table
    assert header.split()[:3] == ["case", "id", "rating"] and summary.startswith("0 shown")
    ranking = json.loads(_run(capsys, "stats", "--rank", "--month", "2026-03", "--json"))
    # One case each, none concluded or rated yet: equal scores, ties by volume, then by hall.
    assert [(w["rank"], w["hall_id"], w["window"], w["score"]) for w in ranking["entries"]] == [
        (1, "hn-shatou-v201", "代办窗口", 0.4),
        (2, COUNTY, "出件窗口", 0.4),
        (3, COUNTY, "综合窗口", 0.4),
    ]


def test_cases_by_intake_channel_and_the_count_per_channel(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The three cases said no channel: they are window intakes, found by --channel WINDOW."""
    window = json.loads(_run(capsys, "cases", "--channel", "WINDOW", "--json"))["entries"]
    assert len(window) == 3
    assert json.loads(_run(capsys, "cases", "--channel", "HOME_VISIT", "--channel", "AGENT",
                           "--json"))["entries"] == []  # fmt: skip
    counts = json.loads(_run(capsys, "stats", "--by", "channel", "--json"))["entries"]
    assert {c["channel"]: c["received"] for c in counts} == {
        "WINDOW": 3, "ONLINE": 0, "PHONE": 0, "HOME_VISIT": 0, "AGENT": 0, "KIOSK": 0,
        "IMPORTED": 0, "PEER_NODE": 0,
    }  # fmt: skip
    # By the day each was taken in: the village's case on Friday 6 March, the others on Monday.
    monday = _run(capsys, "stats", "--by", "channel", "--from", "2026-03-09", "--to", "2026-03-09")
    assert "上门办" in monday and "2 cases taken in" in monday
    assert "--channel" in _run(capsys, "cases", "--channel", "FAX", code=2)


def test_a_rebuild_gives_the_same_listing(capsys: pytest.CaptureFixture[str]) -> None:
    before = _run(capsys, "queue", COUNTY, "--json", "--as-of", "2026-03-16T10:00")
    out = _run(capsys, "projections", "rebuild", "cases")
    assert out.startswith("rebuilt cases: ")
    assert _run(capsys, "queue", COUNTY, "--json", "--as-of", "2026-03-16T10:00") == before
    status = json.loads(_run(capsys, "projections", "status", "--json"))["projections"]
    assert {p["name"] for p in status} == {"cases", "statistics", "appointments", "agents"}
    # Each projection is at the last event of its own kinds: here the log ends with a case
    # event, and no appointment (预约办) was ever booked, so that one has read nothing.
    positions = {p["name"]: p["position"] for p in status}
    # (The agents projection reads case events too: it is there as well.)
    assert positions["cases"] == positions["statistics"] == positions["agents"] == status[0]["log"]
    assert positions["appointments"] == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["queue", COUNTY, "--as-of", "yesterday"], "--as-of 'yesterday': use ISO 8601"),
        (["stats", "--by", "colour"], "invalid choice: 'colour'"),
        (["stats", "--from", "2026-13-01"], "from_day='2026-13-01': a day is YYYY-MM-DD"),
        (["cases", "--region", "99"], "region"),
        (["projections", "rebuild", "queues"], "invalid choice: 'queues'"),
    ],
)
def test_mistakes_are_one_line_naming_the_input(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = main(argv)
    captured = capsys.readouterr()
    assert code != 0 and "Traceback" not in captured.err
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("tongban: ") and message in line

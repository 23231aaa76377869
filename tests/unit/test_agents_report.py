"""``tongban agents``' report (no I/O): one line per agent with their counts, the masked name
only when asked, and a footer that sums the cases and home visits."""

from __future__ import annotations

from datetime import UTC, datetime

from hub.projections.agents import AgentRow, agents_report

ROWS = [
    AgentRow("v-room", "dby-07", "", datetime(2026, 3, 1, 1, tzinfo=UTC), None, "", 2, 1),
    AgentRow(
        "v-room",
        "dby-08",
        "0123456789abcdef",
        datetime(2026, 3, 1, 2, tzinfo=UTC),
        datetime(2026, 3, 5, 2, tzinfo=UTC),
        "调离本村",
        0,
        0,
    ),
]


def test_the_report_has_no_personal_data_unless_names_are_given() -> None:
    report = agents_report(ROWS)
    assert report.headers == [
        "hall", "agent", "signs with", "registered", "retired", "reason", "cases", "home visits",
    ]  # fmt: skip
    assert report.rows[0] == ["v-room", "dby-07", "hall's key", "2026-03-01 09:00", "", "", 2, 1]
    assert report.rows[1][2] == "own key 0123456789abcdef"
    assert report.rows[1][4:6] == ["2026-03-05 10:00", "调离本村"]
    assert report.documents[1]["key_id"] == "0123456789abcdef"
    assert "name_masked" not in report.documents[0]
    assert report.footer == "2 agents, 2 cases, 1 home visits"


def test_names_are_the_masked_ones_given() -> None:
    report = agents_report(ROWS, {("v-room", "dby-07"): "王**"})
    assert report.headers[2] == "name (masked)"
    assert [row[2] for row in report.rows] == ["王**", ""]
    assert report.documents[0]["name_masked"] == "王**"

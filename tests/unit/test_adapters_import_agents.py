"""The register importer's 受理方式 (intake channel) and 代办 (agent) columns."""

from __future__ import annotations

import pytest
from tongban.v1 import common_pb2

from adapters.batch_import import CHANNEL_NAMES, HEADER, parse_row
from tests.unit.test_adapters_import import TODAY, entry, row

LETTER = "ab" * 32


def test_a_row_that_does_not_say_is_an_imported_register_intake() -> None:
    submit = entry().submit()
    assert submit.channel == common_pb2.INTAKE_CHANNEL_IMPORTED
    assert not submit.HasField("agent")


@pytest.mark.parametrize(("text", "channel"), sorted(CHANNEL_NAMES.items()))
def test_each_channel_name_maps_to_the_wire(text: str, channel: int) -> None:
    assert entry(channel=text).submit().channel == channel


def test_an_agent_row_carries_the_agent_and_the_letter() -> None:
    parsed = entry(channel="帮代办", agent="dby-07", agent_role="帮办", letter=LETTER.upper())
    submit = parsed.submit()
    assert submit.agent == common_pb2.AgentAuthorisation(
        agent_id="dby-07", role=common_pb2.AGENT_ROLE_GUIDING, letter_sha256=LETTER
    )
    assert entry(agent="dby-07", letter=LETTER).agent.role == common_pb2.AGENT_ROLE_ACTING
    # The register line's material (its digest) does not depend on these columns.
    assert parsed.record_material() == entry().record_material()


@pytest.mark.parametrize(
    ("cells", "column"),
    [
        ({"channel": "传真"}, "channel"),
        ({"agent": "dby-07"}, "letter"),  # 代办 needs its 委托书
        ({"agent": "dby-07", "letter": LETTER, "agent_role": "陪办"}, "agent_role"),
        ({"letter": LETTER}, "agent"),  # a 委托书 for nobody
        ({"agent": "代办员王", "letter": LETTER}, "agent"),
    ],
)
def test_bad_channel_or_agent_cells_are_named_by_their_column(
    cells: dict[str, str], column: str
) -> None:
    issues = parse_row(row(**cells), default_operator="import", today=TODAY)
    assert isinstance(issues, list)
    assert [issue.column for issue in issues] == [HEADER[column]]

"""``tongban federation``: status, identity, quarantine, release and reject, as an operator runs
them against a node of a real two-node federation."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub import telemetry
from hub.cli import main
from tests.harness.federation import Federation
from tests.harness.inprocess import APPLICANT, material

ID_CARD = "070302001000"
BAIHE = "610929000000"
SHATOU = "430902104000"


@pytest.fixture
def federation(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Federation]:
    with Federation.start(tmp_path, kafka_bootstrap, regions=("43", "61"), run=False) as started:
        yield started


def _as_operator_of(member: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = member.node.settings
    for name in ("TONGBAN_CONFIG", "TONGBAN_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TONGBAN_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("TONGBAN_NODE_REGION", settings.node_region)
    monkeypatch.setenv("TONGBAN_FEDERATION", str(settings.federation))
    monkeypatch.setenv("TONGBAN_LISTEN", settings.listen)


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def _offsite_envelope(federation: Federation, idempotency_key: str) -> bytes:
    """A case taken in at 43 for 61's authority: the envelope 43 would send for it."""
    hunan, shaanxi = federation.nodes["43"], federation.nodes["61"]
    town = hunan.node.add_hall("hn-shatou-town", SHATOU)
    shaanxi.node.add_hall("sx-baihe-county", BAIHE)
    hunan.node.run(
        town, "submit", idempotency_key=idempotency_key, item_code=ID_CARD,
        applicant=APPLICANT, materials=[material()], competent_region=BAIHE,
    )  # fmt: skip
    (_, envelope), *_ = federation.outgoing(hunan)
    envelope_bytes: bytes = envelope
    return envelope_bytes


def test_status_identity_quarantine_release_and_reject(
    federation: Federation, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hunan, shaanxi = federation.nodes["43"], federation.nodes["61"]
    envelope = _offsite_envelope(federation, "cli-0001")

    # 43's operator: one envelope waiting for 61.
    _as_operator_of(hunan, monkeypatch)
    status = _json(capsys, "federation", "--json")
    (peer,) = status["peers"]
    assert (peer["peer"], peer["region"], peer["waiting out"]) == ("tongban/61", "61", 1)
    assert main(["federation"]) == 0  # the table, for people
    assert "tongban/61" in capsys.readouterr().out

    # The identity printed is the entry 61's file holds for 43.
    identity = _json(capsys, "federation", "identity", "--json")
    file = tomllib.loads(Path(str(shaanxi.node.settings.federation)).read_text())
    (entry,) = file["peers"]
    assert {key: entry[key] for key in identity} == identity

    # 61's operator: a forged copy is held; the genuine message, held by mistake, is released.
    _as_operator_of(shaanxi, monkeypatch)
    forged = bytearray(envelope)
    forged[-5] ^= 1
    assert shaanxi.relay.inbox.handle(bytes(forged)) == "quarantined"
    shaanxi.relay.store.hold("tongban/43", "unverifiable", "held by hand for the test", envelope)
    held = _json(capsys, "federation", "quarantine", "--json")["quarantine"]
    assert [item["status"] for item in held] == ["held", "held"]
    forged_number, genuine_number = held[0]["number"], held[1]["number"]
    assert main(["federation", "release", str(genuine_number)]) == 0
    assert "released: stored" in capsys.readouterr().out
    assert main(["federation", "reject", str(forged_number)]) == 0
    capsys.readouterr()
    assert _json(capsys, "federation", "quarantine", "--json")["quarantine"] == []
    everything = _json(capsys, "federation", "quarantine", "--all", "--json")["quarantine"]
    assert sorted(item["status"] for item in everything) == ["rejected", "released"]
    assert main(["federation", "reject", str(forged_number)]) == 2  # no longer held
    assert "no held message" in capsys.readouterr().err


def _gauge(name: str, **labels: str) -> float | None:
    return telemetry.REGISTRY.get_sample_value(name, labels)


def test_the_backlog_and_quarantine_metrics_follow_what_the_operator_sees(
    federation: Federation, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tongban_relay_backlog`` reads 0 once a peer's backlog drained (not its last count),
    and ``tongban_relay_quarantine`` follows a rejection made with the CLI (another process:
    the relay counts again at its next report, once a second while it runs)."""
    hunan, shaanxi = federation.nodes["43"], federation.nodes["61"]
    envelope = _offsite_envelope(federation, "metrics-0001")
    hunan.relay.report()
    assert _gauge("tongban_relay_backlog", destination="tongban/61") == 1
    shaanxi.relay.report()
    assert _gauge("tongban_relay_backlog", destination="tongban/43") == 0  # a figure, not none

    # 61 stores the step and acknowledges it; 43 stores the acknowledgement: drained.
    assert shaanxi.relay.inbox.handle(envelope) == "stored"
    (ack,) = [message for row, message in federation.outgoing(shaanxi) if row.kind == "ack"]
    assert hunan.relay.inbox.handle(ack) == "acknowledged"
    hunan.relay.report()
    assert _gauge("tongban_relay_backlog", destination="tongban/61") == 0

    # A forged copy is held (counted at once); the operator rejects it with the CLI.
    forged = bytearray(envelope)
    forged[-5] ^= 1
    assert shaanxi.relay.inbox.handle(bytes(forged)) == "quarantined"
    assert _gauge("tongban_relay_quarantine") == 1
    _as_operator_of(shaanxi, monkeypatch)
    (held,) = _json(capsys, "federation", "quarantine", "--json")["quarantine"]
    assert main(["federation", "reject", str(held["number"])]) == 0
    shaanxi.relay.report()
    assert _gauge("tongban_relay_quarantine") == 0


def test_a_node_without_a_federation_file_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("TONGBAN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TONGBAN_DATA_DIR", str(tmp_path / "node"))
    assert main(["init"]) == 0
    capsys.readouterr()
    assert main(["federation"]) == 2
    assert "TONGBAN_FEDERATION" in capsys.readouterr().err

"""The committed stubs match the .proto files, the wire contract only grows, and the service
declares the whole lifecycle."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from tongban.v1 import case_exchange_pb2

from hub.domain.case import ALLOWED_FROM

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_do_not_drift_from_the_proto_files() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _edited_protos(tmp_path: Path, file: str, old: str, new: str) -> Path:
    """A copy of the .proto files with one edit."""
    root = tmp_path / "proto"
    shutil.copytree(ROOT / "proto" / "tongban", root / "tongban")
    path = root / "tongban" / "v1" / file
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1
    path.write_text(text.replace(old, new), encoding="utf-8")
    return root


def test_the_released_fields_list_every_field_of_the_proto_files() -> None:
    generator = _generator()
    released = generator.json.loads(generator.WIRE_FIELDS.read_text(encoding="utf-8"))
    assert generator.wire_fields() == released
    assert released["tongban.v1.SignedEnvelope.signature"] == "2 optional TYPE_BYTES"
    assert released["tongban.v1.Ack.Status.REFUSED"] == "2"


@pytest.mark.parametrize(
    ("file", "old", "new", "named"),
    [
        # renumbered: old signed bytes would read as another field
        ("federation.proto", "uint64 index = 2;\n}", "uint64 index = 9;\n}",
         "tongban.v1.StepRef.index"),
        # retyped
        ("federation.proto", "uint64 consistency_from = 7;", "string consistency_from = 7;",
         "tongban.v1.Envelope.consistency_from"),
        # removed
        ("federation.proto", "  string sent_at = 9;\n", "", "tongban.v1.Envelope.sent_at"),
        # an enum value renumbered
        ("federation.proto", "REFUSED = 2;", "REFUSED = 3;", "tongban.v1.Ack.Status.REFUSED"),
    ],
)  # fmt: skip
def test_a_proto_change_that_breaks_the_released_contract_is_refused_naming_the_field(
    tmp_path: Path, file: str, old: str, new: str, named: str
) -> None:
    generator = _generator()
    released = generator.wire_fields()
    edited = generator.wire_fields(_edited_protos(tmp_path, file, old, new))
    broken = generator.breaking_changes(released, edited)
    assert [change.split(":")[0] for change in broken] == [named]


def test_an_added_field_breaks_nothing(tmp_path: Path) -> None:
    generator = _generator()
    released = generator.wire_fields()
    sent_at = "  string sent_at = 9;\n"
    added = sent_at + "  string note = 99;\n"  # a number no release used
    edited = generator.wire_fields(_edited_protos(tmp_path, "federation.proto", sent_at, added))
    assert generator.breaking_changes(released, edited) == []
    assert set(edited) - set(released) == {"tongban.v1.Envelope.note"}


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))


def test_case_exchange_has_an_rpc_per_command_and_the_queries() -> None:
    service = case_exchange_pb2.DESCRIPTOR.services_by_name["CaseExchange"]
    methods = {method.name for method in service.methods}
    commands = {_camel(name) for name in ALLOWED_FROM} | {
        "Submit",
        "StaffWindow",
        "RegisterAgent",
        "RetireAgent",
    }
    commands |= {"BookAppointment", "CancelAppointment"}  # 预约办
    queries = {"GetCase", "GetCaseHistory", "ListQueue", "WatchQueue", "ListItems"}
    queries |= {"ListAppointments"}
    assert methods == commands | queries


def test_command_oneof_has_an_action_per_mutating_rpc() -> None:
    oneof = case_exchange_pb2.Command.DESCRIPTOR.oneofs_by_name["action"]
    admin = {"register_hall", "rotate_hall_key", "retire_hall", "erase_personal_data"}
    # the hall's window roster (AB岗) and its 代办员: not case steps
    hall_own = {"staff_window", "register_agent", "retire_agent"}
    hall_own |= {"book_appointment", "cancel_appointment"}  # 预约办
    assert {field.name for field in oneof.fields} == (
        set(ALLOWED_FROM) | {"submit"} | admin | hall_own
    )

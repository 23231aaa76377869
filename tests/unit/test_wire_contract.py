"""The committed stubs match the .proto files, and the service declares the whole lifecycle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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

"""End to end: legacy 办事登记册 files (CSV in GB18030, Excel .xlsx) imported twice by the importer
process into a real node over mTLS; the second run changes nothing.

Each row's submit is a deferred command signed with the row's 收件日期, so the registers are
dated within the node's deferred limit (30 days) from today, except one row that is older and
is rejected for it (and imported with ``--issued-at now``).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from tongban.v1 import common_pb2

from adapters.batch_import import BEIJING
from adapters.sdk import HallCredentials
from tests.e2e.conftest import COUNTY
from tests.e2e.test_adapters_support import (
    audited_history,
    check_audited_commands,
    closed_port,
    connection_args,
    id_number,
    run_adapter,
)
from tests.harness.node import NodeProcess

pytestmark = pytest.mark.e2e

HEADER = [
    "登记编号",
    "申请人",
    "身份证号码",
    "联系电话",
    "事项编码",
    "办件类型",
    "收件日期",
    "状态",
    "备注",
]

TODAY = date.today()


def day(days_ago: int, form: str = "%Y-%m-%d") -> str:
    """A 收件日期 ``days_ago`` days before today, written the way ``form`` says."""
    return (TODAY - timedelta(days=days_ago)).strftime(form)


#: The register of a county hall, as its legacy system exports it (its own 办件类型 codes:
#: 1 承诺 2 即办 3 上报 4 联报; its own date formats).
ROWS: list[list[Any]] = [
    ["ZY-2024-0001", "周建国", id_number("43090219750301001"), "13807370001", "070303001000", "1", day(10), "已收件", ""],
    ["ZY-2024-0002", "吴秀兰", id_number("43090219820511002"), "0737-4211234", "000304001000", "2", day(9, "%Y/%m/%d"), "已受理", ""],
    ["ZY-2024-0003", "郑小军", id_number("43090219550101003"), "13807370003", "040312001000", "3-上报件", day(8, "%Y.%m.%d"), "办理中", ""],
    ["ZY-2024-0004", "王芳", id_number("43090219900101004"), "13807370004", "200319001000YJS01", "联报件", day(7, "%Y%m%d"), "不予受理", "经营范围涉及前置审批，材料不齐"],
    ["ZY-2024-0005", "陈六", "430902199001010051", "13807370005", "000304001000", "2", day(6), "已收件", ""],
    ["ZY-2024-0006", "冯七", id_number("43090219900101006"), "13807370006", "999999999999", "2", day(6), "已收件", ""],
    ["ZY-2024-0007", "褚八", id_number("43090219900101007"), "13807370007", "070303001000", "2", day(6), "已收件", ""],
    ["ZY-2024-0008", "卫九", id_number("43090219900101008"), "13807370008", "000304001000", "2", "2024-13-45", "已收件", ""],
    ["ZY-2024-0001", "周建国", id_number("43090219750301001"), "13807370001", "070303001000", "1", day(10), "已收件", ""],
    ["ZY-2024-0010", "蒋十", id_number("43090219900101010"), "13807370010", "000304001000", "2", day(5), "已办结", ""],
    ["资阳2024-0011", "沈十一", id_number("43090219900101011"), "13807370011", "000304001000", "即办件", day(5), "已撤回", "申请人主动撤回"],
    ["ZY-2023-0012", "韩十二", id_number("43090219900101012"), "13807370012", "000304001000", "2", "2024-03-18 09:30", "已收件", ""],
]  # fmt: skip

EXPECTED_FIRST = {
    "ZY-2024-0001": "created",
    "ZY-2024-0002": "created",
    "ZY-2024-0003": "created",
    "ZY-2024-0004": "created",
    "资阳2024-0011": "created",
}
#: (row number in the file, column at fault) of the rows that must be rejected.
REJECTED = {
    (6, "身份证号码"),
    (7, "事项编码"),
    (8, "办件类型"),
    (9, "收件日期"),
    (10, "登记编号"),
    (11, "状态"),
    (13, "收件日期"),  # older than the node accepts a deferred command
}


def write_csv(path: Path, rows: list[list[Any]], encoding: str = "gb18030") -> Path:
    """A CSV as a legacy Windows system writes it (GB18030 by default)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def import_file(node: NodeProcess, path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    """Run the importer process; returns (exit code, JSON report)."""
    result = run_adapter(
        "import", str(path), "--json", *extra, *connection_args(node, COUNTY[0]), timeout=120
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)


def results(report: dict[str, Any]) -> dict[str, str]:
    """登记编号 → result, for the rows that were not rejected."""
    return {r["register_id"]: r["result"] for r in report["rows"] if r["result"] != "rejected"}


def rejected(report: dict[str, Any]) -> set[tuple[int, str]]:
    return {(r["row"], r["column"]) for r in report["rows"] if r["result"] == "rejected"}


def event_counts(node: NodeProcess, report: dict[str, Any]) -> dict[str, int]:
    """Case id → number of stored events, for every case the report names."""
    with node.client(COUNTY[0]) as client:
        return {
            r["case_id"]: len(client.history(r["case_id"]).events)
            for r in report["rows"]
            if r["case_id"]
        }


def test_csv_imported_twice_changes_nothing(node: NodeProcess, tmp_path: Path) -> None:
    register = write_csv(tmp_path / "办事登记册.csv", ROWS)
    report_file = tmp_path / "report.csv"

    code, first = import_file(node, register, "--report", str(report_file))
    assert code == 1  # some rows were rejected
    assert results(first) == EXPECTED_FIRST
    assert rejected(first) == REJECTED
    reasons = {r["row"]: r["reason"] for r in first["rows"]}
    assert "校验位" in reasons[6] and "第 2 行" in reasons[10] and "已办结" in reasons[11]
    assert "at most 30 days old" in reasons[13] and "--issued-at now" in reasons[13]
    assert "13807370012" not in json.dumps(first, ensure_ascii=False)  # no personal values

    with node.client(COUNTY[0]) as client:
        case = {r["register_id"]: r["case_id"] for r in first["rows"] if r["case_id"]}
        states = {key: client.get_case(cid).state for key, cid in case.items()}
    assert states == {
        "ZY-2024-0001": common_pb2.CASE_STATE_RECEIVED,
        "ZY-2024-0002": common_pb2.CASE_STATE_ACCEPTED,
        "ZY-2024-0003": common_pb2.CASE_STATE_HANDLING,
        "ZY-2024-0004": common_pb2.CASE_STATE_REJECTED_AT_INTAKE,
        "资阳2024-0011": common_pb2.CASE_STATE_WITHDRAWN,
    }
    before = event_counts(node, first)

    code, second = import_file(node, register)
    assert code == 1
    assert results(second) == dict.fromkeys(EXPECTED_FIRST, "unchanged")
    assert rejected(second) == REJECTED
    assert {r["case_id"] for r in second["rows"] if r["case_id"]} == set(before)
    assert event_counts(node, second) == before

    # The staff's report opens in Excel: UTF-8 with BOM, one line per row.
    lines = report_file.read_text(encoding="utf-8-sig").splitlines()
    assert lines[0] == "行号,登记编号,结果,办件编号,列,原因,说明" and len(lines) == 13

    # What an auditor sees: the submit deferred with the row's 收件日期 (Beijing time), the step
    # that brought it forward signed when it was sent; commitments, never the applicant.
    public_key = HallCredentials.load_signing_key(node.halls[COUNTY[0]].signing_key).public_key()
    row = ROWS[1]
    applicant = common_pb2.Applicant(name=row[1], id_number=row[2], phone=row[3])
    submit, accept = check_audited_commands(
        audited_history(node, case["ZY-2024-0002"]), public_key, applicant
    )
    received = datetime.combine(TODAY - timedelta(days=9), time(), tzinfo=BEIJING)
    assert submit.header.deferred and submit.header.issued_at.ToDatetime(tzinfo=UTC) == received
    assert accept.WhichOneof("action") == "accept" and not accept.header.deferred

    # A later export: one case moved on in the legacy system, one row was edited afterwards.
    later = [list(row) for row in ROWS[:2]]
    later[0][7] = "已受理"
    later[1][3] = "13900000000"
    code, third = import_file(node, write_csv(tmp_path / "later.csv", later, "utf-8-sig"))
    assert code == 1
    [moved, edited] = third["rows"]
    assert moved["result"] == "updated" and moved["case_id"] == case["ZY-2024-0001"]
    assert edited["result"] == "rejected" and edited["column"] == "登记编号"
    with node.client(COUNTY[0]) as client:
        assert client.get_case(case["ZY-2024-0001"]).state == common_pb2.CASE_STATE_ACCEPTED
        edited_case = client.history(case["ZY-2024-0002"]).events
    assert edited_case[0].submitted.applicant.phone == "0737-4211234"  # untouched


def test_a_row_older_than_the_deferred_limit_is_imported_when_signed_now(
    node: NodeProcess, tmp_path: Path
) -> None:
    """``--issued-at now`` signs each submit with the time of the import (not deferred)."""
    old = [["ZY-2023-0099", "韩九九", id_number("43090219900101099"), "13807370099",
            "000304001000", "2", "2024-03-18", "已受理", ""]]  # fmt: skip
    register = write_csv(tmp_path / "old.csv", old)
    code, refused = import_file(node, register)
    assert code == 1 and rejected(refused) == {(2, "收件日期")}
    code, imported = import_file(node, register, "--issued-at", "now")
    assert code == 0 and results(imported) == {"ZY-2023-0099": "created"}
    case_id = imported["rows"][0]["case_id"]
    public_key = HallCredentials.load_signing_key(node.halls[COUNTY[0]].signing_key).public_key()
    applicant = common_pb2.Applicant(name=old[0][1], id_number=old[0][2], phone=old[0][3])
    commands = check_audited_commands(audited_history(node, case_id), public_key, applicant)
    assert [c.WhichOneof("action") for c in commands] == ["submit", "accept"]
    assert not any(c.header.deferred for c in commands)
    # Imported again with the default: the node recognises the same submission (the same
    # commitments) and answers with its first result before it looks at the time.
    code, again = import_file(node, register)
    assert code == 0 and results(again) == {"ZY-2023-0099": "unchanged"}


def test_another_nodes_origin_stops_the_import(node: NodeProcess, tmp_path: Path) -> None:
    """A wrong ``--node`` is the setup's fault, not the rows': the node refuses, the run stops."""
    register = write_csv(tmp_path / "register.csv", ROWS[:2])
    result = run_adapter(
        "import", str(register), *connection_args(node, COUNTY[0], origin="tongban/99"),
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    assert "STOPPED (2 rows not processed): INVALID_ARGUMENT" in result.stdout
    assert "tongban/43" in result.stdout  # the node says which node it is


def test_xlsx_imported_twice_changes_nothing(node: NodeProcess, tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "登记册"
    sheet.append(["资阳区政务服务中心 办事登记册（2024 年 3 月）"])  # a title line above the header
    sheet.append([])
    sheet.append(HEADER)

    # Cells typed the way Excel keeps them: numbers, dates, text.
    def received(days_ago: int, at: time = time()) -> datetime:
        return datetime.combine(TODAY - timedelta(days=days_ago), at)

    sheet.append(
        [
            20240301,
            "杨一",
            id_number("43090219660601001"),
            13807371001,
            70303001000,
            1,
            received(4, time(9, 30)),
            "已受理",
            None,
        ]
    )
    sheet.append(
        [
            "XL-0002",
            "朱二",
            id_number("43090219660601002"),
            "13807371002",
            "040312001000",
            3,
            received(3),
            "已收件",
            None,
        ]
    )
    sheet.append(
        [
            "XL-0003",
            "秦三",
            430902196606010031,
            "13807371003",
            "000304001000",
            2,
            received(2),
            "已收件",
            None,
        ]
    )
    sheet.append([None, None, None, None, None, None, None, None, None])  # a blank line is skipped
    sheet.append(
        [
            "XL-0004",
            "",
            id_number("43090219660601004"),
            "13807371004",
            "000304001000",
            9,
            "昨天",
            "已收件",
            None,
        ]
    )
    # The same register line the CSV test imported: recognised across file formats.
    sheet.append([*ROWS[1][:6], received(9), "已受理", None])  # fmt: skip
    path = tmp_path / "办事登记册.xlsx"
    workbook.save(path)

    code, first = import_file(node, path)
    assert code == 1
    by_row = {r["row"]: r for r in first["rows"]}
    assert by_row[4]["result"] == "created" and by_row[4]["register_id"] == "20240301"
    assert by_row[5]["result"] == "created"
    assert by_row[6]["result"] == "rejected" and by_row[6]["column"] == "身份证号码"
    assert "文本" in by_row[6]["reason"]
    assert by_row[8]["result"] == "rejected"
    assert {i["column"] for i in by_row[8]["issues"]} == {"申请人", "办件类型", "收件日期"}
    assert by_row[9]["result"] in ("unchanged", "created")  # unchanged after the CSV test
    assert 7 not in by_row

    with node.client(COUNTY[0]) as client:
        view = client.get_case(by_row[4]["case_id"])
    # The numeric cell lost the item code's leading zero; the importer restored it.
    assert view.item_code == "070303001000" and view.state == common_pb2.CASE_STATE_ACCEPTED
    before = event_counts(node, first)

    code, second = import_file(node, path)
    assert code == 1
    assert [r["result"] for r in second["rows"]] == [
        "unchanged", "unchanged", "rejected", "rejected", "unchanged",
    ]  # fmt: skip
    assert event_counts(node, second) == before


def test_node_down_stops_the_import(node: NodeProcess, tmp_path: Path) -> None:
    """When the node cannot be reached the importer stops (exit 3) instead of rejecting rows."""
    register = write_csv(tmp_path / "register.csv", ROWS[:2])
    result = run_adapter(
        "import", str(register), "--retries", "1", "--timeout", "3",
        *connection_args(node, COUNTY[0], target=f"localhost:{closed_port()}"),
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    assert "STOPPED (2 rows not processed): UNAVAILABLE" in result.stdout

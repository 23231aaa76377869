"""The legacy register importer: reading files, the vendor's codes, row checks, reconciliation."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import grpc
import openpyxl
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import Message
from tongban.v1 import case_exchange_pb2, common_pb2

from adapters.batch_import import (
    BEIJING,
    KIND_CODES,
    STATUS_NAMES,
    Importer,
    RawRow,
    RegisterEntry,
    describe,
    idempotency_key,
    parse_date,
    parse_kind,
    parse_row,
    plan_steps,
    read_csv,
    read_register,
    read_xlsx,
    received_at,
    stops_the_run,
)
from adapters.connection import ItemCatalogue
from adapters.errors import (
    RETRYABLE_CODES,
    ConfigError,
    NodeRefused,
    RegisterError,
    from_rpc_error,
)
from adapters.gateway import BJLX_TO_KIND
from adapters.sdk import HallCredentials, commitment
from tests.unit.test_adapters_gateway import CallError

S = common_pb2
TODAY = date(2024, 6, 1)
HEADER = "登记编号,申请人,身份证号码,联系电话,事项编码,办件类型,收件日期,状态"
GOOD_ID = "11010519491231002X"


def row(**cells: Any) -> RawRow:
    values: dict[str, Any] = {
        "register_id": "ZY-0001",
        "applicant": "周建国",
        "id_number": GOOD_ID,
        "phone": "13807370001",
        "item_code": "070303001000",
        "kind": "1",
        "received_on": "2024-03-18",
        "status": "已收件",
    }
    values.update(cells)
    return RawRow(2, values)


def entry(**cells: Any) -> RegisterEntry:
    parsed = parse_row(row(**cells), default_operator="import", today=TODAY)
    assert isinstance(parsed, RegisterEntry), parsed
    return parsed


# ------------------------------------------------------------------ codes


def test_this_vendor_numbers_kinds_its_own_way() -> None:
    """1 承诺 2 即办 3 上报 4 联报 here; 0 即办 1 承诺 2 上报 3 并联 at the YZ gateway."""
    assert KIND_CODES[2] == S.CASE_KIND_IMMEDIATE == BJLX_TO_KIND[0]
    assert KIND_CODES[1] == S.CASE_KIND_PROMISED == BJLX_TO_KIND[1]
    assert sorted(KIND_CODES.values()) == sorted(BJLX_TO_KIND.values())


@pytest.mark.parametrize(
    ("value", "code"),
    [("1", 1), (2, 2), (3.0, 3), ("4-联报件", 4), ("2 即办", 2), ("承诺件", 1), ("联办件", 4)],
)
def test_parse_kind(value: Any, code: int) -> None:
    assert parse_kind(value) == code


@pytest.mark.parametrize("value", ["0", 5, "普通件", "", None, 2.5])
def test_parse_kind_refuses(value: Any) -> None:
    with pytest.raises(ValueError, match="办件类型代码|必填"):
        parse_kind(value)


@pytest.mark.parametrize(
    "value",
    ["2024-03-18", "2024/3/18", "2024.03.18", "20240318", "2024年3月18日", "2024-03-18 09:30:00",
     datetime(2024, 3, 18, 9, 30), date(2024, 3, 18)],
)  # fmt: skip
def test_parse_date(value: Any) -> None:
    assert parse_date(value, today=TODAY) == date(2024, 3, 18)


@pytest.mark.parametrize(
    ("value", "moment"),
    [
        ("2024-03-18", (0, 0, 0)),
        ("2024/3/18 9:30", (9, 30, 0)),
        ("2024-03-18 09:30:15", (9, 30, 15)),
        ("2024-03-18T17:05", (17, 5, 0)),
        ("2024-03-18 下午", (0, 0, 0)),
        (datetime(2024, 3, 18, 9, 30), (9, 30, 0)),
        (date(2024, 3, 18), (0, 0, 0)),
    ],
)
def test_received_at_keeps_the_registers_time_of_day(value: Any, moment: tuple[int, ...]) -> None:
    """收件日期 as a moment in Beijing time: the submit's issued_at."""
    assert received_at(value, date(2024, 3, 18)) == datetime(2024, 3, 18, *moment, tzinfo=BEIJING)


@pytest.mark.parametrize(
    ("value", "message"),
    [("2024-13-45", "不是日期"), ("2030-01-01", "晚于今天"), ("1980-01-01", "早于"), ("", "必填")],
)
def test_parse_date_refuses(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_date(value, today=TODAY)


def test_only_intake_states_are_importable() -> None:
    assert set(STATUS_NAMES.values()) == {
        S.CASE_STATE_RECEIVED,
        S.CASE_STATE_ACCEPTED,
        S.CASE_STATE_HANDLING,
        S.CASE_STATE_REJECTED_AT_INTAKE,
        S.CASE_STATE_WITHDRAWN,
    }


# ------------------------------------------------------------------ rows


def test_parse_row_maps_the_columns() -> None:
    parsed = entry(id_number=GOOD_ID.lower(), kind="2-即办件", status="办理中", operator="张")
    assert parsed.applicant.id_number == GOOD_ID
    assert parsed.kind == S.CASE_KIND_IMMEDIATE and parsed.kind_code == 2
    assert parsed.target_state == S.CASE_STATE_HANDLING
    assert parsed.operator == "张" and parsed.received_on == date(2024, 3, 18)


def test_parse_row_names_every_bad_column() -> None:
    issues = parse_row(
        row(register_id="", applicant=" ", id_number="110105194912310021", phone="电话",
            item_code="ABC", kind="9", received_on="昨天", status="已办结",
            competent_region="4309"),
        default_operator="import",
        today=TODAY,
    )  # fmt: skip
    assert isinstance(issues, list)
    assert [i.column for i in issues] == [
        "登记编号", "申请人", "身份证号码", "联系电话", "事项编码", "办件类型", "收件日期", "状态",
        "办理地区划",
    ]  # fmt: skip
    assert "校验位" in issues[2].reason and "已办结" in issues[7].reason


def test_row_issues_never_echo_personal_values() -> None:
    issues = parse_row(row(phone="13x0737-ABC"), default_operator="import", today=TODAY)
    assert isinstance(issues, list) and issues[0].column == "联系电话"
    assert "13x0737-ABC" not in issues[0].reason


def test_excel_number_cells() -> None:
    """Numbers lose leading zeros (repaired for item codes) and ID digits (refused)."""
    parsed = entry(register_id=20240301.0, phone=13807370001, item_code=70303001000, kind=1.0)
    assert parsed.register_id == "20240301" and parsed.applicant.phone == "13807370001"
    assert parsed.item_code == "070303001000"
    issues = parse_row(row(id_number=110105194912310020), default_operator="i", today=TODAY)
    assert isinstance(issues, list) and issues[0].column == "身份证号码"
    assert "文本" in issues[0].reason


def test_record_material_ignores_status_but_not_intake_data() -> None:
    base = entry().record_material()
    assert base.media_type == "application/json" and base.size > 0
    assert entry(status="已受理", remark="x").record_material() == base
    assert entry(phone="13900000000").record_material().sha256 != base.sha256
    assert entry(received_on="2024-03-19").record_material().sha256 != base.sha256


def test_idempotency_keys() -> None:
    assert idempotency_key("ZY-2024-0001") == "lx-ZY-2024-0001"
    assert idempotency_key("ZY-2024-0001", "county-b:") == "county-b:ZY-2024-0001"
    hashed = idempotency_key("资阳2024-0011")
    assert hashed.startswith("lx-sha256-") and hashed.isascii() and len(hashed) <= 100
    assert idempotency_key("17").startswith("lx-sha256-")  # too short on its own
    assert idempotency_key("x" * 200).startswith("lx-sha256-")
    assert idempotency_key("资阳2024-0011") == hashed  # stable across runs


@pytest.mark.parametrize(
    ("target", "current", "steps"),
    [
        (S.CASE_STATE_RECEIVED, S.CASE_STATE_RECEIVED, []),
        (S.CASE_STATE_RECEIVED, S.CASE_STATE_HANDLING, []),  # the hub is further along
        (S.CASE_STATE_RECEIVED, S.CASE_STATE_WITHDRAWN, []),
        (S.CASE_STATE_ACCEPTED, S.CASE_STATE_RECEIVED, ["accept"]),
        (S.CASE_STATE_HANDLING, S.CASE_STATE_RECEIVED, ["accept", "start_handling"]),
        (S.CASE_STATE_HANDLING, S.CASE_STATE_ACCEPTED, ["start_handling"]),
        (S.CASE_STATE_HANDLING, S.CASE_STATE_DECIDED, []),
        (S.CASE_STATE_REJECTED_AT_INTAKE, S.CASE_STATE_RECEIVED, ["reject_at_intake"]),
        (S.CASE_STATE_REJECTED_AT_INTAKE, S.CASE_STATE_REJECTED_AT_INTAKE, []),
        (S.CASE_STATE_WITHDRAWN, S.CASE_STATE_HANDLING, ["withdraw"]),
        (S.CASE_STATE_ACCEPTED, S.CASE_STATE_WITHDRAWN, None),
        (S.CASE_STATE_REJECTED_AT_INTAKE, S.CASE_STATE_ACCEPTED, None),
        (S.CASE_STATE_WITHDRAWN, S.CASE_STATE_ARCHIVED, None),
        (S.CASE_STATE_ACCEPTED, S.CASE_STATE_AWAITING_CORRECTION, None),
    ],
)
def test_plan_steps(target: int, current: int, steps: list[str] | None) -> None:
    assert plan_steps(target, current) == steps


# ------------------------------------------------------------------ files


def test_csv_in_gb18030_with_a_title_line_and_variant_headers(tmp_path: Path) -> None:
    text = (
        "资阳区办事登记册导出\n"
        "*登记号,申请人姓名,身份证号,手机号码,事项代码,办件类型,登记日期,办件状态,其他\n"
        f"ZY-1,周,{GOOD_ID},1380000000,070303001000,1,2024-03-18,已收件,x\n"
        ",,,,,,,,\n"
        f'ZY-2,"吴\n秀兰",{GOOD_ID},1381000000,070303001000,1,2024-03-18,已收件,y\n'
        f"ZY-3,郑,{GOOD_ID},1382000000,070303001000,1,2024-03-18,已收件,z\n"
    )
    path = tmp_path / "register.csv"
    path.write_bytes(text.encode("gb18030"))
    register = read_csv(path)
    assert set(register.columns) >= {"register_id", "applicant", "status"}
    assert register.ignored_headers == ("其他",)
    assert [r.number for r in register.rows] == [3, 5, 7]  # blank skipped; a cell spans lines
    assert register.rows[1].cells["applicant"] == "吴\n秀兰"


def test_tab_separated_utf8_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "register.txt"
    lines = [
        HEADER.replace(",", "\t"),
        f"ZY-1\t周\t{GOOD_ID}\t1\t070303001000\t1\t2024-03-18\t已收件",
    ]
    path.write_text("\n".join(lines), encoding="utf-8-sig")
    [only] = read_register(path).rows
    assert only.cells["register_id"] == "ZY-1" and only.cells["status"] == "已收件"


def test_file_level_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    missing.write_text("登记编号,申请人,身份证号码,联系电话\nZY-1,周,x,1\n", encoding="utf-8")
    with pytest.raises(RegisterError, match="lacks required column.*事项编码"):
        read_csv(missing)
    twice = tmp_path / "twice.csv"
    twice.write_text(HEADER + ",登记号\n", encoding="utf-8")
    with pytest.raises(RegisterError, match="登记编号 appears twice"):
        read_csv(twice)
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(RegisterError, match="empty"):
        read_csv(empty)
    other = tmp_path / "other.csv"
    other.write_text("a,b,c\n1,2,3\n", encoding="utf-8")
    with pytest.raises(RegisterError, match="no header row found"):
        read_csv(other)
    with pytest.raises(RegisterError, match=r"\.xls format"):
        read_register(tmp_path / "old.xls")
    (tmp_path / "broken.xlsx").write_bytes(b"not a zip")
    with pytest.raises(RegisterError, match="Excel workbook"):
        read_xlsx(tmp_path / "broken.xlsx")


def test_xlsx_sheet_and_cell_types(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.title = "说明"  # type: ignore[union-attr]
    sheet = workbook.create_sheet("登记册")
    sheet.append(HEADER.split(","))
    sheet.append(
        [1001, "周", GOOD_ID, 13807370001, 70303001000, 1, datetime(2024, 3, 18), "已受理"]
    )
    path = tmp_path / "register.xlsx"
    workbook.save(path)
    with pytest.raises(RegisterError, match="no sheet"):
        read_xlsx(path, sheet="nope")
    [only] = read_xlsx(path, sheet="登记册").rows
    assert only.number == 2
    parsed = parse_row(only, default_operator="i", today=TODAY)
    assert isinstance(parsed, RegisterEntry)
    assert parsed.register_id == "1001" and parsed.item_code == "070303001000"
    assert parsed.received_on == date(2024, 3, 18)


# ------------------------------------------------------------------ reconciliation


def refused(code: grpc.StatusCode, details: str = "") -> NodeRefused:
    """A failed call as the SDK raises it (the SDK's own mapping is tested in test_sdk.py)."""
    return NodeRefused.of(code, details)


#: The node's default limit on the age of a deferred command.
DEFERRED_MAX_AGE = timedelta(days=30)


class Hub:
    """In-memory stand-in for the node's idempotency and the intake part of the state machine.

    Submits are checked the way the node checks them: signature, the deferred time window
    (``now``), and the clear personal values opening the signed commitments.
    """

    TRANSITIONS: ClassVar[dict[str, tuple[int, int]]] = {
        "accept": (S.CASE_STATE_RECEIVED, S.CASE_STATE_ACCEPTED),
        "start_handling": (S.CASE_STATE_ACCEPTED, S.CASE_STATE_HANDLING),
        "reject_at_intake": (S.CASE_STATE_RECEIVED, S.CASE_STATE_REJECTED_AT_INTAKE),
        "withdraw": (S.CASE_STATE_RECEIVED, S.CASE_STATE_WITHDRAWN),
    }

    def __init__(self, now: datetime = datetime(2024, 4, 1, 12, tzinfo=UTC)) -> None:
        self.records: dict[str, tuple[bytes, case_exchange_pb2.CommandReply]] = {}
        self.states: dict[str, int] = {}
        self.down = False
        self.now = now
        self.credentials = HallCredentials(
            "hn-ziyang-hall", "430902000000", Ed25519PrivateKey.generate()
        )
        self.submits: list[case_exchange_pb2.SignedCommand] = []
        self.steps: list[str] = []
        self.refuse_with: grpc.RpcError | None = None

    def send_signed(
        self, action: str, signed: case_exchange_pb2.SignedCommand
    ) -> case_exchange_pb2.CommandReply:
        """A submit, checked in the node's order: signature, replay, time, personal values."""
        assert action == "submit"
        if self.down:
            raise refused(grpc.StatusCode.UNAVAILABLE, "down")
        self.credentials.signing_key.public_key().verify(signed.signature, signed.command)
        command = case_exchange_pb2.Command.FromString(signed.command)
        header = command.header
        if self.refuse_with is not None:
            raise from_rpc_error(self.refuse_with)
        self.submits.append(signed)
        # Idempotency compares personal fields by their clear values (salts are fresh).
        body = case_exchange_pb2.SubmitCase()
        body.CopyFrom(command.submit)
        body.ClearField("applicant")
        clear = repr(sorted((v.field, v.value) for v in signed.personal)).encode()
        replay = self._replay(header.idempotency_key, body, clear)
        if replay is not None:
            return replay
        issued = header.issued_at.ToDatetime(tzinfo=UTC)
        if header.deferred and self.now - issued > DEFERRED_MAX_AGE:
            message = "a deferred command may be at most 30 days old"
            raise from_rpc_error(CallError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"command.header.issued_at: {issued.isoformat()!r}: {message}",
                ("command.header.issued_at", f"{issued.isoformat()!r}: {message}"),
            ))  # fmt: skip
        values = {v.field: v for v in signed.personal}
        for name in ("name", "id_number", "phone"):
            value = values[f"submit.applicant.{name}"]
            digest = getattr(command.submit.applicant, name)
            assert commitment(value.field, value.salt, value.value) == digest
            assert value.value.encode() not in signed.command
        return self._execute("submit", header.idempotency_key, body, {}, clear)

    def send(
        self, action: str, body: Message | None = None, *, idempotency_key: str,
        operator: str | None = None, **fields: Any,
    ) -> case_exchange_pb2.CommandReply:  # fmt: skip
        """A step signed now (the importer sends them through the SDK's send)."""
        assert action != "submit", "a submit is signed by the importer and sent signed"
        if self.down:
            raise refused(grpc.StatusCode.UNAVAILABLE, "down")
        assert idempotency_key
        self.steps.append(action)
        message = body or type(getattr(case_exchange_pb2.Command(), action))(**fields)
        return self._replay(idempotency_key, message) or self._execute(
            action, idempotency_key, message, fields
        )

    def _replay(
        self, key: str, message: Message, clear: bytes = b""
    ) -> case_exchange_pb2.CommandReply | None:
        if key not in self.records:
            return None
        first_payload, first = self.records[key]
        if first_payload != message.SerializeToString(deterministic=True) + clear:
            raise refused(grpc.StatusCode.ALREADY_EXISTS, "key reused")
        return case_exchange_pb2.CommandReply(case_id=first.case_id, replayed=True)

    def _execute(
        self, action: str, key: str, message: Message, fields: dict[str, Any], clear: bytes = b""
    ) -> case_exchange_pb2.CommandReply:
        if action == "submit":
            case_id = str(uuid.uuid4())
            self.states[case_id] = S.CASE_STATE_RECEIVED
        else:
            case_id = fields["case_id"]
            before, after = self.TRANSITIONS[action]
            if self.states[case_id] != before:
                raise refused(grpc.StatusCode.FAILED_PRECONDITION, "not now")
            self.states[case_id] = after
        reply = case_exchange_pb2.CommandReply(case_id=case_id)
        self.records[key] = (message.SerializeToString(deterministic=True) + clear, reply)
        return reply

    def get_case(self, case_id: str) -> case_exchange_pb2.CaseView:
        return case_exchange_pb2.CaseView(case_id=case_id, state=self.states[case_id])  # type: ignore[arg-type]


def catalogue() -> ItemCatalogue:
    return ItemCatalogue(
        lambda: [
            common_pb2.ServiceItem(code="070303001000", kind=S.CASE_KIND_PROMISED),
            common_pb2.ServiceItem(code="000304001000", kind=S.CASE_KIND_IMMEDIATE),
        ]
    )


def register(tmp_path: Path, lines: list[str], name: str = "r.csv") -> Any:
    path = tmp_path / name
    path.write_text("\n".join([HEADER + ",备注", *lines]), encoding="utf-8")
    return read_csv(path)


def test_reconcile_created_unchanged_updated_rejected(tmp_path: Path) -> None:
    hub = Hub()
    importer = Importer(hub, catalogue(), today=TODAY)
    lines = [
        f"ZY-1,周,{GOOD_ID},1380000000,070303001000,1,2024-03-18,已收件,",
        f"ZY-2,吴,{GOOD_ID},1381000000,000304001000,2,2024-03-18,已受理,",
        f"ZY-3,郑,{GOOD_ID},1382000000,000304001000,1,2024-03-18,已收件,",  # kind mismatch
        f"ZY-4,王,{GOOD_ID},1383000000,123456789012,2,2024-03-18,已收件,",  # not in the catalogue
    ]
    first = importer.run(register(tmp_path, lines))
    assert [o.result for o in first.outcomes] == ["created", "created", "rejected", "rejected"]
    assert [o.column for o in first.outcomes[2:]] == ["办件类型", "事项编码"]
    assert "代码 2" in first.outcomes[2].reason

    second = importer.run(register(tmp_path, lines))
    assert [o.result for o in second.outcomes] == ["unchanged", "unchanged", "rejected", "rejected"]
    assert [o.case_id for o in second.outcomes[:2]] == [o.case_id for o in first.outcomes[:2]]

    later = importer.run(register(tmp_path, [
        f"ZY-1,周,{GOOD_ID},1380000000,070303001000,1,2024-03-18,办理中,",  # moved on
        f"ZY-2,吴,{GOOD_ID},13999999999,000304001000,2,2024-03-18,已受理,",  # edited afterwards
    ]))  # fmt: skip
    moved, edited = later.outcomes
    assert moved.result == "updated" and hub.states[moved.case_id] == S.CASE_STATE_HANDLING
    assert edited.result == "rejected" and edited.column == "登记编号"
    assert "未作修改" in edited.reason


def test_register_behind_a_final_hub_state_is_reported(tmp_path: Path) -> None:
    hub = Hub()
    importer = Importer(hub, catalogue(), today=TODAY)
    line = f"ZY-1,周,{GOOD_ID},1380000000,070303001000,1,2024-03-18,%s,"
    [withdrawn] = importer.run(register(tmp_path, [line % "已撤回"])).outcomes
    assert withdrawn.result == "created"
    assert hub.states[withdrawn.case_id] == S.CASE_STATE_WITHDRAWN
    [conflict] = importer.run(register(tmp_path, [line % "已受理"])).outcomes
    assert conflict.result == "rejected" and conflict.column == "状态"
    assert "WITHDRAWN" in conflict.reason and conflict.case_id == withdrawn.case_id


def test_duplicates_in_one_file(tmp_path: Path) -> None:
    line = f"ZY-1,周,{GOOD_ID},1380000000,070303001000,1,2024-03-18,已收件,"
    report = Importer(Hub(), catalogue(), today=TODAY).run(register(tmp_path, [line, line]))
    assert [o.result for o in report.outcomes] == ["created", "rejected"]
    assert "第 2 行" in report.outcomes[1].reason
    # The first row rejected (a bad ID number): the second is no less ambiguous.
    bad = "ZY-2,周,bad-id,1380000000,070303001000,1,2024-03-18,已收件,"
    good = f"ZY-2,周,{GOOD_ID},1380000000,070303001000,1,2024-03-18,已收件,"
    report = Importer(Hub(), catalogue(), today=TODAY).run(register(tmp_path, [bad, good]))
    assert [o.result for o in report.outcomes] == ["rejected", "rejected"]
    assert "第 2 行" in report.outcomes[1].reason


def test_node_down_stops_the_run_not_the_rows(tmp_path: Path) -> None:
    """A node failure is no row's fault: the run stops, and a later run picks up safely."""
    hub = Hub()
    lines = [
        "ZY-0,周,bad-id,1380000000,070303001000,1,2024-03-18,已收件,",
        f"ZY-1,周,{GOOD_ID},1380000000,070303001000,1,2024-03-18,已收件,",
        f"ZY-2,吴,{GOOD_ID},1381000000,000304001000,2,2024-03-18,已受理,",
    ]
    hub.down = True
    report = Importer(hub, catalogue(), today=TODAY).run(register(tmp_path, lines))
    assert [o.result for o in report.outcomes] == ["rejected"]
    assert report.stopped.startswith("UNAVAILABLE") and report.not_processed == 2
    assert "STOPPED (2 rows not processed)" in report.summary()
    hub.down = False
    report = Importer(hub, catalogue(), today=TODAY).run(register(tmp_path, lines))
    assert [o.result for o in report.outcomes] == ["rejected", "created", "created"]


def test_report_csv_opens_in_excel(tmp_path: Path) -> None:
    line = f"ZY-1,周,{GOOD_ID},1380000000,070303001000,1,2024-03-18,已收件,"
    report = Importer(Hub(), catalogue(), today=TODAY).run(register(tmp_path, [line]))
    out = tmp_path / "report.csv"
    report.write_csv(out)
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")  # BOM: Excel reads it as UTF-8
    assert data.decode("utf-8-sig").splitlines()[1].startswith("2,ZY-1,created,")
    assert report.to_json()["counts"] == {"created": 1, "updated": 0, "unchanged": 0, "rejected": 0}


# ------------------------------------------------------------------ time and personal data


def test_submits_are_deferred_with_the_rows_time_and_steps_signed_now(tmp_path: Path) -> None:
    hub = Hub()
    lines = [
        f"ZY-1,周,{GOOD_ID},1380000000,070303001000,1,2024-03-18 09:30,已受理,",
        f"ZY-2,吴,{GOOD_ID},1381000000,000304001000,2,2024/03/19,已收件,",
    ]
    report = Importer(hub, catalogue(), today=TODAY).run(register(tmp_path, lines))
    assert [o.result for o in report.outcomes] == ["created", "created"]
    headers = [case_exchange_pb2.Command.FromString(s.command).header for s in hub.submits]
    assert all(h.deferred for h in headers)
    assert [h.issued_at.ToDatetime(tzinfo=UTC) for h in headers] == [
        datetime(2024, 3, 18, 1, 30, tzinfo=UTC),  # 09:30 in Beijing
        datetime(2024, 3, 18, 16, tzinfo=UTC),  # 2024-03-19 00:00 in Beijing
    ]
    assert hub.steps == ["accept"]  # the register has no time for it: sent through send()


def test_the_importer_never_signs_clear_personal_data(tmp_path: Path) -> None:
    """Commitments in the signed bytes (checked by the Hub stand-in), fresh salts on every
    signing; a second import of the row is recognised by its clear values."""
    hub = Hub()
    line = f"ZY-1,周建国,{GOOD_ID},13807370001,070303001000,1,2024-03-18,已收件,"
    importer = Importer(hub, catalogue(), today=TODAY)
    assert importer.run(register(tmp_path, [line])).outcomes[0].result == "created"
    assert importer.run(register(tmp_path, [line])).outcomes[0].result == "unchanged"
    first, second = hub.submits
    a, b = (case_exchange_pb2.Command.FromString(s.command) for s in (first, second))
    assert all(len(getattr(a.submit.applicant, f)) == 32 for f in ("name", "id_number", "phone"))
    for value in ("周建国", GOOD_ID, "13807370001"):
        assert value.encode() not in first.command
    assert [(v.field, v.value) for v in first.personal] == [
        (v.field, v.value) for v in second.personal
    ]
    assert {v.salt for v in first.personal}.isdisjoint(v.salt for v in second.personal)
    assert a.submit.applicant != b.submit.applicant


def test_a_row_older_than_the_nodes_deferred_limit_is_rejected_on_its_date(tmp_path: Path) -> None:
    """The node refuses the old row with a reason; the run goes on with the other rows."""
    hub = Hub(now=datetime(2024, 5, 1, 12, tzinfo=UTC))
    lines = [
        f"ZY-1,周,{GOOD_ID},1380000000,070303001000,1,2024-03-18,已收件,",  # 44 days old
        f"ZY-2,吴,{GOOD_ID},1381000000,000304001000,2,2024-04-20,已受理,",
    ]
    report = Importer(hub, catalogue(), today=TODAY).run(register(tmp_path, lines))
    old, recent = report.outcomes
    assert (old.result, old.column, old.case_id) == ("rejected", "收件日期", "")
    assert "at most 30 days old" in old.reason and "--issued-at now" in old.reason
    assert recent.result == "created" and not report.stopped
    assert "[收件日期]" in describe(report)

    # Signed with the time of the import instead: not deferred, so the node takes it.
    later = Importer(hub, catalogue(), today=TODAY, issued_at="now").run(register(tmp_path, lines))
    assert [o.result for o in later.outcomes] == ["created", "unchanged"]
    header = case_exchange_pb2.Command.FromString(hub.submits[-2].command).header
    assert not header.deferred
    assert abs(header.issued_at.ToDatetime(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=1)
    with pytest.raises(ConfigError, match="--issued-at 'yesterday'"):
        Importer(hub, catalogue(), issued_at="yesterday")


@pytest.mark.parametrize(
    ("field", "code"),
    [
        ("command.header.node", grpc.StatusCode.INVALID_ARGUMENT),
        ("command.header.issued_at", grpc.StatusCode.INVALID_ARGUMENT),  # a command signed now
        ("", grpc.StatusCode.UNAUTHENTICATED),  # no such hall at this node
    ],
)
def test_refusals_of_the_setup_stop_the_run(
    tmp_path: Path, field: str, code: grpc.StatusCode
) -> None:
    hub = Hub()
    hub.refuse_with = CallError(code, f"{field}: refused", *([(field, "x")] if field else []))
    line = f"ZY-1,周,{GOOD_ID},1380000000,070303001000,1,2024-03-18,已收件,"
    importer = Importer(hub, catalogue(), today=TODAY, issued_at="now")
    report = importer.run(register(tmp_path, [line, line.replace("ZY-1", "ZY-2")]))
    assert report.outcomes == [] and report.stopped.startswith(code.name)
    assert report.not_processed == 2


def test_a_refused_personal_value_names_its_column(tmp_path: Path) -> None:
    hub = Hub()
    hub.refuse_with = CallError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "personal[2].value: '<redacted>': not a phone number",
        ("personal[2].value", "'<redacted>': not a phone number"),
    )
    line = f"ZY-1,周,{GOOD_ID},1380000000,070303001000,1,2024-03-18,已收件,"
    report = Importer(hub, catalogue(), today=TODAY).run(register(tmp_path, [line]))
    [outcome] = report.outcomes
    assert outcome.result == "rejected" and outcome.column == "联系电话"
    text = json.dumps(report.to_json(), ensure_ascii=False)
    assert "1380000000" not in text and GOOD_ID not in text


def test_a_register_without_header_is_not_echoed(tmp_path: Path) -> None:
    """Without a header the first row is most likely data: the error does not repeat it."""
    path = tmp_path / "no-header.csv"
    path.write_text(f"ZY-1,周建国,{GOOD_ID},13807370001\n", encoding="utf-8")
    with pytest.raises(RegisterError, match="no header row found") as caught:
        read_csv(path)
    message = str(caught.value)
    assert "row 1 has 4 non-blank cells, 0 of them known column names" in message
    assert "周建国" not in message and GOOD_ID not in message and "13807370001" not in message


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAUTHENTICATED,
    ],
)
def test_what_stops_the_run_is_the_sdks_transient_set_and_unauthenticated(
    tmp_path: Path, code: grpc.StatusCode
) -> None:
    """A transient refusal (after the SDK's retries) or an unknown hall is no row's fault: the
    run stops, and running it again is safe. Anything else is the row's."""
    assert stops_the_run(NodeRefused.of(code)) and NodeRefused.of(code).transient == (
        code in RETRYABLE_CODES
    )
    assert not stops_the_run(NodeRefused.of(grpc.StatusCode.INTERNAL))
    hub = Hub()
    hub.refuse_with = CallError(code, "refused")
    line = f"ZY-1,周,{GOOD_ID},1380000000,070303001000,1,2024-03-18,已收件,"
    report = Importer(hub, catalogue(), today=TODAY).run(register(tmp_path, [line]))
    assert report.outcomes == [] and report.stopped == f"{code.name}: refused"


def test_a_catalogue_that_cannot_be_read_stops_the_run(tmp_path: Path) -> None:
    def fetch() -> list[common_pb2.ServiceItem]:
        raise NodeRefused.of(grpc.StatusCode.PERMISSION_DENIED, "not a hall")

    line = f"ZY-1,周,{GOOD_ID},1380000000,070303001000,1,2024-03-18,已收件,"
    report = Importer(Hub(), ItemCatalogue(fetch), today=TODAY).run(register(tmp_path, [line]))
    assert report.stopped == "PERMISSION_DENIED: not a hall" and report.not_processed == 1

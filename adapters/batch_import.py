"""A batch importer for 办事登记册 registers exported by legacy one-window systems.

Many county and township halls ran a one-window intake system (综合受理系统) long before Tongban.
Their cases live in its register, which it can export as CSV or Excel (.xlsx) with its own
Chinese column headers and its own codes. This importer brings such a register into the hub:

- it reads CSV (UTF-8 with or without BOM, or GB18030 as older Windows exports write it; comma,
  tab or semicolon separated) and .xlsx (first sheet unless named), finds the header row, and
  maps the legacy columns (:data:`COLUMNS`) and codes (:data:`KIND_CODES`, :data:`STATUS_NAMES`)
  onto the wire API;
- it validates every row on its own and reports each bad one with its row number and column;
  a bad row never stops the good ones;
- it **reconciles** each row with the hub instead of blindly creating cases: the legacy
  登记编号 becomes the submit's idempotency key, so a row imported before is recognised (the
  node returns the first result), and the case is only brought forward to the register's
  状态 where the hub is behind it. Importing the same file twice therefore changes nothing, and
  every row of the second run reports ``unchanged``.

Per row the report says ``created`` (a new case), ``updated`` (an existing case brought forward
to the register's state), ``unchanged`` or ``rejected`` (with row, column and reason). The rules
are spelt out in docs/adapters.md ("Batch importer").

Time and personal data on the wire:

- a row's submit is a **deferred** command signed with the row's own time (收件日期, with its
  time of day when the register has one, Beijing time): the node records when the hall took the
  application in, and accepts it up to its deferred-age limit (30 days unless the node's
  ``TONGBAN_DEFERRED_MAX_AGE_DAYS`` is raised for a migration); an older row is rejected on
  收件日期 with the node's reason. ``issued_at="now"`` (``--issued-at now``) signs it with the
  time of the import instead, not deferred. The steps that bring a case forward (受理, ...) have
  no time in the register and are signed when they are sent;
- the applicant is never signed in clear: the SDK commits to name, ID number and phone (fresh
  salts each time) and sends the clear values beside the signed bytes; the node recognises a
  second import of the same row by those clear values and answers with its first result.
  Reports never contain personal values.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message
from tongban.v1 import case_exchange_pb2, common_pb2

from adapters.connection import ItemCatalogue, gb11643_ok
from adapters.errors import ConfigError, NodeRefused, RegisterError
from adapters.sdk import HallCredentials, sign_command

K = common_pb2.CaseKind
S = common_pb2.CaseState

# ============================================================================ the legacy model

#: Legacy columns: our key → (the header the legacy system writes, accepted variants, required).
#: Variants cover the same system's older export templates; a leading ``*`` (a "required"
#: marker some templates put in the header) and surrounding blanks are ignored.
COLUMNS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "register_id": ("登记编号", ("登记号", "收件编号"), True),
    "applicant": ("申请人", ("申请人姓名",), True),
    "id_number": ("身份证号码", ("身份证号", "证件号码"), True),
    "phone": ("联系电话", ("手机号码", "联系方式"), True),
    "item_code": ("事项编码", ("事项代码", "基本编码"), True),
    "kind": ("办件类型", (), True),
    "received_on": ("收件日期", ("收件时间", "登记日期"), True),
    "status": ("状态", ("办件状态",), True),
    "remark": ("备注", ("说明",), False),
    "operator": ("经办人", (), False),
    "competent_region": ("办理地区划", ("办理地",), False),
    "channel": ("受理方式", ("收件渠道", "申请渠道", "办理渠道"), False),
    "agent": ("代办员", ("代办员编号", "代办人编号"), False),
    "agent_role": ("代办类型", ("代办方式",), False),
    "letter": ("委托书摘要", ("委托书SHA256", "委托书"), False),
}
HEADER = {key: spec[0] for key, spec in COLUMNS.items()}

#: 办件类型 as this legacy system numbers it: 1 承诺 2 即办 3 上报 4 联报.
#: (The YZ web platform of ``adapters.gateway`` says 0 即办 1 承诺 2 上报 3 并联 for the same
#: kinds: one table per vendor, never shared.)
KIND_CODES: dict[int, int] = {
    1: K.CASE_KIND_PROMISED,  # 承诺件
    2: K.CASE_KIND_IMMEDIATE,  # 即办件
    3: K.CASE_KIND_ESCALATED,  # 上报件
    4: K.CASE_KIND_JOINT,  # 联报件 (联办)
}
#: The same codes by name, as some exports write "承诺件" or "2-即办件" instead of the number.
KIND_NAMES: dict[str, int] = {"承诺": 1, "即办": 2, "上报": 3, "联报": 4, "联办": 4}
KIND_LABEL = {1: "承诺件", 2: "即办件", 3: "上报件", 4: "联报件"}

#: 状态 as the register writes it → the state the case should have reached in the hub.
#: Later states (决定, 办结, ...) are not imported: a decision must be recorded by the deciding
#: hall itself, not reconstructed from a register line.
STATUS_NAMES: dict[str, int] = {
    "收件": S.CASE_STATE_RECEIVED,
    "已收件": S.CASE_STATE_RECEIVED,
    "待受理": S.CASE_STATE_RECEIVED,
    "受理": S.CASE_STATE_ACCEPTED,
    "已受理": S.CASE_STATE_ACCEPTED,
    "办理中": S.CASE_STATE_HANDLING,
    "在办": S.CASE_STATE_HANDLING,
    "承办": S.CASE_STATE_HANDLING,
    "不予受理": S.CASE_STATE_REJECTED_AT_INTAKE,
    "撤回": S.CASE_STATE_WITHDRAWN,
    "已撤回": S.CASE_STATE_WITHDRAWN,
    "撤件": S.CASE_STATE_WITHDRAWN,
}

#: 受理方式 as registers write it → the wire channel. A row that does not say was taken in as
#: the register records it: the channel of an imported register (IMPORTED).
CHANNEL_NAMES: dict[str, int] = {
    "窗口": common_pb2.INTAKE_CHANNEL_WINDOW,
    "现场": common_pb2.INTAKE_CHANNEL_WINDOW,
    "网上": common_pb2.INTAKE_CHANNEL_ONLINE,
    "网上办": common_pb2.INTAKE_CHANNEL_ONLINE,
    "电话": common_pb2.INTAKE_CHANNEL_PHONE,
    "上门": common_pb2.INTAKE_CHANNEL_HOME_VISIT,
    "上门办": common_pb2.INTAKE_CHANNEL_HOME_VISIT,
    "代办": common_pb2.INTAKE_CHANNEL_AGENT,
    "帮代办": common_pb2.INTAKE_CHANNEL_AGENT,
    "自助": common_pb2.INTAKE_CHANNEL_KIOSK,
    "自助终端": common_pb2.INTAKE_CHANNEL_KIOSK,
}

#: 代办类型 → the wire role (empty: 代办).
AGENT_ROLE_NAMES: dict[str, int] = {
    "帮办": common_pb2.AGENT_ROLE_GUIDING,
    "代办": common_pb2.AGENT_ROLE_ACTING,
}

#: Where a case stands on the way RECEIVED → ACCEPTED → HANDLING → beyond, to tell whether the
#: hub is behind the register (then it is brought forward) or level with or ahead of it.
_PROGRESS: dict[int, int] = {
    S.CASE_STATE_RECEIVED: 0,
    S.CASE_STATE_AWAITING_CORRECTION: 0,
    S.CASE_STATE_ACCEPTED: 1,
    S.CASE_STATE_HANDLING: 2,
    S.CASE_STATE_HANDED_OFF: 2,
    S.CASE_STATE_ESCALATED: 2,
    S.CASE_STATE_SUSPENDED: 2,
    S.CASE_STATE_JOINT: 2,
    S.CASE_STATE_DECIDED: 3,
    S.CASE_STATE_CONCLUDED: 4,
    S.CASE_STATE_CERTIFICATE_ISSUED: 4,
    S.CASE_STATE_IN_POST: 4,
    S.CASE_STATE_IN_LOCKER: 4,
    S.CASE_STATE_DELIVERED: 4,
    S.CASE_STATE_RATED: 4,
    S.CASE_STATE_RECTIFYING: 4,
    S.CASE_STATE_ARCHIVED: 5,
}
_FINAL_OTHER = {S.CASE_STATE_REJECTED_AT_INTAKE, S.CASE_STATE_WITHDRAWN}
_OPEN = {
    S.CASE_STATE_RECEIVED,
    S.CASE_STATE_AWAITING_CORRECTION,
    S.CASE_STATE_ACCEPTED,
    S.CASE_STATE_HANDLING,
    S.CASE_STATE_HANDED_OFF,
    S.CASE_STATE_ESCALATED,
    S.CASE_STATE_SUSPENDED,
    S.CASE_STATE_JOINT,
}

#: Prefix of the idempotency keys made from 登记编号 (``--key-prefix`` changes it, e.g. when two
#: legacy systems with overlapping numbering import through the same hall).
DEFAULT_KEY_PREFIX = "lx-"
#: A base key longer than this is hashed, leaving room for the ``/accept``-style step suffixes
#: within the node's 128-character limit.
_MAX_BASE_KEY = 100

#: The legacy register's dates and times are Beijing time.
BEIJING = timezone(timedelta(hours=8), "CST")

#: What a row's submit is signed with (``Importer(issued_at=...)``, ``--issued-at``): the row's
#: own 收件日期 as a deferred command, or the time of the import.
ISSUED_AT_CHOICES = ("received", "now")


def stops_the_run(failure: NodeRefused) -> bool:
    """Whether a refusal says nothing about the row but about the node, the link or the hall:
    a transient failure (:data:`adapters.errors.RETRYABLE_CODES`, after the retry policy's
    attempts) or UNAUTHENTICATED (a signature or hall the node does not accept, e.g. "no such
    hall at this node"). The import stops there; running it again is safe."""
    return failure.transient or failure.code == grpc.StatusCode.UNAUTHENTICATED


# ============================================================================ reading files


@dataclass(frozen=True)
class RawRow:
    """One data row: its row number in the file and its cells by column key."""

    number: int
    cells: dict[str, Any]


@dataclass(frozen=True)
class Register:
    """A register read from a file: the recognised columns and the non-blank data rows."""

    path: Path
    columns: dict[str, str]  # column key → header as written in the file
    ignored_headers: tuple[str, ...]
    rows: tuple[RawRow, ...]


def _header_key(text: str) -> str | None:
    cleaned = str(text).replace("\ufeff", "").strip().lstrip("*＊").strip()
    for key, (name, variants, _required) in COLUMNS.items():
        if cleaned == name or cleaned in variants:
            return key
    return None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


#: Title lines above the header row (a sheet heading, an export date) are skipped; the header is
#: the first row naming at least this many known columns, within the first few non-blank rows.
_HEADER_MIN_KNOWN = 3
_HEADER_SEARCH_ROWS = 10


def _read_header(
    path: Path, number: int, cells: Sequence[Any]
) -> tuple[dict[str, str], dict[int, str], list[str]]:
    """The recognised columns of a header row: key → header text, position → key, unknown."""
    columns: dict[str, str] = {}
    positions: dict[int, str] = {}
    ignored: list[str] = []
    for index, cell in enumerate(cells):
        if _blank(cell):
            continue
        key = _header_key(str(cell))
        if key is None:
            ignored.append(str(cell).strip())
            continue
        if key in columns:
            raise RegisterError(
                f"{path}: row {number}: column {HEADER[key]} appears twice "
                f"({columns[key]!r} and {str(cell).strip()!r})"
            )
        columns[key] = str(cell).strip()
        positions[index] = key
    return columns, positions, ignored


def _build(path: Path, records: Iterable[tuple[int, Sequence[Any]]]) -> Register:
    """Find the header row, then map every later non-blank row by it."""
    header: tuple[dict[str, str], dict[int, str], list[str]] | None = None
    first_seen: tuple[int, Sequence[Any]] | None = None
    searched = 0
    rows: list[RawRow] = []
    for number, cells in records:
        if all(_blank(cell) for cell in cells):
            continue
        if header is None:
            first_seen = first_seen or (number, cells)
            candidate = _read_header(path, number, cells)
            searched += 1
            if len(candidate[0]) >= _HEADER_MIN_KNOWN:
                header = candidate
                missing = [
                    HEADER[k] for k, spec in COLUMNS.items() if spec[2] and k not in header[0]
                ]
                if missing:
                    raise RegisterError(
                        f"{path}: the header row (row {number}) lacks required column(s) "
                        f"{'、'.join(missing)}"
                    )
            elif searched >= _HEADER_SEARCH_ROWS:
                break
            continue
        values = {
            key: cells[index] if index < len(cells) else None for index, key in header[1].items()
        }
        rows.append(RawRow(number, values))
    if header is None:
        if first_seen is None:
            raise RegisterError(f"{path}: the file is empty (no header row)")
        expected = "、".join(HEADER[k] for k, spec in COLUMNS.items() if spec[2])
        # The row itself is not echoed: without a header it is most likely data (personal).
        filled = sum(1 for c in first_seen[1] if not _blank(c))
        known = len(_read_header(path, first_seen[0], first_seen[1])[0])
        raise RegisterError(
            f"{path}: no header row found (expected columns {expected}; "
            f"row {first_seen[0]} has {filled} non-blank cells, {known} of them known column names)"
        )
    return Register(path, header[0], tuple(header[2]), tuple(rows))


def read_csv(path: Path, *, encoding: str = "") -> Register:
    """Read a CSV register; the encoding is detected (UTF-8, else GB18030) unless given."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise RegisterError(f"cannot read {path}: {error.strerror}") from None
    text = ""
    for candidate in [encoding] if encoding else ["utf-8-sig", "gb18030"]:
        try:
            text = data.decode(candidate)
            break
        except (UnicodeDecodeError, LookupError) as error:
            if encoding:
                raise RegisterError(f"{path}: cannot decode as {encoding}: {error}") from None
    else:
        raise RegisterError(f"{path}: neither UTF-8 nor GB18030 text")
    first_line = text.split("\n", 1)[0]
    try:
        dialect: Any = csv.Sniffer().sniff(first_line, delimiters=",\t;")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)

    def records() -> Iterator[tuple[int, Sequence[Any]]]:
        start = 1
        try:
            for cells in reader:
                # A quoted cell may span lines: report the line the record starts on.
                yield start, cells
                start = reader.line_num + 1
        except csv.Error as error:
            raise RegisterError(f"{path}: line {reader.line_num}: {error}") from None

    return _build(Path(path), records())


def read_xlsx(path: Path, *, sheet: str = "") -> Register:
    """Read an Excel register (first sheet unless ``sheet`` names one)."""
    try:
        import openpyxl
        from openpyxl.utils.exceptions import InvalidFileException
    except ImportError:  # pragma: no cover - openpyxl is a declared dependency
        raise RegisterError("reading .xlsx needs the openpyxl package") from None
    try:
        workbook = openpyxl.load_workbook(Path(path), read_only=True, data_only=True)
    except (OSError, InvalidFileException, zipfile.BadZipFile, KeyError, ValueError) as error:
        raise RegisterError(f"cannot read {path} as an Excel workbook: {error}") from None
    try:
        worksheet: Any
        if sheet:
            if sheet not in workbook.sheetnames:
                raise RegisterError(
                    f"{path}: no sheet {sheet!r}; sheets: {'、'.join(workbook.sheetnames)}"
                )
            worksheet = workbook[sheet]
        else:
            worksheet = workbook.worksheets[0]
        records = [
            (number, list(cells))
            for number, cells in enumerate(worksheet.iter_rows(values_only=True), start=1)
        ]
    finally:
        workbook.close()
    return _build(Path(path), records)


def read_register(path: Path, *, sheet: str = "", encoding: str = "") -> Register:
    """Read a register by its file type (.csv/.txt, .xlsx/.xlsm)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return read_xlsx(path, sheet=sheet)
    if suffix in (".csv", ".txt", ".tsv"):
        return read_csv(path, encoding=encoding)
    if suffix == ".xls":
        raise RegisterError(f"{path}: the old binary .xls format is not read; save it as .xlsx")
    raise RegisterError(f"{path}: unknown register type {suffix!r} (use .csv or .xlsx)")


# ============================================================================ parsing rows


@dataclass(frozen=True)
class Issue:
    """One problem with a row: the legacy column and why."""

    column: str
    reason: str


@dataclass(frozen=True)
class RegisterEntry:
    """A valid row, in wire terms."""

    number: int
    register_id: str
    applicant: common_pb2.Applicant = field(repr=False)  # personal: never in a repr
    item_code: str
    kind_code: int  # the legacy code (1-4)
    kind: int  # the wire CaseKind
    received_on: date
    #: 收件日期 as a moment (Beijing time; 00:00 when the register gives no time of day): the
    #: submit's ``issued_at``.
    received_at: datetime
    target_state: int  # the wire CaseState the register says the case is in
    status_text: str
    remark: str
    operator: str
    competent_region: str
    channel: int = common_pb2.INTAKE_CHANNEL_IMPORTED
    #: The 代办员 who took the case in (``""``: none), as the submit's authorised agent.
    agent: common_pb2.AgentAuthorisation = field(default_factory=common_pb2.AgentAuthorisation)

    def record_material(self) -> common_pb2.Material:
        """The register line itself as the case's material.

        A legacy register carries no digests of the scanned documents, so the material the hub
        records is the intake record: a canonical JSON of the intake columns. Its digest ties the
        hub case to exactly this register line. 状态 and 备注 are left out on purpose, so that a
        later export with a newer 状态 is the same submission (and reconciles as ``updated``).
        """
        record = {
            "登记编号": self.register_id,
            "申请人": self.applicant.name,
            "身份证号码": self.applicant.id_number,
            "联系电话": self.applicant.phone,
            "事项编码": self.item_code,
            "办件类型": self.kind_code,
            "收件日期": self.received_on.isoformat(),
        }
        data = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        raw = data.encode("utf-8")
        return common_pb2.Material(
            name=f"办事登记册记录（{self.register_id}）",
            sha256=hashlib.sha256(raw).hexdigest(),
            media_type="application/json",
            size=len(raw),
        )

    def submit(self) -> case_exchange_pb2.SubmitCase:
        """The wire submit of this row, without the applicant (committed to when signing)."""
        submit = case_exchange_pb2.SubmitCase(
            item_code=self.item_code,
            materials=[self.record_material()],
            competent_region=self.competent_region,
        )
        submit.channel = common_pb2.IntakeChannel.ValueType(self.channel)
        if self.agent.agent_id:
            submit.agent.CopyFrom(self.agent)
        return submit


def _integral(value: Any) -> int | None:
    """An Excel number that is a whole number (12.0 → 12), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    number = _integral(value)
    if number is not None:
        return str(number)
    return str(value).strip()


_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d", "%Y年%m月%d日")


def parse_date(value: Any, *, today: date | None = None) -> date:
    """收件日期: a date, a datetime, or text in the usual formats (a time part is ignored)."""
    today = today or date.today()
    if isinstance(value, datetime):
        result = value.date()
    elif isinstance(value, date):
        result = value
    else:
        text = _text(value)
        if not text:
            raise ValueError("必填")
        head = re.split(r"[ T]", text, maxsplit=1)[0]
        for form in _DATE_FORMATS:
            try:
                result = datetime.strptime(head, form).date()
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"{text!r} 不是日期（如 2024-03-18）")
    if result > today + timedelta(days=1):
        raise ValueError(f"{result.isoformat()} 晚于今天")
    if result.year < 1990:
        raise ValueError(f"{result.isoformat()} 早于 1990 年")
    return result


_TIME_OF_DAY = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


def received_at(value: Any, received_on: date) -> datetime:
    """收件日期 as a moment in Beijing time: the cell's time of day when it has one (an Excel
    date-time, or text such as ``2024-03-18 09:30``), else the start of the day."""
    moment = time()
    if isinstance(value, datetime):
        moment = value.time().replace(microsecond=0, tzinfo=None)
    elif isinstance(value, str):
        parts = re.split(r"[ T]", value.strip(), maxsplit=1)
        match = _TIME_OF_DAY.fullmatch(parts[1].strip()) if len(parts) == 2 else None
        if match and int(match.group(1)) < 24 and int(match.group(2)) < 60:
            seconds = int(match.group(3) or 0)
            moment = time(int(match.group(1)), int(match.group(2)), min(seconds, 59))
    return datetime.combine(received_on, moment, tzinfo=BEIJING)


def parse_kind(value: Any) -> int:
    """办件类型 → the legacy code (1-4): "1", 1, 1.0, "承诺件", "1-承诺件", "2 即办"."""
    number = _integral(value)
    text = _text(value)
    if number is None:
        # "2", "2-即办件", "2 即办", but not "2.5" or "25件".
        match = re.fullmatch(r"\s*(\d+)(?:[-－、:：.\s]*[\u4e00-\u9fff].*)?", text)
        if match:
            number = int(match.group(1))
        else:
            for name, code in KIND_NAMES.items():
                if text.startswith(name):
                    number = code
                    break
    if number not in KIND_CODES:
        allowed = "、".join(f"{code} {label}" for code, label in KIND_LABEL.items())
        raise ValueError(f"{text!r} 不是本系统的办件类型代码（{allowed}）" if text else "必填")
    return number


def parse_row(
    raw: RawRow, *, default_operator: str, today: date | None = None
) -> RegisterEntry | list[Issue]:
    """Validate one row; every problem is named by its legacy column."""
    cells = raw.cells
    issues: list[Issue] = []

    def fail(key: str, reason: str) -> None:
        issues.append(Issue(HEADER[key], reason))

    register_id = _text(cells.get("register_id"))
    if not register_id:
        fail("register_id", "必填")
    elif len(register_id) > 64:
        fail("register_id", "长度超过 64")

    name = _text(cells.get("applicant"))
    if not name:
        fail("applicant", "必填")
    elif len(name) > 64:
        fail("applicant", "长度超过 64")

    id_value = cells.get("id_number")
    id_number = ""
    if isinstance(id_value, int | float) and not isinstance(id_value, bool):
        # Excel keeps 15 significant digits: an ID number stored as a number is already damaged.
        fail(
            "id_number", "在 Excel 中存成了数字（只保留 15 位有效数字）：请把该列设为文本后重新导出"
        )
    else:
        id_number = _text(id_value).upper()
        if not id_number:
            fail("id_number", "必填")
        elif not re.fullmatch(r"[0-9]{17}[0-9X]", id_number):
            fail("id_number", "应为 18 位居民身份证号码")
        elif not gb11643_ok(id_number):
            fail("id_number", "校验位不正确（GB 11643）")

    phone = _text(cells.get("phone"))
    if not phone:
        fail("phone", "必填")
    elif not re.fullmatch(r"[0-9+\- ]{5,20}", phone):
        fail("phone", "不是电话号码（5-20 位数字，可含 +、- 和空格）")  # never echo the value

    item_value = cells.get("item_code")
    item_code = _text(item_value)
    if _integral(item_value) is not None and len(item_code) < 12:
        # A numeric Excel cell dropped the code's leading zeros (070201001000 → 70201001000).
        item_code = item_code.zfill(12)
    if not item_code:
        fail("item_code", "必填")
    elif not re.fullmatch(r"[0-9]{12}([A-Z]{3}[0-9]{2})?", item_code):
        fail("item_code", f"{item_code!r} 不是事项编码（12 位数字，可带 YJS01 之类后缀）")

    kind_code = 0
    try:
        kind_code = parse_kind(cells.get("kind"))
    except ValueError as error:
        fail("kind", str(error))

    received_on = date.min
    try:
        received_on = parse_date(cells.get("received_on"), today=today)
    except ValueError as error:
        fail("received_on", str(error))

    status_text = _text(cells.get("status"))
    target = STATUS_NAMES.get(status_text)
    if target is None:
        known = "、".join(STATUS_NAMES)
        fail(
            "status", f"{status_text!r} 不能导入；可导入的状态：{known}" if status_text else "必填"
        )

    remark = _text(cells.get("remark"))
    if len(remark) > 2000:
        fail("remark", "长度超过 2000")

    region = _text(cells.get("competent_region"))
    if region and not re.fullmatch(r"[0-9]{12}", region):
        fail("competent_region", "应为 12 位区划代码")

    channel_text = _text(cells.get("channel"))
    channel = CHANNEL_NAMES.get(channel_text, 0) if channel_text else 0
    if channel_text and not channel:
        fail("channel", f"{channel_text!r} 不是受理方式；可用：{'、'.join(CHANNEL_NAMES)}")
    agent = _agent(cells, fail)

    if issues:
        return issues
    assert target is not None
    return RegisterEntry(
        number=raw.number,
        register_id=register_id,
        applicant=common_pb2.Applicant(name=name, id_number=id_number, phone=phone),
        item_code=item_code,
        kind_code=kind_code,
        kind=KIND_CODES[kind_code],
        received_on=received_on,
        received_at=received_at(cells.get("received_on"), received_on),
        target_state=target,
        status_text=status_text,
        remark=remark,
        operator=_text(cells.get("operator")) or default_operator,
        competent_region=region,
        channel=channel or common_pb2.INTAKE_CHANNEL_IMPORTED,
        agent=agent,
    )


def _agent(cells: dict[str, Any], fail: Any) -> common_pb2.AgentAuthorisation:
    """代办员, 代办类型 and 委托书摘要 as the submit's agent authorisation (empty: none)."""
    agent_id = _text(cells.get("agent"))
    role_text = _text(cells.get("agent_role"))
    letter = _text(cells.get("letter")).lower()
    if not agent_id:
        if role_text or letter:
            fail("agent", "必填：填写了代办类型或委托书，须写明代办员")
        return common_pb2.AgentAuthorisation()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", agent_id):
        fail("agent", "代办员编号应为 1-64 位字母、数字、. _ -")
    role = AGENT_ROLE_NAMES.get(role_text or "代办")
    if role is None:
        fail("agent_role", f"{role_text!r} 不是代办类型；可用：帮办、代办")
    if not re.fullmatch(r"[0-9a-f]{64}", letter):
        fail("letter", "必填：代办须有委托书（扫描件的 SHA-256，64 位十六进制）")
    message = common_pb2.AgentAuthorisation(agent_id=agent_id, letter_sha256=letter)
    message.role = common_pb2.AgentRole.ValueType(role or 0)
    return message


def idempotency_key(register_id: str, prefix: str = DEFAULT_KEY_PREFIX) -> str:
    """The submit's idempotency key for a 登记编号.

    The number itself when it is short printable ASCII (readable in the hub's records), else a
    SHA-256 of it (Chinese characters or very long numbers), always with ``prefix``.
    """
    key = prefix + register_id
    if key.isascii() and key.isprintable() and " " not in key and 8 <= len(key) <= _MAX_BASE_KEY:
        return key
    return prefix + "sha256-" + hashlib.sha256(register_id.encode("utf-8")).hexdigest()[:48]


def plan_steps(target: int, current: int) -> list[str] | None:
    """Commands that bring a case from ``current`` to the register's ``target`` state.

    ``[]`` when the hub is already there or further along; None when the two disagree in a way
    no command can settle (e.g. the register says 受理 but the hub's case was withdrawn).
    """
    if target in (current, S.CASE_STATE_RECEIVED):
        return []  # 已收件 in the register: whatever the hub did since is newer
    if target == S.CASE_STATE_REJECTED_AT_INTAKE:
        if current in (S.CASE_STATE_RECEIVED, S.CASE_STATE_AWAITING_CORRECTION):
            return ["reject_at_intake"]
        return None
    if target == S.CASE_STATE_WITHDRAWN:
        return ["withdraw"] if current in _OPEN else None
    if current in _FINAL_OTHER:
        return None
    paths: dict[int, list[str]] = {
        S.CASE_STATE_RECEIVED: [],
        S.CASE_STATE_ACCEPTED: ["accept"],
        S.CASE_STATE_HANDLING: ["accept", "start_handling"],
    }
    path = paths[target]
    if current == S.CASE_STATE_AWAITING_CORRECTION and path:
        return None  # the hub waits for a 补正 the register knows nothing about
    done = _PROGRESS.get(current, 0)
    return path[done:] if done < len(path) else []


# ============================================================================ the import


class HubClient(Protocol):
    """What the importer needs from the SDK client (``HallClient`` satisfies it)."""

    #: The hall the import acts as (its key signs the submits, see Importer.reconcile).
    credentials: HallCredentials

    def send_signed(
        self, action: str, signed: case_exchange_pb2.SignedCommand
    ) -> case_exchange_pb2.CommandReply:
        """Send a command signed beforehand."""
        ...

    def send(
        self,
        action: str,
        body: Message | None = None,
        *,
        idempotency_key: str,
        operator: str | None = None,
        **fields: Any,
    ) -> case_exchange_pb2.CommandReply:
        """Sign and send a command."""
        ...

    def get_case(self, case_id: str) -> case_exchange_pb2.CaseView:
        """A case's current state."""
        ...


@dataclass(frozen=True)
class RowOutcome:
    """What the import did with one row."""

    row: int
    register_id: str
    result: str  # created | updated | unchanged | rejected
    case_id: str = ""
    issues: tuple[Issue, ...] = ()
    note: str = ""

    @property
    def column(self) -> str:
        """The first column at fault ('' unless rejected)."""
        return self.issues[0].column if self.issues else ""

    @property
    def reason(self) -> str:
        """All problems, each with its column."""
        return "；".join(f"{i.column}: {i.reason}" for i in self.issues)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (no personal data)."""
        return {
            "row": self.row,
            "register_id": self.register_id,
            "result": self.result,
            "case_id": self.case_id,
            "column": self.column,
            "reason": self.reason,
            "issues": [{"column": i.column, "reason": i.reason} for i in self.issues],
            "note": self.note,
        }


@dataclass
class ImportReport:
    """The outcome of one import run."""

    path: Path
    outcomes: list[RowOutcome] = field(default_factory=list)
    ignored_headers: tuple[str, ...] = ()
    #: Set when the run stopped because of the node or the link (not a row's fault).
    stopped: str = ""
    not_processed: int = 0

    def counts(self) -> dict[str, int]:
        """Rows per result."""
        counts = dict.fromkeys(("created", "updated", "unchanged", "rejected"), 0)
        for outcome in self.outcomes:
            counts[outcome.result] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        """The whole report as a JSON-ready dict."""
        return {
            "file": str(self.path),
            "counts": self.counts(),
            "rows": [o.to_json() for o in self.outcomes],
            "ignored_headers": list(self.ignored_headers),
            "stopped": self.stopped,
            "not_processed": self.not_processed,
        }

    def write_csv(self, path: Path) -> None:
        """The report as CSV for the hall's staff (UTF-8 with BOM, so Excel shows Chinese)."""
        with Path(path).open("w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["行号", "登记编号", "结果", "办件编号", "列", "原因", "说明"])
            for o in self.outcomes:
                writer.writerow(
                    [o.row, o.register_id, o.result, o.case_id, o.column, o.reason, o.note]
                )

    def summary(self) -> str:
        """One line: counts per result."""
        counts = self.counts()
        line = ", ".join(f"{name} {count}" for name, count in counts.items())
        if self.stopped:
            line += f"; STOPPED ({self.not_processed} rows not processed): {self.stopped}"
        return line


#: The hub's field names (after ``command.<action>.`` or ``command.header.``) → this register's
#: columns. (A refused personal value, ``personal[i].value``, is first resolved to the field it
#: carries: NodeRefused.resolve_personal.)
COLUMN_OF_HUB_FIELD: dict[str, str] = {
    "item_code": HEADER["item_code"],
    "applicant.name": HEADER["applicant"],
    "name": HEADER["applicant"],
    "applicant.id_number": HEADER["id_number"],
    "id_number": HEADER["id_number"],
    "applicant.phone": HEADER["phone"],
    "competent_region": HEADER["competent_region"],
    "idempotency_key": HEADER["register_id"],
    "reason": HEADER["remark"],
    "operator": HEADER["operator"],
    "issued_at": HEADER["received_on"],
}

#: Refused header fields that are the importer's configuration, not the row's: the run stops.
_SETUP_FIELDS = frozenset(
    {"command.header.node", "command.header.region", "command.header.hall_id"}
)


class Importer:
    """Reconciles register rows with the hub, acting as one hall."""

    def __init__(
        self,
        client: HubClient,
        catalogue: ItemCatalogue,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        default_operator: str = "import",
        today: date | None = None,
        issued_at: str = "received",
    ) -> None:
        if issued_at not in ISSUED_AT_CHOICES:
            raise ConfigError(
                f"--issued-at {issued_at!r}: use {' or '.join(ISSUED_AT_CHOICES)} "
                "(TONGBAN_IMPORT_ISSUED_AT)"
            )
        self.client = client
        self.catalogue = catalogue
        self.key_prefix = key_prefix
        self.default_operator = default_operator
        self.today = today
        self.issued_at = issued_at

    def run(self, register: Register) -> ImportReport:
        """Import every row; stops only when the node or link fails (not for a bad row)."""
        report = ImportReport(register.path, ignored_headers=register.ignored_headers)
        first_row_of: dict[str, int] = {}
        for index, raw in enumerate(register.rows):
            parsed = parse_row(raw, default_operator=self.default_operator, today=self.today)
            register_id = _text(raw.cells.get("register_id"))
            if isinstance(parsed, list):
                report.outcomes.append(
                    RowOutcome(raw.number, register_id, "rejected", issues=tuple(parsed))
                )
                if register_id:
                    # A later row with this number is no less ambiguous for this one's faults.
                    first_row_of.setdefault(register_id, raw.number)
                continue
            if parsed.register_id in first_row_of:
                issue = Issue(
                    HEADER["register_id"],
                    f"与第 {first_row_of[parsed.register_id]} 行的登记编号重复，本行未导入",
                )
                report.outcomes.append(
                    RowOutcome(raw.number, parsed.register_id, "rejected", issues=(issue,))
                )
                continue
            first_row_of[parsed.register_id] = raw.number
            try:
                report.outcomes.append(self.reconcile(parsed))
            except NodeRefused as fatal:  # only what stops the run leaves reconcile
                report.stopped = str(fatal)
                report.not_processed = len(register.rows) - index
                break
        return report

    def reconcile(self, entry: RegisterEntry) -> RowOutcome:
        """Bring one valid row into the hub (see the module docstring).

        A refusal that is the row's is its outcome (``rejected``); one that stops the run (the
        catalogue cannot be read, :func:`stops_the_run`, the importer's setup) is raised as the
        :class:`~adapters.errors.NodeRefused` it is.
        """
        item = self.catalogue.get(entry.item_code)
        if item is None:
            return self._rejected(entry, Issue(HEADER["item_code"], "不在通办节点的事项目录中"))
        if item.kind != entry.kind:
            expected = next((c for c, k in KIND_CODES.items() if k == item.kind), 0)
            return self._rejected(
                entry,
                Issue(
                    HEADER["kind"],
                    f"事项 {item.code} 为{KIND_LABEL.get(expected, '?')}（代码 {expected}），"
                    f"登记册写的是 {entry.kind_code}",
                ),
            )
        key = idempotency_key(entry.register_id, self.key_prefix)
        signed = self.sign_submit(entry, key)
        deferred = self.issued_at == "received"
        try:
            reply = self.client.send_signed("submit", signed)
        except NodeRefused as refusal:
            failure = refusal.resolve_personal(signed.personal)
            return self._refused(entry, failure, step="submit", deferred=deferred)
        case_id = reply.case_id
        try:
            view = self.client.get_case(case_id)
            steps = plan_steps(entry.target_state, view.state)
        except NodeRefused as refusal:
            return self._refused(entry, refusal, step="get", case_id=case_id)
        if steps is None:
            state = common_pb2.CaseState.Name(view.state)
            return self._rejected(
                entry,
                Issue(
                    HEADER["status"],
                    f"登记册为「{entry.status_text}」，但通办中的办件已是 {state}，无法对齐",
                ),
                case_id=case_id,
            )
        advanced = False
        for action in steps:
            fields: dict[str, Any] = {"case_id": case_id}
            if action in ("reject_at_intake", "withdraw"):
                fields["reason"] = entry.remark or f"按办事登记册（{entry.status_text}）导入"
            try:
                step = self.client.send(
                    action,
                    idempotency_key=f"{key}/{action}",
                    operator=entry.operator,
                    **fields,
                )
            except NodeRefused as refusal:
                return self._refused(entry, refusal, step=action, case_id=case_id)
            advanced = advanced or not step.replayed
        if not reply.replayed:
            return RowOutcome(entry.number, entry.register_id, "created", case_id)
        if advanced:
            return RowOutcome(
                entry.number,
                entry.register_id,
                "updated",
                case_id,
                note=f"brought forward to {entry.status_text}",
            )
        return RowOutcome(entry.number, entry.register_id, "unchanged", case_id)

    def sign_submit(self, entry: RegisterEntry, key: str) -> case_exchange_pb2.SignedCommand:
        """The row's signed submit: the SDK's commitments to the applicant in the signed bytes,
        the clear values beside them; deferred with the row's 收件日期, or signed now (see
        ``issued_at``)."""
        deferred = self.issued_at == "received"
        return sign_command(
            self.client.credentials,
            "submit",
            entry.submit(),
            idempotency_key=key,
            operator=entry.operator,
            issued_at=entry.received_at if deferred else None,
            deferred=deferred,
            applicant=entry.applicant,
            agent=entry.agent.agent_id,  # the agent who took it in, under the hall's key
        )

    def _rejected(self, entry: RegisterEntry, issue: Issue, *, case_id: str = "") -> RowOutcome:
        return RowOutcome(entry.number, entry.register_id, "rejected", case_id, issues=(issue,))

    def _refused(
        self,
        entry: RegisterEntry,
        failure: NodeRefused,
        *,
        step: str,
        case_id: str = "",
        deferred: bool = False,
    ) -> RowOutcome:
        """A refusal from the node, named by the register's column where possible.

        Refusals that are not the row's fault stop the run (they are raised): the node or link
        failing (:func:`stops_the_run`), the hall's setup (wrong ``--node``, region or hall), or
        the clock of a command signed now. A deferred submit refused for its time names 收件日期.
        """
        hub_field = failure.violations[0][0] if failure.violations else ""
        clock = hub_field == "command.header.issued_at" and not deferred
        if stops_the_run(failure) or hub_field in _SETUP_FIELDS or clock:
            raise failure
        if step == "submit" and hub_field == "command.header.issued_at":
            issue = Issue(
                HEADER["received_on"],
                f"通办节点拒绝按收件日期补录（{failure.code.name}）：{failure.message}"
                "（早于节点补录期限的登记，可待节点调大 TONGBAN_DEFERRED_MAX_AGE_DAYS 后再导入，"
                "或以 --issued-at now 按导入时间签名导入）",
            )
        elif step == "submit":
            if failure.code == grpc.StatusCode.ALREADY_EXISTS:
                issue = Issue(
                    HEADER["register_id"],
                    "该登记编号已导入过，但登记内容（申请人、证件号码、电话、事项、办件类型或"
                    "收件日期）与当时不同；通办中的办件未作修改",
                )
            else:
                suffix = failure.field_suffix()
                column = COLUMN_OF_HUB_FIELD.get(suffix) or COLUMN_OF_HUB_FIELD.get(
                    suffix.rsplit(".", 1)[-1], HEADER["item_code"]
                )
                issue = Issue(column, f"通办节点拒绝收件（{failure.code.name}）：{failure.message}")
        else:
            issue = Issue(
                HEADER["status"],
                f"已收件为办件，但无法同步到「{entry.status_text}」（{step}: "
                f"{failure.code.name}）：{failure.message}",
            )
        return self._rejected(entry, issue, case_id=case_id)


def describe(report: ImportReport) -> str:
    """A plain text report: one line per row, then the summary."""
    lines = []
    for o in report.outcomes:
        detail = o.case_id
        if o.result == "rejected":
            detail = f"[{o.column}] {o.reason}" + (f" (case {o.case_id})" if o.case_id else "")
        elif o.note:
            detail += f" ({o.note})"
        lines.append(f"row {o.row:>5}  {o.register_id:24}  {o.result:9}  {detail}")
    if report.ignored_headers:
        lines.append(f"ignored columns: {'、'.join(report.ignored_headers)}")
    lines.append(f"{report.path}: {report.summary()}")
    return "\n".join(lines)

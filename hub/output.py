"""How ``tongban`` prints: headed tables and JSON documents, in one place.

Tables are drawn with ``rich``. It was chosen over ``tabulate`` + ``wcwidth`` because it measures
every character by its terminal cell width (a CJK character takes two cells, so columns after
名称 or 区划 stay aligned), it is actively maintained and already in the dependency tree (the
import linter uses it), and one ``Table`` serves both cases: on a terminal it fits the window
(wrapping long cells) with a bold header; anywhere else (a pipe, a file, a test) the table is
rendered plain, with no colour or control codes, no wrapping at any width, an ASCII rule under the
header and no trailing spaces, so ``grep``, ``awk`` and scripts see stable lines.

JSON is one document per call, UTF-8 and readable (``ensure_ascii=False``: 湖南省, not
``\\u6e56``). :func:`plain` turns dataclasses, enums, tuples, UUIDs and paths into JSON values.

A leaf module: it imports nothing from the hub, so every entry point may use it.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, TextIO
from uuid import UUID

if TYPE_CHECKING:
    from rich.table import Table

#: A table cell: text, a number (right-aligned when its whole column is numbers), or nothing.
Cell = str | int | float | None

#: Wide enough that a plain table never wraps, however long its cells are.
_PLAIN_WIDTH = 1_000_000


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[Cell]], *, file: TextIO | None = None
) -> None:
    """Print ``rows`` under ``headers``, columns aligned by display width (CJK-aware)."""
    from rich.console import Console

    stream = sys.stdout if file is None else file
    cells = [list(row) for row in rows]
    for number, row in enumerate(cells):
        if len(row) != len(headers):
            raise ValueError(f"row {number} has {len(row)} cells for {len(headers)} headers")
    if _is_terminal(stream):
        console = Console(file=stream, highlight=False, markup=False, emoji=False)
        console.print(_table(headers, cells, terminal=True))
        return
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=_PLAIN_WIDTH,
        color_system=None,
        force_terminal=False,
        force_jupyter=False,
        highlight=False,
        markup=False,
        emoji=False,
    )
    console.print(_table(headers, cells, terminal=False))
    stream.write("".join(f"{line.rstrip()}\n" for line in buffer.getvalue().splitlines()))


def print_csv(
    headers: Sequence[str], rows: Iterable[Sequence[Cell]], *, file: TextIO | None = None
) -> None:
    """Print ``rows`` as CSV for spreadsheets: UTF-8 with a byte-order mark (so Excel reads
    沙头镇 as such), a header line, RFC 4180 quoting."""
    import csv

    stream = sys.stdout if file is None else file
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(headers)
    writer.writerows(["" if cell is None else cell for cell in row] for row in rows)
    text = "\ufeff" + buffer.getvalue()
    binary = getattr(stream, "buffer", None)
    if binary is None:
        stream.write(text)
        return
    stream.flush()
    binary.write(text.encode("utf-8"))
    binary.flush()


def print_json(document: Any, *, file: TextIO | None = None) -> None:
    """Print ``document`` as one readable UTF-8 JSON document (after :func:`plain`)."""
    stream = sys.stdout if file is None else file
    text = json.dumps(plain(document), ensure_ascii=False, indent=2) + "\n"
    encoding = (getattr(stream, "encoding", None) or "utf-8").lower().replace("-", "")
    binary = getattr(stream, "buffer", None)
    if encoding == "utf8" or binary is None:
        stream.write(text)
        return
    # JSON is UTF-8 whatever the locale says (RFC 8259 section 8.1).
    stream.flush()
    binary.write(text.encode("utf-8"))
    binary.flush()


def plain(value: Any) -> Any:
    """``value`` as JSON values: dataclasses as objects, enums by name, tuples as lists."""
    if isinstance(value, enum.Enum):  # before int and str: IntEnum and StrEnum by name too
        return value.name
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(item) for item in value]
    if isinstance(value, UUID | PurePath):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"cannot print a {type(value).__name__} as JSON")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


def _table(headers: Sequence[str], rows: list[list[Cell]], *, terminal: bool) -> Table:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    # On a terminal rich's SIMPLE_HEAD (one rule under the header); elsewhere the same in ASCII.
    ascii_head = box.Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)
    table = Table(
        box=box.SIMPLE_HEAD if terminal else ascii_head,
        show_edge=False,
        pad_edge=False,
        highlight=False,
        header_style="bold" if terminal else "",
    )
    for column, header in enumerate(headers):
        cells = [row[column] for row in rows if row[column] is not None]
        numeric = bool(cells) and all(
            isinstance(c, int | float) and not isinstance(c, bool) for c in cells
        )
        # (overflow: a cell wider than a terminal is folded onto more lines, never cut short)
        table.add_column(Text(header), justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*(Text("" if cell is None else str(cell)) for cell in row))
    return table

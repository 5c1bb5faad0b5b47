"""The streaming .xlsx writer every export uses: openpyxl in ``write_only`` mode, one sheet after another, rows
appended in chunks as they are read from the database, so a sheet of 100,000 rows is never held in memory.

openpyxl is already what ``crmbot import`` reads spreadsheets with; its write-only workbook spools each sheet's rows
to a temporary file and zips them on save, which keeps memory flat (xlsxwriter's constant_memory would too, but would
add a second spreadsheet library). With lxml installed openpyxl writes that XML through it, 1.8 times as fast as
through its pure-Python writer (docs/BENCHMARKS.md, "Excel export"). Each column has a header (bold, the row frozen),
a width and a kind: dates and times are written as real Excel dates in local time, amounts as numbers, and text stays
text (a value starting with ``=`` is never a formula).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from openpyxl.worksheet._write_only import WriteOnlyWorksheet

ColumnKind = Literal["text", "date", "datetime", "number"]
MAX_CELL = 32767  # characters Excel keeps in one cell


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    width: float = 14
    kind: ColumnKind = "text"


class Book:
    """One workbook being written: ``sheet(title, columns)`` then ``append`` rows, ``save`` at the end."""

    def __init__(self, tz: ZoneInfo) -> None:
        # openpyxl is loaded by the first export only: loading it costs every other command start-up time.
        from openpyxl import Workbook
        from openpyxl.cell import WriteOnlyCell
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
        from openpyxl.styles import Font
        from openpyxl.utils import get_column_letter

        self.tz = tz
        self._book = Workbook(write_only=True)
        self._cell_of, self._illegal, self._letter = WriteOnlyCell, ILLEGAL_CHARACTERS_RE, get_column_letter
        self._bold = Font(bold=True)
        self._sheet: WriteOnlyWorksheet | None = None
        self._columns: Sequence[Column] = ()
        self.rows = 0  # data rows written, over all sheets

    def sheet(self, title: str, columns: Sequence[Column]) -> None:
        sheet = self._book.create_sheet(title[:31])
        sheet.freeze_panes = "A2"
        for i, column in enumerate(columns, start=1):
            sheet.column_dimensions[self._letter(i)].width = column.width
        header = []
        for column in columns:
            cell = self._cell_of(sheet, value=column.header)
            cell.font = self._bold
            header.append(cell)
        sheet.append(header)
        self._sheet, self._columns = sheet, columns

    def append(self, rows: Sequence[Sequence[Any]]) -> None:
        assert self._sheet is not None, "sheet() first"
        kinds = [c.kind for c in self._columns]
        for row in rows:
            self._sheet.append([self._cell(value, kind) for value, kind in zip(row, kinds, strict=True)])
        self.rows += len(rows)

    def _cell(self, value: Any, kind: ColumnKind) -> Any:
        if value is None or value == "":
            return None
        if isinstance(value, datetime):
            local = value.astimezone(self.tz).replace(tzinfo=None, microsecond=0)
            return local.date() if kind == "date" else local
        if isinstance(value, date | int | float):
            return value
        if isinstance(value, Decimal):
            return float(value)
        text = self._illegal.sub("", str(value))[:MAX_CELL]
        if text.startswith("="):  # text, never a formula: a customer named "=HYPERLINK(…)" stays a name
            cell = self._cell_of(self._sheet, value=text)
            cell.data_type = "s"
            return cell
        return text

    def save(self, target: Path | IO[bytes]) -> None:
        self._book.save(target)


async def write_sheet(book: Book, title: str, columns: Sequence[Column], rows: AsyncIterator[list[list[Any]]]) -> int:
    """Write one sheet from ``rows`` (chunks of rows, read from the database); how many rows it got. Each chunk is
    appended in a worker thread while the next one is read, so a long export never holds up the event loop; at
    most two chunks are in memory."""
    book.sheet(title, columns)
    before = book.rows
    writing: asyncio.Future[None] | None = None
    try:
        async for chunk in rows:
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(asyncio.to_thread(book.append, chunk))
    finally:
        if writing is not None:
            await writing
    return book.rows - before

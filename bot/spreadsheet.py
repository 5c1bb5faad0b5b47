"""Reading the spreadsheets admins already have (.csv or .xlsx) into a ``Table``, and cleaning their cells.

A header row may sit under a title row or two; headers may be Chinese or English (each field lists the headers it
answers to); unknown columns are kept by header for the caller. CSV files may be UTF-8 or GBK (as Excel in China
saves them) or Excel's UTF-16 "Unicode text". Cleaning: whitespace (full-width too) and zero-width marks are
trimmed, ids and phone numbers are normalized to half-width, dates are read in the forms people type.

``read_table`` reads a sheet whole (small files: orders, opportunities, targets); ``open_sheet`` streams one (the
staff and customer imports): a CSV file is checked whole first (its encoding and quoting, counting its rows, in
constant memory) so that a bad file is refused before anything is written, then read again row by row; an .xlsx
workbook is read in openpyxl's read-only mode, row by row.
"""

from __future__ import annotations

import codecs
import csv
import re
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

HEADER_SEARCH_ROWS = 10  # a title row or two above the header is common in templates
LIST_SEPARATORS = re.compile(r"[;；、,，|]")
ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))

Cell = str | int | float | bool | datetime | date | time | None
Columns = dict[str, tuple[str, ...]]  # field → the headers it answers to


class ImportFailed(Exception):
    """The file cannot be imported at all; nothing was written. The message is one line for the admin."""


def header_key(header: str) -> str:
    key = unicodedata.normalize("NFKC", header).translate(ZERO_WIDTH).casefold()
    return re.sub(r"[\s*_\-]+", "", key)


def column_index(columns: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {header_key(label): canonical for canonical, labels in columns.items() for label in labels}


@dataclass
class Header:
    """Which column holds which field, and unknown columns by header."""

    fields: dict[str, int]
    extras: dict[str, int]


@dataclass
class Table(Header):
    """A sheet read whole: its header and the data rows by row number."""

    rows: list[tuple[int, list[Cell]]]


@dataclass
class Sheet(Header):
    """A sheet read as it goes: its header, the data rows by row number as they come (blank rows skipped), and
    how many rows the file has in all (when known: for the progress shown while importing)."""

    rows: Iterator[tuple[int, list[Cell]]]
    total: int | None


def map_header(row: Sequence[Cell], index: dict[str, str]) -> tuple[dict[str, int], dict[str, int]]:
    fields: dict[str, int] = {}
    extras: dict[str, int] = {}
    for i, cell in enumerate(row):
        header = clean_text(cell)
        if not header:
            continue
        key = header_key(header)
        # "合同到期(YYYY-MM-DD)": a hint in brackets after a known header
        canonical = index.get(key) or index.get(re.sub(r"[(\[].*[)\]]$", "", key))
        if canonical is None:
            extras.setdefault(header, i)
        elif canonical in fields:
            raise ImportFailed(f"列「{header}」重复 duplicate column {canonical!r}")
        else:
            fields[canonical] = i
    return fields, extras


def find_header(rows: Iterator[tuple[int, Sequence[Cell]]], index: dict[str, str]) -> Header | None:
    """The first row (of the first few non-blank ones) that has the name column, read from ``rows`` (which are
    left at the first row under it), or None."""
    seen = 0
    for _, row in rows:
        if blank(row):
            continue
        fields, extras = map_header(row, index)
        if "name" in fields:
            return Header(fields, extras)
        seen += 1
        if seen >= HEADER_SEARCH_ROWS:
            break
    return None


def _data(rows: Iterator[tuple[int, Sequence[Cell]]]) -> Iterator[tuple[int, list[Cell]]]:
    return ((n, list(r)) for n, r in rows if not blank(r))


def blank(row: Sequence[Cell]) -> bool:
    return all(clean_text(c) == "" for c in row)


def read_table(path: Path, columns: Columns, required: str) -> Table:
    """The table in ``path`` whose header has the ``name`` field, read whole; ``required`` names that column for
    the admin."""
    with open_sheet(path, columns, required) as sheet:
        return Table(sheet.fields, sheet.extras, list(sheet.rows))


@contextmanager
def open_sheet(path: Path, columns: Columns, required: str) -> Iterator[Sheet]:
    """The sheet in ``path`` whose header has the ``name`` field, streamed; ``required`` names that column for the
    admin. Refused like ``read_table``; a workbook that turns out unreadable further down raises ``ImportFailed``
    while its rows are read."""
    index = column_index(columns)
    if not path.is_file():
        raise ImportFailed(f"文件不存在 file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        encoding, delimiter, total = _checked_csv(path)
        with path.open(encoding=encoding, newline="") as file:
            rows = enumerate(csv.reader(file, delimiter=delimiter), start=1)
            header = find_header(rows, index)
            if header is None:
                raise ImportFailed(f"{path.name}: 缺少必填列「{required}」 missing required column")
            yield Sheet(header.fields, header.extras, _data(rows), total)
    elif suffix in (".xlsx", ".xlsm"):
        with _xlsx_sheet(path, index) as sheet:
            if sheet is None:
                raise ImportFailed(f"{path.name}: 缺少必填列「{required}」 missing required column")
            yield sheet
    elif suffix == ".xls":
        raise ImportFailed(f"{path.name}: 不支持旧版 .xls，请在 Excel 中另存为 .xlsx 或 .csv (.xls is not supported)")
    else:
        raise ImportFailed(f"{path.name}: 只支持 .csv 和 .xlsx 文件 (expected .csv or .xlsx)")


def _checked_csv(path: Path) -> tuple[str, str, int]:
    """(encoding, delimiter, records) of a CSV file read through once without keeping it: a file that is not
    text, not in a known encoding or not well-formed is refused before anything is imported from it."""
    try:
        with path.open("rb") as file:
            head = file.read(4096)
    except OSError as exc:
        raise ImportFailed(f"{path.name}: 无法读取文件 cannot read: {exc.strerror}") from exc
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Excel's "Unicode text"
        encodings: tuple[str, ...] = ("utf-16",)
    elif b"\x00" in head:
        raise ImportFailed(f"{path.name}: 不是文本 CSV 文件 (binary data)")
    else:
        encodings = ("utf-8-sig", "gb18030")  # Excel in China saves CSV as GBK
    for encoding in encodings:
        try:
            with path.open(encoding=encoding, newline="") as file:
                first = file.readline()
                delimiter = "\t" if first.count("\t") > first.count(",") else ","
                file.seek(0)
                records = 0
                try:
                    for _ in csv.reader(file, delimiter=delimiter, strict=True):
                        records += 1
                except csv.Error as exc:
                    row = records + 1
                    reason = f"第{row}行引号未闭合或格式错误，未导入任何数据 malformed CSV at row {row}: {exc}"
                    raise ImportFailed(f"{path.name}: {reason}") from exc
                return encoding, delimiter, records
        except UnicodeDecodeError:
            continue
    raise ImportFailed(f"{path.name}: 无法识别文件编码，请另存为 UTF-8 CSV (unknown text encoding)")


@contextmanager
def _xlsx_sheet(path: Path, index: dict[str, str]) -> Iterator[Sheet | None]:
    import openpyxl  # only here: loading it costs every other command start-up time

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # zipfile, XML and openpyxl errors all mean the same to the admin
        raise _unreadable(path, exc) from exc
    try:
        for sheet in workbook.worksheets:  # the first sheet that has the header (templates put 说明 first)
            try:
                rows = enumerate(sheet.iter_rows(values_only=True), start=1)
                header = find_header(rows, index)
            except ImportFailed:
                raise
            except Exception as exc:
                raise _unreadable(path, exc) from exc
            if header is not None:
                yield Sheet(header.fields, header.extras, _guarded(_data(rows), path), sheet.max_row)
                return
        yield None
    finally:
        workbook.close()


def _guarded(rows: Iterator[tuple[int, list[Cell]]], path: Path) -> Iterator[tuple[int, list[Cell]]]:
    try:
        yield from rows
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path: Path, exc: Exception) -> ImportFailed:
    return ImportFailed(f"{path.name}: 无法读取 Excel 文件 unreadable xlsx ({type(exc).__name__})")


def clean_text(cell: Cell) -> str:
    """A cell as trimmed text: whitespace (full-width too) and zero-width marks removed, runs of spaces single."""
    if type(cell) is str:  # most cells: no number or date to turn into text first
        return " ".join(cell.translate(ZERO_WIDTH).split())
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer():
        cell = int(cell)
    if isinstance(cell, datetime) and cell.time() == time(0):
        cell = cell.date()
    return " ".join(str(cell).translate(ZERO_WIDTH).split())


def clean_id(cell: Cell) -> str:
    """Ids and phone numbers: half-width (NFKC), no whitespace at all."""
    return "".join(unicodedata.normalize("NFKC", clean_text(cell)).split())


def split_list(cell: Cell) -> list[str]:
    out: list[str] = []
    for part in LIST_SEPARATORS.split(clean_text(cell)):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return out


def _excel_serial(value: float) -> datetime | None:
    if 1 <= value < 2958466:  # Excel's serial day numbers (1900 date system)
        return datetime(1899, 12, 30) + timedelta(days=value)
    return None


_DATE = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")
_DATETIME = re.compile(
    r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?(?:[\sT]*(\d{1,2})\s*[:时点]\s*(\d{1,2})"
    r"(?:\s*[:分]\s*(\d{1,2})(?:\.\d+)?\s*秒?)?\s*分?)?$"
)


def parse_date(cell: Cell) -> date:
    """2026-12-31, 2026/12/31, 2026.12.31, 2026年12月31日, 20261231, or an Excel date cell; ValueError else."""
    if isinstance(cell, datetime):
        return cell.date()
    if isinstance(cell, date):
        return cell
    if isinstance(cell, int | float) and not isinstance(cell, bool) and (moment := _excel_serial(float(cell))):
        return moment.date()
    text = unicodedata.normalize("NFKC", clean_text(cell))
    if m := _DATE.match(text):
        return date(int(m[1]), int(m[2]), int(m[3]))
    if re.fullmatch(r"\d{8}", text):
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    moment = parse_datetime(cell, ZoneInfo("UTC"))  # "2026-12-31 00:00" is a date too
    return moment.date()


def parse_datetime(cell: Cell, tz: ZoneInfo) -> datetime:
    """A moment; without a zone it is local time in ``tz``; a bare date is local midnight. ValueError else."""
    moment: datetime
    if isinstance(cell, datetime):
        moment = cell
    elif isinstance(cell, date):
        moment = datetime.combine(cell, time(0))
    elif isinstance(cell, int | float) and not isinstance(cell, bool) and _excel_serial(float(cell)):
        moment = _excel_serial(float(cell)) or datetime.min
    else:
        text = unicodedata.normalize("NFKC", clean_text(cell))
        if m := _DATETIME.match(text):
            moment = datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4] or 0), int(m[5] or 0), int(m[6] or 0))
        else:
            moment = datetime.fromisoformat(text)  # ValueError for anything else
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def cell_of(row: list[Cell], table: Header, key: str) -> Cell:
    """The cell of field ``key`` in ``row`` (None when the table has no such column)."""
    i = table.fields.get(key)
    return row[i] if i is not None and i < len(row) else None

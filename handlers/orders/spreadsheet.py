"""``crmbot import orders FILE``: orders from an ERP export (.csv or .xlsx), with the webhook's fields as columns
(Chinese or English headers), into the one path of order events (``bot.orderflow``).

Columns: 订单号/order_no, 客户名称/customer (name or alias), 下单日期/order_date, and optionally 状态/status
(code or Chinese label, default 下单), 状态时间/at (default the order day), 金额/total (yuan: ``12,000``,
``1.2万``), 产品/product, 产品线/存货分类/product_line, 数量/quantity, 行金额/line_amount, 物流公司/carrier,
物流单号/tracking_no, 发票号/invoice_no, 来源/source. Rows with the same order number and status are one event,
each row with a product one line of it; the rows of one order are expected one after another, as ERPs export them.

The file is streamed: read ``IMPORT_ROWS`` rows at a time (an order's rows are never split between two reads), each
read written in its own transaction through ``apply_events`` (multi-row statements), then the repurchase windows
of every customer it named are recomputed once. Unusable rows are reported with their row number and reason. A
rerun, after a crash or not, adds nothing twice: an order's status is written once, so it resumes where it stopped."""

from __future__ import annotations

import asyncio
import codecs
import csv
import re
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web
from tortoise.transactions import in_transaction

from bot import audit, sql
from bot.keys import CLOCK, SETTINGS
from bot.orderflow import BadEvent, apply_events, customer_ids, parse_event, parse_status, refresh_repurchase
from bot.spreadsheet import (
    HEADER_SEARCH_ROWS,
    Cell,
    ImportFailed,
    Table,
    blank,
    cell_of,
    clean_id,
    clean_text,
    column_index,
    map_header,
    parse_date,
)

ORDER_COLUMNS: dict[str, tuple[str, ...]] = {
    "name": ("客户名称", "客户", "customer", "name", "公司名称", "客户全称"),
    "order_date": ("下单日期", "订单日期", "order_date", "date", "日期", "下单时间"),
    "total": ("金额", "订单金额", "总金额", "总额", "含税金额", "total", "amount"),
    "order_no": ("订单号", "订单编号", "order_no", "external_no", "单号", "erp单号"),
    "status": ("状态", "订单状态", "status"),
    "at": ("状态时间", "时间", "at"),
    "product": ("产品", "产品名称", "商品", "product"),
    "product_line": ("产品线", "存货分类", "产品分类", "product_line"),
    "quantity": ("数量", "quantity", "qty"),
    "line_amount": ("行金额", "明细金额", "line_amount"),
    "carrier": ("物流公司", "承运商", "carrier"),
    "tracking_no": ("物流单号", "运单号", "快递单号", "tracking_no"),
    "invoice_no": ("发票号", "发票号码", "invoice_no"),
    "source": ("来源", "source"),
}
IMPORT_ROWS = 5000  # rows read (and written in one transaction) at a time
WINDOW_CUSTOMERS = 1000  # customers whose windows are recomputed in one transaction
SNIFF_BYTES = 1 << 20  # the start of a CSV its encoding is judged on
MAX_REJECTIONS_SHOWN = 20
REQUIRED = (("order_date", "下单日期/order_date"), ("order_no", "订单号/order_no"))
_AMOUNT = re.compile(r"^(\d+(?:\.\d+)?)(万)?$")


@dataclass
class OrderReport:
    added: int = 0
    existing: int = 0
    customers: int = 0
    rejected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"订单导入完成 orders imported: 新增 added {self.added}，已存在 already there {self.existing}，"
            f"涉及客户 customers {self.customers}，拒绝 rejected {len(self.rejected)}"
        ]
        lines.extend(self.rejected[:MAX_REJECTIONS_SHOWN])
        if len(self.rejected) > MAX_REJECTIONS_SHOWN:
            lines.append(f"… 另有 {len(self.rejected) - MAX_REJECTIONS_SHOWN} 行被拒绝 more rejected rows")
        return "\n".join(lines)


class OrderRows:
    """An order file read a few rows at a time: its header found (``table``, without rows), then ``read(n)``."""

    def __init__(self, path: Path, rows: Iterator[tuple[int, Sequence[Cell]]], close: Callable[[], None]) -> None:
        self.path, self._rows, self._close = path, rows, close
        self.total: int | None = None  # data rows, when the format says (xlsx)
        index = column_index(ORDER_COLUMNS)
        found = None
        for seen, (_, row) in enumerate((r for r in rows if not blank(r[1])), start=1):
            fields, extras = map_header(row, index)
            if "name" in fields:
                found = Table(fields, extras, [])
                break
            if seen >= HEADER_SEARCH_ROWS:
                break
        if found is None:
            raise ImportFailed(f"{path.name}: 缺少必填列「客户名称/customer」 missing required column")
        missing = [label for key, label in REQUIRED if key not in found.fields]
        if missing:
            raise ImportFailed(f"{path.name}: 缺少必填列「{'、'.join(missing)}」 missing required column")
        self.table = found

    @classmethod
    def open(cls, path: Path) -> OrderRows:
        if not path.is_file():
            raise ImportFailed(f"文件不存在 file not found: {path}")
        suffix = path.suffix.lower()
        if suffix in (".csv", ".txt", ".tsv"):
            handle = _text_file(path)
            first = handle.readline()
            handle.seek(0)
            delimiter = "\t" if first.count("\t") > first.count(",") else ","
            rows = enumerate(csv.reader(handle, delimiter=delimiter, strict=True), start=1)
            return cls(path, _checked(rows, path), handle.close)
        if suffix in (".xlsx", ".xlsm"):
            return cls._xlsx(path)
        if suffix == ".xls":
            raise ImportFailed(
                f"{path.name}: 不支持旧版 .xls，请在 Excel 中另存为 .xlsx 或 .csv (.xls is not supported)"
            )
        raise ImportFailed(f"{path.name}: 只支持 .csv 和 .xlsx 文件 (expected .csv or .xlsx)")

    @classmethod
    def _xlsx(cls, path: Path) -> OrderRows:
        import openpyxl  # only here: loading it costs every other command start-up time

        try:
            workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as exc:  # zipfile, XML and openpyxl errors all mean the same to the admin
            raise ImportFailed(f"{path.name}: 无法读取 Excel 文件 unreadable xlsx ({type(exc).__name__})") from exc
        for sheet in workbook.worksheets:  # the first sheet that has the header (templates put 说明 first)
            rows = enumerate(sheet.iter_rows(values_only=True), start=1)
            try:
                reader = cls(path, rows, workbook.close)
            except ImportFailed:
                continue
            reader.total = sheet.max_row
            return reader
        workbook.close()
        raise ImportFailed(f"{path.name}: 缺少必填列「客户名称/customer」 missing required column")

    def read(self, count: int) -> list[tuple[int, list[Cell]]]:
        """Up to ``count`` more non-blank data rows, by row number; [] at the end."""
        rows = []
        for n, row in self._rows:
            if not blank(row):
                rows.append((n, list(row)))
                if len(rows) >= count:
                    break
        return rows

    def __enter__(self) -> OrderRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()


def _text_file(path: Path) -> TextIO:
    """The CSV as text: UTF-16 with its mark, else UTF-8, else GB18030 (Excel in China), judged on its start."""
    with path.open("rb") as probe:
        head = probe.read(SNIFF_BYTES)
    if b"\x00" in head[:4096] and not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ImportFailed(f"{path.name}: 不是文本 CSV 文件 (binary data)")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        try:
            codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
            encoding = "utf-8-sig"
        except UnicodeDecodeError:
            encoding = "gb18030"
    return path.open(encoding=encoding, newline="")


def _checked(rows: Iterator[tuple[int, list[str]]], path: Path) -> Iterator[tuple[int, Sequence[Cell]]]:
    """The CSV's records; a quote left open (or text in another encoding) stops the import at that row."""
    n = 0
    try:
        for n, row in rows:
            yield n, row
    except (csv.Error, UnicodeDecodeError) as exc:
        reason = f"第{n + 1}行引号未闭合或格式错误 malformed CSV at row {n + 1}: {exc}"
        raise ImportFailed(
            f"{path.name}: {reason}；之前的行已导入，修正后重新导入即可 (rows before it were imported)"
        ) from exc


def parse_amount(cell: Cell) -> str:
    """Yuan as text: 12000, 12,000.50, ￥12000, 1.2万 (negative ones are refused); ValueError else."""
    if cell is None or cell == "":
        return ""
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        text = str(cell)
    else:
        text = unicodedata.normalize("NFKC", clean_text(cell)).replace(",", "").replace("¥", "").replace("元", "")
    m = _AMOUNT.match(text.strip())
    if not m:
        raise ValueError(text)
    try:
        value = Decimal(m[1])
    except InvalidOperation as exc:
        raise ValueError(text) from exc
    return str(value * 10000 if m[2] else value)


@dataclass
class _Event:
    """The rows of one (order no., status) and the event they make."""

    rows: list[int]
    raw: dict[str, Any]


def _row_event(row: list[Cell], table: Table, tz: Any) -> dict[str, Any]:
    """One row as an event (its product, if any, as its one line); ValueError with the reasons."""

    def cell(key: str) -> Cell:
        return cell_of(row, table, key)

    reasons = []
    try:
        day = parse_date(cell("order_date"))
    except (ValueError, OverflowError):
        reasons.append(f"下单日期无效 bad order date {clean_text(cell('order_date'))!r}")
        day = None
    at = datetime.combine(day, time(0), tzinfo=tz) if day else None
    if clean_text(cell("at")):
        try:
            at = datetime.combine(parse_date(cell("at")), time(0), tzinfo=tz)
        except (ValueError, OverflowError):
            reasons.append(f"状态时间无效 bad time {clean_text(cell('at'))!r}")
    amounts = {}
    for key, label in (("total", "金额"), ("quantity", "数量"), ("line_amount", "行金额")):
        try:
            amounts[key] = parse_amount(cell(key))
        except ValueError:
            reasons.append(f"{label}无效 bad {key} {clean_text(cell(key))!r}")
    if reasons:
        raise ValueError("；".join(reasons))
    product = clean_text(cell("product"))
    line = {
        "product": product,
        "product_line": clean_text(cell("product_line")),
        "quantity": amounts["quantity"] or "1",
        "amount": amounts["line_amount"] or "0",
    }
    return {
        "order_no": clean_id(cell("order_no")),
        "customer": clean_text(cell("name")),
        "status": clean_text(cell("status")) or "placed",
        "at": at.isoformat() if at else None,
        "order_date": day.isoformat() if day else None,
        "total": amounts["total"],
        "lines": [line] if product else None,
        "carrier": clean_text(cell("carrier")),
        "tracking_no": clean_id(cell("tracking_no")),
        "invoice_no": clean_id(cell("invoice_no")),
        "source": clean_text(cell("source")),
    }


def _group(
    rows: list[tuple[int, list[Cell]]], table: Table, tz: Any, seen: set[tuple[str, str]], report: OrderReport
) -> list[_Event]:
    """These rows grouped into events; unusable rows, and an event's rows after an earlier read, into the report."""
    events: dict[tuple[str, str], _Event] = {}
    for n, row in rows:
        try:
            raw = _row_event(row, table, tz)
            parse_event({**raw, "lines": None}, tz)  # each row is a valid event; lines are summed per order below
            key = (raw["order_no"], parse_status(raw["status"]).value)
        except (ValueError, BadEvent) as exc:
            report.rejected.append(f"第 {n} 行 row {n}: {exc}")
            continue
        earlier = events.get(key)
        if earlier is None and key not in seen:
            events[key] = _Event([n], raw)
        elif earlier is not None and raw["lines"] and earlier.raw["lines"]:
            earlier.rows.append(n)
            earlier.raw["lines"] += raw["lines"]
        else:
            report.rejected.append(f"第 {n} 行 row {n}: 订单号 {key[0]} 在文件中重复 duplicate order number")
    seen.update(events)
    return list(events.values())


async def _write(app: web.Application, group: list[_Event], report: OrderReport, customers: set[int]) -> None:
    """One read's events, in one transaction (the windows are left for the end)."""
    settings = app[SETTINGS]
    usable = []
    for item in group:
        try:
            usable.append((item, parse_event(item.raw, settings.tz)))
        except BadEvent as exc:  # the lines of several rows together
            report.rejected.append(f"第 {'、'.join(map(str, item.rows))} 行 rows: {exc}")
    async with in_transaction() as conn:
        known = await customer_ids((e.customer for _, e in usable), conn)
        for item, event in usable:
            if event.customer not in known:
                what = f"客户「{event.customer}」不存在 unknown customer" if event.customer else "缺少客户名称"
                report.rejected.append(f"第 {'、'.join(map(str, item.rows))} 行 row: {what}")
        events = [e for _, e in usable if e.customer in known]
        applied = await apply_events(events, known, settings, app[CLOCK].now(), conn, windows=False)
    report.added += applied.orders
    report.existing += applied.repeats
    customers |= applied.customers


async def import_orders(app: web.Application, path: Path | str, rows_per_read: int = IMPORT_ROWS) -> str:
    """Import the orders in ``path``; returns the report for the admin. Raises ``ImportFailed`` for an unusable file."""
    from tqdm import tqdm  # only here: the other commands start faster without it

    path = Path(path)
    settings = app[SETTINGS]
    report = OrderReport()
    customers: set[int] = set()
    seen: set[tuple[str, str]] = set()  # (order no., status) of the events read so far
    reader = await asyncio.to_thread(OrderRows.open, path)
    interactive = sys.stderr.isatty()
    with reader, tqdm(total=reader.total, unit="行", desc="导入订单", disable=not interactive) as bar:
        held: list[tuple[int, list[Cell]]] = []
        reads = 0
        while rows := await asyncio.to_thread(reader.read, rows_per_read):
            rows = held + rows
            # The last order's rows may go on in the next read: they wait for it (unless the file has ended).
            cut = len(rows)
            last = clean_id(cell_of(rows[-1][1], reader.table, "order_no"))
            while cut > 0 and clean_id(cell_of(rows[cut - 1][1], reader.table, "order_no")) == last:
                cut -= 1
            if cut == 0:  # one order fills the whole read: read on
                held = rows
                continue
            rows, held = rows[:cut], rows[cut:]
            await _write(app, _group(rows, reader.table, settings.tz, seen, report), report, customers)
            bar.update(len(rows))
            reads += 1
            if reads & (reads - 1) == 0:  # after reads 1, 2, 4, 8…: the planner sees the tables as they grow
                await _analyze()
        if held:
            await _write(app, _group(held, reader.table, settings.tz, seen, report), report, customers)
            bar.update(len(held))
    ids = sorted(customers)
    for i in range(0, len(ids), WINDOW_CUSTOMERS):
        async with in_transaction() as conn:
            await refresh_repurchase(ids[i : i + WINDOW_CUSTOMERS], settings, conn)
    report.customers = len(customers)
    report.rejected.sort(key=_row_number)
    after = {"added": report.added, "existing": report.existing, "rejected": len(report.rejected)}
    await audit.record("orders.import", "order", path.name[:64], None, after, actor="import", platform="cli")
    return report.summary()


async def _analyze() -> None:
    """Fresh statistics of the order tables (PostgreSQL): an import into nearly empty tables would otherwise be
    planned as if they stayed empty, and look its orders up by scanning them."""
    conn = sql.default()
    if sql.is_postgres(conn):
        await conn.execute_script("ANALYZE customer_order, order_status_change, order_line")


def _row_number(reason: str) -> int:
    m = re.search(r"\d+", reason)
    return int(m[0]) if m else 0

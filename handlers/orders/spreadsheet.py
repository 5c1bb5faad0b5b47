"""``crmbot import orders FILE``: orders from an ERP export (.csv or .xlsx), with the webhook's fields as columns
(Chinese or English headers), into the one path of order events (``bot.orderflow``).

Columns: 订单号/order_no, 客户名称/customer (name or alias), 下单日期/order_date, and optionally 状态/status
(code or Chinese label, default 下单), 状态时间/at (default the order day), 金额/total (yuan: ``12,000``,
``1.2万``), 产品/product, 产品线/存货分类/product_line, 数量/quantity, 行金额/line_amount, 物流公司/carrier,
物流单号/tracking_no, 发票号/invoice_no, 来源/source. Rows with the same order number and status are one event,
each row with a product one line of it. Unusable rows are reported with their row number and reason; the rest is
imported in one transaction, and re-importing a file adds nothing twice."""

from __future__ import annotations

import asyncio
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from aiohttp import web
from tortoise.transactions import in_transaction

from bot import audit
from bot.keys import CLOCK, SETTINGS
from bot.orderflow import BadEvent, apply_events, customer_ids, parse_event, parse_status
from bot.spreadsheet import Cell, ImportFailed, Table, cell_of, clean_id, clean_text, parse_date, read_table

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
        lines.extend(self.rejected)
        return "\n".join(lines)


def read_orders(path: Path) -> Table:
    table = read_table(path, ORDER_COLUMNS, "客户名称/customer")
    missing = [label for key, label in REQUIRED if key not in table.fields]
    if missing:
        raise ImportFailed(f"{path.name}: 缺少必填列「{'、'.join(missing)}」 missing required column")
    return table


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


def _gather(table: Table, tz: Any, report: OrderReport) -> list[_Event]:
    """The file's rows grouped into events; unusable rows go into the report."""
    events: dict[tuple[str, str], _Event] = {}
    for n, row in table.rows:
        try:
            raw = _row_event(row, table, tz)
            parse_event({**raw, "lines": None}, tz)  # each row is a valid event; lines are summed per order below
            key = (raw["order_no"], parse_status(raw["status"]).value)
        except (ValueError, BadEvent) as exc:
            report.rejected.append(f"第 {n} 行 row {n}: {exc}")
            continue
        earlier = events.get(key)
        if earlier is None:
            events[key] = _Event([n], raw)
        elif raw["lines"] and earlier.raw["lines"]:
            earlier.rows.append(n)
            earlier.raw["lines"] += raw["lines"]
        else:
            report.rejected.append(f"第 {n} 行 row {n}: 订单号 {key[0]} 在文件中重复 duplicate order number")
    return list(events.values())


async def import_orders(app: web.Application, path: Path | str) -> str:
    """Import the orders in ``path``; returns the report for the admin. Raises ``ImportFailed`` for an unusable file."""
    path = Path(path)
    table = await asyncio.to_thread(read_orders, path)
    settings = app[SETTINGS]
    report = OrderReport()
    gathered = _gather(table, settings.tz, report)
    usable = []
    for item in gathered:
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
        applied = await apply_events(events, known, settings, app[CLOCK].now(), conn)
        report.added, report.existing, report.customers = applied.orders, applied.repeats, len(applied.customers)
        report.rejected.sort(key=_row_number)
        after = {"added": report.added, "existing": report.existing, "rejected": len(report.rejected)}
        await audit.record(
            "orders.import", "order", path.name[:64], None, after, actor="import", platform="cli", conn=conn
        )
    return report.summary()


def _row_number(reason: str) -> int:
    m = re.search(r"\d+", reason)
    return int(m[0]) if m else 0

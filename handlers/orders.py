"""Orders: ``crmbot import orders FILE`` from the ERP export (.csv or .xlsx), each customer's reorder rhythm, and the
scheduled rule that tells the owner a few days before the next order is due.

Columns (Chinese or English headers): 客户名称/customer (a customer's name or alias), 下单日期/order_date,
金额/amount (yuan, ``12,000``, ``1.2万``), 订单号/order_no (unique: re-importing a file adds nothing twice).
Rows that cannot be used are reported with their row number and reason; the rest is imported in one transaction.
After the import, every affected customer's ``Repurchase`` row is recomputed: the average interval between
their order days and the local day the next order is due, which the repurchase rule reads.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo

from aiohttp import web
from tortoise.transactions import in_transaction

from bot import audit
from bot.capability import Capability
from bot.context import Firing, RuleContext
from bot.keys import SETTINGS
from bot.rulekit import crossed, follow_up_action, ids, not_fired, select
from bot.spreadsheet import Cell, ImportFailed, Table, cell_of, clean_id, clean_text, parse_date, read_table
from models.customers import Customer
from models.orders import Order, Repurchase

capability = Capability("orders")

ORDER_COLUMNS: dict[str, tuple[str, ...]] = {
    "name": ("客户名称", "客户", "customer", "name", "公司名称", "客户全称"),
    "order_date": ("下单日期", "订单日期", "order_date", "date", "日期", "下单时间"),
    "amount": ("金额", "订单金额", "amount", "含税金额", "总金额"),
    "external_no": ("订单号", "订单编号", "order_no", "external_no", "单号", "erp单号"),
}
CHUNK = 500
_AMOUNT = re.compile(r"^(-?\d+(?:\.\d+)?)(万)?$")


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
    missing = [
        label
        for key, label in (("order_date", "下单日期/order_date"), ("external_no", "订单号/order_no"))
        if key not in table.fields
    ]
    if missing:
        raise ImportFailed(f"{path.name}: 缺少必填列「{'、'.join(missing)}」 missing required column")
    return table


def parse_amount(cell: Cell) -> Decimal:
    """Yuan: 12000, 12,000.50, ￥12000, 1.2万; ValueError else."""
    if cell is None or cell == "":
        return Decimal(0)
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        return Decimal(str(cell))
    text = unicodedata.normalize("NFKC", clean_text(cell)).replace(",", "").replace("¥", "").replace("元", "").strip()
    m = _AMOUNT.match(text)
    if not m:
        raise ValueError(text)
    try:
        value = Decimal(m[1])
    except InvalidOperation as exc:
        raise ValueError(text) from exc
    return value * 10000 if m[2] else value


async def _customer_names() -> dict[str, int]:
    names: dict[str, int] = {}
    for cid, name, aliases in await Customer.all().values_list("id", "name", "aliases"):
        names[str(name)] = int(cid)
        for alias in aliases or []:
            names.setdefault(str(alias), int(cid))
    return names


async def import_orders(app: web.Application, path: Path | str) -> str:
    """Import the orders in ``path``; returns the report for the admin. Raises ``ImportFailed`` for an unusable file."""
    path = Path(path)
    table = await asyncio.to_thread(read_orders, path)
    settings = app[SETTINGS]
    names = await _customer_names()
    report = OrderReport()
    orders: dict[str, Order] = {}

    def cell(row: list[Cell], key: str) -> Cell:
        return cell_of(row, table, key)

    for n, row in table.rows:
        name = clean_text(cell(row, "name"))
        number = clean_id(cell(row, "external_no"))
        reasons = []
        customer_id = names.get(name)
        if not name:
            reasons.append("缺少客户名称 no customer")
        elif customer_id is None:
            reasons.append(f"客户「{name}」不存在 unknown customer")
        if not number:
            reasons.append("缺少订单号 no order number")
        elif len(number) > 64:
            reasons.append("订单号过长 order number too long")
        elif number in orders:
            reasons.append(f"订单号 {number} 在文件中重复 duplicate order number")
        try:
            order_date = parse_date(cell(row, "order_date"))
        except (ValueError, OverflowError):
            reasons.append(f"下单日期无效 bad order date {clean_text(cell(row, 'order_date'))!r}")
        try:
            amount = parse_amount(cell(row, "amount"))
        except ValueError:
            reasons.append(f"金额无效 bad amount {clean_text(cell(row, 'amount'))!r}")
        if reasons:
            report.rejected.append(f"第 {n} 行 row {n}: " + "；".join(reasons))
            continue
        assert customer_id is not None
        orders[number] = Order(customer_id=customer_id, order_date=order_date, amount=amount, external_no=number)

    numbers = list(orders)
    async with in_transaction() as conn:
        existing: set[str] = set()
        for i in range(0, len(numbers), CHUNK):
            found = (
                await Order.filter(external_no__in=numbers[i : i + CHUNK])
                .using_db(conn)
                .values_list("external_no", flat=True)
            )
            existing.update(str(x) for x in found)
        new = [o for number, o in orders.items() if number not in existing]
        await Order.bulk_create(new, batch_size=CHUNK, ignore_conflicts=True, using_db=conn)
        report.added, report.existing = len(new), len(existing)
        affected = sorted({o.customer_id for o in new})
        report.customers = len(affected)
        await refresh_repurchase(affected, settings.tz, settings.rules.repurchase_min_orders)
        after = {"added": report.added, "existing": report.existing, "rejected": len(report.rejected)}
        await audit.record(
            "orders.import", "order", path.name[:64], None, after, actor="import", platform="cli", conn=conn
        )
    return report.summary()


def due_moment(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


async def refresh_repurchase(customer_ids: list[int], tz: ZoneInfo, min_orders: int) -> None:
    """Recompute the reorder rhythm of these customers from their distinct order days."""
    for i in range(0, len(customer_ids), CHUNK):
        chunk = customer_ids[i : i + CHUNK]
        days: dict[int, set[date]] = defaultdict(set)
        for cid, day in await Order.filter(customer_id__in=chunk).values_list("customer_id", "order_date"):
            days[int(cid)].add(day)
        await Repurchase.filter(customer_id__in=chunk).delete()
        rows = []
        for cid in chunk:
            ordered = sorted(days.get(cid, ()))
            if len(ordered) < min_orders:
                continue
            interval = max(1, round((ordered[-1] - ordered[0]).days / (len(ordered) - 1)))
            due = ordered[-1] + timedelta(days=interval)
            rows.append(
                Repurchase(
                    customer_id=cid,
                    order_count=len(ordered),
                    last_order_date=ordered[-1],
                    interval_days=interval,
                    due_at=due_moment(due, tz),
                )
            )
        await Repurchase.bulk_create(rows, batch_size=CHUNK)


@capability.rule(order=60)
async def repurchase_due(ctx: RuleContext) -> list[Firing]:
    """The next order is due (the customer's average reorder interval): tell the owner a few days ahead."""
    lead = ctx.settings.rules.repurchase_lead_days
    reached, params = crossed(ctx, "r.due_at", -timedelta(days=lead))
    rows = await select(
        ctx,
        "SELECT r.id FROM repurchase r JOIN customer c ON c.id = r.customer_id "
        f"WHERE {reached} AND c.owner_id IS NOT NULL AND c.stage <> 'lost' "
        f"AND {not_fired('repurchase_due', 'r.customer_id', 'r.due_at')} ORDER BY r.due_at LIMIT ?",
        params,
    )
    firings = []
    for r in (
        await Repurchase.filter(id__in=ids(rows)).select_related("customer", "customer__owner").order_by("customer_id")
    ):
        c = r.customer
        if c.owner is None:
            continue
        due = r.due_at.astimezone(ctx.settings.tz).date()
        text = (
            f"**复购提醒**\n> 客户：{c.name}\n"
            f"> 平均 {r.interval_days} 天下一次单，上次下单 {r.last_order_date.isoformat()}，"
            f"预计 {due.isoformat()} 该复购了\n请联系客户了解需求，{follow_up_action(c)}"
        )
        firings.append(
            Firing(
                "repurchase_due",
                f"repurchase_due:{c.id}:{r.interval_days}d:{due.isoformat()}",
                c.owner,
                text,
                c,
                period_at=r.due_at,
            )
        )
    return firings

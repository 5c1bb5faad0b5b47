"""``crmbot import opportunities|targets FILE`` (.csv or .xlsx, Chinese or English headers), cleaned and reported
like customers: unusable rows are listed with their row number and reason, the rest is imported in one
transaction and audited as the import.

Opportunities: 客户名称/customer (name or alias), 商机名称/name, 金额/amount (yuan, ``1.2万``), 阶段/stage (Chinese
or code), 预计成交/expected_close, 赢率/probability (``60%`` or 0.6), 负责人/owner (staff name; default the
customer's owner), 来源/source, 丢单原因/lost_reason. A customer's deal of the same name already there is left
alone. Targets: 姓名/staff, 月份/month (``2026-03``), 目标/target (yuan); a target already set is replaced.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

from aiohttp import web
from tortoise.transactions import in_transaction

import handlers.pipeline.deals as deals
from bot import audit
from bot.keys import CLOCK
from bot.nlu.numbers import find_amount
from bot.spreadsheet import Cell, ImportFailed, cell_of, clean_text, parse_date, read_table
from handlers.pipeline.opportunities import STAGE_WORDS
from models.customers import Customer, Stage
from models.opportunities import Opportunity, SalesTarget
from models.staff import Staff

OPPORTUNITY_COLUMNS: dict[str, tuple[str, ...]] = {
    "customer": ("客户名称", "客户", "customer", "公司名称"),
    "name": ("商机名称", "商机", "项目名称", "opportunity", "name"),
    "amount": ("金额", "商机金额", "预计金额", "amount"),
    "stage": ("阶段", "销售阶段", "stage"),
    "expected_close": ("预计成交", "预计成交日期", "预计签约", "expected_close", "close_date"),
    "probability": ("赢率", "概率", "probability"),
    "owner": ("负责人", "销售", "owner"),
    "source": ("来源", "商机来源", "source"),
    "lost_reason": ("丢单原因", "lost_reason"),
}
TARGET_COLUMNS: dict[str, tuple[str, ...]] = {
    "name": ("姓名", "销售", "staff", "name"),
    "month": ("月份", "月", "month"),
    "amount": ("目标", "目标金额", "业绩目标", "target", "amount"),
}
_MONTH = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*月?$")
_PERCENT = re.compile(r"^(\d{1,3}(?:\.\d+)?)\s*%$")


@dataclass
class ImportReport:
    what: str
    added: int = 0
    existing: int = 0
    rejected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"{self.what}导入完成 imported: 新增 added {self.added}，已存在 already there {self.existing}，"
            f"拒绝 rejected {len(self.rejected)}"
        ]
        return "\n".join([*lines, *self.rejected])

    def reject(self, n: int, reasons: list[str]) -> None:
        self.rejected.append(f"第 {n} 行 row {n}: " + "；".join(reasons))


def parse_amount(cell: Cell) -> Decimal:
    """Yuan from a cell: a number, ``1,000,000``, ``￥12000元``, ``300万``, ``1.2亿``; 0 when empty, ValueError else."""
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        return Decimal(str(cell))
    text = unicodedata.normalize("NFKC", clean_text(cell)).replace(",", "").replace("¥", "").strip()
    if not text:
        return Decimal(0)
    if re.fullmatch(r"\d+(?:\.\d+)?元?", text):
        return Decimal(text.rstrip("元"))
    found = find_amount(text)
    if found is None or (found.start, found.end) != (0, len(text)):
        raise ValueError(text)
    return Decimal(str(found.value))


async def customer_names() -> dict[str, int]:
    """Every customer's id by stored name and by alias (a name wins over another customer's alias)."""
    names: dict[str, int] = {}
    rows = await Customer.all().values_list("id", "name", "aliases")
    for cid, name, _ in rows:
        names[str(name)] = int(cid)
    for cid, _, aliases in rows:
        for alias in aliases or []:
            names.setdefault(str(alias), int(cid))
    return names


def _stage(cell: Cell) -> Stage | None:
    text = clean_text(cell)
    if not text:
        return Stage.LEAD
    if text.lower() in Stage.__members__.values():
        return Stage(text.lower())
    return STAGE_WORDS.get(text)


def _probability(cell: Cell) -> float | None:
    """60%, 0.6 or 60; None when empty; ValueError when it is no probability."""
    text = clean_text(cell)
    if not text:
        return None
    m = _PERCENT.match(text)
    value = float(m[1]) / 100 if m else float(text)
    value = value / 100 if value > 1 else value
    if not 0 <= value <= 1:
        raise ValueError(text)
    return value


async def _staff_names() -> dict[str, Staff]:
    return {s.name: s for s in await Staff.all()}


async def import_opportunities(app: web.Application, path: Path | str) -> str:
    """Import the deals in ``path``; the report for the admin. Raises ``ImportFailed`` for an unusable file."""
    path = Path(path)
    table = await asyncio.to_thread(read_table, path, OPPORTUNITY_COLUMNS, "商机名称/name")
    if "customer" not in table.fields:
        raise ImportFailed(f"{path.name}: 缺少必填列「客户名称/customer」 missing required column")
    names, staff = await customer_names(), await _staff_names()
    now = app[CLOCK].now()
    report = ImportReport("商机 opportunities ")
    actor = deals.Actor("import", "cli")
    async with in_transaction() as conn:
        for n, row in table.rows:
            reasons: list[str] = []
            customer_name, deal = clean_text(cell_of(row, table, "customer")), clean_text(cell_of(row, table, "name"))
            customer_id = names.get(customer_name)
            if customer_id is None:
                reasons.append(
                    f"客户「{customer_name}」不存在 unknown customer" if customer_name else "缺少客户 no customer"
                )
            if not deal or len(deal) > 128:
                reasons.append("商机名称为空或过长 missing or too long name")
            stage = _stage(cell_of(row, table, "stage"))
            if stage is None:
                reasons.append(f"阶段无效 bad stage {clean_text(cell_of(row, table, 'stage'))!r}")
            amount, close, probability = Decimal(0), None, None
            try:
                amount = parse_amount(cell_of(row, table, "amount"))
            except ValueError:
                reasons.append(f"金额无效 bad amount {clean_text(cell_of(row, table, 'amount'))!r}")
            try:
                close = _optional_date(cell_of(row, table, "expected_close"))
            except (ValueError, OverflowError):
                reasons.append("预计成交日期无效 bad expected close date")
            try:
                probability = _probability(cell_of(row, table, "probability"))
            except ValueError:
                reasons.append(f"赢率无效 bad probability {clean_text(cell_of(row, table, 'probability'))!r}")
            owner_name = clean_text(cell_of(row, table, "owner"))
            if owner_name and owner_name not in staff:
                reasons.append(f"负责人「{owner_name}」不存在 unknown owner")
            if reasons:
                report.reject(n, reasons)
                continue
            assert customer_id is not None and stage is not None
            if await Opportunity.filter(customer_id=customer_id, name=deal).using_db(conn).exists():
                report.existing += 1
                continue
            customer = await Customer.get(id=customer_id, using_db=conn)
            opp = await deals.start(
                customer, name=deal, amount=float(amount), stage=stage,
                owner_id=staff[owner_name].id if owner_name else customer.owner_id, now=now, actor=actor,
                conn=conn, expected_close=close, probability_override=probability,
                source=clean_text(cell_of(row, table, "source"))[:32],
            )  # fmt: skip
            if lost_reason := clean_text(cell_of(row, table, "lost_reason")):
                await Opportunity.filter(id=opp.id).using_db(conn).update(lost_reason=lost_reason[:200])
            report.added += 1
    return report.summary()


def _optional_date(cell: Cell) -> date | None:
    return parse_date(cell) if clean_text(cell) else None


def _month(cell: Cell) -> str:
    """``2026-03`` from 2026-03, 2026年3月, or any date in the month; ValueError else."""
    text = clean_text(cell)
    if m := _MONTH.match(text):
        month = int(m[2])
        if 1 <= month <= 12:
            return f"{m[1]}-{month:02d}"
        raise ValueError(text)
    day = parse_date(cell)
    return f"{day.year}-{day.month:02d}"


async def import_targets(app: web.Application, path: Path | str) -> str:
    """Import monthly targets per rep from ``path``; the report for the admin."""
    path = Path(path)
    table = await asyncio.to_thread(read_table, path, TARGET_COLUMNS, "姓名/staff")
    missing = [label for key, label in (("month", "月份/month"), ("amount", "目标/target")) if key not in table.fields]
    if missing:
        raise ImportFailed(f"{path.name}: 缺少必填列「{'、'.join(missing)}」 missing required column")
    staff = await _staff_names()
    report = ImportReport("目标 targets ")
    async with in_transaction() as conn:
        for n, row in table.rows:
            reasons: list[str] = []
            name = clean_text(cell_of(row, table, "name"))
            if name not in staff:
                reasons.append(f"同事「{name}」不存在 unknown staff" if name else "缺少姓名 no staff")
            month, amount = "", Decimal(0)
            try:
                month = _month(cell_of(row, table, "month"))
            except (ValueError, OverflowError):
                reasons.append(f"月份无效 bad month {clean_text(cell_of(row, table, 'month'))!r}")
            try:
                amount = parse_amount(cell_of(row, table, "amount"))
            except ValueError:
                reasons.append(f"目标无效 bad target {clean_text(cell_of(row, table, 'amount'))!r}")
            if reasons:
                report.reject(n, reasons)
                continue
            rep = staff[name]
            row_before = await SalesTarget.get_or_none(staff_id=rep.id, month=month, using_db=conn)
            before = {"month": month, "amount": str(row_before.amount)} if row_before else None
            if row_before is None:
                target = await SalesTarget.create(staff_id=rep.id, month=month, amount=amount, using_db=conn)
                report.added += 1
            else:
                target = row_before
                await SalesTarget.filter(id=target.id).using_db(conn).update(amount=amount)
                report.existing += 1
            after = {"staff_id": rep.id, "month": month, "amount": str(amount)}
            await audit.record("set_target", "sales_target", target.id, before, after, actor="import", platform="cli",
                               conn=conn)  # fmt: skip
    return report.summary()

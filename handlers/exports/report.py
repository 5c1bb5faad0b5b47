"""``crmbot export report``: a summary workbook, one sheet per ``ReportSheet`` in ``REPORT_SHEETS``.

Each sheet is computed with a few grouped queries over the export's scope and period and is small (a row per
stage, a row per person), so it is built whole. A new sheet is one more ``ReportSheet`` appended to the list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tortoise.functions import Count, Sum

from handlers.exports.sheets import Filters, Rows
from handlers.exports.workbook import Column
from models.customers import STAGE_LABELS, Customer, Stage
from models.followups import FollowUp
from models.opportunities import FUNNEL, OPEN_STAGES, Opportunity
from models.orders import Order, OrderStatus
from models.staff import Role, Staff
from models.tickets import Ticket, TicketStatus

ROLE_LABELS = {Role.REP: "销售", Role.MANAGER: "主管", Role.DIRECTOR: "总监", Role.ADMIN: "管理员"}


@dataclass(frozen=True, slots=True)
class ReportSheet:
    title: str
    columns: tuple[Column, ...]
    rows: Callable[[Filters], Awaitable[Rows]]


def _owned(filters: Filters, field: str) -> dict[str, Any]:
    """The filter keeping ``field`` (an owner id) within the scope."""
    return {} if filters.owner_ids is None else {f"{field}__in": filters.owner_ids}


def _since(filters: Filters, field: str) -> dict[str, Any]:
    return {} if filters.since is None else {f"{field}__gte": filters.since}


def _number(value: Any) -> float:
    return float(value or Decimal(0))


async def funnel_rows(filters: Filters) -> Rows:
    """Deals by stage, in funnel order then won and lost: how many and their amount."""
    grouped = (
        await Opportunity.filter(**_owned(filters, "owner_id"), **_since(filters, "created_at"))
        .annotate(n=Count("id"), amount=Sum("amount"))
        .group_by("stage")
        .values("stage", "n", "amount")
    )
    by_stage = {Stage(r["stage"]): (int(r["n"]), _number(r["amount"])) for r in grouped}
    return [[STAGE_LABELS[s], *by_stage.get(s, (0, 0.0))] for s in (*FUNNEL, Stage.LOST)]


FUNNEL_COLUMNS = (Column("阶段", 10), Column("商机数", 10, "number"), Column("金额", 16, "number"))


async def _counts(query: Any, field: str, *, amount: bool = False) -> dict[int, tuple[int, float]]:
    """``field`` (a staff id) → (rows, and their summed ``amount`` when the query annotates one)."""
    out: dict[int, tuple[int, float]] = {}
    for row in await query.group_by(field).values(field, "n", *(["amount"] if amount else [])):
        if row[field] is not None:
            out[int(row[field])] = (int(row["n"]), _number(row.get("amount")))
    return out


async def people_rows(filters: Filters) -> Rows:
    """Per person in the scope: customers owned, follow-ups written in the period, tickets open on their customers,
    open deals and their amount, orders of their customers in the period and their total."""
    staff = Staff.filter(active=True)
    if filters.owner_ids is not None:
        staff = staff.filter(id__in=filters.owner_ids)
    people = await staff.order_by("id").values("id", "name", "role")
    owned, since = _owned(filters, "owner_id"), _since(filters, "created_at")
    customers = await _counts(Customer.filter(**owned).annotate(n=Count("id")), "owner_id")
    followups = await _counts(
        FollowUp.filter(**_owned(filters, "staff_id"), **since).annotate(n=Count("id")), "staff_id"
    )
    open_tickets = await _counts(
        Ticket.filter(
            **_owned(filters, "customer__owner_id"), status__in=[TicketStatus.OPEN, TicketStatus.IN_PROGRESS]
        ).annotate(n=Count("id")),
        "customer__owner_id",
    )
    open_deals = await _counts(
        Opportunity.filter(**owned, stage__in=list(OPEN_STAGES)).annotate(n=Count("id"), amount=Sum("amount")),
        "owner_id",
        amount=True,
    )
    orders = await _counts(
        Order.filter(
            **_owned(filters, "customer__owner_id"),
            **({} if filters.since is None else {"order_date__gte": filters.since.date()}),
        )
        .exclude(status=OrderStatus.CANCELLED)
        .annotate(n=Count("id"), amount=Sum("total")),
        "customer__owner_id",
        amount=True,
    )
    rows: Rows = []
    for p in people:
        sid = int(p["id"])
        role = ROLE_LABELS.get(Role(p["role"]), str(p["role"]))
        rows.append([
            p["name"], role, customers.get(sid, (0, 0.0))[0], followups.get(sid, (0, 0.0))[0],
            open_tickets.get(sid, (0, 0.0))[0], *open_deals.get(sid, (0, 0.0)), *orders.get(sid, (0, 0.0)),
        ])  # fmt: skip
    return rows


PEOPLE_COLUMNS = (
    Column("姓名", 10),
    Column("角色", 8),
    Column("客户数", 10, "number"),
    Column("跟进次数", 10, "number"),
    Column("未结工单", 10, "number"),
    Column("进行中商机", 12, "number"),
    Column("商机金额", 16, "number"),
    Column("订单数", 10, "number"),
    Column("订单金额", 16, "number"),
)

REPORT_SHEETS: list[ReportSheet] = [
    ReportSheet("商机漏斗", FUNNEL_COLUMNS, funnel_rows),
    ReportSheet("按人员", PEOPLE_COLUMNS, people_rows),
]

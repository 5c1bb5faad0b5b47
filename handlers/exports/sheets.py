"""The data sheets of ``crmbot export`` (customers, follow-ups, tickets, opportunities, orders, audit) and who they
cover.

Customers' custom fields (the columns an import kept, such as 地区) become one column each after the fixed ones,
found by a first pass over the same rows; fields holding structures (a buying signal's details) are left out.

Each sheet reads its rows in chunks of ``CHUNK`` by keyset pagination (``id > last ORDER BY id LIMIT n``, on the
primary key), so an export never holds more than one chunk; related rows (a chunk's contacts, its orders' lines)
come with one query per chunk, and staff names from one small dictionary. The headers of customers, opportunities
and orders are the first header each ``crmbot import`` reads for that column, and the values are written the way
the import reads them (stage and status labels, lists joined with 、, dates as dates), so an export imports back
unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.queryset import QuerySet

from bot.importer import CUSTOMER_COLUMNS
from bot.jsontext import compact_json
from bot.spreadsheet import column_index, header_key
from handlers.exports.workbook import Column
from handlers.orders.spreadsheet import ORDER_COLUMNS
from handlers.pipeline.imports import OPPORTUNITY_COLUMNS
from models.audit import AuditLog
from models.customers import STAGE_LABELS, Contact, Customer, Stage
from models.followups import FollowUp
from models.opportunities import Opportunity
from models.orders import ORDER_STATUS_LABELS, Order, OrderLine, OrderStatus
from models.staff import Staff
from models.tickets import TICKET_STATUS_LABELS, Ticket, TicketPriority, TicketStatus

CHUNK = 2000
LIST_JOIN = "、"  # one of the separators the import splits aliases and tags at
PRIORITY_LABELS = {TicketPriority.NORMAL: "普通", TicketPriority.URGENT: "紧急"}
Rows = list[list[Any]]


@dataclass(frozen=True, slots=True)
class Filters:
    """What an export covers: the owners whose data it is (None: everyone's) and the moment it starts from."""

    owner_ids: list[int] | None = None
    since: datetime | None = None


async def no_extra(filters: Filters) -> list[str]:
    return []


@dataclass(frozen=True, slots=True)
class DataSheet:
    """A sheet's title, its fixed columns, the names of the columns it adds for these filters (custom fields), and
    its rows (the fixed columns' values, then one per added column)."""

    title: str
    columns: tuple[Column, ...]
    rows: Callable[[Filters, list[str]], AsyncIterator[Rows]]
    extra: Callable[[Filters], Awaitable[list[str]]] = no_extra


async def staff_names() -> dict[int, str]:
    return {int(i): str(n) for i, n in await Staff.all().values_list("id", "name")}


async def _keyset(query: Callable[[int], QuerySet[Any]], fields: Sequence[str]) -> AsyncIterator[list[dict[str, Any]]]:
    """The rows of ``query(last_id)`` in chunks, by ascending id."""
    last = 0
    while True:
        page = await query(last).order_by("id").limit(CHUNK).values("id", *fields)
        if not page:
            return
        yield page
        if len(page) < CHUNK:
            return
        last = int(page[-1]["id"])


def _label(labels: dict[Any, str], enum: type[Any], value: Any) -> str:
    return labels.get(enum(value), str(value)) if value is not None else ""


def _listed(values: Any) -> str:
    return LIST_JOIN.join(str(v) for v in values or [])


def _name(names: dict[int, str], staff_id: Any) -> str:
    return names.get(int(staff_id), "") if staff_id is not None else ""


# -- customers ---------------------------------------------------------------------------------------------------

_C = {key: labels[0] for key, labels in CUSTOMER_COLUMNS.items()}
CUSTOMER_SHEET_COLUMNS = (
    Column(_C["name"], 28),
    Column(_C["aliases"], 16),
    Column(_C["industry"], 12),
    Column(_C["grade"], 6),
    Column(_C["stage"], 8),
    Column(_C["owner"], 10),
    Column(_C["tags"], 18),
    Column(_C["contact"], 10),
    Column(_C["contact_role"], 10),
    Column(_C["phone"], 16),
    Column(_C["external_userid"], 22),
    Column(_C["contract_end"], 12, "date"),
    Column(_C["last_followup_at"], 17, "datetime"),
    Column(_C["next_followup_at"], 17, "datetime"),
    Column(_C["won_at"], 17, "datetime"),
)
CUSTOMER_FIELDS = (
    "name", "aliases", "industry", "grade", "stage", "owner_id", "tags", "contract_end", "last_followup_at",
    "next_followup_at", "won_at",
)  # fmt: skip


def customers_query(filters: Filters) -> Callable[[int], QuerySet[Customer]]:
    def query(last: int) -> QuerySet[Customer]:
        q = Customer.filter(id__gt=last)
        if filters.owner_ids is not None:
            q = q.filter(owner_id__in=filters.owner_ids)
        return q.filter(created_at__gte=filters.since) if filters.since else q

    return query


CONTACT_FIELDS = ("customer_id", "name", "role", "phone", "external_userid")
KNOWN_HEADERS = column_index(CUSTOMER_COLUMNS)


def _plain(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and value != ""


async def custom_field_names(filters: Filters) -> list[str]:
    """The custom fields with a plain value on any customer covered, in name order (one pass, one column read)."""
    found: set[str] = set()
    async for page in _keyset(customers_query(filters), ("custom_fields",)):
        for c in page:
            found.update(k for k, v in (c["custom_fields"] or {}).items() if _plain(v))
    return sorted(k for k in found if header_key(k) not in KNOWN_HEADERS)


async def customer_rows(filters: Filters, custom: list[str]) -> AsyncIterator[Rows]:
    """One row per contact (a customer without contacts: one row), as ``crmbot import customers`` merges them."""
    names = await staff_names()
    fields = (*CUSTOMER_FIELDS, "custom_fields") if custom else CUSTOMER_FIELDS
    async for page in _keyset(customers_query(filters), fields):
        contacts: dict[int, list[dict[str, Any]]] = {}
        ids = [int(c["id"]) for c in page]
        for contact in await Contact.filter(customer_id__in=ids).order_by("id").values(*CONTACT_FIELDS):
            contacts.setdefault(int(contact["customer_id"]), []).append(contact)
        rows: Rows = []
        for c in page:
            base = [
                c["name"], _listed(c["aliases"]), c["industry"], c["grade"], _label(STAGE_LABELS, Stage, c["stage"]),
                _name(names, c["owner_id"]), _listed(c["tags"]),
            ]  # fmt: skip
            dates = [c["contract_end"], c["last_followup_at"], c["next_followup_at"], c["won_at"]]
            values = c.get("custom_fields") or {}
            extra = [v if _plain(v := values.get(k)) else "" for k in custom]
            for p in contacts.get(int(c["id"])) or [{}]:
                person = [p.get("name", ""), p.get("role", ""), p.get("phone", ""), p.get("external_userid") or ""]
                rows.append([*base, *person, *dates, *extra])
        yield rows


# -- follow-ups --------------------------------------------------------------------------------------------------

FOLLOWUP_COLUMNS = (
    Column("客户名称", 28),
    Column("跟进人", 10),
    Column("方式", 8),
    Column("内容", 60),
    Column("下次跟进", 17, "datetime"),
    Column("来源", 8),
    Column("跟进时间", 17, "datetime"),
)


async def followup_rows(filters: Filters, _: list[str]) -> AsyncIterator[Rows]:
    names = await staff_names()

    def query(last: int) -> QuerySet[FollowUp]:
        q = FollowUp.filter(id__gt=last)
        if filters.owner_ids is not None:
            q = q.filter(customer__owner_id__in=filters.owner_ids)
        return q.filter(created_at__gte=filters.since) if filters.since else q

    fields = ("customer__name", "staff_id", "channel", "content", "next_at", "source", "created_at")
    async for page in _keyset(query, fields):
        yield [
            [f["customer__name"], _name(names, f["staff_id"]), f["channel"], f["content"], f["next_at"], f["source"],
             f["created_at"]]
            for f in page
        ]  # fmt: skip


# -- tickets -----------------------------------------------------------------------------------------------------

TICKET_COLUMNS = (
    Column("工单号", 8),
    Column("客户名称", 28),
    Column("标题", 30),
    Column("描述", 50),
    Column("优先级", 8),
    Column("状态", 8),
    Column("报告人", 10),
    Column("处理人", 10),
    Column("来源", 8),
    Column("首次响应期限", 17, "datetime"),
    Column("首次响应", 17, "datetime"),
    Column("处理结果", 40),
    Column("解决时间", 17, "datetime"),
    Column("回访时间", 17, "datetime"),
    Column("关闭时间", 17, "datetime"),
    Column("创建时间", 17, "datetime"),
)


async def ticket_rows(filters: Filters, _: list[str]) -> AsyncIterator[Rows]:
    names = await staff_names()

    def query(last: int) -> QuerySet[Ticket]:
        q = Ticket.filter(id__gt=last)
        if filters.owner_ids is not None:
            q = q.filter(customer__owner_id__in=filters.owner_ids)
        return q.filter(created_at__gte=filters.since) if filters.since else q

    fields = (
        "customer__name", "title", "description", "priority", "status", "reporter_id", "assignee_id", "source",
        "first_response_due", "first_responded_at", "resolution", "resolved_at", "revisited_at", "closed_at",
        "created_at",
    )  # fmt: skip
    async for page in _keyset(query, fields):
        yield [
            [
                f"#{t['id']}", t["customer__name"], t["title"], t["description"],
                _label(PRIORITY_LABELS, TicketPriority, t["priority"]),
                _label(TICKET_STATUS_LABELS, TicketStatus, t["status"]), _name(names, t["reporter_id"]),
                _name(names, t["assignee_id"]), t["source"], t["first_response_due"], t["first_responded_at"],
                t["resolution"], t["resolved_at"], t["revisited_at"], t["closed_at"], t["created_at"],
            ]
            for t in page
        ]  # fmt: skip


# -- opportunities -----------------------------------------------------------------------------------------------

_O = {key: labels[0] for key, labels in OPPORTUNITY_COLUMNS.items()}
OPPORTUNITY_SHEET_COLUMNS = (
    Column(_O["customer"], 28),
    Column(_O["name"], 24),
    Column(_O["amount"], 14, "number"),
    Column(_O["stage"], 8),
    Column(_O["expected_close"], 12, "date"),
    Column(_O["probability"], 8, "number"),
    Column(_O["owner"], 10),
    Column(_O["source"], 10),
    Column(_O["lost_reason"], 24),
)


async def opportunity_rows(filters: Filters, _: list[str]) -> AsyncIterator[Rows]:
    names = await staff_names()

    def query(last: int) -> QuerySet[Opportunity]:
        q = Opportunity.filter(id__gt=last)
        if filters.owner_ids is not None:
            q = q.filter(owner_id__in=filters.owner_ids)
        return q.filter(created_at__gte=filters.since) if filters.since else q

    fields = ("customer__name", "name", "amount", "stage", "expected_close", "probability", "owner_id", "source",
              "lost_reason")  # fmt: skip
    async for page in _keyset(query, fields):
        yield [
            [o["customer__name"], o["name"], o["amount"], _label(STAGE_LABELS, Stage, o["stage"]), o["expected_close"],
             o["probability"], _name(names, o["owner_id"]), o["source"], o["lost_reason"]]
            for o in page
        ]  # fmt: skip


# -- orders ------------------------------------------------------------------------------------------------------

_R = {key: labels[0] for key, labels in ORDER_COLUMNS.items()}
ORDER_SHEET_COLUMNS = (
    Column(_R["name"], 28),
    Column(_R["order_date"], 12, "date"),
    Column(_R["total"], 14, "number"),
    Column(_R["order_no"], 18),
    Column(_R["status"], 10),
    Column(_R["at"], 12, "date"),
    Column(_R["product"], 24),
    Column(_R["quantity"], 8, "number"),
    Column(_R["line_amount"], 14, "number"),
    Column(_R["carrier"], 12),
    Column(_R["tracking_no"], 18),
    Column(_R["invoice_no"], 16),
    Column(_R["source"], 10),
)


async def order_rows(filters: Filters, _: list[str]) -> AsyncIterator[Rows]:
    """One row per order line (an order without lines: one row), as ``crmbot import orders`` gathers them."""

    def query(last: int) -> QuerySet[Order]:
        q = Order.filter(id__gt=last)
        if filters.owner_ids is not None:
            q = q.filter(customer__owner_id__in=filters.owner_ids)
        return q.filter(order_date__gte=filters.since.date()) if filters.since else q

    fields = ("customer__name", "order_date", "total", "order_no", "status", "status_at", "carrier", "tracking_no",
              "invoice_no", "source")  # fmt: skip
    async for page in _keyset(query, fields):
        lines: dict[int, list[dict[str, Any]]] = {}
        ids = [int(o["id"]) for o in page]
        for line in await OrderLine.filter(order_id__in=ids).order_by("id").values("order_id", "product", "quantity",
                                                                                    "amount"):  # fmt: skip
            lines.setdefault(int(line["order_id"]), []).append(line)
        rows: Rows = []
        for o in page:
            status = _label(ORDER_STATUS_LABELS, OrderStatus, o["status"])
            for line in lines.get(int(o["id"])) or [{}]:
                rows.append([
                    o["customer__name"], o["order_date"], o["total"], o["order_no"], status, o["status_at"],
                    line.get("product", ""), line.get("quantity"), line.get("amount"), o["carrier"], o["tracking_no"],
                    o["invoice_no"], o["source"],
                ])  # fmt: skip
        yield rows


# -- audit -------------------------------------------------------------------------------------------------------

AUDIT_COLUMNS = (
    Column("时间", 17, "datetime"),
    Column("操作人", 10),
    Column("平台", 10),
    Column("动作", 16),
    Column("对象", 12),
    Column("对象ID", 10),
    Column("客户名称", 28),
    Column("修改前", 40),
    Column("修改后", 40),
)


async def audit_rows(filters: Filters, _: list[str]) -> AsyncIterator[Rows]:
    """The audit log, oldest first; a scope limits it to what its people did."""

    def query(last: int) -> QuerySet[AuditLog]:
        q = AuditLog.filter(id__gt=last)
        if filters.owner_ids is not None:
            q = q.filter(actor_id__in=filters.owner_ids)
        return q.filter(created_at__gte=filters.since) if filters.since else q

    fields = ("created_at", "actor_name", "platform", "action", "entity", "entity_id", "customer_id", "before",
              "after")  # fmt: skip
    async for page in _keyset(query, fields):
        ids = {int(a["customer_id"]) for a in page if a["customer_id"] is not None}
        customers = {int(i): str(n) for i, n in await Customer.filter(id__in=ids).values_list("id", "name")}
        yield [
            [a["created_at"], a["actor_name"], a["platform"], a["action"], a["entity"], a["entity_id"],
             customers.get(int(a["customer_id"]), "") if a["customer_id"] is not None else "",
             compact_json(a["before"]) if a["before"] is not None else "",
             compact_json(a["after"]) if a["after"] is not None else ""]
            for a in page
        ]  # fmt: skip


DATA_SHEETS: dict[str, DataSheet] = {
    "customers": DataSheet("客户", CUSTOMER_SHEET_COLUMNS, customer_rows, custom_field_names),
    "followups": DataSheet("跟进记录", FOLLOWUP_COLUMNS, followup_rows),
    "tickets": DataSheet("工单", TICKET_COLUMNS, ticket_rows),
    "opportunities": DataSheet("商机", OPPORTUNITY_SHEET_COLUMNS, opportunity_rows),
    "orders": DataSheet("订单", ORDER_SHEET_COLUMNS, order_rows),
    "audit": DataSheet("审计日志", AUDIT_COLUMNS, audit_rows),
}

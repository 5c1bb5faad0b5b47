"""The ticket timers: a first response overdue escalates to the handler's manager and chases the handler (urgent
tickets even during quiet hours); a resolved ticket not revisited in time reminds whoever handled it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot import audit
from bot.context import Firing, RuleContext
from bot.rulekit import crossed, ids, iso, local_time, not_fired, select, staff_by_id
from handlers.tickets.capability import capability
from models.staff import Staff
from models.tickets import TICKET_STATUS_LABELS, Ticket, TicketPriority, TicketStatus

AUDIT_PLATFORM = "scheduler"


async def _tickets(ticket_ids: list[int]) -> list[Ticket]:
    if not ticket_ids:
        return []
    return list(
        await Ticket.filter(id__in=ticket_ids).select_related("customer", "customer__owner", "assignee").order_by("id")
    )


@capability.rule(order=70)
async def ticket_sla(ctx: RuleContext) -> list[Firing]:
    """First response overdue: escalate to the assignee's manager (or the owner's), and chase the assignee."""
    due, params = crossed(ctx, "t.first_response_due")
    rows = await select(
        ctx,
        f"SELECT t.id FROM ticket t WHERE t.status IN ('open', 'in_progress') AND {due} "
        "AND t.first_responded_at IS NULL "
        f"AND {not_fired('ticket_sla', 't.id', 't.first_response_due')} ORDER BY t.first_response_due LIMIT ?",
        params,
    )
    tickets = await _tickets(ids(rows))
    handlers = [t.assignee or t.customer.owner for t in tickets]
    managers = await staff_by_id(h.manager_id for h in handlers if h is not None)
    firings: list[Firing] = []
    for t, handler in zip(tickets, handlers, strict=True):
        manager = managers.get(handler.manager_id) if handler and handler.manager_id else None
        urgent = t.priority == TicketPriority.URGENT
        minutes = int((ctx.now - t.created_at).total_seconds() // 60)
        label = "紧急" if urgent else "普通"
        who = handler.name if handler else "未分配"
        period = iso(t.first_response_due)
        if manager is not None:
            text = (
                f"**工单超时上报**\n> 工单 #{t.id}（{label}）{t.title or t.description[:30]}\n"
                f"> 客户：{t.customer.name}　处理人：{who}\n> 已 {minutes} 分钟无人响应"
                f"（应于 {local_time(t.first_response_due, ctx)} 前响应）\n"
                f"请督促 {who} 立即处理（处理人回复：`工单 #{t.id} 处理中`）"
            )
            firings.append(
                Firing(
                    "ticket_sla",
                    f"ticket_sla:{t.id}:first_response:{period}",
                    manager,
                    text,
                    customer=t.customer,
                    urgent=urgent,
                    apply=_escalated(t, manager),
                    period_at=t.first_response_due,
                )
            )
        if handler is not None:
            escalated = f"，已上报 {manager.name}" if manager else ""
            text = (
                f"**工单响应超时**\n> 工单 #{t.id}（{label}）{t.title or t.description[:30]}\n"
                f"> 客户：{t.customer.name}，已 {minutes} 分钟未响应{escalated}\n"
                f"请立即处理，回复：`工单 #{t.id} 处理中`"
            )
            firings.append(
                Firing(
                    "ticket_sla_assignee",
                    f"ticket_sla_assignee:{t.id}:first_response:{period}",
                    handler,
                    text,
                    customer=t.customer,
                    urgent=urgent,
                    period_at=t.first_response_due,
                )
            )
    return firings


def _escalated(t: Ticket, manager: Staff) -> Callable[[], Awaitable[None]]:
    async def apply() -> None:
        before, after = {"assignee_id": t.assignee_id}, {"escalated_to": manager.name}
        await audit.record(
            "ticket.escalate", "ticket", t.id, before, after, platform=AUDIT_PLATFORM, customer_id=t.customer_id
        )

    return apply


@capability.rule(order=80)
async def ticket_revisit(ctx: RuleContext) -> list[Firing]:
    """A resolved ticket was not revisited in time: remind whoever handled it (else the customer's owner)."""
    due, params = crossed(ctx, "t.revisit_due")
    rows = await select(
        ctx,
        f"SELECT t.id FROM ticket t WHERE t.status = 'resolved' AND {due} AND t.revisited_at IS NULL "
        f"AND {not_fired('ticket_revisit', 't.id', 't.revisit_due')} ORDER BY t.revisit_due LIMIT ?",
        params,
    )
    firings = []
    for t in await _tickets(ids(rows)):
        to = t.assignee or t.customer.owner
        if to is None or t.revisit_due is None:
            continue
        resolved = local_time(t.resolved_at, ctx) if t.resolved_at else "—"
        text = (
            f"**工单回访提醒**\n> 工单 #{t.id} {t.title or t.description[:30]}\n> 客户：{t.customer.name}，"
            f"{resolved} {TICKET_STATUS_LABELS[TicketStatus.RESOLVED]}，还没有回访\n"
            f"请回访客户确认问题已解决，回访后关闭工单：`工单 #{t.id} 关闭 已回访，客户确认解决`"
        )
        firings.append(
            Firing(
                "ticket_revisit",
                f"ticket_revisit:{t.id}:revisit:{iso(t.revisit_due)}",
                to,
                text,
                customer=t.customer,
                period_at=t.revisit_due,
            )
        )
    return firings

"""Tickets (工单): opening one with its SLA and assignee, and moving it through 处理中 → 已解决 → 关闭.

The first-response due time comes from ``[rules] sla_first_response_minutes_*``; the assignee is the configured
service engineer with the fewest open tickets (``[tickets] service_engineers``), else the customer's owner, else
the reporter. Resolving sets ``revisit_due`` = resolved_at + ``ticket_revisit_hours``; the SLA and revisit timers
themselves are scheduled rules reading those columns.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.functions import Count

from bot.config import Settings
from bot.intents import Context, IntentRouter, Slots
from bot.types import IncomingMessage, Reply
from handlers.customers import find_staff_named, local, resolve, visible_to
from models.customers import Customer
from models.staff import Role, Staff
from models.tickets import TICKET_STATUS_LABELS, Ticket, TicketPriority, TicketStatus

router = IntentRouter()

OPEN_STATES = (TicketStatus.OPEN, TicketStatus.IN_PROGRESS)
# Allowed moves. A resolved ticket may be reopened (back to in progress); closed is final.
TRANSITIONS: dict[TicketStatus, set[TicketStatus]] = {
    TicketStatus.OPEN: {TicketStatus.IN_PROGRESS, TicketStatus.RESOLVED},
    TicketStatus.IN_PROGRESS: {TicketStatus.RESOLVED},
    TicketStatus.RESOLVED: {TicketStatus.CLOSED, TicketStatus.IN_PROGRESS},
    TicketStatus.CLOSED: set(),
}
PRIORITY_LABELS = {TicketPriority.NORMAL: "普通", TicketPriority.URGENT: "紧急"}


async def service_engineers(settings: Settings) -> list[Staff]:
    found: list[Staff] = []
    for name in settings.tickets.service_engineers:
        staff = await find_staff_named(name)
        if staff is not None and staff not in found:
            found.append(staff)
    return found


async def choose_assignee(customer: Customer, reporter: Staff | None, settings: Settings) -> Staff | None:
    """The service engineer with the fewest open tickets (ties: least recently assigned), else the owner."""
    engineers = await service_engineers(settings)
    if engineers:
        ids = [e.id for e in engineers]
        loads = dict(
            await Ticket.filter(assignee_id__in=ids, status__in=OPEN_STATES)
            .annotate(n=Count("id"))
            .group_by("assignee_id")
            .values_list("assignee_id", "n")
        )
        latest: dict[int, datetime] = {}
        for assignee_id, created in await Ticket.filter(assignee_id__in=ids).values_list("assignee_id", "created_at"):
            if assignee_id not in latest or created > latest[assignee_id]:
                latest[assignee_id] = created
        epoch = datetime.min.replace(tzinfo=None)

        def key(e: Staff) -> tuple[int, float, int]:
            last = latest.get(e.id)
            return (int(loads.get(e.id, 0)), last.timestamp() if last else epoch.toordinal(), e.id)

        return min(engineers, key=key)
    if customer.owner_id:
        owner = await Staff.get_or_none(id=customer.owner_id, active=True)
        if owner is not None:
            return owner
    return reporter


async def open_ticket(
    customer: Customer,
    content: str,
    priority: TicketPriority,
    reporter: Staff | None,
    now: datetime,
    settings: Settings,
    source: str = "manual",
    conn: Any = None,
) -> Ticket:
    """Create a ticket with its SLA due time and assignee (used by the command and by keyword rules)."""
    now = now.astimezone(UTC)
    minutes = (
        settings.rules.sla_first_response_minutes_urgent
        if priority == TicketPriority.URGENT
        else settings.rules.sla_first_response_minutes_normal
    )
    assignee = await choose_assignee(customer, reporter, settings)
    title = content.splitlines()[0][:60] if content else "客户服务请求"
    return await Ticket.create(
        customer_id=customer.id,
        title=title,
        description=content[:4000],
        priority=priority,
        status=TicketStatus.OPEN,
        reporter_id=reporter.id if reporter else None,
        assignee_id=assignee.id if assignee else None,
        source=source,
        first_response_due=now + timedelta(minutes=minutes),
        created_at=now,
        using_db=conn,
    )


def ticket_state(ticket: Ticket) -> dict[str, Any]:
    return {
        "status": str(ticket.status),
        "priority": str(ticket.priority),
        "assignee_id": ticket.assignee_id,
        "first_responded_at": ticket.first_responded_at.isoformat() if ticket.first_responded_at else None,
        "resolved_at": ticket.resolved_at.isoformat() if ticket.resolved_at else None,
        "revisit_due": ticket.revisit_due.isoformat() if ticket.revisit_due else None,
        "closed_at": ticket.closed_at.isoformat() if ticket.closed_at else None,
        "resolution": ticket.resolution,
    }


@router.intent("create_ticket", examples=["工单 华为 设备漏油 紧急", "华为的设备出故障了，帮忙开个工单"], order=40)
async def create_ticket(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """开工单（普通/紧急，自动派给售后并计算响应时限）"""
    found = await resolve(ctx, slots, "create_ticket")
    if isinstance(found, Reply):
        return found
    customer = found
    engineers = await service_engineers(ctx.settings)
    if not await visible_to(ctx.staff, customer) and ctx.staff not in engineers:
        return Reply(f"「{customer.name}」不是您或您团队的客户，请联系负责人开工单。")
    content = str(slots.get("content") or "").strip()
    if not content:
        return Reply(f"请描述一下问题，例如「工单 {customer.name} 液压站漏油 紧急」。")
    priority = TicketPriority.URGENT if slots.get("priority") == "urgent" else TicketPriority.NORMAL
    ticket = await open_ticket(customer, content, priority, ctx.staff, ctx.now, ctx.settings, "manual", ctx.conn)
    await ctx.audit("create_ticket", "ticket", ticket.id, None, {"customer": customer.name, **ticket_state(ticket)})
    assignee = await Staff.get_or_none(id=ticket.assignee_id) if ticket.assignee_id else None
    tz = ctx.settings.tz
    due = local(ticket.first_response_due, tz)
    if assignee is not None and assignee.id != ctx.staff.id:
        await ctx.push(
            assignee,
            f"新工单 #{ticket.id}（{PRIORITY_LABELS[priority]}）：{customer.name} — {content}\n"
            f"请在 {due} 前首次响应，回复「工单 #{ticket.id} 处理中」。",
        )
    return Reply(
        f"已开工单 #{ticket.id}（{PRIORITY_LABELS[priority]}）：{customer.name} — {content}\n"
        f"处理人：{assignee.name if assignee else '待分配'}，首次响应时限：{due}。"
    )


async def may_update(staff: Staff, ticket: Ticket, customer: Customer) -> bool:
    if staff.role in (Role.ADMIN, Role.DIRECTOR) or staff.id in (ticket.assignee_id, ticket.reporter_id):
        return True
    if await visible_to(staff, customer):
        return True
    if staff.role == Role.MANAGER and ticket.assignee_id:
        return await Staff.filter(id=ticket.assignee_id, manager_id=staff.id).exists()
    return False


@router.intent("update_ticket", examples=["工单 #12 处理中", "工单 #12 已解决 更换了密封圈", "关闭工单 #12"], order=41)
async def update_ticket(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """更新工单状态（处理中 → 已解决 → 关闭），可附处理说明"""
    raw_id = slots.get("ticket_id")
    if not isinstance(raw_id, int) and not str(raw_id or "").isdigit():
        return Reply("请写上工单号，例如「工单 #12 已解决 更换了密封圈」。")
    ticket = await Ticket.filter(id=int(str(raw_id))).using_db(ctx.conn).select_for_update().first()
    if ticket is None:
        return Reply(f"没有找到工单 #{raw_id}，请核对工单号。")
    customer = await Customer.get(id=ticket.customer_id)
    if not await may_update(ctx.staff, ticket, customer):
        return Reply(f"工单 #{ticket.id} 不是您处理或您团队的工单，无法更新。")
    note = str(slots.get("content") or "").strip()
    status_raw = str(slots.get("status") or "")
    current = TicketStatus(ticket.status)
    if status_raw:
        try:
            target = TicketStatus(status_raw)
        except ValueError:
            return Reply("状态只能是：处理中、已解决、关闭。")
    elif note and current in OPEN_STATES:
        target = TicketStatus.IN_PROGRESS  # a note on an open ticket means someone is on it
    else:
        return Reply(f"工单 #{ticket.id} 当前「{TICKET_STATUS_LABELS[current]}」，请说明新状态：处理中、已解决或关闭。")
    before = ticket_state(ticket)
    if target == current and target == TicketStatus.IN_PROGRESS and note:
        pass  # a progress note
    elif target == current:
        return Reply(f"工单 #{ticket.id} 已经是「{TICKET_STATUS_LABELS[current]}」了。")
    elif target not in TRANSITIONS[current]:
        allowed = "、".join(TICKET_STATUS_LABELS[s] for s in TRANSITIONS[current]) or "无（已关闭）"
        return Reply(
            f"工单 #{ticket.id} 当前「{TICKET_STATUS_LABELS[current]}」，"
            f"不能直接改为「{TICKET_STATUS_LABELS[target]}」。"
            f"可改为：{allowed}。"
        )
    now = ctx.now.astimezone(UTC)
    if ticket.first_responded_at is None:
        ticket.first_responded_at = now
    ticket.status = target
    stamp = f"[{local(now, ctx.settings.tz)} {ctx.staff.name}] "
    if target == TicketStatus.RESOLVED:
        ticket.resolved_at = now
        ticket.revisit_due = now + timedelta(hours=ctx.settings.rules.ticket_revisit_hours)
        if note:
            ticket.resolution = note[:4000]
    elif target == TicketStatus.CLOSED:
        ticket.closed_at = now
        if note:
            ticket.description = (ticket.description + "\n" + stamp + note)[:8000]
    elif target == TicketStatus.IN_PROGRESS:
        if current == TicketStatus.RESOLVED:
            ticket.resolved_at = None
            ticket.revisit_due = None
        if note:
            ticket.description = (ticket.description + "\n" + stamp + note)[:8000]
    await ticket.save(using_db=ctx.conn)
    await ctx.audit("update_ticket", "ticket", ticket.id, before, {**ticket_state(ticket), "note": note})
    tz = ctx.settings.tz
    text = f"工单 #{ticket.id}（{customer.name}）：{TICKET_STATUS_LABELS[current]} → {TICKET_STATUS_LABELS[target]}"
    if note:
        text += f"\n说明：{note}"
    if target == TicketStatus.RESOLVED and ticket.revisit_due is not None:
        text += f"\n请在 {local(ticket.revisit_due, tz)} 前回访客户确认。"
    if target in (TicketStatus.RESOLVED, TicketStatus.CLOSED) and customer.owner_id not in (None, ctx.staff.id):
        owner = await Staff.get_or_none(id=customer.owner_id)
        if owner is not None:
            await ctx.push(
                owner, f"您的客户「{customer.name}」的工单 #{ticket.id} 已{TICKET_STATUS_LABELS[target]}。{note}"
            )
    return Reply(text)

"""The ticket intents: 开工单 (with SLA and assignee, the assignee told at once) and 工单 #12 已解决 (moves, notes, the
owner told when it is resolved or closed)."""

from __future__ import annotations

from datetime import UTC, timedelta

from bot.access import visible_to
from bot.context import Context, Slots
from bot.display import local
from bot.types import IncomingMessage, Reply
from handlers.tickets.capability import capability
from handlers.tickets.service import (
    OPEN_STATES,
    PRIORITY_LABELS,
    TRANSITIONS,
    may_update,
    open_ticket,
    service_engineers,
    ticket_state,
)
from models.customers import Customer
from models.staff import Staff
from models.tickets import TICKET_STATUS_LABELS, Ticket, TicketPriority, TicketStatus


@capability.intent(
    "create_ticket", examples=["工单 华为 设备漏油 紧急", "华为的设备出故障了，帮忙开个工单"], order=40, customer=True
)
async def create_ticket(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """开工单（普通/紧急，自动派给售后并计算响应时限）"""
    customer = ctx.customer
    engineers = await service_engineers(ctx.settings)
    if not await visible_to(ctx.staff, customer) and ctx.staff not in engineers:
        return Reply(f"「{customer.name}」不是您或您团队的客户，请联系负责人开工单。")
    content = str(slots.get("content") or "").strip()
    if not content:
        return Reply(f"请描述一下问题，例如「工单 {customer.name} 液压站漏油 紧急」。")
    priority = TicketPriority.URGENT if slots.get("priority") == "urgent" else TicketPriority.NORMAL
    ticket = await open_ticket(customer, content, priority, ctx.staff, ctx.now, ctx.settings, "manual", ctx.conn)
    after = {"customer": customer.name, "title": ticket.title, **ticket_state(ticket)}
    await ctx.audit("create_ticket", "ticket", ticket.id, None, after)
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


@capability.intent(
    "update_ticket", examples=["工单 #12 处理中", "工单 #12 已解决 更换了密封圈", "关闭工单 #12"], order=41
)
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
    before = {**ticket_state(ticket), "description": ticket.description}
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
    after = {**ticket_state(ticket), "description": ticket.description, "note": note}
    await ctx.audit("update_ticket", "ticket", ticket.id, before, after, customer_id=customer.id)
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

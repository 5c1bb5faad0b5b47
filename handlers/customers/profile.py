"""The profile card (客户资料卡): owner, stage, grade, tags, contacts, follow-ups, open tickets, NPS, buying signal and
the latest messages."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from bot.access import visible_to
from bot.context import Context, Slots
from bot.display import local
from bot.types import IncomingMessage, Reply
from handlers.customers.capability import capability
from models.customers import STAGE_LABELS, Customer, Stage
from models.followups import FollowUp
from models.messages import Message
from models.nps import Survey
from models.tickets import TICKET_STATUS_LABELS, Ticket, TicketStatus

LATEST_MESSAGES = 3


def snapshot(customer: Customer) -> dict[str, Any]:
    """What the audit log keeps of a customer before and after a change."""
    return {
        "name": customer.name,
        "owner_id": customer.owner_id,
        "stage": str(customer.stage),
        "grade": customer.grade,
        "tags": list(customer.tags or []),
    }


async def _latest_nps(customer_id: int, tz: ZoneInfo) -> str | None:
    row = await Survey.filter(customer_id=customer_id, score__isnull=False).order_by("-answered_at").first()
    if row is None:
        return None
    return f"{row.score} 分（{local(row.answered_at, tz)[:10]}）"


@capability.intent("show_customer", examples=["客户 华为", "华为怎么样了"], order=10, customer=True)
async def show_customer(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看客户资料卡"""
    customer = ctx.customer
    if not await visible_to(ctx.staff, customer):
        return Reply(f"「{customer.name}」不是您或您团队的客户，无法查看。")
    await customer.fetch_related("owner", "contacts")
    tz = ctx.settings.tz
    lines = [
        f"【{customer.name}】" + (f"（{'、'.join(customer.aliases)}）" if customer.aliases else ""),
        f"负责人：{customer.owner.name if customer.owner else '公海'}",
        f"阶段：{STAGE_LABELS[Stage(customer.stage)]}　等级：{customer.grade or '—'}",
        f"标签：{'、'.join(customer.tags) if customer.tags else '—'}",
        f"最近跟进：{local(customer.last_followup_at, tz)}　下次跟进：{local(customer.next_followup_at, tz)}",
    ]
    if customer.industry:
        lines.insert(2, f"行业：{customer.industry}")
    for contact in customer.contacts:
        lines.append(f"联系人：{contact.name} {contact.role} {contact.phone}".rstrip())
    open_tickets = (
        await Ticket.filter(customer_id=customer.id, status__in=[TicketStatus.OPEN, TicketStatus.IN_PROGRESS])
        .order_by("-created_at")
        .limit(5)
    )
    if open_tickets:
        lines.append("未结工单：")
        lines.extend(
            f"  #{t.id} {TICKET_STATUS_LABELS[TicketStatus(t.status)]} {'【紧急】' if t.priority == 'urgent' else ''}"
            f"{t.title}"
            for t in open_tickets
        )
    else:
        lines.append("未结工单：无")
    if nps := await _latest_nps(customer.id, tz):
        lines.append(f"最近 NPS：{nps}")
    signal = (customer.custom_fields or {}).get(ctx.settings.keywords.buying_signal_field)
    if isinstance(signal, dict) and signal.get("at"):
        lines.append(f"购买信号：{signal.get('at')} {signal.get('words', '')}".rstrip())
    last = await FollowUp.filter(customer_id=customer.id).order_by("-created_at").first()
    if last is not None:
        lines.append(f"最近跟进记录：{local(last.created_at, tz)} {last.content[:60]}")
    recent = await Message.filter(customer_id=customer.id, to_bot=False).order_by("-sent_at").limit(LATEST_MESSAGES)
    if recent:
        lines.append("最近消息：")
        lines.extend(f"  {local(m.sent_at, tz)} {m.text[:60]}" for m in recent)
    return Reply("\n".join(lines))

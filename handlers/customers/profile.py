"""The profile card (客户资料卡): owner, stage, grade, tags, contacts, follow-ups, open tickets, NPS, the lines other
capabilities register (``Capability.card_line``), buying signal and the latest messages."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from tortoise.backends.base.client import BaseDBAsyncClient

from bot.access import visible_to
from bot.context import Context, Slots
from bot.display import local
from bot.types import IncomingMessage, Reply
from handlers.customers.capability import capability
from handlers.orders.chat import card_lines as order_lines
from models.customers import STAGE_LABELS, Contact, Customer, Stage
from models.followups import FollowUp
from models.messages import Message
from models.nps import Survey
from models.tickets import TICKET_STATUS_LABELS, Ticket, TicketStatus

LATEST_MESSAGES = 3


# A custom field (``Customer.custom_fields``) is named in audit rows as this prefix and its name.
CUSTOM = "custom:"
# The customer fields a person reads in the history, by their audit name (others, e.g. won_at, go unmentioned).
FIELD_LABELS = {
    "name": "名称",
    "owner_id": "负责人",
    "stage": "阶段",
    "grade": "等级",
    "tags": "标签",
    "aliases": "别名",
    "industry": "行业",
    "contract_end": "合同到期",
}
_MOMENTS = ("won_at", "last_followup_at", "next_followup_at")


def snapshot(customer: Customer) -> dict[str, Any]:
    """What the audit log keeps of a customer before and after a change."""
    return {
        "name": customer.name,
        "owner_id": customer.owner_id,
        "stage": str(customer.stage),
        "grade": customer.grade,
        "tags": list(customer.tags or []),
        "won_at": customer.won_at.isoformat() if customer.won_at else None,
    }


def field_value(customer: Customer, key: str) -> Any:
    """A customer field as the audit log keeps it (JSON): ``stage``, ``contract_end``, ``custom:付款方式``…"""
    if key.startswith(CUSTOM):
        return (customer.custom_fields or {}).get(key.removeprefix(CUSTOM))
    value = getattr(customer, key)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, list):
        return list(value)
    return str(value) if key == "stage" else value


def same_value(a: Any, b: Any) -> bool:
    """Equal as the audit log keeps them; moments compare as moments (their text may differ in offset)."""
    if isinstance(a, str) and isinstance(b, str) and a != b:
        try:
            return datetime.fromisoformat(a) == datetime.fromisoformat(b)
        except ValueError:
            return False
    return bool(a == b)


async def restore_fields(customer: Customer, values: dict[str, Any], conn: BaseDBAsyncClient | None) -> None:
    """Put these audit-log values back on ``customer`` and save them."""
    update = {"updated_at"}
    custom = dict(customer.custom_fields or {})
    for key, value in values.items():
        if key.startswith(CUSTOM):
            if value is None:
                custom.pop(key.removeprefix(CUSTOM), None)
            else:
                custom[key.removeprefix(CUSTOM)] = value
            update.add("custom_fields")
            continue
        if key in _MOMENTS:
            value = datetime.fromisoformat(value) if value else None
        elif key == "contract_end":
            value = date.fromisoformat(value) if value else None
        elif key == "stage":
            value = Stage(value)
        setattr(customer, key, value)
        update.add(key)
    customer.custom_fields = custom
    await customer.save(using_db=conn, update_fields=sorted(update))


def contact_line(contact: Contact) -> str:
    """联系人：刘强 采购经理 决策人 13800000001 (what is not known is left out)."""
    parts = (contact.name, contact.title, contact.role, contact.phone)
    return "联系人：" + " ".join(p for p in parts if p)


def _custom_fields(customer: Customer) -> list[tuple[str, str]]:
    """The custom fields people typed or imported (structured ones, such as the buying signal, have their line)."""
    fields = customer.custom_fields or {}
    return [(str(k), str(v)) for k, v in fields.items() if isinstance(v, (str, int, float)) and str(v)]


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
    if customer.contract_end:
        lines.append(f"合同到期：{customer.contract_end.isoformat()}")
    lines.extend(f"{name}：{value}" for name, value in _custom_fields(customer))
    for contact in customer.contacts:
        lines.append(contact_line(contact))
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
    lines.extend(await order_lines(customer.id, tz))
    if nps := await _latest_nps(customer.id, tz):
        lines.append(f"最近 NPS：{nps}")
    for card_line in ctx.bot.card_lines:  # what other capabilities add (the customer health score)
        lines.extend(await card_line(ctx.bot, customer, ctx.now))
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

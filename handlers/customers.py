"""Customers: the profile card, and finding the customer a rep means from what they typed."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from bot.intents import Context, IntentRouter, Slots
from bot.types import IncomingMessage, Reply
from models.customers import STAGE_LABELS, Customer
from models.messages import Message
from models.staff import Role, Staff

router = IntentRouter()

LATEST_MESSAGES = 3


async def visible_to(staff: Staff, customer: Customer) -> bool:
    """A rep sees own customers and the public pool, a manager the team's, directors and admins all."""
    if staff.role in (Role.ADMIN, Role.DIRECTOR) or customer.owner_id in (None, staff.id):
        return True
    if staff.role == Role.MANAGER:
        return await Staff.filter(id=customer.owner_id, manager_id=staff.id).exists()
    return False


async def find_customer(name: str) -> tuple[Customer | None, list[str]]:
    """The customer named (exactly, by alias or by unique prefix), or None and up to five close names."""
    name = name.strip()
    if customer := await Customer.get_or_none(name=name):
        return customer, []
    candidates = await Customer.filter(name__contains=name).order_by("name").limit(6)
    if not candidates:
        for customer in await Customer.all().only("id", "name", "aliases"):
            if name in (customer.aliases or []):
                return await Customer.get(id=customer.id), []
        return None, await close_names(name)
    if len(candidates) == 1:
        return candidates[0], []
    return None, [c.name for c in candidates[:5]]


async def close_names(name: str, limit: int = 5) -> list[str]:
    """Stored customer names sharing the most characters with ``name``."""
    chars = set(name)
    scored = []
    for value in await Customer.all().values_list("name", flat=True):
        stored = str(value)
        score = len(chars & set(stored))
        if score:
            scored.append((-score, len(stored), stored))
    return [s for _, _, s in sorted(scored)[:limit]]


def not_found(name: str, suggestions: list[str]) -> Reply:
    if suggestions:
        return Reply(f"没有找到客户「{name}」。您是不是要找：" + "、".join(suggestions) + "？")
    return Reply(f"没有找到客户「{name}」。可以发送「新建客户 {name}」先建档。")


def local(dt: object, tz: ZoneInfo) -> str:
    from datetime import datetime

    if not isinstance(dt, datetime):
        return "—"
    return dt.astimezone(tz).strftime("%Y-%m-%d %H:%M")


@router.intent("show_customer", examples=["客户 华为"], order=10)
async def show_customer(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看客户资料卡"""
    name = str(slots.get("customer", ""))
    customer, suggestions = await find_customer(name)
    if customer is None:
        return not_found(name, suggestions)
    if not await visible_to(ctx.staff, customer):
        return Reply(f"「{customer.name}」不是您或您团队的客户，无法查看。")
    await customer.fetch_related("owner", "contacts")
    tz = ctx.settings.tz
    lines = [
        f"【{customer.name}】",
        f"负责人：{customer.owner.name if customer.owner else '公海'}",
        f"阶段：{STAGE_LABELS[customer.stage]}　等级：{customer.grade or '—'}",
        f"标签：{'、'.join(customer.tags) if customer.tags else '—'}",
        f"最近跟进：{local(customer.last_followup_at, tz)}　下次跟进：{local(customer.next_followup_at, tz)}",
    ]
    for contact in customer.contacts:
        lines.append(f"联系人：{contact.name} {contact.role} {contact.phone}".rstrip())
    recent = await Message.filter(customer_id=customer.id, to_bot=False).order_by("-sent_at").limit(LATEST_MESSAGES)
    if recent:
        lines.append("最近消息：")
        lines.extend(f"  {local(m.sent_at, tz)} {m.text[:60]}" for m in recent)
    return Reply("\n".join(lines))

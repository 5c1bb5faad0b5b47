"""Follow-ups (跟进记录): what a rep did with a customer, by which channel, and when they will be in touch next.

Logging one moves ``Customer.last_followup_at`` to now and ``next_followup_at`` to the time given; the reminder
for the next follow-up is fired by the scheduled rules from ``next_followup_at`` (nothing is scheduled here).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from bot.intents import Context, IntentRouter, Slots
from bot.types import IncomingMessage, Reply
from handlers.customers import local, refusal, resolve
from models.followups import FollowUp

router = IntentRouter()

CHANNEL_LABELS = {"visit": "拜访", "phone": "电话", "wechat": "微信", "email": "邮件", "chat": "沟通"}
_CHANNELS = (
    ("visit", re.compile(r"拜访|上门|面谈|见面|见了|现场|来访|参观|走访|碰面|拜会|去了|开会")),
    ("phone", re.compile(r"电话|通话|打给|致电|call", re.I)),
    ("wechat", re.compile(r"微信|企微|wechat", re.I)),
    ("email", re.compile(r"邮件|邮箱|email|e-mail", re.I)),
)


def channel_of(content: str) -> str:
    """visit, phone, wechat, email, or chat when the note does not say."""
    for channel, pattern in _CHANNELS:
        if pattern.search(content):
            return channel
    return "chat"


def _moment(value: object) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else None


@router.intent(
    "follow_up", examples=["跟进 华为 电话沟通了报价，下周三再联系", "跟进了比亚迪，明天下午3点再聊"], order=20
)
async def follow_up(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """记录跟进（内容、方式、下次跟进时间）"""
    now = ctx.now.astimezone(UTC)  # the database keeps UTC
    found = await resolve(ctx, slots, "follow_up")
    if isinstance(found, Reply):
        return found
    customer = found
    if (refused := await refusal(ctx.staff, customer)) is not None:
        return refused
    content = str(slots.get("content") or "").strip()
    if not content:
        return Reply(f"请写上跟进内容，例如「跟进 {customer.name} 电话沟通了报价，下周三再联系」。")
    next_at = _moment(slots.get("next_at"))
    if next_at is not None and next_at <= now:
        next_at = None
    channel = channel_of(content)
    before = {
        "last_followup_at": customer.last_followup_at.isoformat() if customer.last_followup_at else None,
        "next_followup_at": customer.next_followup_at.isoformat() if customer.next_followup_at else None,
    }
    record = await FollowUp.create(
        customer_id=customer.id,
        staff_id=ctx.staff.id,
        content=content[:2000],
        channel=channel,
        next_at=next_at,
        source="manual",
        created_at=now,
        using_db=ctx.conn,
    )
    customer.last_followup_at = now
    if next_at is not None:
        customer.next_followup_at = next_at
    elif customer.next_followup_at is not None and customer.next_followup_at <= now:
        customer.next_followup_at = None  # the planned contact happened; nothing new was planned
    await customer.save(using_db=ctx.conn, update_fields=["last_followup_at", "next_followup_at", "updated_at"])
    after = {
        "followup_id": record.id,
        "channel": channel,
        "content": record.content,
        "last_followup_at": now.isoformat(),
        "next_followup_at": customer.next_followup_at.isoformat() if customer.next_followup_at else None,
    }
    await ctx.audit("follow_up", "customer", customer.id, before, after)
    tz = ctx.settings.tz
    lines = [f"已记录「{customer.name}」的跟进（{CHANNEL_LABELS[channel]}）：{record.content}"]
    if next_at is not None:
        lines.append(f"下次跟进：{local(next_at, tz)}，到时我会提醒您。")
    else:
        lines.append("没有写下次跟进时间；可以说「下周三再联系」这样的话，我会按时提醒。")
    return Reply("\n".join(lines))

"""Reminders a rep asks for (明天下午3点提醒我给华为打电话): recognized, stored, and pushed at that moment by this
capability's scheduled rule, exactly once (quiet hours do not hold them: the rep chose the time)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from bot.capability import Capability
from bot.context import Context, Firing, RuleContext, Slots
from bot.nlu.reading import Reading, Result, tidy
from bot.nlu.text import cut
from bot.nlu.timeparse import iso as iso_moment
from bot.resolution import find_customer, not_found
from bot.rulekit import BATCH, iso, local_time, short
from bot.types import IncomingMessage, Reply
from models.reminders import Reminder

capability = Capability("reminders")

_REMIND = re.compile(r"提醒我|提醒一下我|叫我|记得提醒|到时候提醒|remind(?:\s+me)?|别忘了提醒我|提醒", re.I)


def remind_slots(r: Reading) -> Slots:
    text = r.text
    slots: Slots = {}
    moment = r.times.find_moment(text, r.now)
    body = text
    if moment:
        slots["at"] = iso_moment(moment.value)
        body = cut(body, (moment.start, moment.end))
    slots.update(r.customer_slot(text))
    body = re.sub(r"^(?:remind(?:\s+me)?)", "", body, flags=re.I)
    body = re.sub(r"(?:记得|到时候|别忘了|请)?(?:提醒一下我|提醒我一下|提醒我|提醒一下|提醒)(?:一下)?", " ", body)
    content = tidy(body)
    content = re.sub(r"^(?:要|该)(?=.)", "", content) if len(content) > 3 else content
    if content:
        slots["content"] = content
    return slots


@capability.command(re.compile(r"^(?:提醒我|提醒|remind(?:\s+me)?)(?:\s+|[:：]|(?=\S))", re.I), order=80)
def remind_command(r: Reading, rest: str) -> Result:
    return "remind", remind_slots(r)


@capability.phrase(order=30)
def remind_phrase(r: Reading) -> Result | None:
    if r.question:
        return None
    text = r.text
    if (_REMIND.search(text) and "提醒我" in text) or re.search(r"^(?:.{0,12})提醒(?:我|一下)", text):
        return "remind", remind_slots(r)
    return None


@capability.rule(order=90)
async def explicit_reminders(ctx: RuleContext) -> list[Firing]:
    """Reminders reps asked for (``明天下午3点提醒我给华为打电话``), at the time they asked."""
    firings = []
    due = Reminder.filter(fired_at__isnull=True, at__lte=ctx.now).order_by("at", "id").limit(BATCH)
    reminders = await due.select_related("staff", "customer")
    ctx.more = ctx.more or len(reminders) >= BATCH
    for r in reminders:
        about = f"\n> 客户：{r.customer.name}" if r.customer else ""
        action = f"\n完成后可回复：`跟进 {short(r.customer)} 跟进内容`" if r.customer else ""
        text = f"**提醒**\n> {r.content}{about}\n> 提醒时间：{local_time(r.at, ctx)}{action}"
        firings.append(
            Firing(
                "reminder",
                f"reminder:{r.id}:at:{iso(r.at)}",
                r.staff,
                text,
                customer=r.customer,
                # The rep chose this moment themselves: quiet hours do not hold it back.
                urgent=True,
                apply=_mark_fired(r, ctx.now),
                period_at=r.at,
            )
        )
    return firings


def _mark_fired(r: Reminder, now: datetime) -> Callable[[], Awaitable[None]]:
    async def apply() -> None:
        await Reminder.filter(id=r.id).update(fired_at=now)

    return apply


@capability.intent("remind", examples=["明天下午3点提醒我给华为打电话", "提醒我 周五 10点 跟进比亚迪报价"])
async def remind(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """设置提醒：明天下午3点提醒我给华为打电话"""
    content = str(slots.get("content") or "").strip()
    at_text = str(slots.get("at") or "").strip()
    if not at_text:
        return Reply("请告诉我什么时候提醒您，例如：明天下午3点提醒我给华为打电话")
    try:
        at = datetime.fromisoformat(at_text)
    except ValueError:
        return Reply(f"没看懂提醒时间「{at_text}」，请换个说法，例如：明天下午3点提醒我给华为打电话")
    tz = ctx.settings.tz
    at = at if at.tzinfo else at.replace(tzinfo=tz)
    if at <= ctx.now:
        return Reply(f"提醒时间 {at.astimezone(tz).strftime('%m-%d %H:%M')} 已经过去了，请说一个将来的时间。")
    customer = None
    if name := str(slots.get("customer") or "").strip():
        customer, suggestions = await find_customer(name)
        if customer is None:
            return not_found(name, suggestions)
    content = content or (f"跟进 {customer.name}" if customer else "您设置的提醒")
    reminder = await Reminder.create(
        staff_id=ctx.staff.id,
        customer_id=customer.id if customer else None,
        content=content,
        at=at.astimezone(UTC),
        source=f"{msg.platform}:{msg.msgid}"[:191],
        using_db=ctx.conn,
    )
    after = {"at": at.isoformat(), "content": content}
    await ctx.audit("reminder.create", "reminder", reminder.id, None, after, customer_id=reminder.customer_id)
    when = at.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    return Reply(f"好的，{when} 提醒您：{content}")

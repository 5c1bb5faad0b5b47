"""Follow-ups (跟进记录): what a rep did with a customer, by which channel, and when they will be in touch next.

Logging one moves ``Customer.last_followup_at`` to now and ``next_followup_at`` to the time given; the reminder
for the next follow-up is this capability's scheduled rule ``followup_due``, fired from ``next_followup_at``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from bot.access import refusal
from bot.capability import Capability
from bot.context import Context, Firing, RuleContext, Slots
from bot.display import local
from bot.nlu.cues import CONTACT
from bot.nlu.reading import Reading, Result, tidy
from bot.nlu.text import cut
from bot.rulekit import crossed, customers_by_id, follow_up_action, ids, iso, local_time, not_fired, select
from bot.types import IncomingMessage, Reply
from handlers.customers.phrasing import show_leftover
from models.followups import FollowUp
from models.opportunities import follow_ups_move_deals

capability = Capability("followups")

EXCERPT_CHARS = 200  # of a note, in the confirmation
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


# What makes a customer and some words a note rather than a question to ask: something happened, was said, or is
# planned (华为那边回复说方案通过了, 金风科技这周五之前要给方案); a bare noun or time (华为 报价单) is not.
NOTE = re.compile(
    r"说|讲|表示|反馈|回复|答应|同意|拒绝|确认|要求|需要|希望|想要|觉得|认为|满意|准备|打算|计划|决定|已|寄|送了|送去|交了|交给|交付"
    r"|催|等(?:反馈|回复|通知|消息|他们|客户|对方)|约了|约好|要|下单|来电"
    r"|再(?:聊|谈|联系|约|去|跟|沟通|报|发|确认|见|来)|要给|要去|会给|会去|了|[通打聊谈见开]完|电话|视频|会议|邮件|微信"
)


def excerpt(content: str) -> str:
    """The note as confirmed in chat: a long one by its beginning and its length."""
    if len(content) <= EXCERPT_CHARS:
        return content
    return f"{content[:EXCERPT_CHARS]}…（共 {len(content)} 字，已完整保存）"


# -- recognition -----------------------------------------------------------------------------------------------------


@capability.command(
    re.compile(
        r"^(?:跟进记录|跟进|记录跟进|写跟进|follow(?:[\s_-]?up)?|fu)(?:了一下|了|一下|过)?(?:\s+|[:：]|(?=\S))", re.I
    ),
    order=90,
)
def follow_up_command(r: Reading, rest: str) -> Result:
    slots, body = r.split_customer(rest)
    content = tidy(body)
    return "follow_up", _noted(r, slots, content, content)


def _noted(r: Reading, slots: Slots, content: str, when_in: str) -> Slots:
    """``slots`` with the note and the first future moment said in ``when_in`` (the next follow-up)."""
    if content:
        slots["content"] = content
    next_at, _ = r.next_at(when_in)
    if next_at:
        slots["next_at"] = next_at
    return slots


def follow_up_slots(r: Reading) -> Slots:
    text = r.text
    mentions = r.customers
    guessed = None if mentions else r.guess_customer(text)
    slots: Slots = r.customer_slot(text, guessed)
    content = text
    # "跟进了华为，下周三再聊报价": the lead-in is not part of the note.
    lead = re.match(r"^(?:今天|刚才|刚刚|上午|下午|已经)?(?:跟进了?|跟进一下|跟进过|联系了|回访了?)\s*", text)
    surface = mentions[0].surface if mentions else guessed
    if lead and surface and text[lead.end() :].startswith(surface):
        content = text[lead.end() + len(surface) :]
    elif surface and text.startswith(surface):
        tail = text[len(surface) :]
        if re.match(r"^\s*[,，:：]", tail):
            content = tail
    # 上午拜访了…: the part of today it happened in is no next follow-up.
    when_in = re.sub(r"^(?:今天|刚才|刚刚)?(?:上午|下午|早上|中午|晚上)", " ", text)
    return _noted(r, slots, tidy(content), when_in)


@capability.phrase(order=130)
def contact_phrase(r: Reading) -> Result | None:
    """A contact with a customer was described: 拜访了华为, 跟进了比亚迪，…"""
    if r.question:
        return None
    if CONTACT.search(r.text) and (r.customers or r.guess_customer(r.text)):
        return "follow_up", follow_up_slots(r)
    return None


@capability.phrase(order=160)
def note_phrase(r: Reading) -> Result | None:
    """A customer and a note: the most useful reading is a follow-up note."""
    if r.question or not r.customers:
        return None
    surface = re.escape(r.customers[0].surface)
    mention = r.customers[0]
    said = cut(r.text, (mention.start, mention.end))
    if len(show_leftover(r)) >= 4 and (re.search(surface + r"\s*[:：]", r.text) or NOTE.search(said)):
        return "follow_up", follow_up_slots(r)
    return None


# -- the intent ------------------------------------------------------------------------------------------------------


@capability.intent(
    "follow_up",
    examples=["跟进 华为 电话沟通了报价，下周三再联系", "跟进了比亚迪，明天下午3点再聊"],
    order=20,
    customer=True,
)
async def follow_up(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """记录跟进（内容、方式、下次跟进时间）"""
    now = ctx.now.astimezone(UTC)  # the database keeps UTC
    customer = ctx.customer
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
        content=content,  # whole, however long: a pasted report is the record
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
    await follow_ups_move_deals(customer.id, now, ctx.conn)
    after = {
        "followup_id": record.id,
        "channel": channel,
        "content": record.content,
        "last_followup_at": now.isoformat(),
        "next_followup_at": customer.next_followup_at.isoformat() if customer.next_followup_at else None,
    }
    await ctx.audit("follow_up", "customer", customer.id, before, after)
    tz = ctx.settings.tz
    lines = [f"已记录「{customer.name}」的跟进（{CHANNEL_LABELS[channel]}）：{excerpt(record.content)}"]
    if next_at is not None:
        lines.append(f"下次跟进：{local(next_at, tz)}，到时我会提醒您。")
    else:
        lines.append("没有写下次跟进时间；可以说「下周三再联系」这样的话，我会按时提醒。")
    return Reply("\n".join(lines))


# -- the next follow-up ------------------------------------------------------------------------------------------------


@capability.rule(order=10)
async def followup_due(ctx: RuleContext) -> list[Firing]:
    """The next follow-up time a rep set has come (and no follow-up was logged since it was set)."""
    due, params = crossed(ctx, "c.next_followup_at", timedelta(minutes=ctx.settings.rules.next_followup_grace_minutes))
    rows = await select(
        ctx,
        f"SELECT c.id FROM customer c WHERE {due} AND c.owner_id IS NOT NULL "
        "AND (c.last_followup_at IS NULL OR c.last_followup_at < c.next_followup_at) "
        f"AND {not_fired('followup_due', 'c.id', 'c.next_followup_at')} ORDER BY c.next_followup_at LIMIT ?",
        params,
    )
    firings = []
    for c in (await customers_by_id(ids(rows))).values():
        if c.owner is None or c.next_followup_at is None:
            continue
        text = (
            f"**跟进提醒**\n> 客户：{c.name}\n> 约定的跟进时间：{local_time(c.next_followup_at, ctx)}\n"
            f"现在该联系客户了。{follow_up_action(c)}"
        )
        firings.append(
            Firing(
                rule="followup_due",
                key=f"followup_due:{c.id}:0:{iso(c.next_followup_at)}",
                to=c.owner,
                text=text,
                customer=c,
                period_at=c.next_followup_at,
            )
        )
    return firings

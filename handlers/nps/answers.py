"""Answers: a score from the survey page or from the customer's own chat reply ("9", "9分", "打9分", "十分") while
the survey is open; the first answer wins, and acts at once: a detractor (0–6) opens a follow-up ticket for the
owner and tells the manager, a promoter (9–10) is tagged 「推荐者」, everyone's owner hears the score.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta
from typing import Any

from tortoise.transactions import in_transaction

from bot import audit
from bot.config import Settings
from bot.context import Services
from bot.types import ArchivedMessage, Reply
from handlers.nps.capability import capability
from models.customers import Contact, Customer
from models.nps import DETRACTOR_MAX, PROMOTER_MIN, Survey
from models.staff import Staff
from models.tickets import Ticket, TicketPriority, TicketStatus

PROMOTER_TAG = "推荐者"


_CN_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CHAT_SCORE = re.compile(
    r"^(?:我)?(?:就)?(?:打|给|评|选)?(?:你们|您们|你|您)?(?:打)?"
    r"(?P<n>10|[0-9]|十|[零〇一二两三四五六七八九])(?:分)?$"
)
# Matched at the start of the reversed text: searched for with ``$``, a long run of these would be rescanned from
# every position in it (quadratic in a long paste).
_TRAILING_REVERSED = re.compile(r"[\s。.!！~～,，、吧啦呀哈]+")


def parse_chat_score(text: str) -> int | None:
    """A customer's chat reply that is just a score: "9", "9分", "打9分", "给你们打十分", "十分", "满分"."""
    value = unicodedata.normalize("NFKC", text or "").strip()
    if trailing := _TRAILING_REVERSED.match(value[::-1]):
        value = value[: len(value) - trailing.end()]
    value = re.sub(r"\s+", "", value)
    if value in ("满分", "打满分", "给满分"):
        return 10
    m = _CHAT_SCORE.match(value)
    if m is None:
        return None
    n = m["n"]
    if n.isdigit():
        return int(n)
    return 10 if n == "十" else _CN_DIGITS[n]


@capability.on_archived(order=20)
async def capture_replies(bot: Services, messages: list[ArchivedMessage]) -> int:
    """Archive hook: customer chat replies that are a score answer the customer's open survey. Returns how many."""
    answered = 0
    for message in messages:
        if message.customer_id is None:
            continue
        if not bot.directory.is_external(message.platform, message.sender):
            continue
        score = parse_chat_score(message.text)
        if score is None:
            continue
        survey = (
            await Survey.filter(
                customer_id=message.customer_id,
                answered_at=None,
                sent_at__lte=message.sent_at,
                expires_at__gt=message.sent_at,
            )
            .order_by("-sent_at")
            .first()
        )
        if survey is None:
            continue
        if await record_answer(bot, survey.id, score, "", "chat", message.sent_at):
            answered += 1
    return answered


def category(score: int) -> str:
    if score >= PROMOTER_MIN:
        return "推荐者"
    if score <= DETRACTOR_MAX:
        return "贬损者"
    return "中立者"


async def record_answer(bot: Services, survey_id: int, score: int, comment: str, source: str, at: datetime) -> bool:
    """Store the first answer to an open survey and act on it, in one transaction. False: nothing changed."""
    if not 0 <= score <= 10:
        return False
    async with in_transaction() as conn:
        won = (
            await Survey.filter(id=survey_id, answered_at=None, sent_at__lte=at, expires_at__gt=at)
            .using_db(conn)
            .update(score=score, comment=comment, answered_at=at, answer_source=source)
        )
        if not won:
            return False
        survey = await Survey.filter(id=survey_id).using_db(conn).get()
        await _act(bot, survey, conn)
    bot.outbox.wake()
    return True


async def _act(bot: Services, survey: Survey, conn: Any) -> None:
    assert survey.score is not None
    score = survey.score
    customer = await Customer.filter(id=survey.customer_id).using_db(conn).get()
    contact = await Contact.filter(id=survey.contact_id).using_db(conn).first() if survey.contact_id else None
    owner_id = customer.owner_id or survey.owner_id
    owner = await Staff.filter(id=owner_id).using_db(conn).first() if owner_id else None
    who = contact.name if contact is not None and contact.name else "客户"
    said = f"\n客户留言：{survey.comment}" if survey.comment else ""
    head = f"客户【{customer.name}】的 {who} 在满意度调查中打了 {score} 分（{category(score)}）。"
    after: dict[str, Any] = {"score": score, "source": survey.answer_source}
    pushes: list[tuple[Staff, str]] = []
    if score <= DETRACTOR_MAX:
        ticket = await _detractor_ticket(bot.settings, survey, customer, owner, who, conn)
        after["ticket_id"] = ticket.id
        if owner is not None:
            pushes.append((owner, f"{head}{said}\n已为您创建回访工单 #{ticket.id}，请尽快联系客户了解原因并跟进处理。"))
            manager = await Staff.filter(id=owner.manager_id or 0, active=True).using_db(conn).first()
            if manager is not None:
                pushes.append(
                    (
                        manager,
                        f"【NPS 贬损提醒】{owner.name} 负责的{head}{said}\n"
                        f"已创建回访工单 #{ticket.id}，由 {owner.name} 跟进。",
                    )
                )
    elif score >= PROMOTER_MIN:
        if PROMOTER_TAG not in (customer.tags or []):
            customer.tags = [*(customer.tags or []), PROMOTER_TAG]
            await customer.save(using_db=conn, update_fields=["tags", "updated_at"])
            after["tags_added"] = [PROMOTER_TAG]
        if owner is not None:
            pushes.append((owner, f"{head}{said}\n已为客户打上「{PROMOTER_TAG}」标签，可以请他们帮忙转介绍。"))
    elif owner is not None:
        pushes.append((owner, f"{head}{said}\n可以问问客户还有哪些地方能做得更好。"))
    for i, (staff, text) in enumerate(pushes):
        await bot.outbox.push(staff, Reply(text), f"nps:answer:{survey.id}:{i}", using_db=conn)
    await audit.record(
        "nps_answer",
        "survey",
        survey.id,
        None,
        after,
        actor=who,
        platform=survey.answer_source,
        customer_id=survey.customer_id,
        conn=conn,
    )


async def _detractor_ticket(
    settings: Settings, survey: Survey, customer: Customer, owner: Staff | None, who: str, conn: Any
) -> Ticket:
    now = survey.answered_at
    assert now is not None
    description = f"{who} 在 NPS 调查中打了 {survey.score} 分。"
    if survey.comment:
        description += f"\n客户留言：{survey.comment}"
    ticket: Ticket = await Ticket.create(
        customer_id=customer.id,
        title=f"NPS 回访：{who} 打了 {survey.score} 分",
        description=description,
        priority=TicketPriority.NORMAL,
        status=TicketStatus.OPEN,
        assignee_id=owner.id if owner is not None else None,
        source="nps",
        first_response_due=now + timedelta(minutes=settings.rules.sla_first_response_minutes_normal),
        created_at=now,
        using_db=conn,
    )
    return ticket

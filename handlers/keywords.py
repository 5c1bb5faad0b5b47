"""Keyword rules on archived customer messages: service words open (or suggest) a ticket, buying words mark a
buying signal on the profile.

The archive path calls ``on_archived`` (an archive hook) once with the NEW rows of every batch, after they are
committed, whatever the source (callbacks, the chat archive, an import). Only messages a customer sent count (a
customer contact as sender, a linked customer). All words of ``[keywords]`` are found in one pass with an
Aho-Corasick automaton; a negation just before a word ("没有故障", "不是坏了") cancels it. Each message is handled
in its own transaction and every push has a per-message dedupe key, so a repeated call changes nothing twice.
Pushes wait for the end of the quiet hours like the scheduled ones (``bot.scheduled.release_time``): the chat
archive is pulled at night too, and a word like 急 is only a guess at urgency, not a reason to wake someone.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field

import ahocorasick
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot import audit
from bot.capability import Capability
from bot.config import KeywordSettings
from bot.context import Services
from bot.scheduled import release_time
from bot.types import Reply
from handlers.tickets.service import open_ticket
from models.customers import Customer
from models.messages import Message
from models.staff import Staff
from models.tickets import Ticket, TicketPriority, TicketStatus

log = logging.getLogger(__name__)

capability = Capability("keywords")

NEGATION_WINDOW = 3  # characters between a negation and the word it cancels


@dataclass
class Hits:
    ticket: list[str] = field(default_factory=list)
    urgent: list[str] = field(default_factory=list)
    buying: list[str] = field(default_factory=list)


class KeywordMatcher:
    """Every configured word found in one pass; negated hits dropped."""

    def __init__(self, config: KeywordSettings) -> None:
        automaton = ahocorasick.Automaton()
        kinds: dict[str, set[str]] = {}
        for kind, words in (
            ("ticket", config.ticket_words),
            ("urgent", config.urgent_words),
            ("buying", config.buying_words),
            ("negation", config.negations),
        ):
            for word in words:
                if word:
                    kinds.setdefault(word, set()).add(kind)
        for word, word_kinds in kinds.items():
            automaton.add_word(word, (word, frozenset(word_kinds)))
        self.empty = not kinds
        if not self.empty:
            automaton.make_automaton()
        self.automaton = automaton

    def match(self, text: str) -> Hits:
        hits = Hits()
        if self.empty or not text:
            return hits
        found = [(end - len(word) + 1, end + 1, word, kinds) for end, (word, kinds) in self.automaton.iter(text)]
        negation_ends = sorted(end for start, end, _, kinds in found if "negation" in kinds)
        for start, _end, word, kinds in found:
            # The first negation ending at or after the window's start, looked up (a scan of all of them per word
            # is quadratic in a long paste).
            nearest = bisect.bisect_left(negation_ends, start - NEGATION_WINDOW)
            negated = nearest < len(negation_ends) and negation_ends[nearest] <= start
            for kind in ("ticket", "urgent", "buying"):
                if kind in kinds and not (negated and kind == "ticket"):
                    target: list[str] = getattr(hits, kind)
                    if word not in target:
                        target.append(word)
        # A longer word contains a shorter one (停机 / 机): keep the words as found, the rule only needs any.
        return hits


def _is_customer_message(bot: Services, message: Message) -> bool:
    return (
        message.customer_id is not None
        and not message.to_bot
        and bot.directory.is_external(message.platform, message.sender)
        and bool(message.text.strip())
    )


@capability.on_archived(order=10)
async def on_archived(bot: Services, messages: list[Message]) -> None:
    """Called once with the NEW rows of every archived batch, after they are committed."""
    config: KeywordSettings = bot.settings.keywords
    matcher = KeywordMatcher(config)
    for message in messages:
        if not _is_customer_message(bot, message):
            continue
        hits = matcher.match(message.text)
        if not hits.ticket and not hits.buying:
            continue
        try:
            async with in_transaction() as conn:
                customer = await Customer.filter(id=message.customer_id).using_db(conn).select_for_update().first()
                if customer is None:
                    continue
                if hits.buying:
                    await _mark_buying_signal(bot, customer, message, hits, conn)
                if hits.ticket and config.ticket_mode != "off":
                    await _service_request(bot, customer, message, hits, conn)
        except Exception:
            log.exception("keyword rules failed on message %s", message.id)


async def _mark_buying_signal(
    bot: Services, customer: Customer, message: Message, hits: Hits, conn: BaseDBAsyncClient
) -> None:
    config = bot.settings.keywords
    fields = dict(customer.custom_fields or {})
    before = {
        "custom_fields": {config.buying_signal_field: fields.get(config.buying_signal_field)},
        "tags": list(customer.tags or []),
    }
    at = message.sent_at.astimezone(bot.settings.tz)
    previous = fields.get(config.buying_signal_field)
    if isinstance(previous, dict) and str(previous.get("at", "")) >= at.isoformat(timespec="seconds"):
        return  # a newer signal is already recorded
    fields[config.buying_signal_field] = {
        "at": at.isoformat(timespec="seconds"),
        "words": "、".join(hits.buying),
        "text": message.text[:200],
        "msgid": message.msgid,
    }
    customer.custom_fields = fields
    update = ["custom_fields", "updated_at"]
    if config.buying_signal_tag and config.buying_signal_tag not in (customer.tags or []):
        customer.tags = [*(customer.tags or []), config.buying_signal_tag]
        update.append("tags")
    await customer.save(using_db=conn, update_fields=update)
    after = {
        "custom_fields": {config.buying_signal_field: fields[config.buying_signal_field]},
        "tags": list(customer.tags or []),
    }
    await audit.record("buying_signal", "customer", customer.id, before, after, platform=message.platform, conn=conn)


async def _service_request(
    bot: Services, customer: Customer, message: Message, hits: Hits, conn: BaseDBAsyncClient
) -> None:
    config = bot.settings.keywords
    owner = await Staff.filter(id=customer.owner_id, active=True).using_db(conn).first() if customer.owner_id else None
    words = "、".join(hits.ticket)
    quote = message.text if len(message.text) <= 80 else message.text[:80] + "…"
    urgent = bool(hits.urgent)
    release = release_time(bot.clock.now(), bot.settings)
    if config.ticket_mode == "suggest":
        if owner is None:
            return
        priority = " 紧急" if urgent else ""
        await bot.outbox.push(
            owner,
            Reply(
                f"客户「{customer.name}」的消息提到「{words}」：“{quote}”\n"
                f"需要开工单吗？回复「工单 {customer.name} {quote[:30]}{priority}」即可。"
            ),
            f"keyword-suggest:{message.platform}:{message.msgid}",
            not_before=release,
            using_db=conn,
        )
        return
    existing = (
        await Ticket.filter(
            customer_id=customer.id, source="keyword", status__in=[TicketStatus.OPEN, TicketStatus.IN_PROGRESS]
        )
        .using_db(conn)
        .order_by("-created_at")
        .first()
    )
    if existing is not None:
        existing.description = (existing.description + "\n" + message.text)[:8000]
        fields = ["description", "updated_at"]
        if urgent and existing.priority != TicketPriority.URGENT:
            existing.priority = TicketPriority.URGENT
            fields.append("priority")
        await existing.save(using_db=conn, update_fields=fields)
        return
    priority = TicketPriority.URGENT if urgent else TicketPriority.NORMAL
    ticket = await open_ticket(
        customer, message.text, priority, None, message.sent_at, bot.settings, source="keyword", conn=conn
    )
    after = {
        "customer": customer.name,
        "source": "keyword",
        "words": words,
        "priority": str(priority),
        "msgid": message.msgid,
    }
    await audit.record(
        "create_ticket", "ticket", ticket.id, None, after, platform=message.platform, customer_id=customer.id, conn=conn
    )
    told: set[int] = set()
    for person_id in (ticket.assignee_id, customer.owner_id):
        if person_id is None or person_id in told:
            continue
        told.add(person_id)
        person = await Staff.filter(id=person_id, active=True).using_db(conn).first()
        if person is None:
            continue
        await bot.outbox.push(
            person,
            Reply(
                f"客户「{customer.name}」的消息提到「{words}」，已自动开工单 #{ticket.id}"
                f"（{'紧急' if urgent else '普通'}）：“{quote}”\n回复「工单 #{ticket.id} 处理中」开始处理。"
            ),
            f"keyword-ticket:{ticket.id}:{person_id}",
            not_before=release,
            using_db=conn,
        )

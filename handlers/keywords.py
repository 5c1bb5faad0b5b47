"""Keyword rules on archived customer messages: service words open (or suggest) a ticket, buying words mark a
buying signal on the profile.

The archive path calls ``on_archived`` (an archive hook) once with the NEW rows of every batch, after they are
committed, whatever the source (callbacks, the chat archive, an import). Only messages a customer sent count (a
customer contact as sender, a linked customer). All words of ``[keywords]`` are found in one pass with an
Aho-Corasick automaton, run once over a whole batch; a negation just before a word ("没有故障", "不是坏了") cancels
it. A batch's effects are applied set-wise in one transaction: each customer's newest buying signal by one
prepared statement run for all customers (``bot.bulk``), the messages of a customer's open keyword ticket appended
in one statement for all tickets, one push per suggestion; every push has a dedupe key, so a repeated call changes
nothing twice. Pushes wait for the end of the quiet hours like the scheduled ones (``bot.scheduled.release_time``):
the chat archive is pulled at night too, and a word like 急 is only a guess at urgency, not a reason to wake
someone.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import ahocorasick
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot import audit, bulk
from bot.capability import Capability
from bot.channels import Queued
from bot.config import KeywordSettings
from bot.context import Services
from bot.scheduled import release_time
from bot.types import ArchivedMessage, Reply
from handlers.tickets.service import open_ticket
from models.customers import Customer
from models.staff import Staff
from models.tickets import Ticket, TicketPriority, TicketStatus

log = logging.getLogger(__name__)

capability = Capability("keywords")

NEGATION_WINDOW = 3  # characters between a negation and the word it cancels
_SEPARATOR = "\x00" * (NEGATION_WINDOW + 1)  # between the texts of a batch, in one pass of the automaton


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
        if self.empty or not text:
            return Hits()
        return self._hits(
            [(end - len(word) + 1, end + 1, word, kinds) for end, (word, kinds) in self.automaton.iter(text)]
        )

    @staticmethod
    def _hits(found: list[tuple[int, int, str, frozenset[str]]]) -> Hits:
        """The words found (start, end, word, kinds) in one text, negated hits dropped."""
        hits = Hits()
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

    def match_many(self, texts: Sequence[str]) -> list[Hits]:
        """``match`` of each text, the automaton run once over the batch: the texts joined by a separator no word
        contains, longer than the negation window, so that nothing matches or negates across two texts."""
        if self.empty:
            return [Hits() for _ in texts]
        starts: list[int] = []
        position = 0
        for text in texts:
            starts.append(position)
            position += len(text) + len(_SEPARATOR)
        joined = _SEPARATOR.join(texts)
        found: list[list[tuple[int, int, str, frozenset[str]]]] = [[] for _ in texts]
        for end, (word, kinds) in self.automaton.iter(joined):
            at = bisect.bisect_right(starts, end) - 1
            found[at].append((end - len(word) + 1 - starts[at], end + 1 - starts[at], word, kinds))
        return [self._hits(f) for f in found]


def _is_customer_message(bot: Services, message: ArchivedMessage) -> bool:
    return (
        message.customer_id is not None
        and bot.directory.is_external(message.platform, message.sender)
        and bool(message.text.strip())
    )


@capability.on_archived(order=10)
async def on_archived(bot: Services, messages: list[ArchivedMessage]) -> None:
    """Called once with the NEW rows of every archived batch, after they are committed: the words of the whole
    batch found in one pass, then every effect applied to the batch at once, in one transaction."""
    config: KeywordSettings = bot.settings.keywords
    candidates = [m for m in messages if _is_customer_message(bot, m)]
    found = [
        (m, hits)
        for m, hits in zip(candidates, KeywordMatcher(config).match_many([m.text for m in candidates]), strict=True)
        if hits.ticket or hits.buying
    ]
    if not found:
        return
    try:
        async with in_transaction() as conn:
            ids = sorted({int(str(m.customer_id)) for m, _ in found})
            customers = {
                c.id: c for c in await Customer.filter(id__in=ids).order_by("id").using_db(conn).select_for_update()
            }
            found = [(m, hits) for m, hits in found if m.customer_id in customers]
            buying = [(m, hits) for m, hits in found if hits.buying]
            if buying:
                await _mark_buying_signals(bot, customers, buying, conn)
            service = [(m, hits) for m, hits in found if hits.ticket]
            if service and config.ticket_mode == "suggest":
                await _suggest_tickets(bot, customers, service, conn)
            elif service and config.ticket_mode == "open":
                await _open_tickets(bot, customers, service, conn)
    except Exception:
        log.exception("keyword rules failed on %d archived messages", len(found))


Found = list[tuple[ArchivedMessage, Hits]]


def _by_customer(found: Found) -> dict[int, Found]:
    grouped: dict[int, Found] = {}
    for m, hits in found:
        grouped.setdefault(int(str(m.customer_id)), []).append((m, hits))
    return grouped


async def _mark_buying_signals(
    bot: Services, customers: dict[int, Customer], found: Found, conn: BaseDBAsyncClient
) -> None:
    """Each customer's newest buying signal of the batch recorded on the profile (unless a newer one is there),
    all of them by one prepared statement, with one audit row each (``bot.bulk``)."""
    config = bot.settings.keywords
    now = datetime.now(UTC)
    changed: list[Customer] = []
    entries: list[list[Any]] = []
    for customer_id, group in _by_customer(found).items():
        customer = customers[customer_id]
        # The first of the newest: what handling the messages one by one, oldest first, would leave.
        message, hits = max(reversed(group), key=lambda item: item[0].sent_at)
        fields = dict(customer.custom_fields or {})
        at = message.sent_at.astimezone(bot.settings.tz).isoformat(timespec="seconds")
        previous = fields.get(config.buying_signal_field)
        if isinstance(previous, dict) and str(previous.get("at", "")) >= at:
            continue  # a newer signal is already recorded
        before = {"custom_fields": {config.buying_signal_field: previous}, "tags": list(customer.tags or [])}
        fields[config.buying_signal_field] = {
            "at": at,
            "words": "、".join(hits.buying),
            "text": message.text[:200],
            "msgid": message.msgid,
        }
        customer.custom_fields = fields
        if config.buying_signal_tag and config.buying_signal_tag not in (customer.tags or []):
            customer.tags = [*(customer.tags or []), config.buying_signal_tag]
        changed.append(customer)
        after = {
            "custom_fields": {config.buying_signal_field: fields[config.buying_signal_field]},
            "tags": list(customer.tags or []),
        }
        entries.append(
            audit.values(
                "buying_signal", "customer", customer.id, before, after,
                actor=audit.SYSTEM, platform=message.platform, at=now,
            )
        )  # fmt: skip
    # Set-wise (``bot.bulk``): the ORM's bulk statements cost more to build than the database spends on them.
    rows = [[c.custom_fields, c.tags, now, c.id] for c in changed]
    await bulk.update(conn, "customer", ["custom_fields", "tags", "updated_at"], rows)
    await bulk.insert(conn, "audit_log", audit.COLUMNS, entries)


def _quote(text: str) -> str:
    return text if len(text) <= 80 else text[:80] + "…"


async def _owners(customers: dict[int, Customer], conn: BaseDBAsyncClient) -> dict[int, Staff]:
    ids = {c.owner_id for c in customers.values() if c.owner_id}
    return {s.id: s for s in await Staff.filter(id__in=ids, active=True).using_db(conn)} if ids else {}


async def _suggest_tickets(
    bot: Services, customers: dict[int, Customer], found: Found, conn: BaseDBAsyncClient
) -> None:
    """Suggest mode: each message's owner is asked whether to open a ticket (one push per message, the batch's
    pushes queued in one statement)."""
    owners = await _owners(customers, conn)
    addresses = await bot.outbox.addresses_of(owners.values(), conn)
    release = release_time(bot.clock.now(), bot.settings)
    pushes: list[Queued] = []
    for message, hits in found:
        customer = customers[int(str(message.customer_id))]
        owner = owners.get(customer.owner_id or 0)
        if owner is None or owner.id not in addresses:
            continue
        quote = _quote(message.text)
        priority = " 紧急" if hits.urgent else ""
        reply = Reply(
            f"客户「{customer.name}」的消息提到「{'、'.join(hits.ticket)}」：“{quote}”\n"
            f"需要开工单吗？回复「工单 {customer.name} {quote[:30]}{priority}」即可。"
        )
        key = f"keyword-suggest:{message.platform}:{message.msgid}"
        pushes.append(Queued(addresses[owner.id], reply, key, staff_id=owner.id, not_before=release))
    await bot.outbox.enqueue_many(pushes, using_db=conn)


async def _open_tickets(bot: Services, customers: dict[int, Customer], found: Found, conn: BaseDBAsyncClient) -> None:
    """Open mode: a customer's open keyword ticket takes the batch's messages (one statement for all such
    tickets); a customer without one gets a ticket opened by the first of them, its people told."""
    grouped = _by_customer(found)
    open_tickets: dict[int, Ticket] = {}
    for ticket in (
        await Ticket.filter(
            customer_id__in=list(grouped),
            source="keyword",
            status__in=[TicketStatus.OPEN, TicketStatus.IN_PROGRESS],
        )
        .using_db(conn)
        .order_by("created_at")
    ):
        open_tickets[int(str(ticket.customer_id))] = ticket  # the newest one per customer
    changed: list[Ticket] = []
    now = datetime.now(UTC)
    for customer_id, group in grouped.items():
        urgent = any(hits.urgent for _, hits in group)
        existing = open_tickets.get(customer_id)
        if existing is None:
            ticket = await _open_ticket(bot, customers[customer_id], *group[0], urgent, conn)
            group = group[1:]
            if not group:
                continue
        else:
            ticket = existing
            if urgent:
                ticket.priority = TicketPriority.URGENT
        for message, _ in group:
            ticket.description = (ticket.description + "\n" + message.text)[:8000]
        ticket.updated_at = now
        changed.append(ticket)
    if changed:
        await Ticket.bulk_update(changed, fields=["description", "priority", "updated_at"], using_db=conn)


async def _open_ticket(
    bot: Services, customer: Customer, message: ArchivedMessage, hits: Hits, urgent: bool, conn: BaseDBAsyncClient
) -> Ticket:
    words = "、".join(hits.ticket)
    quote = _quote(message.text)
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
    release = release_time(bot.clock.now(), bot.settings)
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
    return ticket

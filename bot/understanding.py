"""Understanding: text → (intent, slots), without side effects.

The matchers come from the capabilities (``bot.capability``): commands are tried first (a command word at the
start of the line, Chinese or English; the first command whose word matches decides, or hands the line on to
free phrasing), then the phrase matchers in order of priority; a line no matcher takes is ``unknown``. The
vocabulary of customer and staff names is loaded from the database by ``refresh`` so that reading itself is
synchronous and fast; ``parse`` never writes anything. Only the first ``UNDERSTOOD_CHARS`` characters decide what a
text means, so that reading a pasted report costs what reading a command costs; a note that runs past them is
completed with the rest of the text (``completed_notes``), so it is kept whole.

Intents and slots (the contract of ``crmbot parse``):

=================  ==========================================================================================
intent             slots
=================  ==========================================================================================
help               —
create_customer    customer (the name as typed)
show_customer      customer
follow_up          customer, content, next_at
create_ticket      customer, content, priority (normal|urgent, always present)
update_ticket      ticket_id (int), status (in_progress|resolved|closed), content (resolution note)
search             query, customer, since
remind             at, content, customer
set_stage          customer, stage (lead|intent|proposal|quote|negotiation|won|lost)
set_grade          customer, grade (A|B|C)
tag                customer, add, remove (lists of tags)
transfer           customer, to_staff (staff name)
request_discount   customer, discount (fraction paid: 85折 → 0.85, 优惠15% → 0.85), amount (yuan), reason
approve / reject   approval_id ("AP12"), reason
withdraw           approval_id
nps_report         period
history            customer, field (stage|grade|tags|owner_id, when named): who changed what (操作记录 华为,
                   谁改了华为的阶段); read only
clarify            customer, options: a list of ``{"intent": …, "slots": {…}}`` readings (follow_up, show_customer,
                   search) the bot asks the rep to choose from with a number; nothing is written until they do
unsupported        action (删除客户|合并客户), customer: something the bot does not do; it says what it can do
unknown            —
=================  ==========================================================================================

No write without evidence: a write intent (follow_up, create_ticket, set_stage, transfer, request_discount, remind
…) needs a command word or a cue for it (跟进了, 拜访了, a fault, 申请, 提醒我 …), not just a customer's name. A
question (谁, 什么, 吗, ？, 有没有 …) is never a write unless another clause of the line states one: it is read as
show_customer, search (what was said in the chats), history, or a clarifying question.

Value formats:

- ``to_staff`` may be 我 (把恒力液压转给我): the dispatcher reads it as the sender.
- ``customer`` is the customer's name as stored when what was typed means exactly one customer (exact name,
  alias, short form such as 恒力液压 for 恒力液压有限公司, or a unique prefix); otherwise the text as typed,
  which the customer-resolving step resolves further (fuzzy match, numbered choices).
- ``next_at``, ``at`` and ``since`` are ISO 8601 in the configured timezone with its offset, to the second,
  e.g. ``2026-11-25T09:00:00+08:00``. A day without a time of day means 09:00; ``since`` starts at 00:00.
- ``period`` is a string for calendar periods — ``"2026-11"`` (a month: 本月, 上个月, 10月), ``"2026-Q3"``
  (a quarter: 本季度, 上季度, Q3), ``"2026"`` (a year: 今年, 去年) — or for any other range (近3个月, 本周)
  an object ``{"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"}`` with both days included. No period mentioned →
  no ``period`` slot (the report picks its default).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot import sql
from bot.nlu.reading import Command, Phrase, Reading, Result, Slots
from bot.nlu.text import clean, normalize
from bot.nlu.timeparse import TimeParser
from bot.nlu.vocabulary import Vocabulary
from models.customers import Customer
from models.staff import Staff


@dataclass(frozen=True, slots=True)
class Parsed:
    intent: str
    slots: dict[str, Any] = field(default_factory=dict)

    def as_json(self, text: str) -> dict[str, Any]:
        return {"text": text, "intent": self.intent, "slots": self.slots}


UNKNOWN = Parsed("unknown")

# How much of a message decides what it means. The longest command or phrasing people type is well under a hundred
# characters (a discount request with its reason, a follow-up with the next date); whatever follows is content.
# Reading is linear in the text, but its constant (jieba, time expressions) is a few microseconds per character, so
# a 30 KB paste read whole would hold the event loop for a noticeable time; read only up to here, it costs what a
# long command costs.
UNDERSTOOD_CHARS = 500
# Slots that carry the free text of a note to the end of the line: a note longer than ``UNDERSTOOD_CHARS`` is
# completed with the rest of the message, so a long follow-up is kept whole.
NOTE_SLOTS = ("content", "reason")
_NOTE_END = 8  # the characters of a note's end looked for at the end of what was read


class Understanding:
    def __init__(self, tz: ZoneInfo, commands: Iterable[Command] = (), phrases: Iterable[Phrase] = ()) -> None:
        self.tz = tz
        self.times = TimeParser(tz)
        self.vocabulary = Vocabulary.build([], [])
        self.commands = sorted(commands, key=lambda c: c.order)
        self.phrases = sorted(phrases, key=lambda p: p.order)
        self._version: int | None = None  # ``vocabulary_version`` when the names were loaded
        # Counts changes of the names known: a reading done before a change may need doing again.
        self.generation = 0

    async def refresh(self) -> None:
        """Reload customer and staff names from the database."""
        version = await _vocabulary_version()  # read first: a change committed meanwhile is loaded again later
        customers = [(str(n), list(a or [])) for n, a in await Customer.all().values_list("name", "aliases")]
        staff = [str(n) for n in await Staff.filter(active=True).values_list("name", flat=True)]
        # Built in a worker thread: with many customers the matcher takes a while, which on the event loop would
        # hold up acknowledgements.
        vocabulary = await asyncio.to_thread(Vocabulary.build, customers, staff)
        self.vocabulary = vocabulary
        self.generation += 1
        self._version = version

    def load(self, customers: list[tuple[str, list[str]]], staff: list[str]) -> None:
        """Use these customer names (with aliases) and staff names."""
        self.vocabulary = Vocabulary.build(customers, staff)
        self.generation += 1

    async def ensure_fresh(self) -> None:
        """Refresh when customers or staff names changed since the last load (here, by an import, or by another
        instance): database triggers raise ``vocabulary_version`` with every such change, in its transaction, so
        one primary-key read tells."""
        if self._version is None or await _vocabulary_version() != self._version:
            await self.refresh()

    def learn_customer(self, name: str, aliases: list[str] | None = None) -> None:
        """Make a customer created just now recognizable at once."""
        self.vocabulary.learn_customer(name, aliases or [])
        self.generation += 1

    def warm_up(self) -> None:
        """Load jieba's dictionary and jionlp's tables now rather than on the first message."""
        self.vocabulary.words("预热")
        self.times.warm_up()

    def resolve_customer(self, text: str) -> str:
        """The stored name for an exact name, alias, short form or unique prefix, else the text as typed."""
        return self.vocabulary.stored_or_typed(text)

    def parse(self, text: str, now: datetime) -> Parsed:
        """What ``text`` means, decided by its first ``UNDERSTOOD_CHARS`` characters; a note running past them
        (``NOTE_SLOTS``) is completed with the rest of the text."""
        head, rest = text[:UNDERSTOOD_CHARS], text[UNDERSTOOD_CHARS:]
        try:
            intent, slots = self.read(head, now)
        except (ValueError, IndexError, KeyError, OverflowError):
            # Odd input must never take the bot down; it is simply not understood.
            return UNKNOWN
        if rest:
            slots = completed_notes(slots, head, rest)
        return Parsed(intent, slots)

    def next_at(self, text: str, now: datetime) -> str | None:
        """The first future moment ``text`` names (ISO), as a note typed in chat would set the next follow-up."""
        cleaned = normalize(text[:UNDERSTOOD_CHARS])
        if not cleaned:
            return None
        try:
            return Reading(cleaned, now, self.vocabulary, self.times, self._phrased).next_at(cleaned)[0]
        except (ValueError, IndexError, KeyError, OverflowError):
            return None

    def read(self, raw: str, now: datetime) -> Result:
        """The matchers' verdict on ``raw``, without the guard ``parse`` puts around it."""
        text = normalize(raw)
        if not text:
            return "unknown", {}
        reading = Reading(text, now, self.vocabulary, self.times, self._phrased)
        for command in self.commands:
            if m := command.pattern.match(text):
                found = command.match(reading, text[m.end() :].strip())
                if found is not None:
                    return found
                break
        return self._phrased(reading)

    def _phrased(self, reading: Reading) -> Result:
        for phrase in self.phrases:
            if (found := phrase.match(reading)) is not None:
                return found
        return "unknown", {}


async def _vocabulary_version() -> int:
    rows = await sql.default().execute_query_dict("SELECT version FROM vocabulary_version WHERE id = 1")
    return int(rows[0]["version"]) if rows else 0


def completed_notes(slots: Slots, head: str, rest: str) -> Slots:
    """``slots`` with each note that reaches the end of ``head`` (the part read) continued with ``rest``.

    A note is read from the normalized head, so its end is looked for there; what follows it in the head is
    punctuation or particles that trimming took off, and is put back before the rest.
    """
    read = normalize(head)
    completed = dict(slots)
    for name in NOTE_SLOTS:
        note = slots.get(name)
        if not isinstance(note, str) or not note:
            continue
        end = note[-_NOTE_END:]
        at = read.rfind(end)
        if at < 0 or clean(read[at + len(end) :]):
            continue  # the note ends before the end of what was read: the rest is not part of it
        gap = " " if head[-1].isspace() else ""  # normalizing trimmed the space the text was cut at
        completed[name] = clean(note + read[at + len(end) :] + gap + rest)
    return completed

"""Understanding: text → (intent, slots), without side effects.

Commands are tried first (a command word at the start of the line, Chinese or English), then free phrasing
(``bot.nlu.intents``). The vocabulary of customer and staff names is loaded from the database by ``refresh`` so
that parsing itself is synchronous and fast; ``parse`` never writes anything.

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
unknown            —
=================  ==========================================================================================

Value formats:

- ``customer`` is the customer's name as stored when what was typed means exactly one customer (exact name,
  alias, short form such as 恒力液压 for 恒力液压有限公司, or a unique prefix); otherwise the text as typed,
  which the handler resolves further (fuzzy match, numbered choices).
- ``next_at``, ``at`` and ``since`` are ISO 8601 in the configured timezone with its offset, to the second,
  e.g. ``2026-11-25T09:00:00+08:00``. A day without a time of day means 09:00; ``since`` starts at 00:00.
- ``period`` is a string for calendar periods — ``"2026-11"`` (a month: 本月, 上个月, 10月), ``"2026-Q3"``
  (a quarter: 本季度, 上季度, Q3), ``"2026"`` (a year: 今年, 去年) — or for any other range (近3个月, 本周)
  an object ``{"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"}`` with both days included. No period mentioned →
  no ``period`` slot (the report picks its default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.nlu.intents import PhrasingRules
from bot.nlu.timeparse import TimeParser
from bot.nlu.vocabulary import Vocabulary
from models.customers import Customer, PendingChoice
from models.staff import Staff


@dataclass(frozen=True, slots=True)
class Parsed:
    intent: str
    slots: dict[str, Any] = field(default_factory=dict)

    def as_json(self, text: str) -> dict[str, Any]:
        return {"text": text, "intent": self.intent, "slots": self.slots}


UNKNOWN = Parsed("unknown")


class Understanding:
    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self.times = TimeParser(tz)
        self.vocabulary = Vocabulary.build([], [])
        self.rules = PhrasingRules(self.vocabulary, self.times)
        self._stamp: tuple[Any, ...] | None = None

    async def refresh(self) -> None:
        """Reload customer and staff names from the database."""
        customers = [(str(n), list(a or [])) for n, a in await Customer.all().values_list("name", "aliases")]
        staff = [str(n) for n in await Staff.filter(active=True).values_list("name", flat=True)]
        self.load(customers, staff)
        self._stamp = await self._current_stamp()

    def load(self, customers: list[tuple[str, list[str]]], staff: list[str]) -> None:
        """Use these customer names (with aliases) and staff names."""
        self.vocabulary = Vocabulary.build(customers, staff)
        self.rules = PhrasingRules(self.vocabulary, self.times)

    async def _current_stamp(self) -> tuple[Any, ...]:
        latest = await Customer.all().order_by("-updated_at").first().values_list("updated_at", flat=True)
        return (await Customer.all().count(), latest, await Staff.all().count())

    async def ensure_fresh(self) -> None:
        """Refresh when customers or staff changed since the last load (an import, another instance)."""
        if self._stamp is None or await self._current_stamp() != self._stamp:
            await self.refresh()

    def learn_customer(self, name: str, aliases: list[str] | None = None) -> None:
        """Make a customer created just now recognizable at once."""
        self.vocabulary.learn_customer(name, aliases or [])

    def warm_up(self) -> None:
        """Load jieba's dictionary and jionlp's tables now rather than on the first message."""
        self.vocabulary.words("预热")
        self.times.warm_up()

    def resolve_customer(self, text: str) -> str:
        """The stored name for an exact name, alias, short form or unique prefix, else the text as typed."""
        return self.vocabulary.stored_or_typed(text)

    def candidates(self, text: str) -> tuple[str, ...]:
        """Every stored name ``text`` may mean (exact, alias, short form, prefix)."""
        return self.vocabulary.resolve(text)

    def parse(self, text: str, now: datetime) -> Parsed:
        try:
            intent, slots = self.rules.parse(text, now)
        except (ValueError, IndexError, KeyError, OverflowError):
            # Odd input must never take the bot down; it is simply not understood.
            return UNKNOWN
        return Parsed(intent, slots)


async def pick_choice(staff_id: int, text: str, now: datetime, conn: Any = None) -> Parsed | None:
    """A reply such as "2" to a numbered question the bot asked this staff member (stored in ``PendingChoice``):
    the original intent with the chosen option filled in. None when the text is not such an answer."""
    text = text.strip()
    if not text.isdigit() or len(text) > 2:
        return None
    row = await PendingChoice.filter(staff_id=staff_id).using_db(conn).first()
    if row is None:
        return None
    if row.expires_at <= now:
        await PendingChoice.filter(id=row.id).using_db(conn).delete()
        return None
    index = int(text) - 1
    options = list(row.options or [])
    if not 0 <= index < len(options):
        return None
    await PendingChoice.filter(id=row.id).using_db(conn).delete()
    return Parsed(row.intent, {**(row.slots or {}), row.slot: options[index]})

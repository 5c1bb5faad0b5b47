"""Understanding: text → (intent, slots), without side effects.

Commands are tried first (a command word at the start of the line), then free phrasing. The vocabulary of
customer and staff names is loaded from the database by ``refresh`` so that parsing itself is synchronous and
fast; ``parse`` never writes anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from models.customers import Customer
from models.staff import Staff


@dataclass(frozen=True, slots=True)
class Parsed:
    intent: str
    slots: dict[str, Any] = field(default_factory=dict)

    def as_json(self, text: str) -> dict[str, Any]:
        return {"text": text, "intent": self.intent, "slots": self.slots}


UNKNOWN = Parsed("unknown")

_HELP = re.compile(r"^\s*(帮助|help|菜单|怎么用|\?|？)\s*$", re.IGNORECASE)
_SHOW_CUSTOMER = re.compile(r"^\s*(?:客户|查看|查|看看|show|customer)\s*[:：]?\s*(?P<customer>\S.*?)\s*$", re.I)


@dataclass
class Vocabulary:
    """Names the parser must recognize, as stored: customers (with aliases) and staff."""

    customers: dict[str, str] = field(default_factory=dict)  # any name or alias → stored name
    staff: set[str] = field(default_factory=set)


class Understanding:
    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self.vocabulary = Vocabulary()

    async def refresh(self) -> None:
        """Reload customer and staff names from the database."""
        vocab = Vocabulary()
        for name, aliases in await Customer.all().values_list("name", "aliases"):
            vocab.customers[name] = name
            for alias in aliases or []:
                vocab.customers.setdefault(alias, name)
        vocab.staff = {str(n) for n in await Staff.all().values_list("name", flat=True)}
        self.vocabulary = vocab

    def resolve_customer(self, text: str) -> str:
        """The stored name for an exact name or alias, else the text as typed (the handler resolves further)."""
        return self.vocabulary.customers.get(text.strip(), text.strip())

    def parse(self, text: str, now: datetime) -> Parsed:
        if _HELP.match(text):
            return Parsed("help")
        if m := _SHOW_CUSTOMER.match(text):
            return Parsed("show_customer", {"customer": self.resolve_customer(m["customer"])})
        return UNKNOWN

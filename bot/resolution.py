"""Which customer a rep means, and the numbered questions the bot asks when it cannot tell.

Resolution goes exact name → alias → prefix (恒力液压 → 恒力液压有限公司) → short form / contained → fuzzy.
Several matches → a numbered question stored in the database (``PendingChoice``), answered by replying "2"
(``pick_choice``, which hands the original intent back with the chosen option filled in). The same question can
choose an intent (``ask_intent``: record a follow-up, show the profile, search the chats, each with its slots),
for a line that gave no evidence of what the rep wants; and "我" in a line means its sender (``as_sender``).
"""

from __future__ import annotations

import difflib
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from bot.nlu.vocabulary import short_forms
from bot.types import Reply
from bot.understanding import Parsed
from models.customers import Customer, PendingChoice
from models.staff import Staff

CHOICE_TTL = timedelta(minutes=30)
INTENT_SLOT = "intent"  # a question whose options are whole readings ({"intent", "slots"}), not customer names
_SELF = {"我", "我自己", "自己", "本人"}


async def _all_names() -> list[tuple[int, str, list[str]]]:
    return [(int(i), str(n), list(a or [])) for i, n, a in await Customer.all().values_list("id", "name", "aliases")]


async def lookup_customer(name: str) -> tuple[Customer | None, list[str]]:
    """(customer, []) when ``name`` means exactly one; (None, several names) when ambiguous; (None, []) if none."""
    name = name.strip()
    if not name:
        return None, []
    if customer := await Customer.get_or_none(name=name):
        return customer, []
    rows = await _all_names()
    for stage in (
        lambda n, a: name in a,  # alias
        lambda n, a: n.startswith(name),  # prefix
        lambda n, a: name in short_forms(n) or any(x.startswith(name) for x in a),  # 恒力 → 恒力液压有限公司
        lambda n, a: name in n,  # contained
    ):
        hits = [(i, n) for i, n, a in rows if stage(n, a)]
        if len(hits) == 1:
            return await Customer.get(id=hits[0][0]), []
        if hits:
            return None, sorted(n for _, n in hits)[:9]
    return None, []


async def find_customer(name: str) -> tuple[Customer | None, list[str]]:
    """The customer named (exactly, by alias or by unique prefix), or None and up to five close names."""
    customer, several = await lookup_customer(name)
    if customer is not None:
        return customer, []
    return None, several[:5] if several else await close_names(name)


async def alias_holder(name: str) -> Customer | None:
    """The customer that has ``name`` as an alias."""
    holders = [cid for cid, _, aliases in await _all_names() if name in aliases]
    return await Customer.get(id=holders[0]) if holders else None


async def close_names(name: str, limit: int = 5) -> list[str]:
    """Stored customer names closest to ``name`` (by name or alias, sequence similarity)."""
    scored: list[tuple[float, str]] = []
    for _, stored, aliases in await _all_names():
        best = max(difflib.SequenceMatcher(None, name, s).ratio() for s in (stored, *aliases, *short_forms(stored)))
        if best >= 0.34:
            scored.append((-best, stored))
    return [s for _, s in sorted(scored)[:limit]]


def not_found(name: str, suggestions: list[str]) -> Reply:
    if suggestions:
        return Reply(f"没有找到客户「{name}」。您是不是要找：" + "、".join(suggestions) + "？")
    return Reply(f"没有找到客户「{name}」。可以发送「新建客户 {name}」先建档。")


async def resolve(
    staff_id: int, slots: dict[str, Any], intent: str, now: datetime, conn: BaseDBAsyncClient | None
) -> Customer | Reply:
    """The customer in ``slots``, or the reply to send instead: not found (close matches) or a numbered choice."""
    name = str(slots.get("customer") or "").strip()
    if not name:
        return Reply("请告诉我是哪个客户，例如「客户 华为」。")
    customer, several = await lookup_customer(name)
    if customer is not None:
        return customer
    if not several:
        return not_found(name, await close_names(name))
    await _ask(staff_id, intent, dict(slots), "customer", several, now, conn)
    lines = [f"「{name}」对应多个客户，您指的是哪一个？请回复序号："]
    lines.extend(f"{i}. {option}" for i, option in enumerate(several, 1))
    return Reply("\n".join(lines))


async def _ask(
    staff_id: int,
    intent: str,
    slots: dict[str, Any],
    slot: str,
    options: list[Any],
    now: datetime,
    conn: BaseDBAsyncClient | None,
) -> None:
    """Keep a numbered question for ``staff_id`` (replacing any earlier one) until it is answered or expires."""
    await PendingChoice.filter(staff_id=staff_id).using_db(conn).delete()
    await PendingChoice.create(
        staff_id=staff_id,
        intent=intent,
        slots=slots,
        slot=slot,
        options=options,
        expires_at=now.astimezone(UTC) + CHOICE_TTL,
        using_db=conn,
    )


async def ask_intent(staff_id: int, options: list[Parsed], now: datetime, conn: BaseDBAsyncClient | None) -> None:
    """Ask which of these readings was meant; the answer "2" hands back the second one, slots and all."""
    readings = [{"intent": o.intent, "slots": o.slots} for o in options]
    await _ask(staff_id, INTENT_SLOT, {}, INTENT_SLOT, readings, now, conn)


def as_sender(parsed: Parsed, staff: Staff | None) -> Parsed:
    """``parsed`` with "我" (把恒力液压转给我) replaced by the sender's name."""
    if staff is None or str(parsed.slots.get("to_staff") or "").strip() not in _SELF:
        return parsed
    return Parsed(parsed.intent, {**parsed.slots, "to_staff": staff.name})


async def pick_choice(staff_id: int, text: str, now: datetime, conn: BaseDBAsyncClient | None = None) -> Parsed | None:
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
    if row.slot == INTENT_SLOT:
        chosen = options[index]
        return Parsed(str(chosen["intent"]), dict(chosen["slots"]))
    return Parsed(row.intent, {**(row.slots or {}), row.slot: options[index]})

"""The toolkit scheduled rules are written with: one indexed SQL query per rule that skips subjects which already
fired for the same period (an anti-join on ``rule_firing``), so a pass costs the same whatever the number of
customers; and the loading of the rows it found.

Keys are ``rule:subject:threshold:period``, the period being the value that restarts the clock (the last
follow-up, the deal, the due time), so a new follow-up restarts the ladder.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bot import sql
from bot.context import RuleContext
from models.customers import Customer
from models.staff import Staff

# At most this many subjects per rule and pass: a backlog (first start, long downtime) drains over a few minutes
# instead of one huge transaction. ``crmbot jobs run`` is one pass, like one minute of the scheduler.
BATCH = 1000


async def select(ctx: RuleContext, query: str, params: list[Any]) -> list[dict[str, Any]]:
    """Run a read query written with ``?`` placeholders and ending in ``LIMIT ?`` on either database.

    A full sweep takes at most ``BATCH`` rows per rule and pass (and asks the engine for another sweep when it
    hit that); an incremental pass only sees a few minutes of thresholds and takes them all.
    """
    limit = BATCH if ctx.since is None else 1_000_000_000
    rows = await sql.select(sql.default(), query, [*params, limit])
    if len(rows) >= limit:
        ctx.more = True
    return rows


def crossed(ctx: RuleContext, column: str, after: timedelta = timedelta(0)) -> tuple[str, list[Any]]:
    """SQL for: the threshold ``column + after`` has been reached by now (and, in an incremental pass, only
    since the last pass) - a range on the column's index."""
    if ctx.since is None:
        return f"{column} <= ?", [utc(ctx.now - after)]
    return f"{column} <= ? AND {column} > ?", [utc(ctx.now - after), utc(ctx.since - after)]


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def not_fired(rule: str, subject: str, period: str) -> str:
    """SQL: no firing of ``rule`` for this subject and period yet (probes the (rule, subject_id, period_at) index)."""
    return (
        f"NOT EXISTS (SELECT 1 FROM rule_firing f WHERE f.rule = '{rule}' "
        f"AND f.subject_id = {subject} AND f.period_at = {period})"
    )


def ids(rows: Iterable[dict[str, Any]]) -> list[int]:
    return [int(r["id"]) for r in rows]


async def customers_by_id(customer_ids: list[int]) -> dict[int, Customer]:
    if not customer_ids:
        return {}
    return {c.id: c for c in await Customer.filter(id__in=customer_ids).select_related("owner").order_by("id")}


async def staff_by_id(staff_ids: Iterable[int | None]) -> dict[int, Staff]:
    wanted = {s for s in staff_ids if s is not None}
    if not wanted:
        return {}
    return {s.id: s for s in await Staff.filter(id__in=wanted)}


def short(customer: Customer) -> str:
    """The name a rep types: the first alias when there is one."""
    aliases = customer.aliases or []
    return str(aliases[0]) if aliases else customer.name


def iso(moment: datetime | date | None) -> str:
    return moment.isoformat() if moment is not None else "none"


def local_time(moment: datetime, ctx: RuleContext) -> str:
    return moment.astimezone(ctx.settings.tz).strftime("%m-%d %H:%M")


def as_moment(value: Any) -> datetime:
    """A timestamp from a raw query: PostgreSQL returns datetimes, SQLite the ISO text Tortoise stored."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def follow_up_action(customer: Customer) -> str:
    """The line of a push about a customer that says how to log the contact it asks for."""
    return f"联系后请记录跟进，例如回复：`跟进 {short(customer)} 电话沟通了需求 下周三再联系`"

"""The scheduled-rules engine: each rule is a database query that yields ``Firing`` objects; the engine pushes them
once.

A rule lives in the capability that owns its subject, registered with ``@capability.rule(order=...)``; the
registry lists them in order (``Services.scheduled_rules``). ``run_rules(bot, now)`` evaluates every rule once for
``now`` in one
transaction: it records each firing by its unique key (insert-ignore, so a key fires once however often a rule
yields it, across restarts and instances), runs the side effect of the keys that are new, holds pushes during
quiet hours (except urgent ones), digests several pushes for one person into one message, and queues them in
the outbox. On PostgreSQL a transaction-level advisory lock lets only one instance do a pass at a time.
Firings a rule puts in a ``Batch`` arrive as one summary once a pass makes too many for one person; a digest that
lists only some pushes names the command that lists them all; a firing marked ``alone`` (a report) or carrying
attachments is never digested; a dry run does the whole pass and rolls it back.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot import sql
from bot.config import Settings
from bot.context import Batch, Firing, Rule, RuleContext, Services
from bot.types import Reply
from models.outbox import OutboxMessage, OutboxStatus
from models.reminders import RuleCursor, RuleFiring
from models.staff import Staff

log = logging.getLogger(__name__)

# pg_try_advisory_xact_lock key of a rules pass: any constant shared by every instance ("crmrules").
ADVISORY_LOCK_KEY = 0x63726D72756C6573
KEY_MAX = 191
INSERT_BATCH = 500


CURSOR = "rules"
# Passes overlap by this much, so a threshold written a little in the past (a slow transaction, clock skew
# between instances) is still seen by the next incremental pass.
OVERLAP = timedelta(minutes=10)


def stored_key(key: str) -> str:
    """The key as stored: keys longer than the column keep a readable prefix and a hash of the whole."""
    if len(key) <= KEY_MAX:
        return key
    return key[: KEY_MAX - 41] + "#" + hashlib.sha1(key.encode()).hexdigest()


def subject_of(key: str) -> int | None:
    parts = key.split(":", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None


def release_time(now: datetime, settings: Settings) -> datetime:
    """When a non-urgent push made at ``now`` may go out: now, or the end of the quiet hours it falls in."""
    start, end = settings.rules.quiet_hours_start, settings.rules.quiet_hours_end
    if start == end:
        return now
    tz = settings.tz
    local = now.astimezone(tz)
    t = local.time()
    quiet = (t >= start or t < end) if start > end else (start <= t < end)
    if not quiet:
        return now
    day = local.date() if t < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=tz).astimezone(UTC)


DIGEST_FULL = 3  # up to this many pushes are digested in full, more become one line each
DIGEST_LINES = 10  # at most this many one-line items, so the digest fits one WeCom message (2048 bytes)
# The command that lists every push of the last day (``handlers.ladder``): a digest that leaves items out says it.
LIST_COMMAND = "提醒清单"


def digest_text(texts: Sequence[str]) -> str:
    """One message for several pushes to the same person: in full when few, one line each (and a tally) else."""
    if len(texts) == 1:
        return texts[0]
    head = f"**您有 {len(texts)} 条待办提醒**"
    if len(texts) <= DIGEST_FULL:
        return head + "\n\n" + "\n\n".join(f"**{i}.** {text}" for i, text in enumerate(texts, 1))
    lines = [head]
    lines.extend(f"{i}. {one_line(text)}" for i, text in enumerate(texts[:DIGEST_LINES], 1))
    rest: dict[str, int] = {}
    for text in texts[DIGEST_LINES:]:
        title = _parts(text)[0]
        rest[title] = rest.get(title, 0) + 1
    if rest:
        lines.append(
            "另有 " + "、".join(f"{title} {n} 条" for title, n in rest.items()) + f"，发送「{LIST_COMMAND}」查看全部"
        )
    action = _parts(texts[0])[2]
    if action:
        lines.append(action)
    return "\n".join(lines)


def one_line(text: str) -> str:
    """A push as one line of a list: its title and its quoted details."""
    title, details, _ = _parts(text)
    return f"{title}：{'，'.join(details)}" if details else title


def _parts(text: str) -> tuple[str, list[str], str]:
    """A push's title (first line), its quoted details, and its action line (the last one with a command)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    title = lines[0].strip("*") if lines else ""
    details = [line[1:].strip() for line in lines[1:] if line.startswith(">")]
    actions = [line for line in lines[1:] if "`" in line]
    return title, details, actions[-1] if actions else ""


def sweep_due(last: datetime | None, now: datetime, settings: Settings) -> bool:
    """A full sweep is due: no pass yet, time went backwards, over a day since the last pass, or the daily sweep
    time (``rules.full_sweep_at``, local) lies between the last pass and now."""
    if last is None or last >= now or now - last >= timedelta(days=1):
        return True
    tz = settings.tz
    local_now = now.astimezone(tz)
    for day in (local_now.date() - timedelta(days=1), local_now.date()):
        moment = datetime.combine(day, settings.rules.full_sweep_at, tzinfo=tz)
        if last < moment <= now:
            return True
    return False


class _DryRun(Exception):
    """Raised at the end of a dry pass so that its transaction rolls back; carries what would have fired."""

    def __init__(self, firings: list[Firing]) -> None:
        super().__init__(f"{len(firings)} firing(s) rolled back")
        self.firings = firings


async def run_rules(
    bot: Services,
    now: datetime,
    rules: Sequence[Rule] | None = None,
    *,
    full: bool = False,
    dry_run: bool = False,
) -> list[Firing]:
    """Evaluate every rule once as of ``now``; return the firings that were new (before digesting).

    Incremental (rules see ``since``, the last pass's now) unless ``full`` or a sweep is due (``sweep_due``);
    a ``full`` pass does not move the scheduler's cursor.
    A ``dry_run`` pass does everything (keys, side effects, outbox rows) inside its transaction and then rolls it
    back: what it returns is what would fire, and nothing is changed.
    Returns an empty list without doing anything when another instance holds the pass (PostgreSQL).
    """
    try:
        fresh = await _pass(bot, now, bot.scheduled_rules if rules is None else rules, full=full, dry_run=dry_run)
    except _DryRun as dry:
        return dry.firings
    if fresh:
        log.info("rules: %d new firing(s) at %s", len(fresh), now.isoformat())
        bot.outbox.wake()
    return fresh


async def _pass(bot: Services, now: datetime, rules: Sequence[Rule], *, full: bool, dry_run: bool) -> list[Firing]:
    async with in_transaction() as conn:
        if not await sql.try_xact_lock(conn, ADVISORY_LOCK_KEY):
            log.info("rules: another instance is running this pass")
            return []
        cursor = await RuleCursor.filter(name=CURSOR).using_db(conn).first()
        last = cursor.at if cursor is not None else None
        since = None if full or sweep_due(last, now, bot.settings) else (last or now) - OVERLAP
        ctx = RuleContext(now=now, settings=bot.settings, bot=bot, since=since)
        firings = await _evaluate(rules, ctx)
        fresh = await _record(firings, now, conn)
        fresh = await _apply(fresh, conn)
        await _deliver(bot, fresh, now, conn)
        if ctx.more or full:
            # More left: the cursor stays so that the next pass sweeps again and picks up the rest. A forced
            # sweep (`crmbot jobs run --now ...`, any moment) leaves the scheduler's cursor alone.
            pass
        elif cursor is None:
            await RuleCursor.bulk_create([RuleCursor(name=CURSOR, at=now)], ignore_conflicts=True, using_db=conn)
        elif now > cursor.at:
            await RuleCursor.filter(name=CURSOR).using_db(conn).update(at=now)
        if dry_run:
            raise _DryRun(fresh)
    return fresh


async def _evaluate(rules: Sequence[Rule], ctx: RuleContext) -> list[Firing]:
    seen: set[str] = set()
    firings: list[Firing] = []
    for rule in rules:
        try:
            async with in_transaction():  # a savepoint: a failing rule does not abort the pass
                produced = await rule(ctx)
        except Exception:
            log.exception("rule %s failed; the other rules still run", getattr(rule, "__name__", rule))
            continue
        for firing in produced:
            firing.key = stored_key(firing.key)
            if firing.key not in seen:
                seen.add(firing.key)
                firings.append(firing)
    return firings


async def _record(firings: list[Firing], now: datetime, conn: BaseDBAsyncClient) -> list[Firing]:
    """Insert every key (ignoring those already there); the keys this run inserted are the new firings."""
    if not firings:
        return []
    run_id = uuid.uuid4().hex
    rows = [
        RuleFiring(
            key=f.key,
            rule=f.rule[:64],
            subject_id=subject_of(f.key),
            period_at=f.period_at,
            staff_id=f.to.id,
            customer_id=f.customer.id if f.customer is not None else None,
            urgent=f.urgent,
            text=f.text,
            run_id=run_id,
            fired_at=now,
        )
        for f in firings
    ]
    await RuleFiring.bulk_create(rows, batch_size=INSERT_BATCH, ignore_conflicts=True, using_db=conn)
    new_keys = {str(k) for k in await RuleFiring.filter(run_id=run_id).using_db(conn).values_list("key", flat=True)}
    return [f for f in firings if f.key in new_keys]


async def _apply(firings: list[Firing], conn: BaseDBAsyncClient) -> list[Firing]:
    """Run each new firing's side effect; one that fails is forgotten (its key too) so it fires next pass."""
    kept = []
    for firing in firings:
        if firing.apply is not None:
            try:
                async with in_transaction():
                    await firing.apply()
            except Exception:
                log.exception("rule %s: side effect of %s failed; will retry", firing.rule, firing.key)
                await RuleFiring.filter(key=firing.key).using_db(conn).delete()
                continue
        kept.append(firing)
    return kept


def batched(firings: list[Firing]) -> list[Firing]:
    """The pushes to deliver: each batch (``Firing.batch``) that grew past its threshold for one person becomes
    one summary in the place of its first firing; everything else as it is."""
    groups: dict[tuple[int, str], tuple[Batch, list[Firing]]] = {}
    for firing in firings:
        if firing.batch is not None:
            groups.setdefault((firing.to.id, firing.batch.kind), (firing.batch, []))[1].append(firing)
    large = [(batch, group) for batch, group in groups.values() if len(group) > batch.threshold]
    summaries = {id(group[0]): _summary(batch, group) for batch, group in large}
    summarized = {id(firing) for _, group in large for firing in group}
    return [summaries.get(id(f), f) for f in firings if id(f) in summaries or id(f) not in summarized]


def _summary(batch: Batch, group: list[Firing]) -> Firing:
    digest = hashlib.sha1("\n".join(f.key for f in group).encode()).hexdigest()[:20]
    key = f"batch:{batch.kind}:{group[0].to.id}:{digest}"
    return Firing(batch.kind, key, group[0].to, batch.summarize(group), urgent=any(f.urgent for f in group))


async def _deliver(bot: Services, firings: list[Firing], now: datetime, conn: BaseDBAsyncClient) -> None:
    groups: dict[tuple[int, bool, datetime], list[Firing]] = {}
    for firing in batched(firings):
        release = now if firing.urgent else release_time(now, bot.settings)
        if firing.alone or firing.attachments:  # a report keeps its own message, held to the morning like any push
            reply = Reply(firing.text, kind="markdown", attachments=firing.attachments)
            await bot.outbox.push(firing.to, reply, f"rule:{firing.key}", not_before=release, using_db=conn)
            continue
        groups.setdefault((firing.to.id, firing.urgent, release), []).append(firing)
    for (_, _, release), group in groups.items():
        staff = group[0].to
        texts = [f.text for f in group]
        if release > now:
            await _hold(bot, staff, texts, release, conn)
            continue
        if len(group) == 1:
            dedupe = f"rule:{group[0].key}"
        else:
            digest = hashlib.sha1("\n".join(f.key for f in group).encode()).hexdigest()[:20]
            dedupe = f"rules:{staff.id}:{digest}"
        await bot.outbox.push(staff, Reply.markdown(digest_text(texts)), dedupe, not_before=now, using_db=conn)


async def _hold(bot: Services, staff: Staff, texts: list[str], release: datetime, conn: BaseDBAsyncClient) -> None:
    """Pushes made during quiet hours join one morning digest per person."""
    dedupe = f"rules-held:{staff.id}:{release.strftime('%Y%m%dT%H%M')}"
    held = await OutboxMessage.filter(dedupe_key=dedupe, status=OutboxStatus.PENDING).using_db(conn).first()
    if held is not None:
        items = [*_items_of(held.payload), *texts]
    else:
        if await OutboxMessage.filter(dedupe_key=dedupe).using_db(conn).exists():
            dedupe = f"{dedupe}:{uuid.uuid4().hex[:8]}"  # the morning digest already left: a new one
        await bot.outbox.push(staff, Reply.markdown(digest_text(texts)), dedupe, not_before=release, using_db=conn)
        items = texts
    payload = {**Reply.markdown(digest_text(items)).to_payload(), "items": items}
    await OutboxMessage.filter(dedupe_key=dedupe).using_db(conn).update(payload=payload)


def _items_of(payload: dict[str, Any]) -> list[str]:
    items = payload.get("items")
    return [str(i) for i in items] if isinstance(items, list) else [str(payload.get("text", ""))]

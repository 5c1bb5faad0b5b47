"""Scheduled jobs: APScheduler runs every rule from the database once a minute.

Rules live in the handler modules that own their subject (``handlers.RULES``); ``bot.rules.run_rules`` evaluates
them. This module owns the scheduler's lifecycle: one ``AsyncIOScheduler`` per app, one interval job that never
overlaps itself (``max_instances=1``) and collapses missed runs into one (``coalesce``). Several instances may run
it against one PostgreSQL database: the engine's advisory lock lets one of them do each pass, and the unique
firing keys keep every push single whatever happens.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.clock import Clock
from bot.pipeline import Bot
from bot.rules import Firing, run_rules

log = logging.getLogger(__name__)

SCHEDULER = web.AppKey("scheduler", AsyncIOScheduler)
RULES_JOB = "rules"


async def rules_tick(bot: Bot, clock: Clock) -> list[Firing]:
    """One scheduled pass of every rule as of the clock's now; errors are logged, the next minute tries again."""
    try:
        return await run_rules(bot, clock.now())
    except Exception:
        log.exception("rules pass failed")
        return []


def make_scheduler(bot: Bot, clock: Clock) -> AsyncIOScheduler:
    """A scheduler with the rules job every ``rules.engine_interval_seconds`` (the first run one interval in)."""
    settings = bot.settings
    scheduler = AsyncIOScheduler(timezone=str(settings.timezone))
    interval = settings.rules.engine_interval_seconds
    scheduler.add_job(
        rules_tick,
        IntervalTrigger(seconds=interval),
        args=[bot, clock],
        id=RULES_JOB,
        name="evaluate scheduled rules",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=interval,
    )
    every = settings.wecom.archive_pull_interval_seconds  # chat-archive pulls registered by integrations
    for i, pull in enumerate(bot.archive_pullers if every > 0 else []):
        scheduler.add_job(pull, IntervalTrigger(seconds=every), id=f"archive_pull_{i}", max_instances=1, coalesce=True)
    return scheduler


async def scheduler_context(app: web.Application) -> AsyncIterator[None]:
    from bot.app import BOT, CLOCK

    scheduler = make_scheduler(app[BOT], app[CLOCK])
    app[SCHEDULER] = scheduler
    scheduler.start()
    yield
    scheduler.shutdown(wait=False)

"""Scheduled jobs: APScheduler runs every scheduled rule from the database once a minute, and pulls the chat
archives their platforms registered at their own interval.

The rules live in the capabilities that own their subjects; ``bot.scheduled.run_rules`` evaluates them. This
module owns the scheduler's lifecycle: one ``AsyncIOScheduler`` per app, jobs that never overlap themselves
(``max_instances=1``) and collapse missed runs into one (``coalesce``). Several instances may run it against one
PostgreSQL database: the engine's advisory lock lets one of them do each pass, and the unique firing keys keep
every push single whatever happens.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.clock import Clock
from bot.context import Firing
from bot.files import sweep
from bot.keys import BOT, CLOCK
from bot.pipeline import LEFT_BEHIND, Bot
from bot.scheduled import run_rules

log = logging.getLogger(__name__)

SCHEDULER = web.AppKey("scheduler", AsyncIOScheduler)
RULES_JOB = "rules"
LEFT_BEHIND_JOB = "left_behind"
LEFT_BEHIND_EVERY_SECONDS = 60
FILES_JOB = "files_sweep"
FILES_SWEEP_EVERY_SECONDS = 3600


async def rules_tick(bot: Bot, clock: Clock) -> list[Firing]:
    """One scheduled pass of every rule as of the clock's now; errors are logged, the next minute tries again."""
    try:
        return await run_rules(bot, clock.now())
    except Exception:
        log.exception("rules pass failed")
        return []


async def handle_left_behind(bot: Bot, older_than: timedelta = LEFT_BEHIND) -> int:
    """Messages stored and acknowledged but left unhandled while running (their batch failed with the database)."""
    try:
        return await bot.recover(left_behind=older_than)
    except Exception:
        log.exception("looking for messages left unhandled failed")
        return 0


async def sweep_files(clock: Clock) -> int:
    """Delete the stored files past their expiry (``bot/files.py``); errors are logged, the next hour tries again."""
    try:
        return await sweep(clock.now())
    except Exception:
        log.exception("sweeping expired files failed")
        return 0


def make_scheduler(bot: Bot, clock: Clock) -> AsyncIOScheduler:
    """A scheduler with the rules job every ``rules.engine_interval_seconds`` (the first run one interval in), the
    search for messages left unhandled every minute, the sweep of expired files every hour, and each archive
    source's pull."""
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
    scheduler.add_job(
        handle_left_behind,
        IntervalTrigger(seconds=LEFT_BEHIND_EVERY_SECONDS),
        args=[bot],
        id=LEFT_BEHIND_JOB,
        name="handle messages left unhandled",
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        sweep_files,
        IntervalTrigger(seconds=FILES_SWEEP_EVERY_SECONDS),
        args=[clock],
        id=FILES_JOB,
        name="delete expired files",
        max_instances=1,
        coalesce=True,
    )
    for i, source in enumerate(bot.archive_sources):
        if source.every_seconds > 0:
            scheduler.add_job(
                source.pull,
                IntervalTrigger(seconds=source.every_seconds),
                id=f"archive_pull_{i}",
                max_instances=1,
                coalesce=True,
            )
    return scheduler


async def scheduler_context(app: web.Application) -> AsyncIterator[None]:
    scheduler = make_scheduler(app[BOT], app[CLOCK])
    app[SCHEDULER] = scheduler
    scheduler.start()
    yield
    scheduler.shutdown(wait=False)

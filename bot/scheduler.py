"""Scheduled jobs: APScheduler runs every rule from the database once a minute.

Rules live in the handler modules that own their subject; this module owns the scheduler's lifecycle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

SCHEDULER = web.AppKey("scheduler", AsyncIOScheduler)


async def scheduler_context(app: web.Application) -> AsyncIterator[None]:
    from bot.app import SETTINGS

    scheduler = AsyncIOScheduler(timezone=str(app[SETTINGS].timezone))
    app[SCHEDULER] = scheduler
    scheduler.start()
    yield
    scheduler.shutdown(wait=False)

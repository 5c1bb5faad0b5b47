"""The app factory: ``create_app(settings)`` wires the database, the HTTP client session, the bot core, the
outbox dispatcher and the scheduler as cleanup contexts, and mounts each integration's routes.

Every resource lives on the app under a typed ``web.AppKey``; nothing is global.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from bot import survey
from bot.channels import Outbox
from bot.clock import Clock
from bot.config import Settings
from bot.db import close_database, open_database
from bot.metrics import METRICS, Metrics, count_response, metrics_view
from bot.pipeline import Bot, Inbox

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
OUTBOX = web.AppKey("outbox", Outbox)
BOT = web.AppKey("bot", Bot)
HTTP = web.AppKey("http", aiohttp.ClientSession)
SERVICES = web.AppKey("services", dict)  # integration-owned objects (API clients), by name

Setup = Callable[[web.Application], None]


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    run_dispatcher: bool = True,
    run_scheduler: bool = True,
) -> web.Application:
    """Build the web application. ``run_dispatcher``/``run_scheduler`` are off for one-shot CLI commands."""
    from handlers import ROUTERS
    from integrations import console, dingtalk, wecom

    clock = clock or Clock()
    app = web.Application(client_max_size=settings.server.max_body_bytes)
    app.on_response_prepare.append(count_response)
    # Acknowledging callbacks comes first: handling and sending wait while a burst arrives (never for long).
    inbox = Inbox()
    outbox = Outbox(settings.outbox, clock, pace=inbox.yield_to_ingest)
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[OUTBOX] = outbox
    app[BOT] = Bot(settings, clock, outbox, ROUTERS, inbox)
    app[SERVICES] = {}
    app[METRICS] = Metrics()

    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_http_session)
    for integration in (wecom, dingtalk, console):
        integration.setup(app)
    app.cleanup_ctx.append(_bot)
    if run_dispatcher:
        app.cleanup_ctx.append(_dispatcher)
    if run_scheduler:
        from bot.scheduler import scheduler_context

        app.cleanup_ctx.append(scheduler_context)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    survey.setup(app)  # GET|POST /nps/{token}: the NPS survey page
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    context = await open_database(app[SETTINGS].database.url)
    await app[METRICS].start()
    yield
    await close_database(context)


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    timeout = aiohttp.ClientTimeout(total=15, connect=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        app[HTTP] = session
        yield


async def _bot(app: web.Application) -> AsyncIterator[None]:
    bot = app[BOT]
    await bot.start()
    recovered = bot.tasks.spawn(bot.recover())
    yield
    await recovered
    await bot.close()


async def _dispatcher(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(app[OUTBOX].run())
    yield
    app[OUTBOX].stop()
    await task
    # Whatever became due during shutdown still leaves (or stays queued for the next start).
    await app[OUTBOX].drain_once()


async def healthz(request: web.Request) -> web.Response:
    from bot.db import db

    status: dict[str, Any] = {"status": "ok"}
    try:
        await db().execute_query("SELECT 1")
    except Exception as exc:  # the database being down is what this endpoint reports
        log.warning("health check: database unavailable: %s", exc)
        return web.json_response({"status": "error", "database": "unavailable"}, status=503)
    status["database"] = "ok"
    return web.json_response(status)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The server's event loop: uvloop where it is installed (Linux, macOS), which makes every request cheaper;
    asyncio's own loop elsewhere."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()

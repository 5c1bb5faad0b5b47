"""The composition root: ``create_app(settings)`` wires the database, the HTTP client session, the bot core, the
outbox dispatcher and the scheduler as cleanup contexts, with every capability (``handlers.CAPABILITIES``) and
every platform (``integrations.PLATFORMS``) registered. ``load_settings`` reads the configuration with every
platform's section.

Every resource lives on the app under a typed ``web.AppKey`` (``bot.keys``); nothing is global.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Any

import aiohttp
from aiohttp import web

from bot import config
from bot import search as search_index
from bot.capability import Capability, Registry
from bot.channels import Outbox
from bot.clock import Clock
from bot.config import Settings
from bot.db import close_database, health, open_database
from bot.files import DOWNLOAD_PATH, download
from bot.identity import Directory
from bot.inbox import Inbox
from bot.integration import Integration, settings_sections
from bot.keys import BOT, CLOCK, HTTP, OUTBOX, SERVING, SETTINGS
from bot.metrics import METRICS, Metrics, count_response, metrics_view
from bot.pipeline import Bot
from handlers import CAPABILITIES
from integrations import PLATFORMS

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 1.0  # a load balancer's probe gets an answer in time, whatever the database does


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """``bot.config.load_settings`` with every platform's section."""
    return config.load_settings(path, sections=settings_sections(PLATFORMS), **overrides)


def settings_class() -> type[Settings]:
    """The settings schema with every platform's section."""
    return config.settings_class(settings_sections(PLATFORMS))


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    run_dispatcher: bool = True,
    run_scheduler: bool = True,
    capabilities: Sequence[Capability] = CAPABILITIES,
    platforms: Sequence[Integration] = PLATFORMS,
) -> web.Application:
    """Build the web application. ``run_dispatcher``/``run_scheduler`` are off for one-shot CLI commands; a served
    app (``run_dispatcher``) takes the role ``[server] role`` gives it: a "web" instance neither handles, sends nor
    runs the rules, a "worker" also handles what other instances stored."""
    clock = clock or Clock()
    role = settings.server.role if run_dispatcher else "all"
    registry = Registry(capabilities)
    app = web.Application(client_max_size=settings.server.max_body_bytes)
    app.on_response_prepare.append(count_response)
    directory = Directory()
    # Acknowledging callbacks comes first: handling and sending wait while a burst arrives (never for long).
    inbox = Inbox(directory)
    outbox = Outbox(settings.outbox, clock, directory, pace=inbox.yield_to_ingest, busy=inbox.busy)
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[OUTBOX] = outbox
    app[BOT] = Bot(settings, clock, outbox, registry, inbox, role=role)
    app[METRICS] = Metrics()
    app[SERVING] = run_dispatcher
    if role == "web":
        run_dispatcher = run_scheduler = False

    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_http_session)
    for platform in platforms:
        platform.setup(app)
    # An app that answers people (served, or the console) knows every customer's name before the first message;
    # a one-shot command learns them only if it reads something (``Understanding.ensure_fresh``): with 100,000
    # customers that is seconds and hundreds of MiB an import, an export or a search never needs.
    app.cleanup_ctx.append(partial(_bot, load_names=run_dispatcher or run_scheduler))
    if run_dispatcher:
        app.cleanup_ctx.append(_dispatcher)
    if role == "worker":
        app.cleanup_ctx.append(_shared_handling)
    if run_scheduler:
        from bot.scheduler import scheduler_context  # start-up time: one-shot commands run no scheduler

        app.cleanup_ctx.append(scheduler_context)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get(DOWNLOAD_PATH, download)
    for route in registry.routes:
        app.router.add_route(route.method, route.path, route.view)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    context = await open_database(app[SETTINGS].database.url)
    await search_index.prepare_partitions(app[CLOCK].now())
    await app[METRICS].start()
    yield
    await close_database(context)


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    timeout = aiohttp.ClientTimeout(total=15, connect=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        app[HTTP] = session
        yield


async def _bot(app: web.Application, *, load_names: bool) -> AsyncIterator[None]:
    bot = app[BOT]
    if load_names:
        await bot.understanding.refresh()
    # What was stored and not handled before a restart (a "web" instance leaves it to the workers).
    recovered = bot.tasks.spawn(bot.recover()) if bot.handles else None
    yield
    if recovered is not None:
        await recovered
    await bot.close()


async def _dispatcher(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(app[OUTBOX].run())
    yield
    app[OUTBOX].stop()
    await task
    # Whatever became due during shutdown still leaves (or stays queued for the next start).
    await app[OUTBOX].drain_once()


async def _shared_handling(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(app[BOT].share_handling(app[SETTINGS].server.handling_poll_seconds))
    yield
    task.cancel()
    await asyncio.wait({task})


async def healthz(request: web.Request) -> web.Response:
    database = await health(HEALTH_TIMEOUT_SECONDS)
    if database != "ok":
        log.warning("health check: database %s", database)
        return web.json_response({"status": "error", "database": database}, status=503)
    return web.json_response({"status": "ok", "database": "ok"})


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The server's event loop: uvloop where it is installed (Linux, macOS), which makes every request cheaper;
    asyncio's own loop elsewhere."""
    try:
        import uvloop  # optional: not on every platform
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()

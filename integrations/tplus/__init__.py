"""用友T+ (Chanjet T+): the order feed the bot pulls every night, for ERPs that cannot call ``POST /erp/orders``.

``setup`` registers, when ``[tplus]`` is configured, a ``TplusFeed`` under ``bot.orderflow.ORDER_FEEDS`` (for
``crmbot erp sync``) and a scheduled check every ``erp.sync_check_seconds`` that pulls once tonight's
``erp.sync_at`` has passed since the last sync; the pulled events take the webhook's path.
"""

from __future__ import annotations

import functools

from aiohttp import web

from bot.context import ArchiveSource
from bot.integration import Integration
from bot.keys import BOT, HTTP, SETTINGS
from bot.orderflow import ORDER_FEEDS, nightly
from integrations.tplus.feed import TplusFeed
from integrations.tplus.settings import NAME, TplusSettings, settings_of


def setup(app: web.Application) -> None:
    settings = settings_of(app)
    if not settings.enabled:
        return
    feed = TplusFeed(settings, lambda: app[HTTP])
    app[ORDER_FEEDS] = [*app.get(ORDER_FEEDS, []), feed]
    every = float(app[SETTINGS].erp.sync_check_seconds)
    app[BOT].archive_sources.append(ArchiveSource(functools.partial(nightly, app[BOT], feed), every))


INTEGRATION = Integration(NAME, setup, TplusSettings)

"""The typed keys under which the app keeps its core resources (``web.AppKey``), apart from the app factory so
that nothing needs to import ``bot.app`` to reach them. An integration or a capability that keeps something of its
own on the app declares its key next to that thing."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from bot.channels import Outbox
from bot.clock import Clock
from bot.config import Settings
from bot.pipeline import Bot

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
OUTBOX = web.AppKey("outbox", Outbox)
BOT = web.AppKey("bot", Bot)
HTTP = web.AppKey("http", aiohttp.ClientSession)
# True when the app runs as a server (``crmbot serve``): long-lived connections are opened only then.
SERVING = web.AppKey("serving", bool)

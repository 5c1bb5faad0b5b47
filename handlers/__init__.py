"""Handlers, one module per capability; each module exposes ``router`` and ``ROUTERS`` lists them all."""

from bot.intents import IntentRouter
from handlers import customers, help

ROUTERS: list[IntentRouter] = [help.router, customers.router]

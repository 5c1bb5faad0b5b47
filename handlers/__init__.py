"""Handlers, one module per capability; each module exposes ``router`` and ``ROUTERS`` lists them all.

A module that owns scheduled rules also exposes ``RULES: list[Rule]`` and is listed in ``RULE_MODULES``;
``RULES`` is every rule of every such module, in order, for the engine in ``bot.rules``.
"""

from types import ModuleType

from bot.intents import IntentRouter
from bot.rules import Rule
from handlers import approvals, customers, followups, help, nps, reminders, search, tickets

ROUTERS: list[IntentRouter] = [
    help.router,
    customers.router,
    nps.router,
    approvals.router,
    reminders.router,
    search.router,
    followups.router,
    tickets.router,
]

RULE_MODULES: list[ModuleType] = [reminders, nps, approvals]

RULES: list[Rule] = [rule for module in RULE_MODULES for rule in module.RULES]

"""The capabilities, one module (or package) each; ``CAPABILITIES`` lists them for the app factory.

Each exposes ``capability`` (a ``bot.capability.Capability``) with everything it brings registered on it: intents
and how they are recognized, scheduled rules, archive hooks, web routes. Order here decides nothing: every
registration carries its own priority.
"""

from bot.capability import Capability
from handlers import (
    approvals,
    archive,
    clarify,
    customers,
    exports,
    followups,
    help,
    history,
    keywords,
    ladder,
    nps,
    orders,
    people,
    pipeline,
    reminders,
    reports,
    search,
    sidebar,
    tickets,
)

CAPABILITIES: list[Capability] = [
    help.capability,
    customers.capability,
    followups.capability,
    ladder.capability,
    reminders.capability,
    tickets.capability,
    search.capability,
    archive.capability,
    keywords.capability,
    approvals.capability,
    nps.capability,
    orders.capability,
    history.capability,
    clarify.capability,
    pipeline.capability,
    people.capability,
    exports.capability,
    reports.capability,
    sidebar.capability,
]

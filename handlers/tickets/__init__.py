"""Tickets (工单) with SLA: opening one with its due time and assignee, moving it through 处理中 → 已解决 → 关闭, and
the timers that chase it.

The modules: ``service`` (the ticket rules: SLA, assignee, allowed moves; also used by the keyword rules),
``commands`` (the intents), ``phrasing`` (how they are recognized), ``rules`` (SLA breach and revisit, scheduled).
"""

from handlers.tickets import commands, phrasing, rules, service
from handlers.tickets.capability import capability

__all__ = ["capability", "commands", "phrasing", "rules", "service"]

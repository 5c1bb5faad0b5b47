"""Discount approvals (折扣审批): request, route, decide by one tap or by text, withdraw, remind and escalate.

A rep types ``申请折扣 华为 85折 合同金额120万 年度框架协议``; the request is routed (``routing``) into a chain of
levels, and the approver of the current level gets a card (``cards``) whose buttons are the text commands
``同意 #AP12`` / ``驳回 #AP12``. A tap comes back as a neutral click carrying the card's id (and, where the platform
gives one, the handle to update the card); typed anywhere it is the approver's own text. ``workflow`` decides,
withdraws and escalates; ``commands`` holds the intents and how they are recognized; ``rules`` the timers.
"""

from handlers.approvals import commands, rules
from handlers.approvals.capability import capability

__all__ = ["capability", "commands", "rules"]

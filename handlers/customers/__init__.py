"""Customers: the profile card, creating a customer, changing owner, stage, grade and tags, and editing the
profile (contacts, contract end, industry, aliases, custom fields).

Permissions: a rep acts on own customers (and the public pool), a manager on the team's, directors and admins on
all (``bot.access``); every change is written to the audit log with before and after. The modules: ``profile``
(the card), ``changes`` (create, stage, grade, tags, transfer), ``phrasing`` (how these are recognized), ``edits``
(the profile edits, with how they are said and their checks).
"""

from handlers.customers import changes, edits, phrasing, profile
from handlers.customers.capability import capability

__all__ = ["capability", "changes", "edits", "phrasing", "profile"]

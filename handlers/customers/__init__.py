"""Customers: the profile card, creating a customer, and changing owner, stage, grade and tags.

Permissions: a rep acts on own customers (and the public pool), a manager on the team's, directors and admins on
all (``bot.access``); every change is written to the audit log with before and after. The modules: ``profile``
(the card), ``changes`` (create, stage, grade, tags, transfer), ``phrasing`` (how these are recognized).
"""

from handlers.customers import changes, phrasing, profile
from handlers.customers.capability import capability

__all__ = ["capability", "changes", "phrasing", "profile"]

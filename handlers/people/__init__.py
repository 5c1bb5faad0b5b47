"""People leave, customers stay: the departure handover (离职交接) and the public pool (公海) worked both ways."""

from handlers.people import commands, contacts, leads, pool, transfers
from handlers.people.capability import capability

__all__ = ["capability", "commands", "contacts", "leads", "pool", "transfers"]

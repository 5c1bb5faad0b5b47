"""The reports capability's registration object, shared by its modules."""

from bot.capability import Capability

capability = Capability("reports")

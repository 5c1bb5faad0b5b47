"""The exports capability's registration object, shared by its modules."""

from bot.capability import Capability

capability = Capability("exports")

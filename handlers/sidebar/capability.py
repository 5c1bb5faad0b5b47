"""The sidebar capability's registration object, shared by its modules."""

from bot.capability import Capability

capability = Capability("sidebar")

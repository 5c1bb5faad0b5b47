"""How a platform plugs in: one ``Integration`` per folder of ``integrations/``, handed to the app factory.

``setup(app)`` runs while the app is built: it mounts the platform's routes, registers its ``Identity`` on the
directory (``app[BOT].directory``) and its channel on the outbox, and adds the cleanup contexts its clients need.
``settings`` is the class of the platform's config section (named like the integration), or None.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiohttp import web

from bot.config import PlatformSettings


@dataclass(frozen=True, slots=True)
class Integration:
    name: str
    setup: Callable[[web.Application], None]
    settings: type[PlatformSettings] | None = None


def settings_sections(integrations: Iterable[Integration]) -> dict[str, type[PlatformSettings]]:
    """The config sections of these integrations, by section name."""
    return {i.name: i.settings for i in integrations if i.settings is not None}

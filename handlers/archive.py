"""The chat archive: when a platform says its archive has new messages (the neutral ``ARCHIVE_READY`` event),
every registered archive source is pulled, each in its own task outside the event's transaction."""

from __future__ import annotations

import contextvars

from bot.capability import Capability
from bot.context import Context, Slots
from bot.types import ARCHIVE_READY, IncomingMessage

capability = Capability("archive")


@capability.intent(f"event:{ARCHIVE_READY}", order=900, system=True)
async def archive_ready(msg: IncomingMessage, slots: Slots, ctx: Context) -> None:
    """会话存档有新消息：拉取"""
    for source in ctx.bot.archive_sources:
        # A fresh context, i.e. outside this event's transaction: the pull commits batch by batch on its own.
        contextvars.Context().run(ctx.bot.tasks.spawn, source.pull())

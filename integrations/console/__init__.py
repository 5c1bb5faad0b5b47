"""The console channel behind ``crmbot chat``: stdin lines in as one staff member, replies and pushes out.

It goes through the same pipeline and outbox as WeCom and DingTalk; only the adapter at the end differs.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterable
from typing import Any, TextIO

from aiohttp import web

from bot.app import BOT, CLOCK, OUTBOX
from bot.types import IncomingMessage, Platform, Reply
from models.staff import Staff


def render(reply: Reply) -> str:
    """Plain-text rendering of any reply, cards included (with the text commands their buttons stand for)."""
    if reply.card is None:
        return reply.text
    card = reply.card
    lines = [f"【{card.title}】"]
    if card.description:
        lines.append(card.description)
    lines.extend(f"{k}：{v}" for k, v in card.fields)
    if card.buttons:
        lines.append("　".join(f"[{b.text}] 回复「{b.key}」" for b in card.buttons))
    return "\n".join(lines)


class ConsoleChannel:
    platform: Platform = "console"

    def __init__(self, out: TextIO) -> None:
        self.out = out

    async def send(self, recipient: str, reply: Reply, reply_to: dict[str, Any]) -> dict[str, Any]:
        self.out.write(render(reply).rstrip() + "\n")
        self.out.flush()
        return {}


def setup(app: web.Application) -> None:
    """Nothing to mount: the console adapter is registered by ``chat`` for the member at the terminal."""


async def chat(app: web.Application, staff: Staff, lines: AsyncIterable[str], out: TextIO = sys.stdout) -> int:
    """Feed each line to the bot as ``staff``; print replies (and pushes to ``staff``) before the next line."""
    bot, outbox = app[BOT], app[OUTBOX]
    outbox.register(ConsoleChannel(out))
    outbox.console_staff.add(staff.id)
    await outbox.drain()  # pushes that waited for this member
    count = 0
    async for line in lines:
        text = line.strip()
        if not text:
            continue
        count += 1
        await bot.receive(
            IncomingMessage(
                platform="console",
                msgid=uuid.uuid4().hex,
                sender=f"staff:{staff.id}",
                sender_name=staff.name,
                text=text,
                sent_at=app[CLOCK].now(),
            )
        )
        await bot.tasks.idle()
        await outbox.drain()
    return count

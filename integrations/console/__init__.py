"""The console channel behind ``crmbot chat``: stdin lines in as one staff member, replies and pushes out.

It goes through the same pipeline and outbox as every other platform; only the adapter at the end differs. Its
user ids are ``staff:<id>``, so it needs no accounts, and it reaches everyone: a push to somebody no other
platform reaches waits here until they open a console. A file or picture sent with a reply is written under
``[files] console_dir`` and its path printed.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from bot.channels import PermanentDeliveryError, RateLimit
from bot.files import load
from bot.identity import Identity
from bot.integration import Integration
from bot.keys import BOT, CLOCK, OUTBOX, SETTINGS
from bot.types import Attachment, IncomingMessage, Platform, Reply
from models.staff import Staff

PLATFORM = "console"


@dataclass
class ConsoleIdentity(Identity):
    """User ids are ``staff:<id>``."""

    def own_staff_id(self, user_id: str) -> int | None:
        number = user_id.removeprefix("staff:")
        return int(number) if user_id.startswith("staff:") and number.isdigit() else None

    def recipient(self, staff_id: int, account: str | None) -> str | None:
        return user_of(staff_id)


def user_of(staff_id: int) -> str:
    return f"staff:{staff_id}"


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
    """Prints what is sent to the staff members at this terminal (``live_for``); files go under ``directory``."""

    platform: Platform = PLATFORM
    rate_limits: tuple[RateLimit, ...] = ()  # a terminal takes everything

    def __init__(self, out: TextIO, live_for: set[int], directory: Path) -> None:
        self.out = out
        self.live_for: set[int] | None = live_for
        self.directory = directory

    async def send(
        self, recipient: str, reply: Reply, reply_to: dict[str, Any], *, maybe_sent_at: datetime | None = None
    ) -> dict[str, Any]:
        lines = [render(reply).rstrip()] if reply.text.strip() or reply.card is not None else []
        paths = []
        for attachment in reply.attachments:
            path = await self._save(attachment)
            paths.append(str(path))
            lines.append(f"{'图片' if attachment.kind == 'image' else '文件'}已保存：{path}")
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        return {"files": paths} if paths else {}

    async def _save(self, attachment: Attachment) -> Path:
        """Write the attachment as ``<directory>/<id>-<name>`` (once: a repeat finds it there)."""
        stored = await load(attachment.file_id)
        if stored is None:
            raise PermanentDeliveryError(f"file {attachment.file_id} is no longer stored")
        path = (self.directory / f"{stored.id}-{stored.filename}").resolve()
        await asyncio.to_thread(_write, path, bytes(stored.data))
        return path


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def setup(app: web.Application) -> None:
    """The identity only: the console adapter is registered by ``chat`` for the member at the terminal."""
    app[BOT].directory.register(ConsoleIdentity(PLATFORM, fallback=True))


async def chat(app: web.Application, staff: Staff, lines: AsyncIterable[str], out: TextIO = sys.stdout) -> int:
    """Feed each line to the bot as ``staff``; print replies (and pushes to ``staff``) before the next line."""
    bot, outbox = app[BOT], app[OUTBOX]
    earlier = outbox.adapters.get(PLATFORM)
    live = {staff.id, *(earlier.live_for or ())} if earlier is not None else {staff.id}
    outbox.register(ConsoleChannel(out, live, Path(app[SETTINGS].files.console_dir)))
    await outbox.drain()  # pushes that waited for this member
    count = 0
    async for line in lines:
        text = line.strip()
        if not text:
            continue
        count += 1
        await bot.receive(
            IncomingMessage(
                platform=PLATFORM,
                msgid=uuid.uuid4().hex,
                sender=user_of(staff.id),
                sender_name=staff.name,
                text=text,
                sent_at=app[CLOCK].now(),
            )
        )
        await bot.tasks.idle()
        await outbox.drain()
    return count


INTEGRATION = Integration(PLATFORM, setup)

"""The one path of a message: persist (idempotent), acknowledge, understand, handle, reply through the outbox.

``Bot.receive`` stores an ``IncomingMessage`` once per (platform, msgid) and schedules its handling in a
tracked task, so the platform is acknowledged as soon as the row exists. ``Bot.handle`` runs the intent's
handler in one transaction together with the reply rows and the ``handled_at`` mark: a crash at any point
leaves either nothing or everything, and ``recover`` picks up what was stored but not yet handled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from datetime import timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from bot.channels import Address, Outbox
from bot.clock import Clock
from bot.config import Settings
from bot.intents import Context, IntentRegistry, IntentRouter, as_replies
from bot.router import Parsed, Understanding
from bot.types import IncomingMessage, Reply
from models.customers import Contact
from models.messages import Message
from models.staff import Staff

log = logging.getLogger(__name__)

NOT_REGISTERED = "您好，您还不是本系统的注册用户，暂时无法使用 CRM 助手。请联系管理员为您开通账号。"
DIDNT_UNDERSTAND = "抱歉，我没听懂这句话。发送「帮助」查看我能做什么。"
FAILED = "抱歉，处理这条消息时出错了，已记录下来，请稍后再试。"
RECOVERY_WINDOW = timedelta(days=2)


class TaskTracker:
    """Background tasks the app waits for on shutdown (and tests wait for with ``idle``)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        await self.idle()


class Bot:
    """The platform-neutral core, one per app."""

    def __init__(self, settings: Settings, clock: Clock, outbox: Outbox, routers: Iterable[IntentRouter]) -> None:
        self.settings = settings
        self.clock = clock
        self.outbox = outbox
        self.understanding = Understanding(settings.tz)
        self.intents = IntentRegistry(routers)
        self.tasks = TaskTracker()

    async def start(self) -> None:
        await self.understanding.refresh()

    async def receive(self, msg: IncomingMessage) -> bool:
        """Store ``msg``; schedule its handling if it is new and addressed to the bot. False for a duplicate."""
        stored = await self.store(msg)
        if stored is None:
            return False
        if msg.to_bot:
            self.tasks.spawn(self.handle(stored.id))
        return True

    async def archive(self, msg: IncomingMessage) -> bool:
        """Store a customer conversation message (not addressed to the bot); False if already archived."""
        return await self.store(msg) is not None

    async def store(self, msg: IncomingMessage) -> Message | None:
        staff = await self.find_staff(msg.platform, msg.sender)
        customer_id = None if msg.to_bot else await self._customer_of(msg)
        if staff is None and not msg.to_bot:
            for receiver in msg.receivers:
                if staff := await self.find_staff(msg.platform, receiver):
                    break
        try:
            return await Message.create(
                platform=msg.platform,
                msgid=msg.msgid,
                to_bot=msg.to_bot,
                sender=msg.sender,
                receivers=list(msg.receivers),
                room_id=msg.conversation_id,
                msgtype=msg.msgtype,
                text=msg.text,
                payload=_payload_of(msg),
                staff_id=staff.id if staff else None,
                customer_id=customer_id,
                sent_at=msg.sent_at,
            )
        except IntegrityError:
            log.info("duplicate delivery %s:%s ignored", msg.platform, msg.msgid)
            return None

    async def _customer_of(self, msg: IncomingMessage) -> int | None:
        externals = [u for u in (msg.sender, *msg.receivers) if u.startswith(("wm", "wo"))]
        if not externals:
            return None
        contact = await Contact.filter(external_userid__in=externals).first()
        return contact.customer_id if contact else None

    async def find_staff(self, platform: str, sender: str) -> Staff | None:
        if platform == "wecom":
            return await Staff.get_or_none(wecom_userid=sender, active=True)
        if platform == "dingtalk":
            return await Staff.get_or_none(dingtalk_userid=sender, active=True)
        if sender.startswith("staff:") and sender[6:].isdigit():
            return await Staff.get_or_none(id=int(sender[6:]), active=True)
        return None

    async def handle(self, message_id: int) -> None:
        try:
            await self._handle(message_id)
        except Exception:
            log.exception("handling message %s failed", message_id)
            await self._fail(message_id)
        self.outbox.wake()

    async def _handle(self, message_id: int) -> None:
        async with in_transaction() as conn:
            row = await Message.filter(id=message_id).select_for_update().using_db(conn).first()
            if row is None or row.handled_at is not None:
                return
            msg = _incoming_of(row)
            staff = await Staff.get_or_none(id=row.staff_id) if row.staff_id else None
            if staff is None:
                replies = [Reply(NOT_REGISTERED)]
            else:
                ctx = Context(bot=self, staff=staff, msg=msg, now=self.clock.now(), conn=conn)
                replies = await self.dispatch(msg, ctx)
            await self._reply(msg, replies, staff, conn)
            row.handled_at = self.clock.now()
            await row.save(using_db=conn, update_fields=["handled_at"])

    async def dispatch(self, msg: IncomingMessage, ctx: Context) -> list[Reply]:
        parsed = self.understand(msg, ctx)
        spec = self.intents.get(parsed.intent)
        if spec is None:
            # An event nobody handles (entering the app, a contact change) needs no answer.
            return [] if msg.event else [Reply(DIDNT_UNDERSTAND)]
        return as_replies(await spec.handler(msg, parsed.slots, ctx))

    def understand(self, msg: IncomingMessage, ctx: Context) -> Parsed:
        if msg.event:
            return Parsed(f"event:{msg.event}", {"key": msg.event_key})
        return self.understanding.parse(msg.text, ctx.now)

    async def _reply(self, msg: IncomingMessage, replies: list[Reply], staff: Staff | None, conn: Any) -> None:
        if msg.platform == "console" and staff is not None:
            address = Address("console", f"staff:{staff.id}")
        else:
            address = Address(msg.platform, msg.sender)
        for i, reply in enumerate(replies):
            await self.outbox.enqueue(
                address,
                reply,
                f"reply:{msg.platform}:{msg.msgid}:{i}",
                staff_id=staff.id if staff else None,
                reply_to=msg.reply_to,
                using_db=conn,
            )

    async def _fail(self, message_id: int) -> None:
        """The handler crashed: its changes are rolled back; say sorry once and do not retry it forever."""
        async with in_transaction() as conn:
            row = await Message.filter(id=message_id).select_for_update().using_db(conn).first()
            if row is None or row.handled_at is not None:
                return
            staff = await Staff.get_or_none(id=row.staff_id) if row.staff_id else None
            await self._reply(_incoming_of(row), [Reply(FAILED)], staff, conn)
            row.handled_at = self.clock.now()
            await row.save(using_db=conn, update_fields=["handled_at"])

    async def recover(self) -> int:
        """Handle messages that were stored (and acknowledged) but not handled, e.g. before a crash."""
        since = self.clock.now() - RECOVERY_WINDOW
        ids = (
            await Message.filter(to_bot=True, handled_at=None, received_at__gte=since)
            .order_by("id")
            .values_list("id", flat=True)
        )
        for message_id in ids:
            await self.handle(int(str(message_id)))
        return len(ids)


def _payload_of(msg: IncomingMessage) -> dict[str, Any]:
    return {
        "sender_name": msg.sender_name,
        "is_group": msg.is_group,
        "event": msg.event,
        "event_key": msg.event_key,
        "reply_to": msg.reply_to,
        "raw": msg.raw,
    }


def _incoming_of(row: Message) -> IncomingMessage:
    payload = row.payload or {}
    return IncomingMessage(
        platform=row.platform,  # type: ignore[arg-type]
        msgid=row.msgid,
        sender=row.sender,
        text=row.text,
        sent_at=row.sent_at,
        msgtype=row.msgtype,
        sender_name=payload.get("sender_name", ""),
        conversation_id=row.room_id,
        is_group=bool(payload.get("is_group")),
        to_bot=row.to_bot,
        receivers=tuple(row.receivers or ()),
        event=payload.get("event", ""),
        event_key=payload.get("event_key", ""),
        reply_to=payload.get("reply_to") or {},
        raw=payload.get("raw") or {},
    )

"""The one path of a message: persist (idempotent), acknowledge, understand, handle, reply through the outbox.

``Bot.receive`` stores an ``IncomingMessage`` once per (platform, msgid) and schedules its handling in a
tracked task, so the platform is acknowledged as soon as the row exists. The intent's handler runs in one
transaction together with the reply rows and the ``handled_at`` mark: a crash at any point leaves either nothing
or everything, and ``recover`` picks up what was stored but not yet handled. Messages waiting together share that
transaction, each in a savepoint of its own, so a burst costs one commit per batch rather than one per message
while a failing handler still rolls back only its own changes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot.archive import payload_of
from bot.channels import Address, Outbox
from bot.clock import Clock
from bot.config import Settings
from bot.db import compact_json, postgres_placeholders
from bot.intents import Context, IntentRegistry, IntentRouter, as_replies
from bot.router import Parsed, Understanding, pick_choice
from bot.types import IncomingMessage, Reply
from models.messages import Message
from models.staff import Role, Staff

log = logging.getLogger(__name__)

NOT_REGISTERED = "您好，您还不是本系统的注册用户，暂时无法使用 CRM 助手。请联系管理员为您开通账号。"
DIDNT_UNDERSTAND = "抱歉，我没听懂这句话。发送「帮助」查看我能做什么。"
FAILED = "抱歉，处理这条消息时出错了，已记录下来，请稍后再试。"
RECOVERY_WINDOW = timedelta(days=2)
# Messages handled in one transaction at most. One commit (one fsync on SQLite) for many messages is what makes a
# burst cheap to answer; a bound keeps each transaction, which holds SQLite's one connection, short enough that the
# inserts acknowledging new callbacks do not wait long behind it.
HANDLING_BATCH = 32
# Acknowledgements come first when they need the CPU. While callbacks keep arriving, each handling batch and each
# outbox drain first waits and watches how busy the event loop's thread is meanwhile: under INGEST_SATURATED of its
# time after INGEST_PROBE, there is room for both and it goes ahead; otherwise it waits until callbacks stop, but
# never longer than INGEST_PRIORITY_MAX_WAIT, so a sustained burst cannot starve handling (one batch a second).
INGEST_QUIET = 0.01  # seconds without a new callback after which the ingest counts as idle
INGEST_PROBE = 0.05
INGEST_SATURATED = 0.7
INGEST_PRIORITY_MAX_WAIT = 1.0
SYSTEM_EVENTS = {"msgaudit_notify"}  # platform events without a staff sender that still have a handler


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

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        outbox: Outbox,
        routers: Iterable[IntentRouter],
        inbox: Inbox | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.outbox = outbox
        self.understanding = Understanding(settings.tz)
        self.intents = IntentRegistry(routers)
        self.tasks = TaskTracker()
        self.inbox = inbox or Inbox()
        self._to_handle: collections.deque[int] = collections.deque()
        self._handler: asyncio.Task[None] | None = None
        # Chat-archive sources to pull now (the msgaudit_notify event); integrations register them.
        self.archive_pullers: list[Callable[[], Coroutine[Any, Any, object]]] = []

    async def start(self) -> None:
        await self.understanding.refresh()

    async def close(self) -> None:
        await self.inbox.close()
        await self.tasks.close()

    async def receive(self, msg: IncomingMessage) -> bool:
        """Store ``msg``; schedule its handling if it is new and addressed to the bot. False for a duplicate."""
        message_id = await (self.inbox.submit(msg) if msg.to_bot else self.store(msg))
        if message_id is None:
            return False
        if msg.to_bot:
            self.schedule(message_id)
        return True

    async def archive(self, msg: IncomingMessage) -> bool:
        """Store a customer conversation message (not addressed to the bot); False if already archived."""
        return await self.store(msg) is not None

    async def store(self, msg: IncomingMessage) -> int | None:
        """Store one message now (outside the group commit): its row id, None if it was stored before."""
        if not msg.to_bot:  # a customer conversation: the one archive path (bot/archive.py)
            from bot.archive import archive_batch

            stored = (await archive_batch(self, [msg])).new
            return stored[0].id if stored else None
        return (await store_bot_messages([msg]))[0]

    def schedule(self, message_id: int) -> None:
        """Queue a stored message for handling (together with whatever else is waiting), in a tracked task."""
        self._to_handle.append(message_id)
        if self._handler is None or self._handler.done():
            self._handler = self.tasks.spawn(self._handle_forever())

    async def _handle_forever(self) -> None:
        # Whatever is still queued if the process dies stays stored and unhandled, for ``recover`` after a restart.
        while self._to_handle:
            await self.inbox.yield_to_ingest()
            ids = [self._to_handle.popleft() for _ in range(min(HANDLING_BATCH, len(self._to_handle)))]
            try:
                await self._handle_batch(ids)
            except Exception:
                # The batch as a whole failed (e.g. its commit): nothing of it was kept; one at a time instead.
                log.exception("handling %d messages together failed; handling them one by one", len(ids))
                for message_id in ids:
                    await self._handle_alone(message_id)
            self.outbox.wake()

    async def _handle_batch(self, ids: list[int]) -> None:
        """Handle messages in one transaction (one commit), each in a savepoint of its own: a handler that fails
        rolls back only its own changes, and its sender gets an apology instead."""
        async with in_transaction() as conn:
            rows = await Message.filter(id__in=ids, handled_at=None).order_by("id").select_for_update().using_db(conn)
            if not rows:
                return
            staff_ids = {row.staff_id for row in rows if row.staff_id}
            staff_of = {s.id: s for s in await Staff.filter(id__in=staff_ids).using_db(conn)} if staff_ids else {}
            incoming = [(row, _incoming_of(row)) for row in rows]
            if any(not msg.event for _, msg in incoming):
                await self.understanding.ensure_fresh()
            for row, msg in incoming:
                staff = staff_of.get(row.staff_id or 0)
                try:
                    async with in_transaction() as savepoint:
                        replies = await self._answer(msg, staff, savepoint)
                        await self._reply(msg, replies, staff, savepoint)
                except Exception:
                    log.exception("handling message %s failed", row.id)
                    await self._reply(msg, [Reply(FAILED)], staff, conn)
            await Message.filter(id__in=[row.id for row in rows]).using_db(conn).update(handled_at=self.clock.now())

    async def _handle_alone(self, message_id: int) -> None:
        """One message in a transaction of its own; if even that fails, say sorry once and do not retry forever."""
        try:
            await self._handle_batch([message_id])
        except Exception:
            log.exception("handling message %s failed", message_id)
            await self._mark_failed(message_id)

    async def _mark_failed(self, message_id: int) -> None:
        try:
            async with in_transaction() as conn:
                row = await Message.filter(id=message_id, handled_at=None).select_for_update().using_db(conn).first()
                if row is None:
                    return
                staff = await Staff.filter(id=row.staff_id).using_db(conn).first() if row.staff_id else None
                await self._reply(_incoming_of(row), [Reply(FAILED)], staff, conn)
                row.handled_at = self.clock.now()
                await row.save(using_db=conn, update_fields=["handled_at"])
        except Exception:  # the database itself is failing: the message stays unhandled, for ``recover``
            log.exception("message %s could not be marked as failed", message_id)

    async def _answer(self, msg: IncomingMessage, staff: Staff | None, conn: BaseDBAsyncClient) -> list[Reply]:
        if staff is None and msg.event in SYSTEM_EVENTS:
            # Sent by the platform itself (sender "sys"): handled on behalf of the system, nobody to answer.
            system = Staff(name="系统", role=Role.ADMIN)
            await self.dispatch(msg, Context(bot=self, staff=system, msg=msg, now=self.clock.now(), conn=conn))
            return []
        if staff is None:
            return [Reply(NOT_REGISTERED)]
        return await self.dispatch(msg, Context(bot=self, staff=staff, msg=msg, now=self.clock.now(), conn=conn))

    async def dispatch(self, msg: IncomingMessage, ctx: Context) -> list[Reply]:
        parsed = self.understand(msg, ctx)
        if parsed.intent == "unknown" and not msg.event:
            # "2" answers a numbered question asked earlier (kept in the database across restarts).
            parsed = await pick_choice(ctx.staff.id, msg.text, ctx.now, ctx.conn) or parsed
        spec = self.intents.get(parsed.intent)
        if spec is None:
            # An event nobody handles (entering the app, a contact change) needs no answer.
            return [] if msg.event else [Reply(DIDNT_UNDERSTAND)]
        return as_replies(await spec.handler(msg, parsed.slots, ctx))

    def understand(self, msg: IncomingMessage, ctx: Context) -> Parsed:
        if msg.event:
            return Parsed(f"event:{msg.event}", {"key": msg.event_key})
        return self.understanding.parse(msg.text, ctx.now)

    async def _reply(
        self, msg: IncomingMessage, replies: list[Reply], staff: Staff | None, conn: BaseDBAsyncClient
    ) -> None:
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

    async def recover(self) -> int:
        """Handle messages that were stored (and acknowledged) but not handled, e.g. before a crash."""
        since = self.clock.now() - RECOVERY_WINDOW
        ids = (
            await Message.filter(to_bot=True, handled_at=None, received_at__gte=since)
            .order_by("id")
            .values_list("id", flat=True)
        )
        for message_id in ids:
            self.schedule(int(str(message_id)))
        return len(ids)


class Inbox:
    """Group commit for messages addressed to the bot.

    Every acknowledgement waits for its row to be durable, and a commit is the expensive part of that; callbacks
    that arrive together are therefore written by one writer task in one statement (up to ``MAX_BATCH``), each
    caller getting its row id back (or None for a duplicate) once it has committed. Handling (before each batch)
    and the outbox dispatcher (before each drain) ask ``yield_to_ingest``, so a burst is acknowledged first.
    """

    MAX_BATCH = 200

    def __init__(self) -> None:
        self._waiting: collections.deque[tuple[IncomingMessage, asyncio.Future[int | None]]] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
        self._last_submit = float("-inf")  # loop time of the latest callback

    async def submit(self, msg: IncomingMessage) -> int | None:
        loop = asyncio.get_running_loop()
        self._last_submit = loop.time()
        future: asyncio.Future[int | None] = loop.create_future()
        self._waiting.append((msg, future))
        if self._writer is None:
            self._writer = loop.create_task(self._write_all())
        return await future

    def busy(self) -> bool:
        """Callbacks are waiting to be written, or one arrived within the last ``INGEST_QUIET`` seconds."""
        loop = asyncio.get_running_loop()
        return self._writer is not None or loop.time() - self._last_submit < INGEST_QUIET

    async def yield_to_ingest(self) -> None:
        """Wait while callbacks are arriving and acknowledging them keeps the event loop busy (see
        ``INGEST_SATURATED``); at most ``INGEST_PRIORITY_MAX_WAIT``."""
        loop = asyncio.get_running_loop()
        started, cpu_started = loop.time(), time.thread_time()
        while self.busy():
            await asyncio.sleep(INGEST_QUIET)
            waited = loop.time() - started
            if waited >= INGEST_PRIORITY_MAX_WAIT:
                return
            if waited >= INGEST_PROBE and (time.thread_time() - cpu_started) / waited < INGEST_SATURATED:
                return

    async def close(self) -> None:
        """Wait until everything submitted is written."""
        if self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write_all(self) -> None:
        """Write what is waiting, a batch at a time, until nothing is; callbacks arriving meanwhile join the next
        batch."""
        try:
            while self._waiting:
                batch = [self._waiting.popleft() for _ in range(min(self.MAX_BATCH, len(self._waiting)))]
                try:
                    rows = await store_bot_messages([msg for msg, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for (_, future), row in zip(batch, rows, strict=True):
                        if not future.done():
                            future.set_result(row)
        finally:
            self._writer = None


# Who sent a message addressed to the bot, resolved by the database inside the insert (registered, active staff).
_SENDER_STAFF = {
    "wecom": "(SELECT id FROM staff WHERE wecom_userid = ? AND active)",
    "dingtalk": "(SELECT id FROM staff WHERE dingtalk_userid = ? AND active)",
    "console": "(SELECT id FROM staff WHERE id = ? AND active)",
}
# One row of the insert below per platform: eleven values, then the sender's staff row.
_BOT_MESSAGE_ROW = {platform: f"({', '.join('?' * 11)}, {staff})" for platform, staff in _SENDER_STAFF.items()}
_BOT_MESSAGE_COLUMNS = (
    "platform, msgid, to_bot, sender, receivers, room_id, msgtype, text, payload, sent_at, received_at, staff_id"
)


async def store_bot_messages(messages: list[IncomingMessage]) -> list[int | None]:
    """Insert messages addressed to the bot; the new row's id for each, None for one stored before.

    One ``INSERT … ON CONFLICT DO NOTHING RETURNING`` per batch: a single statement (atomic, one commit), whose
    returned rows are exactly the new ones, with each sender's staff row looked up by the database in the same
    statement. This is the work every acknowledgement waits for, so it stays free of per-row ORM overhead.
    """
    fresh: dict[tuple[str, str], IncomingMessage] = {}
    for msg in messages:
        fresh.setdefault((msg.platform, msg.msgid), msg)
    now = datetime.now(UTC)
    params: list[Any] = []
    rows: list[str] = []
    for m in fresh.values():
        sender: Any = m.sender
        if m.platform == "console":
            sender = int(m.sender[6:]) if m.sender.startswith("staff:") and m.sender[6:].isdigit() else None
        params += (
            m.platform,
            m.msgid,
            True,
            m.sender,
            compact_json(list(m.receivers)) if m.receivers else "[]",
            m.conversation_id,
            m.msgtype,
            m.text,
            compact_json(payload_of(m)),
            m.sent_at.astimezone(UTC),
            now,
            sender,
        )
        rows.append(_BOT_MESSAGE_ROW[m.platform])
    sql = (
        f"INSERT INTO message ({_BOT_MESSAGE_COLUMNS}) VALUES {', '.join(rows)}"
        " ON CONFLICT (platform, msgid) DO NOTHING RETURNING id, platform, msgid"
    )
    conn = connections.get("default")
    if conn.capabilities.dialect == "postgres":
        sql = postgres_placeholders(sql)
    new = {(str(r["platform"]), str(r["msgid"])): int(r["id"]) for r in await conn.execute_query_dict(sql, params)}
    results: list[int | None] = []
    for msg in messages:
        message_id = new.pop((msg.platform, msg.msgid), None)  # a repeat within the batch is a duplicate too
        if message_id is None:
            log.info("duplicate delivery %s:%s ignored", msg.platform, msg.msgid)
        results.append(message_id)
    return results


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

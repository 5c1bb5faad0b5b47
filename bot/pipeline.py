"""The one path of a message: persist (idempotent), acknowledge, understand, handle, reply through the outbox.

``Bot.receive`` stores an ``IncomingMessage`` once per (platform, msgid) (``bot.inbox``: a burst in one
statement) and schedules its handling in a tracked task, so the platform is acknowledged as soon as the row
exists. Handling (``bot.dispatch``: the ordered steps from understanding to the handler) runs in one transaction
together with the reply rows and the ``handled_at`` mark: a crash at any point leaves either nothing or
everything, and ``recover`` picks up what was stored but not yet handled: at start-up, and every minute for
messages left behind while the process runs (a lost database connection). Messages waiting together share that
transaction, each in a savepoint of its own, so a burst costs one commit per batch rather than one per message
while a failing handler still rolls back only its own changes. Waiting messages are taken in turns by sender, so
one person sending many cannot hold up everyone else's answers. Customer conversations (not addressed to the bot)
take the archive path (``bot.archive``).

Instances split by role (``[server] role``, docs/SCALING.md): a "web" instance stores and acknowledges only; a
"worker" takes in what was stored (``Bot.share_handling``), skips rows another worker holds, and handles each
sender under an advisory lock, in order (``Bot._sender_turns``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot import sql
from bot.archive import archive_batch
from bot.capability import Registry
from bot.channels import Address, Outbox, Queued
from bot.clock import Clock
from bot.config import Settings
from bot.context import ArchiveHook, ArchiveSource, CardLine, ImportHook, Rule
from bot.dispatch import Dispatcher
from bot.identity import Directory
from bot.inbox import Inbox, store_bot_messages
from bot.messages import COLUMNS, incoming_of
from bot.tasks import TaskTracker
from bot.types import IncomingMessage, Reply
from bot.understanding import Parsed, Understanding
from models.messages import Message
from models.staff import Staff

log = logging.getLogger(__name__)

FAILED = "抱歉，处理这条消息时出错了，已记录下来，请稍后再试。"
RECOVERY_WINDOW = timedelta(days=2)
# A stored message still unhandled this long after it arrived, and not waiting in this process, was left behind
# (its batch and its apology both failed, e.g. on a lost database connection): it is handled again.
LEFT_BEHIND = timedelta(seconds=60)
# Messages handled in one transaction at most. One commit (one fsync on SQLite) for many messages is what makes a
# burst cheap to answer; a bound keeps each transaction, which holds SQLite's one connection, short enough that the
# inserts acknowledging new callbacks do not wait long behind it.
HANDLING_BATCH = 32
# While callbacks keep arriving, a batch is this small: on SQLite every acknowledgement waits for the one
# connection, which a handling transaction holds until its commit, so a short transaction keeps that wait short
# (the acknowledgements of a burst come first anyway, see ``Inbox.yield_to_ingest``).
BUSY_HANDLING_BATCH = 8
# Texts longer than this are understood in a worker thread: reading one costs up to a few tens of milliseconds
# (``UNDERSTOOD_CHARS`` of jieba and time expressions), which on the event loop would hold up acknowledgements;
# shorter ones cost less than the hop to a thread.
READ_IN_THREAD_CHARS = 200
# A "worker" looks for messages other instances stored (``Bot.share_handling``) up to this many at a time, oldest
# first, and not while this many are already waiting here: a backlog is taken in as it is worked off.
SHARED_BATCH = 1000


class Bot:
    """The platform-neutral core, one per app: the services capabilities see (``bot.context.Services``) and the
    path every message takes."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        outbox: Outbox,
        registry: Registry,
        inbox: Inbox | None = None,
        role: str = "all",
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.outbox = outbox
        self.directory: Directory = outbox.directory
        self.intents = registry
        self.understanding = Understanding(settings.tz, registry.commands, registry.phrases)
        self.scheduled_rules: list[Rule] = list(registry.rules)
        self.archive_hooks: list[ArchiveHook] = list(registry.archive_hooks)
        self.import_hooks: list[ImportHook] = list(registry.import_hooks)
        self.card_lines: list[CardLine] = list(registry.card_lines)
        self.archive_sources: list[ArchiveSource] = []  # chat archives to pull, registered by integrations
        self.dispatcher = Dispatcher(self, registry)
        self.tasks = TaskTracker()
        self.inbox = inbox or Inbox(self.directory)
        self._to_handle = TakenInTurns()
        self._in_flight: set[int] = set()  # the batch being handled
        self._held: set[str] = set()  # senders the batch being handled could not take (a worker's)
        self._handler: asyncio.Task[None] | None = None
        # The instance's role (``[server] role``): a "web" instance stores what it receives and leaves handling to the
        # "worker" instances, which take what they find stored and skip what another instance is handling.
        self.handles = role != "web"
        self._shared = role == "worker"

    async def close(self) -> None:
        await self.inbox.close()
        await self.tasks.close()

    async def receive(self, msg: IncomingMessage) -> bool:
        """Store ``msg``; schedule its handling if it is new and addressed to the bot. False for a duplicate."""
        message_id = await (self.inbox.submit(msg) if msg.to_bot else self.store(msg))
        if message_id is None:
            return False
        if msg.to_bot and self.handles:
            self.schedule(message_id, sender_key(msg.platform, msg.sender))
        return True

    async def archive(self, msg: IncomingMessage) -> bool:
        """Store a customer conversation message (not addressed to the bot); False if already archived."""
        return await self.store(msg) is not None

    async def store(self, msg: IncomingMessage) -> int | None:
        """Store one message now (outside the group commit): its row id, None if it was stored before."""
        if not msg.to_bot:  # a customer conversation: the one archive path
            stored = (await archive_batch(self, [msg])).new
            return stored[0].id if stored else None
        return (await store_bot_messages(self.directory, [msg]))[0]

    def schedule(self, message_id: int, sender: str) -> None:
        """Queue a stored message from ``sender`` for handling (with whatever else is waiting), in a tracked task."""
        self._to_handle.put(sender, message_id)
        if self._handler is None or self._handler.done():
            self._handler = self.tasks.spawn(self._handle_forever())

    async def _handle_forever(self) -> None:
        # Whatever is still queued if the process dies stays stored and unhandled, for ``recover`` after a restart.
        while self._to_handle:
            await self.inbox.yield_to_ingest()
            ids = self._to_handle.take(BUSY_HANDLING_BATCH if self.inbox.busy() else HANDLING_BATCH)
            self._in_flight = set(ids)
            # Each transaction in a task of its own: a connection lost mid-transaction can leave the ORM's
            # transaction state broken in the task that ran it, and it must not outlive that batch.
            try:
                await asyncio.create_task(self._handle_batch(ids))
            except Exception:
                # The batch as a whole failed (e.g. its commit): nothing of it was kept; one at a time instead.
                log.exception("handling %d messages together failed; handling them one by one", len(ids))
                for message_id in ids:
                    await asyncio.create_task(self._handle_alone(message_id))
            finally:
                self._in_flight, self._held = set(), set()
            self.outbox.wake()

    async def _handle_batch(self, ids: list[int]) -> None:
        """Handle messages in one transaction (one commit), each in a savepoint of its own: a handler that fails
        rolls back only its own changes, and its sender gets an apology instead. The batch's replies go into the
        outbox in one statement at the end.

        The messages are read (raw rows, no models built) and understood first, outside the transaction: on
        SQLite the transaction holds the one connection, which every acknowledgement needs, and understanding
        needs no database."""
        rows = await _unhandled(sql.default(), ids)
        if not rows:
            return
        incoming = {int(row["id"]): incoming_of(row) for row in rows}
        read = await self._read(incoming)
        generation = self.understanding.generation
        async with in_transaction() as conn:
            # Under a row lock on PostgreSQL: another instance handling the same message waits, then skips it.
            still = await _lock_unhandled(conn, ids, skip_locked=self._shared)
            if self._shared:
                rows = await self._sender_turns(conn, rows, still)
            else:
                rows = [row for row in rows if int(row["id"]) in still]
            if not rows:
                return
            staff_of = await _staff_of(rows, conn)
            answered: list[tuple[IncomingMessage, list[Reply], Staff | None]] = []
            for row in rows:
                msg = incoming[int(row["id"])]
                staff = staff_of.get(int(row["staff_id"] or 0))
                now, parsed = read.get(int(row["id"]), (self.clock.now(), None))
                if self.understanding.generation != generation:
                    parsed = None  # a message before it taught the names a new customer: read it again
                try:
                    async with in_transaction() as savepoint:
                        answered.append((msg, await self.dispatcher.answer(msg, staff, now, savepoint, parsed), staff))
                except Exception:
                    log.exception("handling message %s failed", row["id"])
                    answered.append((msg, [Reply(FAILED)], staff))
            await self.outbox.enqueue_many([q for a in answered for q in _queued(*a)], using_db=conn)
            chosen, params = _among(conn, [int(row["id"]) for row in rows])
            await conn.execute_query(sql.for_conn(_MARK_HANDLED.format(ids=chosen), conn), [self.clock.now(), *params])

    async def _sender_turns(
        self, conn: BaseDBAsyncClient, rows: list[dict[str, Any]], still: set[int]
    ) -> list[dict[str, Any]]:
        """A worker's share of ``rows`` (``still`` the ones it holds): each sender is handled by one worker at a
        time, under an advisory lock of the sender's until commit, and in order: none of a sender's messages after
        one this batch cannot take (another worker holds it or its sender, or it was handled meanwhile). Those wait
        for a later look, and so does the rest of the sender's queue here; a look while this batch runs passes the
        sender by, so that no later batch starts with the sender's later messages and without the held one."""
        free = await sql.try_xact_locks(conn, {_sender_lock(row) for row in rows if int(row["id"]) in still})
        kept, held = [], set()
        for row in rows:
            if int(row["id"]) not in still or _sender_lock(row) not in free:
                held.add(_sender(row))
            elif _sender(row) not in held:
                kept.append(row)
        self._to_handle.forget(held)
        self._held |= held
        return kept

    async def _read(self, incoming: dict[int, IncomingMessage]) -> dict[int, tuple[datetime, Parsed]]:
        """What each typed message or tapped button means, and the moment it was read at, by message id (events
        need no reading); long texts are read in a worker thread, off the event loop."""
        typed = [(message_id, msg) for message_id, msg in incoming.items() if not msg.event]
        if typed:
            await self.understanding.ensure_fresh()
        read: dict[int, tuple[datetime, Parsed]] = {}
        for message_id, msg in typed:
            now = self.clock.now()
            if len(msg.text) > READ_IN_THREAD_CHARS:
                read[message_id] = now, await asyncio.to_thread(self.dispatcher.understand_message, msg, now)
            else:
                read[message_id] = now, self.dispatcher.understand_message(msg, now)
        return read

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
                if not await _lock_unhandled(conn, [message_id]):
                    return
                row = (await _unhandled(conn, [message_id]))[0]
                staff = (await _staff_of([row], conn)).get(int(row["staff_id"] or 0))
                await self.outbox.enqueue_many(_queued(incoming_of(row), [Reply(FAILED)], staff), using_db=conn)
                await conn.execute_query(
                    sql.for_conn(_MARK_HANDLED.format(ids="= ?"), conn), [self.clock.now(), message_id]
                )
        except Exception:  # the database itself is failing: the message stays unhandled, for ``recover``
            log.exception("message %s could not be marked as failed", message_id)

    async def recover(self, left_behind: timedelta | None = None, limit: int | None = None) -> int:
        """Handle messages that were stored (and acknowledged) but not handled: before a crash, or, with
        ``left_behind``, those stored longer ago than that which this process is not about to handle; the oldest
        ``limit`` of them at most. Several instances may pick the same message: handling takes only rows still
        unhandled, under a row lock. (Rows are stamped with the wall-clock time they arrived, so that is the time
        they are compared with.)"""
        now = datetime.now(UTC)
        stamp = Message._meta.fields_map["received_at"]
        params: list[Any] = [stamp.to_db_value(now - RECOVERY_WINDOW, Message)]
        if left_behind is not None:
            params.append(stamp.to_db_value(now - left_behind, Message))
        if limit is not None:
            params.append(limit)
        statement = _UNHANDLED_SINCE.format(
            until="" if left_behind is None else " AND received_at <= ?", limit="" if limit is None else " LIMIT ?"
        )
        async with in_transaction() as conn:
            await sql.fresh_plans(conn)  # the unhandled messages: none most of the time, thousands after a burst
            rows = await sql.select(conn, statement, params)
        scheduled = 0
        for row in rows:
            message_id, sender = int(row["id"]), _sender(row)
            if message_id in self._to_handle or message_id in self._in_flight or sender in self._held:
                continue
            self.schedule(message_id, sender)
            scheduled += 1
        if left_behind is not None and scheduled:
            log.warning("%d stored messages were left unhandled; handling them now", scheduled)
        return scheduled

    async def share_handling(self, every: float) -> None:
        """A "worker"'s loop, until cancelled: every ``every`` seconds, take in the messages other instances stored
        and nobody has handled yet (``SHARED_BATCH`` at most, and none while as many are waiting here)."""
        while True:
            if len(self._to_handle) < SHARED_BATCH:
                try:
                    await self.recover(limit=SHARED_BATCH)
                except Exception:  # the database is failing: the next look tries again
                    log.exception("looking for stored messages to handle failed")
            await asyncio.sleep(every)


class TakenInTurns:
    """Message ids waiting to be handled, a queue per sender; ``take`` goes round the senders, one message each
    turn, so each sender's messages stay in order and nobody waits behind another sender's flood."""

    def __init__(self) -> None:
        self._queues: collections.OrderedDict[str, collections.deque[int]] = collections.OrderedDict()
        self._waiting: set[int] = set()

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, message_id: int) -> bool:
        return message_id in self._waiting

    def put(self, sender: str, message_id: int) -> None:
        if message_id in self._waiting:
            return
        self._queues.setdefault(sender, collections.deque()).append(message_id)
        self._waiting.add(message_id)

    def forget(self, senders: set[str]) -> None:
        """Drop whatever of these senders' messages is waiting."""
        for sender in senders:
            self._waiting.difference_update(self._queues.pop(sender, ()))

    def take(self, count: int) -> list[int]:
        taken: list[int] = []
        while self._queues and len(taken) < count:
            sender, queue = next(iter(self._queues.items()))
            taken.append(queue.popleft())
            del self._queues[sender]
            if queue:  # back of the line
                self._queues[sender] = queue
        self._waiting.difference_update(taken)
        return taken


# ``to_bot = TRUE`` as a literal: the index of unhandled messages holds the messages to the bot only, and SQLite uses
# such an index only for a query whose own text implies its condition.
_UNHANDLED_SINCE = (
    "SELECT id, platform, sender FROM message WHERE to_bot = TRUE AND handled_at IS NULL AND received_at >= ?{until}"
    " ORDER BY id{limit}"
)
_UNHANDLED = f"SELECT {COLUMNS} FROM message WHERE id {{ids}} AND handled_at IS NULL ORDER BY id"
_LOCK_UNHANDLED = "SELECT id FROM message WHERE id {ids} AND handled_at IS NULL ORDER BY id"
_MARK_HANDLED = "UPDATE message SET handled_at = ? WHERE id {ids}"


def _among(conn: BaseDBAsyncClient, ids: list[int]) -> tuple[str, list[Any]]:
    """``id`` among ``ids``: one statement whatever the batch's size on PostgreSQL (``sql.among``)."""
    return sql.among(sql.is_postgres(conn), ids, "bigint")


async def _unhandled(conn: BaseDBAsyncClient, ids: list[int]) -> list[dict[str, Any]]:
    """The stored messages among ``ids`` not handled yet, in id order, as raw rows."""
    chosen, params = _among(conn, ids)
    return await sql.select(conn, _UNHANDLED.format(ids=chosen), params)


async def _lock_unhandled(conn: BaseDBAsyncClient, ids: list[int], *, skip_locked: bool = False) -> set[int]:
    """Which of ``ids`` are still unhandled, locked for this transaction on PostgreSQL (SQLite has one writer);
    with ``skip_locked``, without those another transaction holds, instead of waiting for it."""
    lock = (" FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE") if sql.is_postgres(conn) else ""
    chosen, params = _among(conn, ids)
    return {int(r["id"]) for r in await sql.select(conn, _LOCK_UNHANDLED.format(ids=chosen) + lock, params)}


def sender_key(platform: str, sender: str) -> str:
    """Whose message it is: the key messages wait in turns by."""
    return f"{platform}:{sender}"


def _sender(row: dict[str, Any]) -> str:
    return sender_key(str(row["platform"]), str(row["sender"]))


def handling_lock(platform: str, sender: str) -> str:
    """The name of the advisory lock a worker holds while it handles a sender's messages (``sql.lock_key``)."""
    return f"handling:{sender_key(platform, sender)}"


def _sender_lock(row: dict[str, Any]) -> str:
    return handling_lock(str(row["platform"]), str(row["sender"]))


async def _staff_of(rows: list[dict[str, Any]], conn: BaseDBAsyncClient) -> dict[int, Staff]:
    """The senders' staff rows, by id."""
    staff_ids = {int(row["staff_id"]) for row in rows if row["staff_id"]}
    return {s.id: s for s in await Staff.filter(id__in=staff_ids).using_db(conn)} if staff_ids else {}


def _queued(msg: IncomingMessage, replies: list[Reply], staff: Staff | None) -> list[Queued]:
    """The replies to ``msg`` as outbox rows, each with a key of its own (a message is answered once)."""
    address = Address(msg.platform, msg.sender)
    return [
        Queued(address, reply, f"reply:{msg.platform}:{msg.msgid}:{i}", staff.id if staff else None, msg.reply_to)
        for i, reply in enumerate(replies)
    ]

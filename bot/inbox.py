"""The inbox: messages addressed to the bot are stored here, a burst at a time, before they are acknowledged.

Every acknowledgement waits for its row to be durable, and a commit is the expensive part of that; callbacks that
arrive together are therefore written by one writer task in one statement (up to ``Inbox.MAX_BATCH``), each
caller getting its row id back (or None for a duplicate) once it has committed. The statement resolves each
sender's staff row itself, so storing costs one round trip per burst.

``yield_to_ingest`` is what handling (before each batch) and the outbox dispatcher (before each drain) await, so
that while a burst keeps the event loop busy it is acknowledged first.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from datetime import UTC, datetime
from typing import Any

from bot import sql
from bot.identity import Directory
from bot.jsontext import compact_json
from bot.messages import payload_of
from bot.types import IncomingMessage

log = logging.getLogger(__name__)

# Acknowledgements come first when they need the CPU. While callbacks keep arriving, each handling batch and each
# outbox drain first waits and watches how busy the event loop's thread is meanwhile: under INGEST_SATURATED of its
# time after INGEST_PROBE, there is room for both and it goes ahead; otherwise it waits until callbacks stop, but
# never longer than INGEST_PRIORITY_MAX_WAIT, so a sustained burst cannot starve handling.
INGEST_QUIET = 0.01  # seconds without a new callback after which the ingest counts as idle
INGEST_PROBE = 0.05
INGEST_SATURATED = 0.7
INGEST_PRIORITY_MAX_WAIT = 1.0


class Inbox:
    """Group commit for messages addressed to the bot."""

    MAX_BATCH = 200

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
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
            with sql.first_in_line():  # every acknowledgement waits for this write, nothing else should
                await self._write_batches()
        finally:
            self._writer = None

    async def _write_batches(self) -> None:
        while self._waiting:
            batch = [self._waiting.popleft() for _ in range(min(self.MAX_BATCH, len(self._waiting)))]
            try:
                rows = await store_bot_messages(self.directory, [msg for msg, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (_, future), row in zip(batch, rows, strict=True):
                    if not future.done():
                        future.set_result(row)


# Who sent a message addressed to the bot, resolved by the database inside the insert (registered, active staff):
# by the sender's account on the message's platform, or by the staff id a platform uses as its user id.
_BY_ACCOUNT = (
    "(SELECT a.staff_id FROM staff_account a JOIN staff s ON s.id = a.staff_id"
    " WHERE a.platform = ? AND a.user_id = ? AND s.active)"
)
_BY_STAFF_ID = "(SELECT id FROM staff WHERE id = ? AND active)"
_VALUES = ", ".join("?" * 11)
_COLUMNS = "platform, msgid, to_bot, sender, receivers, room_id, msgtype, text, payload, sent_at, received_at, staff_id"


async def store_bot_messages(directory: Directory, messages: list[IncomingMessage]) -> list[int | None]:
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
        )
        identity = directory.get(m.platform)
        staff_id = identity.own_staff_id(m.sender) if identity is not None else None
        if staff_id is not None:
            params.append(staff_id)
            rows.append(f"({_VALUES}, {_BY_STAFF_ID})")
        else:
            params += (m.platform, m.sender)
            rows.append(f"({_VALUES}, {_BY_ACCOUNT})")
    statement = (
        f"INSERT INTO message ({_COLUMNS}) VALUES {', '.join(rows)}"
        " ON CONFLICT (platform, msgid) DO NOTHING RETURNING id, platform, msgid"
    )
    conn = sql.default()
    found = await conn.execute_query_dict(sql.for_conn(statement, conn), params)
    new = {(str(r["platform"]), str(r["msgid"])): int(r["id"]) for r in found}
    results: list[int | None] = []
    for msg in messages:
        message_id = new.pop((msg.platform, msg.msgid), None)  # a repeat within the batch is a duplicate too
        if message_id is None:
            log.info("duplicate delivery %s:%s ignored", msg.platform, msg.msgid)
        results.append(message_id)
    return results

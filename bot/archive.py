"""The one archive path: every customer conversation message, from every source, enters the database here.

Callbacks (``Bot.archive``), the platforms' chat-archive pullers and ``crmbot import messages`` all hand batches
of normalized ``IncomingMessage`` to ``archive_batch``. In one transaction it links each message to its customer
(a customer contact among sender and receivers, else the room's customer), the staff member and the room,
inserts the rows idempotently on (platform, msgid), indexes their text for search, applies recalls, counts a
rep's reply as contact on the profile, records per-item failures and moves the source's cursor. After the
commit the new rows go to the capabilities' archive hooks (keyword rules, NPS answers in the chat).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot import search, sql
from bot.context import Services
from bot.identity import Directory
from bot.messages import payload_of
from bot.sql import compact_json
from bot.types import IncomingMessage
from models.archive import ArchiveCursor, ArchiveFailure
from models.customers import Contact, Customer
from models.messages import Message
from models.opportunities import Opportunity

log = logging.getLogger(__name__)

RECALL = "recall"
# Serializes archive transactions on PostgreSQL so that "which rows are new" is exact under concurrency.
_PG_LOCK = 7_316_220_001


@dataclass(frozen=True, slots=True)
class Failure:
    """An archive item that could not be turned into a message (kept for the admin, never skipped silently)."""

    seq: int
    msgid: str
    code: int
    reason: str
    key_version: int | None = None


@dataclass
class BatchResult:
    new: list[Message] = field(default_factory=list)
    duplicates: int = 0
    failures: int = 0


async def archive_batch(
    bot: Services,
    messages: Sequence[IncomingMessage],
    *,
    source: str | None = None,
    seq: int | None = None,
    failures: Sequence[Failure] = (),
) -> BatchResult:
    """Store ``messages`` once each; with ``source``/``seq``, move that cursor in the same transaction."""
    result = BatchResult(failures=len(failures))
    unique: dict[tuple[str, str], IncomingMessage] = {}
    for msg in messages:
        if (msg.platform, msg.msgid) in unique:
            result.duplicates += 1
        else:
            unique[(msg.platform, msg.msgid)] = msg
    directory = bot.directory
    # The grams are computed before the transaction (long texts in slices that let the event loop in).
    grams = await search.prepare_grams(m.text for m in unique.values() if m.text)
    # PostgreSQL: the months' index partitions first (usually there already: created ahead).
    await search.ensure_partitions({search.month_of(search.time_key(m.sent_at)) for m in unique.values()})
    async with in_transaction() as conn:
        await sql.xact_lock(conn, _PG_LOCK)
        if unique:
            new = await _store(conn, directory, list(unique.values()))
            result.duplicates += len(unique) - len(new)
            result.new = new
            await _index(conn, new, grams)
            await _apply_recalls(conn, new)
            await _count_replies_as_contact(conn, directory, new)
        if failures:
            await ArchiveFailure.bulk_create(
                [
                    ArchiveFailure(
                        source=source or "",
                        seq=f.seq,
                        msgid=f.msgid[:128],
                        key_version=f.key_version,
                        code=f.code,
                        reason=f.reason[:255],
                    )
                    for f in failures
                ],
                ignore_conflicts=True,
                using_db=conn,
            )
        if source is not None and seq is not None:
            await _advance(conn, source, seq)
    if result.new:
        await _after_archived(bot, result.new)
    return result


async def cursor_of(source: str) -> int:
    cursor = await ArchiveCursor.get_or_none(source=source)
    return int(cursor.seq) if cursor else 0


async def _advance(conn: BaseDBAsyncClient, source: str, seq: int) -> None:
    """Move the cursor forward (never back) in the caller's transaction."""
    cursor = await ArchiveCursor.filter(source=source).select_for_update().using_db(conn).first()
    if cursor is None:
        await ArchiveCursor.create(source=source, seq=seq, using_db=conn)
    elif seq > cursor.seq:
        await ArchiveCursor.filter(id=cursor.id).using_db(conn).update(seq=seq)


async def _store(conn: BaseDBAsyncClient, directory: Directory, msgs: list[IncomingMessage]) -> list[Message]:
    by_platform: dict[str, list[IncomingMessage]] = {}
    for msg in msgs:
        by_platform.setdefault(msg.platform, []).append(msg)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for platform, group in by_platform.items():
        staff = await directory.staff_ids(platform, {u for m in group for u in (m.sender, *m.receivers)}, conn)
        customers = await _customer_ids(conn, directory, group)
        rows.extend(
            {
                "platform": platform,
                "msgid": m.msgid,
                "to_bot": False,
                "sender": m.sender,
                "receivers": list(m.receivers),
                "room_id": m.conversation_id,
                "msgtype": m.msgtype,
                "text": m.text,
                "payload": payload_of(m),
                "staff_id": staff.get(m.sender) or next((staff[r] for r in m.receivers if r in staff), None),
                "customer_id": customers.get(m.msgid),
                "sent_at": m.sent_at.astimezone(UTC),
                "received_at": now,
                "handled_at": None,
            }
            for m in group
        )
    # Only the rows the database did not have come back: "which rows are new" is the insert's own answer.
    ids = await (_copy_returning(conn, rows) if sql.is_postgres(conn) else _insert_returning(conn, rows))
    # The rows as stored, materialized the way the ORM materializes rows it reads (without reading them).
    stored = [
        Message._init_from_db(id=ids[(r["platform"], r["msgid"])], **r)
        for r in rows
        if (r["platform"], r["msgid"]) in ids
    ]
    stored.sort(key=lambda m: m.id)
    return stored


_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS message_import (platform TEXT, msgid TEXT, sender TEXT, receivers TEXT,"
    " room_id TEXT, msgtype TEXT, text TEXT, payload TEXT, staff_id INTEGER, customer_id INTEGER,"
    " sent_at TIMESTAMPTZ) ON COMMIT DELETE ROWS"
)
_STAGED = ("platform", "msgid", "sender", "receivers", "room_id", "msgtype", "text", "payload", "staff_id")
_PG_INSERT = (
    "INSERT INTO message (platform, msgid, to_bot, sender, receivers, room_id, msgtype, text, payload, staff_id,"
    " customer_id, sent_at, received_at)"
    " SELECT platform, msgid, FALSE, sender, receivers::jsonb, room_id, msgtype, text, payload::jsonb, staff_id,"
    " customer_id, sent_at, $1 FROM message_import"
    " ON CONFLICT (platform, msgid) DO NOTHING RETURNING id, platform, msgid"
)


async def _copy_returning(conn: BaseDBAsyncClient, rows: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """PostgreSQL: the batch copied (COPY, binary) into a staging table of the transaction, then moved in one
    ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING``: the rows it returns are exactly the new ones."""
    raw = search.raw_connection(conn)
    await raw.execute(_STAGING)
    await raw.copy_records_to_table(
        "message_import",
        records=[
            (
                r["platform"],
                r["msgid"],
                r["sender"],
                compact_json(r["receivers"]),
                r["room_id"],
                r["msgtype"],
                r["text"],
                compact_json(r["payload"]),
                r["staff_id"],
                r["customer_id"],
                r["sent_at"],
            )
            for r in rows
        ],
        columns=[*_STAGED, "customer_id", "sent_at"],
    )
    returned = await raw.fetch(_PG_INSERT, rows[0]["received_at"])
    return {(str(r["platform"]), str(r["msgid"])): int(r["id"]) for r in returned}


_COLUMNS = (
    "platform",
    "msgid",
    "to_bot",
    "sender",
    "receivers",
    "room_id",
    "msgtype",
    "text",
    "payload",
    "staff_id",
    "customer_id",
    "sent_at",
    "received_at",
)
# SQLite binds at most 32,766 parameters a statement.
_SQLITE_ROWS = 32_766 // len(_COLUMNS)


async def _insert_returning(conn: BaseDBAsyncClient, rows: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """SQLite: multi-row ``INSERT OR IGNORE … RETURNING``, as few statements as the parameter limit allows (the
    ORM's bulk_create costs more per row than the database does, and an import inserts millions); the rows
    returned are exactly the new ones."""
    ids: dict[tuple[str, str], int] = {}
    row_marks = "(" + ", ".join("?" * len(_COLUMNS)) + ")"
    for start in range(0, len(rows), _SQLITE_ROWS):
        chunk = rows[start : start + _SQLITE_ROWS]
        params: list[Any] = []
        for r in chunk:
            params += (
                r["platform"],
                r["msgid"],
                False,
                r["sender"],
                compact_json(r["receivers"]),
                r["room_id"],
                r["msgtype"],
                r["text"],
                compact_json(r["payload"]),
                r["staff_id"],
                r["customer_id"],
                r["sent_at"],
                r["received_at"],
            )
        returned = await conn.execute_query_dict(
            f"INSERT OR IGNORE INTO message ({', '.join(_COLUMNS)}) VALUES {', '.join([row_marks] * len(chunk))}"
            " RETURNING id, platform, msgid",
            params,
        )
        ids.update(((str(r["platform"]), str(r["msgid"])), int(r["id"])) for r in returned)
    return ids


async def _customer_ids(conn: BaseDBAsyncClient, directory: Directory, msgs: list[IncomingMessage]) -> dict[str, int]:
    """msgid → customer id: a customer contact in the conversation, else the room's known customer."""
    externals = {u for m in msgs for u in (m.sender, *m.receivers) if directory.is_external(m.platform, u)}
    contact_of: dict[str, int] = {}
    if externals:
        pairs = (
            await Contact.filter(external_userid__in=externals)
            .using_db(conn)
            .values_list("external_userid", "customer_id")
        )
        contact_of = {str(e): int(str(c)) for e, c in pairs}
    linked: dict[str, int] = {}
    room_of: dict[str, int] = {}
    for m in msgs:
        customer = next((contact_of[u] for u in (m.sender, *m.receivers) if u in contact_of), None)
        if customer is not None:
            linked[m.msgid] = customer
            if m.conversation_id:
                room_of.setdefault(m.conversation_id, customer)
    unresolved_rooms = {m.conversation_id for m in msgs if m.msgid not in linked and m.conversation_id} - set(room_of)
    if unresolved_rooms:
        room_of.update(
            (str(room), int(str(cid)))
            for room, cid in await Message.filter(room_id__in=unresolved_rooms, customer_id__not_isnull=True)
            .using_db(conn)
            .values_list("room_id", "customer_id")
        )
    if room_of:
        for m in msgs:
            if m.msgid not in linked and m.conversation_id in room_of:
                linked[m.msgid] = room_of[m.conversation_id]
    return linked


async def _index(conn: BaseDBAsyncClient, rows: list[Message], grams: dict[str, list[str]]) -> None:
    await search.index_messages(
        conn,
        [(m.id, m.sent_at, m.text, m.customer_id) for m in rows if m.text and (m.payload or {}).get("event") != RECALL],
        grams,
    )


async def _apply_recalls(conn: BaseDBAsyncClient, rows: list[Message]) -> None:
    """A recall keeps the recalled row (lossless) but marks it and takes it out of search."""
    targets: dict[str, list[str]] = {}
    for m in rows:
        payload = m.payload or {}
        if payload.get("event") == RECALL and payload.get("event_key"):
            targets.setdefault(m.platform, []).append(str(payload["event_key"]))
    for platform, msgids in targets.items():
        recalled = await Message.filter(platform=platform, msgid__in=msgids).using_db(conn)
        for row in recalled:
            row.payload = {**(row.payload or {}), "recalled": True}
            await row.save(using_db=conn, update_fields=["payload"])
        await search.hide_messages(conn, [r.id for r in recalled])


async def _count_replies_as_contact(conn: BaseDBAsyncClient, directory: Directory, rows: list[Message]) -> None:
    """A rep's own message to a customer is contact: last_followup_at moves forward, never back, and with it when
    the customer's deals last moved."""
    latest: dict[int, datetime] = {}
    for m in rows:
        identity = directory.get(m.platform)
        if m.customer_id is None or m.staff_id is None or (identity and identity.is_external(m.sender)):
            continue
        if (m.payload or {}).get("event") or m.msgtype in ("event", "revoke"):
            continue
        if not (identity and any(identity.is_external(r) for r in m.receivers or ())) and not m.room_id:
            continue
        if m.customer_id not in latest or m.sent_at > latest[m.customer_id]:
            latest[m.customer_id] = m.sent_at
    if not latest:
        return
    # One statement for the batch, guarded in SQL: a follow-up logged meanwhile is never overwritten by an older
    # reply, and the date never moves back.
    field = Customer._meta.fields_map["last_followup_at"]
    if sql.is_postgres(conn):
        await conn.execute_query(
            "UPDATE customer c SET last_followup_at = v.at FROM unnest($1::int[], $2::timestamptz[]) AS v(id, at)"
            " WHERE c.id = v.id AND (c.last_followup_at IS NULL OR c.last_followup_at < v.at)",
            [list(latest), list(latest.values())],
        )
        await conn.execute_query(
            "UPDATE opportunity o SET last_moved_at = v.at FROM unnest($1::int[], $2::timestamptz[]) AS v(id, at)"
            " WHERE o.customer_id = v.id AND o.last_moved_at < v.at",
            [list(latest), list(latest.values())],
        )
        return
    await conn.execute_many(
        "UPDATE customer SET last_followup_at = ?1 WHERE id = ?2"
        " AND (last_followup_at IS NULL OR last_followup_at < ?1)",
        [[field.to_db_value(at, Customer), cid] for cid, at in latest.items()],
    )
    # The customer's deals last moved then too (the funnel's stalled deals), forward only as well.
    moved = Opportunity._meta.fields_map["last_moved_at"]
    await conn.execute_many(
        "UPDATE opportunity SET last_moved_at = ?1 WHERE customer_id = ?2 AND last_moved_at < ?1",
        [[moved.to_db_value(at, Opportunity), cid] for cid, at in latest.items()],
    )


async def _after_archived(bot: Services, rows: list[Message]) -> None:
    for hook in bot.archive_hooks:
        try:
            await hook(bot, rows)
        except Exception:  # the messages are safely stored; a hook failing must not undo or block that
            log.exception("archive hook %s failed on %d archived messages", getattr(hook, "__name__", hook), len(rows))
    bot.outbox.wake()

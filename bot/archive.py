"""The one archive path: every customer conversation message, from every source, enters the database here.

Callbacks (``Bot.archive``), the platforms' chat-archive pullers and ``crmbot import messages`` all hand batches
of normalized ``IncomingMessage`` to ``archive_batch`` (or, prepared elsewhere as plain rows, to
``archive_prepared``: what depends on a message alone, such as its row's JSON and its index grams, is computed
before). In one transaction it links each message to its customer (a customer contact among sender and receivers,
else the room's customer), the staff member and the room, inserts the rows idempotently on (platform, msgid),
indexes their text for search, applies recalls, counts a rep's reply as contact on the profile, records per-item
failures and moves the source's cursor. After the commit the new rows go to the capabilities' archive hooks
(keyword rules, NPS answers in the chat) as plain ``ArchivedMessage`` values.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot import search, sql
from bot.context import Services
from bot.identity import Directory
from bot.jsontext import compact_json
from bot.messages import payload_of
from bot.types import ArchivedMessage, IncomingMessage
from models.archive import ArchiveCursor, ArchiveFailure
from models.customers import Contact, Customer
from models.messages import Message
from models.opportunities import Opportunity

log = logging.getLogger(__name__)

RECALL = "recall"
# Serializes archive transactions on PostgreSQL so that "which rows are new" is exact under concurrency.
_PG_LOCK = 7_316_220_001
BULK_CACHE_KIB = 256 * 1024  # SQLite page cache during a bulk import (allocated as it fills)


@dataclass(frozen=True, slots=True)
class Failure:
    """An archive item that could not be turned into a message (kept for the admin, never skipped silently)."""

    seq: int
    msgid: str
    code: int
    reason: str
    key_version: int | None = None


class Prepared(NamedTuple):
    """A message ready to be stored: everything that depends on the message alone (its row's JSON, its normalized
    body and grams for the index), in plain values that cross a process boundary cheaply; a bulk import prepares
    them in worker processes."""

    platform: str
    msgid: str
    sender: str
    receivers: tuple[str, ...]
    room_id: str
    msgtype: str
    text: str
    event: str
    event_key: str
    payload: str  # compact JSON
    receivers_json: str
    sent_at: datetime  # UTC
    body: str  # normalized text to index; empty: not indexed
    grams: str  # the body's ``search.gram_text``


def prepare(msg: IncomingMessage) -> Prepared:
    """``msg`` ready to be stored."""
    body = _indexed_body(msg)
    return _prepared(msg, body, search.gram_text(body))


def _indexed_body(msg: IncomingMessage) -> str:
    """The normalized text the search index takes; empty for a message not indexed (no text, a recall)."""
    return search.normalize(msg.text) if msg.text and msg.event != RECALL else ""


def _prepared(msg: IncomingMessage, body: str, grams: str) -> Prepared:
    return Prepared(
        msg.platform,
        msg.msgid,
        msg.sender,
        msg.receivers,
        msg.conversation_id,
        msg.msgtype,
        msg.text,
        msg.event,
        msg.event_key,
        compact_json(payload_of(msg)),
        compact_json(list(msg.receivers)),
        msg.sent_at.astimezone(UTC),
        body,
        grams,
    )


@dataclass
class BatchResult:
    new: list[ArchivedMessage] = field(default_factory=list)
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
    # The grams are computed before the transaction (long texts in slices that let the event loop in).
    rows = []
    for msg in messages:
        body = _indexed_body(msg)
        rows.append(_prepared(msg, body, await search.gram_text_between(body)))
    return await archive_prepared(bot, rows, source=source, seq=seq, failures=failures)


async def archive_prepared(
    bot: Services,
    rows: Sequence[Prepared],
    *,
    source: str | None = None,
    seq: int | None = None,
    failures: Sequence[Failure] = (),
) -> BatchResult:
    """``archive_batch`` of messages prepared beforehand (``prepare``)."""
    result = BatchResult(failures=len(failures))
    unique: dict[tuple[str, str], Prepared] = {}
    for row in rows:
        if (row.platform, row.msgid) in unique:
            result.duplicates += 1
        else:
            unique[(row.platform, row.msgid)] = row
    directory = bot.directory
    if sql.is_postgres():  # the months' index partitions first (usually there already: created ahead)
        await search.ensure_partitions({search.month_at(r.sent_at) for r in unique.values()})
    async with in_transaction() as conn:
        await sql.xact_lock(conn, _PG_LOCK)
        if unique:
            stored = await _store(conn, directory, list(unique.values()))
            new = [m for m, _ in stored]
            result.duplicates += len(unique) - len(new)
            result.new = new
            await search.index_messages(
                conn, [(m.id, m.sent_at, r.body, r.grams, m.customer_id) for m, r in stored if r.body]
            )
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


@asynccontextmanager
async def bulk_import() -> AsyncIterator[None]:
    """For the span of a bulk import on SQLite: a page cache large enough for the indexes an import inserts all
    over (the default 2 MB had it read and write back the same pages over and over)."""
    conn = sql.default()
    if sql.is_postgres(conn):
        yield
        return
    before = int((await conn.execute_query_dict("PRAGMA cache_size"))[0]["cache_size"])
    await conn.execute_script(f"PRAGMA cache_size = {-BULK_CACHE_KIB}")
    try:
        yield
    finally:
        await conn.execute_script(f"PRAGMA cache_size = {before}")


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


async def _store(
    conn: BaseDBAsyncClient, directory: Directory, rows: list[Prepared]
) -> list[tuple[ArchivedMessage, Prepared]]:
    """Insert the rows the database does not have yet: those, as stored, in the order of their ids."""
    by_platform: dict[str, list[Prepared]] = {}
    for row in rows:
        by_platform.setdefault(row.platform, []).append(row)
    staff: dict[tuple[str, str], int] = {}
    customers: dict[tuple[str, str], int] = {}
    for platform, group in by_platform.items():
        found = await directory.staff_ids(platform, {u for r in group for u in (r.sender, *r.receivers)}, conn)
        staff.update(((platform, user), sid) for user, sid in found.items())
        customers.update(
            ((platform, msgid), cid) for msgid, cid in (await _customer_ids(conn, directory, platform, group)).items()
        )
    links = [
        (
            staff.get((r.platform, r.sender))
            or next((s for u in r.receivers if (s := staff.get((r.platform, u))) is not None), None),
            customers.get((r.platform, r.msgid)),
        )
        for r in rows
    ]
    now = datetime.now(UTC)
    # Only the rows the database did not have come back: "which rows are new" is the insert's own answer.
    ids = await (
        _copy_returning(conn, rows, links, now) if sql.is_postgres(conn) else _insert_returning(conn, rows, links, now)
    )
    stored = [
        (
            ArchivedMessage(
                row_id,
                r.platform,
                r.msgid,
                r.sender,
                r.receivers,
                r.room_id,
                r.msgtype,
                r.text,
                r.event,
                r.event_key,
                r.sent_at,
                staff_id,
                customer_id,
            ),
            r,
        )
        for r, (staff_id, customer_id) in zip(rows, links, strict=True)
        if (row_id := ids.get((r.platform, r.msgid))) is not None
    ]
    stored.sort(key=lambda pair: pair[0].id)
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


Links = list[tuple["int | None", "int | None"]]  # per row: its staff member's and its customer's id


async def _copy_returning(
    conn: BaseDBAsyncClient, rows: list[Prepared], links: Links, now: datetime
) -> dict[tuple[str, str], int]:
    """PostgreSQL: the batch copied (COPY, binary) into a staging table of the transaction, then moved in one
    ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING``: the rows it returns are exactly the new ones."""
    raw = search.raw_connection(conn)
    await raw.execute(_STAGING)
    await raw.copy_records_to_table(
        "message_import",
        records=[_values(r, link) for r, link in zip(rows, links, strict=True)],
        columns=[*_STAGED, "customer_id", "sent_at"],
    )
    returned = await raw.fetch(_PG_INSERT, now)
    return {(str(r["platform"]), str(r["msgid"])): int(r["id"]) for r in returned}


def _values(r: Prepared, link: tuple[int | None, int | None]) -> tuple[Any, ...]:
    """A message row's values in ``_STAGED`` order, then its customer and its send time."""
    staff_id, customer_id = link
    return (r.platform, r.msgid, r.sender, r.receivers_json, r.room_id, r.msgtype, r.text, r.payload, staff_id,
            customer_id, r.sent_at)  # fmt: skip


_COLUMNS = (*_STAGED, "customer_id", "sent_at", "to_bot", "received_at")
# SQLite binds at most 32,766 parameters a statement.
_SQLITE_ROWS = 32_766 // len(_COLUMNS)


async def _insert_returning(
    conn: BaseDBAsyncClient, rows: list[Prepared], links: Links, now: datetime
) -> dict[tuple[str, str], int]:
    """SQLite: multi-row ``INSERT OR IGNORE … RETURNING``, as few statements as the parameter limit allows (the
    ORM's bulk_create costs more per row than the database does, and an import inserts millions); the rows
    returned are exactly the new ones."""
    ids: dict[tuple[str, str], int] = {}
    row_marks = "(" + ", ".join("?" * len(_COLUMNS)) + ")"
    for start in range(0, len(rows), _SQLITE_ROWS):
        chunk = rows[start : start + _SQLITE_ROWS]
        params: list[Any] = []
        for r, link in zip(chunk, links[start : start + _SQLITE_ROWS], strict=True):
            params += (*_values(r, link), False, now)
        returned = await conn.execute_query_dict(
            f"INSERT OR IGNORE INTO message ({', '.join(_COLUMNS)}) VALUES {', '.join([row_marks] * len(chunk))}"
            " RETURNING id, platform, msgid",
            params,
        )
        ids.update(((str(r["platform"]), str(r["msgid"])), int(r["id"])) for r in returned)
    return ids


async def _customer_ids(
    conn: BaseDBAsyncClient, directory: Directory, platform: str, rows: list[Prepared]
) -> dict[str, int]:
    """msgid → customer id: a customer contact in the conversation, else the room's known customer."""
    users = {u for r in rows for u in (r.sender, *r.receivers)}
    externals = {u for u in users if directory.is_external(platform, u)}
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
    for r in rows:
        customer = next((contact_of[u] for u in (r.sender, *r.receivers) if u in contact_of), None)
        if customer is not None:
            linked[r.msgid] = customer
            if r.room_id:
                room_of.setdefault(r.room_id, customer)
    unresolved_rooms = {r.room_id for r in rows if r.msgid not in linked and r.room_id} - set(room_of)
    if unresolved_rooms:
        room_of.update(
            (str(room), int(str(cid)))
            for room, cid in await Message.filter(room_id__in=unresolved_rooms, customer_id__not_isnull=True)
            .using_db(conn)
            .values_list("room_id", "customer_id")
        )
    if room_of:
        for r in rows:
            if r.msgid not in linked and r.room_id in room_of:
                linked[r.msgid] = room_of[r.room_id]
    return linked


async def _apply_recalls(conn: BaseDBAsyncClient, rows: list[ArchivedMessage]) -> None:
    """A recall keeps the recalled row (lossless) but marks it and takes it out of search."""
    targets: dict[str, list[str]] = {}
    for m in rows:
        if m.event == RECALL and m.event_key:
            targets.setdefault(m.platform, []).append(m.event_key)
    for platform, msgids in targets.items():
        recalled = await Message.filter(platform=platform, msgid__in=msgids).using_db(conn)
        for row in recalled:
            row.payload = {**(row.payload or {}), "recalled": True}
            await row.save(using_db=conn, update_fields=["payload"])
        await search.hide_messages(conn, [r.id for r in recalled])


async def _count_replies_as_contact(conn: BaseDBAsyncClient, directory: Directory, rows: list[ArchivedMessage]) -> None:
    """A rep's own message to a customer is contact: last_followup_at moves forward, never back, and with it when
    the customer's deals last moved."""
    latest: dict[int, datetime] = {}
    for m in rows:
        identity = directory.get(m.platform)
        if m.customer_id is None or m.staff_id is None or (identity and identity.is_external(m.sender)):
            continue
        if m.event or m.msgtype in ("event", "revoke"):
            continue
        if not (identity and any(identity.is_external(r) for r in m.receivers)) and not m.room_id:
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


async def _after_archived(bot: Services, rows: list[ArchivedMessage]) -> None:
    for hook in bot.archive_hooks:
        try:
            await hook(bot, rows)
        except Exception:  # the messages are safely stored; a hook failing must not undo or block that
            log.exception("archive hook %s failed on %d archived messages", getattr(hook, "__name__", hook), len(rows))
    bot.outbox.wake()

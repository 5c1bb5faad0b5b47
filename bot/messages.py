"""How an ``IncomingMessage`` is kept in a ``message`` row and read back: the columns, plus a JSON payload with
what has no column (the sender's name, the event, the click, the reply route, the platform's own record). Rows are
read back with raw SQL (``COLUMNS``), without building models: handling reads every message it handles."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot import sql
from bot.jsontext import parse_json
from bot.types import Click, IncomingMessage


def payload_of(msg: IncomingMessage) -> dict[str, Any]:
    """What a row keeps beyond its columns."""
    payload: dict[str, Any] = {
        "sender_name": msg.sender_name,
        "is_group": msg.is_group,
        "event": msg.event,
        "event_key": msg.event_key,
        "reply_to": msg.reply_to,
        "raw": msg.raw,
    }
    if msg.click is not None:
        payload["click"] = {"key": msg.click.key, "card_id": msg.click.card_id, "handle": msg.click.handle}
    return payload


# The columns ``incoming_of`` reads, for a raw query.
COLUMNS = "id, platform, msgid, to_bot, sender, receivers, room_id, msgtype, text, payload, sent_at, staff_id"


def incoming_of(row: Mapping[str, Any]) -> IncomingMessage:
    """The message a row (``COLUMNS`` from a raw query) holds, as it came in."""
    payload = _json(row["payload"]) or {}
    click = payload.get("click")
    return IncomingMessage(
        platform=row["platform"],
        msgid=row["msgid"],
        sender=row["sender"],
        text=row["text"],
        sent_at=sql.moment(row["sent_at"]),
        msgtype=row["msgtype"],
        sender_name=payload.get("sender_name", ""),
        conversation_id=row["room_id"],
        is_group=bool(payload.get("is_group")),
        to_bot=bool(row["to_bot"]),
        receivers=tuple(_json(row["receivers"]) or ()),
        event=payload.get("event", ""),
        event_key=payload.get("event_key", ""),
        click=Click(str(click.get("key", "")), str(click.get("card_id", "")), str(click.get("handle", "")))
        if isinstance(click, dict)
        else None,
        reply_to=payload.get("reply_to") or {},
        raw=payload.get("raw") or {},
    )


def _json(value: Any) -> Any:
    """A JSON column from a raw query: text on SQLite (and from asyncpg), already decoded elsewhere."""
    return parse_json(value) if isinstance(value, (str, bytes)) else value

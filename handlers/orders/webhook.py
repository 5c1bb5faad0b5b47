"""``POST /erp/orders``: the ERP pushes order events, one (a JSON object) or a batch (``{"events": [...]}``).

A request is signed by the ERP with the shared ``erp.webhook_secret``: ``X-Crmbot-Timestamp`` (Unix seconds) and
``X-Crmbot-Signature`` = hex HMAC-SHA256 over ``timestamp + "\\n" + body``. Missing or stale credentials answer
401, a wrong signature 403, a body over ``erp.max_body_bytes`` 413, a malformed body or event, or an unknown
customer, 400, an event id seen before 409; in each of these cases nothing is written. A good request is written in
one transaction and answered 200 with what changed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from aiohttp import web
from tortoise.transactions import in_transaction

from bot.bodies import read_body
from bot.config import ErpSettings
from bot.jsontext import JSONError, parse_json
from bot.keys import BOT, CLOCK, SETTINGS
from bot.orderflow import apply_events, customer_ids, parse_events, remember_events
from handlers.orders.capability import capability

log = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-Crmbot-Timestamp"
SIGNATURE_HEADER = "X-Crmbot-Signature"


class Replayed(Exception):
    """Events taken in before: the request's transaction is rolled back."""

    def __init__(self, event_ids: list[str]) -> None:
        super().__init__(", ".join(event_ids))
        self.event_ids = event_ids


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature the ERP sends: hex HMAC-SHA256 of ``timestamp + "\\n" + body``."""
    return hmac.new(secret.encode(), timestamp.encode() + b"\n" + body, hashlib.sha256).hexdigest()


def refused(status: int, error: str, **details: Any) -> web.Response:
    return web.json_response({"error": error, **details}, status=status)


def _credentials(request: web.Request, body: bytes, erp: ErpSettings, now: float) -> web.Response | None:
    """None when the request is signed with the shared secret, recently; the refusal otherwise."""
    timestamp = request.headers.get(TIMESTAMP_HEADER, "")
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not erp.webhook_secret:
        return refused(403, "webhook not configured")
    if not (timestamp.isascii() and timestamp.isdigit()) or not signature:
        return refused(401, "missing credentials")
    if abs(now - int(timestamp)) > erp.timestamp_tolerance_seconds:
        return refused(401, "stale timestamp")
    # Bytes: compare_digest refuses str with characters beyond ASCII, and a header may carry any.
    if not hmac.compare_digest(sign(erp.webhook_secret, timestamp, body).encode(), signature.strip().lower().encode()):
        return refused(403, "bad signature")
    return None


def _items(body: bytes, erp: ErpSettings) -> list[Any] | str:
    """The events in the body, or why there are none."""
    try:
        decoded = parse_json(body)
    except JSONError:
        return "body is not JSON"
    items = decoded.get("events") if isinstance(decoded, dict) and "events" in decoded else [decoded]
    if not isinstance(items, list) or not items:
        return "events must be a non-empty array"
    if len(items) > erp.max_events:
        return f"at most {erp.max_events} events per request"
    return items


async def receive_orders(request: web.Request) -> web.Response:
    app = request.app
    settings, now = app[SETTINGS], app[CLOCK].now()
    erp = settings.erp
    body = await read_body(request, erp.max_body_bytes)
    if body is None:
        return refused(413, "body too large")
    if (refusal := _credentials(request, body, erp, now.timestamp())) is not None:
        return refusal
    items = _items(body, erp)
    if isinstance(items, str):
        return refused(400, items)
    events, rejected = parse_events(items, settings.tz)
    rejected += [f"订单 {e.order_no}: 缺少 event_id missing event_id" for e in events if not e.event_id]
    if rejected:
        return refused(400, "invalid events", reasons=rejected)
    try:
        async with in_transaction() as conn:
            known = await customer_ids((e.customer for e in events), conn)
            if unknown := sorted({e.customer for e in events if e.customer not in known}):
                return refused(400, "unknown customers", customers=unknown)
            # Recorded first: a replay (or a concurrent one, which waits for this request to end) rolls all back.
            if replayed := await remember_events(events, now, conn):
                raise Replayed(replayed)
            applied = await apply_events(events, known, settings, now, conn)
    except Replayed as exc:
        return refused(409, "replayed events", event_ids=exc.event_ids)
    log.info("erp webhook: %d event(s), %d new order(s), %d new step(s)", len(events), applied.orders, applied.statuses)
    app[BOT].outbox.wake()
    return web.json_response(
        {"accepted": len(events), "orders": applied.orders, "statuses": applied.statuses, "repeats": applied.repeats}
    )


capability.route("POST", "/erp/orders", receive_orders)

"""``POST /dingtalk/callback``: the enterprise robot's HTTP callback.

DingTalk signs the request headers, not the body: ``sign = base64(HMAC-SHA256(key=appSecret,
msg=timestamp + "\\n" + appSecret))`` with ``timestamp`` in milliseconds, and the request is only valid within
an hour of that timestamp (PROTOCOLS.md §6-7). Order of checks: the signature and the time window (403, compared
in constant time, "now" from the app clock), the body size (413, aiohttp's ``client_max_size``), the JSON and its
fields (400). Only then is the message stored, idempotently on ``msgId``, and the answer is an immediate
``200 {}``: replies leave later through the outbox (sessionWebhook or batchSend), never in this response.

Because the signature does not cover the body, a captured header pair could be replayed with another body
within the window; the message id de-duplication and the sessionWebhook host check (``normalize``) limit what
such a replay can do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging

from aiohttp import web

from bot.keys import BOT, CLOCK
from integrations.dingtalk.normalize import NotAMessage, normalize
from integrations.dingtalk.settings import settings_of

log = logging.getLogger(__name__)


class SignatureError(Exception):
    """Missing or wrong signature, or a timestamp outside the window (HTTP 403)."""


def sign(timestamp: str, secret: str) -> str:
    """The ``sign`` header DingTalk sends with ``timestamp`` for an app whose secret is ``secret``."""
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify(timestamp: str, signature: str, secret: str, now_ms: int, window_ms: int) -> None:
    """Raise ``SignatureError`` unless ``signature`` is right for ``timestamp`` and the timestamp is recent."""
    if not timestamp or not signature or not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 16:
        raise SignatureError("missing or malformed timestamp/sign")
    if abs(now_ms - int(timestamp)) > window_ms:
        raise SignatureError("timestamp outside the accepted window")
    if not hmac.compare_digest(sign(timestamp, secret).encode(), signature.encode("utf-8", "replace")):
        raise SignatureError("bad sign")


async def receive(request: web.Request) -> web.Response:
    settings = settings_of(request.app)
    now_ms = int(request.app[CLOCK].now().timestamp() * 1000)
    try:
        verify(
            request.headers.get("timestamp", "").strip(),
            request.headers.get("sign", "").strip(),
            settings.app_secret,
            now_ms,
            settings.callback_window_seconds * 1000,
        )
    except SignatureError as exc:
        log.warning("dingtalk callback rejected from %s: %s", request.remote, exc)
        raise web.HTTPForbidden(text="bad sign") from None
    raw = await request.read()  # raises 413 beyond client_max_size
    try:
        body = json.loads(raw.decode("utf-8"))
        msg = normalize(body, settings.robot_name, settings.session_webhook_prefix)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise web.HTTPBadRequest(text="malformed JSON") from None
    except NotAMessage as exc:
        log.warning("dingtalk callback rejected: %s", exc)
        raise web.HTTPBadRequest(text=f"malformed message: {exc}") from None
    await request.app[BOT].receive(msg)
    return web.json_response({})

"""``POST /dingtalk/callback``: the enterprise robot's HTTP callback.

DingTalk signs the request headers, not the body: ``sign = base64(HMAC-SHA256(key=appSecret,
msg=timestamp + "\\n" + appSecret))`` with ``timestamp`` in milliseconds, and the request is only valid within
an hour of that timestamp (PROTOCOLS.md §6-7). Order of checks: the signature and the time window (403, compared
in constant time, "now" from the app clock), the body size (413, aiohttp's ``client_max_size``), UTF-8, JSON no
deeper than ``MAX_JSON_DEPTH`` and its fields (400), the body's robot against the configured one (403), and the
header pair not seen before with another body (403). Only then is the message stored, idempotently on ``msgId``,
and the answer is an immediate ``200 {}``: replies leave later through the outbox (sessionWebhook or batchSend),
never in this response. Every refusal writes nothing and logs one warning line.

Because the signature does not cover the body, a captured header pair could otherwise be replayed with another
body within the window: ``ReplayGuard`` records every accepted pair in the database (``SeenSignature``, shared
by every instance) with the digest of its body, so the pair is good for that body only. The same body again is a
retry, which the ``msgId`` de-duplication absorbs; the ``sessionWebhook`` is only used when it is a plain URL on
DingTalk's host (``normalize.safe_webhook``). Stream mode has none of this exposure (README.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from tortoise.exceptions import IntegrityError

from bot.clock import Clock
from bot.jsontext import JSONError, parse_json
from bot.keys import BOT, CLOCK
from integrations.dingtalk.normalize import NotAMessage, NotOurRobot, check_robot, normalize
from integrations.dingtalk.settings import settings_of
from models.seen import SeenSignature

log = logging.getLogger(__name__)

MAX_JSON_DEPTH = 8  # a robot message is at most four levels deep (body → content → richText → part)
SCOPE = "dingtalk-callback"
SWEEP_SECONDS = 60.0
# Rows outlive the window by this much, for instances whose clocks disagree by up to as much.
CLOCK_SKEW = timedelta(minutes=5)


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


class ReplayGuard:
    """Header pairs accepted once: a (timestamp, sign) pair authenticates the first body it came with, and no
    other, until its window has passed; expired pairs are swept at most every ``SWEEP_SECONDS``."""

    def __init__(self, clock: Clock, window_seconds: int) -> None:
        self.clock = clock
        self.window = timedelta(seconds=window_seconds)
        self._next_sweep: datetime | None = None

    async def admit(self, timestamp: str, signature: str, body: bytes) -> bool:
        """True when the pair is new, or was first seen with this very body (a retry); False for another body."""
        await self._sweep()
        key, digest = f"{timestamp}:{signature}", hashlib.sha256(body).hexdigest()
        expires_at = datetime.fromtimestamp(int(timestamp) / 1000, UTC) + self.window + CLOCK_SKEW
        try:
            await SeenSignature.create(scope=SCOPE, key=key, digest=digest, expires_at=expires_at)
            return True
        except IntegrityError:
            seen = await SeenSignature.get_or_none(scope=SCOPE, key=key)
            return seen is not None and hmac.compare_digest(seen.digest, digest)

    async def _sweep(self) -> None:
        now = self.clock.now()
        if self._next_sweep is not None and now < self._next_sweep:
            return
        self._next_sweep = now + timedelta(seconds=SWEEP_SECONDS)
        await SeenSignature.filter(scope=SCOPE, expires_at__lt=now).delete()


REPLAY = web.AppKey("dingtalk_replay", ReplayGuard)


def read_json(raw: bytes) -> Any:
    """The JSON document in ``raw``: UTF-8, no deeper than ``MAX_JSON_DEPTH``; else ``NotAMessage``."""
    try:
        doc = parse_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise NotAMessage("body is not UTF-8") from None
    except JSONError as exc:  # also a lone surrogate ("\ud800"), which no column could store
        if "depth" in exc.msg:  # the parser's own limit (1,024 levels), far beyond ours, reached first
            raise NotAMessage(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        raise NotAMessage("body is not JSON") from None
    if _depth(doc) > MAX_JSON_DEPTH:
        raise NotAMessage(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return doc


def _depth(doc: Any) -> int:
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, level)
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, level + 1) for child in children)
    return deepest


def _refuse(request: web.Request, error: type[web.HTTPClientError], reason: str) -> web.HTTPClientError:
    """The one warning line a refused callback leaves, and the HTTP error that answers it."""
    log.warning("dingtalk callback from %s refused (%d): %s", request.remote, error.status_code, reason)
    return error(text=reason)


async def receive(request: web.Request) -> web.Response:
    settings = settings_of(request.app)
    now_ms = int(request.app[CLOCK].now().timestamp() * 1000)
    timestamp, signature = request.headers.get("timestamp", "").strip(), request.headers.get("sign", "").strip()
    try:
        verify(timestamp, signature, settings.app_secret, now_ms, settings.callback_window_seconds * 1000)
    except SignatureError as exc:
        raise _refuse(request, web.HTTPForbidden, str(exc)) from None
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        log.warning("dingtalk callback from %s refused (413): body too large", request.remote)
        raise
    try:
        body = read_json(raw)
        msg = normalize(body, settings.robot_name, settings.session_webhook_prefix)
        check_robot(body, settings.robot_code, settings.chatbot_user_id)
    except NotAMessage as exc:
        raise _refuse(request, web.HTTPBadRequest, f"malformed message: {exc}") from None
    except NotOurRobot as exc:
        raise _refuse(request, web.HTTPForbidden, str(exc)) from None
    if not await request.app[REPLAY].admit(timestamp, signature, raw):
        raise _refuse(request, web.HTTPForbidden, "timestamp and sign already used for another body")
    await request.app[BOT].receive(msg)
    return web.json_response({})

"""``GET|POST /wecom/callback``: URL verification and message push from a WeCom self-built app.

Order of checks for a push: parse the envelope (400), verify ``msg_signature`` in constant time (403), decrypt
and check the corp id (400 / 403), parse the message (400), store it, then answer 200 at once; handling runs
in a tracked task. Nothing is written before every check has passed.
"""

from __future__ import annotations

import logging

from aiohttp import web

from bot.keys import BOT
from bot.metrics import CallbackTimer
from integrations.wecom.crypto import CorpIdError, MalformedError, SignatureError, WeComCrypto
from integrations.wecom.normalize import NotAMessage, normalize, parse_xml

log = logging.getLogger(__name__)

CRYPTO = web.AppKey("wecom_crypto", WeComCrypto)


def _query(request: web.Request) -> tuple[str, str, str]:
    q = request.query
    return q.get("msg_signature", ""), q.get("timestamp", ""), q.get("nonce", "")


async def verify_url(request: web.Request) -> web.Response:
    crypto = request.app[CRYPTO]
    signature, timestamp, nonce = _query(request)
    # yarl decodes a raw '+' to ' '; base64 never contains spaces, so restore them (PROTOCOLS.md §0).
    echostr = request.query.get("echostr", "").replace(" ", "+")
    if not echostr:
        raise web.HTTPBadRequest(text="missing echostr")
    try:
        crypto.verify(signature, timestamp, nonce, echostr)
        plain = crypto.decrypt(echostr)
    except SignatureError:
        log.warning("wecom URL verification with a bad signature from %s", request.remote)
        raise web.HTTPForbidden(text="bad signature") from None
    except CorpIdError:
        raise web.HTTPForbidden(text="corp id mismatch") from None
    except MalformedError:
        raise web.HTTPBadRequest(text="cannot decrypt echostr") from None
    return web.Response(text=plain)


async def receive(request: web.Request) -> web.Response:
    with CallbackTimer(request.app, "wecom") as timer:
        new = await _receive(request)
        timer.result = "ok" if new else "duplicate"
    return web.Response()  # 200 with an empty body: received


async def _receive(request: web.Request) -> bool:
    crypto = request.app[CRYPTO]
    signature, timestamp, nonce = _query(request)
    body = await request.text()
    try:
        envelope = parse_xml(body)
    except NotAMessage:
        raise web.HTTPBadRequest(text="malformed body") from None
    encrypt = envelope.get("Encrypt")
    if not isinstance(encrypt, str) or not encrypt:
        raise web.HTTPBadRequest(text="missing Encrypt")
    try:
        crypto.verify(signature, timestamp, nonce, encrypt)
    except SignatureError:
        log.warning("wecom callback with a bad signature from %s", request.remote)
        raise web.HTTPForbidden(text="bad signature") from None
    try:
        msg = normalize(parse_xml(crypto.decrypt(encrypt)))
    except CorpIdError:
        log.warning("wecom callback for another corp from %s", request.remote)
        raise web.HTTPForbidden(text="corp id mismatch") from None
    except (MalformedError, NotAMessage) as exc:
        log.warning("wecom callback rejected: %s", exc)
        raise web.HTTPBadRequest(text="malformed message") from None
    return await request.app[BOT].receive(msg)

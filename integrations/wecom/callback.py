"""``GET|POST /wecom/callback``: URL verification and message push from a WeCom self-built app.

Order of checks for a push: the body's size (413) and encoding (UTF-8, 400); the ``Encrypt`` value taken from the
envelope by the flat reader, or by the hardened parser within its limits (400); the signed ``timestamp`` within
``[wecom] callback_window_seconds`` of our clock (403); ``msg_signature`` over it in constant time (403); only
then the decrypt and corp-id check (400 / 403), the message parsed (400) and its ``CreateTime`` checked (400).
Then the message is stored and the answer is 200 at once; handling runs in a tracked task. Every refusal writes
nothing and logs one warning line.
"""

from __future__ import annotations

import logging

from aiohttp import web

from bot.keys import BOT, CLOCK
from bot.metrics import CallbackTimer
from integrations.wecom.crypto import CorpIdError, MalformedError, SignatureError, WeComCrypto
from integrations.wecom.normalize import MAX_XML_CHARS, NotAMessage, normalize, parse_xml
from integrations.wecom.settings import settings_of

log = logging.getLogger(__name__)

CRYPTO = web.AppKey("wecom_crypto", WeComCrypto)


def _query(request: web.Request) -> tuple[str, str, str]:
    q = request.query
    return q.get("msg_signature", ""), q.get("timestamp", ""), q.get("nonce", "")


def _refuse(request: web.Request, error: type[web.HTTPClientError], reason: str) -> web.HTTPClientError:
    """The one warning line a refused callback leaves, and the HTTP error that answers it."""
    log.warning("wecom callback from %s refused (%d): %s", request.remote, error.status_code, reason)
    return error(text=reason)


def _authenticate(request: web.Request, encrypt: str) -> None:
    """The signed timestamp is recent and ``msg_signature`` covers it with ``encrypt``; else 403."""
    signature, timestamp, nonce = _query(request)
    now = request.app[CLOCK].now().timestamp()
    window = settings_of(request.app).callback_window_seconds
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise _refuse(request, web.HTTPForbidden, "missing or malformed timestamp")
    if abs(now - int(timestamp)) > window:
        raise _refuse(request, web.HTTPForbidden, "timestamp outside the accepted window")
    try:
        request.app[CRYPTO].verify(signature, timestamp, nonce, encrypt)
    except SignatureError:
        raise _refuse(request, web.HTTPForbidden, "bad signature") from None


def _decrypt(request: web.Request, encrypt: str) -> str:
    try:
        return request.app[CRYPTO].decrypt(encrypt)
    except CorpIdError:
        raise _refuse(request, web.HTTPForbidden, "corp id mismatch") from None
    except MalformedError as exc:
        raise _refuse(request, web.HTTPBadRequest, f"cannot decrypt: {exc}") from None


async def verify_url(request: web.Request) -> web.Response:
    # yarl decodes a raw '+' to ' '; base64 never contains spaces, so restore them (PROTOCOLS.md §0).
    echostr = request.query.get("echostr", "").replace(" ", "+")
    if not echostr:
        raise _refuse(request, web.HTTPBadRequest, "missing echostr")
    _authenticate(request, echostr)
    return web.Response(text=_decrypt(request, echostr))


async def receive(request: web.Request) -> web.Response:
    with CallbackTimer(request.app, "wecom") as timer:
        new = await _receive(request)
        timer.result = "ok" if new else "duplicate"
    return web.Response()  # 200 with an empty body: received


async def _envelope_encrypt(request: web.Request) -> str:
    """The envelope's ``Encrypt``: the only thing read before the request is authenticated."""
    try:
        raw = await request.read()  # raises 413 beyond the server's client_max_size
        if len(raw) > MAX_XML_CHARS:
            raise web.HTTPRequestEntityTooLarge(MAX_XML_CHARS, len(raw))
    except web.HTTPRequestEntityTooLarge:
        log.warning("wecom callback from %s refused (413): body too large", request.remote)
        raise
    try:
        envelope = parse_xml(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _refuse(request, web.HTTPBadRequest, "body is not UTF-8") from None
    except NotAMessage as exc:
        raise _refuse(request, web.HTTPBadRequest, f"malformed envelope: {exc}") from None
    encrypt = envelope.get("Encrypt")
    if not isinstance(encrypt, str) or not encrypt:
        raise _refuse(request, web.HTTPBadRequest, "missing Encrypt")
    return encrypt


async def _receive(request: web.Request) -> bool:
    encrypt = await _envelope_encrypt(request)
    _authenticate(request, encrypt)
    try:
        msg = normalize(parse_xml(_decrypt(request, encrypt)))
    except NotAMessage as exc:
        raise _refuse(request, web.HTTPBadRequest, f"malformed message: {exc}") from None
    return await request.app[BOT].receive(msg)

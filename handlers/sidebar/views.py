"""The sidebar's web routes: sign-in through the platform, the page, its customer fragment and the two actions.

``GET /sidebar`` without a session sends the browser to the platform's sign-in (with a random state kept in a
cookie); it comes back as ``GET /sidebar?code=…&state=…``, the code is exchanged for the platform user id, which must
be an active staff member's account (else a friendly 403), and a signed session cookie is set before the browser is
sent on to the clean ``/sidebar``. The page loads the platform's SDK and scripts, which ask ``/sidebar/config`` for
the signed SDK configuration, learn the open chat's customer contact, and fetch ``/sidebar/customer?contact=…``: the
fragment for that contact's customer, only when the staff member may see that customer (``bot.access``), else 403
and nothing about it. ``POST /sidebar/followup``, ``POST /sidebar/ticket`` and ``POST /sidebar/undo`` (session,
form token, same origin) run the chat's own intents (follow_up, create_ticket, undo) through the dispatcher, so what
is written, audited and taken back is what a typed message writes; bad input is a 400 with nothing written.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot.access import visible_to
from bot.audit import UNDOABLE, undo_hint
from bot.config import Settings
from bot.context import Context, Slots
from bot.keys import BOT, CLOCK, SETTINGS
from bot.sidebar import SIDEBAR, SidebarPlatform, SidebarUnavailable
from bot.types import IncomingMessage
from handlers.sidebar.capability import capability
from handlers.sidebar.card import FormContext, message, render_customer
from handlers.sidebar.session import (
    COOKIE,
    STATE_COOKIE,
    STATE_SECONDS,
    Session,
    form_token,
    form_token_ok,
    new_session,
    opened,
    seal,
    session_key,
)
from models.customers import Contact, Customer
from models.seen import SeenSignature
from models.staff import Staff

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
PAGE_SCRIPT = (HERE / "page.js").read_text(encoding="utf-8")
PAGE_STYLE = (HERE / "page.css").read_text(encoding="utf-8")
CONTACT_SHAPE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
KEY_SHAPE = re.compile(r"^[A-Za-z0-9_\-]{8,64}$")
STATE_SHAPE = re.compile(r"^[A-Za-z0-9_\-]{16,64}$")
MAX_FORM_BYTES = 64 * 1024
SEEN_SCOPE = "sidebar-form"  # each form shown is posted once (models.seen)
SEEN_MARGIN = timedelta(minutes=5)
MAX_URL_CHARS = 2048
FORM_TYPE = "application/x-www-form-urlencoded"
# What may not appear in a note: control characters, and the direction overrides that make text read otherwise.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]")

NOT_REGISTERED = "您还不是本系统的注册用户，暂时无法使用客户侧边栏。请联系管理员为您开通账号。"
SIGN_IN_FAILED = "登录已失效或链接不完整，请关闭侧边栏后重新打开。"
UNAVAILABLE = "暂时无法连接企业通讯录，请稍后再试。"
NOT_CONFIGURED = "客户侧边栏尚未配置，请联系管理员。"
SIGN_IN_AGAIN = "登录已过期，请关闭侧边栏后重新打开。"


def page_address(settings: Settings) -> str:
    """The page's public address, as configured in the platform's console."""
    return f"{settings.server.public_url.rstrip('/')}/sidebar"


def _headers(sdk_url: str = "") -> dict[str, str]:
    scripts = "'self'" + (f" {_origin(sdk_url)}" if sdk_url else "")
    return {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": (
            f"default-src 'none'; script-src {scripts}; style-src 'self'; connect-src 'self'; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        ),
    }


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _secure(request: web.Request) -> bool:
    return request.secure or request.app[SETTINGS].server.public_url.startswith("https://")


def _document(body: str, status: int = 200, sdk_url: str = "", scripts: str = "") -> web.Response:
    document = f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1,viewport-fit=cover">
<title>客户信息</title><link rel="stylesheet" href="/sidebar/page.css"></head>
<body><main id="main">{body}</main>{scripts}</body></html>"""
    return web.Response(text=document, status=status, content_type="text/html", headers=_headers(sdk_url))


def _fragment(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", headers=_headers())


async def _session(request: web.Request) -> tuple[Session, Staff] | None:
    """The signed-in staff member (still active), or None."""
    now = request.app[CLOCK].now().timestamp()
    session = opened(session_key(request.app[SETTINGS]), request.cookies.get(COOKIE), now)
    if session is None:
        return None
    staff = await Staff.get_or_none(id=session.staff_id, active=True)
    return (session, staff) if staff is not None else None


# -- the page ------------------------------------------------------------------------------------------------------


async def show_page(request: web.Request) -> web.StreamResponse:
    port = request.app.get(SIDEBAR)
    if port is None:
        return _document(message("暂不可用", NOT_CONFIGURED), status=404)
    if "code" in request.query:
        return await _signed_in(request, port)
    if await _session(request) is None:
        state = secrets.token_urlsafe(24)
        login = port.login_url(page_address(request.app[SETTINGS]), state)
        response = web.Response(status=302, headers={"Location": login})
        response.set_cookie(
            STATE_COOKIE, state, max_age=STATE_SECONDS, path="/sidebar", httponly=True, secure=_secure(request),
            samesite="Lax",
        )  # fmt: skip
        return response
    scripts = (
        f'<script src="{escape(port.sdk_url)}"></script>'
        '<script src="/sidebar/page.js"></script><script src="/sidebar/platform.js"></script>'
    )
    waiting = message("正在读取当前客户…", "请稍候。", "loading")
    return _document(waiting, sdk_url=port.sdk_url, scripts=scripts)


async def _signed_in(request: web.Request, port: SidebarPlatform) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    state, kept = request.query.get("state", ""), request.cookies.get(STATE_COOKIE, "")
    if not (STATE_SHAPE.match(state) and kept and secrets.compare_digest(state.encode(), kept.encode())):
        log.info("sidebar: sign-in with a missing or wrong state from %s", request.remote)
        return _document(message("无法登录", SIGN_IN_FAILED), status=403)
    try:
        user_id = await port.user_of(request.query.get("code", ""))
    except SidebarUnavailable as exc:
        log.warning("sidebar: sign-in could not be checked: %s", exc)
        return _document(message("请稍后再试", UNAVAILABLE), status=503)
    if user_id is None:
        log.info("sidebar: a sign-in code was refused (from %s)", request.remote)
        return _document(message("无法登录", SIGN_IN_FAILED), status=403)
    staff_ids = await request.app[BOT].directory.staff_ids(port.platform, [user_id])
    if user_id not in staff_ids:
        log.info("sidebar: %s is no active staff member", user_id)
        return _document(message("无法使用", NOT_REGISTERED), status=403)
    now = request.app[CLOCK].now().timestamp()
    session = new_session(staff_ids[user_id], port.platform, user_id, now, settings.sidebar.session_minutes)
    response = web.Response(status=303, headers={"Location": "/sidebar"})
    secure = _secure(request)
    response.set_cookie(
        COOKIE, seal(session_key(settings), session), max_age=settings.sidebar.session_minutes * 60,
        path="/sidebar", httponly=True, secure=secure, samesite="Lax",
    )  # fmt: skip
    response.del_cookie(STATE_COOKIE, path="/sidebar", secure=secure, samesite="Lax")
    return response


async def page_script(request: web.Request) -> web.Response:
    return web.Response(text=PAGE_SCRIPT, content_type="application/javascript", headers={"Cache-Control": "no-cache"})


async def platform_script(request: web.Request) -> web.Response:
    port = request.app.get(SIDEBAR)
    if port is None:
        raise web.HTTPNotFound()
    return web.Response(text=port.script, content_type="application/javascript", headers={"Cache-Control": "no-cache"})


async def page_style(request: web.Request) -> web.Response:
    return web.Response(text=PAGE_STYLE, content_type="text/css", headers={"Cache-Control": "no-cache"})


async def sdk_config(request: web.Request) -> web.Response:
    """The platform SDK's signed configuration for the page at ``url`` (the signature is computed here)."""
    port = request.app.get(SIDEBAR)
    if port is None:
        raise web.HTTPNotFound()
    if await _session(request) is None:
        return web.json_response({"error": SIGN_IN_AGAIN}, status=401, headers=_headers())
    url = request.query.get("url", "")
    parts = urlsplit(url) if len(url) <= MAX_URL_CHARS else None
    home = urlsplit(page_address(request.app[SETTINGS]))
    if parts is None or (parts.scheme, parts.netloc, parts.path) != (home.scheme, home.netloc, home.path):
        return web.json_response({"error": "bad url"}, status=400, headers=_headers())
    try:
        config = await port.page_config(url)
    except SidebarUnavailable as exc:
        log.warning("sidebar: the SDK configuration could not be signed: %s", exc)
        return web.json_response({"error": UNAVAILABLE}, status=503, headers=_headers())
    return web.json_response(config, headers=_headers())


# -- the customer ------------------------------------------------------------------------------------------------


async def show_customer(request: web.Request) -> web.Response:
    signed = await _session(request)
    if signed is None:
        return _fragment(message("请重新打开", SIGN_IN_AGAIN, "signin"), status=401)
    session, staff = signed
    contact_id = request.query.get("contact", "")
    if not CONTACT_SHAPE.match(contact_id) or not request.app[BOT].directory.is_external(session.platform, contact_id):
        return _fragment(message("无法识别", "这不是一位客户联系人。", "unknown"), status=400)
    contact = await Contact.get_or_none(external_userid=contact_id)
    customer = await Customer.get_or_none(id=contact.customer_id) if contact is not None else None
    if contact is None or customer is None:
        text = "这位联系人还没有关联到客户档案。可以在聊天里对我说「新建客户 公司名」，再补上联系人。"
        return _fragment(message("还没有建档", text, "unknown"), status=404)
    if not await visible_to(staff, customer):
        log.info("sidebar: staff %s may not see customer %s", staff.id, customer.id)
        return _fragment(message("无权查看", "这位客户不在您的名下。", "forbidden"), status=403)
    return _fragment(await _render(request, session, customer, contact))


async def _render(
    request: web.Request,
    session: Session,
    customer: Customer,
    contact: Contact | None,
    notice: str = "",
    undoable: bool = False,
) -> str:
    settings = request.app[SETTINGS]
    token = form_token(session_key(settings), session)
    contact_id = (contact.external_userid or "") if contact else ""
    forms = FormContext(customer.id, contact_id, token, settings.sidebar.note_max_chars)
    return await render_customer(customer, contact, forms, settings.tz, notice, undoable)


# -- the two actions ---------------------------------------------------------------------------------------------


class BadForm(Exception):
    """The form is malformed or its values are not acceptable (said to the person as is)."""


async def _form(request: web.Request) -> dict[str, str]:
    """The posted form, each field once, strictly UTF-8."""
    if request.content_type != FORM_TYPE:
        raise BadForm("请求格式不正确。")
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise BadForm("内容太长了。")
    raw = await request.read()  # within the app's client_max_size
    if len(raw) > MAX_FORM_BYTES:
        raise BadForm("内容太长了。")
    try:
        fields = parse_qs(raw.decode("ascii"), keep_blank_values=True, strict_parsing=bool(raw), errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise BadForm("内容的编码不正确。") from None
    if any(len(values) != 1 for values in fields.values()):
        raise BadForm("请求格式不正确。")
    return {name: values[0] for name, values in fields.items()}


def _note(form: dict[str, str], max_chars: int) -> str:
    content = form.get("content", "").replace("\r\n", "\n").strip()
    if not content:
        raise BadForm("请先写上内容。")
    if len(content) > max_chars:
        raise BadForm(f"内容最多 {max_chars} 字，请精简一下。")
    if CONTROL.search(content):
        raise BadForm("内容里有无法识别的字符，请删除后再提交。")
    return content


async def _act(request: web.Request, intent: str) -> web.Response:
    signed = await _session(request)
    if signed is None:
        return _fragment(message("请重新打开", SIGN_IN_AGAIN, "signin"), status=401)
    session, staff = signed
    settings = request.app[SETTINGS]
    origin = request.headers.get("Origin")
    if origin is not None and origin != _origin(page_address(settings)):
        log.info("sidebar: a post from another origin (%s) refused", origin)
        return _fragment(message("无法提交", SIGN_IN_AGAIN, "forbidden"), status=403)
    try:
        form = await _form(request)
        if not form_token_ok(session_key(settings), session, form.get("csrf", "")):
            log.info("sidebar: a post with a wrong form token refused (staff %s)", staff.id)
            return _fragment(message("无法提交", SIGN_IN_AGAIN, "forbidden"), status=403)
        customer_id, key, contact_id = form.get("customer", ""), form.get("key", ""), form.get("contact", "")
        if not customer_id.isascii() or not customer_id.isdigit() or len(customer_id) > 12 or not KEY_SHAPE.match(key):
            raise BadForm("请求格式不正确。")
        if contact_id and not CONTACT_SHAPE.match(contact_id):
            raise BadForm("请求格式不正确。")
        content = "" if intent == "undo" else _note(form, settings.sidebar.note_max_chars)
        priority = form.get("priority", "normal")
        if priority not in ("normal", "urgent"):
            raise BadForm("紧急程度只能是普通或紧急。")
    except BadForm as bad:
        return _fragment(message("没有保存", str(bad), "invalid"), status=400)
    now = request.app[CLOCK].now()
    slots: Slots = {"content": content} if content else {}
    if intent == "follow_up" and (next_at := request.app[BOT].understanding.next_at(content, now)):
        slots["next_at"] = next_at
    if intent == "create_ticket":
        slots["priority"] = priority
    bot = request.app[BOT]
    msg = IncomingMessage(
        platform=session.platform, msgid=f"sidebar-{key}", sender=session.user_id, text=content or "撤销", sent_at=now
    )
    undoable = False
    try:
        async with in_transaction() as conn:
            customer = await Customer.filter(id=int(customer_id)).using_db(conn).select_for_update().first()
            if customer is None or not await visible_to(staff, customer):
                raise NotWritten(403, message("无权操作", "这位客户不在您的名下。", "forbidden"))
            if await _seen(conn, f"{staff.id}:{customer.id}:{key}", content, now, settings.sidebar.session_minutes):
                notice = "已经保存过了。"  # a second tap on the same form (the customer's lock orders the two)
            else:
                ctx = Context(bot=bot, staff=staff, msg=msg, now=now.astimezone(UTC), conn=conn, found=customer)
                replies = await bot.dispatcher.perform(intent, slots, ctx)
                notice = "\n".join(r.text for r in replies if r.text)
                if not ctx.audited:  # refused by the intent's own checks: nothing of it is kept
                    raise NotWritten(409, message("没有保存", notice or "没有保存。", "invalid"))
                # Beside a customer's chat, "reply 撤销" would go to the customer: the page offers a button instead.
                undoable = bool(UNDOABLE.intersection(ctx.audited))
                notice = notice.replace(undo_hint(settings.rules.undo_window_minutes), "").strip()
    except NotWritten as refused:
        return _fragment(refused.body, status=refused.status)
    bot.outbox.wake()
    contact = await Contact.get_or_none(external_userid=contact_id, customer_id=customer.id) if contact_id else None
    return _fragment(await _render(request, session, customer, contact, notice, undoable))


class NotWritten(Exception):
    """Ends an action's transaction with nothing of it kept, answering ``status`` with ``body``."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


async def _seen(conn: BaseDBAsyncClient, key: str, content: str, now: datetime, minutes: int) -> bool:
    """True when this form (``key``) was posted before; else it is recorded as posted now. A form can only be
    posted while its session lasts, so its record lapses with it (and lapsed ones are swept)."""
    await SeenSignature.filter(scope=SEEN_SCOPE, expires_at__lt=now).using_db(conn).delete()
    if await SeenSignature.filter(scope=SEEN_SCOPE, key=key).using_db(conn).exists():
        return True
    digest = hashlib.sha256(content.encode()).hexdigest()
    expires_at = now + timedelta(minutes=minutes) + SEEN_MARGIN
    await SeenSignature.create(scope=SEEN_SCOPE, key=key, digest=digest, expires_at=expires_at, using_db=conn)
    return False


async def log_followup(request: web.Request) -> web.Response:
    return await _act(request, "follow_up")


async def open_ticket(request: web.Request) -> web.Response:
    return await _act(request, "create_ticket")


async def undo(request: web.Request) -> web.Response:
    """撤销 from the page: the staff member's own last change, as 撤销 in chat takes it back."""
    return await _act(request, "undo")


capability.route("GET", "/sidebar", show_page)
capability.route("GET", "/sidebar/page.js", page_script)
capability.route("GET", "/sidebar/platform.js", platform_script)
capability.route("GET", "/sidebar/page.css", page_style)
capability.route("GET", "/sidebar/config", sdk_config)
capability.route("GET", "/sidebar/customer", show_customer)
capability.route("POST", "/sidebar/followup", log_followup)
capability.route("POST", "/sidebar/ticket", open_ticket)
capability.route("POST", "/sidebar/undo", undo)

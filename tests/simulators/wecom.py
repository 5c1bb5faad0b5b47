"""A WeCom server API simulator (``/cgi-bin/gettoken``, ``media/upload``, ``message/send``,
``message/update_template_card``, and of 客户联系 ``externalcontact/get``, ``add_msg_template``,
``transfer_customer`` and ``transfer_result``, in service and ``resigned/``; for the chat sidebar, web OAuth's
``/connect/oauth2/authorize`` and ``auth/getuserinfo``, the JS-SDK tickets ``get_jsapi_ticket`` and
``ticket/get?type=agent_config``, and a stand-in JS-SDK script).

It answers with the shapes and error codes of the real API (PROTOCOLS.md §3-4): tokens are issued for the right corp
id and secret and expire; a send is checked for its token, agent id, recipients, message type and the body of that
type; template cards get a ``response_code`` that ``update_template_card`` accepts once. ``media/upload`` takes a
multipart ``media`` part (more than 5 bytes; an image PNG or JPEG up to 10 MB, a file up to 20 MB), records it in
``uploads`` and answers a ``media_id``, which an image or file message must then name (of its type). A
``message/send`` with ``enable_duplicate_check: 1`` whose touser, msgtype and content equal a message delivered
within ``duplicate_check_interval`` seconds (default 1800, at most 4 hours) is answered ok (with the earlier
message's msgid) and not delivered again. Everything accepted is recorded in ``sent`` (what users would see); every
call, accepted or not, in ``calls`` (a dropped repeat with ``"duplicate": True``). Faults can be injected for the
next N calls: an errcode (-1 busy, 45009 rate limit, ...), an HTTP status (500, 502), a slow answer, or a lost answer
(the call is applied, its answer held back longer than the caller waits).

Used by the tests (fixture ``wecom_sim``) and for a local demo::

    python -m tests.simulators.wecom --port 9100 --corp-id ww... --secret ... --agent-id 1000002

then set ``[wecom] api_base = "http://127.0.0.1:9100"``; each message the bot sends is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import BodyPartReader, web

CONTENT_LIMIT = 2048
TOKEN_TTL = 7200
RESPONSE_CODE_TTL = 72 * 3600
MSG_TYPES = {
    "text",
    "markdown",
    "image",
    "voice",
    "video",
    "file",
    "textcard",
    "news",
    "mpnews",
    "miniprogram_notice",
    "template_card",
}
DUPLICATE_CHECK_DEFAULT = 1800
DUPLICATE_CHECK_MAX = 4 * 3600
CARD_TYPES = {"text_notice", "news_notice", "button_interaction", "vote_interaction", "multiple_interaction"}
TRANSFER_LIMIT = 100  # external_userid per transfer_customer call
WAITING_TAKEOVER = 2  # transfer_result status: 等待接替
TASK_ID = re.compile(r"^[0-9A-Za-z_\-@]{1,128}$")
MB = 1024 * 1024
MEDIA_LIMITS = {"image": 10 * MB, "voice": 2 * MB, "video": 10 * MB, "file": 20 * MB}
MEDIA_TTL = 3 * 24 * 3600


@dataclass
class Upload:
    """One accepted ``media/upload``: what WeCom now holds under ``media_id``."""

    media_id: str
    type: str
    filename: str
    content_type: str
    data: bytes
    expires_at: float


OAUTH_CODE_TTL = 300  # a web OAuth code is good for five minutes, once
INVALID_CODE = 40029
JSSDK_PATH = "/open/js/jweixin-1.2.0.js"


class _Duplicate(Exception):
    """A repeat WeCom drops: answered ok, not delivered."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__("duplicate")
        self.answer = answer


class _Reject(Exception):
    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(errmsg)
        self.errcode = errcode
        self.errmsg = errmsg


@dataclass
class Fault:
    """What the next matching calls get instead of a normal answer."""

    count: int
    errcode: int | None = None
    status: int | None = None
    delay: float = 0.0
    held: float = 0.0  # the call is applied, then its answer waits this long (lost to a caller that gives up)
    endpoint: str | None = None  # e.g. "message/send"; None: every endpoint but gettoken
    skip: int = 0  # matching calls let through before the fault starts

    def matches(self, endpoint: str) -> bool:
        if self.endpoint is None:
            return endpoint != "gettoken"
        return self.endpoint == endpoint


@dataclass
class _Token:
    value: str
    expires_at: float


@dataclass
class _ResponseCode:
    userids: tuple[str, ...]
    task_id: str
    expires_at: float
    used: bool = False


@dataclass
class WeComSimulator:
    corp_id: str
    secret: str
    agent_id: int
    token_ttl: int = TOKEN_TTL
    known_users: set[str] | None = None  # None: every user id exists
    echo: Callable[[str], None] | None = None
    sent: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    tokens_issued: int = 0
    _tokens: dict[str, _Token] = field(default_factory=dict)
    _codes: dict[str, _ResponseCode] = field(default_factory=dict)
    _task_ids: set[str] = field(default_factory=set)
    _next_msgid: int = 1
    # (touser, msgtype, content as JSON) → when it was last delivered and its answer: what the duplicate check compares
    _delivered: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = field(default_factory=dict)
    _applying: set[asyncio.Future[web.Response]] = field(default_factory=set)
    uploads: list[Upload] = field(default_factory=list)
    _media: dict[str, Upload] = field(default_factory=dict)
    url: str = ""

    # -- fault injection and control -------------------------------------------------------------------------

    def fail_next(self, count: int = 1, *, errcode: int = -1, endpoint: str | None = None, skip: int = 0) -> None:
        """The next ``count`` calls (after ``skip`` normal ones) answer HTTP 200 with ``errcode`` (-1 busy,
        45009 rate limit, 45033 concurrency limit, ...)."""
        self.faults.append(Fault(count, errcode=errcode, endpoint=endpoint, skip=skip))

    def http_error_next(self, count: int = 1, *, status: int = 500, endpoint: str | None = None) -> None:
        """The next ``count`` calls answer with HTTP ``status`` (500, 502, 503) and an HTML body."""
        self.faults.append(Fault(count, status=status, endpoint=endpoint))

    def slow_next(self, count: int = 1, *, seconds: float = 1.0, endpoint: str | None = None) -> None:
        """The next ``count`` calls wait ``seconds`` before being processed normally (a timeout on the caller's
        side does not undo them, as with the real server)."""
        self.faults.append(Fault(count, delay=seconds, endpoint=endpoint))

    def lose_answers_next(self, count: int = 1, *, seconds: float = 5.0, endpoint: str | None = None) -> None:
        """The next ``count`` calls are applied (delivered), then their answer is held ``seconds``: a caller that
        times out first never learns that its message went out."""
        self.faults.append(Fault(count, held=seconds, endpoint=endpoint))

    def expire_tokens(self) -> None:
        """Every issued token expires now: calls with them get errcode 42001."""
        for token in self._tokens.values():
            token.expires_at = 0.0

    def revoke_tokens(self) -> None:
        """Every issued token becomes unknown: calls with them get errcode 40014."""
        self._tokens.clear()

    def reset(self) -> None:
        self.sent.clear()
        self.calls.clear()
        self.faults.clear()

    # -- what was delivered ----------------------------------------------------------------------------------

    def messages_to(self, userid: str) -> list[dict[str, Any]]:
        """Accepted ``message/send`` bodies addressed to ``userid`` (directly or via ``@all``)."""
        out = []
        for item in self.sent:
            if item["endpoint"] != "message/send":
                continue
            users = str(item["body"].get("touser") or "").split("|")
            if userid in users or "@all" in users:
                out.append(item["body"])
        return out

    def texts_to(self, userid: str) -> list[str]:
        """The content of every text and markdown message delivered to ``userid``, in order."""
        texts = []
        for body in self.messages_to(userid):
            msgtype = body.get("msgtype")
            if msgtype in ("text", "markdown"):
                texts.append(str(body[msgtype]["content"]))
        return texts

    def cards_to(self, userid: str) -> list[dict[str, Any]]:
        """Template cards delivered to ``userid``: the ``template_card`` body plus the issued ``response_code``."""
        cards = []
        for item in self.sent:
            body = item["body"]
            if item["endpoint"] != "message/send" or body.get("msgtype") != "template_card":
                continue
            if userid in str(body.get("touser") or "").split("|"):
                cards.append({**body["template_card"], "response_code": item["answer"].get("response_code", "")})
        return cards

    def repeats(self) -> list[tuple[str, str]]:
        """(touser, content) of every text or markdown message delivered more than once: what users saw twice."""
        seen: dict[tuple[str, str], int] = {}
        for item in self.sent:
            body = item["body"]
            if item["endpoint"] == "message/send" and body.get("msgtype") in ("text", "markdown"):
                key = (str(body.get("touser")), str(body[body["msgtype"]]["content"]))
                seen[key] = seen.get(key, 0) + 1
        return [key for key, n in seen.items() if n > 1]

    def dropped_repeats(self) -> int:
        """How many sends the duplicate check dropped."""
        return sum(1 for call in self.calls if call.get("duplicate"))

    def media_to(self, userid: str) -> list[Upload]:
        """The uploads delivered to ``userid`` as image or file messages, in order."""
        return [
            self._media[body[body["msgtype"]]["media_id"]]
            for body in self.messages_to(userid)
            if body.get("msgtype") in ("image", "file")
        ]

    def card_updates(self) -> list[dict[str, Any]]:
        """Accepted ``message/update_template_card`` bodies."""
        return [item["body"] for item in self.sent if item["endpoint"] == "message/update_template_card"]

    # -- the server ------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cgi-bin/gettoken", self._gettoken)
        app.router.add_post("/cgi-bin/media/upload", self._upload)
        app.router.add_post("/cgi-bin/message/send", self._endpoint("message/send", self._send))
        app.router.add_post(
            "/cgi-bin/message/update_template_card", self._endpoint("message/update_template_card", self._update)
        )
        # Customer contact (NPS surveys): externalcontact/add_msg_template, see _add_msg_template below.
        app.router.add_post(
            "/cgi-bin/externalcontact/add_msg_template",
            self._endpoint("externalcontact/add_msg_template", self._add_msg_template),
        )
        app.router.add_get("/cgi-bin/externalcontact/get", self._get_external_contact)
        # The chat sidebar: web OAuth, the JS-SDK tickets, and a stand-in for the JS-SDK script itself.
        app.router.add_get("/connect/oauth2/authorize", self._authorize)
        app.router.add_get("/cgi-bin/auth/getuserinfo", self._getuserinfo)
        app.router.add_get("/cgi-bin/get_jsapi_ticket", self._ticket_with("get_jsapi_ticket", "corp"))
        app.router.add_get("/cgi-bin/ticket/get", self._ticket_with("ticket/get", "agent"))
        app.router.add_get(JSSDK_PATH, self._jssdk)
        # Customer contact: moving customers between members (在职继承 / 离职继承), see _transfer below.
        for prefix in ("externalcontact/", "externalcontact/resigned/"):
            resigned = prefix.endswith("resigned/")
            app.router.add_post(
                f"/cgi-bin/{prefix}transfer_customer",
                self._endpoint(f"{prefix}transfer_customer", self._transfer_with(resigned)),
            )
            app.router.add_post(
                f"/cgi-bin/{prefix}transfer_result",
                self._endpoint(f"{prefix}transfer_result", self._transfer_result_with(resigned)),
            )
        return app

    async def _fault(self, endpoint: str) -> web.Response | None:
        for fault in self.faults:
            if fault.count > 0 and not fault.held and fault.matches(endpoint):
                if fault.skip > 0:
                    fault.skip -= 1
                    return None
                fault.count -= 1
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                    return None
                if fault.status is not None:
                    self._log(f"{endpoint}: injected HTTP {fault.status}")
                    return web.Response(status=fault.status, text="<html>bad gateway</html>", content_type="text/html")
                assert fault.errcode is not None
                self._log(f"{endpoint}: injected errcode {fault.errcode}")
                return _answer(fault.errcode, "system busy" if fault.errcode == -1 else "injected fault")
        self.faults = [f for f in self.faults if f.count > 0]
        return None

    def _held(self, endpoint: str) -> float:
        """How long the answer to this (applied) call is held back, by a ``lose_answers_next`` fault."""
        for fault in self.faults:
            if fault.count > 0 and fault.held and fault.matches(endpoint):
                fault.count -= 1
                return fault.held
        return 0.0

    async def _gettoken(self, request: web.Request) -> web.Response:
        call: dict[str, Any] = {"endpoint": "gettoken", "query": {"corpid": request.query.get("corpid", "")}}
        self.calls.append(call)
        if (faulty := await self._fault("gettoken")) is not None:
            return faulty
        corpid, secret = request.query.get("corpid", ""), request.query.get("corpsecret", "")
        if not corpid or corpid != self.corp_id:
            call["answer"] = {"errcode": 40013}
            return _answer(40013, "invalid corpid")
        if not secret or not secrets.compare_digest(secret, self.secret):
            call["answer"] = {"errcode": 40001}
            return _answer(40001, "invalid credential")
        value = secrets.token_urlsafe(48)
        self._tokens[value] = _Token(value, time.monotonic() + self.token_ttl)
        self.tokens_issued += 1
        call["answer"] = {"errcode": 0}
        self._log("gettoken: issued a token")
        return web.json_response({"errcode": 0, "errmsg": "ok", "access_token": value, "expires_in": self.token_ttl})

    async def _upload(self, request: web.Request) -> web.Response:
        """``media/upload?type=``: a multipart ``media`` part with its filename and content type → ``media_id``."""
        call: dict[str, Any] = {"endpoint": "media/upload", "query": {"type": request.query.get("type", "")}}
        self.calls.append(call)
        if (faulty := await self._fault("media/upload")) is not None:
            call["answer"] = {"fault": True}
            return faulty
        try:
            self._check_token(request.query.get("access_token", ""))
            media_type = request.query.get("type", "")
            if media_type not in MEDIA_LIMITS:
                raise _Reject(40004, "invalid media type")
            upload = await self._read_media(request, media_type)
        except _Reject as exc:
            call["answer"] = {"errcode": exc.errcode, "errmsg": exc.errmsg}
            self._log(f"media/upload: rejected with {exc.errcode} ({exc.errmsg})")
            return _answer(exc.errcode, exc.errmsg)
        self.uploads.append(upload)
        self._media[upload.media_id] = upload
        answer = {"errcode": 0, "errmsg": "", "type": media_type, "media_id": upload.media_id,
                  "created_at": str(int(time.time()))}  # fmt: skip
        call["answer"] = answer
        self._log(f"media/upload: {media_type} {upload.filename} ({len(upload.data)} bytes)")
        return web.json_response(answer)

    async def _read_media(self, request: web.Request, media_type: str) -> Upload:
        if not request.content_type.startswith("multipart/"):
            raise _Reject(44001, "empty media data")
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader) or part.name != "media":
                continue
            data = await part.read()
            content_type = part.headers.get("Content-Type", "application/octet-stream")
            if len(data) <= 5:
                raise _Reject(40005, "invalid file size: every file must be larger than 5 bytes")
            if len(data) > MEDIA_LIMITS[media_type]:
                raise _Reject(40006, "invalid file size")
            if media_type == "image" and not data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
                raise _Reject(40005, "invalid file type: images are JPG or PNG")
            media_id = f"media{secrets.token_hex(16)}"
            return Upload(media_id, media_type, part.filename or "", content_type, bytes(data),
                          time.monotonic() + MEDIA_TTL)  # fmt: skip
        raise _Reject(44001, "empty media data: no form-data part named media")

    def _endpoint(self, name: str, check: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            raw = await request.read()
            # A request that arrived whole is processed even if its caller hangs up meanwhile, as WeCom does.
            applying = asyncio.ensure_future(self._process(name, check, raw, request.query.get("access_token", "")))
            self._applying.add(applying)
            applying.add_done_callback(self._applying.discard)
            return await asyncio.shield(applying)

        return handler

    async def _process(
        self, name: str, check: Callable[[dict[str, Any]], dict[str, Any]], raw: bytes, access_token: str
    ) -> web.Response:
        call: dict[str, Any] = {"endpoint": name}
        self.calls.append(call)
        if (faulty := await self._fault(name)) is not None:
            call["answer"] = {"fault": True}
            return faulty
        try:
            self._check_token(access_token)
            try:
                body = json.loads(raw)
            except ValueError:
                raise _Reject(47001, "data format error") from None
            if not isinstance(body, dict):
                raise _Reject(47001, "data format error")
            call["body"] = body
            answer = check(body)
        except _Duplicate as exc:
            call.update(answer=exc.answer, duplicate=True)
            self._log(f"{name}: a repeat within the duplicate check interval, not delivered")
            return web.json_response(exc.answer)
        except _Reject as exc:
            call["answer"] = {"errcode": exc.errcode, "errmsg": exc.errmsg}
            self._log(f"{name}: rejected with {exc.errcode} ({exc.errmsg})")
            return _answer(exc.errcode, exc.errmsg)
        answer = {"errcode": 0, "errmsg": "ok", **answer}
        call["answer"] = answer
        self.sent.append({"endpoint": name, "body": body, "answer": answer})
        self._log(f"{name}: {json.dumps(body, ensure_ascii=False)}")
        if held := self._held(name):
            await asyncio.sleep(held)
        return web.json_response(answer)

    def _check_token(self, value: str) -> None:
        if not value:
            raise _Reject(41001, "access_token missing")
        token = self._tokens.get(value)
        if token is None:
            raise _Reject(40014, "invalid access_token")
        if time.monotonic() >= token.expires_at:
            raise _Reject(42001, "access_token expired")

    def _check_agent(self, body: dict[str, Any]) -> None:
        try:
            agent = int(body.get("agentid"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise _Reject(40056, "invalid agentid") from None
        if agent != self.agent_id:
            raise _Reject(40056, "invalid agentid")

    def _recipients(self, body: dict[str, Any]) -> tuple[list[str], list[str]]:
        users = [u for u in str(body.get("touser") or "").split("|") if u]
        if not users and not body.get("toparty") and not body.get("totag"):
            raise _Reject(40031, "invalid user list: touser, toparty and totag are all empty")
        if len(users) > 1000:
            raise _Reject(40031, "more than 1000 users")
        if self.known_users is None or "@all" in users:
            return users, []
        valid = [u for u in users if u in self.known_users]
        invalid = [u for u in users if u not in self.known_users]
        if users and not valid:
            raise _Reject(81013, "user & party & tag all invalid")
        return valid, invalid

    def _send(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_agent(body)
        msgtype = body.get("msgtype")
        if msgtype not in MSG_TYPES:
            raise _Reject(40008, "invalid message type")
        users, invalid = self._recipients(body)
        content = body.get(msgtype)
        if not isinstance(content, dict):
            raise _Reject(41011 if msgtype == "template_card" else 44004, f"missing {msgtype}")
        key = (str(body.get("touser") or ""), msgtype, json.dumps(content, sort_keys=True, ensure_ascii=False))
        self._check_duplicate(body, key)
        answer: dict[str, Any] = {"invaliduser": "|".join(invalid)}
        if msgtype in ("text", "markdown"):
            text = content.get("content")
            if not isinstance(text, str) or not text.strip():
                raise _Reject(44004, "empty content")
            if len(text.encode()) > CONTENT_LIMIT:
                # The real server cuts silently; so does the simulator, and marks it for the tests to see.
                content["content"] = text.encode()[:CONTENT_LIMIT].decode(errors="ignore")
                answer["truncated"] = True
        elif msgtype == "template_card":
            answer["response_code"] = self._check_card(content, users)
        elif msgtype in ("image", "file", "voice"):
            media = self._media.get(str(content.get("media_id") or ""))
            if media is None or media.type != msgtype or time.monotonic() >= media.expires_at:
                raise _Reject(40007, "invalid media_id")
        answer["msgid"] = f"sim{self._next_msgid:08d}"
        self._next_msgid += 1
        self._delivered[key] = (time.monotonic(), {"errcode": 0, "errmsg": "ok", **answer})
        return answer

    def _check_duplicate(self, body: dict[str, Any], key: tuple[str, str, str]) -> None:
        """Raise ``_Duplicate`` for a checked send equal to one delivered within its interval."""
        if str(body.get("enable_duplicate_check", 0)) != "1":
            return
        try:
            interval = int(body.get("duplicate_check_interval", DUPLICATE_CHECK_DEFAULT))
        except (TypeError, ValueError):
            raise _Reject(40058, "invalid duplicate_check_interval") from None
        if not 0 < interval <= DUPLICATE_CHECK_MAX:
            raise _Reject(40058, "duplicate_check_interval must be 1 to 14400 seconds")
        earlier = self._delivered.get(key)
        if earlier is not None and time.monotonic() - earlier[0] <= interval:
            raise _Duplicate(earlier[1])

    def _check_card(self, card: dict[str, Any], users: list[str]) -> str:
        card_type = card.get("card_type")
        if card_type not in CARD_TYPES:
            raise _Reject(40058, "invalid card_type")
        title = (card.get("main_title") or {}).get("title") if isinstance(card.get("main_title"), dict) else None
        if card_type != "news_notice" and not title:
            raise _Reject(40058, "main_title.title is required")
        if card_type.endswith("_interaction"):
            task_id = str(card.get("task_id") or "")
            if not TASK_ID.match(task_id):
                raise _Reject(40058, "invalid task_id")
            if task_id in self._task_ids:
                raise _Reject(40058, "task_id already exists")
        if card_type == "button_interaction":
            buttons = card.get("button_list")
            if not isinstance(buttons, list) or not 1 <= len(buttons) <= 6:
                raise _Reject(40058, "button_list must have 1 to 6 buttons")
            keys = set()
            for button in buttons:
                if not isinstance(button, dict) or not button.get("text"):
                    raise _Reject(40058, "button.text is required")
                if int(button.get("type", 0)) == 0:
                    key = str(button.get("key") or "")
                    if not key or len(key.encode()) > 1024 or key in keys:
                        raise _Reject(40058, "button.key is required, unique, at most 1024 bytes")
                    keys.add(key)
                if "style" in button and int(button["style"]) not in (1, 2, 3, 4):
                    raise _Reject(40058, "button.style must be 1 to 4")
            for item in card.get("horizontal_content_list") or []:
                if not isinstance(item, dict) or not item.get("keyname"):
                    raise _Reject(40058, "horizontal_content_list.keyname is required")
        task_id = str(card.get("task_id") or "")
        if task_id:
            self._task_ids.add(task_id)
        code = secrets.token_hex(16)
        self._codes[code] = _ResponseCode(tuple(users), task_id, time.monotonic() + RESPONSE_CODE_TTL)
        return code

    def _update(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_agent(body)
        userids = body.get("userids")
        if not isinstance(userids, list) or not userids:
            raise _Reject(40031, "userids is required")
        code = self._codes.get(str(body.get("response_code") or ""))
        if code is None or time.monotonic() >= code.expires_at:
            raise _Reject(40058, "invalid response_code")
        if code.used:
            raise _Reject(40058, "response_code already used")
        button = body.get("button")
        if not (isinstance(button, dict) and button.get("replace_name")) and not isinstance(
            body.get("template_card"), dict
        ):
            raise _Reject(40058, "button.replace_name or template_card is required")
        code.used = True
        return {"invaliduser": []}

    known_external_userids: set[str] | None = None  # externalcontact: None means every contact id exists

    def _add_msg_template(self, body: dict[str, Any]) -> dict[str, Any]:
        return _check_add_msg_template(body, self.known_external_userids)

    # externalcontact transfers: what becomes of each customer asked to move (1 接替完毕 if not given, 3 客户拒绝,
    # 4 接替成员客户达到上限); ``transfer_errcodes`` rejects a customer in the transfer_customer answer itself.
    transfer_outcomes: dict[str, int] = field(default_factory=dict)
    transfer_errcodes: dict[str, int] = field(default_factory=dict)
    transfers: dict[tuple[bool, str, str], dict[str, int]] = field(default_factory=dict)
    result_page_size: int = 1000

    def _transfer_with(self, resigned: bool) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def transfer(body: dict[str, Any]) -> dict[str, Any]:
            """``{handover_userid, takeover_userid, external_userid: [≤100]}`` → per customer errcode; those
            accepted wait (status 2) until the next ``transfer_result`` query settles them."""
            handover, takeover = str(body.get("handover_userid") or ""), str(body.get("takeover_userid") or "")
            externals = body.get("external_userid")
            if not handover or not takeover or not isinstance(externals, list) or not externals:
                raise _Reject(40058, "handover_userid, takeover_userid and external_userid are required")
            if len(externals) > TRANSFER_LIMIT:
                raise _Reject(40058, f"external_userid exceeds {TRANSFER_LIMIT}")
            if handover == takeover:
                raise _Reject(40097, "handover_userid equals takeover_userid")
            moves = self.transfers.setdefault((resigned, handover, takeover), {})
            answer = []
            for external in externals:
                errcode = self.transfer_errcodes.get(str(external), 0)
                if errcode == 0:
                    moves[str(external)] = WAITING_TAKEOVER
                answer.append({"external_userid": external, "errcode": errcode})
            return {"customer": answer}

        return transfer

    def _transfer_result_with(self, resigned: bool) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def result(body: dict[str, Any]) -> dict[str, Any]:
            """``{handover_userid, takeover_userid, cursor}`` → a page of ``{external_userid, status,
            takeover_time}``; a customer waiting takes its outcome on the first query (24 hours, compressed)."""
            key = (resigned, str(body.get("handover_userid") or ""), str(body.get("takeover_userid") or ""))
            if not key[1] or not key[2]:
                raise _Reject(40058, "handover_userid and takeover_userid are required")
            moves = self.transfers.get(key, {})
            for external, status in moves.items():
                if status == WAITING_TAKEOVER:
                    moves[external] = self.transfer_outcomes.get(external, 1)
            start = int(str(body.get("cursor") or "0") or 0)
            page = list(moves.items())[start : start + self.result_page_size]
            rest = start + len(page) < len(moves)
            customers = [
                {"external_userid": e, "status": s, "takeover_time": int(time.time()) if s == 1 else 0} for e, s in page
            ]
            return {"customer": customers, "next_cursor": str(start + len(page)) if rest else ""}

        return result

    # externalcontact/get: external_userid → {"external_contact": {...}, "follow_user": [...]} as WeCom answers it.
    external_contacts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add_external_contact(
        self, external: str, name: str, *, corp_name: str = "", follow: str = "", remark: str = "",
        remark_corp_name: str = "", mobiles: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        """A customer contact the corp knows, added by member ``follow`` with the rep's notes about them."""
        self.external_contacts[external] = {
            "external_contact": {"external_userid": external, "name": name, "type": 1, "corp_name": corp_name},
            "follow_user": [
                {"userid": follow, "remark": remark, "remark_corp_name": remark_corp_name,
                 "remark_mobiles": list(mobiles), "createtime": int(time.time()), "tags": []}
            ],
        }  # fmt: skip

    async def _get_external_contact(self, request: web.Request) -> web.Response:
        call: dict[str, Any] = {"endpoint": "externalcontact/get", "query": {"external_userid": ""}}
        self.calls.append(call)
        if (faulty := await self._fault("externalcontact/get")) is not None:
            return faulty
        external = request.query.get("external_userid", "")
        call["query"]["external_userid"] = external
        try:
            self._check_token(request.query.get("access_token", ""))
            if external not in self.external_contacts:
                raise _Reject(84061, "not external contact")
        except _Reject as exc:
            call["answer"] = {"errcode": exc.errcode}
            return _answer(exc.errcode, exc.errmsg)
        answer = {"errcode": 0, "errmsg": "ok", **self.external_contacts[external], "next_cursor": ""}
        call["answer"] = answer
        return web.json_response(answer)

    # -- the chat sidebar: web OAuth, JS-SDK tickets, the JS-SDK stand-in ---------------------------------------

    # The member signed in to WeCom in the browser: ``/connect/oauth2/authorize`` sends them back with a code.
    oauth_user: str = ""
    # The external contact of the chat the sidebar is opened beside (what getCurExternalContact answers).
    current_contact: str = ""
    # The corp's and the app's JS-SDK tickets (the same ticket is answered until it expires, as WeCom does).
    jsapi_tickets: dict[str, str] = field(
        default_factory=lambda: {"corp": secrets.token_urlsafe(24), "agent": secrets.token_urlsafe(24)}
    )
    _oauth_codes: dict[str, tuple[str, bool, float]] = field(default_factory=dict)  # code → (id, member, expiry)

    def issue_oauth_code(self, userid: str, *, member: bool = True) -> str:
        """A one-time code as WeCom hands the browser after sign-in (``member=False``: someone outside the corp)."""
        code = secrets.token_urlsafe(24)
        self._oauth_codes[code] = (userid, member, time.monotonic() + OAUTH_CODE_TTL)
        return code

    async def _authorize(self, request: web.Request) -> web.Response:
        """The sign-in page WeCom shows inside its browser: checks the app's parameters and sends the signed-in
        member back to ``redirect_uri`` with ``code`` and ``state``."""
        query = request.query
        self.calls.append({"endpoint": "oauth2/authorize", "query": dict(query)})
        redirect = query.get("redirect_uri", "")
        if (
            query.get("appid") != self.corp_id
            or query.get("agentid") != str(self.agent_id)
            or query.get("response_type") != "code"
            or query.get("scope") not in ("snsapi_base", "snsapi_privateinfo")
            or not redirect.startswith(("http://", "https://"))
            or not self.oauth_user
        ):
            return web.Response(status=400, text="invalid oauth request")
        code = self.issue_oauth_code(self.oauth_user)
        separator = "&" if "?" in redirect else "?"
        target = f"{redirect}{separator}{urlencode({'code': code, 'state': query.get('state', '')})}"
        return web.Response(status=302, headers={"Location": target})

    async def _getuserinfo(self, request: web.Request) -> web.Response:
        """``auth/getuserinfo?access_token&code``: a member's ``userid``, or an outsider's ``openid``; a code is
        good once, for five minutes (else 40029)."""
        call: dict[str, Any] = {"endpoint": "auth/getuserinfo"}
        self.calls.append(call)
        if (faulty := await self._fault("auth/getuserinfo")) is not None:
            return faulty
        try:
            self._check_token(request.query.get("access_token", ""))
            found = self._oauth_codes.pop(request.query.get("code", ""), None)
            if found is None or time.monotonic() >= found[2]:
                raise _Reject(INVALID_CODE, "invalid code")
        except _Reject as exc:
            call["answer"] = {"errcode": exc.errcode}
            return _answer(exc.errcode, exc.errmsg)
        userid, member, _ = found
        answer = {"errcode": 0, "errmsg": "ok", **({"userid": userid} if member else {"openid": userid})}
        call["answer"] = answer
        return web.json_response(answer)

    def _ticket_with(self, name: str, kind: str) -> Callable[[web.Request], Any]:
        async def ticket(request: web.Request) -> web.Response:
            """``get_jsapi_ticket`` (the corp's) or ``ticket/get?type=agent_config`` (the app's)."""
            call: dict[str, Any] = {"endpoint": name}
            self.calls.append(call)
            if (faulty := await self._fault(name)) is not None:
                return faulty
            try:
                self._check_token(request.query.get("access_token", ""))
                if kind == "agent" and request.query.get("type") != "agent_config":
                    raise _Reject(40058, "invalid type")
            except _Reject as exc:
                call["answer"] = {"errcode": exc.errcode}
                return _answer(exc.errcode, exc.errmsg)
            call["answer"] = {"errcode": 0}
            return web.json_response(
                {"errcode": 0, "errmsg": "ok", "ticket": self.jsapi_tickets[kind], "expires_in": TOKEN_TTL}
            )

        return ticket

    async def _jssdk(self, request: web.Request) -> web.Response:
        """A stand-in for WeCom's JS-SDK (``wx`` / ``jWeixin``): ``wx.config`` and ``wx.agentConfig`` check every
        field they are given and the signature of the page's own URL under the right ticket (SHA-1 in the page);
        ``getCurExternalContact`` answers ``current_contact`` only after a valid agentConfig. What the page called
        is kept in ``window.__wecomCalls``."""
        settings = {
            "corpId": self.corp_id,
            "agentId": str(self.agent_id),
            "tickets": self.jsapi_tickets,
            "contact": self.current_contact,
        }
        script = JSSDK_STUB.replace("__SETTINGS__", json.dumps(settings))
        return web.Response(text=script, content_type="application/javascript")

    def customer_messages(self) -> list[dict[str, Any]]:
        """Accepted ``externalcontact/add_msg_template`` bodies (messages a rep was asked to confirm)."""
        return [item["body"] for item in self.sent if item["endpoint"] == "externalcontact/add_msg_template"]

    def issue_response_code(self, userid: str, task_id: str) -> str:
        """A response code as WeCom puts in a click event (for cards the simulator did not send itself)."""
        code = secrets.token_hex(16)
        self._codes[code] = _ResponseCode((userid,), task_id, time.monotonic() + RESPONSE_CODE_TTL)
        return code

    def _log(self, line: str) -> None:
        if self.echo is not None:
            self.echo(line)


# -- customer contact: externalcontact/add_msg_template (NPS surveys) ---------------------------------------------


def _check_add_msg_template(body: dict[str, Any], known: set[str] | None) -> dict[str, Any]:
    """``{"chat_type": "single", "external_userid": [...], "sender": userid, "text": {"content"}}`` → the task id
    and the contacts that cannot be reached (``known``: the external ids the corp has; None: all)."""
    chat_type = body.get("chat_type", "single")
    if chat_type not in ("single", "group"):
        raise _Reject(40058, "invalid chat_type")
    externals = body.get("external_userid") or []
    if not isinstance(externals, list) or (chat_type == "single" and not externals and not body.get("sender")):
        raise _Reject(40058, "external_userid or sender is required")
    if len(externals) > 10000:
        raise _Reject(40058, "more than 10000 external_userid")
    text = body.get("text")
    if not (isinstance(text, dict) and str(text.get("content") or "").strip()) and not body.get("attachments"):
        raise _Reject(41041, "text.content or attachments is required")
    if isinstance(text, dict) and len(str(text.get("content") or "").encode()) > 4000:
        raise _Reject(45002, "content size out of limit")
    failed = [e for e in externals if known is not None and e not in known]
    return {"fail_list": failed, "msgid": f"msg{secrets.token_hex(12)}"}


JSSDK_STUB = """(function () {
  "use strict";
  var given = __SETTINGS__;
  var calls = (window.__wecomCalls = []);
  var configured = null, agentConfigured = false, readyQueue = [], errorQueue = [];
  function sign(ticket, c) {
    var plain = "jsapi_ticket=" + ticket + "&noncestr=" + c.nonceStr + "&timestamp=" + c.timestamp +
      "&url=" + location.href.split("#")[0];
    return crypto.subtle.digest("SHA-1", new TextEncoder().encode(plain)).then(function (digest) {
      return Array.from(new Uint8Array(digest)).map(function (b) { return b.toString(16).padStart(2, "0"); }).join("");
    });
  }
  function fields(c) {
    return typeof c.timestamp === "number" && typeof c.nonceStr === "string" && c.nonceStr.length > 0 &&
      typeof c.signature === "string" && Array.isArray(c.jsApiList) &&
      c.jsApiList.indexOf("getCurExternalContact") >= 0;
  }
  function flush() {
    if (configured === true) { readyQueue.splice(0).forEach(function (f) { f(); }); }
    if (configured === false) { errorQueue.splice(0).forEach(function (f) { f({ errMsg: "config:fail" }); }); }
  }
  var wx = {
    config: function (c) {
      var call = { api: "config", args: JSON.parse(JSON.stringify(c)) };
      calls.push(call);
      sign(given.tickets.corp, c).then(function (expected) {
        call.valid = configured = c.beta === true && c.appId === given.corpId && fields(c) && c.signature === expected;
        flush();
      });
    },
    ready: function (f) { readyQueue.push(f); flush(); },
    error: function (f) { errorQueue.push(f); flush(); },
    agentConfig: function (c) {
      var call = { api: "agentConfig", args: JSON.parse(JSON.stringify(c)) };
      calls.push(call);
      sign(given.tickets.agent, c).then(function (expected) {
        call.valid = agentConfigured = c.corpid === given.corpId && String(c.agentid) === given.agentId &&
          fields(c) && c.signature === expected;
        if (agentConfigured) {
          c.success({ errMsg: "agentConfig:ok" });
        } else {
          c.fail({ errMsg: "agentConfig:fail" });
        }
      });
    },
    invoke: function (name, args, callback) {
      calls.push({ api: name, args: args });
      if (name === "getCurExternalContact" && agentConfigured && given.contact) {
        callback({ err_msg: "getCurExternalContact:ok", userId: given.contact });
      } else {
        callback({ err_msg: name + ":fail_no permission" });
      }
    }
  };
  window.wx = window.jWeixin = wx;
})();
"""


def _answer(errcode: int, errmsg: str) -> web.Response:
    return web.json_response({"errcode": errcode, "errmsg": errmsg})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="WeCom server API simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--corp-id", default="ww1436e0e65a779aee")
    parser.add_argument("--secret", default="test-app-secret")
    parser.add_argument("--agent-id", type=int, default=1000002)
    args = parser.parse_args(argv)
    sim = WeComSimulator(args.corp_id, args.secret, args.agent_id, echo=lambda line: print(line, flush=True))
    print(f"WeCom simulator on http://{args.host}:{args.port} (corp {args.corp_id}, agent {args.agent_id})", flush=True)
    web.run_app(sim.app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main(sys.argv[1:])

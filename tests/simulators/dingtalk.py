"""A DingTalk simulator (aiohttp) that plays the platform's side for tests, demos and benchmarks.

It serves what the bot calls: ``POST /v1.0/oauth2/accessToken`` (checks appKey/appSecret, hands out tokens that
expire by the simulator's clock and can be expired on demand), ``POST /v1.0/robot/oToMessages/batchSend``
(checks the token header, robotCode, 1-20 userIds, a known msgKey and a msgParam JSON string with that msgKey's
keys), the session webhooks it hands out with each robot callback (``POST /robot/sendBySession/<id>``, valid
until their expiry, body shape checked per msgtype) and stream mode (``POST /v1.0/gateway/connections/open``, then a
websocket at ``/connect`` on which ``stream_push`` sends robot frames and collects the acks).
Everything is recorded; faults can be injected per endpoint (HTTP errors, throttling, slow answers, invalid or
flow-controlled staff ids).

It also owns the app secret, so it builds robot callbacks exactly as DingTalk signs them
(``callback(sender, text)``) and can deliver them to the bot (``deliver(client, sender, text)``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import re
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from bot.clock import Clock

TOKEN = "token"
BATCH_SEND = "batch_send"
WEBHOOK = "webhook"
STREAM_OPEN = "stream_open"

# msgKey → the msgParam keys it requires (PROTOCOLS.md §6)
MSG_KEYS: dict[str, tuple[str, ...]] = {
    "sampleText": ("content",),
    "sampleMarkdown": ("title", "text"),
    "sampleImageMsg": ("photoURL",),
    "sampleLink": ("text", "title", "picUrl", "messageUrl"),
    "sampleActionCard": ("title", "text", "singleTitle", "singleURL"),
    **{
        f"sampleActionCard{n}": (
            "title",
            "text",
            *(k for i in range(1, n + 1) for k in (f"actionTitle{i}", f"actionURL{i}")),
        )
        for n in range(2, 6)
    },
}


_MARKDOWN_LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Delivery:
    """A message the simulated DingTalk accepted for one user."""

    via: str  # "session_webhook" or "batch_send"
    user_id: str
    msgtype: str  # the webhook msgtype or the batchSend msgKey
    content: dict[str, Any]  # the webhook's message object, or the decoded msgParam
    conversation_id: str = ""
    at: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        c = self.content
        return str(c.get("content") or c.get("text") or "")

    @property
    def links(self) -> list[tuple[str, str]]:
        """(text, url) of every markdown link and picture (``[text](url)``, ``![text](url)``) in the message."""
        return _MARKDOWN_LINK.findall(self.text)

    @property
    def buttons(self) -> list[tuple[str, str]]:
        """(title, url) of every ActionCard button, whichever variant carried them."""
        if "btns" in self.content:
            return [(b["title"], b["actionURL"]) for b in self.content["btns"]]
        if "singleTitle" in self.content:
            return [(self.content["singleTitle"], self.content["singleURL"])]
        out: list[tuple[str, str]] = []
        for i in itertools.count(1):
            if f"actionTitle{i}" not in self.content:
                return out
            out.append((self.content[f"actionTitle{i}"], self.content[f"actionURL{i}"]))
        return out


@dataclass
class Session:
    id: str
    user_id: str
    conversation_id: str
    group: bool
    expires_ms: int


@dataclass
class Fault:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    endpoint: str
    path: str
    headers: dict[str, str]
    body: Any


class DingTalkSimulator:
    def __init__(
        self,
        app_key: str = "dingsimappkey",
        app_secret: str = "dingsim-app-secret-0123456789",
        robot_code: str = "dingsimrobot",
        *,
        robot_name: str = "CRM助手",
        corp_id: str = "dingsimcorp",
        clock: Clock | None = None,
        token_ttl: int = 7200,
        webhook_ttl: int = 5400,
    ) -> None:
        self.app_key, self.app_secret, self.robot_code = app_key, app_secret, robot_code
        self.robot_name, self.corp_id = robot_name, corp_id
        self.clock = clock or Clock()
        self.token_ttl, self.webhook_ttl = token_ttl, webhook_ttl
        self.base_url = ""
        self.tokens: dict[str, int] = {}  # token → expiry (ms)
        self.sessions: dict[str, Session] = {}
        self.requests: list[Recorded] = []
        self.deliveries: list[Delivery] = []
        self.rejected: list[tuple[str, str]] = []  # (endpoint, reason) of requests answered with an error
        self.faults: dict[str, deque[Fault]] = {e: deque() for e in (TOKEN, BATCH_SEND, WEBHOOK, STREAM_OPEN)}
        self.delay_seconds = 0.0
        self.invalid_staff_ids: set[str] = set()
        self.flow_controlled_staff_ids: set[str] = set()
        self._msgids = itertools.count(1)
        self._last_timestamp = 0
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.router.add_post("/v1.0/oauth2/accessToken", self._access_token)
        self.app.router.add_post("/v1.0/robot/oToMessages/batchSend", self._batch_send)
        self.app.router.add_post("/robot/sendBySession/{session}", self._send_by_session)
        self.app.router.add_post("/v1.0/gateway/connections/open", self._open_stream)
        self.app.router.add_get("/connect", self._stream_socket)
        self.stream_tickets: set[str] = set()
        self.stream_acks: list[dict[str, Any]] = []
        self._stream_ws: web.WebSocketResponse | None = None
        self._stream_waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._stream_up = asyncio.Event()

    # --- lifecycle and settings ---------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0: any free port); returns and remembers the base URL."""
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        address = self._runner.addresses[0]
        self.base_url = f"http://{address[0]}:{address[1]}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def settings(self) -> dict[str, Any]:
        """The ``[dingtalk]`` section that points a bot at this simulator."""
        return {
            "app_key": self.app_key,
            "app_secret": self.app_secret,
            "robot_code": self.robot_code,
            "robot_name": self.robot_name,
            "api_base": self.base_url,
            "session_webhook_prefix": self.base_url + "/robot/",
        }

    def now_ms(self) -> int:
        return int(self.clock.now().timestamp() * 1000)

    # --- fault injection ----------------------------------------------------------------------------------------

    def fail(self, endpoint: str, count: int = 1, status: int = 500, body: dict[str, Any] | None = None) -> None:
        """The next ``count`` calls to ``endpoint`` (TOKEN, BATCH_SEND, WEBHOOK) answer ``status`` with ``body``."""
        for _ in range(count):
            self.faults[endpoint].append(Fault(status, body or {"code": "ServiceUnavailable", "message": "系统繁忙"}))

    def throttle(self, endpoint: str, count: int = 1, style: str = "429") -> None:
        """Throttle the next calls: HTTP 429, an HTTP 403 ``QpsLimitForApi`` code, or a webhook errcode 130101."""
        for _ in range(count):
            if endpoint == WEBHOOK:
                self.faults[endpoint].append(Fault(200, {"errcode": 130101, "errmsg": "send too fast"}))
            elif style == "qps":
                body = {"code": "Forbidden.AccessDenied.QpsLimitForApi", "message": "调用频率超限"}
                self.faults[endpoint].append(Fault(403, body))
            else:
                self.faults[endpoint].append(
                    Fault(429, {"code": "Throttling", "message": "请求过于频繁"}, {"Retry-After": "2"})
                )

    def expire_tokens(self) -> None:
        """Invalidate every token handed out (DingTalk may do this before ``expireIn``)."""
        self.tokens.clear()

    def expire_sessions(self) -> None:
        for session in self.sessions.values():
            session.expires_ms = 0

    # --- what the bot receives ----------------------------------------------------------------------------------

    def sign(self, timestamp_ms: int) -> str:
        digest = hmac.new(
            self.app_secret.encode(), f"{timestamp_ms}\n{self.app_secret}".encode(), hashlib.sha256
        ).digest()
        return base64.b64encode(digest).decode()

    def fresh_timestamp(self) -> int:
        """A signing timestamp no earlier request had: DingTalk signs every callback anew, and the bot accepts a
        (timestamp, sign) pair for one body only, so calls on a pinned clock step on by a millisecond each."""
        self._last_timestamp = max(self.now_ms(), self._last_timestamp + 1)
        return self._last_timestamp

    def signed_headers(self, timestamp_ms: int | None = None) -> dict[str, str]:
        ts = self.fresh_timestamp() if timestamp_ms is None else timestamp_ms
        return {"timestamp": str(ts), "sign": self.sign(ts), "Content-Type": "application/json; charset=utf-8"}

    def open_session(self, user_id: str, conversation_id: str, group: bool = False, ttl: int | None = None) -> Session:
        session = Session(
            id=secrets.token_hex(12),
            user_id=user_id,
            conversation_id=conversation_id,
            group=group,
            expires_ms=self.now_ms() + 1000 * (self.webhook_ttl if ttl is None else ttl),
        )
        self.sessions[session.id] = session
        return session

    def webhook_url(self, session: Session) -> str:
        return f"{self.base_url}/robot/sendBySession/{session.id}"

    def message(
        self,
        sender: str,
        text: str,
        *,
        nick: str = "",
        msgid: str | None = None,
        group: bool = False,
        conversation_id: str | None = None,
        webhook_ttl: int | None = None,
    ) -> dict[str, Any]:
        """The robot callback body DingTalk builds when ``sender`` (a staffId) sends ``text`` to the robot."""
        conversation_id = conversation_id or (f"cidGROUP{sender}" if group else f"cidSINGLE{sender}")
        session = self.open_session(sender, conversation_id, group, webhook_ttl)
        return {
            "msgtype": "text",
            "text": {"content": f"@{self.robot_name} {text}" if group else text},
            "msgId": msgid or f"msgSIM{next(self._msgids):08d}{secrets.token_hex(4)}",
            "createAt": self.now_ms(),
            "conversationType": "2" if group else "1",
            "conversationId": conversation_id,
            "conversationTitle": "销售群" if group else "",
            "senderId": f"$:LWCP_v1:${sender}",
            "senderNick": nick or sender,
            "senderCorpId": self.corp_id,
            "senderStaffId": sender,
            "chatbotUserId": "$:LWCP_v1:$robot",
            "chatbotCorpId": self.corp_id,
            "isAdmin": False,
            "isInAtList": True,
            "atUsers": [{"dingtalkId": "$:LWCP_v1:$robot"}] if group else [],
            "robotCode": self.robot_code,
            "sessionWebhook": self.webhook_url(session),
            "sessionWebhookExpiredTime": session.expires_ms,
        }

    def callback(self, sender: str, text: str, **kwargs: Any) -> tuple[dict[str, str], bytes]:
        """Headers and body of the signed POST DingTalk makes for ``sender``'s message."""
        body = self.message(sender, text, **kwargs)
        return self.signed_headers(), json.dumps(body, ensure_ascii=False).encode()

    async def deliver(self, client: Any, sender: str, text: str, **kwargs: Any) -> Any:
        """POST ``sender``'s message to the bot's ``/dingtalk/callback`` (``client``: an aiohttp test client)."""
        headers, body = self.callback(sender, text, **kwargs)
        return await client.post("/dingtalk/callback", data=body, headers=headers)

    # --- what the bot sent --------------------------------------------------------------------------------------

    def delivered_to(self, user_id: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.user_id == user_id]

    def texts_to(self, user_id: str) -> list[str]:
        return [d.text for d in self.delivered_to(user_id)]

    # --- handlers -----------------------------------------------------------------------------------------------

    async def _enter(self, endpoint: str, request: web.Request) -> tuple[Any, web.Response | None]:
        raw = await request.text()
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw
        self.requests.append(Recorded(endpoint, request.path, dict(request.headers), body))
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if self.faults[endpoint]:
            fault = self.faults[endpoint].popleft()
            self.rejected.append((endpoint, f"injected HTTP {fault.status}"))
            return body, web.json_response(fault.body, status=fault.status, headers=fault.headers)
        if not isinstance(body, dict):
            return body, self._error(endpoint, 400, "InvalidParameter", "body must be a JSON object")
        return body, None

    def _error(self, endpoint: str, status: int, code: str, message: str) -> web.Response:
        self.rejected.append((endpoint, f"{code}: {message}"))
        return web.json_response({"code": code, "message": message, "requestid": secrets.token_hex(8)}, status=status)

    async def _access_token(self, request: web.Request) -> web.Response:
        body, early = await self._enter(TOKEN, request)
        if early is not None:
            return early
        if body.get("appKey") != self.app_key or body.get("appSecret") != self.app_secret:
            return self._error(TOKEN, 400, "invalidClientIdOrSecret", "无效的clientId或者clientSecret")
        token = secrets.token_hex(16)
        self.tokens[token] = self.now_ms() + self.token_ttl * 1000
        return web.json_response({"accessToken": token, "expireIn": self.token_ttl})

    async def _batch_send(self, request: web.Request) -> web.Response:
        body, early = await self._enter(BATCH_SEND, request)
        if early is not None:
            return early
        token = request.headers.get("x-acs-dingtalk-access-token", "")
        if self.tokens.get(token, 0) <= self.now_ms():
            return self._error(BATCH_SEND, 401, "InvalidAuthentication", "不合法的access_token")
        if body.get("robotCode") != self.robot_code:
            return self._error(BATCH_SEND, 400, "resource.not.found", "机器人不存在")
        users = body.get("userIds")
        if not isinstance(users, list) or not 1 <= len(users) <= 20 or not all(isinstance(u, str) for u in users):
            return self._error(BATCH_SEND, 400, "InvalidParameter", "userIds 须为 1-20 个用户")
        msg_key, msg_param = body.get("msgKey"), body.get("msgParam")
        if msg_key not in MSG_KEYS:
            return self._error(BATCH_SEND, 400, "InvalidParameter", f"未知的 msgKey {msg_key}")
        if not isinstance(msg_param, str):
            return self._error(BATCH_SEND, 400, "InvalidParameter", "msgParam 须为 JSON 字符串")
        try:
            param = json.loads(msg_param)
        except json.JSONDecodeError:
            return self._error(BATCH_SEND, 400, "InvalidParameter", "msgParam 不是合法 JSON")
        required = MSG_KEYS[msg_key]
        if not isinstance(param, dict) or any(not isinstance(param.get(k), str) or not param[k] for k in required):
            return self._error(BATCH_SEND, 400, "InvalidParameter", f"{msg_key} 需要 {', '.join(required)}")
        invalid = [u for u in users if u in self.invalid_staff_ids]
        throttled = [u for u in users if u in self.flow_controlled_staff_ids and u not in invalid]
        for user in users:
            if user not in invalid and user not in throttled:
                self.deliveries.append(Delivery("batch_send", user, msg_key, param))
        answer: dict[str, Any] = {"processQueryKey": secrets.token_hex(12)}
        if invalid:
            answer["invalidStaffIdList"] = invalid
        if throttled:
            answer["flowControlledStaffIdList"] = throttled
        return web.json_response(answer)

    async def _send_by_session(self, request: web.Request) -> web.Response:
        body, early = await self._enter(WEBHOOK, request)
        if early is not None:
            return early
        session = self.sessions.get(request.match_info["session"])
        if session is None or session.expires_ms <= self.now_ms():
            self.rejected.append((WEBHOOK, "session gone"))
            return web.json_response({"errcode": 300001, "errmsg": "session 不存在"})
        msgtype = body.get("msgtype")
        content = body.get(msgtype) if isinstance(msgtype, str) else None
        problem = _webhook_problem(msgtype, content)
        if problem:
            self.rejected.append((WEBHOOK, problem))
            return web.json_response({"errcode": 40035, "errmsg": f"缺少参数 json: {problem}"})
        assert isinstance(msgtype, str) and isinstance(content, dict)
        at = body.get("at", {}).get("atUserIds", []) if isinstance(body.get("at"), dict) else []
        self.deliveries.append(
            Delivery("session_webhook", session.user_id, msgtype, content, session.conversation_id, tuple(at))
        )
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _open_stream(self, request: web.Request) -> web.Response:
        body, early = await self._enter(STREAM_OPEN, request)
        if early is not None:
            return early
        if body.get("clientId") != self.app_key or body.get("clientSecret") != self.app_secret:
            return self._error(STREAM_OPEN, 401, "invalidClientIdOrSecret", "无效的clientId或者clientSecret")
        topics = body.get("subscriptions")
        if not isinstance(topics, list) or not topics:
            return self._error(STREAM_OPEN, 400, "InvalidParameter", "subscriptions 不能为空")
        host = self.base_url.removeprefix("http://")
        ticket = secrets.token_hex(16)
        self.stream_tickets.add(ticket)
        return web.json_response({"endpoint": f"ws://{host}/connect", "ticket": ticket})

    async def _stream_socket(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("ticket") not in self.stream_tickets:
            return web.json_response({"code": "InvalidTicket"}, status=403)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._stream_ws = ws
        self._stream_up.set()
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            ack = json.loads(frame.data)
            self.stream_acks.append(ack)
            waiter = self._stream_waiters.pop(str(ack.get("headers", {}).get("messageId")), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(ack)
        if self._stream_ws is ws:
            self._stream_ws = None
            self._stream_up.clear()
        return ws

    @property
    def stream_connected(self) -> bool:
        return self._stream_ws is not None and not self._stream_ws.closed

    async def stream_push(self, body: dict[str, Any], message_id: str | None = None) -> dict[str, Any]:
        """Send a robot message over the connected stream; returns the bot's ack frame."""
        await self._stream_up.wait()
        assert self._stream_ws is not None
        message_id = message_id or secrets.token_hex(8)
        waiter = asyncio.get_running_loop().create_future()
        self._stream_waiters[message_id] = waiter
        frame = {
            "specVersion": "1.0",
            "type": "CALLBACK",
            "headers": {
                "appId": self.app_key,
                "connectionId": "simconn",
                "contentType": "application/json",
                "messageId": message_id,
                "time": str(self.now_ms()),
                "topic": "/v1.0/im/bot/messages/get",
            },
            "data": json.dumps(body, ensure_ascii=False),
        }
        await self._stream_ws.send_str(json.dumps(frame, ensure_ascii=False))
        ack: dict[str, Any] = await waiter
        return ack


def _webhook_problem(msgtype: Any, content: Any) -> str:
    """Why a sessionWebhook body is malformed, or ''."""
    if not isinstance(content, dict):
        return f"no {msgtype!r} object"
    required = {"text": ("content",), "markdown": ("title", "text"), "actionCard": ("title", "text")}.get(msgtype)
    if required is None:
        return f"unsupported msgtype {msgtype!r}"
    if any(not isinstance(content.get(k), str) or not content[k] for k in required):
        return f"{msgtype} needs {', '.join(required)}"
    if msgtype == "actionCard":
        btns = content.get("btns")
        if btns is not None:
            ok = (
                isinstance(btns, list)
                and btns
                and all(
                    isinstance(b, dict) and isinstance(b.get("title"), str) and isinstance(b.get("actionURL"), str)
                    for b in btns
                )
            )
            if not ok:
                return "btns must be [{title, actionURL}]"
        elif not (isinstance(content.get("singleTitle"), str) and isinstance(content.get("singleURL"), str)):
            return "actionCard needs btns or singleTitle/singleURL"
    return ""

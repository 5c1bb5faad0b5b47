"""Test helpers that play the platforms' side: sign and encrypt WeCom callbacks, build message XML."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from tortoise.expressions import Q

from bot.keys import BOT, CLOCK, OUTBOX
from integrations.wecom.crypto import WeComCrypto
from models.outbox import OutboxMessage, OutboxStatus


@dataclass(frozen=True)
class WeComCorp:
    corp_id: str
    token: str
    encoding_aes_key: str
    agent_id: int
    secret: str

    @property
    def crypto(self) -> WeComCrypto:
        return WeComCrypto(self.token, self.encoding_aes_key, self.corp_id)


# Tencent's official WXBizMsgCrypt sample corp (PROTOCOLS.md §1, vector B).
WECOM = WeComCorp(
    corp_id="ww1436e0e65a779aee",
    token="hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo",
    encoding_aes_key="6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
    agent_id=1000002,
    secret="test-app-secret",
)


def text_xml(sender: str, content: str, msgid: int | str, created: int | None = None, corp: WeComCorp = WECOM) -> str:
    created = created or int(time.time())
    return (
        f"<xml><ToUserName><![CDATA[{corp.corp_id}]]></ToUserName><FromUserName><![CDATA[{sender}]]></FromUserName>"
        f"<CreateTime>{created}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>"
        f"<MsgId>{msgid}</MsgId><AgentID>{corp.agent_id}</AgentID></xml>"
    )


def signed_callback(xml: str, corp: WeComCorp = WECOM, at: float | None = None) -> tuple[dict[str, str], str]:
    """The query string and body WeCom would POST for ``xml``, signed at Unix time ``at`` (default: now)."""
    crypto = corp.crypto
    encrypt = crypto.encrypt(xml)
    timestamp, nonce = str(int(time.time() if at is None else at)), secrets.token_hex(5)
    query = {"msg_signature": crypto.sign(timestamp, nonce, encrypt), "timestamp": timestamp, "nonce": nonce}
    body = (
        f"<xml><ToUserName><![CDATA[{corp.corp_id}]]></ToUserName><AgentID><![CDATA[{corp.agent_id}]]></AgentID>"
        f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    )
    return query, body


async def post_wecom(client: TestClient[Any, web.Application], xml: str, corp: WeComCorp = WECOM) -> Any:
    """POST ``xml`` as WeCom would, signed at the app's "now" (its clock may be pinned)."""
    query, body = signed_callback(xml, corp, client.app[CLOCK].now().timestamp())
    return await client.post("/wecom/callback", params=query, data=body.encode())


async def settle(app: web.Application, patience: float = 10.0) -> None:
    """Wait until every message has been handled and every due outbox row attempted, also the rows the running
    dispatcher has out (claimed and being sent: a drain here skips them, so it could end before they arrive).
    ``patience`` (seconds) bounds the wait for those."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while True:
        await app[BOT].tasks.idle()
        await app[OUTBOX].drain()
        out = OutboxMessage.filter(status=OutboxStatus.SENDING, lease_until__gte=app[CLOCK].now())
        if loop.time() > deadline or not await out.exists():
            return
        await asyncio.sleep(0.01)


async def deliver_all(app: web.Application, patience: float = 30.0) -> None:
    """Wait until every message is handled and every outbox row due meanwhile has left (sent, or failed for good);
    a push scheduled for later (say, a reminder for tomorrow morning, or held by the quiet hours) stays.

    Rows rescheduled after a platform failure become due again in real time, so this works with the real clock
    (the default of ``start_app``); ``patience`` (seconds) only guards against a test hanging forever.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while True:
        await settle(app)
        due_by = app[CLOCK].now() + timedelta(seconds=patience)
        waiting = OutboxMessage.filter(
            Q(status=OutboxStatus.PENDING, not_before__lte=due_by) | Q(status=OutboxStatus.SENDING)
        )
        if not await waiting.exists():
            return
        if loop.time() > deadline:
            rows = await waiting.limit(5).values("dedupe_key", "recipient", "status", "not_before", "last_error")
            raise AssertionError(f"outbox still has undelivered rows, e.g. {rows}")
        await asyncio.sleep(0.02)


def dingtalk_sign(timestamp_ms: int | str, app_secret: str) -> str:
    """DingTalk's callback ``sign`` header: base64(HMAC-SHA256(app_secret, f"{timestamp}\\n{app_secret}"))."""
    import base64
    import hashlib
    import hmac

    message = f"{timestamp_ms}\n{app_secret}".encode()
    return base64.b64encode(hmac.new(app_secret.encode(), message, hashlib.sha256).digest()).decode()


def dingtalk_callback(body: Any, app_secret: str, timestamp_ms: int) -> tuple[dict[str, str], bytes]:
    """Headers (``timestamp``, ``sign``) and JSON bytes of a robot callback POST signed at ``timestamp_ms``."""
    import json

    data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    headers = {"timestamp": str(timestamp_ms), "sign": dingtalk_sign(timestamp_ms, app_secret)}
    return {**headers, "Content-Type": "application/json"}, data


async def post_dingtalk(client: TestClient[Any, web.Application], body: Any, app_secret: str, timestamp_ms: int) -> Any:
    headers, data = dingtalk_callback(body, app_secret, timestamp_ms)
    return await client.post("/dingtalk/callback", data=data, headers=headers)


async def staff_member(*, wecom: str | None = None, dingtalk: str | None = None, **fields: Any) -> Any:
    """A staff member (``Staff`` fields as keywords) with the given platform accounts."""
    from models.staff import Staff, StaffAccount

    staff = await Staff.create(**fields)
    for platform, user_id in (("wecom", wecom), ("dingtalk", dingtalk)):
        if user_id:
            await StaffAccount.create(staff_id=staff.id, platform=platform, user_id=user_id)
    return staff


async def account_of(staff: Any, platform: str) -> str | None:
    """``staff``'s user id on ``platform``."""
    from models.staff import StaffAccount

    row = await StaffAccount.filter(staff_id=staff.id, platform=platform).first()
    return row.user_id if row is not None else None


async def staff_with_account(platform: str, user_id: str) -> Any:
    """The staff member whose account on ``platform`` is ``user_id``."""
    from models.staff import Staff

    return await Staff.get(accounts__platform=platform, accounts__user_id=user_id)


async def in_pieces(body: bytes, size: int = 64) -> AsyncIterator[bytes]:
    """``body`` as a client sends it in several pieces (chunked, each piece on the wire on its own)."""
    for start in range(0, len(body), size):
        yield body[start : start + size]
        await asyncio.sleep(0.01)


def require_tool(path: str | None, missing: str) -> str:
    """``path`` of an optional system tool a test needs. Without it the test is skipped with ``missing`` as the
    reason, except where ``CRMBOT_REQUIRE_TOOLS`` is set (CI installs every tool and refuses the skip)."""
    import os

    import pytest

    if path is not None:
        return path
    if os.environ.get("CRMBOT_REQUIRE_TOOLS"):
        pytest.fail(f"{missing} (CRMBOT_REQUIRE_TOOLS is set: this test must run here)")
    pytest.skip(missing)

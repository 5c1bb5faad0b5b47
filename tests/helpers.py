"""Test helpers that play the platforms' side: sign and encrypt WeCom callbacks, build message XML."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app import BOT, OUTBOX
from integrations.wecom.crypto import WeComCrypto


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


def signed_callback(xml: str, corp: WeComCorp = WECOM) -> tuple[dict[str, str], str]:
    """The query string and body WeCom would POST for ``xml``."""
    crypto = corp.crypto
    encrypt = crypto.encrypt(xml)
    timestamp, nonce = str(int(time.time())), secrets.token_hex(5)
    query = {"msg_signature": crypto.sign(timestamp, nonce, encrypt), "timestamp": timestamp, "nonce": nonce}
    body = (
        f"<xml><ToUserName><![CDATA[{corp.corp_id}]]></ToUserName><AgentID><![CDATA[{corp.agent_id}]]></AgentID>"
        f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    )
    return query, body


async def post_wecom(client: TestClient[Any, web.Application], xml: str, corp: WeComCorp = WECOM) -> Any:
    query, body = signed_callback(xml, corp)
    return await client.post("/wecom/callback", params=query, data=body.encode())


async def settle(app: web.Application) -> None:
    """Wait until every message has been handled and every due outbox row attempted."""
    await app[BOT].tasks.idle()
    await app[OUTBOX].drain()

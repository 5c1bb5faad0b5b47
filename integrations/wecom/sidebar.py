"""WeCom's side of the chat sidebar (聊天工具栏): web OAuth sign-in, the JS-SDK tickets and their signatures.

A member opening the sidebar is sent to ``[wecom] oauth_url`` (``appid`` = corp id, ``scope=snsapi_base``, the
app's ``agentid``) and comes back with a one-time ``code`` (valid five minutes); ``auth/getuserinfo`` turns it into
their UserID (someone outside the corp gets an ``openid`` instead, and is refused; a used or forged code is errcode
40029). The page script (``sidebar.js`` next to this module) configures the JS-SDK twice: ``wx.config`` signed with
the corp's ticket (``get_jsapi_ticket``) and ``wx.agentConfig`` with the app's (``ticket/get?type=agent_config``),
then asks ``wx.invoke('getCurExternalContact')`` for the open chat's external contact id. Each ticket lives two
hours and is rate-limited, so it is cached until shortly before it expires, fetched once at a time behind a lock.
A signature is the SHA-1 hex of ``jsapi_ticket=…&noncestr=…&timestamp=…&url=…``, the URL without its fragment.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bot.channels import DeliveryError, PermanentDeliveryError
from bot.sidebar import SidebarPlatform, SidebarUnavailable
from integrations.wecom.client import WeComClient
from integrations.wecom.settings import PLATFORM, WeComSettings

# The ticket each configuration is signed with: the corp's for wx.config, the app's for wx.agentConfig.
TICKET_APIS: dict[str, tuple[str, dict[str, str]]] = {
    "corp": ("get_jsapi_ticket", {}),
    "agent": ("ticket/get", {"type": "agent_config"}),
}
TICKET_MARGIN_SECONDS = 300.0  # renewed this long before WeCom says it expires
JS_APIS = ["getCurExternalContact"]
CODE_SHAPE = re.compile(r"^[A-Za-z0-9_\-]{1,512}$")  # an OAuth code is at most 512 bytes
SCRIPT = (Path(__file__).parent / "sidebar.js").read_text(encoding="utf-8")


def signature(ticket: str, nonce: str, timestamp: int, url: str) -> str:
    """The JS-SDK signature of ``url`` (its fragment dropped) under ``ticket``."""
    plain = f"jsapi_ticket={ticket}&noncestr={nonce}&timestamp={timestamp}&url={url.split('#', 1)[0]}"
    return hashlib.sha1(plain.encode()).hexdigest()


class JsapiTickets:
    """The corp's and the app's JS-SDK tickets, each cached until shortly before it expires; concurrent callers
    wait on one fetch."""

    def __init__(self, client: WeComClient, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.clock = clock
        self._cached: dict[str, tuple[str, float]] = {}
        self._locks = {kind: asyncio.Lock() for kind in TICKET_APIS}

    async def get(self, kind: str) -> str:
        async with self._locks[kind]:
            cached = self._cached.get(kind)
            if cached is not None and self.clock() < cached[1]:
                return cached[0]
            api, params = TICKET_APIS[kind]
            answer = await self.client.get(api, params)
            ticket = answer.get("ticket")
            if not isinstance(ticket, str) or not ticket:
                raise DeliveryError(f"wecom {api}: no ticket in the answer")
            expires_in = float(answer.get("expires_in") or 7200)
            self._cached[kind] = (ticket, self.clock() + max(expires_in - TICKET_MARGIN_SECONDS, expires_in / 2))
            return ticket


class WeComSidebar:
    """``bot.sidebar.SidebarPlatform`` for one self-built app."""

    def __init__(self, settings: WeComSettings, client: WeComClient) -> None:
        self.settings = settings
        self.client = client
        self.tickets = JsapiTickets(client)

    def login_url(self, return_url: str, state: str) -> str:
        # WeCom matches the parameters in this order; the fragment is required.
        query = urlencode(
            {
                "appid": self.settings.corp_id,
                "redirect_uri": return_url,
                "response_type": "code",
                "scope": "snsapi_base",
                "state": state,
                "agentid": str(self.settings.agent_id),
            }
        )
        return f"{self.settings.oauth_url}?{query}#wechat_redirect"

    async def user_of(self, code: str) -> str | None:
        if not CODE_SHAPE.match(code):
            return None
        try:
            answer = await self.client.get("auth/getuserinfo", {"code": code})
        except PermanentDeliveryError:  # 40029: a code used before, expired or made up
            return None
        except DeliveryError as exc:
            raise SidebarUnavailable(str(exc)) from exc
        userid = answer.get("userid") or answer.get("UserId")  # older answers spelled it UserId
        return userid if isinstance(userid, str) and userid else None

    async def page_config(self, url: str) -> dict[str, Any]:
        try:
            corp_ticket = await self.tickets.get("corp")
            agent_ticket = await self.tickets.get("agent")
        except (DeliveryError, PermanentDeliveryError) as exc:
            raise SidebarUnavailable(str(exc)) from exc
        nonce, timestamp = secrets.token_hex(8), int(time.time())
        corp_id = self.settings.corp_id
        return {
            "config": {
                "beta": True,
                "appId": corp_id,
                "timestamp": timestamp,
                "nonceStr": nonce,
                "signature": signature(corp_ticket, nonce, timestamp, url),
                "jsApiList": JS_APIS,
            },
            "agentConfig": {
                "corpid": corp_id,
                "agentid": str(self.settings.agent_id),
                "timestamp": timestamp,
                "nonceStr": nonce,
                "signature": signature(agent_ticket, nonce, timestamp, url),
                "jsApiList": JS_APIS,
            },
        }

    def port(self) -> SidebarPlatform:
        return SidebarPlatform(
            PLATFORM, self.login_url, self.user_of, self.page_config, self.settings.jssdk_url, SCRIPT
        )

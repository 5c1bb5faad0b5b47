"""One way for a test to play the people: ``say(user, text)`` as a staff member typing to the bot, ``tap(user, card,
button)`` as them tapping a card button, ``sent_to(user)`` for what reached them, on WeCom, DingTalk or the console,
each through its real path (a signed, encrypted callback; a signed robot callback; a terminal line).

``WeComChat`` posts encrypted callbacks and reads the WeCom simulator; ``DingTalkChat`` posts signed robot
callbacks and reads the DingTalk simulator (a tap on an ActionCard button is the tapper's own message, as the
DingTalk client sends it); ``ConsoleChat`` types into ``crmbot chat`` and reads what it prints. Every ``say`` and
``tap`` returns once the message is handled and everything due has been sent.
"""

from __future__ import annotations

import io
import itertools
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from aiohttp.test_utils import TestClient

from integrations.console import chat
from models.staff import Staff
from tests.helpers import WECOM, deliver_all, post_wecom, settle, text_xml
from tests.simulators.dingtalk import Delivery, DingTalkSimulator
from tests.simulators.wecom import WeComSimulator

Client = TestClient[Any, web.Application]
_msgids = itertools.count(9_000_000)


def click_xml(userid: str, key: str, task_id: str, response_code: str, created: int | None = None) -> str:
    """The decrypted ``template_card_event`` WeCom posts when ``userid`` taps a button (WxJava fixture shape).

    A click's message id is made of its sender, time and card, so each click gets a time of its own unless given.
    """
    created = created if created is not None else int(time.time()) + secrets.randbelow(10**6)
    return (
        f"<xml><ToUserName><![CDATA[{WECOM.corp_id}]]></ToUserName><FromUserName><![CDATA[{userid}]]></FromUserName>"
        f"<CreateTime>{created}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[template_card_event]]></Event><EventKey><![CDATA[{key}]]></EventKey>"
        f"<TaskId><![CDATA[{task_id}]]></TaskId><CardType><![CDATA[button_interaction]]></CardType>"
        f"<ResponseCode><![CDATA[{response_code}]]></ResponseCode><AgentID>{WECOM.agent_id}</AgentID></xml>"
    )


class WeComChat:
    """Staff members in WeCom, by UserID. ``deliver=True`` also waits for retried sends to leave."""

    def __init__(self, client: Client, sim: WeComSimulator | None = None, *, deliver: bool = False) -> None:
        self.client, self._sim, self.deliver = client, sim, deliver

    @property
    def sim(self) -> WeComSimulator:
        assert self._sim is not None, "reading what reached people needs the WeCom simulator"
        return self._sim

    async def _done(self) -> None:
        await (deliver_all(self.client.app) if self.deliver else settle(self.client.app))

    async def say(self, user: str, text: str, msgid: int | None = None) -> None:
        resp = await post_wecom(self.client, text_xml(user, text, next(_msgids) if msgid is None else msgid))
        assert resp.status == 200
        await self._done()

    async def tap(self, user: str, card: dict[str, Any], button: int = 0, *, created: int | None = None) -> str:
        """``user`` taps ``card``'s button; returns the response code WeCom put in the event."""
        code = self.sim.issue_response_code(user, card["task_id"])
        xml = click_xml(user, card["button_list"][button]["key"], card["task_id"], code, created)
        resp = await post_wecom(self.client, xml)
        assert resp.status == 200
        await self._done()
        return code

    def sent_to(self, user: str) -> list[str]:
        return self.sim.texts_to(user)

    def cards_to(self, user: str) -> list[dict[str, Any]]:
        return self.sim.cards_to(user)


def tapped(url: str) -> str:
    """What the DingTalk client sends as the tapper's message when a ``dtmd`` button link is opened."""
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("dtmd", "dingtalkclient", "/sendMessage")
    [content] = parse_qs(parts.query)["content"]
    return content


class DingTalkChat:
    """Staff members in DingTalk, by staffId."""

    def __init__(self, client: Client, sim: DingTalkSimulator) -> None:
        self.client, self.sim = client, sim

    async def say(self, user: str, text: str, **kwargs: Any) -> None:
        assert (await self.sim.deliver(self.client, user, text, **kwargs)).status == 200
        await settle(self.client.app)

    async def tap(self, user: str, card: Delivery, button: int = 0, **kwargs: Any) -> str:
        """``user`` opens the card's button link: the DingTalk client sends its command as their message."""
        command = tapped(card.buttons[button][1])
        await self.say(user, command, **kwargs)
        return command

    def sent_to(self, user: str) -> list[str]:
        return self.sim.texts_to(user)

    def cards_to(self, user: str) -> list[Delivery]:
        return [d for d in self.sim.delivered_to(user) if d.buttons]


async def _lines(*texts: str) -> AsyncIterator[str]:
    for text in texts:
        yield text


_COMMAND = re.compile(r"回复「([^」]+)」")


class ConsoleChat:
    """Staff members at the terminal (``crmbot chat``), by name."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.printed: dict[str, list[str]] = {}

    async def say(self, user: str | Staff, *texts: str) -> str:
        """``user`` types ``texts``; what the bot printed back to them."""
        staff = user if isinstance(user, Staff) else await Staff.get(name=user)
        out = io.StringIO()
        await chat(self.app, staff, _lines(*texts), out)
        self.printed.setdefault(staff.name, []).append(out.getvalue())
        return out.getvalue()

    async def tap(self, user: str | Staff, card: str, button: int = 0) -> str:
        """A card as printed lists the command of each button: typing it is the tap."""
        return await self.say(user, _COMMAND.findall(card)[button])

    def sent_to(self, user: str) -> list[str]:
        return self.printed.get(user, [])

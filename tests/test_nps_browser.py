"""The survey page in a real browser: Debian's headless Chromium, driven over the Chrome DevTools Protocol, opens
the link on a phone-sized touch screen with WeCom's in-app user agent, taps 9, writes a comment, submits, sees the
thanks page — and the manager's report counts the answer.

Without Chromium the test is skipped with the reason; CI installs it and sets ``CRMBOT_REQUIRE_TOOLS``, which turns
that skip into a failure.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from models.nps import Survey
from tests.driver import WeComChat
from tests.helpers import require_tool
from tests.test_nps import DAY0, HUAWEI, day, start, token_in, win

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
]
# WeCom's in-app browser on Android (wxwork in the user agent is how pages recognise it).
WECOM_UA = (
    "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
    "Chrome/116.0.0.0 Mobile Safari/537.36 wxwork/4.1.22 MicroMessenger/7.0.1 NetType/WIFI Language/zh"
)
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
GUARD = 60.0  # seconds: only keeps a broken browser from hanging the run


def chromium_path() -> str:
    path = os.environ.get("CRMBOT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and Path("/usr/bin/chromium").exists():
        path = "/usr/bin/chromium"
    return require_tool(
        path, "chromium is not installed: `apt-get install -y chromium` (the survey page needs a real browser)"
    )


class DevTools:
    """A minimal Chrome DevTools Protocol client on one browser websocket (flattened sessions)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: list[dict[str, Any]] = []
        self._event = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(frame.data)
            if "id" in message:
                future = self._pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
            else:
                self._events.append(message)
                self._event.set()

    async def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self.ws.send_str(json.dumps(message))
        answer = await asyncio.wait_for(future, GUARD)
        if "error" in answer:
            raise AssertionError(f"{method} failed: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def mark(self) -> int:
        return len(self._events)

    async def wait_event(self, method: str, since: int) -> dict[str, Any]:
        async def wait() -> dict[str, Any]:
            seen = since
            while True:
                for event in self._events[seen:]:
                    if event.get("method") == method:
                        return event
                seen = len(self._events)
                self._event.clear()
                await self._event.wait()

        return await asyncio.wait_for(wait(), GUARD)

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()


@asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[DevTools]:
    """Start headless Chromium with a fresh profile; yield a DevTools connection; stop it (only this process)."""
    process = await asyncio.create_subprocess_exec(
        chromium_path(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(int(GUARD / 0.05)):
            if port_file.exists() and len(port_file.read_text().splitlines()) >= 2:
                break
            if process.returncode is not None:
                pytest.fail(f"chromium exited with {process.returncode} before opening DevTools")
            await asyncio.sleep(0.05)
        else:
            pytest.fail("chromium did not open its DevTools port")
        port, path = port_file.read_text().splitlines()[:2]
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0)
            devtools = DevTools(ws)
            try:
                yield devtools
            finally:
                with suppress(TimeoutError, AssertionError, aiohttp.ClientError):
                    await asyncio.wait_for(devtools.call("Browser.close"), 10)
                await devtools.close()
    finally:
        if process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


class Phone:
    """One tab emulating a phone inside WeCom."""

    def __init__(self, devtools: DevTools, session: str) -> None:
        self.devtools = devtools
        self.session = session

    @classmethod
    async def open(cls, devtools: DevTools) -> Phone:
        target = await devtools.call("Target.createTarget", url="about:blank")
        attached = await devtools.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)
        phone = cls(devtools, attached["sessionId"])
        await phone.call("Page.enable")
        await phone.call("Runtime.enable")
        await phone.call("Emulation.setDeviceMetricsOverride", **PHONE)
        await phone.call("Emulation.setTouchEmulationEnabled", enabled=True, maxTouchPoints=5)
        await phone.call("Emulation.setUserAgentOverride", userAgent=WECOM_UA, acceptLanguage="zh-CN")
        return phone

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.devtools.call(method, self.session, **params)

    async def until_loaded(self, action: Any) -> None:
        """Run ``action`` (a coroutine function) and wait for the page it leads to."""
        mark = self.devtools.mark()
        await action()
        while True:
            event = await self.devtools.wait_event("Page.loadEventFired", mark)
            if event.get("sessionId") == self.session:
                return
            mark = self.devtools._events.index(event) + 1

    async def goto(self, url: str) -> None:
        async def navigate() -> None:
            await self.call("Page.navigate", url=url)

        await self.until_loaded(navigate)

    async def js(self, expression: str) -> Any:
        answer = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in answer:
            raise AssertionError(f"page script failed: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def tap(self, selector: str) -> None:
        """Scroll ``selector`` into view and tap its centre with a touch gesture."""
        point = await self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        assert point is not None, selector
        finger = {"x": point[0], "y": point[1], "radiusX": 8, "radiusY": 8, "force": 1}
        await self.call("Input.dispatchTouchEvent", type="touchStart", touchPoints=[finger])
        await self.call("Input.dispatchTouchEvent", type="touchEnd", touchPoints=[])

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))


async def test_a_customer_taps_9_on_a_phone_and_the_manager_sees_it(
    make_settings: Any, start_app: Any, wecom_sim: Any, tmp_path: Path
) -> None:
    client, clock = await start(make_settings, start_app)
    await win(HUAWEI, DAY0)
    await day(client, clock, 15)
    token = token_in(wecom_sim.texts_to("zhangsan"))
    link = str(client.make_url(f"/nps/{token}"))

    async with chromium(tmp_path / "profile") as devtools:
        phone = await Phone.open(devtools)
        await phone.goto(link)
        assert await phone.js("document.querySelector('h1').innerText") == "您有多大可能向同行推荐我们？"
        assert await phone.js("navigator.userAgent.includes('wxwork')")
        # made for the phone: eleven score buttons, big enough to tap, nothing wider than the screen
        assert await phone.js("document.querySelectorAll('input[name=score]').length") == 11
        assert await phone.js("document.documentElement.scrollWidth") <= PHONE["width"]
        assert await phone.js("document.querySelector('label[for=score-9]').getBoundingClientRect().height") >= 44
        await phone.screenshot(tmp_path / "survey.png")

        await phone.tap("label[for=score-9]")
        assert await phone.js("document.getElementById('score-9').checked") is True
        assert await phone.js("getComputedStyle(document.querySelector('label[for=score-9]')).color") == (
            "rgb(255, 255, 255)"
        )  # the tapped score is highlighted
        await phone.tap("#comment")
        await phone.call("Input.insertText", text="响应很快，安装师傅很专业")

        async def submit() -> None:
            await phone.tap("#submit")

        await phone.until_loaded(submit)
        text = await phone.js("document.body.innerText")
        await phone.screenshot(tmp_path / "thanks.png")
        assert "感谢您的评价" in text

        # coming back to the link later shows it was answered, and offers no form
        await phone.goto(link)
        assert "您已经完成了这份评价" in await phone.js("document.body.innerText")
        assert await phone.js("document.forms.length") == 0

    survey = await Survey.get()
    assert (survey.score, survey.comment, survey.answer_source) == (9, "响应很快，安装师傅很专业", "page")
    await WeComChat(client, deliver=True).say("wangjl", "本月NPS")
    report = wecom_sim.texts_to("wangjl")[-1]
    assert "王经理团队：NPS +100（推荐 1 · 中立 0 · 贬损 0，共 1 份答卷 / 发出 1 份）" in report
    assert "· 张三：NPS +100" in report
    if os.environ.get("CRMBOT_KEEP_SCREENSHOTS"):
        for name in ("survey.png", "thanks.png"):
            shutil.copy(tmp_path / name, Path(os.environ["CRMBOT_KEEP_SCREENSHOTS"]) / name)

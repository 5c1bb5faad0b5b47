"""The sidebar in a real browser: headless Chromium, on a phone-sized touch screen with WeCom's in-app user agent,
opens the sidebar beside 张三's chat with 华为's 刘工. The sign-in goes round the WeCom simulator's OAuth page, the
page loads the JS-SDK stand-in from the simulator (which checks that wx.config and wx.agentConfig were given the
right fields and signatures of the page's own address, then names the chat's contact), and shows 华为's card. 张三
taps 记录跟进, types, saves: the follow-up is in the database and audited; then opens an urgent ticket the same way.
Beside 恒力液压's contact (李四's customer) nothing is shown.

Without Chromium the test is skipped with the reason; ``CRMBOT_REQUIRE_TOOLS`` turns that skip into a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from models.audit import AuditLog
from models.customers import Customer
from models.followups import FollowUp
from models.tickets import Ticket, TicketPriority
from tests.simulators.wecom import WeComSimulator
from tests.test_nps_browser import GUARD, PHONE, Phone, chromium
from tests.test_sidebar import HENGLI_CONTACT, HUAWEI, HUAWEI_CONTACT, Client, sidebar

__all__ = ["sidebar"]  # the app at its configured address, with the demo corp (a fixture of tests.test_sidebar)


async def until(phone: Phone, expression: str) -> None:
    """Wait until ``expression`` is true in the page (the guard only keeps a broken page from hanging the run)."""
    for _ in range(int(GUARD / 0.05)):
        if await phone.js(expression):
            return
        await asyncio.sleep(0.05)
    text = await phone.js("document.body.innerText")
    raise AssertionError(f"never true: {expression}; the page shows: {text}")


async def write_and_send(phone: Phone, kind: str, text: str) -> None:
    await phone.tap(f"#open-{kind}")  # the first tap opens the form, ready to type
    assert await phone.js("document.activeElement.id") == f"{kind}-content"
    await phone.call("Input.insertText", text=text)
    if kind == "ticket":
        await phone.tap("#ticket-urgent")
    await phone.tap(f"#{kind}-submit")  # the second sends it
    await until(phone, "!!document.getElementById('notice')")


async def test_a_rep_logs_a_follow_up_and_opens_a_ticket_from_the_sidebar(
    sidebar: Client, wecom_sim: WeComSimulator, tmp_path: Path
) -> None:
    wecom_sim.oauth_user, wecom_sim.current_contact = "zhangsan", HUAWEI_CONTACT
    page = str(sidebar.make_url("/sidebar"))

    async with chromium(tmp_path / "profile") as devtools:
        phone = await Phone.open(devtools)
        await phone.call("Log.enable")  # the content policy's refusals and script errors are logged here
        await phone.goto(page)
        await until(phone, "!!document.getElementById('customer-name')")
        assert await phone.js("location.href.split('#')[0]") == page  # signed in, no code left in the address
        assert await phone.js("document.getElementById('customer-name').innerText") == HUAWEI
        checked = await phone.js("JSON.stringify(window.__wecomCalls)")
        assert '"api":"config"' in checked and '"api":"agentConfig"' in checked
        assert await phone.js("window.__wecomCalls.filter(c => c.valid === true).length") == 2
        # made for the phone: nothing wider than the screen, buttons big enough to tap
        assert await phone.js("document.documentElement.scrollWidth") <= PHONE["width"]
        assert await phone.js("document.getElementById('open-followup').getBoundingClientRect().height") >= 44
        await phone.screenshot(tmp_path / "sidebar.png")

        await write_and_send(phone, "followup", "拜访了刘工，聊了二期扩容，下周三再联系")
        notice = await phone.js("document.getElementById('notice').innerText")
        assert "已记录「华为技术有限公司」的跟进（拜访）" in notice and "回复「撤销」" not in notice
        assert await phone.js("document.getElementById('undo-submit').innerText") == "撤销这一步"
        assert "二期扩容" in await phone.js("document.getElementById('followups').innerText")
        await phone.screenshot(tmp_path / "followup.png")

        await write_and_send(phone, "ticket", "二期设备液压站漏油")
        assert "已开工单" in await phone.js("document.getElementById('notice').innerText")
        assert "二期设备液压站漏油" in await phone.js("document.getElementById('tickets').innerText")
        await phone.screenshot(tmp_path / "ticket.png")

        logged = [e["params"]["entry"] for e in devtools._events if e.get("method") == "Log.entryAdded"]
        assert [e for e in logged if e.get("level") == "error"] == []
        # The content policy holds in the browser: a script slipped into the page does not run.
        mark = devtools.mark()
        injected = "const s = document.createElement('script'); s.textContent = 'window.injected = 1';"
        ran = await phone.js(f"(() => {{ {injected} document.body.appendChild(s); return window.injected; }})()")
        assert ran is None
        refused = await devtools.wait_event("Log.entryAdded", mark)  # and the refusal is logged, as above
        assert refused["params"]["entry"]["level"] == "error"

        # Beside a chat with 李四's customer, 张三 is shown nothing of it.
        wecom_sim.current_contact = HENGLI_CONTACT
        await phone.goto(page)
        await until(phone, "!!document.getElementById('forbidden')")
        text = await phone.js("document.body.innerText")
        assert "不在您的名下" in text and "恒力" not in text

    customer = await Customer.get(name=HUAWEI)
    record = await FollowUp.get()
    assert (record.customer_id, record.channel) == (customer.id, "visit")
    assert record.content == "拜访了刘工，聊了二期扩容，下周三再联系"
    assert await AuditLog.filter(action="follow_up", source__startswith="wecom:sidebar-").exists()
    ticket = await Ticket.get()
    assert (ticket.customer_id, ticket.priority) == (customer.id, TicketPriority.URGENT)
    assert await AuditLog.filter(action="create_ticket", source__startswith="wecom:sidebar-").exists()
    if os.environ.get("CRMBOT_KEEP_SCREENSHOTS"):
        for name in ("sidebar.png", "followup.png", "ticket.png"):
            shutil.copy(tmp_path / name, Path(os.environ["CRMBOT_KEEP_SCREENSHOTS"]) / name)

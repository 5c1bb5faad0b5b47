"""The chat sidebar over HTTP: a rep opens the sidebar beside a chat with a customer contact, signs in through WeCom's
web OAuth (the simulator's sign-in page and ``auth/getuserinfo``), gets the JS-SDK configuration signed with the
corp's and the app's tickets, sees the customer's card, and logs a follow-up or opens a ticket, written, audited and
undone (撤销 in chat) like the chat's own. And everything that must not get through: no session, forged sessions,
bad or reused sign-in codes, strangers, another rep's customer, forged form tokens, bad input."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.app import create_app
from bot.demo import load_demo
from bot.keys import BOT
from handlers.sidebar.session import Session, opened, seal
from integrations.wecom.sidebar import signature
from models.audit import AuditLog
from models.customers import Customer
from models.followups import FollowUp
from models.opportunities import Opportunity
from models.staff import Staff
from models.tickets import Ticket, TicketPriority
from tests.driver import WeComChat
from tests.helpers import deliver_all, staff_member
from tests.simulators.wecom import JSSDK_PATH, WeComSimulator

Client = TestClient[Any, web.Application]
HUAWEI, HENGLI = "华为技术有限公司", "恒力液压有限公司"
HUAWEI_CONTACT, HENGLI_CONTACT = "wmHW001", "wmHL001"  # 华为 is 张三's, 恒力液压 李四's (demo data)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
KEY = re.compile(r'id="followup-form".*?name="key" value="([^"]+)"', re.S)
TICKET_KEY = re.compile(r'id="ticket-form".*?name="key" value="([^"]+)"', re.S)
UNDO_KEY = re.compile(r'id="undo-form".*?name="key" value="([^"]+)"', re.S)


@pytest.fixture
async def sidebar(
    make_settings: Callable[..., Any],
    wecom_sim: WeComSimulator,
    aiohttp_client: Callable[..., Any],
    unused_tcp_port: int,
) -> Client:
    """The app at the address the WeCom console is configured with, signing in and loading the JS-SDK from the
    simulator; the demo corp's people and customers."""
    port = unused_tcp_port
    app_settings = make_settings(
        server={"public_url": f"http://127.0.0.1:{port}"},
        wecom={"oauth_url": f"{wecom_sim.url}/connect/oauth2/authorize", "jssdk_url": wecom_sim.url + JSSDK_PATH},
        tickets={"service_engineers": ["陈工"]},
    )
    client: Client = await aiohttp_client(create_app(app_settings, run_scheduler=False), server_kwargs={"port": port})
    await load_demo(client.app)
    await client.app[BOT].understanding.refresh()
    await deliver_all(client.app)  # what the demo's messages set off is out of the way
    return client


async def sign_in(client: Client, sim: WeComSimulator, user: str) -> str:
    """``user`` opens the sidebar in WeCom (a browser of their own): the sign-in goes round WeCom's OAuth and lands
    on the page."""
    client.session.cookie_jar.clear()
    sim.oauth_user = user
    page = await client.get("/sidebar")
    assert page.status == 200, await page.text()
    assert str(page.url) == str(client.make_url("/sidebar"))  # the code is not left in the address
    return await page.text()


async def customer_card(client: Client, contact: str) -> tuple[int, str]:
    answer = await client.get("/sidebar/customer", params={"contact": contact})
    return answer.status, await answer.text()


async def post(client: Client, path: str, **form: str) -> tuple[int, str]:
    answer = await client.post(path, data=form)
    return answer.status, await answer.text()


async def form_for(client: Client, contact: str = HUAWEI_CONTACT) -> dict[str, str]:
    status, html = await customer_card(client, contact)
    assert status == 200, html
    customer = await Customer.get(contacts__external_userid=contact)
    csrf, key = CSRF.search(html), KEY.search(html)
    assert csrf is not None and key is not None
    return {"customer": str(customer.id), "contact": contact, "csrf": csrf[1], "key": key[1]}


async def nothing_written() -> None:
    assert await FollowUp.all().count() == 0
    assert await Ticket.all().count() == 0
    assert await AuditLog.filter(action__in=["follow_up", "create_ticket"]).count() == 0


# -- the story -----------------------------------------------------------------------------------------------------


async def test_a_rep_opens_the_sidebar_and_sees_the_customer_of_the_chat(
    sidebar: Client, wecom_sim: WeComSimulator
) -> None:
    customer = await Customer.get(name=HUAWEI)
    await Opportunity.create(
        customer=customer, name="基站电源", amount=3_000_000, stage="quote", stage_entered_at=customer.created_at,
        created_at=customer.created_at,
    )  # fmt: skip
    await WeComChat(sidebar, wecom_sim).say("zhangsan", "工单 华为 液压站漏油 紧急")

    # Opening the page without a session goes to WeCom's sign-in with the app's parameters.
    first = await sidebar.get("/sidebar", allow_redirects=False)
    assert first.status == 302
    login = urlsplit(first.headers["Location"])
    query = {k: v[0] for k, v in parse_qs(login.query).items()}
    assert f"{login.scheme}://{login.netloc}{login.path}" == f"{wecom_sim.url}/connect/oauth2/authorize"
    assert login.fragment == "wechat_redirect"
    assert query["appid"] == wecom_sim.corp_id and query["agentid"] == str(wecom_sim.agent_id)
    assert (query["scope"], query["response_type"]) == ("snsapi_base", "code")
    assert query["redirect_uri"] == str(sidebar.make_url("/sidebar"))
    cookie = first.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie

    wecom_sim.oauth_user = "zhangsan"
    page = await sidebar.get("/sidebar")  # round WeCom's sign-in, back with a code, on to the clean page
    assert page.status == 200
    html = await page.text()
    policy = page.headers["Content-Security-Policy"]
    assert f"script-src 'self' {wecom_sim.url};" in policy and "unsafe-inline" not in policy
    assert f'<script src="{wecom_sim.url}{JSSDK_PATH}">' in html and "<script>" not in html
    set_cookies = [h.headers.get("Set-Cookie", "") for h in page.history]
    session_cookie = next(c for c in set_cookies if c.startswith("crmbot_sidebar="))
    assert "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie and "Path=/sidebar" in session_cookie

    # The page asks for the JS-SDK configuration of its own address: signed with the corp's and the app's tickets.
    address = str(sidebar.make_url("/sidebar"))
    answer = await sidebar.get("/sidebar/config", params={"url": address})
    assert answer.status == 200
    signed = await answer.json()
    for part, kind in (("config", "corp"), ("agentConfig", "agent")):
        c, ticket = signed[part], wecom_sim.jsapi_tickets[kind]
        plain = f"jsapi_ticket={ticket}&noncestr={c['nonceStr']}&timestamp={c['timestamp']}&url={address}"
        assert c["signature"] == hashlib.sha1(plain.encode()).hexdigest()
        assert c["jsApiList"] == ["getCurExternalContact"]
    assert signed["agentConfig"]["agentid"] == str(wecom_sim.agent_id)
    # A second page asks again: the tickets are cached, not fetched again.
    await sidebar.get("/sidebar/config", params={"url": address})
    assert [c["endpoint"] for c in wecom_sim.calls].count("get_jsapi_ticket") == 1
    assert [c["endpoint"] for c in wecom_sim.calls].count("ticket/get") == 1
    elsewhere = await sidebar.get("/sidebar/config", params={"url": "https://evil.example/sidebar"})
    assert elsewhere.status == 400

    status, card = await customer_card(sidebar, HUAWEI_CONTACT)
    assert status == 200
    shown_facts = (HUAWEI, "谈判", "A 级", "张三", "刘工", "战略客户", "液压站漏油", "紧急", "基站电源", "300 万元")
    for shown in shown_facts:
        assert shown in card, shown
    assert "还没有跟进记录" in card


async def test_a_follow_up_from_the_sidebar_is_the_chats_own_write_audited_and_undone_in_chat(
    sidebar: Client, wecom_sim: WeComSimulator
) -> None:
    await sign_in(sidebar, wecom_sim, "zhangsan")
    form = await form_for(sidebar)
    status, html = await post(sidebar, "/sidebar/followup", **form, content="电话沟通了报价，下周三再联系")
    assert status == 200, html
    assert "已记录「华为技术有限公司」的跟进（电话）" in html
    # Beside the customer's chat the way back is a button, not "reply 撤销" (which would go to the customer).
    assert 'id="undo-form"' in html and "回复「撤销」" not in html
    undo_key = UNDO_KEY.search(html)
    assert "电话沟通了报价" in html.split('id="followups"')[1]  # the card shows it among the latest
    record = await FollowUp.get()
    customer = await Customer.get(name=HUAWEI)
    assert (record.content, record.channel) == ("电话沟通了报价，下周三再联系", "phone")
    assert record.customer_id == customer.id
    assert customer.next_followup_at is not None and record.next_at == customer.next_followup_at
    audit = await AuditLog.get(action="follow_up")
    zhangsan = await Staff.get(name="张三")
    assert (audit.actor_id, audit.platform, audit.customer_id) == (zhangsan.id, "wecom", customer.id)
    assert audit.source == f"wecom:sidebar-{form['key']}"

    # A second tap on the same form writes nothing more.
    status, html = await post(sidebar, "/sidebar/followup", **form, content="电话沟通了报价，下周三再联系")
    assert status == 200 and "已经保存过了" in html
    assert await FollowUp.all().count() == 1

    # 撤销这一步 takes it back, as 撤销 in chat does (and is audited as an undo).
    assert undo_key is not None
    status, html = await post(sidebar, "/sidebar/undo", **{**form, "key": undo_key[1]})
    assert status == 200 and "已撤销" in html and 'id="undo-form"' not in html
    assert await FollowUp.all().count() == 0
    assert await AuditLog.filter(action="undo", actor_id=zhangsan.id).count() == 1
    status, html = await post(sidebar, "/sidebar/undo", **{**form, "key": "another-key-1"})
    assert status == 409 and "没有可以撤销的操作" in html

    # 撤销 in chat takes back a follow-up written in the sidebar the same way.
    form = await form_for(sidebar)
    status, html = await post(sidebar, "/sidebar/followup", **form, content="客户确认了交期")
    assert status == 200 and await FollowUp.all().count() == 1
    chat = WeComChat(sidebar, wecom_sim, deliver=True)
    before = len(chat.sent_to("zhangsan"))
    await chat.say("zhangsan", "撤销")
    said = chat.sent_to("zhangsan")[before:]
    assert any(text.startswith("已撤销") for text in said), said
    assert await FollowUp.all().count() == 0


async def test_a_ticket_from_the_sidebar_reaches_the_engineer(sidebar: Client, wecom_sim: WeComSimulator) -> None:
    await sign_in(sidebar, wecom_sim, "zhangsan")
    form = await form_for(sidebar)
    _, html = await customer_card(sidebar, HUAWEI_CONTACT)
    form["key"] = TICKET_KEY.search(html)[1]  # type: ignore[index]
    status, html = await post(sidebar, "/sidebar/ticket", **form, content="液压站漏油，客户很着急", priority="urgent")
    assert status == 200, html
    assert "已开工单" in html and "处理人：陈工" in html
    ticket = await Ticket.get()
    assert (ticket.priority, ticket.description) == (TicketPriority.URGENT, "液压站漏油，客户很着急")
    assert await AuditLog.filter(action="create_ticket", source=f"wecom:sidebar-{form['key']}").exists()
    await deliver_all(sidebar.app)
    assert any("液压站漏油" in text for text in wecom_sim.texts_to("chengong"))


# -- what does not get through ------------------------------------------------------------------------------------


async def test_without_a_session_nothing_is_shown_or_written(sidebar: Client, wecom_sim: WeComSimulator) -> None:
    status, html = await customer_card(sidebar, HUAWEI_CONTACT)
    assert status == 401 and HUAWEI not in html
    assert (await sidebar.get("/sidebar/config", params={"url": str(sidebar.make_url("/sidebar"))})).status == 401
    customer = await Customer.get(name=HUAWEI)
    status, _ = await post(sidebar, "/sidebar/followup", customer=str(customer.id), content="试试", key="k" * 16)
    assert status == 401
    for forged in ("x", "eyJzIjoxfQ.bm9wZQ", "a" * 5000, "a.b.c"):
        sidebar.session.cookie_jar.update_cookies({"crmbot_sidebar": forged})
        status, html = await customer_card(sidebar, HUAWEI_CONTACT)
        assert status == 401 and HUAWEI not in html
    await nothing_written()


async def test_a_session_made_for_someone_else_or_altered_is_refused(
    sidebar: Client, wecom_sim: WeComSimulator
) -> None:
    await sign_in(sidebar, wecom_sim, "lisi")
    cookie = next(c for c in sidebar.session.cookie_jar if c.key == "crmbot_sidebar")
    payload, mac = cookie.value.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["s"] = (await Staff.get(name="张三")).id  # claim to be 张三 with 李四's signature
    altered = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    sidebar.session.cookie_jar.clear()
    sidebar.session.cookie_jar.update_cookies({"crmbot_sidebar": f"{altered}.{mac}"})
    status, html = await customer_card(sidebar, HUAWEI_CONTACT)
    assert status == 401 and HUAWEI not in html


async def test_bad_sign_in_codes_and_strangers_are_refused(sidebar: Client, wecom_sim: WeComSimulator) -> None:
    async def back_with(code: str, state: str = "") -> tuple[int, str]:
        """Open the sidebar afresh, go to sign in, and come back with ``code`` (and the state, unless given)."""
        sidebar.session.cookie_jar.clear()
        first = await sidebar.get("/sidebar", allow_redirects=False)
        assert first.status == 302
        state = state or parse_qs(urlsplit(first.headers["Location"]).query)["state"][0]
        answer = await sidebar.get("/sidebar", params={"code": code, "state": state}, allow_redirects=False)
        return answer.status, await answer.text()

    assert (await back_with("made-up-code"))[0] == 403
    assert (await back_with("bad code!"))[0] == 403
    assert (await back_with(wecom_sim.issue_oauth_code("zhangsan"), state="A" * 32))[0] == 403  # not our sign-in
    used = wecom_sim.issue_oauth_code("zhangsan")
    assert (await back_with(used))[0] == 303
    assert (await back_with(used))[0] == 403  # a code is good once
    sidebar.session.cookie_jar.clear()
    assert (await sidebar.get("/sidebar", params={"code": wecom_sim.issue_oauth_code("zhangsan")})).status == 403
    status, html = await back_with(wecom_sim.issue_oauth_code("wx-outsider", member=False))
    assert status == 403
    status, html = await back_with(wecom_sim.issue_oauth_code("nobody"))  # a WeCom member who is not staff
    assert status == 403 and "还不是本系统的注册用户" in html
    await staff_member(name="离职员工", wecom="gone", active=False)
    assert (await back_with(wecom_sim.issue_oauth_code("gone")))[0] == 403
    assert "Traceback" not in html


async def test_another_reps_customer_is_not_shown_nor_written(sidebar: Client, wecom_sim: WeComSimulator) -> None:
    await sign_in(sidebar, wecom_sim, "zhangsan")
    status, html = await customer_card(sidebar, HENGLI_CONTACT)
    assert status == 403
    assert "恒力" not in html and "孙主任" not in html and "李四" not in html
    form = await form_for(sidebar)
    form["customer"] = str((await Customer.get(name=HENGLI)).id)
    for path in ("/sidebar/followup", "/sidebar/ticket"):
        status, html = await post(sidebar, path, **form, content="顺手记一笔")
        assert status == 403 and "恒力" not in html
    await nothing_written()
    # The manager of both sees either.
    await sign_in(sidebar, wecom_sim, "wangjl")
    assert (await customer_card(sidebar, HENGLI_CONTACT))[0] == 200


async def test_a_forged_form_token_writes_nothing(sidebar: Client, wecom_sim: WeComSimulator) -> None:
    await sign_in(sidebar, wecom_sim, "lisi")
    theirs = (await form_for(sidebar, HENGLI_CONTACT))["csrf"]
    await sign_in(sidebar, wecom_sim, "zhangsan")
    form = await form_for(sidebar)
    assert theirs != form["csrf"]
    for csrf in ("", "forged", form["csrf"][:-2] + "xx", theirs):  # the last: 李四's page's token
        status, _ = await post(sidebar, "/sidebar/followup", **{**form, "csrf": csrf}, content="伪造的请求")
        assert status == 403
    answer = await sidebar.post(
        "/sidebar/followup", data={**form, "content": "别的网站发来的"}, headers={"Origin": "https://evil.example"}
    )
    assert answer.status == 403
    await nothing_written()


async def test_bad_input_is_a_400_and_writes_nothing(sidebar: Client, wecom_sim: WeComSimulator) -> None:
    await sign_in(sidebar, wecom_sim, "zhangsan")
    form = await form_for(sidebar)
    for content in ("", "   ", "字" * 2001, "含有\x00控制字符", "终端\x1b[31m转义", "倒着\u202e写的"):
        status, html = await post(sidebar, "/sidebar/followup", **form, content=content)
        assert status == 400, content
        assert "Traceback" not in html
    for bad in ({"customer": "1 OR 1=1"}, {"customer": "１"}, {"key": "short"}, {"contact": "<script>"}):
        status, _ = await post(sidebar, "/sidebar/followup", **{**form, **bad}, content="正常内容")
        assert status == 400, bad
    status, _ = await post(sidebar, "/sidebar/ticket", **form, content="正常内容", priority="very")
    assert status == 400
    fields = "&".join(f"{k}={v}" for k, v in form.items())
    for body in (f"{fields}&content=%FF%FE", f"{fields}&content=a&content=b", f"{fields}&content=%E4%B8"):
        answer = await sidebar.post(
            "/sidebar/followup", data=body.encode(), headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert answer.status == 400, body
    answer = await sidebar.post("/sidebar/followup", json={**form, "content": "json"})
    assert answer.status == 400
    status, _ = await customer_card(sidebar, "not an id!")
    assert status == 400
    status, _ = await customer_card(sidebar, "zhangsan")  # a staff account, not a customer contact
    assert status == 400
    status, html = await customer_card(sidebar, "wmUNKNOWN")
    assert status == 404 and "还没有关联到客户档案" in html
    await nothing_written()


# -- the protocol's corners ---------------------------------------------------------------------------------------


def test_the_js_sdk_signature_is_the_documented_one() -> None:
    # The JS-SDK signature appendix's example (附录1-JS-SDK使用权限签名算法); a fragment is never signed.
    ticket = "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg"
    expected = "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
    assert signature(ticket, "Wm3WZYTPz0wzccnW", 1414587457, "http://mp.weixin.qq.com?params=value") == expected
    assert signature(ticket, "Wm3WZYTPz0wzccnW", 1414587457, "http://mp.weixin.qq.com?params=value#top") == expected


async def test_pages_opened_together_fetch_each_ticket_once(sidebar: Client, wecom_sim: WeComSimulator) -> None:
    await sign_in(sidebar, wecom_sim, "zhangsan")
    address = str(sidebar.make_url("/sidebar"))
    answers = await asyncio.gather(*(sidebar.get("/sidebar/config", params={"url": address}) for _ in range(8)))
    assert [a.status for a in answers] == [200] * 8
    endpoints = [c["endpoint"] for c in wecom_sim.calls]
    assert (endpoints.count("get_jsapi_ticket"), endpoints.count("ticket/get")) == (1, 1)


async def test_when_wecom_cannot_answer_the_sign_in_waits(sidebar: Client, wecom_sim: WeComSimulator) -> None:
    first = await sidebar.get("/sidebar", allow_redirects=False)
    state = parse_qs(urlsplit(first.headers["Location"]).query)["state"][0]
    wecom_sim.fail_next(3, errcode=-1, endpoint="auth/getuserinfo")  # system busy, on each of the 3 tries
    code = wecom_sim.issue_oauth_code("zhangsan")
    answer = await sidebar.get("/sidebar", params={"code": code, "state": state}, allow_redirects=False)
    assert answer.status == 503 and "请稍后再试" in await answer.text()
    await sign_in(sidebar, wecom_sim, "zhangsan")
    wecom_sim.fail_next(3, errcode=-1, endpoint="get_jsapi_ticket")
    answer = await sidebar.get("/sidebar/config", params={"url": str(sidebar.make_url("/sidebar"))})
    assert answer.status == 503


async def test_without_the_wecom_app_there_is_no_sidebar(
    make_settings: Callable[..., Any], start_app: Callable[..., Any]
) -> None:
    client = await start_app(make_settings(wecom={"secret": ""}), run_scheduler=False)
    answer = await client.get("/sidebar", allow_redirects=False)
    assert answer.status == 404 and "尚未配置" in await answer.text()
    assert (await client.get("/sidebar/platform.js")).status == 404


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.from_regex(r"[A-Za-z0-9_\-]{0,80}\.[A-Za-z0-9_\-]{0,60}", fullmatch=True))
def test_no_made_up_cookie_opens_a_session(value: str) -> None:
    key = hashlib.sha256(b"sidebar test key").digest()
    assert opened(key, value, 0) is None
    real = seal(key, Session(7, "wecom", "zhangsan", 100, "nonce"))
    assert opened(key, real, 0) == Session(7, "wecom", "zhangsan", 100, "nonce")
    assert opened(key, real, 100) is None  # expired
    assert opened(hashlib.sha256(b"another key").digest(), real, 0) is None

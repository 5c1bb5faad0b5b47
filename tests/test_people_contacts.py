"""WeCom customer-contact events through signed callbacks: a customer who adds a rep lands on the right profile
(by the company the rep noted, by phone, or by the rep's numbered answer, a new customer included), the contact's
details read with ``externalcontact/get``; a customer who deletes the rep warns the owner and the manager once; a
member removed from WeCom asks the manager to confirm the handover, whose contacts then move as a departed
member's (``resigned/transfer_customer``)."""

from __future__ import annotations

from datetime import timedelta
from itertools import count
from typing import Any

from bot.keys import BOT, CLOCK
from bot.scheduled import run_rules
from models.audit import AuditLog
from models.customers import Contact, Customer
from models.staff import Staff
from tests.driver import WeComChat
from tests.helpers import WECOM, deliver_all, post_wecom
from tests.simulators.wecom import WeComSimulator
from tests.test_people_handover import NOW, demo_app

_seconds = count(1)


def event_xml(event: str, change: str, user: str, external: str = "") -> str:
    """A 客户联系 or address-book change event as WeCom posts it (sent by ``sys``), one second apart each."""
    created = int(NOW.timestamp()) + next(_seconds)
    contact = f"<ExternalUserID><![CDATA[{external}]]></ExternalUserID>" if external else ""
    return (
        f"<xml><ToUserName><![CDATA[{WECOM.corp_id}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
        f"<CreateTime>{created}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[{event}]]></Event><ChangeType><![CDATA[{change}]]></ChangeType>"
        f"<UserID><![CDATA[{user}]]></UserID>{contact}</xml>"
    )


async def post_event(client: Any, *args: str) -> None:
    assert (await post_wecom(client, event_xml(*args))).status == 200
    await deliver_all(client.app)


async def test_a_customer_who_adds_a_rep_lands_on_the_right_profile(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo_app(start_app, make_settings)
    chat = WeComChat(client, wecom_sim, deliver=True)
    sanyi = await Customer.get(name="三一重工股份有限公司")
    await Contact.create(customer=sanyi, name="钱工", phone="13900000009")
    wecom_sim.add_external_contact("wmNEW001", "王工", follow="zhangsan", remark_corp_name="华为", mobiles=("139001",))
    wecom_sim.add_external_contact("wmNEW002", "钱工微信", follow="zhangsan", mobiles=("13900000009",))
    wecom_sim.add_external_contact("wmNEW003", "马总", corp_name="远景能源", follow="zhangsan")

    await post_event(client, "change_external_contact", "add_external_contact", "zhangsan", "wmNEW001")
    new = await Contact.get(external_userid="wmNEW001")
    assert (new.customer_id, new.name, new.phone) == (
        (await Customer.get(name="华为技术有限公司")).id,
        "王工",
        "139001",
    )
    assert chat.sent_to("zhangsan") == ["新的客户联系人「王工」已关联到客户「华为技术有限公司」。"]

    await post_event(client, "change_external_contact", "add_half_external_contact", "zhangsan", "wmNEW002")
    linked = await Contact.get(external_userid="wmNEW002")
    assert (linked.customer_id, linked.name) == (sanyi.id, "钱工")  # the contact already on file, by phone

    await post_event(client, "change_external_contact", "add_external_contact", "zhangsan", "wmNEW003")
    question = chat.sent_to("zhangsan")[-1]
    assert question.startswith("新的客户联系人「马总」（远景能源）加了您，TA 属于哪个客户？请回复序号：")
    *_, new_customer, as_lead = question.splitlines()
    assert new_customer.endswith("新建客户：远景能源") and as_lead.endswith("作为线索分配：远景能源"), question
    await chat.say("zhangsan", new_customer.split(".")[0])
    # A new customer was created for the contact: the reply ends with how to undo that.
    linked = "已把客户联系人「马总」关联到客户「远景能源」。"
    assert chat.sent_to("zhangsan")[-1] == f"{linked}\n（10 分钟内回复「撤销」可撤回）"
    created = await Customer.get(name="远景能源")
    assert created.owner_id == (await Staff.get(name="张三")).id
    assert (await Contact.get(external_userid="wmNEW003")).customer_id == created.id
    assert await AuditLog.filter(action__in=["contact.create", "contact.link"]).count() == 3

    gets = len([c for c in wecom_sim.calls if c["endpoint"] == "externalcontact/get"])
    await post_event(client, "change_external_contact", "edit_external_contact", "zhangsan", "wmHW001")
    assert len([c for c in wecom_sim.calls if c["endpoint"] == "externalcontact/get"]) == gets  # known already
    assert await Contact.filter(external_userid="wmHW001").count() == 1


async def test_a_customer_who_deletes_the_rep_warns_owner_and_manager_once(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo_app(start_app, make_settings)
    chat = WeComChat(client, wecom_sim, deliver=True)
    for _ in range(2):  # WeCom may report it again
        await post_event(client, "change_external_contact", "del_follow_user", "lisi", "wmHL001")
    [to_rep] = chat.sent_to("lisi")
    [to_manager] = chat.sent_to("wangjl")
    assert "流失预警" in to_rep and "客户：恒力液压有限公司" in to_rep and "联系人「孙主任」删除了李四" in to_rep
    assert to_manager == to_rep


async def test_a_member_removed_from_wecom_asks_for_the_handover_and_moves_as_departed(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo_app(start_app, make_settings)
    chat = WeComChat(client, wecom_sim, deliver=True)
    await post_event(client, "change_contact", "delete_user", "zhangsan")
    [ask] = chat.sent_to("wangjl")
    assert (
        "离职交接待确认" in ask and "张三的账号已被删除，名下还有 3 位客户" in ask and "离职交接 张三 给 接替人" in ask
    )
    assert (await Staff.get(name="张三")).active  # nothing moves before the manager confirms

    await chat.say("wangjl", "离职交接 张三 给 李四")
    client.app[CLOCK].set(NOW + timedelta(minutes=1))
    await run_rules(client.app[BOT], NOW + timedelta(minutes=1), full=True)
    await deliver_all(client.app)
    [ask_to_move] = [c["body"] for c in wecom_sim.sent if c["endpoint"].endswith("transfer_customer")]
    assert [c["endpoint"] for c in wecom_sim.sent if "transfer" in c["endpoint"]] == [
        "externalcontact/resigned/transfer_customer",
        "externalcontact/resigned/transfer_result",
    ]
    assert sorted(ask_to_move["external_userid"]) == ["wmBYD01", "wmHW001", "wmSY001"]


async def test_a_rep_who_deletes_a_customer_contact_is_reported_to_the_manager_once(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo_app(start_app, make_settings)
    chat = WeComChat(client, wecom_sim, deliver=True)
    for _ in range(2):  # WeCom may report it again
        await post_event(client, "change_external_contact", "del_external_contact", "lisi", "wmHL001")
    [to_manager] = chat.sent_to("wangjl")
    assert "客户联系人被删除" in to_manager and "客户：恒力液压有限公司" in to_manager
    assert "李四 删除了客户联系人「孙主任」" in to_manager
    assert chat.sent_to("lisi") == []  # the one who deleted it is not told of their own act
    assert await AuditLog.filter(action="contact.dropped").count() == 1

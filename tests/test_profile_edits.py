"""A rep keeps a customer's profile from chat: contacts with phone, title and decision-chain role, the contract end
date, the industry, aliases and custom fields. Good values are stored, audited and shown on the card; a bad value
gets a clear Chinese answer and changes nothing."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from models.audit import AuditLog
from models.customers import Contact, Customer
from tests.driver import ConsoleChat, WeComChat
from tests.simulators.wecom import WeComSimulator
from tests.test_customers import demo
from tests.test_undo import huawei


async def test_a_contact_is_added_changed_and_shown_on_the_card(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    chat = ConsoleChat(client.app)
    added = await chat.say("张三", "华为 联系人 刘强 13800000009 采购经理 决策人")
    assert "已添加「华为技术有限公司」的联系人：刘强 13800000009 采购经理 决策人" in added
    contact = await Contact.get(name="刘强")
    assert (contact.phone, contact.title, contact.role) == ("13800000009", "采购经理", "决策人")
    changed = await chat.say("张三", "华为 刘强的电话改成 139-0000-0002", "华为 刘强的职位是采购总监")
    assert "已更新「华为技术有限公司」的联系人：刘强 13900000002 采购经理 决策人" in changed
    contact = await Contact.get(name="刘强")
    assert (contact.phone, contact.title) == ("13900000002", "采购总监")
    await chat.say("张三", "华为 联系人 王芳 010-62345678 技术把关")
    assert (await Contact.get(name="王芳")).phone == "010-62345678"
    card = await chat.say("张三", "客户 华为")
    assert "联系人：刘工 决策人 13800000001" in card
    assert "联系人：刘强 采购总监 决策人 13900000002" in card
    assert "联系人：王芳 技术把关 010-62345678" in card
    log = await AuditLog.filter(action="set_contact").order_by("id").first()
    assert log is not None and log.before is None and log.after["phone"] == "13800000009"
    assert log.customer_id == (await huawei()).id


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("华为 刘工的电话改成 12345", "电话号码「12345」不对：手机号是 1 开头的 11 位数字，座机请带区号"),
        ("华为 刘工的电话改成 23800000001", "电话号码「23800000001」不对"),
        ("华为 联系人 刘强 1380000000 采购经理", "电话号码「1380000000」不对"),
        ("华为 刘工的角色改成老板", "没有「老板」这个决策角色，可以是：决策人"),
        ("华为 小王的电话改成 13900000002", "「华为技术有限公司」没有叫「小王」的联系人"),
        ("华为 合同到期 2027-02-30", "「2027-02-30」不是一个真实的日期，请写成 2027-03-31、2027年3月31日 或 2027/3/31"),
        ("华为 合同到期 下个月底", "没看懂日期「下个月底」"),
        ("华为 别名 比亚迪", "「比亚迪」已经是「比亚迪股份有限公司」的名称或别名了"),
        ("华为 付款方式 月结60天", "还没有「付款方式」这个字段。要新建，请发「华为技术有限公司 字段 付款方式"),
        ("华为 字段 阶段 报价", "「阶段」不能作为自定义字段名"),
    ],
)
async def test_a_bad_value_is_refused_and_nothing_changes(
    start_app: Any, make_settings: Any, text: str, answer: str
) -> None:
    client = await demo(start_app, make_settings)
    before = await huawei()
    contacts = await Contact.all().values_list("name", "phone", "title", "role")
    out = await ConsoleChat(client.app).say("张三", text)
    assert answer in out
    assert "撤销" not in out
    after = await huawei()
    assert (after.contract_end, after.aliases, after.custom_fields) == (
        before.contract_end,
        before.aliases,
        before.custom_fields,
    )
    assert await Contact.all().values_list("name", "phone", "title", "role") == contacts
    assert not await AuditLog.filter(action__in=["set_contact", "set_field"]).exists()


@pytest.mark.parametrize("written", ["2027-03-31", "2027年3月31日", "2027/3/31", "2027.3.31"])
async def test_the_contract_end_in_several_formats(start_app: Any, make_settings: Any, written: str) -> None:
    client = await demo(start_app, make_settings)
    out = await ConsoleChat(client.app).say("张三", f"华为 合同到期 {written}", "客户 华为")
    assert "「华为技术有限公司」的合同到期：— → 2027-03-31" in out
    assert "合同到期：2027-03-31" in out  # on the card
    assert (await huawei()).contract_end == date(2027, 3, 31)


async def test_industry_alias_and_custom_fields(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    chat = ConsoleChat(client.app)
    out = await chat.say("张三", "华为 行业 通信设备与终端", "华为 别名 HW", "客户 HW")
    assert "「华为技术有限公司」的行业：通信设备 → 通信设备与终端" in out
    assert "「华为技术有限公司」的别名：华为 → 华为、HW" in out
    assert "【华为技术有限公司】（华为、HW）" in out  # the new alias finds the customer at once
    out = await chat.say("张三", "华为 字段 付款方式 月结60天", "比亚迪 付款方式 月结30天", "客户 比亚迪")
    assert "「华为技术有限公司」的付款方式：— → 月结60天" in out
    assert "「比亚迪股份有限公司」的付款方式：— → 月结30天" in out  # the field exists now: no 字段 needed
    assert "付款方式：月结30天" in out  # on the card
    assert (await huawei()).custom_fields["付款方式"] == "月结60天"
    log = await AuditLog.filter(action="set_field").order_by("-id").first()
    assert log is not None and log.before == {"custom:付款方式": None} and log.after == {"custom:付款方式": "月结30天"}


async def test_a_rep_cannot_edit_a_colleagues_customer(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo(start_app, make_settings)
    await WeComChat(client, deliver=True).say("zhangsan", "恒力液压 合同到期 2027-03-31")
    assert "由李四负责，销售只能操作自己名下的客户" in wecom_sim.texts_to("zhangsan")[-1]
    assert (await Customer.get(name="恒力液压有限公司")).contract_end is None
    await WeComChat(client, deliver=True).say("wangjl", "恒力液压 合同到期 2027-03-31")
    assert wecom_sim.texts_to("wangjl")[-1].startswith("「恒力液压有限公司」的合同到期：— → 2027-03-31\n（10 分钟内")

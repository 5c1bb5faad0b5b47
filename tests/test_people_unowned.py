"""Customers nobody owns yet are leads wherever they come from: rows of ``crmbot import customers`` without 负责人
and the company of a new customer contact the rep says is not theirs are assigned by the ``[leads]`` rules (the
region's team, its least-loaded rep under the cap, told the details and a first step), and what nobody can take
waits in the pool, where ``公海 华东`` / ``公海 地区 华北`` find it by region (an imported region column included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.importer import run_import
from models.audit import AuditLog
from models.customers import Contact, Customer
from models.people import LeadAssignment
from tests.driver import WeComChat
from tests.helpers import deliver_all
from tests.simulators.wecom import WeComSimulator
from tests.test_people_contacts import post_event
from tests.test_people_handover import demo_app
from tests.test_people_leads import LEADS

SHEET = (
    "客户名称,行业,region,联系人,电话,负责人\n"
    "远景能源,新能源,华东,马总,13700000001,\n"
    "国轩高科,新能源,华东,,,\n"
    "蔚来汽车,汽车,华东,,,\n"
    "京东方,显示,华北,,,\n"
    "宁德时代,新能源,华东,,,张三\n"
)


async def owner_of(name: str) -> str | None:
    customer = await Customer.get(name=name).prefetch_related("owner")
    return customer.owner.name if customer.owner else None


async def test_imported_rows_without_an_owner_are_assigned_as_leads_and_the_rest_found_by_region(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator, tmp_path: Path
) -> None:
    client = await demo_app(start_app, make_settings, leads=LEADS)
    chat = WeComChat(client, wecom_sim, deliver=True)
    sheet = tmp_path / "customers.csv"
    sheet.write_text(SHEET, encoding="utf-8")

    report = await run_import(client.app, "customers", sheet)
    await deliver_all(client.app)

    assert "拒绝 0" in report
    # 王经理's team in 华东 under a cap of one lead each: 张三 holds 三一重工 already, so 李四 then 陈工, then nobody.
    owners = {name: await owner_of(name) for name in ("远景能源", "国轩高科", "蔚来汽车", "京东方", "宁德时代")}
    assert owners == {"远景能源": "李四", "国轩高科": "陈工", "蔚来汽车": None, "京东方": None, "宁德时代": "张三"}
    [told] = chat.sent_to("lisi")
    assert "新线索" in told and "客户：远景能源" in told and "地区：华东" in told and "行业：新能源" in told
    assert "建议今天内联系马总（13700000001）" in told and "48 小时内未跟进将退回公海" in told
    assert "客户：国轩高科" in chat.sent_to("chengong")[-1]
    assert await LeadAssignment.filter(customer__name__in=["远景能源", "国轩高科"]).count() == 2
    assert await AuditLog.filter(action="lead.assign").count() == 2
    assert (await Customer.get(name="京东方")).custom_fields == {"地区": "华北"}

    await chat.say("zhangsan", "公海 华东")
    await chat.say("zhangsan", "公海 地区 华北")
    await chat.say("zhangsan", "公海 地区 西南")
    east, north, southwest = chat.sent_to("zhangsan")[-3:]
    assert "蔚来汽车" in east and "京东方" not in east and "共 1 位" in east
    assert "京东方" in north and "蔚来汽车" not in north and "共 1 位" in north
    assert southwest == "公海里没有符合条件的客户。"


async def test_a_new_contact_the_rep_declines_goes_to_another_rep_as_a_lead(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo_app(start_app, make_settings)
    chat = WeComChat(client, wecom_sim, deliver=True)
    wecom_sim.add_external_contact("wmNEW009", "马总", corp_name="远景能源", follow="zhangsan")

    await post_event(client, "change_external_contact", "add_external_contact", "zhangsan", "wmNEW009")
    *_, declined = chat.sent_to("zhangsan")[-1].splitlines()
    assert declined.endswith("不是我的客户，作为线索分配：远景能源")
    await chat.say("zhangsan", declined.split(".")[0])

    created = await Customer.get(name="远景能源").prefetch_related("owner")
    assert created.owner is not None and created.owner.name in ("李四", "陈工")
    assert (
        chat.sent_to("zhangsan")[-1]
        == f"已为联系人「马总」新建客户「远景能源」，按线索规则分配给了{created.owner.name}。"
    )
    assert (await Contact.get(external_userid="wmNEW009")).customer_id == created.id
    [told] = chat.sent_to({"李四": "lisi", "陈工": "chengong"}[created.owner.name])
    assert "新线索" in told and "客户：远景能源" in told and "建议今天内联系马总" in told
    assert await LeadAssignment.filter(customer_id=created.id, staff_id=created.owner.id).exists()

    await chat.say("zhangsan", declined.split(".")[0])  # the question is answered: a repeat links nothing twice
    assert await Contact.filter(external_userid="wmNEW009").count() == 1

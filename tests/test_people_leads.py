"""Leads posted to ``POST /leads`` (signed with the shared secret) become customers given to the least-loaded rep of
the team their region routes to, under the cap per rep; the rep is told the details and a first step; a lead left
unworked for ``return_hours`` returns to the pool, a worked one stays. Unsigned or malformed posts write nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

from bot.keys import BOT, CLOCK
from bot.scheduled import run_rules
from models.audit import AuditLog
from models.customers import Contact, Customer
from models.staff import Role, Staff
from tests.driver import WeComChat
from tests.helpers import deliver_all, in_pieces, staff_member
from tests.simulators.wecom import WeComSimulator
from tests.test_people_handover import NOW, demo_app

SECRET = "lead-form-secret"
LEADS = {
    "secret": SECRET,
    "max_open_per_rep": 1,
    "return_hours": 48,
    "routes": [{"region": "华北", "team": "刘经理"}, {"region": "华东", "team": "王经理"}],
}


async def post_lead(client: Any, lead: dict[str, Any], secret: str = SECRET, pieces: bool = False) -> Any:
    body = json.dumps(lead, ensure_ascii=False).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    sent = in_pieces(body) if pieces else body
    return await client.post("/leads", data=sent, headers={"X-Crmbot-Signature": signature})


async def test_leads_go_to_the_least_loaded_rep_of_the_region_under_the_cap(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo_app(start_app, make_settings, leads=LEADS)
    north = await staff_member(name="刘经理", role=Role.MANAGER, wecom="liujl")
    await staff_member(name="赵六", role=Role.REP, manager_id=north.id, wecom="zhaoliu")
    chat = WeComChat(client, wecom_sim, deliver=True)
    # 王经理's team in 华东: 张三 already holds one lead (三一重工, 潜在), 李四 and 陈工 none.
    answers = []
    for name in ("远景能源", "国轩高科", "蔚来汽车"):
        lead = {"name": name, "region": "华东", "industry": "新能源", "contact": "马总", "phone": "13700000001"}
        resp = await post_lead(client, lead)
        assert resp.status == 201
        answers.append((await resp.json())["owner"])
    north_lead = await post_lead(client, {"name": "京东方", "region": "华北"})
    assert (await north_lead.json())["owner"] == "赵六"
    await deliver_all(client.app)

    assert answers == ["李四", "陈工", None]  # the cap of one lead each leaves the third in the pool
    assert (await Customer.get(name="蔚来汽车")).owner_id is None
    [told] = chat.sent_to("lisi")
    assert "新线索" in told and "客户：远景能源" in told and "地区：华东" in told and "联系人：马总" in told
    assert "建议今天内联系马总（13700000001）" in told and "48 小时内未跟进将退回公海" in told
    assert (await Contact.get(customer__name="远景能源")).phone == "13700000001"
    assert await AuditLog.filter(action="lead.assign").count() == 3

    await chat.say("chengong", "跟进了国轩高科，约了下周拜访")
    later = NOW + timedelta(hours=49)
    client.app[CLOCK].set(later)
    await run_rules(client.app[BOT], later, full=True)
    await deliver_all(client.app)
    assert (await Customer.get(name="远景能源")).owner_id is None
    assert (await Customer.get(name="国轩高科")).owner_id == (await Staff.get(name="陈工")).id
    assert "线索退回公海" in chat.sent_to("lisi")[-1] and "远景能源" in chat.sent_to("lisi")[-1]
    assert (await Customer.get(name="京东方")).owner_id is None
    assert await AuditLog.filter(action="lead.return").count() == 2
    await run_rules(client.app[BOT], later + timedelta(hours=1), full=True)
    assert await AuditLog.filter(action="lead.return").count() == 2


async def test_a_signed_lead_that_arrives_in_pieces_is_read_whole(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo_app(start_app, make_settings, leads=LEADS)
    lead = {"name": "远景能源", "region": "华东", "industry": "新能源", "contact": "马总", "phone": "13700000001"}
    resp = await post_lead(client, lead, pieces=True)
    assert resp.status == 201, await resp.text()
    assert (await Customer.get(name="远景能源")).industry == "新能源"


async def test_unsigned_or_malformed_leads_are_refused_and_write_nothing(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo_app(start_app, make_settings, leads=LEADS)
    customers = await Customer.all().count()
    assert (await post_lead(client, {"name": "远景能源"}, secret="guess")).status == 401
    assert (await post_lead(client, {"industry": "新能源"})).status == 400
    assert (await post_lead(client, {"name": ["远景能源"]})).status == 400
    assert (await post_lead(client, {"name": "华为技术有限公司"})).status == 409
    raw = b"not json"
    sig = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    assert (await client.post("/leads", data=raw, headers={"X-Crmbot-Signature": sig})).status == 400
    assert await Customer.all().count() == customers
    assert await AuditLog.filter(action__startswith="lead.").count() == 0

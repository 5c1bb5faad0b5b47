"""The public pool (公海) both ways: a rep lists it (by grade, by industry, a page at a time), claims a customer
(``认领 X`` or ``把X转给我``) and releases one (``放入公海 X``); the manager hears of each; limits a day and held,
and the cooldown on reclaiming, refuse with the reason and write nothing; of two reps claiming at once, one wins."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.keys import BOT
from models.audit import AuditLog
from models.customers import Customer
from models.people import PoolMove
from models.staff import Staff
from tests.driver import WeComChat
from tests.helpers import deliver_all, post_wecom, text_xml
from tests.simulators.wecom import WeComSimulator
from tests.test_people_handover import NOW, demo_app

IN_POOL = ("恒力液压有限公司", "三一重工股份有限公司")


async def pool_team(start_app: Any, make_settings: Any, **pool: int) -> Any:
    """The demo team at NOW with 恒力液压 (B, 机械) and 三一重工 (C, 工程机械) in the public pool."""
    client = await demo_app(start_app, make_settings, pool=pool)
    await Customer.filter(name__in=IN_POOL).update(owner_id=None)
    return client


async def test_a_rep_lists_the_pool_and_claims_customers_and_the_manager_hears(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await pool_team(start_app, make_settings, page_size=1)
    chat = WeComChat(client, wecom_sim, deliver=True)

    await chat.say("zhangsan", "公海")
    await chat.say("zhangsan", "公海 第2页")
    await chat.say("zhangsan", "公海 B")
    await chat.say("zhangsan", "公海 工程")
    first, second, grade_b, industry = chat.sent_to("zhangsan")
    assert "共 2 位，第 1/2 页" in first and "恒力液压有限公司　B级　机械" in first and "公海 第2页" in first
    assert "三一重工股份有限公司" in second and "恒力" not in second
    assert "恒力液压有限公司" in grade_b and "三一" not in grade_b
    assert "三一重工股份有限公司" in industry and "恒力" not in industry

    await chat.say("zhangsan", "认领 恒力液压")
    await chat.say("lisi", "把三一重工转给我")
    assert chat.sent_to("zhangsan")[-1].startswith("认领成功！「恒力液压有限公司」现在由您负责")
    assert chat.sent_to("lisi")[-1].startswith("认领成功！「三一重工股份有限公司」")
    zhangsan, lisi = await Staff.get(name="张三"), await Staff.get(name="李四")
    assert (await Customer.get(name="恒力液压有限公司")).owner_id == zhangsan.id
    assert (await Customer.get(name="三一重工股份有限公司")).owner_id == lisi.id
    assert "张三 从公海认领了客户「恒力液压有限公司」。" in chat.sent_to("wangjl")
    claims = await AuditLog.filter(action="pool.claim").values_list("before", "after")
    assert sorted(a["owner_id"] for _, a in claims) == sorted([zhangsan.id, lisi.id])
    assert all(b["owner_id"] is None for b, _ in claims)

    await chat.say("lisi", "认领 恒力液压")
    assert chat.sent_to("lisi")[-1] == "「恒力液压有限公司」由张三负责，不在公海，无法认领。如需接手，请找主管转给您。"


async def test_limits_a_day_and_held_and_the_cooldown_refuse_and_write_nothing(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await pool_team(start_app, make_settings, claims_per_day=1, cooldown_days=30)
    chat = WeComChat(client, wecom_sim, deliver=True)

    await chat.say("zhangsan", "认领 恒力液压")
    moves = await PoolMove.all().count()
    await chat.say("zhangsan", "认领 三一重工")
    assert chat.sent_to("zhangsan")[-1] == "您今天已认领 1 位公海客户，达到每日上限，明天再来吧。"
    assert (await Customer.get(name="三一重工股份有限公司")).owner_id is None
    assert await PoolMove.all().count() == moves

    await chat.say("zhangsan", "放入公海 华为")
    assert chat.sent_to("zhangsan")[-1] == "已把「华为技术有限公司」放入公海，同事可以认领。"
    assert "张三 把客户「华为技术有限公司」放入了公海。" in chat.sent_to("wangjl")
    client.app[BOT].clock.set(NOW.replace(day=19))  # the next day: the daily limit no longer applies
    await chat.say("zhangsan", "认领 华为")
    assert chat.sent_to("zhangsan")[-1] == "「华为技术有限公司」是您放入公海的，30 天内不能再认领（12-18 后可以）。"
    await chat.say("lisi", "认领 华为")
    assert chat.sent_to("lisi")[-1].startswith("认领成功！")

    await chat.say("lisi", "放入公海 恒力液压")
    assert (
        chat.sent_to("lisi")[-1]
        == "「恒力液压有限公司」由张三负责，销售只能操作自己名下的客户。如需接手，请找主管转给您。"
    )


async def test_a_rep_holding_the_most_pool_customers_may_claim_no_more(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await pool_team(start_app, make_settings, max_held=1)
    chat = WeComChat(client, wecom_sim, deliver=True)
    await chat.say("chengong", "认领 恒力液压")
    await chat.say("chengong", "认领 三一重工")
    assert chat.sent_to("chengong")[-1].startswith("您名下从公海认领的客户已有 1 位，达到上限")
    assert (await Customer.get(name="三一重工股份有限公司")).owner_id is None


async def test_two_reps_claiming_the_same_customer_at_once_one_gets_it(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await pool_team(start_app, make_settings)
    chat = WeComChat(client, wecom_sim)
    answers = await asyncio.gather(
        *(post_wecom(client, text_xml(user, "认领 恒力液压", 8100 + i)) for i, user in enumerate(["zhangsan", "lisi"]))
    )
    assert [a.status for a in answers] == [200, 200]
    await deliver_all(client.app)
    said = chat.sent_to("zhangsan") + chat.sent_to("lisi")
    assert sum(s.startswith("认领成功！") for s in said) == 1, said
    assert sum("不在公海" in s or "手慢了一步" in s for s in said) == 1, said
    owner = (await Customer.get(name="恒力液压有限公司")).owner_id
    assert owner in {(await Staff.get(name=n)).id for n in ("张三", "李四")}
    assert await PoolMove.filter(action="claim").count() == 1
    assert await AuditLog.filter(action="pool.claim").count() == 1

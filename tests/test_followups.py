"""Follow-ups from chat: the note, its channel, the next contact time on the profile, the reminder the scheduled
rules fire from it, permissions and the audit log — through the console and WeCom."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bot.keys import BOT
from bot.scheduled import run_rules
from models.audit import AuditLog
from models.customers import Customer
from models.followups import FollowUp
from models.staff import Staff
from tests.driver import ConsoleChat, WeComChat
from tests.simulators.wecom import WeComSimulator
from tests.test_customers import NOW, demo


async def test_a_free_sentence_logs_a_follow_up_and_plans_the_next_one(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    zhangsan = await Staff.get(name="张三")
    out = await ConsoleChat(client.app).say(zhangsan, "跟进了华为，电话里聊了报价，下周三下午2点再聊")
    assert "已记录「华为技术有限公司」的跟进（电话）：电话里聊了报价，下周三下午2点再聊" in out
    assert "下次跟进：2026-11-25 14:00" in out
    huawei = await Customer.get(name="华为技术有限公司")
    assert huawei.last_followup_at == NOW
    assert huawei.next_followup_at == datetime.fromisoformat("2026-11-25T14:00:00+08:00")
    record = await FollowUp.get(customer_id=huawei.id)
    assert (record.channel, record.staff_id, record.source) == ("phone", zhangsan.id, "manual")
    log = await AuditLog.get(action="follow_up")
    assert log.before["next_followup_at"] is None
    assert log.after["next_followup_at"] == "2026-11-25T06:00:00+00:00"  # stored in UTC
    assert (log.actor_name, log.platform) == ("张三", "console")


async def test_the_next_follow_up_is_reminded_by_the_scheduled_rules(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo(start_app, make_settings)
    await ConsoleChat(client.app).say(await Staff.get(name="张三"), "跟进 比亚迪 拜访了周经理 3天后再确认")
    bot = client.app[BOT]
    assert not [f for f in await run_rules(bot, NOW + timedelta(days=2)) if f.rule == "followup_due"]
    due = [f for f in await run_rules(bot, NOW + timedelta(days=3, hours=1)) if f.rule == "followup_due"]
    assert [(f.to.name, f.customer.name if f.customer else None) for f in due] == [("张三", "比亚迪股份有限公司")]


async def test_a_follow_up_in_wecom_is_answered_in_wecom(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo(start_app, make_settings)
    await WeComChat(client, deliver=True).say("lisi", "跟进 恒力液压 微信沟通了交期，月底前定方案", 9401)
    [reply] = wecom_sim.texts_to("lisi")
    assert reply.startswith("已记录「恒力液压有限公司」的跟进（微信）：微信沟通了交期，月底前定方案")
    assert "下次跟进：2026-11-30 09:00" in reply
    hengli = await Customer.get(name="恒力液压有限公司")
    assert hengli.next_followup_at == datetime.fromisoformat("2026-11-30T09:00:00+08:00")
    assert (await AuditLog.get(action="follow_up")).platform == "wecom"


async def test_a_follow_up_without_a_next_time_clears_a_past_plan(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    huawei = await Customer.get(name="华为技术有限公司")
    huawei.next_followup_at = NOW - timedelta(days=1)
    await huawei.save()
    out = await ConsoleChat(client.app).say(await Staff.get(name="张三"), "跟进 华为 上门拜访了刘工")
    assert "（拜访）" in out and "没有写下次跟进时间" in out
    await huawei.refresh_from_db()
    assert huawei.next_followup_at is None and huawei.last_followup_at == NOW


async def test_a_rep_cannot_log_on_a_colleagues_customer_and_an_empty_note_is_asked_for(
    start_app: Any, make_settings: Any
) -> None:
    client = await demo(start_app, make_settings)
    zhangsan = await Staff.get(name="张三")
    out = await ConsoleChat(client.app).say(zhangsan, "跟进 金风 聊了交期", "跟进 华为")
    assert "由李四负责，销售只能操作自己名下的客户" in out
    assert "请写上跟进内容" in out
    assert not await FollowUp.exists()
    # The manager may log for the team.
    out = await ConsoleChat(client.app).say(await Staff.get(name="王经理"), "跟进 金风 陪李四拜访了吴工")
    assert "已记录「金风科技股份有限公司」的跟进（拜访）" in out

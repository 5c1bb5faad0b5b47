"""Customers from chat: the profile card, new customers, stage, grade, tags and transfers — each permitted only to
the owner (or their manager), refused with the reason otherwise, audited with before and after, through the
console and through WeCom."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bot.clock import Clock
from bot.demo import load_demo
from bot.keys import BOT
from models.audit import AuditLog
from models.customers import Customer, Stage
from models.staff import Staff
from models.tickets import Ticket, TicketPriority
from tests.driver import ConsoleChat, WeComChat
from tests.simulators.wecom import WeComSimulator

NOW = datetime.fromisoformat("2026-11-18T10:00:00+08:00")
HINT = "\n（10 分钟内回复「撤销」可撤回）"  # ends the reply to every change that can be undone


async def demo(start_app: Any, make_settings: Any, clock: Clock | None = None, **sections: Any) -> Any:
    """The demo team and customers at NOW (or on ``clock``): 张三 owns 华为/比亚迪/三一, 李四 owns
    恒力液压/金风科技, 王经理 manages both."""
    # The demo conversations would otherwise trigger keyword rules (tested in test_keyword_rules.py).
    sections.setdefault("keywords", {"buying_signal_tag": "", "ticket_mode": "off"})
    clock = clock or Clock(NOW)
    client = await start_app(make_settings(**sections), clock=clock, run_scheduler=False, run_dispatcher=False)
    await load_demo(client.app)
    await client.app[BOT].understanding.refresh()
    return client


async def test_a_rep_reads_the_profile_card_of_an_own_customer(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    zhangsan = await Staff.get(name="张三")
    huawei = await Customer.get(name="华为技术有限公司")
    await Ticket.create(
        customer=huawei, title="液压站漏油", priority=TicketPriority.URGENT, first_response_due=NOW, created_at=NOW
    )
    out = await ConsoleChat(client.app).say(zhangsan, "华为怎么样了")
    assert "【华为技术有限公司】（华为）" in out
    assert "负责人：张三" in out
    assert "阶段：谈判　等级：A" in out
    assert "标签：战略客户" in out
    assert "联系人：刘工 决策人 13800000001" in out
    assert "未结工单：" in out and "【紧急】液压站漏油" in out
    assert "耐高温材料" in out  # the latest archived messages
    assert "最近跟进：" in out


async def test_the_card_shows_the_latest_nps_answer(start_app: Any, make_settings: Any) -> None:
    from models.nps import Survey, SurveyChannel, SurveyTrigger

    client = await demo(start_app, make_settings)
    huawei = await Customer.get(name="华为技术有限公司")
    await Survey.create(
        customer=huawei, token_hash="x" * 64, trigger=next(iter(SurveyTrigger)), trigger_id=huawei.id,
        channel=next(iter(SurveyChannel)), sent_at=NOW - timedelta(days=3), expires_at=NOW,
        answered_at=NOW - timedelta(days=2), score=9,
    )  # fmt: skip
    out = await ConsoleChat(client.app).say(await Staff.get(name="张三"), "客户 华为")
    assert "最近 NPS：9 分" in out


async def test_a_rep_cannot_see_or_change_a_colleagues_customer_and_is_told_why(
    start_app: Any, make_settings: Any
) -> None:
    client = await demo(start_app, make_settings)
    zhangsan = await Staff.get(name="张三")
    audits = await AuditLog.all().count()
    out = await ConsoleChat(client.app).say(
        zhangsan, "客户 恒力液压", "恒力液压赢单了", "等级 金风 A", "标签 恒力 +军工"
    )
    assert "「恒力液压有限公司」不是您或您团队的客户，无法查看。" in out
    assert out.count("由李四负责，销售只能操作自己名下的客户") == 3
    hengli = await Customer.get(name="恒力液压有限公司")
    assert hengli.stage == Stage.INTENT and "军工" not in hengli.tags
    assert await AuditLog.all().count() == audits


async def test_stage_grade_and_tags_change_and_are_audited(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    zhangsan = await Staff.get(name="张三")
    out = await ConsoleChat(client.app).say(
        zhangsan, "比亚迪 赢单了", "把三一重工评为B级", "标签 华为 +重点 -战略客户", "阶段 华为 谈判"
    )
    assert "「比亚迪股份有限公司」阶段：报价 → 成交，恭喜赢单" in out
    assert "「三一重工股份有限公司」等级：C → B。" in out
    assert "「华为技术有限公司」的标签：重点。" in out
    assert "已经是「谈判」阶段了" in out
    byd = await Customer.get(name="比亚迪股份有限公司")
    assert byd.stage == Stage.WON and byd.won_at == NOW
    log = await AuditLog.get(action="set_stage", entity_id=str(byd.id))
    assert (log.actor_name, log.platform) == ("张三", "console")
    assert log.before["stage"] == "quote" and log.after["stage"] == "won"
    tag_log = await AuditLog.get(action="tag")
    assert tag_log.before["tags"] == ["战略客户"] and tag_log.after["tags"] == ["重点"]
    assert await AuditLog.filter(action="set_grade").count() == 1


async def test_a_manager_changes_a_team_customer(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    out = await ConsoleChat(client.app).say(await Staff.get(name="王经理"), "阶段 恒力液压 报价")
    assert "「恒力液压有限公司」阶段：意向 → 报价" in out


async def test_a_rep_creates_a_customer_once(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    zhangsan = await Staff.get(name="张三")
    out = await ConsoleChat(client.app).say(zhangsan, "新建客户 宁德时代", "新建客户 宁德时代", "新建客户 华为")
    assert out.count("已为您建档「宁德时代」") == 1
    assert "「宁德时代」已经建过档了" in out
    assert "「华为技术有限公司」已经建过档了" in out
    created = await Customer.get(name="宁德时代")
    assert created.owner_id == zhangsan.id and created.stage == Stage.LEAD
    assert await AuditLog.filter(action="create_customer", entity_id=str(created.id)).exists()


async def test_a_transfer_in_wecom_tells_both_reps(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo(start_app, make_settings)
    await WeComChat(client, deliver=True).say("wangjl", "把金风科技转给张三跟进", 9101)
    assert wecom_sim.texts_to("wangjl") == [f"已把「金风科技股份有限公司」从李四转给张三。{HINT}"]
    [to_new] = wecom_sim.texts_to("zhangsan")
    assert "王经理 把客户「金风科技股份有限公司」转给了您负责" in to_new
    [to_old] = wecom_sim.texts_to("lisi")
    assert "转给了张三" in to_old
    jinfeng = await Customer.get(name="金风科技股份有限公司")
    assert jinfeng.owner_id == (await Staff.get(name="张三")).id
    log = await AuditLog.get(action="transfer")
    assert log.platform == "wecom" and log.actor_name == "王经理"
    assert log.before["owner_id"] == (await Staff.get(name="李四")).id


async def test_only_the_owner_or_a_manager_may_transfer(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo(start_app, make_settings)
    await WeComChat(client, deliver=True).say("zhangsan", "把恒力液压转给张三", 9201)
    assert wecom_sim.texts_to("zhangsan") == ["「恒力液压有限公司」的负责人是李四，只有负责人本人或其主管可以转交。"]
    await WeComChat(client, deliver=True).say("zhangsan", "把华为转给小明", 9202)
    assert "没有找到同事「小明」" in wecom_sim.texts_to("zhangsan")[-1]
    await WeComChat(client, deliver=True).say("zhangsan", "transfer 华为 李四", 9203)
    assert wecom_sim.texts_to("zhangsan")[-1] == f"已把「华为技术有限公司」从张三转给李四。{HINT}"
    assert "张三 把客户「华为技术有限公司」转给了您负责" in wecom_sim.texts_to("lisi")[-1]
    assert not await Customer.filter(name="恒力液压有限公司", owner__name="张三").exists()


async def test_stage_change_through_wecom_is_audited_with_the_platform(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo(start_app, make_settings)
    await WeComChat(client, deliver=True).say("zhangsan", "三一重工丢单了，被竞争对手抢了", 9301)
    assert wecom_sim.texts_to("zhangsan") == [f"「三一重工股份有限公司」阶段：潜在 → 流失。{HINT}"]
    log = await AuditLog.get(action="set_stage")
    assert log.platform == "wecom" and log.after["stage"] == "lost"


async def test_a_rep_runs_the_customer_commands_in_wecom(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo(start_app, make_settings)
    said = [
        "帮助",
        "新建客户 宁德时代",
        "宁德时代评为A级",
        "给宁德时代打上电池标签",
        "宁德时代进入方案阶段",
        "客户 宁德时代",
    ]
    for i, text in enumerate(said):
        await WeComChat(client, deliver=True).say("zhangsan", text, 9700 + i)
    help_text, created, graded, tagged, staged, card = wecom_sim.texts_to("zhangsan")
    assert "记录跟进" in help_text and "开工单" in help_text and "「把金风科技转给李四跟进」" in help_text
    assert created.startswith("已为您建档「宁德时代」")
    assert graded == f"「宁德时代」等级：— → A。{HINT}"
    assert tagged == f"「宁德时代」的标签：电池。{HINT}"
    assert staged == f"「宁德时代」阶段：潜在 → 方案。{HINT}"
    assert "【宁德时代】" in card and "等级：A" in card and "标签：电池" in card and "阶段：方案" in card
    actions = [a.action for a in await AuditLog.filter(platform="wecom", actor_name="张三").order_by("id")]
    assert actions == ["create_customer", "set_grade", "tag", "set_stage"]


async def test_a_transfer_in_the_console_tells_the_new_owner(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo(start_app, make_settings)
    out = await ConsoleChat(client.app).say(await Staff.get(name="张三"), "三一重工以后交给李四负责")
    assert out.strip() == f"已把「三一重工股份有限公司」从张三转给李四。{HINT}"
    assert "张三 把客户「三一重工股份有限公司」转给了您负责" in wecom_sim.texts_to("lisi")[0]

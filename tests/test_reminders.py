"""The follow-up ladder, return visits, contract expiry, SLA timers and explicit reminders, walked through time.

A fixed clock moves day by day (or minute by minute for SLAs); each step runs every rule once and drains the
outbox into the WeCom simulator, and the tests assert exactly which pushes reached whom, once each.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.clock import Clock
from bot.context import Firing
from bot.keys import BOT, OUTBOX
from bot.scheduled import run_rules
from handlers.orders import import_orders
from models.audit import AuditLog
from models.customers import Customer, Stage
from models.reminders import Reminder, RuleFiring
from models.staff import Role, Staff
from models.tickets import Ticket, TicketPriority, TicketStatus
from tests.helpers import post_wecom, settle, staff_member, text_xml
from tests.simulators.wecom import WeComSimulator

# Day 0: Monday 2026-03-02 10:00 in Shanghai (02:00 UTC), inside the 09:00-20:00 window.
DAY0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


class Team:
    def __init__(self, staff: dict[str, Staff]) -> None:
        self.staff = staff

    def __getitem__(self, name: str) -> Staff:
        return self.staff[name]


async def make_team() -> Team:
    """王经理 manages 张三 and 李四; 陈工 is the service engineer."""
    manager = await staff_member(name="王经理", wecom="wangjl", role=Role.MANAGER)
    staff = {"王经理": manager}
    for name, userid in (("张三", "zhangsan"), ("李四", "lisi"), ("陈工", "chengong")):
        staff[name] = await staff_member(name=name, wecom=userid, role=Role.REP, manager=manager)
    return Team(staff)


async def customer(name: str, owner: Staff | None, alias: str = "", **fields: Any) -> Customer:
    return await Customer.create(name=name, aliases=[alias] if alias else [], owner=owner, **fields)


async def start(
    start_app: Callable[..., Any], make_settings: Callable[..., Any], clock: Clock, **rules: Any
) -> web.Application:
    client = await start_app(make_settings(rules=rules), clock=clock, run_scheduler=False, run_dispatcher=False)
    app: web.Application = client.app
    return app


async def tick(app: web.Application, clock: Clock) -> list[Firing]:
    """One scheduler pass at the clock's now, then whatever is due leaves through the outbox."""
    fired = await run_rules(app[BOT], clock.now())
    await app[OUTBOX].drain(clock.now())
    return fired


def rules_of(fired: list[Firing]) -> list[tuple[str, str, str | None]]:
    return [(f.rule, f.to.name, f.customer.name if f.customer else None) for f in fired]


async def test_a_rep_who_ignores_a_customer_hears_on_day_7_and_the_manager_on_day_14(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    clock = Clock(DAY0)
    app = await start(start_app, make_settings, clock)
    team = await make_team()
    huawei = await customer("华为技术有限公司", team["张三"], "华为", stage=Stage.NEGOTIATION, last_followup_at=DAY0)

    for day in range(1, 7):
        clock.set(DAY0 + timedelta(days=day))
        assert await tick(app, clock) == []
    assert wecom_sim.texts_to("zhangsan") == []

    clock.set(DAY0 + timedelta(days=7))
    assert rules_of(await tick(app, clock)) == [("ladder_warn", "张三", "华为技术有限公司")]
    [warning] = wecom_sim.texts_to("zhangsan")
    assert "跟进预警" in warning and "已 7 天没有跟进" in warning and "`跟进 华为 " in warning

    for day in (7.5, 8, 13):  # later passes, later days: the warning is not repeated
        clock.set(DAY0 + timedelta(days=day))
        assert await tick(app, clock) == []
    assert len(wecom_sim.texts_to("zhangsan")) == 1

    clock.set(DAY0 + timedelta(days=14))
    assert rules_of(await tick(app, clock)) == [
        ("ladder_handover", "王经理", "华为技术有限公司"),
        ("ladder_handover_notice", "张三", "华为技术有限公司"),
    ]
    [handover] = wecom_sim.texts_to("wangjl")
    assert "客户移交" in handover and "张三 已 14 天未跟进" in handover and "已移交给 王经理" in handover
    assert "已移交给 王经理" in wecom_sim.texts_to("zhangsan")[1]
    await huawei.refresh_from_db()
    assert huawei.owner_id == team["王经理"].id
    assert await AuditLog.filter(action="customer.handover", entity_id=str(huawei.id)).count() == 1

    for day in (14, 15, 30, 59):
        clock.set(DAY0 + timedelta(days=day, minutes=1))
        assert await tick(app, clock) == []
    assert len(wecom_sim.texts_to("wangjl")) == 1
    assert len(wecom_sim.texts_to("zhangsan")) == 2


async def test_a_new_follow_up_restarts_the_ladder(start_app: Any, make_settings: Any, wecom_sim: Any) -> None:
    clock = Clock(DAY0)
    app = await start(start_app, make_settings, clock)
    team = await make_team()
    byd = await customer("比亚迪股份有限公司", team["李四"], "比亚迪", last_followup_at=DAY0)

    clock.set(DAY0 + timedelta(days=7))
    assert rules_of(await tick(app, clock)) == [("ladder_warn", "李四", "比亚迪股份有限公司")]
    # 李四 calls the customer on day 8: the clock starts again from there.
    byd.last_followup_at = DAY0 + timedelta(days=8)
    await byd.save()
    clock.set(DAY0 + timedelta(days=14))
    assert await tick(app, clock) == []
    clock.set(DAY0 + timedelta(days=15))
    assert rules_of(await tick(app, clock)) == [("ladder_warn", "李四", "比亚迪股份有限公司")]
    clock.set(DAY0 + timedelta(days=22))
    assert [f.rule for f in await tick(app, clock)] == ["ladder_handover", "ladder_handover_notice"]
    assert len(wecom_sim.texts_to("lisi")) == 3
    assert len(wecom_sim.texts_to("wangjl")) == 1


async def test_handover_to_the_public_pool(start_app: Any, make_settings: Any, wecom_sim: Any) -> None:
    clock = Clock(DAY0 + timedelta(days=14))
    app = await start(start_app, make_settings, clock, ladder_handover_mode="pool")
    team = await make_team()
    hengli = await customer("恒力液压有限公司", team["李四"], "恒力液压", last_followup_at=DAY0)
    won = await customer("金风科技股份有限公司", team["李四"], stage=Stage.WON, last_followup_at=DAY0)

    assert rules_of(await tick(app, clock)) == [
        ("ladder_handover", "王经理", "恒力液压有限公司"),
        ("ladder_handover_notice", "李四", "恒力液压有限公司"),
    ]
    await hengli.refresh_from_db()
    await won.refresh_from_db()
    assert hengli.owner_id is None  # in the public pool
    assert won.owner_id == team["李四"].id  # the ladder is for customers still in the pipeline
    assert "已释放到公海" in wecom_sim.texts_to("wangjl")[0]
    assert "已释放到公海" in wecom_sim.texts_to("lisi")[0]
    # A pool customer has nobody to remind.
    clock.advance(timedelta(days=30))
    assert await tick(app, clock) == []


async def test_next_follow_up_time_reminds_the_owner_once(start_app: Any, make_settings: Any, wecom_sim: Any) -> None:
    clock = Clock(DAY0)
    app = await start(start_app, make_settings, clock)
    team = await make_team()
    await customer(
        "三一重工股份有限公司",
        team["张三"],
        "三一",
        last_followup_at=DAY0,
        next_followup_at=DAY0 + timedelta(days=2, hours=5),
    )
    clock.set(DAY0 + timedelta(days=2, hours=4, minutes=59))
    assert await tick(app, clock) == []
    clock.set(DAY0 + timedelta(days=2, hours=5))
    assert rules_of(await tick(app, clock)) == [("followup_due", "张三", "三一重工股份有限公司")]
    clock.advance(timedelta(minutes=1))
    assert await tick(app, clock) == []
    [text] = wecom_sim.texts_to("zhangsan")
    assert "跟进提醒" in text and "03-04 15:00" in text and "`跟进 三一 " in text


async def test_sixty_days_after_the_deal_service_is_told_and_the_customer_joins_the_return_visit_pool(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(DAY0)
    app = await start(start_app, make_settings, clock, return_visit_staff=["陈工"])
    team = await make_team()
    jinfeng = await customer(
        "金风科技股份有限公司", team["李四"], "金风", stage=Stage.WON, won_at=DAY0, last_followup_at=DAY0
    )
    for day in (7, 14, 30, 59):
        clock.set(DAY0 + timedelta(days=day))
        assert await tick(app, clock) == []
    clock.set(DAY0 + timedelta(days=60))
    assert rules_of(await tick(app, clock)) == [("return_visit", "陈工", "金风科技股份有限公司")]
    clock.set(DAY0 + timedelta(days=61))
    assert await tick(app, clock) == []
    [text] = wecom_sim.texts_to("chengong")
    assert "回访提醒" in text and "成交已满 60 天" in text and "负责人：李四" in text
    await jinfeng.refresh_from_db()
    assert "回访池" in jinfeng.tags
    assert wecom_sim.texts_to("lisi") == []


async def test_without_a_service_team_the_owner_is_told_of_the_return_visit(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(DAY0 + timedelta(days=60))
    app = await start(start_app, make_settings, clock)
    team = await make_team()
    await customer("金风科技股份有限公司", team["李四"], stage=Stage.WON, won_at=DAY0, last_followup_at=DAY0)
    assert rules_of(await tick(app, clock)) == [("return_visit", "李四", "金风科技股份有限公司")]


async def test_contract_expiry_warns_the_owner_30_days_ahead_once(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(DAY0)
    app = await start(start_app, make_settings, clock)
    team = await make_team()
    await customer(
        "华为技术有限公司", team["张三"], "华为", contract_end=date(2026, 4, 2), last_followup_at=DAY0
    )  # 31 days after day 0
    assert await tick(app, clock) == []
    for day in (1, 2, 10, 31):
        clock.set(DAY0 + timedelta(days=day))
        # the rep keeps in touch, so only the contract rule has something to say
        await Customer.filter(name="华为技术有限公司").update(last_followup_at=clock.now())
        fired = await tick(app, clock)
        assert rules_of(fired) == ([("contract_expiry", "张三", "华为技术有限公司")] if day == 1 else [])
    [text] = wecom_sim.texts_to("zhangsan")
    assert "合同到期提醒" in text and "2026-04-02" in text and "还有 30 天" in text
    # Renewed for a year: the next expiry is warned again, a year later.
    await Customer.filter(name="华为技术有限公司").update(contract_end=date(2027, 4, 2))
    clock.set(datetime(2027, 3, 3, 2, 0, tzinfo=UTC))
    await Customer.filter(name="华为技术有限公司").update(last_followup_at=clock.now())
    assert [f.rule for f in await tick(app, clock)] == ["contract_expiry"]


async def test_an_urgent_ticket_left_alone_reaches_the_manager_after_30_minutes_even_at_night(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    night = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # 22:00 in Shanghai, quiet hours
    clock = Clock(night)
    app = await start(start_app, make_settings, clock)
    team = await make_team()
    byd = await customer("比亚迪股份有限公司", team["张三"], "比亚迪", last_followup_at=night)
    ticket = await Ticket.create(
        customer=byd,
        title="液压元件漏油",
        priority=TicketPriority.URGENT,
        assignee=team["陈工"],
        created_at=night,
        first_response_due=night + timedelta(minutes=30),
    )
    sent_at: dict[str, int] = {}
    for minute in range(0, 46):
        clock.set(night + timedelta(minutes=minute))
        for f in await tick(app, clock):
            sent_at[f.rule] = minute
    assert sent_at == {"ticket_sla": 30, "ticket_sla_assignee": 30}
    [escalation] = wecom_sim.texts_to("wangjl")
    assert f"工单 #{ticket.id}（紧急）液压元件漏油" in escalation and "处理人：陈工" in escalation
    assert "已 30 分钟无人响应" in escalation
    [chase] = wecom_sim.texts_to("chengong")
    assert f"`工单 #{ticket.id} 处理中`" in chase and "已上报 王经理" in chase
    assert await AuditLog.filter(action="ticket.escalate").count() == 1


async def test_a_normal_ticket_breaches_after_two_hours_and_a_response_stops_the_timer(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(DAY0)
    app = await start(start_app, make_settings, clock)
    team = await make_team()
    hengli = await customer("恒力液压有限公司", team["李四"], last_followup_at=DAY0)
    late = await Ticket.create(
        customer=hengli, title="交期咨询", created_at=DAY0, first_response_due=DAY0 + timedelta(hours=2)
    )
    answered = await Ticket.create(
        customer=hengli, title="安装指导", created_at=DAY0, first_response_due=DAY0 + timedelta(hours=2)
    )
    fired: dict[int, list[str]] = {}
    for minute in range(0, 131, 5):
        clock.set(DAY0 + timedelta(minutes=minute))
        if minute == 90:
            answered.first_responded_at = clock.now()
            answered.status = TicketStatus.IN_PROGRESS
            await answered.save()
        for f in await tick(app, clock):
            fired.setdefault(minute, []).append(f"{f.rule}->{f.to.name}")
    # Unassigned: the owner's manager is told, the owner is chased.
    assert fired == {120: ["ticket_sla->王经理", "ticket_sla_assignee->李四"]}
    assert f"工单 #{late.id}（普通）交期咨询" in wecom_sim.texts_to("wangjl")[0]


async def test_a_resolved_ticket_not_revisited_within_24_hours_is_reminded(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(DAY0)
    app = await start(start_app, make_settings, clock)
    team = await make_team()
    byd = await customer("比亚迪股份有限公司", team["张三"], last_followup_at=DAY0)
    ticket = await Ticket.create(
        customer=byd,
        title="漏油",
        assignee=team["陈工"],
        created_at=DAY0 - timedelta(hours=3),
        first_response_due=DAY0 - timedelta(hours=1),
        first_responded_at=DAY0 - timedelta(hours=2),
        status=TicketStatus.RESOLVED,
        resolved_at=DAY0,
        revisit_due=DAY0 + timedelta(hours=24),
    )
    clock.set(DAY0 + timedelta(hours=23, minutes=59))
    assert await tick(app, clock) == []
    clock.set(DAY0 + timedelta(hours=24))
    assert rules_of(await tick(app, clock)) == [("ticket_revisit", "陈工", "比亚迪股份有限公司")]
    clock.advance(timedelta(hours=1))
    assert await tick(app, clock) == []
    [text] = wecom_sim.texts_to("chengong")
    assert f"工单 #{ticket.id} 漏油" in text and "还没有回访" in text


async def test_repurchase_is_due_from_the_reorder_rhythm(
    start_app: Any, make_settings: Any, wecom_sim: Any, tmp_path: Path
) -> None:
    clock = Clock(DAY0)
    app = await start(start_app, make_settings, clock)
    team = await make_team()
    await customer("三一重工股份有限公司", team["张三"], "三一", last_followup_at=DAY0)
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "客户名称,下单日期,金额,订单号\n"
        "三一重工股份有限公司,2026-01-01,120000,SO-1\n"
        "三一,2026-01-31,80000,SO-2\n"
        "三一重工股份有限公司,2026/3/2,1.5万,SO-3\n"
        "不存在的公司,2026-03-01,100,SO-4\n"
        "三一,昨天,100,SO-5\n",
        encoding="utf-8",
    )
    report = await import_orders(app, orders)
    assert "新增 added 3" in report and "拒绝 rejected 2" in report
    assert "第 5 行" in report and "第 6 行" in report
    assert "新增 added 0" in await import_orders(app, orders)  # the same file again adds nothing

    # Orders every 30 days (no spread), the last on 03-02: expected 04-01, told 7 days ahead (local midnight of 03-25).
    clock.set(datetime(2026, 3, 24, 15, 59, tzinfo=UTC))
    await Customer.all().update(last_followup_at=clock.now())
    assert await tick(app, clock) == []
    clock.set(datetime(2026, 3, 25, 2, 0, tzinfo=UTC))
    assert rules_of(await tick(app, clock)) == [("repurchase_due", "张三", "三一重工股份有限公司")]
    clock.advance(timedelta(days=1))
    assert await tick(app, clock) == []
    [text] = wecom_sim.texts_to("zhangsan")
    assert "复购提醒" in text and "每 30 天" in text and "预计 2026-04-01 复购，±0 天" in text


async def test_tomorrow_3pm_remind_me_to_call_huawei(start_app: Any, make_settings: Any, wecom_sim: Any) -> None:
    clock = Clock(DAY0)
    client = await start_app(make_settings(), clock=clock, run_scheduler=False, run_dispatcher=False)
    app = client.app
    team = await make_team()
    await customer("华为技术有限公司", team["张三"], "华为", last_followup_at=DAY0)
    await app[BOT].understanding.refresh()

    await post_wecom(client, text_xml("zhangsan", "明天下午3点提醒我给华为打电话", 7001))
    await settle(app)
    [confirmation] = wecom_sim.texts_to("zhangsan")
    assert "2026-03-03 15:00" in confirmation and "给华为打电话" in confirmation
    reminder = await Reminder.get(staff_id=team["张三"].id)
    assert reminder.at == datetime(2026, 3, 3, 7, 0, tzinfo=UTC)

    clock.set(datetime(2026, 3, 3, 6, 59, tzinfo=UTC))
    assert await tick(app, clock) == []
    clock.set(datetime(2026, 3, 3, 7, 0, tzinfo=UTC))
    assert rules_of(await tick(app, clock)) == [("reminder", "张三", "华为技术有限公司")]
    clock.advance(timedelta(minutes=1))
    assert await tick(app, clock) == []
    texts = wecom_sim.texts_to("zhangsan")
    assert len(texts) == 2 and "给华为打电话" in texts[1] and "`跟进 华为 " in texts[1]
    await reminder.refresh_from_db()
    assert reminder.fired_at == datetime(2026, 3, 3, 7, 0, tzinfo=UTC)


async def test_a_reminder_in_the_past_or_for_an_unknown_customer_is_refused(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(DAY0)
    client = await start_app(make_settings(), clock=clock, run_scheduler=False, run_dispatcher=False)
    await make_team()
    await post_wecom(client, text_xml("zhangsan", "昨天下午3点提醒我给华为打电话", 7002))
    await settle(client.app)
    assert await Reminder.all().count() == 0
    [reply] = wecom_sim.texts_to("zhangsan")
    assert "已经过去" in reply or "没有找到" in reply
    assert await RuleFiring.all().count() == 0


async def test_a_follow_up_logged_in_chat_restarts_the_ladder(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    clock = Clock(DAY0)
    client = await start_app(make_settings(), clock=clock, run_scheduler=False, run_dispatcher=False)
    app = client.app
    team = await make_team()
    await customer("华为技术有限公司", team["张三"], "华为", last_followup_at=DAY0)
    await app[BOT].understanding.refresh()

    clock.set(DAY0 + timedelta(days=5))
    await post_wecom(client, text_xml("zhangsan", "跟进 华为 电话沟通了报价", 7101))
    await settle(app)
    assert len(wecom_sim.texts_to("zhangsan")) == 1  # the bot's confirmation
    clock.set(DAY0 + timedelta(days=7))
    assert await tick(app, clock) == []
    clock.set(DAY0 + timedelta(days=12))
    assert rules_of(await tick(app, clock)) == [("ladder_warn", "张三", "华为技术有限公司")]


async def test_an_urgent_ticket_answered_in_time_is_not_escalated(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    clock = Clock(DAY0)
    client = await start_app(make_settings(), clock=clock, run_scheduler=False, run_dispatcher=False)
    app = client.app
    team = await make_team()
    byd = await customer("比亚迪股份有限公司", team["张三"], "比亚迪", last_followup_at=DAY0)
    ticket = await Ticket.create(
        customer=byd,
        title="漏油",
        priority=TicketPriority.URGENT,
        assignee=team["陈工"],
        created_at=DAY0,
        first_response_due=DAY0 + timedelta(minutes=30),
    )
    for minute in range(0, 61):
        clock.set(DAY0 + timedelta(minutes=minute))
        if minute == 29:
            await post_wecom(client, text_xml("chengong", f"工单 #{ticket.id} 处理中", 7201))
            await settle(app)
        assert await tick(app, clock) == []
    assert wecom_sim.texts_to("wangjl") == []


async def test_crmbot_import_orders_from_excel(make_settings: Any, start_app: Any, tmp_path: Path) -> None:
    import openpyxl

    from tests.test_rules_engine import _crmbot, cli_env

    settings = make_settings()
    client = await start_app(settings, clock=Clock(DAY0), run_scheduler=False, run_dispatcher=False)
    team = await make_team()
    huawei = await customer("华为技术有限公司", team["张三"], "华为", last_followup_at=DAY0)
    await client.close()
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Customer", "Order Date", "Amount", "Order No"])
    sheet.append(["华为", datetime(2026, 1, 5), 1000.5, "ERP-001"])
    sheet.append(["华为技术有限公司", datetime(2026, 2, 4), "2,000", "ERP-002"])
    sheet.append(["华为", datetime(2026, 3, 6), 3000, "ERP-002"])  # the same order number twice
    path = tmp_path / "orders.xlsx"
    book.save(path)
    code, out, err = await _crmbot("import", "orders", str(path), env=cli_env(settings))
    assert code == 0, err
    assert "新增 added 2" in out and "拒绝 rejected 1" in out and "第 4 行" in out

    bad = tmp_path / "orders.csv"
    bad.write_text("名字,金额\n华为,100\n", encoding="utf-8")
    code, out, err = await _crmbot("import", "orders", str(bad), env=cli_env(settings))
    assert code == 2 and "缺少必填列" in err

    client = await start_app(settings, clock=Clock(DAY0), run_scheduler=False, run_dispatcher=False)
    from models.orders import Order, Repurchase

    assert await Order.filter(customer_id=huawei.id).count() == 2
    assert await Repurchase.get_or_none(customer_id=huawei.id) is None  # two orders are too few for a window


async def test_a_dingtalk_rep_gets_the_warning_as_dingtalk_markdown(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    clock = dingtalk_sim.clock  # the bot and the simulated DingTalk share the time: day 0, 10:00 in Shanghai
    assert clock.now() == DAY0
    settings = make_settings(dingtalk=dingtalk_sim.settings(), wecom={"corp_id": ""})
    client = await start_app(settings, clock=clock, run_scheduler=False, run_dispatcher=False)
    manager = await staff_member(name="王经理", dingtalk="ding_wangjl", role=Role.MANAGER)
    rep = await staff_member(name="李四", dingtalk="ding_lisi", manager=manager)
    await customer("恒力液压有限公司", rep, "恒力液压", last_followup_at=DAY0)

    clock.set(DAY0 + timedelta(days=7))
    assert rules_of(await tick(client.app, clock)) == [("ladder_warn", "李四", "恒力液压有限公司")]
    [delivery] = dingtalk_sim.delivered_to("ding_lisi")
    assert "markdown" in delivery.msgtype.lower()
    assert "跟进预警" in delivery.text and "`跟进 恒力液压 " in delivery.text
    clock.set(DAY0 + timedelta(days=7, minutes=1))
    assert await tick(client.app, clock) == []
    assert len(dingtalk_sim.delivered_to("ding_lisi")) == 1

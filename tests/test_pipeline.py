"""The sales pipeline through chat, on a fixed clock: a rep opens deals in WeCom and moves them from 潜在 to 成交
(or loses them) day by day; the stage history holds the exact durations; the manager types 漏斗 and reads numbers
computed by hand here; stalled deals and stage playbooks push once, escalate once, and a required field blocks a
stage until it is filled in."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from bot.clock import Clock
from bot.context import Firing
from bot.keys import BOT, OUTBOX
from bot.scheduled import run_rules
from handlers.pipeline import deals
from models.audit import AuditLog
from models.customers import STAGE_LABELS, Customer, Stage
from models.opportunities import Opportunity, SalesTarget, StageChange
from models.staff import Role, Staff
from models.tickets import Ticket
from tests.driver import WeComChat
from tests.helpers import staff_member
from tests.simulators.wecom import WeComSimulator

# Day 0: Monday 2026-03-02 10:00 in Shanghai (02:00 UTC), inside the 09:00-20:00 window.
DAY0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


class Office:
    """王经理 manages 张三 and 李四; 陈工 is the technical engineer. 张三 owns 华为, 李四 owns 比亚迪."""

    def __init__(self, client: TestClient[Any, Any], clock: Clock, sim: WeComSimulator) -> None:
        self.client, self.clock, self.sim = client, clock, sim
        self.chat = WeComChat(client, sim, deliver=True)

    async def on(self, day: float, user: str, text: str) -> str:
        """``user`` types ``text`` on ``day``; the bot's answer to it."""
        self.clock.set(DAY0 + timedelta(days=day))
        before = len(self.sim.texts_to(user))
        await self.chat.say(user, text)
        replies = self.sim.texts_to(user)[before:]
        assert replies, f"no reply to {text!r}"
        return replies[-1]

    async def tick(self, day: float) -> list[Firing]:
        self.clock.set(DAY0 + timedelta(days=day))
        fired = await run_rules(self.client.app[BOT], self.clock.now())
        await self.client.app[OUTBOX].drain(self.clock.now())
        return fired


async def open_office(
    start_app: Callable[..., Any], make_settings: Callable[..., Any], sim: WeComSimulator, **pipeline: Any
) -> Office:
    clock = Clock(DAY0)
    settings = make_settings(pipeline=pipeline, rules={"ladder_warn_days": 60, "ladder_handover_days": 90})
    client = await start_app(settings, clock=clock, run_scheduler=False, run_dispatcher=False)
    manager = await staff_member(name="王经理", wecom="wangjl", role=Role.MANAGER)
    for name, userid in (("张三", "zhangsan"), ("李四", "lisi"), ("陈工", "chengong")):
        await staff_member(name=name, wecom=userid, role=Role.REP, manager=manager)
    await Customer.create(
        name="华为技术有限公司", aliases=["华为"], owner=await Staff.get(name="张三"), last_followup_at=DAY0
    )
    await Customer.create(
        name="比亚迪股份有限公司", aliases=["比亚迪"], owner=await Staff.get(name="李四"), last_followup_at=DAY0
    )
    await client.app[BOT].understanding.refresh()
    return Office(client, clock, sim)


async def history(name: str) -> list[tuple[str, float | None]]:
    """A deal's stages in order, with the days spent in each (None: still there)."""
    opp = await Opportunity.get(name=name)
    rows = await StageChange.filter(opportunity_id=opp.id).order_by("entered_at", "id")
    return [(str(r.stage), (r.left_at - r.entered_at).total_seconds() / 86400 if r.left_at else None) for r in rows]


async def test_a_deal_goes_from_lead_to_won_in_chat_and_the_manager_reads_the_funnel(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    office = await open_office(start_app, make_settings, wecom_sim)

    reply = await office.on(0, "zhangsan", "商机 华为 5G基站电源 300万 预计3月签")
    assert "已为「华为技术有限公司」新建商机：「5G基站电源」潜在，300万，赢率 10%，预计 2026-03-31 成交" in reply
    assert "储能柜" in await office.on(0, "zhangsan", "华为有个新商机 储能柜 100万 预计6月底签")
    assert "数据中心UPS" in await office.on(1, "zhangsan", "商机 华为 数据中心UPS 50万")

    assert "潜在 → 意向，在潜在阶段停留 2.0 天" in await office.on(2, "zhangsan", "华为储能柜 进入意向")
    assert "潜在 → 意向，在潜在阶段停留 3.0 天" in await office.on(3, "zhangsan", "华为电源项目 进入意向")
    lost = await office.on(6, "zhangsan", "华为储能柜 丢单 价格原因")
    assert "意向 → 流失" in lost and "原因：价格原因" in lost
    assert "意向 → 方案" in await office.on(8, "zhangsan", "华为电源项目 推进到方案")
    assert "潜在 → 报价" in await office.on(10, "zhangsan", "商机 华为 UPS 进入报价")
    assert "方案 → 报价" in await office.on(12, "zhangsan", "华为电源项目 进入报价")
    assert "报价 → 谈判" in await office.on(20, "zhangsan", "华为 电源项目 进入谈判阶段")
    won = await office.on(30, "zhangsan", "华为电源项目 赢单")
    assert "谈判 → 成交，在谈判阶段停留 10.0 天" in won and "恭喜赢单 300万" in won

    assert await history("5G基站电源") == [
        ("lead", 3.0), ("intent", 5.0), ("proposal", 4.0), ("quote", 8.0), ("negotiation", 10.0), ("won", None),
    ]  # fmt: skip
    assert await history("储能柜") == [("lead", 2.0), ("intent", 4.0), ("lost", None)]
    assert await history("数据中心UPS") == [("lead", 9.0), ("quote", None)]
    lost_deal = await Opportunity.get(name="储能柜")
    assert lost_deal.lost_reason == "价格原因" and lost_deal.expected_close == date(2026, 6, 30)
    # The customer follows its most advanced open deal (UPS at 报价), not the deal that was won.
    assert (await Customer.get(name="华为技术有限公司")).stage == Stage.QUOTE
    moves = await AuditLog.filter(action="set_opportunity_stage").order_by("id")
    assert len(moves) == 8 and moves[0].before["stage"] == "lead" and moves[0].after["stage"] == "intent"
    assert all(m.actor_name == "张三" for m in moves)

    # By hand: reached A=won(5), B=intent(1), C=quote(3); completed stays lead 3/2/9, intent 5/4, proposal 4,
    # quote 8, negotiation 10; open: C at 报价 (50万 × 60% = 30万).
    funnel = await office.on(30, "wangjl", "漏斗")
    assert "王经理团队销售漏斗（全部商机）" in funnel
    assert "潜在｜0｜0元｜0元｜100%｜3.0天" in funnel
    assert "意向｜0｜0元｜0元｜67%｜4.5天" in funnel
    assert "方案｜0｜0元｜0元｜100%｜4.0天" in funnel
    assert "报价｜1｜50万｜30万｜50%｜8.0天" in funnel
    assert "谈判｜0｜0元｜0元｜100%｜10.0天" in funnel
    assert "进行中合计：1 个，50万，加权 30万" in funnel
    assert "赢单：1 个 300万；丢单：1 个 100万，赢单率 50%" in funnel

    # 李四 sees only his own (empty) funnel; 张三's numbers are not his.
    assert "报价｜0｜0元" in await office.on(30, "lisi", "销售漏斗")


async def test_writes_need_a_deal_named_and_questions_never_write(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    office = await open_office(start_app, make_settings, wecom_sim)
    await office.on(0, "zhangsan", "商机 华为 5G基站电源 300万")
    await office.on(0, "zhangsan", "商机 华为 储能柜 100万")

    # Two deals, none named: a numbered question; the answer moves the chosen one.
    question = await office.on(1, "zhangsan", "商机 华为 进入意向")
    assert "有 2 个商机" in question and "1. 5G基站电源" in question and "2. 储能柜" in question
    assert "储能柜" in await office.on(1, "zhangsan", "2")
    assert (await Opportunity.get(name="储能柜")).stage == Stage.INTENT
    assert (await Opportunity.get(name="5G基站电源")).stage == Stage.LEAD

    # 李四 may not move 张三's deals.
    assert "销售只能操作自己名下的客户" in await office.on(1, "lisi", "华为电源项目 进入方案")
    assert (await Opportunity.get(name="5G基站电源")).stage == Stage.LEAD

    changes = await StageChange.all().count()
    for text in ("漏斗", "本月业绩", "今天要跟进哪些客户", "我的客户"):
        await office.on(2, "zhangsan", text)
    assert await StageChange.all().count() == changes


async def test_performance_against_target_and_forecast(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    office = await open_office(start_app, make_settings, wecom_sim)
    assert "只有主管可以设置业绩目标" in await office.on(0, "zhangsan", "目标 张三 本月 500万")
    assert "已把 张三 2026-03 的业绩目标设为 400万" in await office.on(0, "wangjl", "目标 张三 本月 400万")
    await office.on(0, "zhangsan", "商机 华为 5G基站电源 300万 预计3月20日签")
    await office.on(0, "zhangsan", "商机 华为 储能柜 100万 预计3月底签")
    await office.on(0, "zhangsan", "商机 华为 数据中心UPS 80万 预计4月签")
    await office.on(5, "zhangsan", "华为储能柜 进入报价")
    await office.on(10, "zhangsan", "华为电源项目 赢单")

    # Won 300万 of 400万; forecast for the rest of March: 储能柜 100万 × 60% (UPS closes in April).
    mine = await office.on(10, "zhangsan", "本月业绩")
    assert "我的业绩（2026年3月）" in mine
    assert "合计：赢单 1 个 300万 / 目标 400万，完成 75%；预测再签 60万（加权）" in mine
    team = await office.on(10, "wangjl", "这个月业绩怎么样")
    assert "· 张三：赢单 1 个 300万 / 目标 400万，完成 75%" in team
    assert "· 李四：赢单 0 个 0元 / 目标 0元，未设目标" in team


async def test_a_stalled_deal_is_reported_once_and_listed_in_the_funnel(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    office = await open_office(start_app, make_settings, wecom_sim, stall_days={"proposal": 14})
    await office.on(0, "zhangsan", "商机 华为 5G基站电源 300万 方案阶段")
    sent = len(wecom_sim.texts_to("zhangsan"))

    for day in (1, 7, 13):
        assert [f for f in await office.tick(day) if f.rule == "pipeline_stalled"] == []
    [stalled] = [f for f in await office.tick(14) if f.rule == "pipeline_stalled"]
    assert stalled.to.name == "张三"
    for day in (14.5, 15, 20):
        assert [f for f in await office.tick(day) if f.rule == "pipeline_stalled"] == []
    pushes = wecom_sim.texts_to("zhangsan")[sent:]
    assert len(pushes) == 1 and "商机停滞" in pushes[0] and "已 14 天没有推进也没有跟进" in pushes[0]

    funnel = await office.on(20, "wangjl", "漏斗")
    assert "停滞商机 1 个" in funnel and "华为技术有限公司「5G基站电源」方案 20 天未动，负责人：张三" in funnel

    # A follow-up starts a new standstill: reported again only 14 days later.
    assert "已记录" in await office.on(21, "zhangsan", "跟进 华为 电话沟通了方案，客户在内部评审")
    assert [f for f in await office.tick(34) if f.rule == "pipeline_stalled"] == []
    assert [f.rule for f in await office.tick(35) if f.rule == "pipeline_stalled"] == ["pipeline_stalled"]


PLAYBOOKS = {
    "proposal": {
        "notify": ["陈工", "owner"],
        "text": "请技术团队准备试样",
        "checklist": ["确认电压参数", "寄送样品"],
        "countdown_days": 7,
        "escalate_to": ["manager"],
    },
    "quote": {
        "required": ["需求分析"],
        "notify": [],
        "cadence": [
            {"day": 3, "text": "发送参数表"},
            {"day": 7, "text": "分享类似客户的案例"},
            {"day": 14, "text": "给出限时优惠"},
        ],
    },
}


async def test_a_playbook_notifies_once_escalates_once_and_a_required_field_blocks_the_stage(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    office = await open_office(start_app, make_settings, wecom_sim, playbooks=PLAYBOOKS)
    await office.on(0, "zhangsan", "商机 华为 5G基站电源 300万")
    reply = await office.on(0, "zhangsan", "华为电源项目 进入方案")
    assert "方案阶段要做：请技术团队准备试样" in reply and "☐ 寄送样品" in reply

    fired = [(f.rule, f.to.name) for f in await office.tick(0.01)]
    assert fired == [("playbook_enter", "陈工"), ("playbook_enter", "张三")]
    [task] = wecom_sim.texts_to("chengong")
    assert "方案阶段任务" in task and "☐ 确认电压参数" in task and "5G基站电源" in task and "7 天" in task
    assert "`华为 5G基站电源 进入报价`" in task  # a command that moves this deal
    for day in (1, 6.9):
        assert await office.tick(day) == []
    assert [(f.rule, f.to.name) for f in await office.tick(7)] == [("playbook_escalate", "王经理")]
    [escalation] = wecom_sim.texts_to("wangjl")
    assert "方案阶段超时" in escalation and "已超过 7 天仍未推进" in escalation
    for day in (7.5, 10):
        assert await office.tick(day) == []
    assert len(wecom_sim.texts_to("wangjl")) == 1 and len(wecom_sim.texts_to("chengong")) == 1

    # 报价 needs 需求分析: refused with the reason, nothing moves, until it is filled in.
    refused = await office.on(10, "zhangsan", "华为电源项目 进入报价")
    assert "进入报价阶段前需要先填写：需求分析" in refused and "商机 5G基站电源 需求分析：…" in refused
    assert (await Opportunity.get(name="5G基站电源")).stage == Stage.PROPOSAL
    assert "已更新商机「5G基站电源」的需求分析" in await office.on(
        10, "zhangsan", "商机 华为 电源项目 需求分析：48V 整流模块，年需求 2000 台"
    )
    assert "方案 → 报价" in await office.on(11, "zhangsan", "华为电源项目 进入报价")

    # The quote cadence: day 3, 7 and 14 of 报价, each once, to the owner.
    cadence = []
    for day in (12, 14, 15, 18, 19, 25, 26):
        cadence += [(f.rule, day) for f in await office.tick(day) if f.rule.startswith("playbook_cadence")]
    assert cadence == [("playbook_cadence_3d", 14), ("playbook_cadence_7d", 18), ("playbook_cadence_14d", 25)]
    assert any("建议：分享类似客户的案例" in t for t in wecom_sim.texts_to("zhangsan"))


async def test_the_funnel_of_200_random_deals_equals_a_recomputation_from_their_history(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    """200 deals from a seeded generator move through random stages on random days (through the same moves chat
    makes); the director's 漏斗 equals the funnel recomputed straight from the stage history rows."""
    office = await open_office(start_app, make_settings, wecom_sim)
    await staff_member(name="赵总", wecom="zhaozong", role=Role.DIRECTOR)
    rng = random.Random(20261202)
    reps = list(await Staff.filter(role=Role.REP).order_by("id"))
    customers = [await Customer.create(name=f"客户{i:02d}有限公司", owner=rng.choice(reps)) for i in range(20)]
    ladder = [Stage.LEAD, Stage.INTENT, Stage.PROPOSAL, Stage.QUOTE, Stage.NEGOTIATION, Stage.WON]
    for n in range(200):
        customer = rng.choice(customers)
        actor = deals.Actor(await Staff.get(id=customer.owner_id))
        at = DAY0 + timedelta(days=rng.uniform(0, 30))
        step = rng.randrange(3)
        opp = await deals.start(
            customer, name=f"商机{n}", amount=rng.randrange(1, 500) * 10_000, stage=ladder[step],
            owner_id=customer.owner_id, now=at, actor=actor, conn=None,
            probability_override=rng.choice([None, None, None, 0.35]),
        )  # fmt: skip
        while step < 5 and rng.random() < 0.75:
            at += timedelta(days=rng.uniform(0.5, 20))
            if rng.random() < 0.15:
                await deals.move(opp, Stage.LOST, now=at, actor=actor, conn=None, reason="价格")
                break
            step = min(5, step + rng.choice([1, 1, 1, 2]))
            await deals.move(opp, ladder[step], now=at, actor=actor, conn=None)

    funnel = await office.on(200, "zhaozong", "漏斗")

    settings = office.client.app[BOT].settings
    rows = await StageChange.all().order_by("opportunity_id", "entered_at", "id")
    by_deal: dict[int, list[StageChange]] = {}
    for row in rows:
        by_deal.setdefault(row.opportunity_id, []).append(row)
    opps = {o.id: o for o in await Opportunity.all()}
    reached = [max(ladder.index(Stage(r.stage)) for r in h if r.stage != Stage.LOST) for h in by_deal.values()]
    stays: dict[Stage, list[float]] = {}
    for row in rows:
        if row.left_at is not None:
            stays.setdefault(Stage(row.stage), []).append((row.left_at - row.entered_at).total_seconds() / 86400)
    for k, stage in enumerate(ladder[:-1]):
        current = [opps[d] for d, h in by_deal.items() if h[-1].stage == stage]
        amount = sum(float(o.amount) for o in current)
        weight = sum(
            float(o.amount) * (o.probability if o.probability is not None else settings.pipeline.probabilities[stage])
            for o in current
        )
        entered = sum(1 for r in reached if r >= k)
        conversion = f"{sum(1 for r in reached if r >= k + 1) / entered:.0%}" if entered else "—"
        median = f"{statistics.median(stays[stage]):.1f}天" if stage in stays else "—"
        label = STAGE_LABELS[stage]
        assert f"{label}｜{len(current)}｜{deals.yuan(amount)}｜{deals.yuan(weight)}｜{conversion}｜{median}" in funnel
    won = [opps[d] for d, h in by_deal.items() if h[-1].stage == Stage.WON]
    lost = [opps[d] for d, h in by_deal.items() if h[-1].stage == Stage.LOST]
    assert f"赢单：{len(won)} 个 {deals.yuan(sum(float(o.amount) for o in won))}；" in funnel
    assert f"丢单：{len(lost)} 个 {deals.yuan(sum(float(o.amount) for o in lost))}" in funnel
    assert len(won) > 10 and len(lost) > 10  # the generator reaches every outcome


async def test_crmbot_imports_opportunities_and_targets_reporting_bad_rows(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator, tmp_path: Path
) -> None:
    from tests.test_rules_engine import _crmbot, cli_env

    office = await open_office(start_app, make_settings, wecom_sim)
    settings = office.client.app[BOT].settings
    await office.client.close()
    deals_csv = tmp_path / "商机.csv"
    deals_csv.write_text(
        "客户名称,商机名称,金额,阶段,预计成交,赢率,负责人,来源\n"
        "华为,5G基站电源,300万,报价,2026-03-31,70%,,展会\n"
        '比亚迪股份有限公司,储能柜,"1,000,000",proposal,,,张三,\n'
        "不存在的公司,X,1万,方案,,,,\n"
        "华为,坏阶段,1万,搞定,,,,\n",
        encoding="utf-8",
    )
    code, out, err = await _crmbot("import", "opportunities", str(deals_csv), env=cli_env(settings))
    assert code == 0, err
    assert "新增 added 2" in out and "拒绝 rejected 2" in out
    assert "第 4 行" in out and "不存在的公司" in out and "第 5 行" in out and "阶段无效" in out
    code, out, err = await _crmbot("import", "opportunities", str(deals_csv), env=cli_env(settings))
    assert "新增 added 0，已存在 already there 2" in out

    targets_csv = tmp_path / "targets.csv"
    targets_csv.write_text("name,month,target\n张三,2026-03,400万\n李四,2026年3月,2000000\n小明,2026-03,1\n")
    code, out, err = await _crmbot("import", "targets", str(targets_csv), env=cli_env(settings))
    assert code == 0 and "新增 added 2" in out and "同事「小明」不存在" in out, err
    bad = tmp_path / "bad.csv"
    bad.write_text("姓名,金额\n张三,1\n", encoding="utf-8")
    code, out, err = await _crmbot("import", "targets", str(bad), env=cli_env(settings))
    assert code == 2 and "缺少必填列" in err

    await start_app(settings, clock=Clock(DAY0), run_scheduler=False, run_dispatcher=False)
    power = await Opportunity.get(name="5G基站电源").select_related("customer", "owner")
    assert (power.customer.name, power.stage, float(power.amount), power.probability) == (
        "华为技术有限公司", Stage.QUOTE, 3_000_000.0, 0.7,
    )  # fmt: skip
    assert power.owner is not None and power.owner.name == "张三" and power.source == "展会"
    assert (await Opportunity.get(name="储能柜").select_related("owner")).owner.name == "张三"  # type: ignore[union-attr]
    assert (await Customer.get(name="华为技术有限公司")).stage == Stage.QUOTE
    targets = await SalesTarget.all().order_by("staff_id").values_list("month", "amount")
    assert [(m, float(a)) for m, a in targets] == [("2026-03", 4_000_000.0), ("2026-03", 2_000_000.0)]


async def test_the_reps_day_in_one_message(start_app: Any, make_settings: Any, wecom_sim: WeComSimulator) -> None:
    office = await open_office(start_app, make_settings, wecom_sim, stall_days={"intent": 3})
    huawei = await Customer.get(name="华为技术有限公司")
    zhangsan = await Staff.get(name="张三")
    await office.on(0, "zhangsan", "商机 华为 5G基站电源 300万 预计3月10日签")
    await office.on(0, "zhangsan", "商机 华为 储能柜 100万 意向阶段")
    assert "#AP" in await office.on(0, "zhangsan", "申请折扣 华为 85折 合同金额120万 年度框架协议")
    ticket = await Ticket.create(
        customer=huawei, title="液压站漏油", assignee=zhangsan, first_response_due=DAY0 + timedelta(days=1),
        created_at=DAY0,
    )  # fmt: skip
    huawei.next_followup_at = DAY0 + timedelta(days=4, hours=3)
    await huawei.save()

    day = await office.on(4, "zhangsan", "今天要跟进哪些客户")
    assert "📋 张三，今天的待办：" in day
    assert "到期跟进（1）\n· 华为技术有限公司（约定 2026-03-06 13:00）" in day
    assert f"超时未响应的工单（1）\n· #{ticket.id} 华为技术有限公司 液压站漏油" in day
    assert "您的申请审批中（1）" in day and "华为技术有限公司 8.5折" in day
    assert "14 天内预计成交的商机（1）\n· 华为技术有限公司「5G基站电源」潜在 300万，预计 2026-03-10" in day
    assert "停滞的商机（1）\n· 华为技术有限公司「储能柜」意向 4 天未动" in day
    assert "待您审批" not in day

    assert "待您审批（1）" in await office.on(4, "wangjl", "我的客户")
    assert "今天没有到期的事项" in await office.on(4, "lisi", "我的客户")

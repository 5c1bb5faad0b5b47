"""What managers look at, on a fixed clock: a February of deals, tickets and NPS answers typed into WeCom (and the
surveys and orders the models keep), then on Monday 2 March the reps and the manager ask for 健康度, 数据质量,
NPS 排名, 风险客户 and the profile card, and the rules push the weekly report once. Every number is computed by
hand in the comments next to it."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp.test_utils import TestClient

from bot.clock import Clock
from bot.keys import BOT, OUTBOX
from bot.scheduled import run_rules
from bot.types import IncomingMessage
from models.customers import Contact, Customer
from models.nps import Survey, SurveyChannel, SurveyTrigger
from models.opportunities import Opportunity
from models.orders import Order
from models.staff import Role, Staff
from tests.helpers import deliver_all, post_wecom, staff_member, text_xml
from tests.simulators.wecom import WeComSimulator

# Monday 2 March 2026, 10:00 in Shanghai: the morning the February numbers are read.
NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
SHANGHAI = ZoneInfo("Asia/Shanghai")
_msgids = itertools.count(7_000_000)


def at(month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    """A local (Shanghai) moment of 2026 as UTC."""
    return datetime(2026, month, day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


class Office:
    """王经理 manages 张三 (华为) and 李四 (比亚迪); 刘经理 manages 赵六 (宁德时代); 陈总 is the director."""

    def __init__(self, client: TestClient[Any, Any], clock: Clock, sim: WeComSimulator) -> None:
        self.client, self.clock, self.sim = client, clock, sim

    async def say(self, moment: datetime, user: str, text: str) -> str:
        """``user`` types ``text`` in WeCom at ``moment`` (the message's own time too); the bot's last answer."""
        self.clock.set(moment)
        before = len(self.sim.texts_to(user))
        xml = text_xml(user, text, next(_msgids), created=int(moment.timestamp()))
        assert (await post_wecom(self.client, xml)).status == 200
        await deliver_all(self.client.app)
        replies = self.sim.texts_to(user)[before:]
        assert replies, f"no reply to {text!r}"
        return replies[-1]

    async def rules(self, moment: datetime) -> list[Any]:
        self.clock.set(moment)
        fired = await run_rules(self.client.app[BOT], moment, full=True)
        await self.client.app[OUTBOX].drain(moment)  # what is due by then leaves; what is held waits
        return fired


async def open_office(start_app: Any, make_settings: Any, sim: WeComSimulator, **sections: Any) -> Office:
    clock = Clock(at(1, 5))
    settings = make_settings(server={"public_url": "https://crm.example.com"}, **sections)
    client = await start_app(settings, clock=clock, run_scheduler=False, run_dispatcher=False)
    wang = await staff_member(name="王经理", wecom="wangjl", role=Role.MANAGER)
    liu = await staff_member(name="刘经理", wecom="liujl", role=Role.MANAGER)
    await staff_member(name="陈总", wecom="chenzong", role=Role.DIRECTOR)
    zhang = await staff_member(name="张三", wecom="zhangsan", role=Role.REP, manager=wang)
    li = await staff_member(name="李四", wecom="lisi", role=Role.REP, manager=wang)
    zhao = await staff_member(name="赵六", wecom="zhaoliu", role=Role.REP, manager=liu)
    huawei = await Customer.create(
        name="华为技术有限公司",
        aliases=["华为"],
        owner=zhang,
        industry="通信设备",
        grade="A",
        last_followup_at=at(2, 20),
    )
    await Contact.create(customer=huawei, name="刘强", phone="13800000001")
    await Customer.create(name="比亚迪股份有限公司", aliases=["比亚迪"], owner=li, last_followup_at=at(1, 15))
    await Customer.create(name="宁德时代", owner=zhao, industry="新能源", grade="B", last_followup_at=at(3, 1))
    await client.app[BOT].understanding.refresh()
    return Office(client, clock, sim)


async def february(office: Office) -> None:
    """The month the reports read, typed in chat day by day."""
    say = office.say
    # January: 张三 wins 80万 from 华为 (the period before February).
    await say(at(1, 10), "zhangsan", "商机 华为 老项目 80万")
    await say(at(1, 20), "zhangsan", "华为老项目 赢单")
    # February's deals: 电源 and 电池 move past 潜在, 储能 and 宁德 stay there; 电池 is won (200万 from 比亚迪).
    await say(at(2, 2), "zhangsan", "商机 华为 电源 100万")
    await say(at(2, 3), "lisi", "商机 比亚迪 储能 50万")
    await say(at(2, 4), "lisi", "商机 比亚迪 电池 200万")
    await say(at(2, 5), "zhangsan", "华为电源 进入意向")
    await say(at(2, 6), "zhaoliu", "商机 宁德时代 项目 30万")
    await say(at(2, 10), "lisi", "比亚迪电池 进入报价")
    await say(at(2, 20), "lisi", "比亚迪电池 赢单")
    # Tickets: #1 answered in 1 h (due 2 h) and resolved; #2 answered after 3 h; #3 never answered.
    await say(at(2, 9), "zhangsan", "华为的设备出故障了，帮忙开个工单")
    await say(at(2, 9, 11), "zhangsan", "工单 #1 处理中")
    await say(at(2, 10, 9), "zhangsan", "工单 #1 已解决 更换了密封圈")
    await say(at(2, 11), "lisi", "比亚迪的设备坏了，开个工单")
    await say(at(2, 11, 13), "lisi", "工单 #2 处理中")
    await say(at(2, 25), "zhangsan", "华为的设备又出故障了，开个工单")
    # NPS answers of February: 华为 10 and 8 (张三), 比亚迪 5 (李四).
    for name, owner, score, day in (("华为技术有限公司", "张三", 10, 12), ("比亚迪股份有限公司", "李四", 5, 15)):
        await survey(name, owner, score, at(2, day))
    await survey("华为技术有限公司", "张三", 8, at(2, 26))
    # 比亚迪's orders: 10万 in November, 5万 in January: the last 90 days are half the 90 before.
    byd = await Customer.get(name="比亚迪股份有限公司")
    await Order.create(order_no="SO-1", customer=byd, order_date=date(2025, 11, 20), total=Decimal(100000))
    await Order.create(order_no="SO-2", customer=byd, order_date=date(2026, 1, 10), total=Decimal(50000))


async def survey(customer: str, owner: str, score: int, answered: datetime) -> None:
    row = await Customer.get(name=customer)
    await Survey.create(
        customer=row,
        owner=await Staff.get(name=owner),
        token_hash=f"{customer}-{answered.isoformat()}",
        trigger=SurveyTrigger.DEAL_WON,
        trigger_id=row.id,
        channel=SurveyChannel.REP_FORWARD,
        sent_at=answered - timedelta(days=1),
        expires_at=answered + timedelta(days=13),
        answered_at=answered,
        score=score,
        answer_source="chat",
    )


async def test_the_manager_reads_february_health_computed_by_hand(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    office = await open_office(start_app, make_settings, wecom_sim)
    await february(office)
    assert await Opportunity.filter(stage="won").count() == 2

    team = await office.say(NOW, "wangjl", "上个月团队健康度")
    # 线索转化率: February's deals 电源, 储能, 电池; 电源 and 电池 left 潜在 → 2/3.
    assert "🟢 线索转化率：67%（2/3 个商机）" in team
    # 客单价: February 200万 from 1 customer, January 80万 from 1 → (200 − 80) / 80 = +150%.
    assert "🟢 客单价增长率：+150.0%（本期 200.0万 / 上期 80.0万）" in team
    # 售后响应时效: #1 on time, #2 late, #3 unanswered past due → 1/3.
    assert "🔴 售后响应时效：33%（1/3 张工单按时首次响应）" in team
    # NPS: 10 (promoter), 8 (passive), 5 (detractor) → (1 − 1) / 3 = 0.
    assert "🟡 NPS：+0（3 份答卷）" in team
    # 活跃度: 张三 and 李四 both wrote to the bot in February, 6 messages each.
    assert "🟢 员工使用活跃度：100%（2/2 人活跃，人均 6.0 条）" in team
    # Score: (0.25·100 + 0.15·100 + 0.2·20 + 0.2·60 + 0.2·100) / 1.0 = 76.
    assert "王经理团队健康度（2026年2月）：🟡 76 分" in team

    # 张三 alone: conversion 1/1, no sale in February (no growth), SLA 1/2, NPS +50, active:
    # (0.25·100 + 0.2·20 + 0.2·100 + 0.2·100) / 0.85 = 81.2 → 81.
    mine = await office.say(NOW, "zhangsan", "上个月健康度")
    assert "我的健康度（2026年2月）：🟢 81 分" in mine
    assert "🟢 线索转化率：100%（1/1 个商机）" in mine and "⚪ 客单价增长率：暂无数据" in mine
    assert "🟢 NPS：+50（2 份答卷）" in mine
    # The director sees the company: 宁德's deal stayed at 潜在 → 2/4.
    assert "🟢 线索转化率：50%（2/4 个商机）" in await office.say(NOW, "chenzong", "上个月健康度")

    quality = await office.say(NOW, "wangjl", "数据质量 上个月")
    # 华为 has all four required fields, 比亚迪 none → 4/8.
    assert "🔴 资料完整度：50%（2 个客户，4 项必填）" in quality
    # Open deals: 电源 (华为 followed up 20 Feb, within 14 days) and 储能 (untouched since 3 Feb) → 1/2.
    assert "🔴 商机及时更新：50%（1/2 个进行中商机 14 天内有更新）" in quality
    assert "🔴 工单关闭率：33%（1/3 张工单已解决或关闭）" in quality
    assert "缺得最多：行业 1 个客户、等级 1 个客户、联系人 1 个客户" in quality

    # 团队月报 in chat: the same numbers, with the chart as a picture.
    monthly = await office.say(NOW, "wangjl", "团队月报")
    assert "王经理团队月报（2026年2月）" in monthly and "健康度：🟡 76 分" in monthly
    assert "> 🟢 线索转化率：67%（2/3 个商机）" in monthly
    assert "销售健康度排名：张三 81、李四 62" in monthly  # each rep's own score, as they read it themselves
    [picture] = wecom_sim.media_to("wangjl")
    assert picture.data.startswith(b"\x89PNG") and picture.filename.endswith(".png")

    ranking = await office.say(NOW, "wangjl", "NPS 排名 上个月")
    assert ranking.index("1. 张三：NPS +50") < ranking.index("2. 李四：NPS -100")
    # A rep's ranking is their own line only.
    assert "李四" not in await office.say(NOW, "zhangsan", "nps排名 上个月")


async def test_customer_health_on_the_card_and_at_risk_by_scope(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    office = await open_office(start_app, make_settings, wecom_sim)
    await february(office)

    # 华为 on 2 March: 10 days without contact (−15), #3 open (−10) and past due unanswered (−15), latest NPS 8
    # (−5) → 55.
    card = await office.say(NOW, "zhangsan", "客户 华为")
    assert "健康度：🔴 55 分（10 天未联系、未结工单 1、超时工单 1、NPS 8 分）" in card
    # 比亚迪: 46 days (−30), #2 in progress (−10) and answered late (−15), NPS 5 (−20), orders 5万 against 10万
    # (−15) → 10.
    mine = await office.say(NOW, "lisi", "风险客户")
    assert "🔴 比亚迪股份有限公司 10 分：46 天未联系、未结工单 1、超时工单 1、NPS 5 分、订单下滑 50%" in mine
    assert "华为" not in mine  # a rep sees only their own customers
    team = await office.say(NOW, "wangjl", "哪些客户有流失风险")
    assert "王经理团队风险客户 2 个" in team
    assert team.index("比亚迪股份有限公司［李四］ 10 分") < team.index("华为技术有限公司［张三］ 55 分")
    assert "宁德" not in team  # another team's


async def test_the_weekly_report_reaches_each_manager_once(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    office = await open_office(start_app, make_settings, wecom_sim)
    await february(office)
    before = {u: len(wecom_sim.texts_to(u)) for u in ("wangjl", "liujl", "zhangsan", "chenzong")}

    monday = at(3, 2, 9)
    fired = await office.rules(monday)
    weekly = [f for f in fired if f.rule == "weekly_report"]
    assert sorted(f.to.name for f in weekly) == ["刘经理", "王经理"]
    # Run again the same morning: nothing new; an hour after its time the week's report is no longer due.
    assert [f for f in await office.rules(monday + timedelta(minutes=5)) if f.rule == "weekly_report"] == []
    assert [f for f in await office.rules(monday + timedelta(hours=1)) if f.rule == "weekly_report"] == []
    pushed = [t for t in wecom_sim.texts_to("wangjl")[before["wangjl"] :] if "团队周报" in t]
    assert len(pushed) == 1
    assert "王经理团队周报（02-23~03-01）" in pushed[0] and "https://crm.example.com/dash/" in pushed[0]
    # Its chart reached WeCom's media/upload once and was sent to him as an image, after the text.
    [chart] = wecom_sim.media_to("wangjl")
    assert (chart.type, chart.content_type) == ("image", "image/png") and chart.data.startswith(b"\x89PNG")
    # One upload per manager's chart (the outbox sends to different people at once, in no set order).
    assert sorted(u.media_id for u in wecom_sim.uploads) == sorted(
        [u.media_id for u in wecom_sim.media_to("wangjl")] + [u.media_id for u in wecom_sim.media_to("liujl")]
    )
    for other in ("zhangsan", "chenzong"):  # reps and directors get none
        assert not [t for t in wecom_sim.texts_to(other)[before[other] :] if "周报" in t]
        assert wecom_sim.media_to(other) == []
    # The next Monday, the next week's.
    assert [f.to.name for f in await office.rules(monday + timedelta(days=7)) if f.rule == "weekly_report"] == [
        "王经理",
        "刘经理",
    ]


async def test_the_monthly_report_on_the_first_and_quiet_hours(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    office = await open_office(start_app, make_settings, wecom_sim, reports={"monthly_at": "07:30"})
    await february(office)
    # 07:30 on Sunday 1 March is in the quiet hours (20:00-09:00): recorded now, delivered at 09:00.
    fired = await office.rules(at(3, 1, 7, 30))
    assert sorted(f.to.name for f in fired if f.rule == "monthly_report") == ["刘经理", "王经理"]
    assert not [t for t in wecom_sim.texts_to("wangjl") if "团队月报" in t]
    await office.rules(at(3, 1, 9))
    [report] = [t for t in wecom_sim.texts_to("wangjl") if "团队月报" in t]
    assert "王经理团队月报（2026年2月）" in report and "健康度：🟡 76 分" in report
    assert [f for f in await office.rules(at(3, 1, 9)) if f.rule == "monthly_report"] == []


async def test_a_complaint_in_the_customer_chat_lowers_its_health(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    office = await open_office(start_app, make_settings, wecom_sim)
    await february(office)
    huawei = await Customer.get(name="华为技术有限公司")
    await Contact.filter(customer_id=huawei.id).update(external_userid="wmLiuQiang")
    bot = office.client.app[BOT]
    for n, (text, day) in enumerate((("设备又坏了，我们要投诉", 27), ("没有故障了，谢谢", 28), ("报价收到了", 28))):
        message = IncomingMessage(
            platform="wecom", msgid=f"archived-{n}", sender="wmLiuQiang", text=text, sent_at=at(2, day),
            to_bot=False, receivers=("zhangsan",),
        )  # fmt: skip
        assert await bot.archive(message)
    await deliver_all(office.client.app)

    # As before (55), and one complaint (−10); the negated one and the quote request do not count.
    card = await office.say(NOW, "zhangsan", "客户 华为")
    assert "健康度：🔴 45 分（10 天未联系、未结工单 1、超时工单 1、NPS 8 分、负面消息 1）" in card
    # Thirty days later the complaint has aged out of the window (and the rest has moved on).
    assert "负面消息" not in await office.say(NOW + timedelta(days=31), "zhangsan", "客户 华为")

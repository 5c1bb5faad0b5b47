"""Keyword rules on archived customer messages: a customer writing about a breakdown opens a ticket (or the owner
is asked whether to open one), a customer asking for a price marks a buying signal on the profile; negations,
the rep's own messages and repeated deliveries change nothing."""

from __future__ import annotations

from datetime import timedelta
from itertools import count
from typing import Any

from bot.config import KeywordSettings
from bot.keys import BOT
from bot.types import IncomingMessage
from handlers.keywords import KeywordMatcher
from models.audit import AuditLog
from models.customers import Customer
from models.staff import Staff
from models.tickets import Ticket, TicketPriority, TicketStatus
from tests.driver import ConsoleChat
from tests.helpers import deliver_all
from tests.simulators.wecom import WeComSimulator
from tests.test_customers import NOW, demo

_ids = count(1)


async def customer_writes(app: Any, external_userid: str, rep: str, text: str, msgid: str | None = None) -> bool:
    """A customer's WeCom message to a rep, as the chat archive delivers it."""
    stored = await app[BOT].archive(
        IncomingMessage(
            platform="wecom",
            msgid=msgid or f"kw{next(_ids)}",
            sender=external_userid,
            text=text,
            sent_at=NOW + timedelta(minutes=next(_ids)),
            to_bot=False,
            receivers=(rep,),
        )
    )
    await deliver_all(app)
    return stored


def test_one_pass_finds_every_word_and_honours_negations() -> None:
    matcher = KeywordMatcher(KeywordSettings())
    hits = matcher.match("设备又坏了，漏油很严重，麻烦尽快派人，顺便报个价")
    assert set(hits.ticket) == {"坏了", "漏油"} and "尽快" in hits.urgent and "报个价" in hits.buying
    assert matcher.match("设备没有故障，运行正常").ticket == []
    assert matcher.match("不是坏了，是操作问题").ticket == []
    assert matcher.match("谢谢，收到").ticket == [] and matcher.match("谢谢，收到").buying == []


async def test_a_breakdown_opens_an_urgent_ticket_once_per_problem(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo(
        start_app, make_settings, keywords={"ticket_mode": "open"}, tickets={"service_engineers": ["陈工"]}
    )
    app = client.app
    huawei = await Customer.get(name="华为技术有限公司")
    assert not await Ticket.filter(customer=huawei).exists()
    await deliver_all(client.app)
    wecom_sim.sent.clear()  # what the demo conversations triggered
    assert await customer_writes(app, "wmHW001", "zhangsan", "你们的液压站漏油了，产线停机，很急！")
    ticket = await Ticket.get(customer=huawei)
    assert (ticket.source, ticket.priority, ticket.status) == ("keyword", TicketPriority.URGENT, TicketStatus.OPEN)
    assert ticket.assignee_id == (await Staff.get(name="陈工")).id
    assert "漏油" in wecom_sim.texts_to("chengong")[0] and f"#{ticket.id}" in wecom_sim.texts_to("chengong")[0]
    assert f"已自动开工单 #{ticket.id}" in wecom_sim.texts_to("zhangsan")[0]
    log = await AuditLog.get(action="create_ticket", entity_id=str(ticket.id))
    assert log.actor_name == "系统" and log.after["source"] == "keyword"

    # The same message archived again (a re-pull) and a follow-up message do not open more tickets.
    await customer_writes(app, "wmHW001", "zhangsan", "补充一下：漏油的是2号机", msgid="kw-more")
    assert not await customer_writes(app, "wmHW001", "zhangsan", "补充一下：漏油的是2号机", msgid="kw-more")
    assert await Ticket.filter(customer=huawei).count() == 1
    await ticket.refresh_from_db()
    assert "补充一下：漏油的是2号机" in ticket.description

    # Once that ticket is resolved, a new breakdown is a new ticket.
    out = await ConsoleChat(app).say(await Staff.get(name="陈工"), f"工单 #{ticket.id} 已解决 更换了密封圈")
    assert "已解决" in out
    await customer_writes(app, "wmHW001", "zhangsan", "控制柜又报警了")
    assert await Ticket.filter(customer=huawei, source="keyword").count() == 2


async def test_in_suggest_mode_the_owner_is_asked_and_nothing_is_opened(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo(start_app, make_settings, keywords={"ticket_mode": "suggest"})
    await deliver_all(client.app)
    wecom_sim.sent.clear()  # what the demo conversations triggered
    await customer_writes(client.app, "wmHL001", "lisi", "上次那台泵不能用了，怎么处理？")
    assert not await Ticket.exists()
    [suggestion] = wecom_sim.texts_to("lisi")
    assert "客户「恒力液压有限公司」的消息提到「不能用」" in suggestion
    assert "回复「工单 恒力液压有限公司 上次那台泵不能用了，怎么处理？」" in suggestion
    # The suggested command does what it says.
    out = await ConsoleChat(client.app).say(
        await Staff.get(name="李四"), "工单 恒力液压有限公司 上次那台泵不能用了，怎么处理？"
    )
    assert "已开工单" in out


async def test_negations_and_the_reps_own_words_open_nothing(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo(start_app, make_settings, keywords={"ticket_mode": "open"})
    before = await Ticket.all().count()
    await customer_writes(client.app, "wmBYD01", "zhangsan", "设备没有故障，运行很稳定")
    # The rep writing to the customer about a breakdown is not a customer complaint.
    await client.app[BOT].archive(
        IncomingMessage(
            platform="wecom", msgid="rep-1", sender="zhangsan", text="您那边设备坏了吗？", sent_at=NOW,
            to_bot=False, receivers=("wmBYD01",),
        )
    )  # fmt: skip
    await deliver_all(client.app)
    assert await Ticket.all().count() == before


async def test_a_price_question_marks_a_buying_signal(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings, keywords={"ticket_mode": "off", "buying_signal_tag": "有购买信号"})
    await customer_writes(client.app, "wmJF001", "lisi", "2000件的话多少钱？能给个报价吗")
    jinfeng = await Customer.get(name="金风科技股份有限公司")
    signal = jinfeng.custom_fields["购买信号"]
    assert set(signal["words"].split("、")) == {"多少钱", "报价"}
    assert signal["at"].startswith("2026-11-18T10:")
    assert "有购买信号" in jinfeng.tags
    log = await AuditLog.get(action="buying_signal", entity_id=str(jinfeng.id))
    assert log.platform == "wecom" and log.before["custom_fields"]["购买信号"] is None
    out = await ConsoleChat(client.app).say(await Staff.get(name="李四"), "客户 金风")
    assert "购买信号：2026-11-18T10:" in out

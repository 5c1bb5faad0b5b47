"""Tickets from chat: opened with a priority, an SLA due time from config and an assignee by rule; moved through
处理中 → 已解决 → 关闭 with validated transitions, the first response and the revisit time recorded, audited —
through the console and WeCom."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from models.audit import AuditLog
from models.customers import Customer
from models.staff import Staff
from models.tickets import Ticket, TicketPriority, TicketStatus
from tests.driver import ConsoleChat, WeComChat
from tests.simulators.wecom import WeComSimulator
from tests.test_customers import NOW, demo


async def test_a_rep_opens_an_urgent_ticket_in_wecom_and_the_engineer_is_told(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo(start_app, make_settings, tickets={"service_engineers": ["陈工"]})
    await WeComChat(client, deliver=True).say("zhangsan", "华为的设备出故障了，紧急，帮忙开个工单", 9501)
    ticket = await Ticket.get()
    assert (ticket.priority, ticket.status, ticket.source) == (TicketPriority.URGENT, TicketStatus.OPEN, "manual")
    assert ticket.description == "设备出故障"
    assert ticket.first_response_due == NOW + timedelta(minutes=30)
    assert ticket.assignee_id == (await Staff.get(name="陈工")).id
    assert ticket.reporter_id == (await Staff.get(name="张三")).id
    [reply] = wecom_sim.texts_to("zhangsan")
    assert reply.startswith(f"已开工单 #{ticket.id}（紧急）：华为技术有限公司 — 设备出故障")
    assert "处理人：陈工，首次响应时限：2026-11-18 10:30" in reply
    [push] = wecom_sim.texts_to("chengong")
    assert f"新工单 #{ticket.id}（紧急）" in push and f"工单 #{ticket.id} 处理中" in push
    log = await AuditLog.get(action="create_ticket")
    assert log.platform == "wecom" and log.after["priority"] == "urgent"


async def test_engineers_take_turns_and_without_engineers_the_owner_is_assigned(
    start_app: Any, make_settings: Any
) -> None:
    client = await demo(start_app, make_settings, tickets={"service_engineers": ["陈工", "lisi"]})
    zhangsan = await Staff.get(name="张三")
    await ConsoleChat(client.app).say(zhangsan, "工单 华为 液压站漏油", "工单 比亚迪 控制柜报警", "工单 三一 异响")
    assignees = [t.assignee_id for t in await Ticket.all().order_by("id")]
    chengong, lisi = (await Staff.get(name="陈工")).id, (await Staff.get(name="李四")).id
    assert assignees[:2] in ([chengong, lisi], [lisi, chengong])
    assert assignees[2] == assignees[0]  # both had one open ticket: the one assigned longest ago
    first = await Ticket.get(id=(await Ticket.all().order_by("id").first()).id)  # type: ignore[union-attr]
    assert first.first_response_due == NOW + timedelta(minutes=120)


async def test_without_engineers_the_owner_gets_the_ticket(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    await ConsoleChat(client.app).say(await Staff.get(name="王经理"), "开工单 恒力液压 泵站异响")
    ticket = await Ticket.get()
    assert ticket.assignee_id == (await Staff.get(name="李四")).id
    assert ticket.priority == TicketPriority.NORMAL


async def test_a_ticket_moves_through_its_states_and_records_sla_times(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings, tickets={"service_engineers": ["陈工"]})
    await ConsoleChat(client.app).say(await Staff.get(name="张三"), "工单 华为 液压站漏油 紧急")
    ticket = await Ticket.get()
    chengong = await Staff.get(name="陈工")
    n = ticket.id
    out = await ConsoleChat(client.app).say(
        chengong, f"工单 #{n} 关闭", f"#{n} 在处理了", f"工单 #{n} 已解决 更换了密封圈"
    )
    assert "当前「待处理」，不能直接改为「已关闭」。可改为：" in out
    assert f"工单 #{n}（华为技术有限公司）：待处理 → 处理中" in out
    assert f"工单 #{n}（华为技术有限公司）：处理中 → 已解决\n说明：更换了密封圈" in out
    assert "请在 2026-11-19 10:00 前回访客户确认" in out
    await ticket.refresh_from_db()
    assert ticket.status == TicketStatus.RESOLVED
    assert ticket.first_responded_at == NOW and ticket.resolved_at == NOW
    assert ticket.revisit_due == NOW + timedelta(hours=24)
    assert ticket.resolution == "更换了密封圈"
    out = await ConsoleChat(client.app).say(chengong, f"关闭工单 #{n}", f"工单 #{n} 处理中")
    assert "已解决 → 已关闭" in out
    assert "当前「已关闭」，不能直接改为「处理中」。可改为：无（已关闭）" in out
    await ticket.refresh_from_db()
    assert ticket.status == TicketStatus.CLOSED and ticket.closed_at == NOW
    states = [
        (a.before["status"], a.after["status"]) for a in await AuditLog.filter(action="update_ticket").order_by("id")
    ]
    assert states == [("open", "in_progress"), ("in_progress", "resolved"), ("resolved", "closed")]


async def test_resolving_in_wecom_tells_the_owner(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo(start_app, make_settings, tickets={"service_engineers": ["陈工"]})
    huawei = await Customer.get(name="华为技术有限公司")
    ticket = await Ticket.create(customer=huawei, title="漏油", first_response_due=NOW, created_at=NOW,
                                 assignee=await Staff.get(name="陈工"))  # fmt: skip
    await WeComChat(client, deliver=True).say("chengong", f"{ticket.id}号工单修好了，换了液压泵", 9601)
    assert wecom_sim.texts_to("chengong")[0].endswith(
        "待处理 → 已解决\n说明：换了液压泵\n请在 2026-11-19 10:00 前回访客户确认。\n（10 分钟内回复「撤销」可撤回）"
    )
    assert "已已解决" in wecom_sim.texts_to("zhangsan")[0] or "已解决" in wecom_sim.texts_to("zhangsan")[0]


async def test_unknown_or_foreign_tickets_are_refused(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    hengli = await Customer.get(name="恒力液压有限公司")
    ticket = await Ticket.create(customer=hengli, title="异响", first_response_due=NOW, created_at=NOW,
                                 assignee=await Staff.get(name="李四"))  # fmt: skip
    out = await ConsoleChat(client.app).say(
        await Staff.get(name="张三"), "工单 #999 已解决", f"工单 #{ticket.id} 已解决"
    )
    assert "没有找到工单 #999" in out
    assert f"工单 #{ticket.id} 不是您处理或您团队的工单，无法更新。" in out
    await ticket.refresh_from_db()
    assert ticket.status == TicketStatus.OPEN

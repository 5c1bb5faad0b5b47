"""撤销: a rep takes back their own last change, whatever it was, and the database is as it was before; the reply
to every change says how; an undo is refused, with the reason, when the record changed since, when the window has
passed, when the last step cannot be taken back, or when there is nothing to undo."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bot.clock import Clock
from models.approvals import Approval, ApprovalStatus
from models.audit import AuditLog
from models.customers import Contact, Customer, Stage
from models.followups import FollowUp
from models.outbox import OutboxMessage
from models.reminders import Reminder
from models.staff import Staff
from models.tickets import Ticket, TicketPriority, TicketStatus
from tests.driver import ConsoleChat, WeComChat
from tests.simulators.wecom import WeComSimulator
from tests.test_customers import NOW, demo

HINT = "（10 分钟内回复「撤销」可撤回）"
HUAWEI = "华为技术有限公司"


async def huawei() -> Customer:
    return await Customer.get(name=HUAWEI)


async def test_a_stage_change_is_undone_and_the_undo_is_audited(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    chat = ConsoleChat(client.app)
    changed = await chat.say("张三", "阶段 华为 方案")
    assert changed.rstrip().endswith(HINT)
    assert (await huawei()).stage == Stage.PROPOSAL
    undone = await chat.say("张三", "撤销")
    assert "已撤销：华为技术有限公司 阶段 谈判 → 方案，已恢复为「谈判」" in undone
    assert HINT not in undone  # an undo is not itself undone
    assert (await huawei()).stage == Stage.NEGOTIATION
    change = await AuditLog.get(action="set_stage")
    undo = await AuditLog.get(action="undo")
    assert undo.undo_of == change.id and undo.actor_name == "张三" and undo.platform == "console"
    assert undo.before == change.after and undo.after == change.before
    assert "没有可以撤销的操作" in await chat.say("张三", "撤回上一步")
    assert (await huawei()).stage == Stage.NEGOTIATION


@pytest.mark.parametrize(
    ("text", "said", "field", "before"),
    [
        ("等级 华为 B", "等级 A → B，已恢复为「A」", "grade", "A"),
        ("标签 华为 +重点 -战略客户", "标签 战略客户 → 重点，已恢复为「战略客户」", "tags", ["战略客户"]),
        ("把华为转给李四", "负责人 张三 → 李四，已恢复为「张三」", "owner_id", "张三"),
        ("华为 行业 通信", "行业 通信设备 → 通信，已恢复为「通信设备」", "industry", "通信设备"),
        ("华为 别名 HW", "别名 华为 → 华为、HW，已恢复为「华为」", "aliases", ["华为"]),
        ("华为 合同到期 2027-03-31", "合同到期 — → 2027-03-31，已清空", "contract_end", None),
    ],
)
async def test_each_customer_change_is_undone(
    start_app: Any, make_settings: Any, text: str, said: str, field: str, before: Any
) -> None:
    client = await demo(start_app, make_settings)
    if field == "owner_id":
        before = (await Staff.get(name=before)).id
    chat = ConsoleChat(client.app)
    changed = await chat.say("张三", text)
    assert changed.rstrip().endswith(HINT), changed
    assert getattr(await huawei(), field) != before
    assert f"已撤销：{HUAWEI} {said}" in await chat.say("张三", "撤销")
    assert getattr(await huawei(), field) == before


async def test_a_custom_field_is_undone(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    chat = ConsoleChat(client.app)
    await chat.say("张三", "华为 字段 付款方式 月结60天")
    assert (await huawei()).custom_fields["付款方式"] == "月结60天"
    assert "已撤销：华为技术有限公司 付款方式 — → 月结60天，已清空" in await chat.say("张三", "撤销")
    assert "付款方式" not in (await huawei()).custom_fields


async def test_a_follow_up_is_deleted_and_the_dates_restored(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    before = await huawei()
    followups = await FollowUp.filter(customer_id=before.id).count()
    chat = ConsoleChat(client.app)
    logged = await chat.say("张三", "跟进 华为 电话沟通了报价，下周三再联系")
    assert logged.rstrip().endswith(HINT)
    assert (await huawei()).next_followup_at is not None
    assert "已撤销：华为技术有限公司 的跟进「电话沟通了报价，下周三再联系」" in await chat.say("张三", "撤销")
    after = await huawei()
    assert (after.last_followup_at, after.next_followup_at) == (before.last_followup_at, before.next_followup_at)
    assert await FollowUp.filter(customer_id=before.id).count() == followups


async def test_a_new_customer_is_removed_but_not_once_work_hangs_on_it(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    chat = ConsoleChat(client.app)
    await chat.say("张三", "新建客户 宁德时代")
    assert "已撤销：新建客户「宁德时代」，已删除这个客户" in await chat.say("张三", "撤销")
    assert not await Customer.filter(name="宁德时代").exists()
    await chat.say("张三", "新建客户 宁德时代")
    await chat.say("王经理", "跟进 宁德时代 初次拜访，聊了电池产线")
    refused = await chat.say("张三", "撤销")
    assert "「宁德时代」建档后已经有了跟进、工单、商机、联系人或消息，不能撤销建档" in refused
    assert await Customer.filter(name="宁德时代").exists()


async def test_a_ticket_is_cancelled_and_its_engineer_told(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings, tickets={"service_engineers": ["陈工"]})
    chat = ConsoleChat(client.app)
    opened = await chat.say("张三", "工单 华为 设备漏油 紧急")
    assert opened.rstrip().endswith(HINT)
    ticket = await Ticket.get(customer__name=HUAWEI)
    assert f"已撤销：工单 #{ticket.id}（设备漏油），已取消" in await chat.say("张三", "撤销")
    assert not await Ticket.filter(id=ticket.id).exists()
    chengong = await Staff.get(name="陈工")
    told = [m.payload["text"] for m in await OutboxMessage.filter(staff_id=chengong.id).order_by("id")]
    assert told[-1] == f"工单 #{ticket.id}（设备漏油）已被张三撤销，无需处理。"


async def test_a_ticket_update_is_undone_unless_someone_moved_it_on(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    ticket = await Ticket.create(
        customer=await huawei(), title="液压站漏油", priority=TicketPriority.NORMAL, first_response_due=NOW,
        created_at=NOW, description="液压站漏油",
    )  # fmt: skip
    chat = ConsoleChat(client.app)
    resolved = await chat.say("张三", f"工单 #{ticket.id} 已解决 更换了密封圈")
    assert resolved.rstrip().endswith(HINT)
    undone = await chat.say("张三", "撤销")
    assert f"已撤销：工单 #{ticket.id} 待处理 → 已解决（更换了密封圈），已恢复为「待处理」" in undone
    back = await Ticket.get(id=ticket.id)
    assert back.status == TicketStatus.OPEN and back.resolution == "" and back.resolved_at is None
    assert back.first_responded_at is None and back.revisit_due is None

    await chat.say("张三", f"工单 #{ticket.id} 处理中 已派人")
    await chat.say("王经理", f"工单 #{ticket.id} 已解决 更换了密封圈")
    refused = await chat.say("张三", "撤销")
    assert f"工单 #{ticket.id} 之后又被更新过" in refused
    assert (await Ticket.get(id=ticket.id)).status == TicketStatus.RESOLVED


async def test_a_reminder_is_cancelled(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    chat = ConsoleChat(client.app)
    assert (await chat.say("张三", "明天下午3点提醒我给华为打电话")).rstrip().endswith(HINT)
    assert await Reminder.all().count() == 1
    assert "已撤销：设置提醒：给华为打电话（2026-11-19 15:00），已取消" in await chat.say("张三", "撤销")
    assert await Reminder.all().count() == 0


async def test_a_pending_discount_request_is_withdrawn_a_decided_one_stays(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    chat = ConsoleChat(client.app)
    asked = await chat.say("张三", "申请折扣 华为 92折 合同金额120万 年度框架协议")
    assert asked.rstrip().endswith(HINT)
    undone = await chat.say("张三", "撤销")
    assert "已撤销：申请折扣 AP1，撤回折扣申请 AP1" in undone and "已通知王经理" in undone
    assert (await Approval.get(id=1)).status == ApprovalStatus.WITHDRAWN
    assert "没有可以撤销的操作" in await chat.say("张三", "撤销")  # the withdrawal was part of the undo

    await chat.say("张三", "申请折扣 华为 92折 合同金额120万 年度框架协议")
    approved = await chat.say("王经理", "同意 #AP2")
    assert HINT not in approved  # a decision cannot be taken back
    assert "您的上一步「同意折扣申请 AP2」不能撤销" in await chat.say("王经理", "撤销")
    refused = await chat.say("张三", "撤销")
    assert "不能撤销「申请折扣 AP2」：AP2 已同意，审批已有结果" in refused
    assert (await Approval.get(id=2)).status == ApprovalStatus.APPROVED


async def test_a_contact_added_or_changed_is_undone(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    chat = ConsoleChat(client.app)
    await chat.say("张三", "华为 联系人 刘强 13800000009 采购经理 决策人")
    assert "已撤销：新增联系人 刘强 采购经理 决策人 13800000009，已删除" in await chat.say("张三", "撤销")
    assert not await Contact.filter(name="刘强").exists()
    await chat.say("张三", "华为 刘工的电话改成 13900000002")
    assert (await Contact.get(name="刘工")).phone == "13900000002"
    assert "联系人 刘工：电话 13800000001 → 13900000002，已恢复" in await chat.say("张三", "撤销")
    assert (await Contact.get(name="刘工")).phone == "13800000001"


async def test_two_undos_take_back_two_changes_then_nothing(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    out = await ConsoleChat(client.app).say("张三", "阶段 华为 方案", "等级 华为 B", "撤销", "撤销上一步", "undo")
    assert out.index("等级 A → B，已恢复为「A」") < out.index("阶段 谈判 → 方案，已恢复为「谈判」")
    assert out.rstrip().endswith("没有可以撤销的操作。")
    customer = await huawei()
    assert (customer.stage, customer.grade) == (Stage.NEGOTIATION, "A")


async def test_a_change_made_since_by_someone_else_is_not_overwritten(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    chat = ConsoleChat(client.app)
    await chat.say("张三", "阶段 华为 方案")
    await chat.say("王经理", "阶段 华为 报价")
    refused = await chat.say("张三", "撤销")
    assert "不能撤销「阶段 谈判 → 方案」：「华为技术有限公司」的阶段之后又被王经理改成了「报价」" in refused
    assert (await huawei()).stage == Stage.QUOTE
    assert not await AuditLog.filter(action="undo").exists()


async def test_only_ones_own_changes_are_undone(start_app: Any, make_settings: Any) -> None:
    client = await demo(start_app, make_settings)
    chat = ConsoleChat(client.app)
    await chat.say("王经理", "阶段 华为 方案")
    assert "没有可以撤销的操作" in await chat.say("张三", "撤销")
    assert (await huawei()).stage == Stage.PROPOSAL


async def test_the_window_passes_and_can_be_configured(start_app: Any, make_settings: Any) -> None:
    clock = Clock(NOW)
    client = await demo(start_app, make_settings, clock)
    chat = ConsoleChat(client.app)
    await chat.say("张三", "阶段 华为 方案")
    clock.advance(timedelta(minutes=11))
    refused = await chat.say("张三", "撤销")
    assert "您的上一步「阶段 谈判 → 方案」已超过 10 分钟的撤销时限" in refused
    assert (await huawei()).stage == Stage.PROPOSAL


async def test_a_longer_window_from_the_config(start_app: Any, make_settings: Any) -> None:
    clock = Clock(NOW)
    client = await demo(start_app, make_settings, clock, rules={"undo_window_minutes": 30})
    chat = ConsoleChat(client.app)
    assert "（30 分钟内回复「撤销」可撤回）" in await chat.say("张三", "阶段 华为 方案")
    clock.advance(timedelta(minutes=29))
    assert "已撤销" in await chat.say("张三", "撤销")
    assert (await huawei()).stage == Stage.NEGOTIATION


async def test_the_hint_and_the_undo_in_wecom(start_app: Any, make_settings: Any, wecom_sim: WeComSimulator) -> None:
    client = await demo(start_app, make_settings)
    wecom = WeComChat(client, deliver=True)
    await wecom.say("zhangsan", "三一重工丢单了，被竞争对手抢了")
    await wecom.say("zhangsan", "撤销")
    assert wecom_sim.texts_to("zhangsan") == [
        f"「三一重工股份有限公司」阶段：潜在 → 流失。\n{HINT}",
        "已撤销：三一重工股份有限公司 阶段 潜在 → 流失，已恢复为「潜在」",
    ]
    assert (await Customer.get(name="三一重工股份有限公司")).stage == Stage.LEAD
    assert (await AuditLog.get(action="undo")).platform == "wecom"


def test_every_undoable_change_has_its_way_back() -> None:
    from bot.audit import UNDOABLE
    from handlers.history import UNDOERS

    assert set(UNDOERS) == UNDOABLE

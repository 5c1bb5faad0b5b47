"""Discount approvals on WeCom and the console: a rep asks in one line, the manager taps a template card (a signed,
encrypted ``template_card_event`` callback), the card is updated with the click's response code, the rep is told;
two-level chains, forged / replayed / foreign / double clicks, text fallback, withdrawal, reminder and escalation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bot.clock import Clock
from bot.config import ApprovalSettings
from bot.keys import BOT
from bot.scheduled import run_rules
from handlers.approvals.routing import approval_chain, levels_needed
from models.approvals import Approval, ApprovalStatus, ApprovalStep, StepStatus
from models.audit import AuditLog
from models.customers import Customer
from models.staff import Role, Staff
from tests.driver import ConsoleChat, WeComChat, click_xml
from tests.helpers import post_wecom, settle, staff_member

# 10:00 in Shanghai on a Monday: inside working hours, so no push waits for the morning.
MONDAY_10 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


async def team() -> dict[str, Staff]:
    """赵总 (director) ← 王经理 (manager) ← 张三, 李四 (reps); 管理员 (admin); 华为 belongs to 张三."""
    zhao = await staff_member(name="赵总", wecom="zhaozong", role=Role.DIRECTOR)
    wang = await staff_member(name="王经理", wecom="wangjl", role=Role.MANAGER, manager_id=zhao.id)
    zhang = await staff_member(name="张三", wecom="zhangsan", role=Role.REP, manager_id=wang.id)
    li = await staff_member(name="李四", wecom="lisi", role=Role.REP, manager_id=wang.id)
    admin = await staff_member(name="管理员", wecom="admin", role=Role.ADMIN)
    await Customer.create(name="华为技术有限公司", aliases=["华为"], owner_id=zhang.id)
    await Customer.create(name="恒力液压有限公司", aliases=["恒力液压"], owner_id=wang.id)
    return {"zhao": zhao, "wang": wang, "zhang": zhang, "li": li, "admin": admin}


async def started(
    make_settings: Any, start_app: Any, sim: Any, clock: Clock | None = None, **sections: Any
) -> tuple[WeComChat, dict[str, Staff]]:
    # No background dispatcher: each ``say`` / ``tap`` sends everything due, so what reached WeCom is known.
    client = await start_app(make_settings(**sections), clock=clock or Clock(MONDAY_10), run_dispatcher=False)
    people = await team()
    await client.app[BOT].understanding.refresh()
    return WeComChat(client, sim), people


def fields_of(card: dict[str, Any]) -> dict[str, str]:
    return {item["keyname"]: item["value"] for item in card.get("horizontal_content_list", [])}


async def audit_actions() -> list[str]:
    return [str(a) for a in await AuditLog.filter(entity="approval").order_by("id").values_list("action", flat=True)]


# ---------------------------------------------------------------- routing rules


async def test_routing_follows_the_configured_thresholds() -> None:
    rules = ApprovalSettings()
    assert levels_needed(Decimal("0.95"), Decimal("300000"), rules) == 1
    assert levels_needed(Decimal("0.9"), None, rules) == 1  # exactly 9折: the manager alone
    assert levels_needed(Decimal("0.85"), Decimal("1200000"), rules) == 2
    assert levels_needed(Decimal("0.8"), None, rules) == 2
    assert levels_needed(Decimal("0.75"), None, rules) == 3
    assert levels_needed(Decimal("0.95"), Decimal("5000000"), rules) == 2  # a big contract adds a level
    assert levels_needed(Decimal("0.75"), Decimal("9000000"), rules) == 3  # never more than three
    stricter = ApprovalSettings(director_below=0.95, admin_below=0.9, amount_levels=[1_000_000, 2_000_000])
    assert levels_needed(Decimal("0.96"), Decimal("2500000"), stricter) == 3


async def test_nobody_approves_their_own_request(make_settings: Any, start_app: Any, wecom_sim: Any) -> None:
    _, people = await started(make_settings, start_app, wecom_sim)
    by_rep = await approval_chain(people["zhang"], 3)
    assert [link.approver.name for link in by_rep] == ["王经理", "赵总", "管理员"]
    by_manager = await approval_chain(people["wang"], 2)  # the manager's own request starts one level up
    assert [link.approver.name for link in by_manager] == ["赵总", "管理员"]
    by_director = await approval_chain(people["zhao"], 1)
    assert [link.approver.name for link in by_director] == ["管理员"]
    by_admin = await approval_chain(people["admin"], 3)  # nobody above: someone else senior decides
    assert [link.approver.name for link in by_admin] == ["赵总"]


# ---------------------------------------------------------------- WeCom: one tap


async def test_a_manager_approves_with_one_tap_in_wecom(make_settings: Any, start_app: Any, wecom_sim: Any) -> None:
    wecom, _ = await started(make_settings, start_app, wecom_sim)
    await wecom.say("zhangsan", "申请折扣 华为 92折 合同金额120万 年度框架协议")

    [card] = wecom_sim.cards_to("wangjl")
    assert card["card_type"] == "button_interaction"
    assert "AP1" in card["main_title"]["title"]
    assert fields_of(card) == {
        "客户": "华为技术有限公司",
        "合同金额": "120万元",
        "折扣": "92折（优惠8%）",
        "理由": "年度框架协议",
        "申请人": "张三",
        "近期折扣": "暂无",
    }
    assert [(b["text"], b["key"]) for b in card["button_list"]] == [("同意", "同意 #AP1"), ("驳回", "驳回 #AP1")]
    assert card["task_id"].startswith("ap1-s1-")
    [ack] = wecom_sim.texts_to("zhangsan")
    assert "已提交折扣申请 AP1" in ack and "王经理（主管）" in ack

    code = await wecom.tap("wangjl", card)

    [update] = wecom_sim.card_updates()
    assert update["response_code"] == code
    assert update["userids"] == ["wangjl"]
    assert update["button"]["replace_name"] == "已同意 · 王经理 11-23 10:00"
    assert any("已审批通过" in t for t in wecom_sim.texts_to("zhangsan"))
    approval = await Approval.get(id=1)
    assert approval.status == ApprovalStatus.APPROVED
    step = await ApprovalStep.get(approval_id=1)
    assert (step.status, step.decided_via, step.card_handle) == (StepStatus.APPROVED, "card", code)
    customer = await Customer.get(name="华为技术有限公司")
    assert customer.custom_fields["最近折扣审批"].startswith("AP1 92折 120万元 已同意（王经理")
    assert await audit_actions() == ["approval.request", "approval.approve"]

    # the next request for the same customer shows this one on its card
    await wecom.say("zhangsan", "申请折扣 华为 9折 合同金额80万 追加订单")
    newest = wecom_sim.cards_to("wangjl")[-1]
    assert fields_of(newest)["近期折扣"] == "AP1 92折 已同意 11-23"


async def test_a_two_level_chain_goes_from_the_manager_to_the_director(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    wecom, _ = await started(make_settings, start_app, wecom_sim)
    await wecom.say("zhangsan", "申请折扣 华为 85折 合同金额120万 年度框架协议")
    [first] = wecom_sim.cards_to("wangjl")
    assert "第1/2级" in first["main_title"]["title"]
    assert wecom_sim.cards_to("zhaozong") == []  # the director only sees it once the manager agreed

    await wecom.tap("wangjl", first)
    [second] = wecom_sim.cards_to("zhaozong")
    assert "第2/2级" in second["main_title"]["title"]
    assert second["task_id"].startswith("ap1-s2-") and second["task_id"] != first["task_id"]
    assert any("王经理已同意" in t and "已转交赵总" in t for t in wecom_sim.texts_to("zhangsan"))
    assert (await Approval.get(id=1)).status == ApprovalStatus.PENDING

    # 王经理 taps his (now stale) card again: nothing changes, he is told it was handled
    await wecom.tap("wangjl", first)
    assert any("已处理过" in t for t in wecom_sim.texts_to("wangjl"))
    assert (await ApprovalStep.get(approval_id=1, level=2)).status == StepStatus.PENDING

    await wecom.tap("zhaozong", second, button=1)  # 驳回
    approval = await Approval.get(id=1)
    assert approval.status == ApprovalStatus.REJECTED
    assert any("赵总驳回了您的折扣申请 AP1" in t for t in wecom_sim.texts_to("zhangsan"))
    assert wecom_sim.card_updates()[-1]["button"]["replace_name"].startswith("已驳回 · 赵总")
    assert await audit_actions() == ["approval.request", "approval.approve", "approval.duplicate", "approval.reject"]


async def test_forged_replayed_and_foreign_clicks_change_nothing(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    wecom, _ = await started(make_settings, start_app, wecom_sim)
    await wecom.say("zhangsan", "申请折扣 华为 92折 合同金额120万 年度框架协议")
    await wecom.say("lisi", "申请折扣 华为 95折 合同金额10万 小单")  # 李四 cannot see 张三's customer
    assert "不是您或您团队的客户" in wecom_sim.texts_to("lisi")[-1]
    await wecom.say("wangjl", "申请折扣 恒力液压 95折 合同金额10万 小单")  # AP2, decided by 赵总
    [card] = wecom_sim.cards_to("wangjl")
    [other] = wecom_sim.cards_to("zhaozong")

    # a forged task id, and a real task id of another approval, carrying AP1's key
    await post_wecom(wecom.client, click_xml("wangjl", "同意 #AP1", "ap1-s1-deadbeef", "forged-code"))
    await post_wecom(wecom.client, click_xml("wangjl", "同意 #AP1", other["task_id"], "forged-code-2"))
    await settle(wecom.client.app)
    # somebody else taps the manager's card (forwarded or forged)
    await wecom.tap("lisi", card)
    # the requester taps the card meant for his manager
    await wecom.tap("zhangsan", card)

    assert (await ApprovalStep.get(approval_id=1)).status == StepStatus.PENDING
    assert wecom_sim.card_updates() == []
    assert sum("卡片无效" in t for t in wecom_sim.texts_to("wangjl")) == 2
    assert "您不是 AP1 的当前审批人" in wecom_sim.texts_to("lisi")[-1]
    assert "不能自己审批" in wecom_sim.texts_to("zhangsan")[-1]

    # the real click, then WeCom re-posting the very same event (same sender, time and card)
    code = wecom_sim.issue_response_code("wangjl", card["task_id"])
    event = click_xml("wangjl", "同意 #AP1", card["task_id"], code, created=int(MONDAY_10.timestamp()) + 77)
    for _ in range(3):
        assert (await post_wecom(wecom.client, event)).status == 200
    await settle(wecom.client.app)
    assert len(wecom_sim.card_updates()) == 1
    assert (await Approval.get(id=1)).status == ApprovalStatus.APPROVED
    assert sum("已审批通过" in t for t in wecom_sim.texts_to("zhangsan")) == 1
    assert (await Approval.get(id=2)).status == ApprovalStatus.PENDING
    assert (await audit_actions()).count("approval.approve") == 1


async def test_a_double_click_at_the_same_moment_approves_once(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    wecom, _ = await started(make_settings, start_app, wecom_sim)
    await wecom.say("zhangsan", "申请折扣 华为 92折 合同金额120万 年度框架协议")
    [card] = wecom_sim.cards_to("wangjl")
    base = int(MONDAY_10.timestamp())
    events = [
        click_xml(
            "wangjl", "同意 #AP1", card["task_id"], wecom_sim.issue_response_code("wangjl", card["task_id"]), base + i
        )
        for i in (1, 2)
    ]
    events.append(
        click_xml(
            "wangjl", "驳回 #AP1", card["task_id"], wecom_sim.issue_response_code("wangjl", card["task_id"]), base + 3
        )
    )
    answers = await asyncio.gather(*(post_wecom(wecom.client, e) for e in events))
    assert [a.status for a in answers] == [200, 200, 200]
    await settle(wecom.client.app)

    step = await ApprovalStep.get(approval_id=1)
    assert step.status in (StepStatus.APPROVED, StepStatus.REJECTED)
    actions = await audit_actions()
    assert actions.count("approval.approve") + actions.count("approval.reject") == 1
    assert actions.count("approval.duplicate") == 2
    told = [t for t in wecom_sim.texts_to("zhangsan") if "AP1" in t and not t.startswith("已提交")]
    assert len(told) == 1
    assert sum("已处理过" in t for t in wecom_sim.texts_to("wangjl")) == 2


async def test_typed_commands_work_on_wecom_and_update_the_card_sent(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    wecom, _ = await started(make_settings, start_app, wecom_sim)
    await wecom.say("zhangsan", "申请折扣 华为 92折 合同金额120万 年度框架协议")
    [card] = wecom_sim.cards_to("wangjl")

    await wecom.say("lisi", "同意 #AP1")
    assert "您不是 AP1 的当前审批人" in wecom_sim.texts_to("lisi")[-1]
    await wecom.say("wangjl", "驳回 #AP9 价格太低")
    assert "没有找到审批单 AP9" in wecom_sim.texts_to("wangjl")[-1]

    await wecom.say("wangjl", "驳回 #AP1 价格太低")
    assert (await Approval.get(id=1)).status == ApprovalStatus.REJECTED
    step = await ApprovalStep.get(approval_id=1)
    assert (step.comment, step.decided_via) == ("价格太低", "text")
    assert any("理由：价格太低" in t for t in wecom_sim.texts_to("zhangsan"))
    [update] = wecom_sim.card_updates()  # the card shows the decision, with the handle its sending returned
    assert update["response_code"] == card["response_code"]
    assert update["button"]["replace_name"].startswith("已驳回 · 王经理")

    await wecom.say("wangjl", "同意 #AP1")
    assert "AP1 已处理过（已驳回" in wecom_sim.texts_to("wangjl")[-1]
    assert (await Approval.get(id=1)).status == ApprovalStatus.REJECTED


async def test_a_manager_asking_for_himself_goes_to_his_director(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    wecom, _ = await started(make_settings, start_app, wecom_sim)
    await wecom.say("wangjl", "申请折扣 恒力液压 93折 合同金额30万 老客户续约")
    assert wecom_sim.cards_to("wangjl") == []
    [card] = wecom_sim.cards_to("zhaozong")
    await wecom.say("wangjl", "同意 #AP1")
    assert "不能自己审批" in wecom_sim.texts_to("wangjl")[-1]
    await wecom.tap("zhaozong", card)
    assert (await Approval.get(id=1)).status == ApprovalStatus.APPROVED


async def test_the_requester_withdraws_and_the_approver_is_told(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    wecom, _ = await started(make_settings, start_app, wecom_sim)
    await wecom.say("zhangsan", "申请折扣 华为 85折 合同金额120万 年度框架协议")
    [card] = wecom_sim.cards_to("wangjl")

    await wecom.say("lisi", "撤回 #AP1")
    assert "只有申请人可以撤回" in wecom_sim.texts_to("lisi")[-1]
    await wecom.say("zhangsan", "撤回 #AP1")
    assert "已撤回折扣申请 AP1" in wecom_sim.texts_to("zhangsan")[-1]
    assert any("张三已撤回折扣申请 AP1" in t for t in wecom_sim.texts_to("wangjl"))
    [update] = wecom_sim.card_updates()
    assert update["response_code"] == card["response_code"]
    assert update["button"]["replace_name"].startswith("已撤回 · 张三")
    approval = await Approval.get(id=1)
    assert approval.status == ApprovalStatus.WITHDRAWN
    assert {s.status for s in await ApprovalStep.filter(approval_id=1)} == {StepStatus.CANCELLED}

    await wecom.tap("wangjl", card)  # too late: nothing changes
    assert "已处理过（已撤回" in wecom_sim.texts_to("wangjl")[-1]
    assert (await Approval.get(id=1)).status == ApprovalStatus.WITHDRAWN
    await wecom.say("zhangsan", "撤回 #AP1")
    assert "AP1 已结束（已撤回），无法撤回" in wecom_sim.texts_to("zhangsan")[-1]
    assert (await audit_actions())[:2] == ["approval.request", "approval.withdraw"]


# ---------------------------------------------------------------- reminders and escalation


async def test_a_silent_approver_is_reminded_once_then_the_request_escalates_once(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    clock = Clock(MONDAY_10)
    wecom, people = await started(make_settings, start_app, wecom_sim, clock=clock, rules={"approval_remind_hours": 4})
    bot = wecom.client.app[BOT]
    await wecom.say("zhangsan", "申请折扣 华为 92折 合同金额120万 年度框架协议")
    [card] = wecom_sim.cards_to("wangjl")

    assert await run_rules(bot, MONDAY_10 + timedelta(hours=3)) == []
    later = MONDAY_10 + timedelta(hours=5)  # 15:00
    clock.set(later)
    [remind] = [f for f in await run_rules(bot, later) if f.rule.startswith("approval")]
    assert (remind.rule, remind.to.name) == ("approval_remind", "王经理")
    assert "同意 #AP1" in remind.text
    assert [f for f in await run_rules(bot, later + timedelta(minutes=5)) if f.rule.startswith("approval")] == []
    await settle(wecom.client.app)
    assert sum("已等待您审批超过 4 小时" in t for t in wecom_sim.texts_to("wangjl")) == 1

    day_later = MONDAY_10 + timedelta(hours=25)  # Tuesday 11:00
    clock.set(day_later)
    [escalation] = [f for f in await run_rules(bot, day_later) if f.rule.startswith("approval")]
    assert (escalation.rule, escalation.to.name) == ("approval_escalate", "赵总")
    assert [f for f in await run_rules(bot, day_later + timedelta(minutes=1)) if f.rule == "approval_escalate"] == []
    await settle(wecom.client.app)

    [new_card] = wecom_sim.cards_to("zhaozong")
    assert "AP1" in new_card["main_title"]["title"] and "第2/2级" in new_card["main_title"]["title"]
    assert any("已升级由您审批" in t for t in wecom_sim.texts_to("zhaozong"))
    assert any("已升级给赵总审批" in t for t in wecom_sim.texts_to("zhangsan"))
    [update] = wecom_sim.card_updates()  # 王经理's card now says it moved on
    assert update["response_code"] == card["response_code"] and "转交赵总" in update["button"]["replace_name"]
    steps = await ApprovalStep.filter(approval_id=1).order_by("level")
    assert [(s.level, s.status, s.approver_id) for s in steps] == [
        (1, StepStatus.ESCALATED, people["wang"].id),
        (2, StepStatus.PENDING, people["zhao"].id),
    ]

    await wecom.tap("wangjl", card)  # the old card no longer decides anything
    assert "因超时已转交赵总审批" in wecom_sim.texts_to("wangjl")[-1]
    await wecom.tap("zhaozong", new_card)
    assert (await Approval.get(id=1)).status == ApprovalStatus.APPROVED
    assert (await audit_actions()) == [
        "approval.request",
        "approval.escalate",
        "approval.duplicate",
        "approval.approve",
    ]


async def test_escalation_moves_to_the_next_level_of_a_chain(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    clock = Clock(MONDAY_10)
    wecom, _ = await started(make_settings, start_app, wecom_sim, clock=clock)
    await wecom.say("zhangsan", "申请折扣 华为 75折 合同金额120万 战略合作")  # 王经理 → 赵总 → 管理员
    later = MONDAY_10 + timedelta(hours=25)
    clock.set(later)
    await run_rules(wecom.client.app[BOT], later)
    await settle(wecom.client.app)
    [card] = wecom_sim.cards_to("zhaozong")
    assert "第2/3级" in card["main_title"]["title"]
    assert [s.status for s in await ApprovalStep.filter(approval_id=1).order_by("level")] == [
        StepStatus.ESCALATED,
        StepStatus.PENDING,
        StepStatus.WAITING,
    ]


# ---------------------------------------------------------------- console


async def test_the_console_works_with_typed_commands(make_settings: Any, start_app: Any, wecom_sim: Any) -> None:
    wecom, people = await started(make_settings, start_app, wecom_sim, wecom={"corp_id": ""})  # console only
    console = ConsoleChat(wecom.client.app)

    assert "已提交折扣申请 AP1" in await console.say(people["zhang"], "申请折扣 华为 92折 合同金额120万 年度框架协议")

    shown = await console.say(people["wang"], "同意 #AP1")
    assert "折扣审批 AP1" in shown and "回复「同意 #AP1」" in shown  # the card, rendered as text, waited for him
    assert "已同意 AP1" in shown
    # the console is one terminal: pushes to 张三 (still registered there) print on it too
    assert "您的折扣申请 AP1（华为技术有限公司 92折 合同金额120万元）已审批通过" in shown
    assert (await Approval.get(id=1)).status == ApprovalStatus.APPROVED


async def test_free_phrasing_and_incomplete_requests(make_settings: Any, start_app: Any, wecom_sim: Any) -> None:
    wecom, _ = await started(make_settings, start_app, wecom_sim)
    await wecom.say("zhangsan", "申请折扣 华伟 9折 合同金额10万")
    assert "没有找到客户「华伟」" in wecom_sim.texts_to("zhangsan")[-1]
    await wecom.say("zhangsan", "申请折扣 华为 合同金额10万")
    assert "请告诉我申请的折扣" in wecom_sim.texts_to("zhangsan")[-1]
    assert await Approval.all().count() == 0 and wecom_sim.cards_to("wangjl") == []

    await wecom.say("zhangsan", "华为想要85折，合同120万，帮我申请一下")
    [card] = wecom_sim.cards_to("wangjl")
    assert fields_of(card)["折扣"] == "85折（优惠15%）" and fields_of(card)["合同金额"] == "120万元"
    approval = await Approval.get(id=1)
    assert (approval.discount, approval.amount) == (Decimal("0.85"), Decimal("1200000"))
    assert approval.levels == 2

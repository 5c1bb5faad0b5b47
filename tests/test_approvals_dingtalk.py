"""Discount approvals on DingTalk: the rep asks through a signed robot callback, each approver gets an ActionCard
whose buttons are ``dtmd://dingtalkclient/sendMessage`` links, and a tap comes back as the tapper's own signed
message ``同意 #AP1``; only the current approver's tap counts, once, someone else's changes nothing, and the rep is
told at every step."""

from __future__ import annotations

from typing import Any

from bot.demo import load_demo
from bot.keys import BOT
from models.approvals import Approval, ApprovalStatus, ApprovalStep, StepStatus
from models.audit import AuditLog
from models.customers import Customer
from models.staff import Role
from tests.driver import DingTalkChat, tapped
from tests.helpers import staff_member
from tests.simulators.dingtalk import Delivery, DingTalkSimulator


async def started(make_settings: Any, start_app: Any, sim: Any) -> DingTalkChat:
    settings = make_settings(dingtalk=sim.settings())
    client = await start_app(settings, clock=sim.clock, run_dispatcher=False, run_scheduler=False)
    zhao = await staff_member(name="赵总", dingtalk="ding_zhaozong", role=Role.DIRECTOR)
    wang = await staff_member(name="王经理", dingtalk="ding_wangjl", role=Role.MANAGER, manager_id=zhao.id)
    zhang = await staff_member(name="张三", dingtalk="ding_zhangsan", role=Role.REP, manager_id=wang.id)
    await staff_member(name="李四", dingtalk="ding_lisi", role=Role.REP, manager_id=wang.id)
    await Customer.create(name="华为技术有限公司", aliases=["华为"], owner_id=zhang.id)
    await client.app[BOT].understanding.refresh()
    return DingTalkChat(client, sim)


def last_card(dingtalk: DingTalkChat, user: str) -> Delivery:
    cards = dingtalk.cards_to(user)
    assert cards, f"no card reached {user}"
    return cards[-1]


async def test_a_manager_approves_with_one_tap_in_dingtalk(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    dingtalk = await started(make_settings, start_app, dingtalk_sim)
    await dingtalk.say("ding_zhangsan", "申请折扣 华为 92折 合同金额120万 年度框架协议")
    assert "已提交折扣申请 AP1" in dingtalk.sent_to("ding_zhangsan")[-1]

    card = last_card(dingtalk, "ding_wangjl")
    assert "折扣审批 AP1" in card.content["title"]
    for shown in ("华为技术有限公司", "120万元", "92折", "年度框架协议", "张三", "近期折扣"):
        assert shown in card.content["text"]
    assert [(title, tapped(url)) for title, url in card.buttons] == [("同意", "同意 #AP1"), ("驳回", "驳回 #AP1")]

    # 李四 got hold of the link and taps it: it arrives as his message and changes nothing
    await dingtalk.tap("ding_lisi", card)
    assert "您不是 AP1 的当前审批人" in dingtalk.sent_to("ding_lisi")[-1]
    assert (await ApprovalStep.get(approval_id=1)).status == StepStatus.PENDING

    await dingtalk.tap("ding_wangjl", card)
    assert "已同意 AP1" in dingtalk.sent_to("ding_wangjl")[-1]
    assert any("已审批通过" in t for t in dingtalk.sent_to("ding_zhangsan"))
    assert (await Approval.get(id=1)).status == ApprovalStatus.APPROVED

    # a second tap on the same card
    await dingtalk.tap("ding_wangjl", card, 1)
    assert "已处理过" in dingtalk.sent_to("ding_wangjl")[-1]
    assert (await Approval.get(id=1)).status == ApprovalStatus.APPROVED
    actions = [str(a) for a in await AuditLog.filter(entity="approval").values_list("action", flat=True)]
    assert actions.count("approval.approve") == 1 and actions.count("approval.reject") == 0


async def test_a_two_level_chain_and_a_rejection_in_dingtalk(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    dingtalk = await started(make_settings, start_app, dingtalk_sim)
    await dingtalk.say("ding_zhangsan", "申请折扣 华为 85折 合同金额120万 年度框架协议")
    first = last_card(dingtalk, "ding_wangjl")
    assert [d for d in dingtalk_sim.delivered_to("ding_zhaozong") if d.buttons] == []

    await dingtalk.tap("ding_wangjl", first)
    assert any("已转交赵总" in t for t in dingtalk.sent_to("ding_zhangsan"))
    second = last_card(dingtalk, "ding_zhaozong")
    assert "第2/2级" in second.content["title"]

    await dingtalk.say("ding_zhaozong", "驳回 #AP1 价格太低，最多9折")
    approval = await Approval.get(id=1)
    assert approval.status == ApprovalStatus.REJECTED
    assert any("赵总驳回了您的折扣申请 AP1" in t and "价格太低" in t for t in dingtalk.sent_to("ding_zhangsan"))
    customer = await Customer.get(name="华为技术有限公司")
    assert "已驳回" in customer.custom_fields["最近折扣审批"]

    await dingtalk.say("ding_zhangsan", "撤回 #AP1")  # too late to withdraw
    assert "无法撤回" in dingtalk.sent_to("ding_zhangsan")[-1]


def action_card_to(sim: DingTalkSimulator, user_id: str) -> Delivery:
    [card] = [d for d in sim.delivered_to(user_id) if d.msgtype.startswith("sampleActionCard")]
    return card


async def test_a_discount_is_approved_with_one_tap_per_approver_on_dingtalk_cards(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    settings = make_settings(wecom={"corp_id": ""}, dingtalk=dingtalk_sim.settings())
    client = await start_app(settings, clock=dingtalk_sim.clock, run_dispatcher=False, run_scheduler=False)
    await load_demo(client.app)
    sim, dingtalk = dingtalk_sim, DingTalkChat(client, dingtalk_sim)

    await dingtalk.say("ding_zhangsan", "申请折扣 华为 85折 合同金额120万 年度框架协议", nick="张三")
    card = action_card_to(sim, "ding_wangjl")
    assert card.via == "batch_send" and card.msgtype == "sampleActionCard2"
    approve, reject = (tapped(url) for _, url in card.buttons)
    assert reject.startswith("驳回 #")
    code = approve.removeprefix("同意 #")
    assert "华为技术有限公司" in card.content["text"]

    # 李四 is not the approver: the same tap from him changes nothing
    await dingtalk.tap("ding_lisi", card, nick="李四")
    assert not [d for d in sim.delivered_to("ding_zhaozong") if d.msgtype.startswith("sampleActionCard")]
    assert len(sim.delivered_to("ding_lisi")) == 1  # he is told why

    await dingtalk.tap("ding_wangjl", card, nick="王经理")  # 王经理 taps 同意
    second = action_card_to(sim, "ding_zhaozong")
    assert tapped(second.buttons[0][1]) == f"同意 #{code}"

    await dingtalk.tap("ding_zhaozong", second, nick="赵总")
    approval = await Approval.get(id=int(code.removeprefix("AP")))
    assert approval.status == ApprovalStatus.APPROVED
    told = sim.delivered_to("ding_zhangsan")
    assert told[-1].via == "batch_send" and code in told[-1].text  # a push: 张三's own session is not used

    # a second tap on the old card is answered but decides nothing again
    await dingtalk.tap("ding_zhaozong", second, nick="赵总")
    assert len(sim.delivered_to("ding_zhangsan")) == len(told)
    assert (await Approval.get(id=approval.id)).status == ApprovalStatus.APPROVED

"""Discount approvals on DingTalk: the rep asks through a signed robot callback, the manager gets an ActionCard
whose buttons are ``dtmd://dingtalkclient/sendMessage`` links, and a tap comes back as the tapper's own signed
message ``同意 #AP1``; only the current approver's tap counts, once."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from bot.keys import BOT
from models.approvals import Approval, ApprovalStatus, ApprovalStep, StepStatus
from models.audit import AuditLog
from models.customers import Customer
from models.staff import Role
from tests.helpers import settle, staff_member


def tapped(url: str) -> str:
    """What the DingTalk client sends as the tapper's message when a dtmd button link is opened."""
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("dtmd", "dingtalkclient", "/sendMessage")
    [content] = parse_qs(parts.query)["content"]
    return content


async def started(make_settings: Any, start_app: Any, sim: Any) -> Any:
    settings = make_settings(dingtalk=sim.settings())
    client = await start_app(settings, clock=sim.clock, run_dispatcher=False, run_scheduler=False)
    zhao = await staff_member(name="赵总", dingtalk="ding_zhaozong", role=Role.DIRECTOR)
    wang = await staff_member(name="王经理", dingtalk="ding_wangjl", role=Role.MANAGER, manager_id=zhao.id)
    zhang = await staff_member(name="张三", dingtalk="ding_zhangsan", role=Role.REP, manager_id=wang.id)
    await staff_member(name="李四", dingtalk="ding_lisi", role=Role.REP, manager_id=wang.id)
    await Customer.create(name="华为技术有限公司", aliases=["华为"], owner_id=zhang.id)
    await client.app[BOT].understanding.refresh()
    return client


async def say(client: Any, sim: Any, user: str, text: str) -> None:
    assert (await sim.deliver(client, user, text)).status == 200
    await settle(client.app)


def last_card(sim: Any, user: str) -> Any:
    cards = [d for d in sim.delivered_to(user) if d.buttons]
    assert cards, f"no card reached {user}"
    return cards[-1]


async def test_a_manager_approves_with_one_tap_in_dingtalk(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await started(make_settings, start_app, dingtalk_sim)
    await say(client, dingtalk_sim, "ding_zhangsan", "申请折扣 华为 92折 合同金额120万 年度框架协议")
    assert "已提交折扣申请 AP1" in dingtalk_sim.texts_to("ding_zhangsan")[-1]

    card = last_card(dingtalk_sim, "ding_wangjl")
    assert "折扣审批 AP1" in card.content["title"]
    for shown in ("华为技术有限公司", "120万元", "92折", "年度框架协议", "张三", "近期折扣"):
        assert shown in card.content["text"]
    assert [(title, tapped(url)) for title, url in card.buttons] == [("同意", "同意 #AP1"), ("驳回", "驳回 #AP1")]

    # 李四 got hold of the link and taps it: it arrives as his message and changes nothing
    await say(client, dingtalk_sim, "ding_lisi", tapped(card.buttons[0][1]))
    assert "您不是 AP1 的当前审批人" in dingtalk_sim.texts_to("ding_lisi")[-1]
    assert (await ApprovalStep.get(approval_id=1)).status == StepStatus.PENDING

    await say(client, dingtalk_sim, "ding_wangjl", tapped(card.buttons[0][1]))
    assert "已同意 AP1" in dingtalk_sim.texts_to("ding_wangjl")[-1]
    assert any("已审批通过" in t for t in dingtalk_sim.texts_to("ding_zhangsan"))
    assert (await Approval.get(id=1)).status == ApprovalStatus.APPROVED

    # a second tap on the same card
    await say(client, dingtalk_sim, "ding_wangjl", tapped(card.buttons[1][1]))
    assert "已处理过" in dingtalk_sim.texts_to("ding_wangjl")[-1]
    assert (await Approval.get(id=1)).status == ApprovalStatus.APPROVED
    actions = [str(a) for a in await AuditLog.filter(entity="approval").values_list("action", flat=True)]
    assert actions.count("approval.approve") == 1 and actions.count("approval.reject") == 0


async def test_a_two_level_chain_and_a_rejection_in_dingtalk(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await started(make_settings, start_app, dingtalk_sim)
    await say(client, dingtalk_sim, "ding_zhangsan", "申请折扣 华为 85折 合同金额120万 年度框架协议")
    first = last_card(dingtalk_sim, "ding_wangjl")
    assert [d for d in dingtalk_sim.delivered_to("ding_zhaozong") if d.buttons] == []

    await say(client, dingtalk_sim, "ding_wangjl", tapped(first.buttons[0][1]))
    assert any("已转交赵总" in t for t in dingtalk_sim.texts_to("ding_zhangsan"))
    second = last_card(dingtalk_sim, "ding_zhaozong")
    assert "第2/2级" in second.content["title"]

    await say(client, dingtalk_sim, "ding_zhaozong", "驳回 #AP1 价格太低，最多9折")
    approval = await Approval.get(id=1)
    assert approval.status == ApprovalStatus.REJECTED
    assert any("赵总驳回了您的折扣申请 AP1" in t and "价格太低" in t for t in dingtalk_sim.texts_to("ding_zhangsan"))
    customer = await Customer.get(name="华为技术有限公司")
    assert "已驳回" in customer.custom_fields["最近折扣审批"]

    await say(client, dingtalk_sim, "ding_zhangsan", "撤回 #AP1")  # too late to withdraw
    assert "无法撤回" in dingtalk_sim.texts_to("ding_zhangsan")[-1]

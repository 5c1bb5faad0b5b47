"""A discount approval told entirely in DingTalk: the rep asks, each approver gets an ActionCard and taps 同意
(the tap arrives as the approver's own text), someone else's tap changes nothing, and the rep is told."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from bot.demo import load_demo
from models.approvals import Approval, ApprovalStatus
from tests.helpers import settle
from tests.simulators.dingtalk import Delivery, DingTalkSimulator


def tapped(url: str) -> str:
    """What the DingTalk client sends as the tapper's message when a dtmd button link is opened."""
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("dtmd", "dingtalkclient", "/sendMessage")
    [content] = parse_qs(parts.query)["content"]
    return content


def card_to(sim: DingTalkSimulator, user_id: str) -> Delivery:
    [card] = [d for d in sim.delivered_to(user_id) if d.msgtype.startswith("sampleActionCard")]
    return card


async def test_a_discount_is_approved_with_one_tap_per_approver_on_dingtalk_cards(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    settings = make_settings(wecom={"corp_id": ""}, dingtalk=dingtalk_sim.settings())
    client = await start_app(settings, clock=dingtalk_sim.clock, run_dispatcher=False, run_scheduler=False)
    await load_demo(client.app)
    sim = dingtalk_sim

    await sim.deliver(client, "ding_zhangsan", "申请折扣 华为 85折 合同金额120万 年度框架协议", nick="张三")
    await settle(client.app)
    card = card_to(sim, "ding_wangjl")
    assert card.via == "batch_send" and card.msgtype == "sampleActionCard2"
    approve, reject = (tapped(url) for _, url in card.buttons)
    assert reject.startswith("驳回 #")
    code = approve.removeprefix("同意 #")
    assert "华为技术有限公司" in card.content["text"]

    # 李四 is not the approver: the same tap from him changes nothing
    await sim.deliver(client, "ding_lisi", approve, nick="李四")
    await settle(client.app)
    assert not [d for d in sim.delivered_to("ding_zhaozong") if d.msgtype.startswith("sampleActionCard")]
    assert len(sim.delivered_to("ding_lisi")) == 1  # he is told why

    await sim.deliver(client, "ding_wangjl", approve, nick="王经理")  # 王经理 taps 同意
    await settle(client.app)
    second = card_to(sim, "ding_zhaozong")
    assert tapped(second.buttons[0][1]) == f"同意 #{code}"

    await sim.deliver(client, "ding_zhaozong", tapped(second.buttons[0][1]), nick="赵总")
    await settle(client.app)
    approval = await Approval.get(id=int(code.removeprefix("AP")))
    assert approval.status == ApprovalStatus.APPROVED
    told = sim.delivered_to("ding_zhangsan")
    assert told[-1].via == "batch_send" and code in told[-1].text  # a push: 张三's own session is not used

    # a second tap on the old card is answered but decides nothing again
    await sim.deliver(client, "ding_zhaozong", tapped(second.buttons[0][1]), nick="赵总")
    await settle(client.app)
    assert len(sim.delivered_to("ding_zhangsan")) == len(told)
    assert (await Approval.get(id=approval.id)).status == ApprovalStatus.APPROVED

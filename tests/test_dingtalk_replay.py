"""DingTalk's callback signature covers a timestamp, not the body: a header pair captured from one genuine request
must not carry another body. A forged approval and a forged transfer ride on a captured pair and change nothing;
the genuine request sent again is a harmless duplicate; the body must name our robot; a sessionWebhook that
could lead a reply elsewhere is ignored and the reply goes by batchSend; accepted pairs are swept once expired."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from bot.keys import BOT
from models.approvals import Approval, ApprovalStatus, ApprovalStep, StepStatus
from models.audit import AuditLog
from models.customers import Customer
from models.messages import Message
from models.seen import SeenSignature
from models.staff import Role
from tests.driver import DingTalkChat
from tests.helpers import settle, staff_member
from tests.simulators.dingtalk import BATCH_SEND, WEBHOOK, DingTalkSimulator


async def started(make_settings: Any, start_app: Any, sim: DingTalkSimulator, **dingtalk: Any) -> DingTalkChat:
    settings = make_settings(dingtalk={**sim.settings(), **dingtalk})
    client = await start_app(settings, clock=sim.clock, run_dispatcher=False, run_scheduler=False)
    wang = await staff_member(name="王经理", dingtalk="ding_wangjl", role=Role.MANAGER)
    zhang = await staff_member(name="张三", dingtalk="ding_zhangsan", role=Role.REP, manager_id=wang.id)
    li = await staff_member(name="李四", dingtalk="ding_lisi", role=Role.REP, manager_id=wang.id)
    await Customer.create(name="华为技术有限公司", aliases=["华为"], owner_id=zhang.id)
    await Customer.create(name="比亚迪股份有限公司", aliases=["比亚迪"], owner_id=li.id)
    await client.app[BOT].understanding.refresh()
    return DingTalkChat(client, sim)


async def post(dingtalk: DingTalkChat, headers: dict[str, str], body: dict[str, Any]) -> int:
    resp = await dingtalk.client.post("/dingtalk/callback", data=json.dumps(body, ensure_ascii=False), headers=headers)
    await settle(dingtalk.client.app)
    return resp.status


async def test_a_captured_header_pair_carries_no_forged_approval_or_transfer(
    make_settings: Any, start_app: Any, dingtalk_sim: DingTalkSimulator
) -> None:
    dingtalk = await started(make_settings, start_app, dingtalk_sim)
    # 张三 asks for a discount; someone on the path keeps the request's headers
    headers, genuine = dingtalk_sim.callback("ding_zhangsan", "申请折扣 华为 92折 合同金额120万 年度框架协议")
    assert await post(dingtalk, headers, json.loads(genuine)) == 200
    assert "已提交折扣申请 AP1" in dingtalk.sent_to("ding_zhangsan")[-1]
    told_manager = len(dingtalk.sent_to("ding_wangjl"))

    # ... and replays them within the hour with bodies of their own, as the manager
    approve = dingtalk_sim.message("ding_wangjl", "同意 #AP1")
    transfer = dingtalk_sim.message("ding_wangjl", "把比亚迪转给张三跟进")
    for forged in (approve, transfer):
        assert await post(dingtalk, headers, forged) == 403

    assert (await ApprovalStep.get(approval_id=1)).status == StepStatus.PENDING
    assert (await Approval.get(id=1)).status == ApprovalStatus.PENDING
    byd = await Customer.get(name="比亚迪股份有限公司").prefetch_related("owner")
    assert byd.owner.name == "李四"
    assert not await AuditLog.filter(action__in=["approval.approve", "transfer"]).exists()
    assert await Message.filter(msgid__in=[approve["msgId"], transfer["msgId"]]).count() == 0
    assert len(dingtalk.sent_to("ding_wangjl")) == told_manager

    # the manager's own, freshly signed tap still works
    await dingtalk.say("ding_wangjl", "同意 #AP1")
    assert (await Approval.get(id=1)).status == ApprovalStatus.APPROVED


async def test_the_genuine_request_sent_again_is_handled_once(
    make_settings: Any, start_app: Any, dingtalk_sim: DingTalkSimulator
) -> None:
    dingtalk = await started(make_settings, start_app, dingtalk_sim)
    headers, raw = dingtalk_sim.callback("ding_zhangsan", "帮助")
    body = json.loads(raw)
    assert await post(dingtalk, headers, body) == 200
    assert await post(dingtalk, headers, body) == 200  # a duplicate: acknowledged, not handled again
    assert await Message.filter(msgid=body["msgId"]).count() == 1
    assert len(dingtalk_sim.delivered_to("ding_zhangsan")) == 1
    assert await SeenSignature.all().count() == 1


async def test_a_body_for_another_robot_is_forbidden(
    make_settings: Any, start_app: Any, dingtalk_sim: DingTalkSimulator
) -> None:
    dingtalk = await started(make_settings, start_app, dingtalk_sim, chatbot_user_id="$:LWCP_v1:$robot")
    for field, value in (("robotCode", "another-robot"), ("chatbotUserId", "$:LWCP_v1:$other"), ("robotCode", None)):
        headers = dingtalk_sim.signed_headers()
        assert await post(dingtalk, headers, {**dingtalk_sim.message("ding_zhangsan", "帮助"), field: value}) == 403
    assert await Message.all().count() == 0
    assert await SeenSignature.all().count() == 0
    await dingtalk.say("ding_zhangsan", "帮助")  # our robot, as configured
    assert await Message.all().count() == 1


async def test_a_session_webhook_that_could_lead_elsewhere_is_ignored(
    make_settings: Any, start_app: Any, dingtalk_sim: DingTalkSimulator
) -> None:
    dingtalk = await started(make_settings, start_app, dingtalk_sim)
    base = dingtalk_sim.base_url
    host, port = base.removeprefix("http://").split(":")
    hostile = [
        f"{base}/robot/../v1.0/robot/oToMessages/batchSend",  # the right prefix, then up and out
        f"{base}/robot/./sendBySession/x",
        f"{base}/robot/%2e%2e/v1.0/robot/oToMessages/batchSend",
        f"{base}/robot%2F..%2Fv1.0",
        f"{base}/robot/sendBySession\\..\\x",
        f"http://someone@{host}:{port}/robot/sendBySession/x",  # userinfo
        f"http://{host}:{int(port) + 1}/robot/sendBySession/x",  # another port
        f"https://{host}:{port}/robot/sendBySession/x",  # another scheme
        f"http://{host}.evil.example:{port}/robot/sendBySession/x",
        f"{base}/robot/sendBySession/x#fragment",
        f"{base}/robot/send BySession/x",
    ]
    for url in hostile:
        body = {**dingtalk_sim.message("ding_zhangsan", "帮助"), "sessionWebhook": url}
        assert await post(dingtalk, dingtalk_sim.signed_headers(), body) == 200, url
    assert [d.via for d in dingtalk_sim.delivered_to("ding_zhangsan")] == ["batch_send"] * len(hostile)
    assert not [r for r in dingtalk_sim.requests if r.endpoint == WEBHOOK]
    assert [r.endpoint for r in dingtalk_sim.requests if r.endpoint == BATCH_SEND] == [BATCH_SEND] * len(hostile)
    assert not [message.payload for message in await Message.all() if "../" in json.dumps(message.payload)]

    await dingtalk.say("ding_zhangsan", "帮助")  # DingTalk's own webhook is still used
    assert dingtalk_sim.delivered_to("ding_zhangsan")[-1].via == "session_webhook"


async def test_accepted_pairs_are_swept_once_their_window_has_passed(
    make_settings: Any, start_app: Any, dingtalk_sim: DingTalkSimulator
) -> None:
    dingtalk = await started(make_settings, start_app, dingtalk_sim, callback_window_seconds=600)
    await dingtalk.say("ding_zhangsan", "帮助")
    [first] = await SeenSignature.all()
    dingtalk_sim.clock.advance(timedelta(minutes=30))  # the window (10 min), the clock skew allowance (5 min), more
    await dingtalk.say("ding_zhangsan", "帮助")
    [second] = await SeenSignature.all()
    assert second.key != first.key
    assert second.expires_at > dingtalk_sim.clock.now()

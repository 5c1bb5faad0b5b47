"""DingTalk end to end: signed robot callbacks into the app, the real database, and what reaches people at the
DingTalk simulator — by sessionWebhook while the conversation is fresh, by batchSend otherwise, through token
expiry, throttling and outages, and approval cards whose buttons come back as the tapper's own text."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bot.channels import Address
from bot.dispatch import NOT_REGISTERED
from bot.keys import BOT, OUTBOX
from bot.types import Button, Card, CardUpdate, Reply
from models.messages import Message
from models.outbox import OutboxMessage, OutboxStatus
from models.staff import Role, Staff
from tests.helpers import account_of, settle, staff_member
from tests.simulators.dingtalk import BATCH_SEND, TOKEN, WEBHOOK


async def start(make_settings: Any, start_app: Any, sim: Any, **dingtalk: Any) -> Any:
    settings = make_settings(dingtalk={**sim.settings(), **dingtalk})
    return await start_app(settings, clock=sim.clock, run_dispatcher=False, run_scheduler=False)


async def staff(*pairs: tuple[str, str], role: Role = Role.REP) -> list[Staff]:
    return [await staff_member(name=name, dingtalk=uid, role=role) for uid, name in pairs]


async def deliver_everything(app: Any, sim: Any, step: timedelta = timedelta(minutes=2), rounds: int = 20) -> None:
    """Let time pass (on the shared pinned clock) until the outbox has nothing left to send."""
    for _ in range(rounds):
        await settle(app)
        if not await OutboxMessage.filter(status__in=[OutboxStatus.PENDING, OutboxStatus.SENDING]).exists():
            return
        sim.clock.advance(step)
    raise AssertionError("outbox still has undelivered rows")


def endpoints(sim: Any) -> list[str]:
    return [r.endpoint for r in sim.requests]


async def test_a_rep_asks_in_dingtalk_and_the_answer_comes_back_through_the_session_webhook(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    await staff(("ding_zhangsan", "张三"))
    resp = await dingtalk_sim.deliver(client, "ding_zhangsan", "帮助", nick="张三")
    assert resp.status == 200
    await settle(client.app)

    [answer] = dingtalk_sim.delivered_to("ding_zhangsan")
    assert answer.via == "session_webhook"
    assert answer.msgtype == "text"
    assert "CRM 助手" in answer.text
    assert endpoints(dingtalk_sim) == [WEBHOOK]  # a webhook needs no access token
    row = await OutboxMessage.get(recipient="ding_zhangsan")
    assert (row.status, row.result["via"]) == (OutboxStatus.SENT, "session_webhook")
    message = await Message.get(platform="dingtalk")
    assert message.sender == "ding_zhangsan" and message.staff_id is not None and message.handled_at is not None


async def test_a_stranger_is_told_politely_that_they_are_not_registered(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    await dingtalk_sim.deliver(client, "ding_stranger", "帮助")
    await settle(client.app)
    assert dingtalk_sim.texts_to("ding_stranger") == [NOT_REGISTERED]


async def test_an_answer_after_the_webhook_expired_arrives_by_batch_send(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    await staff(("ding_zhangsan", "张三"))
    await dingtalk_sim.deliver(client, "ding_zhangsan", "帮助", webhook_ttl=600)
    await client.app[BOT].tasks.idle()
    dingtalk_sim.clock.advance(timedelta(minutes=10))  # the outbox was down; the session is gone by now
    await settle(client.app)

    [answer] = dingtalk_sim.delivered_to("ding_zhangsan")
    assert answer.via == "batch_send"
    assert answer.msgtype == "sampleText"
    assert "CRM 助手" in answer.text
    assert WEBHOOK not in endpoints(dingtalk_sim)  # the expiry was known: no doomed webhook call
    [send] = [r for r in dingtalk_sim.requests if r.endpoint == BATCH_SEND]
    assert send.body["robotCode"] == dingtalk_sim.robot_code
    assert send.body["userIds"] == ["ding_zhangsan"]
    assert isinstance(send.body["msgParam"], str)


async def test_a_webhook_dingtalk_reports_gone_falls_back_to_batch_send(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    await staff(("ding_zhangsan", "张三"))
    await dingtalk_sim.deliver(client, "ding_zhangsan", "帮助")
    dingtalk_sim.expire_sessions()  # DingTalk dropped the session early
    await settle(client.app)
    [answer] = dingtalk_sim.delivered_to("ding_zhangsan")
    assert answer.via == "batch_send"
    assert endpoints(dingtalk_sim) == [WEBHOOK, TOKEN, BATCH_SEND]


async def test_pushes_go_by_batch_send_with_one_token_for_many_concurrent_sends(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    people = await staff(*[(f"ding_rep{i}", f"销售{i}") for i in range(8)])
    outbox = client.app[OUTBOX]
    for person in people:
        await outbox.push(person, Reply(f"{person.name}，华为该跟进了"), f"remind:{person.id}")
    await outbox.push(people[0], Reply.markdown("### 本周待办\n- 跟进 华为"), "digest:0")
    await settle(client.app)

    for person in people:
        assert f"{person.name}，华为该跟进了" in dingtalk_sim.texts_to(await account_of(person, "dingtalk"))
    digest = [d for d in dingtalk_sim.delivered_to("ding_rep0") if d.msgtype == "sampleMarkdown"]
    assert [(d.content["title"], d.content["text"]) for d in digest] == [("本周待办", "### 本周待办\n- 跟进 华为")]
    assert endpoints(dingtalk_sim).count(TOKEN) == 1  # the cached token is shared behind the lock
    tokens = {r.headers["x-acs-dingtalk-access-token"] for r in dingtalk_sim.requests if r.endpoint == BATCH_SEND}
    assert len(tokens) == 1 and tokens <= set(dingtalk_sim.tokens)


async def test_an_invalidated_token_is_renewed_and_the_message_sent_once(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    [rep] = await staff(("ding_zhangsan", "张三"))
    outbox = client.app[OUTBOX]
    await outbox.push(rep, Reply("第一条"), "p1")
    await settle(client.app)
    dingtalk_sim.expire_tokens()  # revoked early, before expireIn
    await outbox.push(rep, Reply("第二条"), "p2")
    await settle(client.app)
    assert dingtalk_sim.texts_to("ding_zhangsan") == ["第一条", "第二条"]
    assert endpoints(dingtalk_sim) == [TOKEN, BATCH_SEND, BATCH_SEND, TOKEN, BATCH_SEND]

    # time passes beyond expireIn: the client renews before DingTalk would refuse the token
    rejected_before = len(dingtalk_sim.rejected)
    dingtalk_sim.clock.advance(timedelta(hours=3))
    await outbox.push(rep, Reply("第三条"), "p3")
    await settle(client.app)
    assert dingtalk_sim.texts_to("ding_zhangsan")[-1] == "第三条"
    assert len(dingtalk_sim.rejected) == rejected_before
    assert endpoints(dingtalk_sim)[-2:] == [TOKEN, BATCH_SEND]


async def test_the_platform_fails_for_a_while_then_every_reply_arrives_once(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    people = await staff(("ding_rep1", "销售1"), ("ding_rep2", "销售2"), ("ding_rep3", "销售3"))
    dingtalk_sim.fail(WEBHOOK, 2, status=502)
    dingtalk_sim.throttle(WEBHOOK, 1)
    dingtalk_sim.fail(TOKEN, 1, status=503)
    dingtalk_sim.fail(BATCH_SEND, 2, status=500)
    dingtalk_sim.throttle(BATCH_SEND, 1, style="qps")
    dingtalk_sim.throttle(BATCH_SEND, 1, style="429")
    for person in people:
        await dingtalk_sim.deliver(client, await account_of(person, "dingtalk"), "帮助")
        await client.app[OUTBOX].push(person, Reply(f"提醒{person.name}"), f"remind:{person.id}")
    await deliver_everything(client.app, dingtalk_sim)

    for person in people:
        texts = dingtalk_sim.texts_to(await account_of(person, "dingtalk"))
        assert len(texts) == 2, texts
        assert texts.count(f"提醒{person.name}") == 1
    assert not any(dingtalk_sim.faults.values())  # every fault was met
    rows = await OutboxMessage.all()
    assert {r.status for r in rows} == {OutboxStatus.SENT}
    assert max(r.attempts for r in rows) > 1


async def test_an_unknown_staff_id_fails_for_good_and_a_flow_controlled_one_is_retried(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    gone, busy = await staff(("ding_left", "离职"), ("ding_busy", "忙碌"))
    dingtalk_sim.invalid_staff_ids.add("ding_left")
    dingtalk_sim.flow_controlled_staff_ids.add("ding_busy")
    outbox = client.app[OUTBOX]
    await outbox.push(gone, Reply("你好"), "to-gone")
    await outbox.push(busy, Reply("你好"), "to-busy")
    await settle(client.app)
    left = await OutboxMessage.get(dedupe_key="to-gone")
    assert (left.status, left.attempts) == (OutboxStatus.FAILED, 1)
    assert "ding_left" in left.last_error
    assert (await OutboxMessage.get(dedupe_key="to-busy")).status == OutboxStatus.PENDING

    dingtalk_sim.flow_controlled_staff_ids.clear()
    await deliver_everything(client.app, dingtalk_sim)
    assert dingtalk_sim.texts_to("ding_busy") == ["你好"]
    assert dingtalk_sim.texts_to("ding_left") == []
    assert (await OutboxMessage.get(dedupe_key="to-gone")).attempts == 1  # never retried


APPROVAL = Card(
    title="折扣审批 AP12",
    card_id="AP12",
    description="张三申请华为项目 85 折",
    fields=(("客户", "华为技术有限公司"), ("合同金额", "120万")),
    buttons=(Button("同意 #AP12", "同意"), Button("驳回 #AP12", "驳回", style=2)),
)


def tapped(url: str) -> str:
    """What the DingTalk client sends as the tapper's message when a dtmd button link is opened."""
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("dtmd", "dingtalkclient", "/sendMessage")
    [content] = parse_qs(parts.query)["content"]
    return content


async def test_an_approval_card_is_an_action_card_and_a_tap_is_routed_like_typing(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    [manager] = await staff(("ding_wangjl", "王经理"), role=Role.MANAGER)
    await client.app[OUTBOX].push(manager, Reply(kind="card", card=APPROVAL), "approval:AP12")
    await settle(client.app)

    [card] = dingtalk_sim.delivered_to("ding_wangjl")
    assert (card.via, card.msgtype) == ("batch_send", "sampleActionCard2")
    assert card.content["title"] == "折扣审批 AP12"
    assert "华为技术有限公司" in card.content["text"] and "120万" in card.content["text"]
    assert [title for title, _ in card.buttons] == ["同意", "驳回"]
    assert card.content["actionURL1"] == "dtmd://dingtalkclient/sendMessage?content=%E5%90%8C%E6%84%8F%20%23AP12"
    assert [tapped(url) for _, url in card.buttons] == ["同意 #AP12", "驳回 #AP12"]

    # 王经理 taps 同意: the client sends the key as his message; the bot answers it exactly as if he typed it
    await dingtalk_sim.deliver(client, "ding_wangjl", tapped(card.buttons[0][1]), msgid="msgTAP")
    await dingtalk_sim.deliver(client, "ding_wangjl", "同意 #AP12", msgid="msgTYPED")
    await settle(client.app)
    tap = await Message.get(msgid="msgTAP")
    typed = await Message.get(msgid="msgTYPED")
    assert tap.text == typed.text == "同意 #AP12"
    assert tap.staff_id == manager.id and tap.handled_at is not None
    answers = [d for d in dingtalk_sim.delivered_to("ding_wangjl") if d.via == "session_webhook"]
    assert len(answers) == 2 and answers[0].text == answers[1].text and answers[0].text


async def test_a_card_tap_on_help_gets_the_help_answer(make_settings: Any, start_app: Any, dingtalk_sim: Any) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    [rep] = await staff(("ding_zhangsan", "张三"))
    menu = Card(title="快捷菜单", card_id="menu1", buttons=(Button("帮助", "查看帮助"),))
    await client.app[OUTBOX].push(rep, Reply(kind="card", card=menu), "menu")
    await settle(client.app)
    [card] = dingtalk_sim.delivered_to("ding_zhangsan")
    assert card.msgtype == "sampleActionCard" and card.content["singleTitle"] == "查看帮助"
    await dingtalk_sim.deliver(client, "ding_zhangsan", tapped(card.content["singleURL"]))
    await settle(client.app)
    assert "CRM 助手" in dingtalk_sim.delivered_to("ding_zhangsan")[-1].text


async def test_a_card_answering_a_fresh_message_uses_the_webhook_action_card(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    await staff(("ding_zhangsan", "张三"))
    await dingtalk_sim.deliver(client, "ding_zhangsan", "帮助", msgid="msgASK")
    await settle(client.app)
    asked = await Message.get(msgid="msgASK")
    six = Card(title="选择", card_id="six", buttons=tuple(Button(f"选 {i}", f"选项{i}") for i in range(1, 7)))
    await client.app[OUTBOX].enqueue(
        Address("dingtalk", "ding_zhangsan"),
        Reply(kind="card", card=six),
        "card:six",
        reply_to=asked.payload["reply_to"],
    )
    await settle(client.app)
    card = dingtalk_sim.delivered_to("ding_zhangsan")[-1]
    assert (card.via, card.msgtype) == ("session_webhook", "actionCard")
    assert card.content["btnOrientation"] == "0"
    assert [tapped(url) for _, url in card.buttons] == [f"选 {i}" for i in range(1, 6)]  # five fit
    assert "「选 6」" in card.content["text"]  # the sixth can still be typed


async def test_a_card_update_becomes_a_text_notice(make_settings: Any, start_app: Any, dingtalk_sim: Any) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    [manager] = await staff(("ding_wangjl", "王经理"), role=Role.MANAGER)
    update = Reply.updating(CardUpdate("AP12", "", "已同意"))
    await client.app[OUTBOX].push(manager, update, "update:AP12")
    await settle(client.app)
    [notice] = dingtalk_sim.delivered_to("ding_wangjl")
    assert notice.msgtype == "sampleText"
    assert "已同意" in notice.text


async def test_a_slow_platform_times_out_and_the_message_is_sent_on_the_next_attempt(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await start(make_settings, start_app, dingtalk_sim, request_timeout_seconds=0.2)
    [rep] = await staff(("ding_zhangsan", "张三"))
    dingtalk_sim.delay_seconds = 1.0
    await client.app[OUTBOX].push(rep, Reply("慢一点也要送到"), "slow")
    await settle(client.app)
    row = await OutboxMessage.get(dedupe_key="slow")
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 1)
    assert "Timeout" in row.last_error
    assert dingtalk_sim.delivered_to("ding_zhangsan") == []

    dingtalk_sim.delay_seconds = 0
    await deliver_everything(client.app, dingtalk_sim)
    assert dingtalk_sim.texts_to("ding_zhangsan") == ["慢一点也要送到"]
    assert (await OutboxMessage.get(dedupe_key="slow")).attempts == 2

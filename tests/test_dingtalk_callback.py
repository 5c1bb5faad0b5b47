"""DingTalk robot callbacks: the signature vectors, the time window, and what happens to bad or repeated requests."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from bot.clock import Clock
from integrations.dingtalk.callback import sign
from models.messages import Message
from models.staff import Role, Staff
from tests.helpers import dingtalk_sign, post_dingtalk, settle, staff_member
from tests.simulators.dingtalk import BATCH_SEND, WEBHOOK

# PROTOCOLS.md §7: the official header example timestamp with two secrets
VECTOR_TS = 1577262236757
VECTORS = [
    ("this is a secret", "DJrE6qdyVGCQz9z5r2MDuNcNAhwYnuAkyj13cx169CA="),
    ("this is secret", "hmPWwU+7lVdm3ZZz0r9tSfx0L4Q26jWOZr9+Gs6EZQM="),
]


async def start(make_settings: Any, start_app: Any, sim: Any, **overrides: Any) -> Any:
    settings = make_settings(dingtalk=sim.settings(), **overrides)
    return await start_app(settings, clock=sim.clock, run_dispatcher=False, run_scheduler=False)


async def rep(staff_id: str = "ding_zhangsan", name: str = "张三") -> Staff:
    return await staff_member(name=name, dingtalk=staff_id, role=Role.REP)


def test_the_sign_matches_the_published_vectors() -> None:
    for secret, expected in VECTORS:
        assert sign(str(VECTOR_TS), secret) == expected
        assert dingtalk_sign(VECTOR_TS, secret) == expected


async def test_the_official_header_example_is_accepted(make_settings: Any, start_app: Any, dingtalk_sim: Any) -> None:
    secret, signature = VECTORS[0]
    clock = Clock(datetime.fromtimestamp(VECTOR_TS / 1000 + 600, UTC))  # ten minutes after DingTalk signed it
    dingtalk_sim.clock = clock
    settings = make_settings(dingtalk={**dingtalk_sim.settings(), "app_secret": secret})
    client = await start_app(settings, clock=clock, run_dispatcher=False, run_scheduler=False)
    body = dingtalk_sim.message("ding_zhangsan", "帮助", msgid="msgVECTOR1")
    headers = {"timestamp": str(VECTOR_TS), "sign": signature, "Content-Type": "application/json"}
    resp = await client.post("/dingtalk/callback", data=json.dumps(body), headers=headers)
    assert resp.status == 200
    assert await resp.json() == {}
    row = await Message.get(platform="dingtalk", msgid="msgVECTOR1")
    assert (row.sender, row.text, row.to_bot) == ("ding_zhangsan", "帮助", True)


async def test_timestamps_more_than_an_hour_away_are_forbidden(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    now = dingtalk_sim.now_ms()
    secret = dingtalk_sim.app_secret
    for offset in (-3_600_001, 3_600_001, -86_400_000, 10 * 3_600_000):
        body = dingtalk_sim.message("ding_zhangsan", "帮助", msgid=f"late{offset}")
        resp = await post_dingtalk(client, body, secret, now + offset)
        assert resp.status == 403, offset
    assert await Message.all().count() == 0
    for offset in (-3_600_000, 3_600_000, 0):  # the edges of the window are inside
        body = dingtalk_sim.message("ding_zhangsan", "帮助", msgid=f"ok{offset}")
        resp = await post_dingtalk(client, body, secret, now + offset)
        assert resp.status == 200, offset
    assert await Message.all().count() == 3


async def test_a_bad_or_missing_sign_is_forbidden_and_writes_nothing(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    body = json.dumps(dingtalk_sim.message("ding_zhangsan", "帮助")).encode()
    now = str(dingtalk_sim.now_ms())
    good = dingtalk_sim.sign(int(now))
    cases = [
        {},
        {"timestamp": now},
        {"sign": good},
        {"timestamp": now, "sign": ""},
        {"timestamp": now, "sign": dingtalk_sign(now, "another app's secret")},
        {"timestamp": now, "sign": good[:-2] + "A="},
        {"timestamp": str(int(now) + 1), "sign": good},  # the sign belongs to another timestamp
        {"timestamp": "abc", "sign": good},
        {"timestamp": "-" + now, "sign": good},
        {"timestamp": now, "sign": "签名"},
    ]
    for headers in cases:
        resp = await client.post("/dingtalk/callback", data=body, headers=headers)
        assert resp.status == 403, headers
    assert await Message.all().count() == 0


async def test_malformed_bodies_are_rejected_and_write_nothing(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    good = dingtalk_sim.message("ding_zhangsan", "帮助")
    raw_bodies: list[bytes] = [b"", b"not json", b"{", b"[]", b'"text"', b"\xff\xfe{}", b"null"]
    broken = [
        {},
        {k: v for k, v in good.items() if k != "msgId"},
        {k: v for k, v in good.items() if k != "createAt"},
        {k: v for k, v in good.items() if k not in ("senderStaffId", "senderId")},
        {k: v for k, v in good.items() if k != "text"},
        {**good, "msgId": 12345},
        {**good, "createAt": "yesterday"},
        {**good, "createAt": True},
        {**good, "text": "帮助"},
        {**good, "text": {"content": ["帮助"]}},
        {**good, "conversationType": "3"},
        {**good, "senderStaffId": {"id": 1}},
        {**good, "isInAtList": "yes"},
        {**good, "msgtype": "richText", "content": {"richText": "帮助"}},
        {**good, "msgtype": "picture", "content": "图片"},
        {**good, "createAt": 10**30},
    ]
    now = dingtalk_sim.now_ms()
    for body in raw_bodies + [json.dumps(b).encode() for b in broken]:
        resp = await post_dingtalk(client, body, dingtalk_sim.app_secret, now)
        assert resp.status == 400, body
    assert await Message.all().count() == 0


async def test_an_oversized_body_is_rejected(make_settings: Any, start_app: Any, dingtalk_sim: Any) -> None:
    client = await start(make_settings, start_app, dingtalk_sim, server={"max_body_bytes": 4096})
    body = dingtalk_sim.message("ding_zhangsan", "跟进 华为 " + "很长的纪要" * 2000)
    resp = await post_dingtalk(client, body, dingtalk_sim.app_secret, dingtalk_sim.fresh_timestamp())
    assert resp.status == 413
    assert await Message.all().count() == 0


async def test_a_repeated_msgid_is_handled_once(make_settings: Any, start_app: Any, dingtalk_sim: Any) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    await rep()
    body = dingtalk_sim.message("ding_zhangsan", "帮助", msgid="msgREPEAT")
    for _ in range(2):  # DingTalk re-delivers
        resp = await post_dingtalk(client, body, dingtalk_sim.app_secret, dingtalk_sim.now_ms())
        assert resp.status == 200
    answers = await asyncio.gather(
        *(post_dingtalk(client, body, dingtalk_sim.app_secret, dingtalk_sim.now_ms()) for _ in range(3))
    )
    assert [a.status for a in answers] == [200, 200, 200]
    await settle(client.app)
    assert await Message.filter(msgid="msgREPEAT").count() == 1
    assert len(dingtalk_sim.delivered_to("ding_zhangsan")) == 1


async def test_a_group_mention_is_stripped_and_the_answer_mentions_the_asker(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    await rep()
    resp = await dingtalk_sim.deliver(client, "ding_zhangsan", "帮助", group=True, msgid="msgGROUP1")
    assert resp.status == 200
    await settle(client.app)
    row = await Message.get(msgid="msgGROUP1")
    assert row.text == "帮助"
    assert row.room_id == "cidGROUPding_zhangsan"
    [answer] = dingtalk_sim.delivered_to("ding_zhangsan")
    assert answer.via == "session_webhook"
    assert answer.conversation_id == "cidGROUPding_zhangsan"
    assert answer.at == ("ding_zhangsan",)
    assert "CRM 助手" in answer.text


async def test_rich_text_and_pictures_are_stored(make_settings: Any, start_app: Any, dingtalk_sim: Any) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    rich = {
        **dingtalk_sim.message("ding_zhangsan", "", msgid="msgRICH"),
        "msgtype": "richText",
        "content": {"richText": [{"text": "帮"}, {"downloadCode": "dlc-1", "type": "picture"}, {"text": "助"}]},
    }
    picture = {
        **dingtalk_sim.message("ding_zhangsan", "", msgid="msgPIC"),
        "msgtype": "picture",
        "content": {"downloadCode": "dlc-2", "pictureDownloadCode": "pdc-2"},
    }
    for body in (rich, picture):
        del body["text"]
        resp = await post_dingtalk(client, body, dingtalk_sim.app_secret, dingtalk_sim.fresh_timestamp())
        assert resp.status == 200
    await settle(client.app)
    stored = {m.msgid: m for m in await Message.all()}
    assert (stored["msgRICH"].msgtype, stored["msgRICH"].text) == ("richText", "帮助")
    assert stored["msgRICH"].payload["raw"]["download_codes"] == ["dlc-1"]
    assert (stored["msgPIC"].msgtype, stored["msgPIC"].text) == ("picture", "")
    assert stored["msgPIC"].payload["raw"]["download_codes"] == ["dlc-2"]


async def test_a_session_webhook_on_a_foreign_host_is_never_called(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client = await start(make_settings, start_app, dingtalk_sim)
    await rep()
    body = dingtalk_sim.message("ding_zhangsan", "帮助")
    body["sessionWebhook"] = "http://127.0.0.1:9/steal"
    resp = await post_dingtalk(client, body, dingtalk_sim.app_secret, dingtalk_sim.fresh_timestamp())
    assert resp.status == 200
    await settle(client.app)
    [answer] = dingtalk_sim.delivered_to("ding_zhangsan")
    assert answer.via == "batch_send"
    assert not [r for r in dingtalk_sim.requests if r.endpoint == WEBHOOK]
    assert [r.endpoint for r in dingtalk_sim.requests if r.endpoint == BATCH_SEND] == [BATCH_SEND]

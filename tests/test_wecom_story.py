"""WeCom end to end: signed, encrypted callbacks into the app, the real database, replies arriving at the WeCom
API simulator — also when WeCom retries, when the API fails for a while, when the token expires, and across
restarts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bot.dispatch import NOT_REGISTERED
from bot.keys import BOT, OUTBOX
from bot.types import IncomingMessage
from integrations.wecom import WECOM_CLIENT
from models.messages import Message
from models.outbox import OutboxMessage, OutboxStatus
from models.staff import Role, Staff
from tests.helpers import WECOM, deliver_all, post_wecom, settle, staff_member, text_xml


async def reps(*userids: str) -> list[Staff]:
    return [await staff_member(name=f"销售{u}", wecom=u, role=Role.REP) for u in userids]


async def test_a_rep_types_help_and_the_answer_arrives_in_wecom(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    client = await start_app(make_settings())
    await reps("zhangsan")
    resp = await post_wecom(client, text_xml("zhangsan", "帮助", 7001))
    assert resp.status == 200
    await deliver_all(client.app)

    [body] = wecom_sim.messages_to("zhangsan")
    assert body["touser"] == "zhangsan"
    assert body["agentid"] == WECOM.agent_id
    assert body["msgtype"] == "text"
    assert "CRM 助手" in body["text"]["content"]
    row = await OutboxMessage.get(recipient="zhangsan")
    assert row.status == OutboxStatus.SENT
    assert row.result["msgid"].startswith("sim")
    assert wecom_sim.tokens_issued == 1


async def test_an_unknown_sender_gets_the_polite_not_registered_reply(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    client = await start_app(make_settings())
    await post_wecom(client, text_xml("stranger01", "帮助", 7002))
    await deliver_all(client.app)
    assert wecom_sim.texts_to("stranger01") == [NOT_REGISTERED]


async def test_wecom_retries_of_one_message_are_handled_once(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    client = await start_app(make_settings())
    await reps("zhangsan", "lisi")
    sequential = text_xml("zhangsan", "帮助", 7003)
    for _ in range(3):  # WeCom re-sends when the answer is late
        assert (await post_wecom(client, sequential)).status == 200
    concurrent = text_xml("lisi", "帮助", 7004)
    answers = await asyncio.gather(*(post_wecom(client, concurrent) for _ in range(3)))
    assert [a.status for a in answers] == [200, 200, 200]
    await deliver_all(client.app)

    assert await Message.filter(msgid__in=["7003", "7004"]).count() == 2
    assert len(wecom_sim.texts_to("zhangsan")) == 1
    assert len(wecom_sim.texts_to("lisi")) == 1


async def test_the_platform_fails_for_a_while_then_every_reply_arrives_once(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    client = await start_app(make_settings())
    users = ["rep1", "rep2", "rep3", "rep4"]
    await reps(*users)
    wecom_sim.fail_next(3, errcode=-1, endpoint="message/send")
    wecom_sim.http_error_next(2, status=500, endpoint="message/send")
    wecom_sim.http_error_next(1, status=502, endpoint="message/send")
    wecom_sim.fail_next(3, errcode=45009, endpoint="message/send")
    for i, user in enumerate(users):
        await post_wecom(client, text_xml(user, "帮助", 7100 + i))
    await deliver_all(client.app)

    for user in users:
        assert len(wecom_sim.texts_to(user)) == 1, user
    faults = [c for c in wecom_sim.calls if c.get("answer", {}).get("fault")]
    assert len(faults) == 9  # every injected failure was met, and each was survived
    assert await OutboxMessage.filter(status=OutboxStatus.SENT).count() == len(users)
    retried = await OutboxMessage.filter(attempts__gt=1).count()
    assert retried >= 1  # 45009 is left to the outbox, which tried again later


async def test_an_expired_token_is_refreshed_once_and_no_message_is_lost(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    client = await start_app(make_settings())
    users = [f"rep{i}" for i in range(6)]
    await reps(*users)
    await post_wecom(client, text_xml(users[0], "帮助", 7200))
    await deliver_all(client.app)
    assert wecom_sim.tokens_issued == 1

    wecom_sim.expire_tokens()
    await asyncio.gather(*(post_wecom(client, text_xml(u, "帮助", 7201 + i)) for i, u in enumerate(users)))
    await deliver_all(client.app)

    assert wecom_sim.tokens_issued == 2  # the concurrent senders waited for one refresh
    assert [len(wecom_sim.texts_to(u)) for u in users] == [2, 1, 1, 1, 1, 1]
    assert client.app[WECOM_CLIENT].token_fetches == 2


async def test_undelivered_replies_leave_after_a_restart_on_the_same_database(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    # A short lease: a send cut off by the shutdown is taken over soon after the restart.
    settings = make_settings(outbox={"lease_seconds": 0.5})
    first = await start_app(settings)
    await reps("zhangsan")
    wecom_sim.http_error_next(1000, status=502)  # WeCom is unreachable until the restart
    await post_wecom(first, text_xml("zhangsan", "帮助", 7300))
    await settle(first.app)
    row = await OutboxMessage.get(recipient="zhangsan")
    assert row.status in (OutboxStatus.PENDING, OutboxStatus.SENDING)
    await first.close()
    assert wecom_sim.texts_to("zhangsan") == []

    wecom_sim.faults.clear()
    second = await start_app(settings)
    await deliver_all(second.app)
    assert len(wecom_sim.texts_to("zhangsan")) == 1
    await second.close()

    third = await start_app(settings)  # and once sent, a later start does not send it again
    await deliver_all(third.app)
    assert len(wecom_sim.texts_to("zhangsan")) == 1


async def test_a_message_stored_but_not_handled_is_handled_once_after_a_restart(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    settings = make_settings()
    first = await start_app(settings, run_dispatcher=False)
    await reps("zhangsan")
    msg = IncomingMessage(
        platform="wecom", msgid="7400", sender="zhangsan", text="帮助", sent_at=first.app[BOT].clock.now()
    )
    # What a crash right after the acknowledgement leaves behind: the row, without its handling.
    assert await first.app[BOT].store(msg) is not None
    assert await Message.filter(msgid="7400", handled_at=None).count() == 1
    await first.close()

    second = await start_app(settings)
    await deliver_all(second.app)  # start-up recovery handles it
    resp = await post_wecom(second, text_xml("zhangsan", "帮助", 7400, created=int(time.time())))
    assert resp.status == 200  # WeCom's late retry of the same message
    await deliver_all(second.app)

    assert len(wecom_sim.texts_to("zhangsan")) == 1
    row = await Message.get(msgid="7400")
    assert row.handled_at is not None
    assert await OutboxMessage.all().count() == 1
    assert second.app[OUTBOX].adapters["wecom"].platform == "wecom"

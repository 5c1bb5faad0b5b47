"""The outbox dispatcher as users feel it: replies leave as soon as they are ready, not at the next poll."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from bot.channels import CLAIM_BATCH, Outbox
from bot.keys import BOT, OUTBOX
from bot.types import Reply
from models.outbox import OutboxMessage, OutboxStatus
from models.staff import Role
from tests.helpers import account_of, post_wecom, staff_member, text_xml


async def wait_for(condition: Any, patience: float = 15.0) -> None:
    """Wait (without draining the outbox ourselves) until ``condition()`` holds; ``patience`` guards a hang."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_a_reply_ready_while_the_dispatcher_is_busy_leaves_without_waiting_for_the_next_poll(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    # The dispatcher only polls once an hour here: every delivery below must come from a wake-up.
    client = await start_app(make_settings(outbox={"poll_seconds": 3600}))
    await staff_member(name="张三", wecom="zhangsan", role=Role.REP)
    await staff_member(name="李四", wecom="lisi", role=Role.REP)
    wecom_sim.slow_next(1, seconds=2.0, endpoint="message/send")  # WeCom takes its time with the first reply

    await post_wecom(client, text_xml("zhangsan", "帮助", 8001))
    await wait_for(lambda: any(c["endpoint"] == "message/send" for c in wecom_sim.calls))
    # 李四 writes while 张三's reply is still on its way; his reply is ready before that send returns.
    await post_wecom(client, text_xml("lisi", "帮助", 8002))
    await client.app[BOT].tasks.idle()
    assert wecom_sim.texts_to("zhangsan") == []  # the first send is indeed still in flight

    await wait_for(lambda: len(wecom_sim.texts_to("zhangsan")) == 1)
    await wait_for(lambda: len(wecom_sim.texts_to("lisi")) == 1)


async def test_two_dispatchers_on_one_database_send_every_push_once_and_in_order_per_person(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    # Two instances of the bot share one database; each runs its own dispatcher over the same outbox.
    client = await start_app(make_settings(), run_dispatcher=False)
    app_outbox = client.app[OUTBOX]
    first = Outbox(app_outbox.settings, app_outbox.clock, app_outbox.directory)
    second = Outbox(app_outbox.settings, app_outbox.clock, app_outbox.directory)
    for outbox in (first, second):
        outbox.register(app_outbox.adapters["wecom"])
    people = [await staff_member(name=f"销售{i}", wecom=f"rep{i}", role=Role.REP) for i in range(7)]
    total = 3 * CLAIM_BATCH + 50  # several batches, so both instances claim several times
    for n in range(total):
        person = people[n % len(people)]
        await app_outbox.push(person, Reply(f"提醒 {n}"), f"test:{n}")

    assert await first.drain_once() == CLAIM_BATCH  # one claim takes one batch, however many are due
    drained = await asyncio.gather(first.drain(), second.drain())

    assert sum(drained) == total - CLAIM_BATCH
    for i, person in enumerate(people):
        expected = [f"提醒 {n}" for n in range(i, total, len(people))]
        assert wecom_sim.texts_to(await account_of(person, "wecom")) == expected
    assert await OutboxMessage.filter(status=OutboxStatus.SENT).count() == total
    assert await OutboxMessage.filter(attempts__gt=1).count() == 0


async def test_a_failed_send_in_a_batch_is_retried_later_while_the_rest_of_the_batch_is_sent(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    # No quick retries inside the WeCom client: a busy answer goes back to the outbox at once.
    client = await start_app(make_settings(wecom={"request_retries": 0}), run_dispatcher=False)
    outbox = client.app[OUTBOX]
    zhang = await staff_member(name="张三", wecom="zhangsan", role=Role.REP)
    li = await staff_member(name="李四", wecom="lisi", role=Role.REP)
    await outbox.push(zhang, Reply("第一条"), "test:1")
    await outbox.push(li, Reply("第二条"), "test:2")
    wecom_sim.fail_next(1, errcode=-1, endpoint="message/send")  # WeCom is busy for the first message
    now = outbox.clock.now()

    assert await outbox.drain_once(now) == 2
    sent = wecom_sim.texts_to("zhangsan") + wecom_sim.texts_to("lisi")
    assert len(sent) == 1
    waiting = await OutboxMessage.get(status=OutboxStatus.PENDING)
    assert waiting.attempts == 1 and waiting.not_before > now and waiting.last_error

    assert await outbox.drain_once(now) == 0  # backing off: not yet
    assert await outbox.drain_once(waiting.not_before) == 1
    assert sorted(wecom_sim.texts_to("zhangsan") + wecom_sim.texts_to("lisi")) == ["第一条", "第二条"]
    assert await OutboxMessage.filter(status=OutboxStatus.SENT).count() == 2


async def test_pushes_past_wecoms_limit_per_person_wait_for_the_next_minute_whichever_instance_sends(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    # WeCom silently drops app messages past 30 per person per minute: two instances together send 30, not 60.
    limits = {"member_messages_per_minute": 30, "member_messages_per_hour": 1000}  # WeCom's, the default
    client = await start_app(make_settings(wecom=limits), run_dispatcher=False)
    app_outbox = client.app[OUTBOX]
    first = Outbox(app_outbox.settings, app_outbox.clock, app_outbox.directory)
    second = Outbox(app_outbox.settings, app_outbox.clock, app_outbox.directory)
    for outbox in (first, second):
        outbox.register(app_outbox.adapters["wecom"])
    busy = await staff_member(name="张三", wecom="zhangsan", role=Role.REP)
    quiet = await staff_member(name="李四", wecom="lisi", role=Role.REP)
    for n in range(40):
        await app_outbox.push(busy, Reply(f"提醒 {n}"), f"test:{n}")
    await app_outbox.push(quiet, Reply("你好"), "test:quiet")
    now = app_outbox.clock.now()

    await asyncio.gather(first.drain(now), second.drain(now))

    assert wecom_sim.texts_to("zhangsan") == [f"提醒 {n}" for n in range(30)]
    assert wecom_sim.texts_to("lisi") == ["你好"]  # someone else's limit holds nobody else up
    held = await OutboxMessage.filter(status=OutboxStatus.PENDING).order_by("id")
    assert len(held) == 10 and all(row.not_before > now and row.attempts == 0 for row in held)

    assert await first.drain(now + timedelta(seconds=60)) == 10
    assert wecom_sim.texts_to("zhangsan") == [f"提醒 {n}" for n in range(40)]
    assert await OutboxMessage.filter(status=OutboxStatus.SENT).count() == 41


async def test_each_send_is_recorded_as_begun_before_its_request_and_only_a_repeat_asks_wecom_to_check(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    # 张三 has three reminders due in the same words, 李四 one. The claim records them as begun before any request
    # leaves: a restart after a crash then knows which may have reached the person.
    client = await start_app(make_settings(), run_dispatcher=False)
    outbox = client.app[OUTBOX]
    zhang = await staff_member(name="张三", wecom="zhangsan", role=Role.REP)
    li = await staff_member(name="李四", wecom="lisi", role=Role.REP)
    for n in range(3):
        await outbox.push(zhang, Reply("明天上午十点回访华东机械"), f"test:zhang:{n}")
    await outbox.push(li, Reply("明天上午十点回访华东机械"), "test:li")
    wecom_sim.slow_next(2, seconds=1.0, endpoint="message/send")  # the first two requests take their time

    draining = asyncio.create_task(outbox.drain())
    await wait_for(lambda: sum(c["endpoint"] == "message/send" for c in wecom_sim.calls) == 2)
    rows = await OutboxMessage.all().order_by("id")
    assert [row.status for row in rows] == [OutboxStatus.SENDING] * 4
    assert all(row.attempted_at is not None for row in rows)
    assert await draining == 4

    # Identical texts sent on purpose all arrive: a first send never asks WeCom to drop repeats.
    assert wecom_sim.texts_to("zhangsan") == ["明天上午十点回访华东机械"] * 3
    assert wecom_sim.texts_to("lisi") == ["明天上午十点回访华东机械"]
    sends = [c for c in wecom_sim.calls if c["endpoint"] == "message/send"]
    assert len(sends) == 4 and not any("enable_duplicate_check" in c["body"] for c in sends)
    assert all(row.attempted_at is not None for row in await OutboxMessage.filter(status=OutboxStatus.SENT))


async def test_a_row_another_instance_took_over_is_not_sent_by_the_claim_that_lost_it(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    # A short lease, renewed every half second. 张三's first reminder is slow to send; meanwhile another instance
    # takes his second over (as it may once a lease has run out before its renewal committed).
    client = await start_app(make_settings(outbox={"lease_seconds": 2.0}), run_dispatcher=False)
    outbox = client.app[OUTBOX]
    zhang = await staff_member(name="张三", wecom="zhangsan", role=Role.REP)
    await outbox.push(zhang, Reply("第一条"), "test:1")
    await outbox.push(zhang, Reply("第二条"), "test:2")
    wecom_sim.slow_next(1, seconds=0.8, endpoint="message/send")

    draining = asyncio.create_task(outbox.drain())
    await wait_for(lambda: any(c["endpoint"] == "message/send" for c in wecom_sim.calls))
    second = await OutboxMessage.get(dedupe_key="test:2")
    assert second.status == OutboxStatus.SENDING and second.attempts == 1
    await OutboxMessage.filter(id=second.id).update(attempts=2, lease_until=second.lease_until + timedelta(minutes=1))
    await draining

    # The renewal found the row leased to someone else: this claim sent the first only.
    assert wecom_sim.texts_to("zhangsan") == ["第一条"]
    taken = await OutboxMessage.get(id=second.id)
    assert taken.status == OutboxStatus.SENDING and taken.attempts == 2
    assert (await OutboxMessage.get(dedupe_key="test:1")).status == OutboxStatus.SENT

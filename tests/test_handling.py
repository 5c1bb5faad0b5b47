"""Handling a burst: messages waiting together are answered in one transaction, each in a savepoint of its own,
so the database refusing one rep's change costs that rep an apology and nobody else anything; acknowledgements
come first only while they keep the server busy, and never starve handling."""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import timedelta
from typing import Any

from tortoise import connections

from bot import sql
from bot.clock import Clock
from bot.demo import load_demo
from bot.keys import BOT
from bot.pipeline import FAILED
from bot.scheduler import handle_left_behind
from models.audit import AuditLog
from models.customers import Customer
from models.followups import FollowUp
from models.messages import Message
from models.outbox import OutboxMessage, OutboxStatus
from tests.helpers import deliver_all, post_wecom, text_xml
from tests.test_customers import NOW, demo

# The database refuses 李四's audit entries, as a full disk or a broken constraint would refuse a write: his
# follow-up has already been inserted by then, so keeping nothing of it proves the rollback.
REFUSE_SQLITE = (
    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log WHEN NEW.actor_name = '李四'"
    " BEGIN SELECT RAISE(ABORT, 'refused'); END"
)
REFUSE_POSTGRES = (
    "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN"
    " IF NEW.actor_name = '李四' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql;"
    " CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
)


async def test_a_refused_change_costs_only_its_sender_an_apology(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    client = await demo(start_app, make_settings)
    before = await Customer.get(name="恒力液压有限公司")
    conn = connections.get("default")
    await conn.execute_script(REFUSE_POSTGRES if conn.capabilities.dialect == "postgres" else REFUSE_SQLITE)

    said = await asyncio.gather(
        post_wecom(client, text_xml("zhangsan", "跟进 华为 电话沟通了报价", 9501)),
        post_wecom(client, text_xml("lisi", "跟进 恒力液压 微信沟通了交期", 9502)),
        post_wecom(client, text_xml("zhangsan", "跟进 比亚迪 拜访了周经理", 9503)),
    )
    assert [r.status for r in said] == [200, 200, 200]
    await deliver_all(client.app)

    answers = wecom_sim.texts_to("zhangsan")
    assert [a.split("」")[0] for a in answers] == ["已记录「华为技术有限公司", "已记录「比亚迪股份有限公司"]
    assert wecom_sim.texts_to("lisi") == [FAILED]
    hengli = await Customer.get(name="恒力液压有限公司")
    assert not await FollowUp.filter(customer_id=hengli.id).exists()
    assert hengli.last_followup_at == before.last_followup_at
    assert await FollowUp.filter(staff__name="张三").count() == 2
    assert await AuditLog.filter(action="follow_up").count() == 2
    assert await Message.filter(to_bot=True, handled_at=None).count() == 0  # every message handled, once


async def test_a_burst_from_many_reps_is_answered_once_each(start_app: Any, make_settings: Any, wecom_sim: Any) -> None:
    client = await demo(start_app, make_settings)
    texts = [("zhangsan" if i % 2 else "lisi", "帮助", 9600 + i) for i in range(40)]
    said = await asyncio.gather(*(post_wecom(client, text_xml(u, t, m)) for u, t, m in texts))
    assert {r.status for r in said} == {200}
    await deliver_all(client.app)
    assert len(wecom_sim.texts_to("zhangsan")) == len(wecom_sim.texts_to("lisi")) == 20
    assert await Message.filter(to_bot=True, handled_at__not_isnull=True).count() == 40


async def _seconds_until_handled(msgid: str, patience: float) -> float:
    """Seconds until the WeCom message ``msgid`` is handled, read from the database; inf after ``patience``."""
    loop = asyncio.get_running_loop()
    asked = loop.time()
    for _ in range(round(patience / 0.01)):
        if await Message.filter(platform="wecom", msgid=msgid, handled_at__not_isnull=True).exists():
            return loop.time() - asked
        await asyncio.sleep(0.01)
    return math.inf


async def _callbacks_until(client: Any, stop: asyncio.Event, gap: float, first_msgid: int) -> int:
    """李四 keeps typing 帮助 every ``gap`` seconds (0: as fast as the app answers) until ``stop`` is set."""
    msgid = first_msgid
    while not stop.is_set():
        assert (await post_wecom(client, text_xml("lisi", "帮助", msgid))).status == 200
        msgid += 1
        await asyncio.sleep(gap)
    return msgid - first_msgid


async def test_a_rep_is_answered_at_once_while_other_callbacks_trickle_in(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    client = await demo(start_app, make_settings)
    stop = asyncio.Event()
    trickle = asyncio.create_task(_callbacks_until(client, stop, 0.002, 9700))  # every 2 ms: busy, not saturated
    await asyncio.sleep(0.2)
    await post_wecom(client, text_xml("zhangsan", "帮助", 9699))
    handled_after = await _seconds_until_handled("9699", patience=3)
    stop.set()
    sent = await trickle
    # Acknowledging a callback every 2 ms leaves the server mostly idle, so handling waits neither for a pause
    # (which never comes here) nor for its one-second turn.
    assert handled_after < 0.5
    await deliver_all(client.app)
    assert len(wecom_sim.texts_to("zhangsan")) == 1
    assert len(wecom_sim.texts_to("lisi")) == sent


async def test_callbacks_that_never_stop_do_not_starve_handling(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    client = await demo(start_app, make_settings)
    stop = asyncio.Event()
    streams = [asyncio.create_task(_callbacks_until(client, stop, 0, 20_000 + 1_000 * i)) for i in range(16)]
    await asyncio.sleep(0.2)
    await post_wecom(client, text_xml("zhangsan", "帮助", 9698))
    handled_after = await _seconds_until_handled("9698", patience=5)
    stop.set()
    sent = sum(await asyncio.gather(*streams))
    # Acknowledgements come first, but handling still gets a batch at least once a second.
    assert handled_after < 5, "handling starved while callbacks kept coming"
    await deliver_all(client.app)
    assert len(wecom_sim.texts_to("zhangsan")) == 1
    assert await Message.filter(to_bot=True, handled_at=None).count() == 0
    assert len(wecom_sim.texts_to("lisi")) == sent


async def test_a_reps_replies_arrive_in_order_while_callbacks_keep_coming_and_the_outbox_history_is_long(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    # The dispatcher runs, as in production: replies are sent while callbacks arrive, in the smaller claims and
    # fewer sends at once that acknowledging them first asks for, past a long history of pushes already sent.
    settings = make_settings(keywords={"buying_signal_tag": "", "ticket_mode": "off"})
    client = await start_app(settings, clock=Clock(NOW), run_scheduler=False)
    await load_demo(client.app)
    await client.app[BOT].understanding.refresh()
    await OutboxMessage.bulk_create(
        [
            OutboxMessage(
                dedupe_key=f"history:{i}", platform="wecom", recipient="zhangsan", kind="text",
                payload={"text": "早先的推送"}, status=OutboxStatus.SENT, attempts=1, not_before=NOW, sent_at=NOW,
            )
            for i in range(1_000)
        ]
    )  # fmt: skip
    stop = asyncio.Event()
    streams = [asyncio.create_task(_callbacks_until(client, stop, 0, 30_000 + 1_000 * i)) for i in range(4)]
    for i in range(1, 21):
        said = await post_wecom(client, text_xml("zhangsan", f"跟进 华为 第{i}次电话沟通", 9800 + i))
        assert said.status == 200
    stop.set()
    sent = sum(await asyncio.gather(*streams))
    await deliver_all(client.app)
    notes = [t.split("：", 1)[1].split("\n")[0] for t in wecom_sim.texts_to("zhangsan")]
    assert notes == [f"第{i}次电话沟通" for i in range(1, 21)]  # each once, in the order he wrote them
    assert len(wecom_sim.texts_to("lisi")) == sent
    assert await Message.filter(to_bot=True, handled_at=None).count() == 0


# The database refuses to mark any message handled, as a connection lost at the commit would: the batch, the
# message alone and its apology all fail, and the acknowledged message is left stored and unhandled.
REFUSE_HANDLED_SQLITE = (
    "CREATE TRIGGER refuse_handled BEFORE UPDATE OF handled_at ON message BEGIN SELECT RAISE(ABORT, 'lost'); END"
)
REFUSE_HANDLED_POSTGRES = (
    "CREATE FUNCTION refuse_handled() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'lost'; END $$ LANGUAGE plpgsql;"
    " CREATE TRIGGER refuse_handled BEFORE UPDATE OF handled_at ON message FOR EACH ROW"
    " EXECUTE FUNCTION refuse_handled()"
)


async def test_a_message_left_unhandled_by_a_failing_database_is_answered_once_it_recovers(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    client = await demo(start_app, make_settings)
    conn = connections.get("default")
    postgres = conn.capabilities.dialect == "postgres"
    await conn.execute_script(REFUSE_HANDLED_POSTGRES if postgres else REFUSE_HANDLED_SQLITE)

    said = await post_wecom(client, text_xml("zhangsan", "跟进 华为 电话沟通了报价", 9601))
    assert said.status == 200
    await deliver_all(client.app)
    assert wecom_sim.texts_to("zhangsan") == []
    assert await Message.filter(to_bot=True, handled_at=None).count() == 1
    assert not await FollowUp.filter(staff__name="张三").exists()  # every attempt rolled back

    await conn.execute_script(
        "DROP TRIGGER refuse_handled ON message; DROP FUNCTION refuse_handled()"
        if postgres
        else "DROP TRIGGER refuse_handled"
    )
    assert await handle_left_behind(client.app[BOT]) == 0  # not yet: it may still be on its way
    assert await handle_left_behind(client.app[BOT], older_than=timedelta(0)) == 1
    await deliver_all(client.app)

    [answer] = wecom_sim.texts_to("zhangsan")
    assert answer.startswith("已记录「华为技术有限公司")
    assert await FollowUp.filter(staff__name="张三").count() == 1
    assert await Message.filter(to_bot=True, handled_at=None).count() == 0
    assert await handle_left_behind(client.app[BOT]) == 0


async def test_a_customer_added_elsewhere_is_recognized_by_the_next_message_and_a_plain_save_changes_nothing(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    client = await demo(start_app, make_settings)
    await post_wecom(client, text_xml("zhangsan", "帮助", 9801))
    await deliver_all(client.app)
    version = await _vocabulary_version()
    # Saving a customer without changing its name or aliases (a follow-up, a stage) leaves the names known as they are.
    huawei = await Customer.get(name="华为技术有限公司")
    huawei.industry = "通信"
    await huawei.save()
    assert await _vocabulary_version() == version

    # Another instance (or an import) adds a customer; this instance has never been told.
    owner = await Customer.filter(name="华为技术有限公司").values_list("owner_id", flat=True)
    await Customer.create(name="宁德时代新能源科技股份有限公司", aliases=["宁德时代"], owner_id=owner[0])
    assert await _vocabulary_version() > version
    await post_wecom(client, text_xml("zhangsan", "宁德时代", 9802))
    await deliver_all(client.app)

    assert "宁德时代新能源科技股份有限公司" in wecom_sim.texts_to("zhangsan")[-1]


async def _vocabulary_version() -> int:
    rows = await connections.get("default").execute_query_dict("SELECT version FROM vocabulary_version")
    return int(rows[0]["version"])


async def test_the_inbox_write_goes_first_on_the_connection_and_a_cancelled_turn_is_passed_on() -> None:
    # The turns on SQLite's one connection (``bot.sql.ConnectionLock``): handling and the outbox wait in arrival
    # order, the write acknowledgements wait for goes before them, and a waiter that gives up loses nothing.
    lock = sql.ConnectionLock()
    order: list[str] = []

    async def turn(name: str, first: bool = False) -> None:
        with sql.first_in_line() if first else contextlib.nullcontext():
            async with lock:
                order.append(name)
                await asyncio.sleep(0)

    await lock.acquire()
    waiting = [asyncio.create_task(turn("handling")), asyncio.create_task(turn("outbox"))]
    gives_up = asyncio.create_task(turn("gives up"))
    await asyncio.sleep(0)
    waiting.append(asyncio.create_task(turn("inbox", first=True)))
    await asyncio.sleep(0)
    gives_up.cancel()
    lock.release()
    await asyncio.gather(*waiting)
    assert order == ["inbox", "handling", "outbox"]
    assert gives_up.cancelled() and not lock.locked()

    # Cancelled just after its turn came: the turn goes to the next in line.
    await lock.acquire()
    handed = asyncio.create_task(turn("handed the turn, cancelled"))
    after = asyncio.create_task(turn("after"))
    await asyncio.sleep(0)
    lock.release()
    handed.cancel()
    await after
    assert order[-1] == "after" and handed.cancelled() and not lock.locked()

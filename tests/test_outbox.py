"""The outbox dispatcher as users feel it: replies leave as soon as they are ready, not at the next poll."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.app import BOT
from models.staff import Role, Staff
from tests.helpers import post_wecom, text_xml


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
    await Staff.create(name="张三", wecom_userid="zhangsan", role=Role.REP)
    await Staff.create(name="李四", wecom_userid="lisi", role=Role.REP)
    wecom_sim.slow_next(1, seconds=2.0, endpoint="message/send")  # WeCom takes its time with the first reply

    await post_wecom(client, text_xml("zhangsan", "帮助", 8001))
    await wait_for(lambda: any(c["endpoint"] == "message/send" for c in wecom_sim.calls))
    # 李四 writes while 张三's reply is still on its way; his reply is ready before that send returns.
    await post_wecom(client, text_xml("lisi", "帮助", 8002))
    await client.app[BOT].tasks.idle()
    assert wecom_sim.texts_to("zhangsan") == []  # the first send is indeed still in flight

    await wait_for(lambda: len(wecom_sim.texts_to("zhangsan")) == 1)
    await wait_for(lambda: len(wecom_sim.texts_to("lisi")) == 1)

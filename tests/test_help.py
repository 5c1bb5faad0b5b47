"""A rep asks for help in WeCom: the overview arrives as one message however many capabilities there are, and
「帮助 全部」 lists every intent with all its examples."""

from __future__ import annotations

from typing import Any

from bot.keys import BOT
from tests.driver import WeComChat
from tests.simulators.wecom import WeComSimulator
from tests.test_customers import demo

WECOM_TEXT_BYTES = 2048


async def test_the_overview_fits_one_message_and_everything_is_one_more_question_away(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    client = await demo(start_app, make_settings)
    chat = WeComChat(client, deliver=True)
    await chat.say("zhangsan", "帮助", 9800)
    [overview] = wecom_sim.texts_to("zhangsan")
    assert len(overview.encode()) <= WECOM_TEXT_BYTES
    assert "「把金风科技转给李四跟进」" in overview

    await chat.say("zhangsan", "帮助 全部", 9801)
    everything = "\n".join(wecom_sim.texts_to("zhangsan")[1:])
    for spec in client.app[BOT].intents.ordered():
        if spec.name != "help" and spec.examples:
            assert all(f"「{example}」" in everything for example in spec.examples), spec.name

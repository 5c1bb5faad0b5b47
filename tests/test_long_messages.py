"""Long messages: a rep pastes a 34k-character Chinese spec and a 100 KB log, into the chat with a customer and to
the bot; the next rep is still answered, the pastes are kept whole and found with 搜. Understanding decides on the
first ``UNDERSTOOD_CHARS`` characters and keeps a long note whole, and reading is linear in the text, whatever its
shape."""

from __future__ import annotations

import random
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.capability import Registry
from bot.demo import load_demo
from bot.understanding import UNDERSTOOD_CHARS, Understanding
from handlers import CAPABILITIES
from models.followups import FollowUp
from models.messages import Message
from tests.driver import WeComChat
from tests.helpers import post_wecom, text_xml
from tests.test_archive import (  # the chat archive's fixtures too: key_pairs, standin_lib, server
    ArchiveServer,
    archive_settings,  # noqa: F401
    chat,
    key_pairs,  # noqa: F401
    notify_xml,
    server,  # noqa: F401
    standin_lib,  # noqa: F401
)

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 18, 10, tzinfo=TZ)
# Words of a product spec, free of anything a search reads as a filter (近3年, 客户:) or trims off (记录).
SPEC_WORDS = (
    "耐高温", "材料", "设备", "交期", "样品", "测试", "价格", "规格", "型号", "参数", "图纸", "包装", "运输", "质量",
    "检验", "报告", "安装", "调试", "密封圈", "液压", "阀门", "压力", "流量", "寿命", "批次", "，", "。",
)  # fmt: skip
SPEC_MARK = "陶瓷纤维毡九号配方"  # appears once, near the end of the spec
LOG_MARK = "ERR-7731-overheat"  # appears once, near the end of the log


def spec(chars: int) -> str:
    """A pasted product spec of ``chars`` characters with ``SPEC_MARK`` near its end."""
    rng = random.Random(34)
    words: list[str] = []
    length = 0
    while length < chars:
        words.append(rng.choice(SPEC_WORDS))
        length += len(words[-1])
    text = "".join(words)[: chars - 2] + "为准"  # ends in a word: a note keeps its last character
    at = chars - 1000
    return text[:at] + SPEC_MARK + text[at + len(SPEC_MARK) :]


def log(chars: int) -> str:
    """A pasted machine log of ``chars`` ASCII characters with ``LOG_MARK`` near its end."""
    lines = [
        f"2026-11-18 10:{i // 60 % 60:02d}:{i % 60:02d} pump-3 pressure {180 + i % 40} bar ok" for i in range(5000)
    ]
    text = "\n".join(lines)[:chars]
    at = chars - 2000
    return text[:at] + LOG_MARK + text[at + len(LOG_MARK) :]


async def test_long_pastes_are_kept_whole_and_found_and_the_next_rep_is_answered(
    archive_settings: Any,  # noqa: F811
    start_app: Any,
    server: ArchiveServer,  # noqa: F811
    wecom_sim: Any,
) -> None:
    client = await start_app(archive_settings())
    await load_demo(client.app)
    people = WeComChat(client, wecom_sim)
    pasted, logged = spec(34_000), log(100_000)
    # 张三 pastes both into the chat with 华为's 刘工; WeCom's chat archive has them
    server.add(chat(1, "zhangsan", "wmHW001", pasted))
    server.add(chat(2, "zhangsan", "wmHW001", logged))
    # and to the bot: the spec as a follow-up note, the log on its own; each is acknowledged as it arrives
    for xml in (
        notify_xml(),
        text_xml("zhangsan", f"跟进 华为 发了规格书：{pasted}", 9_501),
        text_xml("zhangsan", logged, 9_502),
    ):
        assert (await post_wecom(client, xml)).status == 200
    # 李四 writes right after; he is acknowledged and answered
    await people.say("lisi", "帮助", 9_503)
    [answer] = people.sent_to("lisi")
    assert answer.startswith("我是您的 CRM 助手")

    # the texts are stored whole, the spec is the follow-up's note
    assert await Message.get(msgid="9501").values_list("text", flat=True) == f"跟进 华为 发了规格书：{pasted}"
    assert await Message.get(msgid="9502").values_list("text", flat=True) == logged
    assert await Message.get(msgid="arc001").values_list("text", flat=True) == pasted
    assert await Message.get(msgid="arc002").values_list("text", flat=True) == logged
    [note] = await FollowUp.all()
    assert note.content == f"发了规格书：{pasted}"
    *_, confirmed, not_understood = people.sent_to("zhangsan")  # after the demo's own keyword notice
    assert confirmed.startswith("已记录「华为技术有限公司」的跟进") and "共 34006 字，已完整保存" in confirmed
    assert not_understood.startswith("抱歉，我没听懂")

    # 搜 finds words deep inside both pastes, and a fragment across the place where indexing paused
    for query in (SPEC_MARK, LOG_MARK, pasted[4090:4102].strip("，。")):
        await people.say("zhangsan", f"搜 {query}")
        found = people.sent_to("zhangsan")[-1]
        assert found.startswith("找到 1 条包含"), (query, found)
        assert "华为技术有限公司" in found


@pytest.fixture(scope="module")
def reader() -> Understanding:
    registry = Registry(CAPABILITIES)
    understanding = Understanding(TZ, registry.commands, registry.phrases)
    understanding.load([("华为技术有限公司", ["华为"]), ("恒力液压有限公司", ["恒力液压", "恒力"])], ["张三", "李四"])
    understanding.warm_up()
    return understanding


def test_the_first_characters_decide_and_a_long_note_is_kept_whole(reader: Understanding) -> None:
    padding = "很" * UNDERSTOOD_CHARS
    # a next time said within the first characters is read; one said after them is not
    early = reader.parse(f"跟进 华为 明天下午3点再联系，{padding}", NOW)
    late = reader.parse(f"跟进 华为 {padding}，明天下午3点再联系", NOW)
    assert (early.intent, early.slots["next_at"]) == ("follow_up", "2026-11-19T15:00:00+08:00")
    assert late.intent == "follow_up" and "next_at" not in late.slots
    # the note is the whole text after the customer, with the line breaks of what was not read
    note = "电话沟通了报价，" + "对方要求把交期提前到月底，" * 100 + "\n下周再确认。\n附：报价单"
    parsed = reader.parse(f"跟进 华为 {note}", NOW)
    assert parsed.slots["content"] == note
    # a command word after the first characters is only text
    assert reader.parse(f"{padding} 帮助", NOW).intent == "unknown"


SHAPES = {
    "a log line": "2026-11-18 10:00:01 pump-3 pressure 182 bar ok\n",
    "a spec": "耐高温材料的交期，样品测试报告。",
    "one letter": "a",
    "digits": "1",
    "Chinese numerals": "一",
    "particles": "了",
    "commas": "，",
    "a search word": "搜",
    "a command with a customer": "跟进 华为 ",
    "create-customer words": "给",
    "CRM words": "华为 故障 跟进 3天后 85折 120万 #12 ",
}


def _reading_time(reader: Understanding, text: str) -> float:
    """The least CPU time of this thread over three readings: other processes on a busy machine do not count."""
    best = float("inf")
    for _ in range(3):
        started = time.thread_time()
        reader.read(text, NOW)  # every matcher on the whole text, without the cap that ``parse`` puts in front
        best = min(best, time.thread_time() - started)
    return best


@pytest.mark.parametrize("unit", list(SHAPES.values()), ids=list(SHAPES))
def test_reading_is_linear_in_the_length_of_the_text(reader: Understanding, unit: str) -> None:
    """Ten times the text costs about ten times the reading, not a hundred: 100 KB against 10 KB, with a generous
    factor and a floor so that a loaded machine's noise does not count, while a quadratic pattern still does."""
    small, large = ((unit * (n // len(unit) + 1))[:n] for n in (10_000, 100_000))
    assert _reading_time(reader, large) < 40 * max(_reading_time(reader, small), 0.01)

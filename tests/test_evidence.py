"""Writes need evidence: a rep's question, or a customer's name with a few words, never records a follow-up, a
ticket or a stage. Questions are answered (the profile, a search of the chats), deleting a customer is refused
with what is possible instead, and a line that does not say what it wants gets a numbered question whose answer
picks the reading — in WeCom, through ``crmbot parse``, over the table tests/data/no_write.tsv and for any
question-shaped line (Hypothesis)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.capability import Registry
from bot.cli import main
from bot.keys import BOT
from bot.understanding import Understanding
from handlers import CAPABILITIES
from models.approvals import Approval
from models.customers import Customer, PendingChoice
from models.followups import FollowUp
from models.reminders import Reminder
from models.staff import Staff
from models.tickets import Ticket
from tests.driver import WeComChat
from tests.simulators.wecom import WeComSimulator
from tests.test_customers import NOW, demo

WRITES = {
    "follow_up", "create_ticket", "update_ticket", "set_stage", "set_grade", "tag", "transfer", "create_customer",
    "request_discount", "remind", "approve", "reject", "withdraw",
}  # fmt: skip
TABLE = Path(__file__).parent / "data" / "no_write.tsv"


async def crm_state() -> list[Any]:
    """Everything a wrongly understood line could have written."""
    customers = (
        await Customer.all()
        .order_by("id")
        .values_list("id", "last_followup_at", "next_followup_at", "stage", "grade", "tags", "owner_id")
    )
    counts = [await model.all().count() for model in (FollowUp, Ticket, Approval, Reminder)]
    return [customers, counts]


async def wecom_team(start_app: Any, make_settings: Any, wecom_sim: WeComSimulator) -> WeComChat:
    """The demo team in WeCom at NOW."""
    return WeComChat(await demo(start_app, make_settings), wecom_sim, deliver=True)


async def say(chat: WeComChat, user: str, text: str) -> str:
    """What the bot answered ``user`` (exactly one reply)."""
    before = len(chat.sent_to(user))
    await chat.say(user, text)
    replies = chat.sent_to(user)[before:]
    assert len(replies) == 1, replies
    return replies[0]


# -- in WeCom ------------------------------------------------------------------------------------------------------


async def test_questions_and_unsupported_actions_in_wecom_write_nothing(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    chat = await wecom_team(start_app, make_settings, wecom_sim)
    before = await crm_state()

    assert "联系人：刘工 决策人 13800000001" in await say(chat, "zhangsan", "华为的联系人是谁")
    said = await say(chat, "zhangsan", "华为上次说了什么")  # the profile ends with the latest archived messages
    assert "【华为技术有限公司】" in said and "耐高温材料" in said
    assert "没有找到包含「交期」的聊天记录（客户：比亚迪股份有限公司）" in await say(
        chat, "zhangsan", "比亚迪有没有提到交期"
    )
    assert "找到 1 条包含「交期」的聊天记录" in await say(chat, "lisi", "恒力液压有没有提到交期？")
    assert "阶段：报价" in await say(chat, "zhangsan", "比亚迪签了吗？")
    assert "【三一重工股份有限公司】" in await say(chat, "zhangsan", "三一重工现在是什么阶段?")
    refused = await say(chat, "zhangsan", "删除客户 比亚迪")
    assert "不能删除客户「比亚迪股份有限公司」" in refused and "丢单了" in refused
    assert "不能删除客户「恒力液压有限公司」" in await say(chat, "lisi", "把恒力液压删了")
    # The change history belongs to its own capability; whatever answers, nothing is recorded.
    for history in ("操作记录 华为", "谁改了华为的阶段"):
        assert not (await say(chat, "zhangsan", history)).startswith("已")
    # 我 is the sender, and transfer's own rule holds: a rep may not take a colleague's customer.
    assert "「恒力液压有限公司」由李四负责，不在公海，无法认领。如需接手，请找主管转给您。" in await say(
        chat, "zhangsan", "把恒力液压转给我"
    )

    assert await crm_state() == before


async def test_a_manager_takes_a_customer_of_the_team_with_转给我(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    chat = await wecom_team(start_app, make_settings, wecom_sim)
    assert "已把「恒力液压有限公司」从李四转给王经理" in await say(chat, "wangjl", "把恒力液压转给我")
    manager = await Staff.get(name="王经理")
    assert (await Customer.get(name="恒力液压有限公司")).owner_id == manager.id
    assert not await FollowUp.exists()


async def test_a_discount_reaches_the_approver_with_the_reason_as_written(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    chat = await wecom_team(start_app, make_settings, wecom_sim)
    await chat.say("zhangsan", "给华为打个85折，竞争对手报价更低")
    await chat.say("zhangsan", "申请折扣 比亚迪 打个9折 合同金额80万 ，，批量采购！")
    reasons = await Approval.all().order_by("id").values_list("reason", flat=True)
    assert reasons == ["竞争对手报价更低", "批量采购"]
    [card, _] = chat.cards_to("wangjl")
    assert "竞争对手报价更低" in json.dumps(card, ensure_ascii=False)


# -- the numbered question -----------------------------------------------------------------------------------------


async def test_a_customer_with_a_few_words_is_asked_about_and_the_answer_picks(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    chat = await wecom_team(start_app, make_settings, wecom_sim)
    before = await crm_state()
    asked = await say(chat, "zhangsan", "华为 报价单")
    assert asked.startswith("您是想：")
    assert "1. 记录跟进：报价单" in asked
    assert "2. 查看客户「华为技术有限公司」" in asked
    assert "3. 搜索聊天记录：「报价单」" in asked
    assert await crm_state() == before

    recorded = await say(chat, "zhangsan", "1")
    assert recorded.startswith("已记录「华为技术有限公司」的跟进（沟通）：报价单")
    huawei = await Customer.get(name="华为技术有限公司")
    assert huawei.last_followup_at == NOW
    assert [f.content for f in await FollowUp.all()] == ["报价单"]
    assert not await PendingChoice.exists()

    # The next follow-up time said in the line stays with the follow-up option.
    assert "1. 记录跟进：下周三" in await say(chat, "zhangsan", "三一 下周三")
    await say(chat, "zhangsan", "1")
    sany = await Customer.get(name="三一重工股份有限公司")
    assert sany.next_followup_at == datetime.fromisoformat("2026-11-25T09:00:00+08:00")


async def test_answering_2_shows_the_profile_and_3_searches_the_chats(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    chat = await wecom_team(start_app, make_settings, wecom_sim)
    before = await crm_state()
    await say(chat, "zhangsan", "华为 下周三")
    assert "【华为技术有限公司】" in await say(chat, "zhangsan", "2")
    asked = await say(chat, "lisi", "恒力液压 交期月底")
    assert "3. 搜索聊天记录：「交期」" in asked
    assert "找到 1 条包含「交期」的聊天记录（客户：恒力液压有限公司）" in await say(chat, "lisi", "3")
    assert await crm_state() == before
    # Answered once: a second "3" is no answer any more.
    assert "没听懂" in await say(chat, "lisi", "3")


def test_crmbot_parse_shows_the_question_it_would_ask(tmp_path: Path) -> None:
    env = {"CRMBOT_DATABASE__URL": f"sqlite://{tmp_path}/crm.sqlite3"}
    runner = CliRunner()
    assert runner.invoke(main, ["demo"], env=env).exit_code == 0
    texts = ["华为 报价单", "华为的联系人是谁", "删除客户 比亚迪"]
    result = runner.invoke(main, ["parse", *texts, "--now", NOW.isoformat(), "--json"], env=env)
    assert result.exit_code == 0, result.output
    clarify, contact, delete = [json.loads(line) for line in result.output.splitlines()]
    assert clarify["intent"] == "clarify"
    assert clarify["slots"]["options"] == [
        {"intent": "follow_up", "slots": {"customer": "华为技术有限公司", "content": "报价单"}},
        {"intent": "show_customer", "slots": {"customer": "华为技术有限公司"}},
        {"intent": "search", "slots": {"customer": "华为技术有限公司", "query": "报价单"}},
    ]
    assert (contact["intent"], contact["slots"]) == ("show_customer", {"customer": "华为技术有限公司"})
    assert (delete["intent"], delete["slots"]["customer"]) == ("unsupported", "比亚迪股份有限公司")


# -- the table -------------------------------------------------------------------------------------------------------


def no_write_table() -> list[tuple[str, str]]:
    rows = []
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("##"):
            text, intent = line.split("\t")
            rows.append((text, intent))
    return rows


async def test_no_line_of_the_no_write_table_is_a_write(start_app: Any, make_settings: Any) -> None:
    rows = no_write_table()
    assert len(rows) >= 60
    assert sum("？" in t for t, _ in rows) >= 10 and sum("?" in t for t, _ in rows) >= 5
    assert {i for _, i in rows} >= {"show_customer", "search", "clarify", "history", "unsupported"}
    client = await demo(start_app, make_settings)
    understanding = client.app[BOT].understanding
    wrong = []
    for text, intent in rows:
        parsed = understanding.parse(text, NOW)
        if parsed.intent in WRITES or parsed.intent != intent:
            wrong.append(f"{text!r}: expected {intent}, got {parsed.intent} {parsed.slots}")
    assert not wrong, "\n".join(wrong)


# -- any question ------------------------------------------------------------------------------------------------------

TZ = ZoneInfo("Asia/Shanghai")
NAMES = [
    ("华为技术有限公司", ["华为"]), ("比亚迪股份有限公司", ["比亚迪"]), ("恒力液压有限公司", ["恒力液压", "恒力"]),
    ("金风科技股份有限公司", ["金风科技", "金风"]), ("三一重工股份有限公司", ["三一重工", "三一"]),
]  # fmt: skip
REGISTRY = Registry(CAPABILITIES)
UNDERSTANDING = Understanding(TZ, REGISTRY.commands, REGISTRY.phrases)
UNDERSTANDING.load(NAMES, ["张三", "李四", "王经理"])
# CRM words a question may carry, each of them write evidence in a statement.
WORDS = [
    "跟进", "跟进了", "拜访了", "电话沟通", "聊了", "约了", "发了报价", "工单", "#12", "#AP3", "已解决", "紧急", "故障",
    "漏油", "坏了", "明天下午3点", "下周三", "85折", "优惠15%", "120万", "提醒我", "转给", "李四", "标签", "+重点",
    "赢单了", "签了", "丢单了", "阶段", "报价", "谈判", "等级", "A级", "评为B级", "新建客户", "建档", "同意", "驳回",
    "撤回", "申请", "的", "了", "也", "已经", "那边", "合同", "样品", "交期", " ",
]  # fmt: skip
ENDINGS = ["吗", "吗？", "吗?", "？", "?", "呢？", "了吗", "没有？", "了没", "么"]
ASKING = ["谁", "为什么", "是不是", "有没有", "多少", "怎么", "什么时候", "哪天", "几"]
customers = st.sampled_from([alias for _, aliases in NAMES for alias in aliases] + [n for n, _ in NAMES])
words = st.lists(st.sampled_from(WORDS), max_size=6).map("".join)
question = st.one_of(
    st.tuples(customers, words, st.sampled_from(ENDINGS)).map("".join),
    st.tuples(customers, st.sampled_from(ASKING), words).map("".join),
    st.tuples(st.sampled_from(ASKING), words, customers, words).map("".join),
)


@pytest.fixture(scope="module", autouse=True)
def warmed_up() -> None:
    """Load jieba's dictionary and jionlp's tables before the first example (Hypothesis' deadline)."""
    UNDERSTANDING.warm_up()


@settings(max_examples=500, deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])
@given(question)
def test_a_question_is_never_a_write(text: str) -> None:
    intent, slots = UNDERSTANDING.read(text, datetime(2026, 11, 18, 10, tzinfo=TZ))
    assert intent not in WRITES, (text, intent, slots)

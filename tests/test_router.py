"""How the bot understands a line: the phrasing table in tests/data/phrasings.tsv (commands and free Chinese,
fixed now), ``crmbot parse`` as a user runs it, names kept current as customers change, and the customer
resolution a rep sees in chat: prefix, numbered choices answered with "2" (across a restart), close matches."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from bot.cli import main
from bot.clock import Clock
from bot.demo import load_demo
from bot.keys import BOT, CLOCK
from models.audit import AuditLog
from models.customers import Customer, PendingChoice
from models.followups import FollowUp
from models.staff import Staff
from tests.driver import ConsoleChat

INTENTS = (
    "help", "create_customer", "show_customer", "follow_up", "create_ticket", "update_ticket", "search", "remind",
    "set_stage", "set_grade", "tag", "transfer", "request_discount", "approve", "reject", "withdraw", "nps_report",
    "unknown",
)  # fmt: skip
TABLE = Path(__file__).parent / "data" / "phrasings.tsv"
NOW = datetime.fromisoformat("2026-11-18T10:00:00+08:00")


def table() -> list[tuple[str, str, dict[str, Any]]]:
    rows = []
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("##"):
            continue
        text, intent, slots = line.split("\t")
        rows.append((text, intent, json.loads(slots)))
    return rows


async def demo_app(start_app: Any, make_settings: Any, now: datetime = NOW) -> Any:
    client = await start_app(make_settings(), clock=Clock(now), run_scheduler=False, run_dispatcher=False)
    await load_demo(client.app)
    await client.app[BOT].understanding.refresh()
    return client.app


def test_the_table_has_enough_realistic_lines() -> None:
    rows = table()
    assert len(rows) >= 80
    intents = {intent for _, intent, _ in rows}
    for needed in INTENTS:
        assert needed in intents, needed


async def test_every_line_of_the_table_is_understood_with_its_slots(start_app: Any, make_settings: Any) -> None:
    app = await demo_app(start_app, make_settings)
    understanding = app[BOT].understanding
    wrong = []
    for text, intent, slots in table():
        parsed = understanding.parse(text, NOW)
        if parsed.intent != intent or any(parsed.slots.get(k) != v for k, v in slots.items()):
            wrong.append(f"{text!r}: expected {intent} {slots}, got {parsed.intent} {parsed.slots}")
    assert not wrong, "\n".join(wrong)


def test_crmbot_parse_prints_one_json_line_per_text_and_writes_nothing(tmp_path: Path) -> None:
    env = {"CRMBOT_DATABASE__URL": f"sqlite://{tmp_path}/crm.sqlite3"}
    runner = CliRunner()
    assert runner.invoke(main, ["demo"], env=env).exit_code == 0
    texts = ["跟进了华为，下周三再聊报价", "工单 #12 已解决 更换了密封圈", "本月NPS", "今天天气不错"]
    result = runner.invoke(main, ["parse", *texts, "--as", "zhangsan", "--now", NOW.isoformat(), "--json"], env=env)
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [o["text"] for o in out] == texts
    assert out[0] == {
        "text": texts[0],
        "intent": "follow_up",
        "slots": {"customer": "华为技术有限公司", "content": "下周三再聊报价", "next_at": "2026-11-25T09:00:00+08:00"},
    }
    assert out[1]["slots"] == {"ticket_id": 12, "status": "resolved", "content": "更换了密封圈"}
    assert out[2]["slots"] == {"period": "2026-11"}
    assert out[3]["intent"] == "unknown"
    # Nothing but the JSON lines on stdout (no library banners).
    assert len(result.output.strip().splitlines()) == len(texts)


async def test_a_customer_created_in_chat_is_understood_at_once(start_app: Any, make_settings: Any) -> None:
    app = await demo_app(start_app, make_settings)
    zhangsan = await Staff.get(name="张三")
    out = await ConsoleChat(app).say(
        zhangsan, "新建客户 宁德时代新能源科技股份有限公司", "跟进了宁德时代，明天下午3点再聊技术方案"
    )
    assert "已为您建档「宁德时代新能源科技股份有限公司」" in out
    assert "已记录「宁德时代新能源科技股份有限公司」的跟进" in out
    record = await FollowUp.get(customer__name="宁德时代新能源科技股份有限公司")
    assert record.next_at == datetime.fromisoformat("2026-11-19T15:00:00+08:00")


async def test_a_customer_added_elsewhere_is_picked_up_before_the_next_message(
    start_app: Any, make_settings: Any
) -> None:
    app = await demo_app(start_app, make_settings)
    zhangsan = await Staff.get(name="张三")
    # Another instance (or an import) adds a customer straight to the database.
    await Customer.create(name="徐州工程机械集团有限公司", aliases=["徐工"], owner_id=zhangsan.id)
    out = await ConsoleChat(app).say(zhangsan, "徐工赢单了")
    assert "「徐州工程机械集团有限公司」阶段：潜在 → 成交" in out
    assert app[BOT].understanding.parse("徐工", NOW).slots == {"customer": "徐州工程机械集团有限公司"}


async def test_a_prefix_finds_the_full_name(start_app: Any, make_settings: Any) -> None:
    app = await demo_app(start_app, make_settings)
    lisi = await Staff.get(name="李四")
    out = await ConsoleChat(app).say(lisi, "客户 恒力液压有限")
    assert "【恒力液压有限公司】" in out


async def test_an_ambiguous_name_asks_and_a_reply_with_a_number_picks_even_after_a_restart(
    start_app: Any, make_settings: Any
) -> None:
    settings = make_settings()
    client = await start_app(settings, clock=Clock(NOW), run_scheduler=False, run_dispatcher=False)
    await load_demo(client.app)
    zhangsan = await Staff.get(name="张三")
    await Customer.create(name="华为终端有限公司", owner_id=zhangsan.id)
    await Customer.create(name="华为数字能源技术有限公司", owner_id=zhangsan.id)
    out = await ConsoleChat(client.app).say(zhangsan, "跟进 华为终 演示了新方案")  # one match: no question
    assert "已记录「华为终端有限公司」的跟进" in out
    out = await ConsoleChat(client.app).say(zhangsan, "跟进 华为数字 演示了新方案", "跟进 华 寄了样品，下周三再联系")
    assert "对应多个客户" in out
    assert "1. 华为技术有限公司" in out and "2. 华为数字能源技术有限公司" in out and "3. 华为终端有限公司" in out
    assert await PendingChoice.filter(staff_id=zhangsan.id).count() == 1

    # The bot restarts before the rep answers.
    await client.close()
    client = await start_app(settings, clock=Clock(NOW), run_scheduler=False, run_dispatcher=False)
    out = await ConsoleChat(client.app).say(zhangsan, "2")
    assert "已记录「华为数字能源技术有限公司」的跟进（沟通）：寄了样品，下周三再联系" in out
    assert not await PendingChoice.filter(staff_id=zhangsan.id).exists()
    # A second "2" is no longer an answer.
    assert "没听懂" in await ConsoleChat(client.app).say(zhangsan, "2")


async def test_an_unknown_customer_gets_close_matches_and_nothing_changes(start_app: Any, make_settings: Any) -> None:
    app = await demo_app(start_app, make_settings)
    zhangsan = await Staff.get(name="张三")
    audits = await AuditLog.all().count()
    out = await ConsoleChat(app).say(zhangsan, "跟进 华伟技术 电话沟通了价格")
    assert "没有找到客户「华伟技术」" in out and "华为技术有限公司" in out
    assert await AuditLog.all().count() == audits
    assert not await FollowUp.exists()


async def test_the_clock_of_the_app_is_what_relative_times_mean(start_app: Any, make_settings: Any) -> None:
    app = await demo_app(start_app, make_settings, now=datetime.fromisoformat("2026-11-30T16:00:00+08:00"))
    parsed = app[BOT].understanding.parse("月底提醒我催金风回款", app[CLOCK].now())
    # 月底 said on the last day of the month is today.
    assert parsed.slots["at"] == "2026-11-30T09:00:00+08:00"
    parsed = app[BOT].understanding.parse("周一提醒我写周报", app[CLOCK].now())
    assert parsed.slots["at"] == "2026-12-07T09:00:00+08:00"

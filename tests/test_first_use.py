"""What a new user runs into in the first days: trying the rules out on a future date without changing anything,
a database that is not there, a CSV with a quote left open, two colleagues with the same name, won customers from
the old system, a keyword alert in the middle of the night, NPS on the profile card and in the reports, and a
mistyped `--since`.

CLI stories run the real `crmbot` (as a process, or in-process with click's runner where the database is read
afterwards); chat stories go through the real app, the outbox and the WeCom simulator.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.cli import running_app
from bot.clock import Clock
from bot.demo import load_demo
from bot.keys import BOT, OUTBOX
from bot.types import IncomingMessage
from models.audit import AuditLog
from models.customers import Customer
from models.nps import Survey, SurveyChannel, SurveyTrigger
from models.outbox import OutboxMessage
from models.reminders import RuleFiring
from models.staff import Staff
from tests.driver import ConsoleChat
from tests.helpers import settle
from tests.simulators.wecom import WeComSimulator
from tests.test_cli import crmbot as crmbot_process
from tests.test_import import assert_bad_input, assert_ok, config, counts, crmbot, query, staff_table, write_csv
from tests.test_rules_engine import _crmbot, cli_env

__all__ = ["config"]  # the fixture, shared with the import tests

SH = ZoneInfo("Asia/Shanghai")


# -- jobs run --dry-run -----------------------------------------------------------------------------------------


async def database_state(settings: Any) -> dict[str, Any]:
    async with running_app(settings):
        return {
            "firings": await RuleFiring.all().count(),
            "outbox": await OutboxMessage.all().count(),
            "audit": await AuditLog.all().count(),
            "owners": dict(await Customer.all().order_by("id").values_list("name", "owner_id")),
        }


async def test_a_dry_run_prints_what_would_fire_and_changes_nothing(make_settings: Any, wecom_sim: Any) -> None:
    settings = make_settings()
    env = cli_env(settings)
    code, _, err = await _crmbot("demo", env=env)
    assert code == 0, err
    before = await database_state(settings)
    # The demo customers were followed up 5 days ago: ten days on, the ladder hands them over.
    at = (datetime.now(UTC) + timedelta(days=10)).astimezone(SH).replace(hour=10, minute=0).isoformat()

    code, dry, err = await _crmbot("jobs", "run", "--now", at, "--dry-run", "--json", env=env)
    assert code == 0, err
    would = [json.loads(line) for line in dry.splitlines()]
    assert {x["rule"] for x in would} >= {"ladder_handover", "ladder_handover_notice"}
    assert await database_state(settings) == before  # no firing key, no handover, no outbox row, no audit
    assert wecom_sim.texts_to("wangjl") == []
    code, again, _ = await _crmbot("jobs", "run", "--now", at, "--dry-run", "--json", env=env)
    assert (code, again) == (0, dry)

    code, applied, err = await _crmbot("jobs", "run", "--now", at, "--json", env=env)
    assert code == 0, err
    assert [json.loads(line) for line in applied.splitlines()] == would
    after = await database_state(settings)
    assert after["firings"] == len(would) and after["owners"] != before["owners"]
    assert any("客户移交" in t for t in wecom_sim.texts_to("wangjl"))

    code, out, _ = await _crmbot("jobs", "run", "--help", env=env)
    assert code == 0 and "APPLY" in out and "--dry-run" in out and "changes nothing" in " ".join(out.split())


# -- a database that is not there -------------------------------------------------------------------------------


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


EVERY_COMMAND = (
    ("jobs", "run"),
    ("search", "耐高温"),
    ("parse", "跟进华为"),
    ("chat", "--as", "张三"),
    ("demo",),
    ("serve",),
)


@pytest.mark.parametrize(
    ("url", "commands"),
    [
        (f"postgres://crm:secret@127.0.0.1:{dead_port()}/crmbot", EVERY_COMMAND),
        # Tortoise would wait forever on a file it cannot create.
        ("sqlite:///nonexistent-folder/crmbot.sqlite3", (("jobs", "run"), ("serve",))),
    ],
    ids=["postgres-dead-port", "sqlite-missing-folder"],
)
def test_a_database_that_is_not_there_is_one_line_and_exit_2(
    url: str, commands: tuple[tuple[str, ...], ...], tmp_path: Path
) -> None:
    config_file = tmp_path / "crmbot.toml"
    config_file.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    sheet = write_csv(tmp_path / "c.csv", "客户名称\n华为\n")
    for args in (*commands, ("import", "customers", str(sheet))):
        done = crmbot_process(tmp_path, *args, "--config", str(config_file))
        err = done.stderr.strip()
        assert done.returncode == 2, (args, done.returncode, err[-500:])
        assert err.startswith("错误 error: 无法打开数据库 cannot open the database") and "\n" not in err, (args, err)
        assert "secret" not in err


def test_a_mistyped_since_names_since(tmp_path: Path, config: Path) -> None:
    done = crmbot_process(tmp_path, "search", "耐高温", "--since", "bad", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.strip() == "错误 error: --since must be ISO 8601, got 'bad'"


# -- imports ----------------------------------------------------------------------------------------------------


def test_a_csv_with_a_quote_left_open_is_refused_naming_the_row(config: Path, tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "customers.csv", '客户名称,负责人\n华为,张三\n"未闭合的引号,孙七\n比亚迪,李四\n')
    err = assert_bad_input(crmbot(config, "import", "customers", str(sheet)))
    assert "第3行引号未闭合" in err
    assert query(config, counts) == (0, 0, 0, 0)


def test_two_colleagues_with_one_name_are_not_merged(config: Path, tmp_path: Path) -> None:
    sheet = write_csv(
        tmp_path / "staff.csv",
        "姓名,企业微信账号,角色\n张伟,zhangwei,销售\n王磊,wanglei,销售\n张伟,zhangwei2,销售\n王磊,wanglei,销售\n",
    )
    out = assert_ok(crmbot(config, "import", "staff", str(sheet)))
    assert "新增 2" in out and "合并重复行 1" in out and "拒绝 1" in out  # the identical 王磊 row is the same person
    assert "第4行: 姓名「张伟」与第2行重名但账号不同" in out
    assert query(config, staff_table) == {"张伟": ("zhangwei", "rep", None), "王磊": ("wanglei", "rep", None)}


def test_won_customers_from_the_old_system_get_a_deal_date_and_so_a_survey(config: Path, tmp_path: Path) -> None:
    assert_ok(crmbot(config, "import", "staff", str(write_csv(tmp_path / "s.csv", "姓名,角色\n张三,销售\n"))))
    sheet = write_csv(
        tmp_path / "customers.csv",
        "客户名称,阶段,负责人,成交日期\n老客户甲,成交,张三,\n老客户乙,已成交,张三,2026-01-05\n潜在客户丙,潜在,张三,\n",
    )
    started = datetime.now(UTC)
    assert_ok(crmbot(config, "import", "customers", str(sheet)))

    async def won() -> dict[str, datetime | None]:
        return {c.name: c.won_at for c in await Customer.all()}

    dates = query(config, won)
    assert dates["潜在客户丙"] is None
    assert dates["老客户乙"] == datetime(2026, 1, 5, tzinfo=SH)
    assert dates["老客户甲"] is not None and started <= dates["老客户甲"] <= datetime.now(UTC)

    later = (datetime.now(UTC) + timedelta(days=16)).isoformat()
    out = assert_ok(crmbot(config, "jobs", "run", "--now", later, "--dry-run", "--json"))
    assert ("nps_survey", "老客户甲") in {(x["rule"], x["customer"]) for x in map(json.loads, out.splitlines())}


# -- quiet hours for keyword alerts -----------------------------------------------------------------------------


async def test_a_keyword_alert_in_the_night_waits_for_the_morning(
    start_app: Any, make_settings: Any, wecom_sim: WeComSimulator
) -> None:
    night = datetime(2026, 11, 18, 3, 39, tzinfo=SH)
    clock = Clock(night)
    client = await start_app(
        make_settings(keywords={"ticket_mode": "suggest"}), clock=clock, run_scheduler=False, run_dispatcher=False
    )
    app = client.app
    await load_demo(app)
    await settle(app)
    await OutboxMessage.all().delete()  # what the demo itself caused (held for the morning too)
    message = IncomingMessage(
        platform="wecom",
        msgid="night-1",
        sender="wmHW001",
        text="设备坏了，麻烦看一下",
        sent_at=night,
        to_bot=False,
        receivers=("zhangsan",),
    )
    assert await app[BOT].archive(message)
    await settle(app)
    assert wecom_sim.texts_to("zhangsan") == []
    held = await OutboxMessage.get(dedupe_key="keyword-suggest:wecom:night-1")
    assert held.not_before == datetime(2026, 11, 18, 9, 0, tzinfo=SH)

    clock.set(datetime(2026, 11, 18, 9, 0, tzinfo=SH))
    await app[OUTBOX].drain()
    [alert] = wecom_sim.texts_to("zhangsan")
    assert "坏了" in alert and "需要开工单吗" in alert


# -- NPS --------------------------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=SH)


async def answered(customer: Customer, owner: Staff, score: int, at: datetime) -> None:
    await Survey.create(
        customer=customer,
        owner=owner,
        token_hash=f"{customer.id}-{score}-{at.isoformat()}".ljust(64, "x"),
        trigger=SurveyTrigger.DEAL_WON,
        trigger_id=customer.id,
        channel=SurveyChannel.REP_FORWARD,
        sent_at=at - timedelta(days=1),
        expires_at=at + timedelta(days=13),
        answered_at=at,
        score=score,
    )


async def nps_demo(start_app: Any, make_settings: Any) -> ConsoleChat:
    keywords = {"buying_signal_tag": "", "ticket_mode": "off"}
    # No outbox dispatcher: the console prints what is queued for its user, which a dispatcher could send first.
    settings = make_settings(keywords=keywords)
    client = await start_app(settings, clock=Clock(NOW), run_scheduler=False, run_dispatcher=False)
    await load_demo(client.app)
    await client.app[BOT].understanding.refresh()
    return ConsoleChat(client.app)


async def test_the_profile_card_dates_the_nps_answer_in_local_time(start_app: Any, make_settings: Any) -> None:
    chat = await nps_demo(start_app, make_settings)
    huawei = await Customer.get(name="华为技术有限公司")
    # 01:30 on the 18th in Shanghai is still the 17th in UTC.
    await answered(huawei, await Staff.get(name="张三"), 9, datetime(2026, 11, 18, 1, 30, tzinfo=SH))
    card = await chat.say("张三", "客户 华为")
    assert "最近 NPS：9 分（2026-11-18）" in card


async def test_a_manager_and_the_director_count_the_same_answers_for_one_team(
    start_app: Any, make_settings: Any
) -> None:
    chat = await nps_demo(start_app, make_settings)
    staff = {s.name: s for s in await Staff.all()}
    customers = await Customer.all().order_by("id")
    # The manager owns a customer too (e.g. one handed over): the manager counts it in the team.
    await Customer.filter(id=customers[0].id).update(owner_id=staff["王经理"].id)
    for i, (owner, score) in enumerate((("张三", 10), ("李四", 3), ("王经理", 9), ("王经理", 8))):
        await answered(customers[i], staff[owner], score, NOW - timedelta(days=2, hours=i))

    def team_line(report: str) -> str:
        [line] = [x for x in report.splitlines() if x.startswith("王经理团队：")]
        return line

    as_manager = team_line(await chat.say("王经理", "本月NPS"))
    as_director = team_line(await chat.say("赵总", "本月NPS"))
    assert as_manager == as_director
    assert "共 4 份答卷" in as_director

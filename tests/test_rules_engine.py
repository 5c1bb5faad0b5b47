"""The rules engine: quiet hours, digests, side effects that fail, retries while WeCom fails, and `crmbot jobs run`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.clock import Clock
from bot.config import Settings
from bot.context import Firing, RuleContext
from bot.keys import BOT, OUTBOX
from bot.scheduled import release_time, run_rules
from models.customers import Customer, Stage
from models.nps import Survey
from models.outbox import OutboxMessage, OutboxStatus
from models.reminders import RuleFiring
from models.staff import Staff
from tests.helpers import account_of
from tests.test_reminders import DAY0, customer, make_team, rules_of, start, tick


def test_quiet_hours_hold_pushes_until_the_window_opens() -> None:
    settings = Settings()  # 20:00-09:00 Asia/Shanghai
    at = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)  # 22:30 local
    assert release_time(at, settings) == datetime(2026, 3, 3, 1, 0, tzinfo=UTC)  # 09:00 next morning
    early = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)  # 07:00 local on 03-03
    assert release_time(early, settings) == datetime(2026, 3, 3, 1, 0, tzinfo=UTC)
    day = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)  # 09:00 local: open
    assert release_time(day, settings) == day
    evening = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)  # 20:00 local: closed
    assert release_time(evening, settings) == datetime(2026, 3, 4, 1, 0, tzinfo=UTC)
    off = Settings(rules={"quiet_hours_start": "20:00", "quiet_hours_end": "20:00"})
    assert release_time(at, off) == at


async def test_pushes_during_the_night_arrive_as_one_digest_in_the_morning(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    evening = datetime(2026, 3, 9, 14, 0, tzinfo=UTC)  # 22:00 local
    clock = Clock(evening)
    app = await start(start_app, make_settings, clock)
    team = await make_team()
    await customer("华为技术有限公司", team["张三"], "华为", last_followup_at=evening - timedelta(days=7))
    await customer("比亚迪股份有限公司", team["张三"], "比亚迪", last_followup_at=evening - timedelta(days=6.9))

    assert rules_of(await tick(app, clock)) == [("ladder_warn", "张三", "华为技术有限公司")]
    clock.advance(timedelta(hours=3))  # 01:00 local
    assert rules_of(await tick(app, clock)) == [("ladder_warn", "张三", "比亚迪股份有限公司")]
    clock.set(datetime(2026, 3, 10, 0, 59, tzinfo=UTC))  # 08:59 local
    assert await tick(app, clock) == []
    assert wecom_sim.texts_to("zhangsan") == []

    clock.set(datetime(2026, 3, 10, 1, 0, tzinfo=UTC))  # 09:00 local
    assert await tick(app, clock) == []
    [digest] = wecom_sim.texts_to("zhangsan")
    assert digest.startswith("**您有 2 条待办提醒**")
    assert "华为技术有限公司" in digest and "比亚迪股份有限公司" in digest
    assert wecom_sim.messages_to("zhangsan")[0]["msgtype"] == "markdown"


async def test_several_pushes_at_once_for_one_person_are_one_message(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(DAY0 + timedelta(days=7))
    app = await start(start_app, make_settings, clock)
    team = await make_team()
    for name in ("华为技术有限公司", "比亚迪股份有限公司", "三一重工股份有限公司"):
        await customer(name, team["张三"], last_followup_at=DAY0)
    await customer("恒力液压有限公司", team["李四"], last_followup_at=DAY0)

    fired = await tick(app, clock)
    assert [(f.rule, f.to.name) for f in fired] == [("ladder_warn", "张三")] * 3 + [("ladder_warn", "李四")]
    [digest] = wecom_sim.texts_to("zhangsan")
    assert digest.startswith("**您有 3 条待办提醒**") and digest.count("跟进预警") == 3
    [single] = wecom_sim.texts_to("lisi")
    assert single.startswith("**跟进预警**")
    assert await RuleFiring.all().count() == 4
    assert await OutboxMessage.all().count() == 2


async def test_a_failing_side_effect_sends_nothing_and_fires_on_the_next_pass(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(DAY0)
    app = await start(start_app, make_settings, clock)
    team = await make_team()
    broken = {"yes": True}

    async def apply() -> None:
        await Customer.create(name="副作用客户")  # rolled back with the failure below
        if broken["yes"]:
            raise RuntimeError("side effect failed")

    async def rule(ctx: RuleContext) -> list[Firing]:
        staff = await Staff.get(name="张三")
        return [Firing("custom", "custom:1:0:x", staff, "**自定义**", apply=apply)]

    async def crashing(ctx: RuleContext) -> list[Firing]:
        raise RuntimeError("this rule is broken")

    assert await run_rules(app[BOT], clock.now(), [crashing, rule]) == []
    assert await RuleFiring.all().count() == 0
    assert not await Customer.filter(name="副作用客户").exists()
    broken["yes"] = False
    assert [f.key for f in await run_rules(app[BOT], clock.now(), [crashing, rule])] == ["custom:1:0:x"]
    assert await run_rules(app[BOT], clock.now(), [rule]) == []
    assert await Customer.filter(name="副作用客户").count() == 1
    await app[OUTBOX].drain(clock.now())
    assert wecom_sim.texts_to(await account_of(team["张三"], "wecom")) == ["**自定义**"]


async def test_a_push_is_retried_while_wecom_fails_and_arrives_once(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(DAY0 + timedelta(days=7))
    app = await start(start_app, make_settings, clock)
    team = await make_team()
    await customer("华为技术有限公司", team["张三"], last_followup_at=DAY0)
    wecom_sim.fail_next(4, errcode=-1, endpoint="message/send")
    assert len(await tick(app, clock)) == 1
    assert wecom_sim.texts_to("zhangsan") == []
    for _ in range(5):
        clock.advance(timedelta(seconds=5))
        assert await tick(app, clock) == []
    row = await OutboxMessage.get()
    assert row.status == OutboxStatus.SENT and row.attempts == 2
    assert len(wecom_sim.texts_to("zhangsan")) == 1


async def _crmbot(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


def cli_env(settings: Settings) -> dict[str, str]:
    """The test's settings for a `crmbot` process, as environment overrides."""
    wecom = settings.wecom
    return {
        "CRMBOT_DATABASE__URL": settings.database.url,
        "CRMBOT_WECOM__CORP_ID": wecom.corp_id,
        "CRMBOT_WECOM__AGENT_ID": str(wecom.agent_id),
        "CRMBOT_WECOM__SECRET": wecom.secret,
        "CRMBOT_WECOM__TOKEN": wecom.token,
        "CRMBOT_WECOM__ENCODING_AES_KEY": wecom.encoding_aes_key,
        "CRMBOT_WECOM__API_BASE": wecom.api_base,
    }


async def test_jobs_run_prints_each_firing_and_delivers_it_once(
    make_settings: Any, wecom_sim: Any, tmp_path: Path
) -> None:
    env = cli_env(make_settings())
    code, _, err = await _crmbot("demo", env=env)
    assert code == 0, err
    # Demo customers were last followed up 5 days ago; 3 days later (10:00 local) they are 8 days without contact.
    at = (datetime.now(UTC) + timedelta(days=3)).astimezone(Settings().tz).replace(hour=10, minute=0)
    code, out, err = await _crmbot("jobs", "run", "--now", at.isoformat(), "--json", env=env)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert {(x["rule"], x["to"]) for x in lines} == {("ladder_warn", "张三"), ("ladder_warn", "李四")}
    assert sorted(x["customer"] for x in lines) == sorted(
        ["华为技术有限公司", "比亚迪股份有限公司", "三一重工股份有限公司", "恒力液压有限公司", "金风科技股份有限公司"]
    )
    assert all(set(x) == {"rule", "to", "customer", "text"} and "`跟进 " in x["text"] for x in lines)
    # Digested on the way out: one message each for 张三 (3 customers) and 李四 (2).
    # (Other pushes the demo data causes, such as a keyword alert, are not this test's business.)
    assert [t.splitlines()[0] for t in ladder_texts(wecom_sim, "zhangsan")] == ["**您有 3 条待办提醒**"]
    assert [t.splitlines()[0] for t in ladder_texts(wecom_sim, "lisi")] == ["**您有 2 条待办提醒**"]

    code, out, _ = await _crmbot("jobs", "run", "--now", at.isoformat(), "--json", env=env)
    assert (code, out) == (0, "")
    code, _, err = await _crmbot("jobs", "run", "--now", "not-a-time", env=env)
    assert code == 2 and "ISO 8601" in err
    assert len(ladder_texts(wecom_sim, "zhangsan")) == 1


def ladder_texts(sim: Any, userid: str) -> list[str]:
    return [t for t in sim.texts_to(userid) if "跟进预警" in t]


async def test_data_changed_backwards_is_caught_by_the_daily_sweep(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(DAY0)  # 10:00 local
    app = await start(start_app, make_settings, clock)
    team = await make_team()
    assert await tick(app, clock) == []  # the first pass sweeps everything
    # An import brings a customer nobody has called for 10 days: its 7-day threshold lies before the last pass.
    clock.advance(timedelta(minutes=1))
    await customer("华为技术有限公司", team["张三"], last_followup_at=DAY0 - timedelta(days=10))
    for minutes in (2, 3, 60, 22 * 60 + 29):  # incremental passes only look at thresholds crossed since the last
        clock.set(DAY0 + timedelta(minutes=minutes))
        assert await tick(app, clock) == []
    clock.set(DAY0 + timedelta(hours=22, minutes=30))  # 08:30 next morning: the daily sweep
    assert rules_of(await tick(app, clock)) == [("ladder_warn", "张三", "华为技术有限公司")]
    assert wecom_sim.texts_to("zhangsan") == []  # quiet hours until 09:00
    clock.set(DAY0 + timedelta(hours=23))
    await tick(app, clock)
    assert len(wecom_sim.texts_to("zhangsan")) == 1


async def test_the_nps_survey_goes_out_on_the_minute_the_delay_runs_out_not_only_at_the_daily_sweep(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(DAY0)  # 10:00 local
    app = await start(start_app, make_settings, clock, ladder_warn_days=1000, ladder_handover_days=1000)
    team = await make_team()
    won_at = DAY0 - timedelta(days=15) + timedelta(minutes=3)  # the 15-day delay runs out at DAY0 + 3 min
    await customer("华为技术有限公司", team["张三"], stage=Stage.WON, won_at=won_at, last_followup_at=DAY0)
    assert await tick(app, clock) == []  # the first pass sweeps everything: not due yet

    fired_at = []
    for minute in range(1, 6):  # the scheduler's incremental passes, one a minute
        clock.set(DAY0 + timedelta(minutes=minute))
        fired_at += [(minute, *rule) for rule in rules_of(await tick(app, clock))]

    assert fired_at == [(3, "nps_survey", "张三", "华为技术有限公司")]
    assert await Survey.filter(customer__name="华为技术有限公司").count() == 1
    assert any("满意度调查" in text for text in wecom_sim.texts_to("zhangsan"))

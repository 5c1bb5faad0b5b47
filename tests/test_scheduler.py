"""The scheduler: APScheduler runs the rules every minute, and several instances on one database push once."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.clock import Clock
from bot.keys import BOT, CLOCK, OUTBOX
from bot.scheduled import run_rules
from bot.scheduler import RULES_JOB, SCHEDULER, make_scheduler
from models.outbox import OutboxMessage
from models.reminders import RuleFiring
from tests.conftest import PG_URL
from tests.test_reminders import DAY0, customer, make_team, start
from tests.test_rules_engine import _crmbot, cli_env

postgres_only = pytest.mark.skipif(
    not PG_URL,
    reason="several instances on one database is a PostgreSQL deployment (advisory lock, concurrent connections); "
    "SQLite is one file with one writer. Set CRMBOT_TEST_DATABASE_URL to run it.",
)


async def run_now(scheduler: AsyncIOScheduler) -> asyncio.Event:
    """Make the rules job due now; the event is set when that run has finished."""
    done = asyncio.Event()

    def finished(event: JobExecutionEvent) -> None:
        if event.job_id == RULES_JOB:
            done.set()

    scheduler.add_listener(finished, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    scheduler.modify_job(RULES_JOB, next_run_time=datetime.now(UTC))
    return done


async def test_the_scheduler_runs_every_rule_once_a_minute_and_delivers(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    # (make_settings first: the database must outlive the app, whose dispatcher drains once more on shutdown)
    clock = Clock(DAY0 + timedelta(days=7))
    client = await start_app(make_settings(), clock=clock)  # scheduler and dispatcher running, as in `serve`
    app = client.app
    team = await make_team()
    await customer("华为技术有限公司", team["张三"], "华为", last_followup_at=DAY0)

    scheduler = app[SCHEDULER]
    job = scheduler.get_job(RULES_JOB)
    assert isinstance(job.trigger, IntervalTrigger) and job.trigger.interval == timedelta(minutes=1)
    assert job.max_instances == 1 and job.coalesce is True

    await asyncio.wait_for((await run_now(scheduler)).wait(), timeout=30)
    await asyncio.wait_for(_until(lambda: len(wecom_sim.texts_to("zhangsan")) == 1), timeout=30)
    assert "跟进预警" in wecom_sim.texts_to("zhangsan")[0]
    await asyncio.wait_for((await run_now(scheduler)).wait(), timeout=30)  # the next minute: nothing new
    await app[OUTBOX].drain(clock.now())
    assert len(wecom_sim.texts_to("zhangsan")) == 1
    assert await RuleFiring.all().count() == 1


async def _until(condition: Any) -> None:
    # The dispatcher runs in its own task: poll what the simulator has received.
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0.02)


async def _stale_customers(n: int) -> None:
    team = await make_team()
    for i in range(n):
        await customer(f"客户{i:03d}有限公司", team["张三" if i % 2 else "李四"], last_followup_at=DAY0)


async def test_two_engines_at_the_same_moment_fire_each_push_once(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(DAY0 + timedelta(days=7))
    app = await start(start_app, make_settings, clock)
    await _stale_customers(40)
    first, second = await asyncio.gather(run_rules(app[BOT], clock.now()), run_rules(app[BOT], clock.now()))
    assert sorted([len(first), len(second)]) == [0, 40]  # one pass did the work, the other found it done or locked
    assert await RuleFiring.filter(rule="ladder_warn").count() == 40
    assert await OutboxMessage.all().count() == 2  # one digest each for 张三 and 李四
    await app[OUTBOX].drain(clock.now())
    assert len(wecom_sim.texts_to("zhangsan")) == 1 and len(wecom_sim.texts_to("lisi")) == 1


@postgres_only
async def test_two_schedulers_on_one_postgresql_database_push_each_once(
    start_app: Any, make_settings: Any, wecom_sim: Any
) -> None:
    clock = Clock(DAY0 + timedelta(days=7))
    app = await start(start_app, make_settings, clock)
    await _stale_customers(200)
    schedulers = [make_scheduler(app[BOT], app[CLOCK]) for _ in range(2)]
    for scheduler in schedulers:
        scheduler.start()
    try:
        events = [await run_now(s) for s in schedulers]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout=60)
    finally:
        for scheduler in schedulers:
            scheduler.shutdown(wait=False)
    keys = await RuleFiring.filter(rule="ladder_warn").values_list("key", flat=True)
    assert len(keys) == len(set(keys)) == 200
    assert await OutboxMessage.all().count() == 2
    await app[OUTBOX].drain(clock.now())
    [digest] = wecom_sim.texts_to("zhangsan")
    assert digest.startswith("**您有 100 条待办提醒**")


@postgres_only
async def test_two_crmbot_processes_on_one_postgresql_database_push_each_once(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    settings = make_settings()
    clock = Clock(DAY0 + timedelta(days=7))
    client = await start_app(settings, clock=clock, run_scheduler=False, run_dispatcher=False)
    await _stale_customers(300)
    await client.close()  # the two processes are the only instances now

    env = cli_env(settings)
    at = clock.now().isoformat()
    results = await asyncio.gather(*(_crmbot("jobs", "run", "--now", at, "--json", env=env) for _ in range(2)))
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    lines = [json.loads(line) for _, out, _ in results for line in out.splitlines()]
    assert len(lines) == 300
    assert len({line["customer"] for line in lines}) == 300
    assert len(wecom_sim.texts_to("zhangsan")) == 1 and len(wecom_sim.texts_to("lisi")) == 1

"""Reports benchmark: what the weekly and monthly reports cost the scheduled pass that pushes them, and what one
report costs in chat.

The data is ``bench.rules``' staff (55 reps under 5 managers), ``--customers`` customers and as many tickets, with
``bench.pipeline``'s deals (``--opportunities``, 5 stage-history rows each), plus ``--messages`` messages the reps
sent the bot over the last 60 days and as many customer messages over the last 30 (one in ten with a ticket word).
Monday 1 June 2026 09:30 (Shanghai) is both the weekly and the monthly report's time, so every manager gets two
reports, each with its chart.

1. ``crmbot jobs run --now 2026-06-01T09:30:00+08:00 --json`` (the CLI with its defaults), on a fresh copy of the
   database each round, against the baseline: the same command on a fresh copy with the reports not due
   (``CRMBOT_REPORTS__PUSH_WINDOW_MINUTES=1`` at 09:30), so the difference is the ten reports and their charts.
2. In process, ``--runs`` times each: one manager's weekly report (``summary.build``), its chart (``charts.render``),
   and 健康度 of the company.

Run::

    .venv/bin/python -m bench.reports                       # SQLite in a temporary directory
    .venv/bin/python -m bench.reports --database postgres://postgres@127.0.0.1:5432/test   # scratch databases
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.pipeline import generate_deals
from bench.rules import NOW, _pg, _scratch_database, _seq, _ts, generate

REPORT_TIME = "2026-06-01T09:30:00+08:00"
CRMBOT = str(Path(sys.executable).with_name("crmbot"))


async def generate_messages(conn: Any, dialect: str, messages: int, customers: int) -> None:
    """``messages`` messages from the reps to the bot over 60 days, and as many customer messages over 30 days."""
    day = 1440
    true, false = ("TRUE", "FALSE") if dialect == "postgres" else ("1", "0")
    cte, src = _seq(dialect, messages)
    await conn.execute_script(
        f"{cte}INSERT INTO message (platform, msgid, to_bot, sender, receivers, room_id, msgtype, text, payload, "
        "staff_id, customer_id, sent_at, received_at, handled_at) "
        f"SELECT 'wecom', 'bot' || n, {true}, 'rep' || (6 + n % 55), '[]', '', 'text', '跟进 客户' || n, '{{}}', "
        f"6 + n % 55, NULL, {_ts(dialect, f'-((n * 7) % ({60 * day}))')}, {_ts(dialect, '0')}, "
        f"{_ts(dialect, '0')} FROM {src}"
    )
    await conn.execute_script(
        f"{cte}INSERT INTO message (platform, msgid, to_bot, sender, receivers, room_id, msgtype, text, payload, "
        "staff_id, customer_id, sent_at, received_at, handled_at) "
        f"SELECT 'wecom', 'cust' || n, {false}, 'wm' || n, '[]', '', 'text', "
        "CASE WHEN n % 10 = 0 THEN '设备又坏了，尽快来修' ELSE '好的，收到报价' END, '{}', "
        f"NULL, 1 + (n * 13) % {customers}, {_ts(dialect, f'-((n * 11) % ({30 * day}))')}, {_ts(dialect, '0')}, "
        f"NULL FROM {src}"
    )


async def build(url: str, args: argparse.Namespace) -> None:
    from bot.app import load_settings
    from bot.cli import running_app
    from bot.clock import Clock
    from bot.sql import default as db

    settings = load_settings(os.devnull, database={"url": url})
    async with running_app(settings, clock=Clock(NOW)):
        conn = db()
        dialect = conn.capabilities.dialect
        started = time.perf_counter()
        await generate(conn, dialect, args.customers, args.customers)
        await generate_deals(conn, dialect, args.opportunities, 5)
        await generate_messages(conn, dialect, args.messages, args.customers)
        print(
            f"generated {args.customers} customers and tickets, {args.opportunities} deals, {2 * args.messages} "
            f"messages in {time.perf_counter() - started:.1f}s"
        )


def jobs_run(url: str, baseline: bool) -> tuple[float, int]:
    """One ``crmbot jobs run`` at the reports' time: its wall time and how many reports it pushed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMBOT_")}
    env["CRMBOT_DATABASE__URL"] = url
    if baseline:
        env["CRMBOT_REPORTS__PUSH_WINDOW_MINUTES"] = "1"
    with tempfile.TemporaryDirectory() as cwd:
        started = time.perf_counter()
        done = subprocess.run(
            [CRMBOT, "jobs", "run", "--now", REPORT_TIME, "--json"], env=env, cwd=cwd, capture_output=True, text=True
        )
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return wall, sum(1 for line in lines if line["rule"] in ("weekly_report", "monthly_report"))


def _range(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


async def in_process(url: str, runs: int) -> None:
    import handlers.reports.summary as summary
    from bot.app import load_settings
    from bot.cli import running_app
    from bot.clock import Clock
    from bot.keys import BOT
    from handlers.pipeline.funnel import Scope
    from handlers.reports.charts import render
    from handlers.reports.health import health, month_of
    from models.staff import Staff

    settings = load_settings(os.devnull, database={"url": url})
    async with running_app(settings, clock=Clock(NOW)) as app:
        manager = await Staff.get(id=2)
        report = await summary.build(app[BOT], manager, "week", NOW)
        data = summary.chart_data(report)
        company = Scope("全公司", None)
        await _timed(
            "one manager's weekly report (summary.build)", runs, lambda: summary.build(app[BOT], manager, "week", NOW)
        )
        await _timed("its chart (charts.render, PNG)", runs, lambda: asyncio.to_thread(render, data))
        await _timed(
            "健康度 of the company, this month", runs, lambda: health(company, month_of(NOW, settings), settings, NOW)
        )


async def _timed(name: str, runs: int, call: Callable[[], Awaitable[object]]) -> None:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    print(f"{name}: {_range(times)} over {runs} runs")


def compare(copy: Callable[[], str], rounds: int) -> None:
    """Each round: the baseline and the reports' run, each on a fresh copy."""
    base, reports, pushed = [], [], 0
    for _ in range(rounds):
        base.append(jobs_run(copy(), baseline=True)[0])
        wall, pushed = jobs_run(copy(), baseline=False)
        reports.append(wall)
    print(f"crmbot jobs run, reports not due (baseline): {_range(base)} over {rounds} rounds")
    print(f"crmbot jobs run, {pushed} reports with charts: {_range(reports)} over {rounds} rounds")


async def main_async(args: argparse.Namespace) -> None:
    if args.database:
        template_url, template = _scratch_database(args.database)
        await _pg(args.database, f'CREATE DATABASE "{template}"')
        made: list[str] = []
        try:
            print("-- PostgreSQL")
            await build(template_url, args)

            def copy() -> str:
                url, name = _scratch_database(args.database)
                made.append(name)
                # compare() runs in a worker thread: the copy is made on a loop of its own there
                asyncio.run(_pg(args.database, f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
                return url

            await asyncio.to_thread(compare, copy, args.rounds)
            await in_process(template_url, args.runs)
        finally:
            for name in [*made, template]:
                await _pg(args.database, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    with tempfile.TemporaryDirectory() as tmp:
        print("-- SQLite")
        source = Path(tmp) / "reports.sqlite3"
        await build(f"sqlite://{source}", args)
        copies = iter(range(1_000_000))

        def copy_file() -> str:
            target = Path(tmp) / f"copy{next(copies)}.sqlite3"
            shutil.copyfile(source, target)
            return f"sqlite://{target}"

        await asyncio.to_thread(compare, copy_file, args.rounds)
        await in_process(f"sqlite://{source}", args.runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="", help="PostgreSQL server URL (scratch databases are made there)")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--opportunities", type=int, default=20_000)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()

"""Rules benchmark: one pass of every scheduled rule over 100,000 customers and 100,000 tickets, and the outbox.

The data is generated with bulk SQL (a recursive CTE on SQLite, ``generate_series`` on PostgreSQL) in a fresh
database: 60 staff (50 reps under 5 managers), ``--customers`` customers spread over every stage with last
follow-ups over the past 90 days, next follow-ups, deals, contract ends and reorder rhythms, ``--tickets`` tickets
(mostly closed, some resolved, some open and overdue) and 10,000 explicit reminders. Then, with the clock pinned:

1. backlog: passes at T until nothing new fires (a first start on a database nobody ever reminded about);
2. steady: one pass at T again (everything already fired, the rules only find that out), and one pass at
   T + 1 minute (the thresholds crossed in that minute): the number that matters, one scheduler tick;
3. outbox: ``--pushes`` pushes to 200 staff are drained to the WeCom API simulator (a separate process, real HTTP
   on loopback) through the real WeCom channel; pushes per second.

Run::

    .venv/bin/python -m bench.rules                       # SQLite in a temporary directory
    .venv/bin/python -m bench.rules --database postgres://postgres@127.0.0.1:5432/test   # a scratch database
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, inside the push window
CORP = {
    "corp_id": "ww1436e0e65a779aee",
    "token": "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo",
    "encoding_aes_key": "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
    "agent_id": 1000002,
    "secret": "test-app-secret",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- data -------------------------------------------------------------------------------------------------------


def _seq(dialect: str, n: int) -> tuple[str, str]:
    """A CTE prefix and FROM clause yielding n = 1..count."""
    if dialect == "postgres":
        return "", f"generate_series(1::bigint, {n}) AS s(n)"
    return f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) ", "s"


def _ts(dialect: str, minutes_expr: str) -> str:
    """SQL for NOW + minutes_expr minutes, stored the way Tortoise stores an aware UTC datetime."""
    if dialect == "postgres":
        return f"(TIMESTAMPTZ '{NOW.isoformat()}' + ({minutes_expr}) * INTERVAL '1 minute')"
    base = NOW.strftime("%Y-%m-%d %H:%M:%S")
    return f"(datetime('{base}', printf('%+d minutes', {minutes_expr})) || '+00:00')"


def _day(dialect: str, days_expr: str) -> str:
    if dialect == "postgres":
        return f"(DATE '{NOW.date().isoformat()}' + ({days_expr})::int)"
    return f"date('{NOW.date().isoformat()}', printf('%+d days', {days_expr}))"


async def generate(conn: Any, dialect: str, customers: int, tickets: int) -> None:
    day = 1440
    await conn.execute_script(
        "INSERT INTO staff (id, name, role, manager_id, active, created_at) VALUES "
        + ", ".join(
            f"({i}, '经理{i}', 'manager', NULL, {'TRUE' if dialect == 'postgres' else 1}, {_ts(dialect, '0')})"
            for i in range(1, 6)
        )
        + "; INSERT INTO staff (id, name, role, manager_id, active, created_at) VALUES "
        + ", ".join(
            f"({i}, '销售{i}', 'rep', {1 + i % 5}, {'TRUE' if dialect == 'postgres' else 1}, {_ts(dialect, '0')})"
            for i in range(6, 61)
        )
        + "; INSERT INTO staff_account (staff_id, platform, user_id, created_at) VALUES "
        + ", ".join(f"({i}, 'wecom', '{'mgr' if i < 6 else 'rep'}{i}', {_ts(dialect, '0')})" for i in range(1, 61))
    )
    cte, src = _seq(dialect, customers)
    stage = (
        "CASE n % 7 WHEN 0 THEN 'lead' WHEN 1 THEN 'intent' WHEN 2 THEN 'proposal' WHEN 3 THEN 'quote' "
        "WHEN 4 THEN 'negotiation' WHEN 5 THEN 'won' ELSE 'lost' END"
    )
    await conn.execute_script(
        f"{cte}INSERT INTO customer (id, name, aliases, industry, grade, stage, owner_id, tags, custom_fields, "
        "contract_end, last_followup_at, next_followup_at, won_at, created_at, updated_at) "
        f"SELECT n, '客户' || n, '[]', '', 'B', {stage}, "
        "CASE WHEN n % 20 = 0 THEN NULL ELSE 6 + n % 55 END, '[]', '{}', "
        f"CASE WHEN n % 4 = 0 THEN {_day(dialect, '(n * 13) % 400 - 30')} END, "
        f"{_ts(dialect, f'-((n * 7919) % ({90 * day}))')}, "
        f"CASE WHEN n % 3 = 0 THEN {_ts(dialect, f'((n * 104729) % ({60 * day})) - {30 * day}')} END, "
        f"CASE WHEN n % 7 = 5 THEN {_ts(dialect, f'-((n * 31) % ({200 * day}))')} END, "
        f"{_ts(dialect, f'-{200 * day}')}, {_ts(dialect, '0')} FROM {src}"
    )
    cte, src = _seq(dialect, tickets)
    status = (
        "CASE WHEN n % 20 < 17 THEN 'closed' WHEN n % 20 = 17 THEN 'resolved' "
        "WHEN n % 20 = 18 THEN 'in_progress' ELSE 'open' END"
    )
    created = f"-((n * 6007) % ({60 * day}))"
    await conn.execute_script(
        f"{cte}INSERT INTO ticket (id, customer_id, title, description, priority, status, reporter_id, "
        "assignee_id, source, first_response_due, first_responded_at, resolution, resolved_at, revisit_due, "
        "revisited_at, closed_at, created_at, updated_at) "
        f"SELECT n, 1 + (n * 37) % {customers}, '工单' || n, '', "
        "CASE WHEN n % 10 = 0 THEN 'urgent' ELSE 'normal' END, "
        f"{status}, NULL, CASE WHEN n % 3 = 0 THEN NULL ELSE 6 + n % 55 END, 'manual', "
        f"{_ts(dialect, f'{created} + 120')}, "
        f"CASE WHEN n % 20 = 19 THEN NULL ELSE {_ts(dialect, f'{created} + 30')} END, '', "
        f"CASE WHEN n % 20 <= 17 THEN {_ts(dialect, f'{created} + 600')} END, "
        f"CASE WHEN n % 20 <= 17 THEN {_ts(dialect, f'{created} + 600 + {day}')} END, "
        f"CASE WHEN n % 20 < 17 THEN {_ts(dialect, f'{created} + 700 + {day}')} END, "
        f"CASE WHEN n % 20 < 17 THEN {_ts(dialect, f'{created} + 800 + {day}')} END, "
        f"{_ts(dialect, created)}, {_ts(dialect, '0')} FROM {src}"
    )
    cte, src = _seq(dialect, customers // 5)
    await conn.execute_script(
        f"{cte}INSERT INTO repurchase (customer_id, order_count, last_order_date, interval_days, spread_days, "
        "predicted_on, remind_at, updated_at) "
        f"SELECT n * 5, 4, {_day(dialect, '-(n % 90)')}, 30 + n % 60, n % 10, {_day(dialect, '30 - (n % 90)')}, "
        f"{_ts(dialect, f'((n * 7) % ({120 * day})) - {60 * day}')}, {_ts(dialect, '0')} FROM {src}"
    )
    cte, src = _seq(dialect, 10000)
    await conn.execute_script(
        f"{cte}INSERT INTO reminder (staff_id, customer_id, content, at, fired_at, source, created_at) "
        f"SELECT 6 + n % 55, n, '给客户' || n || '打电话', {_ts(dialect, f'((n * 97) % ({20 * day})) - {10 * day}')}, "
        f"NULL, '', {_ts(dialect, '0')} FROM {src}"
    )
    if dialect == "postgres":
        for table in ("staff", "customer", "ticket", "repurchase", "reminder"):
            await conn.execute_script(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"
            )
        await conn.execute_script("ANALYZE")
    else:
        await conn.execute_script("ANALYZE")


# -- measurement ------------------------------------------------------------------------------------------------


async def bench_rules(url: str, customers: int, tickets: int) -> None:
    from bot.app import load_settings
    from bot.cli import running_app
    from bot.clock import Clock
    from bot.keys import BOT
    from bot.scheduled import run_rules
    from bot.sql import default as db

    settings = load_settings(os.devnull, database={"url": url})
    async with running_app(settings, clock=Clock(NOW)) as app:
        conn = db()
        dialect = conn.capabilities.dialect
        started = time.perf_counter()
        await generate(conn, dialect, customers, tickets)
        print(f"generated {customers} customers, {tickets} tickets in {time.perf_counter() - started:.1f}s")
        bot = app[BOT]

        backlog: Counter[str] = Counter()
        passes, started = 0, time.perf_counter()
        while True:
            fired = await run_rules(bot, NOW)
            passes += 1
            backlog.update(f.rule for f in fired)
            if not fired or passes >= 300:
                break
        elapsed = time.perf_counter() - started
        print(
            f"backlog at T: {sum(backlog.values())} firings in {passes} passes, {elapsed:.1f}s "
            f"({dict(sorted(backlog.items()))})"
        )
        times, new = [], []
        for minute in range(1, 6):
            started = time.perf_counter()
            fired = await run_rules(bot, NOW + timedelta(minutes=minute))
            times.append(time.perf_counter() - started)
            new.append(len(fired))
        print(
            "scheduler tick (incremental pass, T+1..5 min): "
            + ", ".join(f"{t * 1000:.0f} ms/{n} new" for t, n in zip(times, new, strict=True))
        )
        await _per_rule(bot, NOW + timedelta(minutes=6), NOW + timedelta(minutes=5) - timedelta(minutes=10))
        started = time.perf_counter()
        fired = await run_rules(bot, NOW + timedelta(minutes=6), full=True)
        print(f"full sweep (daily, and `crmbot jobs run`): {(time.perf_counter() - started) * 1000:.0f} ms")
        await _per_rule(bot, NOW + timedelta(minutes=7), None)


async def _per_rule(bot: Any, now: datetime, since: datetime | None) -> None:
    from bot.context import RuleContext

    ctx = RuleContext(now=now, settings=bot.settings, bot=bot, since=since)
    parts = []
    for rule in bot.scheduled_rules:
        started = time.perf_counter()
        await rule(ctx)
        parts.append(f"{rule.__name__} {(time.perf_counter() - started) * 1000:.0f}")
    print(f"  per rule, {'incremental' if since else 'full'} (ms): " + ", ".join(parts))


async def bench_outbox(url: str, pushes: int) -> None:
    from bot.app import load_settings
    from bot.cli import running_app
    from bot.clock import Clock
    from bot.keys import OUTBOX
    from bot.types import Reply
    from tests.helpers import staff_member

    port = _free_port()
    sim = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "tests.simulators.wecom", "--port", str(port), "--secret", CORP["secret"]],
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await _wait_port(port)
        settings = load_settings(
            os.devnull, database={"url": url}, wecom={**CORP, "api_base": f"http://127.0.0.1:{port}"}
        )
        async with running_app(settings, clock=Clock(NOW)) as app:
            outbox = app[OUTBOX]
            staff = [await staff_member(name=f"推送{i}", wecom=f"push{i}") for i in range(200)]
            for i in range(pushes):
                person = staff[i % len(staff)]
                await outbox.push(
                    person, Reply.markdown(f"**跟进预警**\n> 客户：客户{i}\n> 已 7 天没有跟进"), f"bench:{i}"
                )
            started = time.perf_counter()
            sent = await outbox.drain(NOW)
            elapsed = time.perf_counter() - started
            print(f"outbox: {sent} pushes drained to the WeCom simulator in {elapsed:.2f}s = {sent / elapsed:.0f}/s")
    finally:
        sim.terminate()
        await sim.wait()


async def _wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("the simulator did not start")


def _scratch_database(url: str) -> tuple[str, str]:
    name = f"crmbot_bench_{uuid.uuid4().hex[:8]}"
    return urlunsplit(urlsplit(url)._replace(path="/" + name)), name


async def _pg(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgres://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def scratch_database(server: str) -> AsyncIterator[str]:
    """The URL of a new, empty database on the PostgreSQL server ``server`` names, dropped when the block ends."""
    url, name = _scratch_database(server)
    await _pg(server, f'CREATE DATABASE "{name}"')
    try:
        yield url
    finally:
        await _pg(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def main_async(args: argparse.Namespace) -> None:
    parts = [args.only] if args.only else ["rules", "outbox"]
    for part in parts:
        if args.database:
            async with scratch_database(args.database) as url:
                print(f"-- PostgreSQL, {part}")
                await _part(part, url, args)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            print(f"-- SQLite, {part}")
            await _part(part, f"sqlite://{tmp}/{part}.sqlite3", args)


async def _part(part: str, url: str, args: argparse.Namespace) -> None:
    if part == "rules":
        await bench_rules(url, args.customers, args.tickets)
    else:
        await bench_outbox(url, args.pushes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="", help="PostgreSQL server URL (a scratch database is made there)")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--pushes", type=int, default=5000)
    parser.add_argument("--only", choices=["rules", "outbox"], default=None, help="run one part only")
    args = parser.parse_args(argv)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main(sys.argv[1:])

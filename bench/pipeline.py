"""Pipeline benchmark: the funnel and the rep's day over 100,000 opportunities and 1,000,000 stage changes.

The data is generated with bulk SQL in a fresh database (the staff, customers and tickets of ``bench.rules``,
then ``--opportunities`` deals owned by the 55 reps, each with ``--changes`` stage-history rows: all but the
last closed, the last its current stage; the kept figures filled as the migration fills them). With the clock
pinned, each measure runs ``--runs`` times per round, ``--rounds`` rounds, and the median and 95th percentile of
each round are printed: ``漏斗`` typed by a rep, by a manager (a team of 11 reps) and by a director (the company),
and ``我的客户`` by a rep, each through the console chat (what ``crmbot chat`` runs: the message stored, understood,
handled, its reply queued and printed) and through the function its handler calls; next to them, in the same
rounds, ``帮助`` through the same chat, ``SELECT 1`` and ``SELECT COUNT(*) FROM opportunity``.

Run::

    .venv/bin/python -m bench.pipeline                       # SQLite in a temporary directory
    .venv/bin/python -m bench.pipeline --database postgres://postgres@127.0.0.1:5432/test   # a scratch database
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from bench.rules import NOW, _day, _seq, _ts, generate, scratch_database

CUSTOMERS = 20_000


async def generate_deals(conn: Any, dialect: str, deals: int, changes: int) -> None:
    """``deals`` opportunities over the customers (their owner's), each with ``changes`` history rows a few days
    apart; the current stage is spread over every stage, won and lost included."""
    day = 1440
    stage = (
        "CASE n % 7 WHEN 0 THEN 'lead' WHEN 1 THEN 'intent' WHEN 2 THEN 'proposal' WHEN 3 THEN 'quote' "
        "WHEN 4 THEN 'negotiation' WHEN 5 THEN 'won' ELSE 'lost' END"
    )
    reached = "CASE n % 7 WHEN 5 THEN 5 WHEN 6 THEN 3 ELSE 4 END"
    cte, src = _seq(dialect, deals)
    entered = _ts(dialect, f"-((n * 7919) % ({60 * day}))")
    await conn.execute_script(
        f"{cte}INSERT INTO opportunity (id, customer_id, name, amount, stage, probability, expected_close, owner_id, "
        "source, lost_reason, details, reached, stage_entered_at, closed_at, created_at, updated_at) "
        f"SELECT n, 1 + n % {CUSTOMERS}, '商机' || n, (1 + n % 500) * 10000, {stage}, "
        "CASE WHEN n % 10 = 0 THEN 0.5 END, "
        f"{_day(dialect, '(n * 13) % 120 - 30')}, 6 + n % 55, '', '', '{{}}', {reached}, {entered}, "
        f"CASE WHEN n % 7 >= 5 THEN {entered} END, {_ts(dialect, f'-{400 * day}')}, {_ts(dialect, '0')} FROM {src}"
    )
    cte, steps = _seq(dialect, changes)
    step_stage = (
        "CASE s.n % 5 WHEN 1 THEN 'lead' WHEN 2 THEN 'intent' WHEN 3 THEN 'proposal' WHEN 4 THEN 'quote' "
        "ELSE 'negotiation' END"
    )
    start = f"-({400 * day}) + o.id % {day} + (s.n - 1) * {30 * day}"
    stay = f"{day} + (o.id * s.n) % ({20 * day})"  # minutes
    await conn.execute_script(
        f"{cte}INSERT INTO opportunity_stage (opportunity_id, stage, entered_at, left_at, stay_days, actor_id, "
        "owner_id) "
        f"SELECT o.id, CASE WHEN s.n = {changes} THEN o.stage ELSE {step_stage} END, "
        f"CASE WHEN s.n = {changes} THEN o.stage_entered_at ELSE {_ts(dialect, start)} END, "
        f"CASE WHEN s.n < {changes} THEN {_ts(dialect, f'{start} + {stay}')} END, "
        f"CASE WHEN s.n < {changes} THEN ({stay}) / {float(day)} END, "
        f"o.owner_id, o.owner_id FROM opportunity o, {steps}"
    )
    # The funnel's per-day counts, as moving the deals one by one would have kept them (every stay is positive),
    # and the totals and last moves as the migration that introduced them fills them.
    whole_days = "CAST(FLOOR(stay_days) AS INTEGER)" if dialect == "postgres" else "CAST(stay_days AS INTEGER)"
    await conn.execute_script(
        "INSERT INTO opportunity_stay_count (owner_id, stage, days, n)"
        f" SELECT owner_id, stage, {whole_days}, COUNT(*) FROM opportunity_stage WHERE stay_days IS NOT NULL"
        f" GROUP BY owner_id, stage, {whole_days}"
    )
    kept = importlib.import_module("models.migrations.0013_funnel_speed")
    await conn.execute_script(kept.LAST_MOVED)
    await conn.execute_script(kept.COUNTS)
    await conn.execute_script(kept.count_slots(dialect))
    await conn.execute_script("VACUUM ANALYZE" if dialect == "postgres" else "ANALYZE")


Measure = Callable[[], Awaitable[object]]


async def _round(measures: dict[str, Measure], runs: dict[str, int], results: dict[str, list[str]]) -> None:
    """One round: each measure ``runs`` times (after one run to warm the caches); its median and p95 noted."""
    for name, call in measures.items():
        await call()
        times = []
        for _ in range(runs.get(name, runs[""])):
            started = time.perf_counter()
            await call()
            times.append((time.perf_counter() - started) * 1000)
        p95 = statistics.quantiles(times, n=20)[-1]
        results.setdefault(name, []).append(f"{statistics.median(times):.1f}/{p95:.1f}")


async def bench_pipeline(url: str, deals: int, changes: int, runs: int, rounds: int) -> None:
    from bot.app import load_settings
    from bot.cli import running_app
    from bot.clock import Clock
    from bot.sql import default as db
    from handlers.pipeline.day import day_text
    from handlers.pipeline.funnel import compute_funnel, funnel_text, scope_of
    from integrations.console import chat
    from models.staff import Role, Staff

    settings = load_settings(os.devnull, database={"url": url})
    async with running_app(settings, clock=Clock(NOW)) as app:
        conn = db()
        dialect = conn.capabilities.dialect
        started = time.perf_counter()
        await generate(conn, dialect, CUSTOMERS, CUSTOMERS)
        await generate_deals(conn, dialect, deals, changes)
        counted = await conn.execute_query_dict("SELECT COUNT(*) AS n FROM opportunity_stage")
        print(
            f"generated {deals} opportunities, {counted[0]['n']} stage changes in {time.perf_counter() - started:.1f}s"
        )
        rep, manager = await Staff.get(id=17), await Staff.get(id=2)
        director = await Staff.create(id=61, name="总监", role=Role.DIRECTOR)

        def typed(who: Staff, text: str) -> Measure:
            async def say() -> None:
                out = io.StringIO()
                await chat(app, who, _lines(text), out)
                assert out.getvalue().strip(), f"no reply to {text}"

            return say

        def computed(who: Staff) -> Measure:
            async def funnel() -> str:
                scope = await scope_of(who)
                return funnel_text(scope.label, await compute_funnel(scope, None, settings, NOW))

            return funnel

        measures: dict[str, Measure] = {
            "baseline: SELECT 1": lambda: conn.execute_query_dict("SELECT 1"),
            "baseline: SELECT COUNT(*) FROM opportunity": lambda: conn.execute_query_dict(
                "SELECT COUNT(*) FROM opportunity"
            ),
            "baseline: 帮助 in chat": typed(rep, "帮助"),
            "漏斗 in chat, a rep": typed(rep, "漏斗"),
            "漏斗 in chat, a manager's team": typed(manager, "漏斗"),
            "漏斗 in chat, the company": typed(director, "漏斗"),
            "我的客户 in chat, a rep": typed(rep, "我的客户"),
            "funnel function, a rep": computed(rep),
            "funnel function, a manager's team": computed(manager),
            "funnel function, the company": computed(director),
            "day function, a rep": lambda: day_text(rep, NOW, settings),
        }
        results: dict[str, list[str]] = {}
        for n in range(rounds):
            await _round(measures, {"": runs}, results)
            print(f"round {n + 1}/{rounds} done, load average {os.getloadavg()[0]:.1f}", flush=True)
        width = max(len(name) for name in measures)
        print(f"{'measure'.ljust(width)}  median/p95 ms per round ({runs} runs each)")
        for name, cells in results.items():
            print(f"{name.ljust(width)}  {'  '.join(cells)}")


async def _lines(*texts: str) -> AsyncIterator[str]:
    for text in texts:
        yield text


async def main_async(args: argparse.Namespace) -> None:
    if args.database:
        async with scratch_database(args.database) as url:
            print("-- PostgreSQL")
            await bench_pipeline(url, args.opportunities, args.changes, args.runs, args.rounds)
        return
    with tempfile.TemporaryDirectory() as tmp:
        print("-- SQLite")
        await bench_pipeline(
            f"sqlite://{tmp}/pipeline.sqlite3", args.opportunities, args.changes, args.runs, args.rounds
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="", help="PostgreSQL server URL (a scratch database is made there)")
    parser.add_argument("--opportunities", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=10, help="stage-history rows per opportunity")
    parser.add_argument("--runs", type=int, default=40, help="runs of each measure per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main(sys.argv[1:])

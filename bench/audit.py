"""Undo and history benchmark: how long 撤销 and 操作记录 take in chat when the audit log is large.

The real app (``create_app``, SQLite in a temporary directory or ``--database``) with the demo team; the audit log
is filled with ``--rows`` rows spread over every demo member and customer (a year of changes). Then, ``--rounds``
times, 张三 changes 华为's stage and takes it back (``阶段 华为 …`` then ``撤销``), and reads ``操作记录 华为`` and
``谁改了华为的阶段``, each typed at the console, handled and answered. Reported: p50 / p95 / max per line, in
milliseconds::

    .venv/bin/python -m bench.audit --rows 200000 --rounds 30
    .venv/bin/python -m bench.audit --database postgres://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from bot import audit
from bot.app import create_app, load_settings
from bot.demo import load_demo
from bot.keys import BOT
from models.audit import AuditLog
from models.customers import Customer
from models.staff import Staff
from tests.driver import ConsoleChat

LINES = ("阶段 华为 方案", "撤销", "操作记录 华为", "谁改了华为的阶段")


async def fill(rows: int) -> None:
    """``rows`` stage and grade changes by every demo member on every demo customer, over the last year."""
    staff = await Staff.all()
    customers = await Customer.all()
    start = datetime.now(UTC) - timedelta(days=365)
    batch: list[AuditLog] = []
    for i in range(rows):
        who, customer = staff[i % len(staff)], customers[i % len(customers)]
        field, values = ("stage", ("lead", "intent")) if i % 2 else ("grade", ("A", "B"))
        batch.append(
            audit.entry(
                f"set_{field}", "customer", customer.id, {field: values[0]}, {field: values[1]}, actor=who,
                platform="console", source=f"console:bench{i}", at=start + timedelta(seconds=i * 60),
            )
        )  # fmt: skip
        if len(batch) == 5000:
            await AuditLog.bulk_create(batch)
            batch = []
    await AuditLog.bulk_create(batch)


async def run(database: str, rows: int, rounds: int) -> dict[str, list[float]]:
    settings = load_settings(os.devnull, database={"url": database}, keywords={"ticket_mode": "off"})
    app = create_app(settings, run_dispatcher=False, run_scheduler=False)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        await load_demo(app)
        await app[BOT].understanding.refresh()
        await fill(rows)
        chat = ConsoleChat(app)
        timings: dict[str, list[float]] = {line: [] for line in LINES}
        for _ in range(rounds):
            for line in LINES:
                began = time.perf_counter()
                await chat.say("张三", line)
                timings[line].append((time.perf_counter() - began) * 1000)
        return timings
    finally:
        await runner.cleanup()


def report(timings: dict[str, list[float]]) -> None:
    for line, ms in timings.items():
        ms.sort()
        p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
        print(f"{line}\tp50 {statistics.median(ms):.1f} ms\tp95 {p95:.1f} ms\tmax {ms[-1]:.1f} ms")


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="audit rows to start with")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--database", default="", help="a database URL (default: SQLite in a temporary directory)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        database = args.database or f"sqlite://{tmp}/bench.sqlite3"
        report(asyncio.run(run(database, args.rows, args.rounds)))


if __name__ == "__main__":
    main()

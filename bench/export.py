"""Excel export benchmark: ``crmbot export customers FILE.xlsx`` as an admin runs it, on SQLite and PostgreSQL.

A database of its own (an SQLite file in a temporary directory, or a PostgreSQL database created next to
``--pg`` and dropped afterwards) is filled with ``--n`` customers (one contact each, owned by 20 reps, with
aliases, tags and dates set as in real data); then, ``--rounds`` times, the real command runs as a child process
with its defaults, timed on the wall clock, and its peak RSS is read from the kernel (``wait4``). The baseline in
the same run is the same command exporting nothing (``--as`` a rep without customers): what starting the command
costs, so that what the rows cost can be told apart; and the full export again with openpyxl's pure-Python XML
writer (``OPENPYXL_LXML=False``), which is what it used before lxml was a dependency. Reported per database: wall
seconds, rows/s and peak RSS, min–max over the rounds::

    .venv/bin/python -m bench.export --n 100000 --rounds 3 --db sqlite
    .venv/bin/python -m bench.export --n 100000 --rounds 3 --db postgres --pg postgres://postgres@127.0.0.1:5432/test

(one database per process: Tortoise keeps the SQL it built for a model, in its dialect, on the model class).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from tortoise.context import TortoiseContext

from bot.db import migrate_database, tortoise_config
from models.customers import Contact, Customer, Stage
from models.staff import Role, Staff

CRMBOT = Path(sys.executable).with_name("crmbot")
BATCH = 5000
STAGES = list(Stage)


async def fill(url: str, n: int) -> None:
    """``n`` customers with a contact each, owned by 20 reps (and a 21st rep who owns nothing)."""
    await migrate_database(url)
    async with TortoiseContext() as context:
        await context.init(config=tortoise_config(url))
        reps = [await Staff.create(name=f"销售{i:02d}", role=Role.REP) for i in range(21)]
        start = datetime(2025, 1, 1, tzinfo=UTC)
        for first in range(0, n, BATCH):
            ids = range(first, min(first + BATCH, n))
            await Customer.bulk_create(
                [
                    Customer(
                        name=f"客户{i:06d}科技有限公司", aliases=[f"客户{i}"] if i % 3 == 0 else [],
                        industry=("制造", "能源", "汽车")[i % 3], grade="ABC"[i % 3], stage=STAGES[i % len(STAGES)],
                        owner_id=reps[i % 20].id, tags=["重点", "华东"] if i % 4 == 0 else [],
                        last_followup_at=start + timedelta(hours=i), next_followup_at=start + timedelta(hours=i + 48),
                    )
                    for i in ids
                ]
            )  # fmt: skip
            created = await Customer.filter(name__in=[f"客户{i:06d}科技有限公司" for i in ids]).values_list(
                "id", "name"
            )
            await Contact.bulk_create(
                [Contact(customer_id=cid, name=f"联系人{name[2:8]}", role="采购", phone=f"138{cid:08d}")
                 for cid, name in created]
            )  # fmt: skip


def run_export(config: Path, out: Path, *extra: str, lxml: bool = True) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of one ``crmbot export customers`` child process."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CRMBOT_")}
    env["OPENPYXL_LXML"] = str(lxml)
    began = time.perf_counter()
    child = subprocess.Popen(
        [str(CRMBOT), "export", "customers", str(out), "--config", str(config), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"export failed: {child.stderr.read().decode() if child.stderr else ''}")
    return wall, usage.ru_maxrss // 1024


def spread(values: list[float], fmt: str) -> str:
    return f"{fmt.format(min(values))}–{fmt.format(max(values))}"


def measure(label: str, url: str, n: int, rounds: int, workdir: Path) -> None:
    config = workdir / f"{label}.toml"
    config.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    began = time.perf_counter()
    asyncio.run(fill(url, n))
    print(f"{label}: filled {n:,} customers in {time.perf_counter() - began:.1f} s", flush=True)
    base, full, pure = [], [], []
    for _ in range(rounds):  # interleaved, so that a change of load hits every variant alike
        base.append(run_export(config, workdir / "empty.xlsx", "--as", "销售20"))
        full.append(run_export(config, workdir / "all.xlsx"))
        pure.append(run_export(config, workdir / "pure.xlsx", lxml=False))
    size = (workdir / "all.xlsx").stat().st_size / 2**20
    start = min(w for w, _ in base)
    print(f"{label}: baseline (0 rows): {spread([w for w, _ in base], '{:.1f}')} s, "
          f"peak RSS {spread([r for _, r in base], '{:.0f}')} MiB")  # fmt: skip
    for name, runs in (("lxml", full), ("pure-Python writer", pure)):
        walls = [w for w, _ in runs]
        net = [n / max(w - start, 1e-3) for w in walls]
        print(f"{label}: {n:,} rows, {name}: {spread(walls, '{:.1f}')} s = {spread([n / w for w in walls], '{:,.0f}')}"
              f" rows/s ({spread(net, '{:,.0f}')} rows/s after start-up), "
              f"peak RSS {spread([r for _, r in runs], '{:.0f}')} MiB", flush=True)  # fmt: skip
    print(f"{label}: file {size:.1f} MiB", flush=True)


async def _admin(pg: str, sql: str) -> None:
    conn = await asyncpg.connect(pg.replace("postgres://", "postgresql://", 1))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432/test", help="PostgreSQL server URL")
    args = parser.parse_args()
    print(f"load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.db == "sqlite":
            measure("sqlite", f"sqlite://{workdir / 'bench.sqlite3'}", args.n, args.rounds, workdir)
        else:
            name = f"crmbot_bench_{uuid.uuid4().hex[:8]}"
            asyncio.run(_admin(args.pg, f'CREATE DATABASE "{name}"'))
            try:
                url = args.pg.rsplit("/", 1)[0] + f"/{name}"
                measure("postgres", url, args.n, args.rounds, workdir)
            finally:
                asyncio.run(_admin(args.pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(f"load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)


if __name__ == "__main__":
    main()

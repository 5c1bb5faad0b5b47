"""Import benchmark: ``crmbot import customers`` of a long customer list, as the admin runs it (the CLI in a
subprocess with its defaults, on a freshly migrated database with the staff imported), next to a raw baseline in
the same run: the same customer rows inserted by plain ``executemany`` (SQLite) or ``COPY`` (PostgreSQL), without
reading, cleaning, checking, contacts or the audit log.

The list (``--customers`` rows, CSV or .xlsx) has every column an export has: aliases, industry, grade, stage,
owner (by name, 1% left empty: leads), tags, a contact with phone and external id, dates and a region. Reported
per round: seconds, rows per second and the peak RSS of the import process; then the same file imported again
(every row found unchanged, nothing written), and the raw baseline::

    .venv/bin/python -m bench.import_customers --customers 100000 --rounds 3
    .venv/bin/python -m bench.import_customers --customers 100000 --rounds 3 --database postgres://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.rules import _pg, _scratch_database
from bot.db import migrate_database

ROOT = Path(__file__).resolve().parent.parent
REPS = 40
HEADER = ["客户名称", "别名", "行业", "等级", "阶段", "负责人", "标签", "联系人", "电话", "外部联系人ID", "合同到期",
          "最近跟进", "区域"]  # fmt: skip
INDUSTRIES = ("制造", "能源", "汽车", "电子", "医药", "物流")
STAGES = ("潜在", "意向", "方案", "报价", "谈判")
REGIONS = ("华东", "华北", "华南", "西南")


def customers_rows(count: int) -> list[list[Any]]:
    """``count`` customers as an export lists them, one row each."""
    rows = []
    for i in range(count):
        owner = "" if i % 100 == 99 else f"销售{i % REPS:02d}"
        rows.append(
            [f"基准客户{i:07d}有限公司", f"基准{i:07d}", INDUSTRIES[i % 6], "ABC"[i % 3], STAGES[i % 5], owner,
             "重点;华东" if i % 2 else "回访", f"联系人{i}", f"139{i:08d}", f"wmBENCH{i:09d}",
             f"2027-{1 + i % 12:02d}-{1 + i % 28:02d}", f"2025-{1 + i % 12:02d}-{1 + i % 28:02d} 10:30",
             REGIONS[i % 4]]
        )  # fmt: skip
    return rows


def write_customers(path: Path, count: int) -> Path:
    rows = customers_rows(count)
    if path.suffix == ".xlsx":
        import openpyxl

        workbook = openpyxl.Workbook(write_only=True)
        sheet = workbook.create_sheet("客户")
        sheet.append(HEADER)
        for row in rows:
            sheet.append(row)
        workbook.save(path)
        return path
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def crmbot(config: Path, *args: str) -> tuple[float, float, float, float, str]:
    """Run ``crmbot ARGS`` as the admin does: (seconds, CPU seconds, peak RSS in MiB, RSS at half time in MiB, its
    output). CPU seconds (user and system) say more than the wall clock when the machine is shared."""
    out = config.parent / "out.txt"
    samples: list[float] = []
    started = time.perf_counter()
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", *args, "--config", str(config)], cwd=ROOT, stdout=sink, stderr=sink
        )
        sampler = threading.Thread(target=_sample_rss, args=(proc.pid, samples), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        sampler.join()
    seconds = time.perf_counter() - started
    text = out.read_text(encoding="utf-8")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"crmbot {' '.join(args)} failed: {text}")
    halfway = samples[len(samples) // 2] if samples else float("nan")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, halfway, text


def _sample_rss(pid: int, samples: list[float]) -> None:
    """The RSS of ``pid`` in MiB, twice a second until it ends."""
    while True:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        rss = [line for line in status.splitlines() if line.startswith("VmRSS:")]
        if not rss:  # a zombie, waiting to be reaped
            return
        samples.append(int(rss[0].split()[1]) / 1024)
        time.sleep(0.5)


def customers_raw_sqlite(path: str, count: int) -> tuple[float, float]:
    """The baseline: the customer rows alone, by one ``executemany`` in one transaction; (seconds, CPU seconds)."""
    now = datetime.now(UTC).isoformat(" ")
    rows = [(r[0], f'["{r[1]}"]', r[2], r[3], "lead", "[]", "{}", now, now) for r in customers_rows(count)]
    started, cpu = time.perf_counter(), time.process_time()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO customer (name, aliases, industry, grade, stage, tags, custom_fields, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return time.perf_counter() - started, time.process_time() - cpu


async def customers_raw_postgres(url: str, count: int) -> tuple[float, float]:
    """The baseline: the customer rows alone, by one ``COPY``; (seconds, CPU seconds of this process)."""
    import asyncpg

    now = datetime.now(UTC)
    rows = [(r[0], f'["{r[1]}"]', r[2], r[3], "lead", "[]", "{}", now, now) for r in customers_rows(count)]
    conn = await asyncpg.connect(url.replace("postgres://", "postgresql://"))
    try:
        started, cpu = time.perf_counter(), time.process_time()
        columns = ["name", "aliases", "industry", "grade", "stage", "tags", "custom_fields", "created_at",
                   "updated_at"]  # fmt: skip
        await conn.copy_records_to_table("customer", records=rows, columns=columns)
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        await conn.close()


def staff_csv(path: Path) -> Path:
    lines = ["姓名,企业微信账号,角色,上级", "基准主管,benchmgr,主管,"]
    lines += [f"销售{i:02d},bench{i:02d},销售,基准主管" for i in range(REPS)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def fresh_database(base: str | None, workdir: Path, label: str) -> tuple[str, str | None]:
    """A migrated empty database: (url, PostgreSQL name to drop or None)."""
    if not base:
        url = f"sqlite://{workdir / (label + '.sqlite3')}"
        await migrate_database(url)
        return url, None
    url, name = _scratch_database(base)
    await _pg(base, f'CREATE DATABASE "{name}"')
    await migrate_database(url)
    return url, name


async def customers_round(args: argparse.Namespace, workdir: Path, sheet: Path, n: int) -> dict[str, float]:
    url, name = await fresh_database(args.database, workdir, f"import{n}")
    raw_url, raw_name = await fresh_database(args.database, workdir, f"raw{n}")
    try:
        config = workdir / "crmbot.toml"
        config.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
        crmbot(config, "import", "staff", str(staff_csv(workdir / "staff.csv")))  # the owners
        seconds, cpu, rss, halfway, out = crmbot(config, "import", "customers", str(sheet))
        if f"新增 {args.customers}，" not in out:
            raise RuntimeError(f"unexpected import summary: {out}")
        again, again_cpu, again_rss, _, out = crmbot(config, "import", "customers", str(sheet))
        if f"无变化 {args.customers}，" not in out:
            raise RuntimeError(f"unexpected re-import summary: {out}")
        if raw_name is None:
            raw, raw_cpu = customers_raw_sqlite(raw_url.removeprefix("sqlite://"), args.customers)
        else:
            raw, raw_cpu = await customers_raw_postgres(raw_url, args.customers)
        return {
            "seconds": seconds, "cpu": cpu, "rss": rss, "halfway": halfway, "again": again, "again_cpu": again_cpu,
            "again_rss": again_rss, "raw": raw, "raw_cpu": raw_cpu,
        }  # fmt: skip
    finally:
        for drop in (name, raw_name):
            if drop is not None and args.database:
                await _pg(args.database, f'DROP DATABASE IF EXISTS "{drop}" WITH (FORCE)')


def _range(values: list[float], fmt: str = "{:.1f}") -> str:
    low, high = min(values), max(values)
    return fmt.format(low) if len(values) == 1 else f"{fmt.format(low)}–{fmt.format(high)}"


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sheet = write_customers(workdir / f"customers.{args.format}", args.customers)
        rounds = []
        for n in range(args.rounds):
            result = await customers_round(args, workdir, sheet, n)
            rounds.append(result)
            print(
                f"round {n + 1}: import {result['seconds']:.1f} s, CPU {result['cpu']:.1f} s "
                f"({args.customers / result['seconds']:,.0f} rows/s), RSS halfway {result['halfway']:.0f} MiB, "
                f"peak {result['rss']:.0f} MiB; again {result['again']:.1f} s, CPU {result['again_cpu']:.1f} s, "
                f"peak RSS {result['again_rss']:.0f} MiB; raw baseline {result['raw']:.2f} s, "
                f"CPU {result['raw_cpu']:.2f} s",
                flush=True,
            )
    where = "PostgreSQL" if args.database else "SQLite"
    load = os.getloadavg()[0]
    print(f"\n{where}, {args.customers:,} customers ({args.format}), {args.rounds} rounds, load {load:.1f}:")
    print(
        f"  crmbot import customers: {_range([r['seconds'] for r in rounds])} s "
        f"(CPU {_range([r['cpu'] for r in rounds])} s), "
        f"RSS halfway {_range([r['halfway'] for r in rounds], '{:.0f}')} MiB, "
        f"peak {_range([r['rss'] for r in rounds], '{:.0f}')} MiB"
    )
    print(
        f"  the same file again:     {_range([r['again'] for r in rounds])} s "
        f"(CPU {_range([r['again_cpu'] for r in rounds])} s), "
        f"peak RSS {_range([r['again_rss'] for r in rounds], '{:.0f}')} MiB"
    )
    raw, raw_cpu = _range([r["raw"] for r in rounds], "{:.2f}"), _range([r["raw_cpu"] for r in rounds], "{:.2f}")
    print(f"  raw baseline ({'COPY' if args.database else 'executemany'}): {raw} s (CPU {raw_cpu} s)")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--format", choices=["csv", "xlsx"], default="csv")
    parser.add_argument("--database", default="", help="PostgreSQL server URL (a scratch database is made)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main(sys.argv[1:])

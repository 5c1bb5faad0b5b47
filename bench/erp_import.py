"""Bulk order import benchmark: ``crmbot import orders FILE`` of ``--orders`` orders (one CSV row each: 已发货 with
one product line) on SQLite and PostgreSQL, next to a raw baseline of the same rows in the same round.

Each round and database starts empty (a temporary SQLite file, a throw-away PostgreSQL database) with 2,000
customers of one owner. ``crmbot import orders`` runs as the admin runs it (a subprocess, default settings) and is
timed from start to exit; an import of the header alone times start-up, reported apart. Baseline: the same rows
written by the bare driver in one transaction, orders then their status steps and lines (PostgreSQL: asyncpg
``COPY``; SQLite: ``sqlite3`` ``executemany``), parsing the CSV with the ``csv`` module. Rounds are interleaved
and the load average recorded::

    .venv/bin/python -m bench.erp_import --orders 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

CUSTOMERS = 2000
ORDER_COLUMNS = (
    "source",
    "order_no",
    "customer_id",
    "order_date",
    "total",
    "status",
    "status_at",
    "carrier",
    "tracking_no",
    "invoice_no",
    "created_at",
)
HEADER = "订单号,客户名称,下单日期,状态,金额,产品,产品线,数量,行金额\n"
SETUP = """
import asyncio, sys
from bot.app import create_app, load_settings, new_event_loop
from bot.cli import running_app
from models.customers import Customer
from models.staff import Staff

async def main(url: str, customers: int) -> None:
    async with running_app(load_settings("/dev/null", database={"url": url})):
        owner = await Staff.create(name="张三")
        await Customer.bulk_create([Customer(name=f"客户{i:04d}", owner_id=owner.id) for i in range(customers)])

new_event_loop().run_until_complete(main(sys.argv[1], int(sys.argv[2])))
"""


def write_file(path: Path, orders: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write(HEADER)
        for i in range(orders):
            day = f"20{24 + i % 2}-{i % 12 + 1:02d}-{i % 28 + 1:02d}"
            out.write(f"BULK-{i:07d},客户{i % CUSTOMERS:04d},{day},已发货,1000,液压缸 HC-80,液压缸,2,1000\n")


@asynccontextmanager
async def _database(kind: str, root: str, tmp: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        path = tmp / f"{uuid.uuid4().hex[:8]}.sqlite3"
        yield f"sqlite://{path}"
        path.unlink(missing_ok=True)
        return
    admin = await asyncpg.connect(root.rstrip("/") + "/postgres")
    name = f"crmbot_bench_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{root.rstrip('/')}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *args, env={**os.environ, **(env or {})}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{args[:3]} exited {proc.returncode}: {err.decode()[-2000:]}")
    return time.perf_counter() - began, out.decode()


def _rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))[1:]


def _raw_sqlite(url: str, path: Path) -> None:
    db = sqlite3.connect(url.removeprefix("sqlite://"))
    customers = dict(db.execute("SELECT name, id FROM customer"))
    now = datetime.now(UTC).isoformat()
    rows = _rows(path)
    with db:
        db.executemany(
            "INSERT INTO customer_order (source, order_no, customer_id, order_date, total, status, status_at, carrier,"
            " tracking_no, invoice_no, created_at) VALUES ('raw', ?, ?, ?, ?, 'shipped', ?, '', '', '', ?)",
            [(r[0], customers[r[1]], r[2], r[4], r[2] + "T00:00:00+08:00", now) for r in rows],
        )
        ids = dict(db.execute("SELECT order_no, id FROM customer_order WHERE source = 'raw'"))
        db.executemany(
            "INSERT INTO order_status_change (order_id, status, at, recorded_at) VALUES (?, 'shipped', ?, ?)",
            [(ids[r[0]], r[2] + "T00:00:00+08:00", now) for r in rows],
        )
        db.executemany(
            "INSERT INTO order_line (order_id, product, product_line, quantity, amount) VALUES (?, ?, ?, ?, ?)",
            [(ids[r[0]], r[5], r[6], r[7], r[8]) for r in rows],
        )
    db.close()


async def _raw_postgres(url: str, path: Path) -> None:
    conn = await asyncpg.connect(url)
    customers = {r["name"]: r["id"] for r in await conn.fetch("SELECT id, name FROM customer")}
    now = datetime.now(UTC)
    rows = _rows(path)
    at = {r[2]: datetime.fromisoformat(r[2] + "T00:00:00+08:00") for r in rows}
    async with conn.transaction():
        await conn.copy_records_to_table(
            "customer_order",
            columns=ORDER_COLUMNS,
            records=[
                (
                    "raw",
                    r[0],
                    customers[r[1]],
                    date.fromisoformat(r[2]),
                    Decimal(r[4]),
                    "shipped",
                    at[r[2]],
                    "",
                    "",
                    "",
                    now,
                )
                for r in rows
            ],
        )
        ids = {r["order_no"]: r["id"] for r in await conn.fetch("SELECT order_no, id FROM customer_order")}
        await conn.copy_records_to_table(
            "order_status_change",
            columns=["order_id", "status", "at", "recorded_at"],
            records=[(ids[r[0]], "shipped", at[r[2]], now) for r in rows],
        )
        await conn.copy_records_to_table(
            "order_line",
            columns=["order_id", "product", "product_line", "quantity", "amount"],
            records=[(ids[r[0]], r[5], r[6], Decimal(r[7]), Decimal(r[8])) for r in rows],
        )
    await conn.close()


async def one(kind: str, args: argparse.Namespace, tmp: Path, data: Path, empty: Path) -> list[dict[str, Any]]:
    crmbot = str(Path(sys.executable).parent / "crmbot")
    results = []
    async with _database(kind, args.database, tmp) as url:
        env = {"CRMBOT_DATABASE__URL": url}
        await _run(sys.executable, "-c", SETUP, url, str(CUSTOMERS))
        start_up, _ = await _run(crmbot, "import", "orders", str(empty), "--config", "/dev/null", env=env)
        seconds, out = await _run(crmbot, "import", "orders", str(data), "--config", "/dev/null", env=env)
        assert f"新增 added {args.orders}" in out, out
        results.append(
            {
                "kind": f"crmbot import ({kind})",
                "orders": args.orders,
                "seconds": round(seconds, 1),
                "rows_per_s": round(args.orders / seconds),
                "start_up_s": round(start_up, 1),
                "rows_per_s_after_start_up": round(args.orders / max(0.01, seconds - start_up)),
            }
        )
    async with _database(kind, args.database, tmp) as url:
        await _run(sys.executable, "-c", SETUP, url, str(CUSTOMERS))
        began = time.perf_counter()
        if kind == "sqlite":
            await asyncio.to_thread(_raw_sqlite, url, data)
        else:
            await _raw_postgres(url, data)
        seconds = time.perf_counter() - began
        raw = "sqlite3 executemany" if kind == "sqlite" else "asyncpg COPY"
        results.append(
            {"kind": f"raw {raw} ({kind})", "orders": args.orders, "rows_per_s": round(args.orders / seconds)}
        )
    return results


async def main_async(args: argparse.Namespace) -> None:
    by_kind: dict[str, list[float]] = {}
    loads = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data, empty = tmp / "orders.csv", tmp / "empty.csv"
        write_file(data, args.orders)
        empty.write_text(HEADER, encoding="utf-8")
        for n in range(1, args.rounds + 1):
            for kind in args.databases.split(","):
                loads.append(os.getloadavg()[0])
                for result in await one(kind, args, tmp, data, empty):
                    result |= {"round": n, "load": round(loads[-1], 1)}
                    print(json.dumps(result, ensure_ascii=False), flush=True)
                    by_kind.setdefault(result["kind"], []).append(result["rows_per_s"])
    summary = {kind: f"{min(v):.0f} – {max(v):.0f}" for kind, v in by_kind.items()}
    print(json.dumps({"rows_per_s": summary, "load": f"{min(loads):.1f} – {max(loads):.1f}"}, ensure_ascii=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database", default=os.environ.get("CRMBOT_BENCH_PG", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

"""ERP order benchmark on PostgreSQL: order events through ``POST /erp/orders`` (``--mode webhook``) or pulled from
the 用友T+ simulator by ``crmbot erp sync`` (``--mode pull``), each round next to baselines measured in the same run.

Every round uses a fresh PostgreSQL database (dropped afterwards) with 200 customers of one owner. Every order is
new and reaches three statuses (下单 with two lines, 生产中, 已发货 with a tracking number), so each event writes a
status step, and the first of an order also the order and its lines.

``webhook``: the real ``create_app`` (scheduler and outbox dispatcher off) in a subprocess; the client (this
process, aiohttp) sends ``--requests`` signed requests of ``--batch`` events, ``--concurrency`` at a time, all
prepared before timing. Baselines: the same bodies posted to a hello-world aiohttp endpoint (reads the body,
answers ``{}``), and the same rows written by raw asyncpg (per batch one transaction: the event ids, the orders
upserted, the steps and the lines, each one ``INSERT … SELECT FROM unnest(…)``), ``--concurrency`` connections.

``pull``: ``--orders`` orders (three T+ rows each) in the simulator (``tests/simulators/tplus.py``, served by this
process); ``crmbot erp sync`` runs as the admin runs it (a subprocess, T+ page size of the default config) and is
timed from start to exit; a second sync, which finds nothing new, times start-up and one empty page, reported
apart. Baseline: every page fetched from the simulator and its rows written by raw asyncpg as above.

Rounds are interleaved (crmbot, then its baselines, ``--rounds`` times); the load average is recorded::

    .venv/bin/python -m bench.erp_orders --rounds 3
    .venv/bin/python -m bench.erp_orders --mode pull --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from handlers.orders.webhook import sign
from tests.simulators.tplus import TplusSimulator

SECRET = "bench-erp-secret"
CUSTOMERS = 200
SERVER = """
import asyncio, sys
from aiohttp import web
from bot.app import create_app, load_settings, new_event_loop
from models.customers import Customer
from models.staff import Staff

async def main(url: str, port: int, secret: str, customers: int) -> None:
    settings = load_settings("/dev/null", database={"url": url}, erp={"webhook_secret": secret, "max_events": 1000})
    app = create_app(settings, run_scheduler=False, run_dispatcher=False)
    runner = web.AppRunner(app)
    await runner.setup()
    owner = await Staff.create(name="张三")
    await Customer.bulk_create([Customer(name=f"客户{i:04d}", owner_id=owner.id) for i in range(customers)])
    if port:
        await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    if port:
        await asyncio.Event().wait()
    await runner.cleanup()

loop = new_event_loop()
loop.run_until_complete(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
"""
HELLO = """
import asyncio, sys
from aiohttp import web

async def hello(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({})

async def main(port: int) -> None:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/erp/orders", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1])))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _steps(order: int, start: datetime) -> list[dict[str, Any]]:
    """Order ``order``'s three events, without their event ids."""
    no, customer = f"BENCH-{order:07d}", f"客户{order % CUSTOMERS:04d}"
    at = start + timedelta(minutes=order)
    lines = [
        {"product": "液压缸 HC-80", "quantity": 2, "amount": 900},
        {"product": "密封件", "quantity": 5, "amount": 100},
    ]
    base = {"order_no": no, "customer": customer}
    return [
        base | {"status": "placed", "at": at.isoformat(), "total": 1000, "lines": lines},
        base | {"status": "production", "at": (at + timedelta(hours=1)).isoformat()},
        base
        | {
            "status": "shipped",
            "at": (at + timedelta(hours=2)).isoformat(),
            "carrier": "顺丰",
            "tracking_no": f"SF{order}",
        },
    ]


def _events(n: int, start: datetime) -> list[dict[str, Any]]:
    """``n`` events: each order placed (two lines), in production, shipped."""
    events: list[dict[str, Any]] = []
    order = 0
    while len(events) < n:
        order += 1
        events += [{"event_id": f"BENCH-{order:07d}-{i}", **e} for i, e in enumerate(_steps(order, start))]
    return events[:n]


@asynccontextmanager
async def _database(root: str) -> AsyncIterator[str]:
    """A fresh database's URL, dropped afterwards."""
    admin = await asyncpg.connect(root.rstrip("/") + "/postgres")
    name = f"crmbot_bench_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{root.rstrip('/')}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@asynccontextmanager
async def _process(*args: str) -> AsyncIterator[None]:
    """A Python subprocess that prints ``ready`` when it is; terminated afterwards."""
    proc = await asyncio.create_subprocess_exec(sys.executable, *args, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None and (await proc.stdout.readline()).strip() == b"ready"
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def _drive(port: int, bodies: list[bytes], concurrency: int) -> tuple[float, list[float], dict[int, int]]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    errors: dict[int, int] = {}  # HTTP status → requests answered with it, 200 aside

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            ts = str(int(time.time()))
            headers = {"X-Crmbot-Timestamp": ts, "X-Crmbot-Signature": sign(SECRET, ts, body)}
            began = time.perf_counter()
            async with session.post(f"http://127.0.0.1:{port}/erp/orders", data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    errors[resp.status] = errors.get(resp.status, 0) + 1
            latencies.append(time.perf_counter() - began)

    async with aiohttp.ClientSession() as session:
        began = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - began, latencies, errors


def _http_result(
    kind: str, events: int, bodies: int, seconds: float, latencies: list[float], errors: Any
) -> dict[str, Any]:
    latencies.sort()
    return {
        "kind": kind,
        "events_per_s": round(events / seconds, 1),
        "requests_per_s": round(bodies / seconds, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1),
        "errors": errors,
    }


class RawWriter:
    """The rows order events make, written by raw asyncpg: one ``unnest`` statement per table, no framework."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.customers: dict[str, int] = {}

    async def load(self) -> None:
        async with self.pool.acquire() as conn:
            self.customers = {r["name"]: r["id"] for r in await conn.fetch("SELECT id, name FROM customer")}

    async def write(self, events: list[dict[str, Any]], prefix: str) -> None:
        now = datetime.now(UTC)
        orders: dict[str, dict[str, Any]] = {}
        for e in events:
            order = orders.setdefault(e["order_no"], {"customer": e["customer"], "steps": [], "lines": []})
            order["steps"].append((e["status"], datetime.fromisoformat(e["at"])))
            order["lines"] = e.get("lines") or order["lines"]
        nos = [prefix + no for no in orders]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO order_event_seen (source, event_id, received_at)"
                " SELECT 'raw', unnest($1::text[]), $2 ON CONFLICT DO NOTHING",
                [prefix + e["event_id"] for e in events],
                now,
            )
            rows = await conn.fetch(
                "INSERT INTO customer_order (source, order_no, customer_id, order_date, total, status, status_at,"
                " carrier, tracking_no, invoice_no, created_at) SELECT 'raw', n, c, $3, 1000, s, a, '', '', '', $4"
                " FROM unnest($1::text[], $2::int[], $5::text[], $6::timestamptz[]) AS t(n, c, s, a)"
                " ON CONFLICT (source, order_no) DO UPDATE SET status = excluded.status RETURNING id, order_no",
                nos,
                [self.customers[o["customer"]] for o in orders.values()],
                date.today(),
                now,
                [o["steps"][-1][0] for o in orders.values()],
                [o["steps"][-1][1] for o in orders.values()],
            )
            ids = {r["order_no"]: r["id"] for r in rows}
            steps = [(ids[no], s, at) for no, o in zip(nos, orders.values(), strict=True) for s, at in o["steps"]]
            await conn.execute(
                "INSERT INTO order_status_change (order_id, status, at, recorded_at)"
                " SELECT o, s, a, $4 FROM unnest($1::int[], $2::text[], $3::timestamptz[]) AS t(o, s, a)",
                [x[0] for x in steps],
                [x[1] for x in steps],
                [x[2] for x in steps],
                now,
            )
            lines = [(ids[no], x) for no, o in zip(nos, orders.values(), strict=True) for x in o["lines"]]
            await conn.execute(
                "INSERT INTO order_line (order_id, product, product_line, quantity, amount)"
                " SELECT o, p, '', q, a FROM unnest($1::int[], $2::text[], $3::numeric[], $4::numeric[])"
                " AS t(o, p, q, a)",
                [x[0] for x in lines],
                [x[1]["product"] for x in lines],
                [Decimal(x[1]["quantity"]) for x in lines],
                [Decimal(x[1]["amount"]) for x in lines],
            )


async def _raw(url: str, batches: list[list[dict[str, Any]]], concurrency: int, prefix: str) -> float:
    async with asyncpg.create_pool(url, min_size=concurrency, max_size=concurrency) as pool:
        writer = RawWriter(pool)
        await writer.load()
        queue = list(reversed(batches))

        async def worker() -> None:
            while queue:
                await writer.write(queue.pop(), prefix)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - began


async def webhook_round(args: argparse.Namespace) -> list[dict[str, Any]]:
    events = _events(args.requests * args.batch, datetime.now(UTC) - timedelta(days=30))
    batches = [events[i : i + args.batch] for i in range(0, len(events), args.batch)]
    bodies = [json.dumps({"events": b}, ensure_ascii=False).encode() for b in batches]
    results = []
    async with _database(args.database) as url:
        port = _free_port()
        async with _process("-c", SERVER, url, str(port), SECRET, str(CUSTOMERS)):
            seconds, latencies, errors = await _drive(port, bodies, args.concurrency)
        results.append(_http_result("crmbot webhook", len(events), len(bodies), seconds, latencies, errors))
        port = _free_port()
        async with _process("-c", HELLO, str(port)):
            seconds, latencies, errors = await _drive(port, bodies, args.concurrency)
        results.append(_http_result("hello-world aiohttp", len(events), len(bodies), seconds, latencies, errors))
        seconds = await _raw(url, batches, args.concurrency, "RAW-")
        results.append({"kind": "raw asyncpg", "events_per_s": round(len(events) / seconds, 1)})
    return results


async def _crmbot(env: dict[str, str], *args: str) -> tuple[float, str]:
    crmbot = str(Path(sys.executable).parent / "crmbot")
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        crmbot, *args, env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"crmbot {' '.join(args)} exited {proc.returncode}: {err.decode()[-2000:]}")
    return seconds, out.decode()


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


def _tplus(orders: int, start: datetime) -> TplusSimulator:
    sim = TplusSimulator()
    states = {"placed": "已下单", "production": "生产中", "shipped": "已发货"}
    for order in range(1, orders + 1):
        steps = _steps(order, start)
        details = [(x["product"], x["quantity"], x["amount"]) for x in steps[0]["lines"]]  # on every T+ row
        for step in steps:
            sim.add(
                step["order_no"],
                step["customer"],
                states[step["status"]],
                step["at"],
                date=(start + timedelta(minutes=order)).date().isoformat(),
                amount=1000,
                waybill=step.get("tracking_no", ""),
                details=details,
            )
    return sim


async def _raw_pull(url: str, base: str, sim: TplusSimulator, page_size: int) -> float:
    """Every page fetched and written by raw asyncpg, one transaction a page."""
    from integrations.tplus.feed import event_of

    async with asyncpg.create_pool(url, min_size=1, max_size=1) as pool, aiohttp.ClientSession() as session:
        writer = RawWriter(pool)
        await writer.load()
        began = time.perf_counter()
        async with session.post(
            f"{base}/api/v1/auth/token", json={"appKey": sim.app_key, "appSecret": sim.app_secret}
        ) as r:
            token = (await r.json())["access_token"]
        ts, after, more = "", "0", True
        while more:
            params = {"ts": ts, "afterId": after, "pageSize": str(page_size)}
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(f"{base}/api/v1/SaleOrder/Changes", params=params, headers=headers) as r:
                data = (await r.json())["Data"]
            rows, more = data["Rows"], data["HasMore"]
            if not rows:
                break
            await writer.write([event_of(row) for row in rows], "RAW-")
            ts, after = str(rows[-1]["TS"]), str(rows[-1]["ID"])
        return time.perf_counter() - began


async def pull_round(args: argparse.Namespace) -> list[dict[str, Any]]:
    sim = _tplus(args.orders, datetime.now(UTC) - timedelta(days=30))
    rows = len(sim.rows)
    runner, base = await _serve(sim.app())
    sim.url = base
    results = []
    try:
        async with _database(args.database) as url:
            async with _process("-c", SERVER, url, "0", SECRET, str(CUSTOMERS)):
                pass
            env = {
                "CRMBOT_DATABASE__URL": url,
                "CRMBOT_TPLUS__API_BASE": base,
                "CRMBOT_TPLUS__APP_KEY": sim.app_key,
                "CRMBOT_TPLUS__APP_SECRET": sim.app_secret,
            }
            seconds, out = await _crmbot(env, "erp", "sync", "--config", "/dev/null")
            assert f"新状态 {rows} 条" in out, out
            idle, out = await _crmbot(env, "erp", "sync", "--config", "/dev/null")
            assert "新状态 0 条" in out, out
            results.append(
                {
                    "kind": "crmbot erp sync",
                    "rows": rows,
                    "seconds": round(seconds, 2),
                    "events_per_s": round(rows / seconds, 1),
                    "start_up_s": round(idle, 2),
                    "events_per_s_after_start_up": round(rows / max(0.01, seconds - idle), 1),
                }
            )
            from integrations.tplus.settings import TplusSettings

            seconds = await _raw_pull(url, base, sim, TplusSettings().page_size)
            results.append({"kind": "raw fetch + asyncpg", "rows": rows, "events_per_s": round(rows / seconds, 1)})
    finally:
        await runner.cleanup()
    return results


async def rounds(
    args: argparse.Namespace, one: Callable[[argparse.Namespace], Awaitable[list[dict[str, Any]]]]
) -> None:
    by_kind: dict[str, list[float]] = {}
    loads = []
    for n in range(1, args.rounds + 1):
        loads.append(os.getloadavg()[0])
        for result in await one(args):
            result |= {"round": n, "load": round(loads[-1], 1)}
            print(json.dumps(result, ensure_ascii=False), flush=True)
            by_kind.setdefault(result["kind"], []).append(result["events_per_s"])
    summary = {kind: f"{min(v):.0f} – {max(v):.0f}" for kind, v in by_kind.items()}
    print(json.dumps({"events_per_s": summary, "load": f"{min(loads):.1f} – {max(loads):.1f}"}, ensure_ascii=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mode", choices=("webhook", "pull"), default="webhook")
    parser.add_argument("--database", default=os.environ.get("CRMBOT_BENCH_PG", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--orders", type=int, default=10_000, help="pull: orders in the simulator (3 rows each)")
    args = parser.parse_args()
    asyncio.run(rounds(args, webhook_round if args.mode == "webhook" else pull_round))


if __name__ == "__main__":
    main()

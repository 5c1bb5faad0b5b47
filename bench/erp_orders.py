"""ERP order webhook benchmark: signed batches of order events into ``POST /erp/orders`` on PostgreSQL.

The server is the real ``create_app`` (scheduler and outbox dispatcher off: this measures taking orders in) in a
subprocess on its own port, against a fresh PostgreSQL database that is dropped afterwards; 200 customers with one
owner are created first. The client (this process, aiohttp) sends ``--requests`` signed requests of ``--batch``
events each, ``--concurrency`` at a time, all generated before timing: every order is new and reaches three
statuses (下单 with two lines, 生产中, 已发货 with a tracking number), so each event writes a status step, and the
first of an order also the order and its lines. Reported: events and requests per second, and p50/p99 request
latency::

    .venv/bin/python -m bench.erp_orders --database postgres://postgres@127.0.0.1:5432 --requests 300 --batch 50
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
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg

from handlers.orders.webhook import sign

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
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()

loop = new_event_loop()
loop.run_until_complete(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _events(n: int, start: datetime) -> list[dict[str, Any]]:
    """``n`` events: each order placed (two lines), in production, shipped."""
    events: list[dict[str, Any]] = []
    order = 0
    while len(events) < n:
        order += 1
        no, customer = f"BENCH-{order:07d}", f"客户{order % CUSTOMERS:04d}"
        at = start + timedelta(minutes=order)
        lines = [
            {"product": "液压缸 HC-80", "quantity": 2, "amount": 900},
            {"product": "密封件", "quantity": 5, "amount": 100},
        ]
        steps: list[dict[str, Any]] = [
            {"status": "placed", "at": at.isoformat(), "total": 1000, "lines": lines},
            {"status": "production", "at": (at + timedelta(hours=1)).isoformat()},
            {
                "status": "shipped",
                "at": (at + timedelta(hours=2)).isoformat(),
                "carrier": "顺丰",
                "tracking_no": f"SF{order}",
            },
        ]
        for i, step in enumerate(steps):
            events.append({"event_id": f"{no}-{i}", "order_no": no, "customer": customer, **step})
    return events[:n]


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


async def run(args: argparse.Namespace) -> dict[str, Any]:
    admin = args.database.rstrip("/") + "/postgres"
    name = f"crmbot_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    port = _free_port()
    url = f"{args.database.rstrip('/')}/{name}"
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, url, str(port), SECRET, str(CUSTOMERS), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert server.stdout is not None and (await server.stdout.readline()).strip() == b"ready"
        events = _events(args.requests * args.batch, datetime.now(UTC) - timedelta(days=30))
        batches = [events[i : i + args.batch] for i in range(0, len(events), args.batch)]
        bodies = [json.dumps({"events": b}, ensure_ascii=False).encode() for b in batches]
        seconds, latencies, errors = await _drive(port, bodies, args.concurrency)
    finally:
        server.terminate()
        await server.wait()
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
    latencies.sort()
    return {
        "requests": len(bodies),
        "batch": args.batch,
        "concurrency": args.concurrency,
        "errors": errors,
        "seconds": round(seconds, 2),
        "events_per_s": round(len(events) / seconds, 1),
        "requests_per_s": round(len(bodies) / seconds, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default=os.environ.get("CRMBOT_BENCH_PG", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    print(json.dumps(asyncio.run(run(parser.parse_args())), ensure_ascii=False))


if __name__ == "__main__":
    main()

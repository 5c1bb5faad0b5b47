"""Chat sidebar benchmark: how long the sidebar's requests take for a rep with a busy customer.

The real app (``create_app``, scheduler off, SQLite in a temporary directory or ``--database``) and the WeCom API
simulator run in this process on loopback, the app at the address it is configured with (``server.public_url``).
The corp: ``--customers`` customers with a contact each, shared by ten reps; the rep's customer under test has
``--followups`` follow-ups, 10 open tickets and 5 open opportunities. The rep signs in once through the simulator's
OAuth; then, for each of ``--rounds`` rounds, ``--requests`` requests of each kind are timed one after another:
``GET /healthz`` (the baseline: one database round trip through the same server), ``GET /sidebar/config`` (the
JS-SDK signatures, tickets cached), ``GET /sidebar/customer`` (the card fragment) and ``POST /sidebar/followup``
(a follow-up through the chat's intent, audited, and the card again). Reported per round: p50 / p95 in milliseconds,
and the load average::

    .venv/bin/python -m bench.sidebar --rounds 3 --requests 200
    .venv/bin/python -m bench.sidebar --database postgres://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from bot.app import create_app, load_settings
from bot.keys import BOT
from models.customers import Contact, Customer, Stage
from models.followups import FollowUp
from models.opportunities import Opportunity
from models.staff import Role, Staff, StaffAccount
from models.tickets import Ticket, TicketPriority, TicketStatus
from tests.helpers import WECOM
from tests.simulators.wecom import WeComSimulator

REPS = 10
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def corp(customers: int, followups: int) -> tuple[Customer, str]:
    """The people and customers; the customer under test and its contact id."""
    reps = [await Staff.create(name=f"销售{i:02d}", role=Role.REP) for i in range(REPS)]
    await StaffAccount.bulk_create(
        [StaffAccount(staff_id=r.id, platform="wecom", user_id=f"rep{i:02d}") for i, r in enumerate(reps)]
    )
    now = datetime.now(UTC)
    await Customer.bulk_create(
        [
            Customer(name=f"客户{i:05d}", owner_id=reps[i % REPS].id, stage=Stage.QUOTE, grade="A", tags=["重点"])
            for i in range(customers)
        ]
    )
    ids = dict(await Customer.all().values_list("name", "id"))
    await Contact.bulk_create(
        [
            Contact(customer_id=ids[f"客户{i:05d}"], name=f"联系人{i}", external_userid=f"wm{i:08d}")
            for i in range(customers)
        ]
    )
    target = await Customer.get(name="客户00000")
    await FollowUp.bulk_create(
        [
            FollowUp(customer_id=target.id, staff_id=reps[0].id, content=f"第{n}次电话沟通报价和交期", channel="phone",
                     created_at=now - timedelta(hours=n))
            for n in range(followups)
        ]
    )  # fmt: skip
    await Ticket.bulk_create(
        [
            Ticket(customer_id=target.id, title=f"设备故障{n}", priority=TicketPriority.NORMAL,
                   status=TicketStatus.OPEN, reporter_id=reps[0].id, assignee_id=reps[0].id, first_response_due=now,
                   created_at=now)
            for n in range(10)
        ]
    )  # fmt: skip
    await Opportunity.bulk_create(
        [
            Opportunity(customer_id=target.id, name=f"二期项目{n}", amount=1_000_000 + n, stage=Stage.PROPOSAL,
                        stage_entered_at=now, created_at=now)
            for n in range(5)
        ]
    )  # fmt: skip
    return target, "wm00000000"


async def timed(count: int, request: Callable[[], Awaitable[int]]) -> list[float]:
    spent = []
    for _ in range(count):
        start = time.perf_counter()
        status = await request()
        spent.append((time.perf_counter() - start) * 1000)
        assert status == 200, status
    return spent


async def run(database: str, args: argparse.Namespace) -> None:
    sim = WeComSimulator(WECOM.corp_id, WECOM.secret, WECOM.agent_id, oauth_user="rep00")
    sim_server = TestServer(sim.app())
    await sim_server.start_server()
    sim.url = str(sim_server.make_url("")).rstrip("/")
    port = free_port()
    settings = load_settings(
        os.devnull,
        database={"url": database},
        server={"public_url": f"http://127.0.0.1:{port}"},
        wecom={
            "corp_id": WECOM.corp_id,
            "agent_id": WECOM.agent_id,
            "secret": WECOM.secret,
            "token": WECOM.token,
            "encoding_aes_key": WECOM.encoding_aes_key,
            "api_base": sim.url,
            "oauth_url": f"{sim.url}/connect/oauth2/authorize",
        },
    )
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings, run_scheduler=False), port=port))
    await client.start_server()
    try:
        customer, contact = await corp(args.customers, args.followups)
        await client.app[BOT].understanding.refresh()
        page = await client.get("/sidebar")
        assert page.status == 200 and str(page.url).startswith(f"http://127.0.0.1:{port}/sidebar")
        address = f"http://127.0.0.1:{port}/sidebar"
        card = await (await client.get("/sidebar/customer", params={"contact": contact})).text()
        csrf = CSRF.search(card)
        assert csrf is not None, card[:200]

        async def health() -> int:
            return (await client.get("/healthz")).status

        async def config() -> int:
            return (await client.get("/sidebar/config", params={"url": address})).status

        async def fragment() -> int:
            return (await client.get("/sidebar/customer", params={"contact": contact})).status

        async def follow_up() -> int:
            form = {"customer": str(customer.id), "contact": contact, "csrf": csrf[1], "key": secrets.token_urlsafe(12),
                    "content": "电话沟通了报价，客户要求下周三前给出交期"}  # fmt: skip
            return (await client.post("/sidebar/followup", data=form)).status

        kinds = {"healthz (baseline)": health, "sidebar/config": config, "sidebar/customer": fragment}
        kinds["sidebar/followup"] = follow_up
        for round_no in range(1, args.rounds + 1):
            load = os.getloadavg()[0]
            for name, request in kinds.items():
                spent = await timed(args.requests, request)
                print(
                    f"round {round_no}  {name:20s} n={len(spent)}  p50 {statistics.median(spent):6.2f} ms  "
                    f"p95 {pct(spent, 95):6.2f} ms  (load {load:.1f})",
                    flush=True,
                )
    finally:
        await client.close()
        await sim_server.close()


async def main_async(args: argparse.Namespace) -> None:
    if args.database:
        name = f"crmbot_bench_{uuid.uuid4().hex[:8]}"
        admin = args.database.replace("postgres://", "postgresql://")
        conn = await asyncpg.connect(admin)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        url = urlunsplit(urlsplit(args.database)._replace(path="/" + name))
        try:
            await run(url, args)
        finally:
            conn = await asyncpg.connect(admin)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()
        return
    with tempfile.TemporaryDirectory() as tmp:
        await run(f"sqlite://{tmp}/bench.sqlite3", args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--customers", type=int, default=900)
    parser.add_argument("--followups", type=int, default=300)
    parser.add_argument("--database", default="", help="a PostgreSQL URL; a scratch database is created in it")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

"""Approval benchmark: how long from a manager's tap on a WeCom approval card until the rep's chat has the answer.

The real app (``create_app`` with its outbox dispatcher, default outbox settings, SQLite in a temporary directory or
``--database``) and the WeCom API simulator run in this process on loopback. For each of ``--requests`` rounds a
rep asks for a discount (a signed, encrypted text callback), the card reaches the manager at the simulator, then the
manager's click (a signed, encrypted ``template_card_event``) is posted and the clock runs until the simulator has
received both the card update and the text to the rep. Reported: p50 / p95 / max of tap → rep told and of
tap → card updated, in milliseconds::

    .venv/bin/python -m bench.approvals --requests 50
    .venv/bin/python -m bench.approvals --database postgres://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from bot.app import create_app, load_settings
from bot.keys import BOT
from models.customers import Customer
from models.staff import Role
from tests.driver import click_xml
from tests.helpers import WECOM, post_wecom, staff_member, text_xml
from tests.simulators.wecom import WeComSimulator


async def wait_for(check: Any, patience: float = 30.0) -> float:
    """Poll ``check()`` every millisecond; the moment (perf_counter) it first held."""
    deadline = time.perf_counter() + patience
    while not check():
        if time.perf_counter() > deadline:
            raise TimeoutError("the simulator never received it")
        await asyncio.sleep(0.001)
    return time.perf_counter()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run(database: str, requests: int) -> None:
    sim = WeComSimulator(WECOM.corp_id, WECOM.secret, WECOM.agent_id)
    sim_server = TestServer(sim.app())
    await sim_server.start_server()
    sim.url = str(sim_server.make_url("")).rstrip("/")
    settings = load_settings(
        os.devnull,
        database={"url": database},
        wecom={
            "corp_id": WECOM.corp_id,
            "agent_id": WECOM.agent_id,
            "secret": WECOM.secret,
            "token": WECOM.token,
            "encoding_aes_key": WECOM.encoding_aes_key,
            "api_base": sim.url,
        },
    )
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings, run_scheduler=False)))
    await client.start_server()
    try:
        director = await staff_member(name="赵总", wecom="zhaozong", role=Role.DIRECTOR)
        manager = await staff_member(name="王经理", wecom="wangjl", role=Role.MANAGER, manager_id=director.id)
        rep = await staff_member(name="张三", wecom="zhangsan", role=Role.REP, manager_id=manager.id)
        await Customer.create(name="华为技术有限公司", aliases=["华为"], owner_id=rep.id)
        await client.app[BOT].understanding.refresh()
        told_ms: list[float] = []
        updated_ms: list[float] = []
        base = int(time.time())
        for i in range(requests):
            cards = len(sim.cards_to("wangjl"))
            texts = len(sim.texts_to("zhangsan"))
            await post_wecom(client, text_xml("zhangsan", "申请折扣 华为 92折 合同金额120万 年度框架协议", 10_000 + i))
            await wait_for(lambda c=cards: len(sim.cards_to("wangjl")) > c)
            await wait_for(lambda t=texts: len(sim.texts_to("zhangsan")) > t)  # the "submitted" answer
            card = sim.cards_to("wangjl")[-1]
            code = sim.issue_response_code("wangjl", card["task_id"])
            texts = len(sim.texts_to("zhangsan"))
            updates = len(sim.card_updates())
            xml = click_xml("wangjl", card["button_list"][0]["key"], card["task_id"], code, base + i)
            start = time.perf_counter()
            resp = await post_wecom(client, xml)
            assert resp.status == 200
            updated = await wait_for(lambda u=updates: len(sim.card_updates()) > u)
            told = await wait_for(lambda t=texts: len(sim.texts_to("zhangsan")) > t)
            assert "已审批通过" in sim.texts_to("zhangsan")[-1]
            told_ms.append((told - start) * 1000)
            updated_ms.append((updated - start) * 1000)
        for name, values in (("tap -> rep told", told_ms), ("tap -> card updated", updated_ms)):
            print(
                f"{name:22s} n={len(values)}  p50 {statistics.median(values):7.1f} ms  "
                f"p95 {pct(values, 95):7.1f} ms  max {max(values):7.1f} ms"
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
            await run(url, args.requests)
        finally:
            conn = await asyncpg.connect(admin)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()
        return
    with tempfile.TemporaryDirectory() as tmp:
        await run(f"sqlite://{tmp}/bench.sqlite3", args.requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--database", default="", help="a PostgreSQL URL; a scratch database is created in it")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

"""Several instances of the bot behind a load balancer, on one PostgreSQL database (docs/SCALING.md): a burst of
signed callbacks spread over three instances, some delivered to two of them as WeCom's retries are, and the
scheduled rules run by all three at the same minute. Every message is stored once, answered once, every customer
it asks for created once, every rule fires once and every push reaches its person once. Split into roles, a "web"
instance only acknowledges, and two "worker" instances answer what it stored: once, and each rep in order."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot import sql
from bot.keys import BOT
from bot.pipeline import handling_lock
from bot.scheduled import run_rules
from models.customers import Customer, Stage
from models.messages import Message
from models.outbox import OutboxMessage, OutboxStatus
from models.reminders import RuleFiring
from tests.conftest import PG_URL
from tests.helpers import deliver_all, post_wecom, signed_callback, text_xml
from tests.test_cli import CRMBOT
from tests.test_delivery_faults import _serve, _serve_config
from tests.test_reminders import DAY0, customer, make_team

pytestmark = pytest.mark.skipif(
    not PG_URL,
    reason="instances share one database on PostgreSQL only: SQLite has a single writer, so one instance",
)

REPS = ("zhangsan", "lisi", "chengong", "wangjl")
MESSAGES = 48


async def _jobs_run(config: Path, at: datetime, workdir: Path) -> None:
    """``crmbot jobs run --now at``: what the scheduler of an instance does at that minute."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CRMBOT_")}
    cmd = [*CRMBOT, "jobs", "run", "--now", at.isoformat(), "--config", str(config)]
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=workdir, env=env, stdout=asyncio.subprocess.DEVNULL)
    assert await proc.wait() == 0


async def test_three_instances_on_one_database_store_answer_create_fire_and_push_everything_once(
    start_app: Any, make_settings: Any, wecom_sim: Any, database_url: str, tmp_path: Path
) -> None:
    # One instance in this process (create_app), two more as deployed (crmbot serve), all on one database.
    local = await start_app(make_settings())
    team = await make_team()
    await customer("华为技术有限公司", team["张三"], "华为", stage=Stage.NEGOTIATION, last_followup_at=DAY0)
    await customer("比亚迪股份有限公司", team["李四"], "比亚迪", stage=Stage.QUOTE, last_followup_at=DAY0)
    servers, bases, configs = [], [], []
    for n in range(2):
        workdir = tmp_path / f"instance{n}"
        workdir.mkdir()
        config, port = _serve_config(workdir, database_url, wecom_sim.url)
        server, base = await _serve(config, port, workdir)
        servers.append(server)
        bases.append(base)
        configs.append((config, workdir))

    try:
        async with aiohttp.ClientSession() as session:

            async def post(instance: int, xml: str) -> int:
                if instance == 0:
                    return int((await post_wecom(local, xml)).status)
                query, body = signed_callback(xml)
                url = f"{bases[instance - 1]}/wecom/callback"
                async with session.post(url, params=query, data=body.encode()) as resp:
                    return resp.status

            # Every other message creates a customer; every fourth also reaches a second instance (a retry).
            texts = {i: "帮助" if i % 2 else f"新建客户 华东{i}号机械有限公司" for i in range(MESSAGES)}
            callbacks = []
            for i, text in texts.items():
                xml = text_xml(REPS[i % len(REPS)], text, 70_000 + i)
                callbacks.append(post(i % 3, xml))
                if i % 4 == 0:
                    callbacks.append(post((i + 1) % 3, xml))
            assert await asyncio.gather(*callbacks) == [200] * len(callbacks)

        # Each instance's scheduler runs the rules at the same minute, a week without contact for both customers.
        week_later = DAY0 + timedelta(days=7)
        await asyncio.gather(run_rules(local.app[BOT], week_later), *(_jobs_run(c, week_later, w) for c, w in configs))
        await deliver_all(local.app, patience=60)
    finally:
        for server in servers:
            server.send_signal(signal.SIGINT)
        await asyncio.gather(*(server.wait() for server in servers))

    assert await Message.filter(to_bot=True).count() == MESSAGES
    assert await Message.filter(to_bot=True, handled_at=None).count() == 0
    replies = await OutboxMessage.filter(dedupe_key__startswith="reply:").values_list("dedupe_key", flat=True)
    assert sorted(replies) == sorted(f"reply:wecom:{70_000 + i}:0" for i in range(MESSAGES))
    created = await Customer.filter(name__startswith="华东").values_list("name", flat=True)
    assert sorted(created) == sorted(t.split()[1] for t in texts.values() if t != "帮助")

    assert await RuleFiring.filter(key__startswith="ladder_warn:").count() == 2
    warned = [to for to in ("zhangsan", "lisi") for t in wecom_sim.texts_to(to) if "跟进预警" in t]
    assert sorted(warned) == ["lisi", "zhangsan"]

    # What WeCom delivered: each reply and push once (nothing went out twice, not even as a dropped repeat).
    sent = [item for item in wecom_sim.sent if item["endpoint"] == "message/send"]
    assert len(sent) == MESSAGES + len(warned)
    assert wecom_sim.dropped_repeats() == 0
    for rep in REPS:
        asked = sum(1 for i in texts if REPS[i % len(REPS)] == rep)
        assert len(wecom_sim.texts_to(rep)) == asked + warned.count(rep)
    assert await OutboxMessage.exclude(status=OutboxStatus.SENT).count() == 0


async def test_a_web_instance_acknowledges_and_two_workers_answer_what_it_stored_once_and_in_each_reps_order(
    start_app: Any, make_settings: Any, wecom_sim: Any, database_url: str, tmp_path: Path
) -> None:
    web = await start_app(make_settings(server={"role": "web"}))
    await make_team()
    first, per_rep = 3, 24
    # Each rep sends in turn: a new customer to create, then help, then the next customer, ...
    texts = {
        rep: [f"新建客户 {rep}{k}号贸易有限公司" if k % 3 != 1 else "帮助" for k in range(per_rep)] for rep in REPS
    }

    async def send(n: int, rep: str, ks: range) -> None:
        for k in ks:
            assert (await post_wecom(web, text_xml(rep, texts[rep][k], 80_000 + 100 * n + k))).status == 200

    await asyncio.gather(*(send(n, rep, range(first)) for n, rep in enumerate(REPS)))
    await asyncio.sleep(0.5)
    # Acknowledged means stored; the web instance neither handles nor sends.
    assert await Message.filter(to_bot=True).count() == first * len(REPS)
    assert await Message.filter(to_bot=True, handled_at__not_isnull=True).count() == 0
    assert wecom_sim.sent == [] and await OutboxMessage.all().count() == 0

    # Another worker (this test) is busy with zhangsan's first message and with lisi: the workers below answer
    # neither of them until it is done, and everyone else meanwhile.
    other = await asyncpg.connect(database_url)
    await other.execute("BEGIN")
    await other.execute("SELECT id FROM message WHERE sender = 'zhangsan' ORDER BY id LIMIT 1 FOR UPDATE")
    await other.execute("SELECT pg_advisory_lock($1)", sql.lock_key(handling_lock("wecom", "lisi")))

    # Two workers take over what is stored, and what the reps send next while they run.
    workers = []
    for n in range(2):
        workdir = tmp_path / f"worker{n}"
        workdir.mkdir()
        workers.append((*_serve_config(workdir, database_url, wecom_sim.url, role="worker"), workdir))
    started = await asyncio.gather(*(_serve(config, port, workdir) for config, port, workdir in workers))
    try:
        # A worker leaves the CPU to the acknowledging instances and the database first.
        lower = min(os.getpriority(os.PRIO_PROCESS, 0) + 10, 19)
        assert [os.getpriority(os.PRIO_PROCESS, worker.pid) for worker, _ in started] == [lower, lower]
        await asyncio.gather(*(send(n, rep, range(first, per_rep)) for n, rep in enumerate(REPS)))
        others = Message.filter(to_bot=True, handled_at=None, sender__in=("chengong", "wangjl"))
        for _ in range(600):
            if not await others.exists():
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        assert not await others.exists()
        waiting = Message.filter(to_bot=True, handled_at=None, sender__in=("zhangsan", "lisi"))
        assert await waiting.count() == 2 * per_rep
        await other.close()
        for _ in range(600):
            done = not await Message.filter(to_bot=True, handled_at=None).exists()
            if done and not await OutboxMessage.exclude(status=OutboxStatus.SENT).exists():
                break
            await asyncio.sleep(0.1)
    finally:
        for worker, _ in started:
            worker.send_signal(signal.SIGINT)
        await asyncio.gather(*(worker.wait() for worker, _ in started))

    assert await Message.filter(to_bot=True, handled_at=None).count() == 0
    assert await OutboxMessage.exclude(status=OutboxStatus.SENT).count() == 0
    asked = [t.split()[1] for rep in REPS for t in texts[rep] if t != "帮助"]
    created = await Customer.filter(name__endswith="号贸易有限公司").values_list("name", flat=True)
    assert sorted(created) == sorted(asked)
    assert wecom_sim.dropped_repeats() == 0
    for rep in REPS:
        replies = wecom_sim.texts_to(rep)
        assert len(replies) == per_rep, replies
        # Each reply answers the message sent in the same place: the rep reads them in the order they wrote.
        for text, reply in zip(texts[rep], replies, strict=True):
            assert (text.split()[1] in reply) if text != "帮助" else ("号贸易有限公司" not in reply), (text, reply)

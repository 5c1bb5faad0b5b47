"""Replies reach people once when the platform or the bot misbehaves: an answer WeCom never sends back, two bot
instances on one database against a slow WeCom, and a bot killed (SIGKILL) while it is sending."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp

from bot.channels import Outbox
from bot.keys import OUTBOX
from bot.types import Reply
from models.outbox import OutboxMessage, OutboxStatus
from models.staff import Role
from tests.helpers import WECOM, deliver_all, post_wecom, signed_callback, staff_member, text_xml
from tests.test_cli import CRMBOT, crmbot
from tests.test_migrations import _query
from tests.test_outbox import wait_for


async def test_a_reply_whose_answer_is_lost_reaches_the_rep_once(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    # WeCom delivers the reply, but its answer comes after the bot has stopped waiting for it.
    client = await start_app(make_settings(wecom={"request_timeout_seconds": 0.3, "request_retries": 2}))
    await staff_member(name="张三", wecom="zhangsan", role=Role.REP)
    wecom_sim.lose_answers_next(1, seconds=1.0, endpoint="message/send")

    await post_wecom(client, text_xml("zhangsan", "帮助", 9101))
    await deliver_all(client.app)

    assert len(wecom_sim.texts_to("zhangsan")) == 1  # the rep sees the help once
    assert wecom_sim.dropped_repeats() == 1  # the bot did send it again, and WeCom recognised the repeat
    row = await OutboxMessage.get(recipient="zhangsan")
    assert row.status == OutboxStatus.SENT and row.attempted_at is not None


async def test_two_instances_against_a_slow_wecom_deliver_every_reply_once(
    make_settings: Any, start_app: Any, wecom_sim: Any
) -> None:
    # Each send takes 0.3 s and a lease 1.2 s: one person's five pushes take longer than a lease.
    settings = make_settings(outbox={"lease_seconds": 1.2, "poll_seconds": 0.05})
    client = await start_app(settings, run_dispatcher=False)
    app_outbox = client.app[OUTBOX]
    people = [await staff_member(name=f"销售{i}", wecom=f"rep{i}", role=Role.REP) for i in range(3)]
    for n in range(15):
        await app_outbox.push(people[n % 3], Reply(f"提醒 {n}"), f"test:{n}")
    wecom_sim.slow_next(1000, seconds=0.3, endpoint="message/send")

    instances = [Outbox(app_outbox.settings, app_outbox.clock, app_outbox.directory) for _ in range(2)]
    for outbox in instances:
        outbox.register(app_outbox.adapters["wecom"])
    running = [asyncio.create_task(outbox.run()) for outbox in instances]
    try:
        await wait_for(lambda: len(wecom_sim.sent) >= 15, patience=60)
        await deliver_all(client.app)
    finally:
        for outbox in instances:
            outbox.stop()
        await asyncio.gather(*running)

    for i in range(3):
        assert sorted(wecom_sim.texts_to(f"rep{i}")) == sorted(f"提醒 {n}" for n in range(i, 15, 3))
    assert wecom_sim.repeats() == []
    assert await OutboxMessage.filter(status=OutboxStatus.SENT).count() == 15


def _serve_config(tmp_path: Path, database_url: str, api_base: str, role: str = "all") -> tuple[Path, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "serve.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nrole = "{role}"\nhandling_poll_seconds = 0.05\n'
        f'[database]\nurl = "{database_url}"\n'
        f'[wecom]\ncorp_id = "{WECOM.corp_id}"\nagent_id = {WECOM.agent_id}\nsecret = "{WECOM.secret}"\n'
        f'token = "{WECOM.token}"\nencoding_aes_key = "{WECOM.encoding_aes_key}"\napi_base = "{api_base}"\n'
        "[outbox]\nlease_seconds = 3.0\npoll_seconds = 0.2\nbackoff_initial_seconds = 0.2\n",
        encoding="utf-8",
    )
    return config, port


async def _serve(config: Path, port: int, workdir: Path) -> tuple[asyncio.subprocess.Process, str]:
    """Start ``crmbot serve`` as deployed; return it and its base URL once it answers."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CRMBOT_")}
    server = await asyncio.create_subprocess_exec(*CRMBOT, "serve", "--config", str(config), cwd=workdir, env=env)
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            try:
                async with session.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        return server, base
            except aiohttp.ClientError:
                pass
            assert server.returncode is None, "crmbot serve exited"
            await asyncio.sleep(0.1)
    raise AssertionError("crmbot serve did not start")


async def test_a_bot_killed_while_sending_delivers_every_reply_once_after_a_restart(
    tmp_path: Path, database_url: str, wecom_sim: Any
) -> None:
    users = [f"rep{i}" for i in range(12)]
    staff = tmp_path / "staff.csv"
    staff.write_text("姓名,企业微信账号,角色\n" + "".join(f"销售{i},{u},销售\n" for i, u in enumerate(users)), "utf-8")
    workdir = tmp_path / "work"
    workdir.mkdir()
    config, port = _serve_config(tmp_path, database_url, wecom_sim.url)
    assert crmbot(workdir, "import", "staff", str(staff), "--config", str(config)).returncode == 0
    wecom_sim.slow_next(1000, seconds=1.0, endpoint="message/send")  # WeCom is slow today

    server, base = await _serve(config, port, workdir)
    try:
        async with aiohttp.ClientSession() as session:
            for n, user in enumerate(users):
                query, body = signed_callback(text_xml(user, "帮助", 9200 + n))
                async with session.post(f"{base}/wecom/callback", params=query, data=body.encode()) as resp:
                    assert resp.status == 200
        await wait_for(lambda: any(c["endpoint"] == "message/send" for c in wecom_sim.calls), patience=60)
    finally:
        server.send_signal(signal.SIGKILL)  # mid-drain: sends are on their way to WeCom
        await server.wait()

    # Every request that reached WeCom is applied there, though its sender is gone. Those rows were marked before
    # their requests: the restart knows that they may have gone out.
    reached = sum(1 for c in wecom_sim.calls if c["endpoint"] == "message/send")
    unsure = await _query(database_url, "SELECT id FROM outbox WHERE status = 'sending' AND attempted_at IS NOT NULL")
    assert len(unsure) >= reached >= 1

    server, base = await _serve(config, port, workdir)
    try:
        await wait_for(lambda: all(wecom_sim.texts_to(u) for u in users), patience=60)
        # Sent again after the restart, each as a possible repeat, which WeCom drops.
        await wait_for(lambda: wecom_sim.dropped_repeats() == reached, patience=60)
    finally:
        server.send_signal(signal.SIGINT)
        assert await server.wait() == 0

    assert [len(wecom_sim.texts_to(u)) for u in users] == [1] * len(users)  # nobody sees a reply twice
    left = await _query(database_url, "SELECT COUNT(*) AS n FROM outbox WHERE status <> 'sent'")
    assert int(left[0]["n"]) == 0

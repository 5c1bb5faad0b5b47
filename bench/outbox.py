"""Outbox drain benchmark: queued pushes drained to the WeCom API simulator through the real outbox and channel,
against a bare aiohttp client sending the same messages to the same simulator, in the same run.

Each round starts a fresh WeCom simulator (a separate process on loopback, on the event loop ``crmbot serve``
uses, without its console echo) and measures, in turn:

Both run on the event loop ``crmbot serve`` uses (uvloop where installed).

- **baseline**: one ``aiohttp.ClientSession`` fetching a token once and POSTing ``message/send`` for every push,
  ``--concurrency`` requests at a time: what the simulator and the machine allow at all;
- **crmbot on SQLite** (a new database in a temporary directory) and, with ``--database``, **crmbot on
  PostgreSQL** (a scratch database made and dropped there): ``--pushes`` markdown pushes to ``--recipients`` staff
  members queued in the outbox, then ``Outbox.drain`` through the app's own HTTP session and WeCom channel, as the
  dispatcher of ``crmbot serve`` runs it, with WeCom's per-person limits on (the default 30 a minute: 5,000 pushes
  to 200 people is 25 each).

``--history N`` first fills the outbox with N pushes already sent (as a day of traffic leaves it), to show what a
claim costs once the table is long. ``--idle-claims N`` first lets the outbox claim N times from an empty table, as
a running dispatcher does between bursts, so that the burst that follows is claimed by statements first planned
while the table was empty (with autovacuum off or not yet run, nothing plans them again). Every push's content is
distinct. Reported: pushes per second for each, crmbot's rate as a share of the baseline's in the same round, and
the CPU of the sending process per push (all its threads; PostgreSQL's own processes and the simulator's are not
in it), which a busy machine changes far less than rates; ranges over ``--rounds``::

    .venv/bin/python -m bench.outbox --rounds 3 --database postgres://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.rules import scratch_database
from bot.app import new_event_loop

ROOT = Path(__file__).resolve().parent.parent
CORP = {
    "corp_id": "ww1436e0e65a779aee",
    "token": "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo",
    "encoding_aes_key": "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
    "agent_id": 1000002,
    "secret": "bench-app-secret",
}


def text_of(i: int) -> str:
    return f"**跟进预警**\n> 客户：客户{i}\n> 已 7 天没有跟进"


def serve_simulator(port: int) -> None:
    from aiohttp import web

    from tests.simulators.wecom import WeComSimulator

    sim = WeComSimulator(str(CORP["corp_id"]), str(CORP["secret"]), int(CORP["agent_id"]))
    web.run_app(sim.app(), host="127.0.0.1", port=port, print=None, access_log=None, loop=new_event_loop())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_port(port: int) -> None:
    for _ in range(1200):  # a minute: on a busy machine the simulator's imports alone take seconds
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("the simulator did not start")


@dataclass
class Drain:
    rate: float  # pushes per second
    cpu_us: float  # CPU of the sending process per push


async def baseline(api: str, pushes: int, recipients: int, concurrency: int) -> Drain:
    """Bare aiohttp: the same sends, no database."""
    async with aiohttp.ClientSession() as session:
        params = {"corpid": str(CORP["corp_id"]), "corpsecret": str(CORP["secret"])}
        async with session.get(f"{api}/cgi-bin/gettoken", params=params) as resp:
            token = (await resp.json())["access_token"]
        url = f"{api}/cgi-bin/message/send"
        queue = iter(range(pushes))
        errors = 0

        async def worker() -> None:
            nonlocal errors
            for i in queue:
                body = {
                    "touser": f"push{i % recipients}",
                    "msgtype": "markdown",
                    "markdown": {"content": text_of(i)},
                    "agentid": CORP["agent_id"],
                }
                async with session.post(url, params={"access_token": token}, json=body) as resp:
                    if (await resp.json()).get("errcode"):
                        errors += 1

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if errors:
        raise RuntimeError(f"baseline: {errors} sends refused")
    return Drain(pushes / elapsed, cpu / pushes * 1e6)


async def crmbot(url: str, api: str, pushes: int, recipients: int, history: int = 0, idle_claims: int = 0) -> Drain:
    """The outbox of a real app drained to the simulator."""
    from bot import sql
    from bot.app import load_settings
    from bot.channels import Address
    from bot.cli import running_app
    from bot.keys import OUTBOX
    from bot.types import Reply
    from models.outbox import OutboxMessage, OutboxStatus
    from models.staff import Role, Staff, StaffAccount

    settings = load_settings(os.devnull, database={"url": url}, wecom={**CORP, "api_base": api})
    async with running_app(settings) as app:
        outbox = app[OUTBOX]
        for n in range(recipients):
            person = await Staff.create(name=f"推送{n}", role=Role.REP)
            await StaffAccount.create(staff_id=person.id, platform="wecom", user_id=f"push{n}")
        for _ in range(idle_claims):
            await outbox.drain()
        from tortoise.transactions import in_transaction

        async with in_transaction() as conn:
            sent_before = [
                (f"history:{i}", "wecom", f"push{i % recipients}", "markdown", '{"text": "x"}', "sent", 1)
                for i in range(history)
            ]
            for start in range(0, history, 5000):
                await conn.execute_many(
                    sql.for_conn(
                        "INSERT INTO outbox (dedupe_key, platform, recipient, kind, payload, status, attempts,"
                        " not_before, created_at, last_error, result) VALUES (?, ?, ?, ?, ?, ?, ?,"
                        " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, '', '{}')",
                        conn,
                    ),
                    [list(row) for row in sent_before[start : start + 5000]],
                )
            for i in range(pushes):
                address = Address("wecom", f"push{i % recipients}")
                await outbox.enqueue(address, Reply.markdown(text_of(i)), f"bench:{i}", using_db=conn)
        started, cpu = time.perf_counter(), time.process_time()
        sent = await outbox.drain()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        delivered = await OutboxMessage.filter(status=OutboxStatus.SENT).count() - history
    if sent != pushes or delivered != pushes:
        raise RuntimeError(f"crmbot: {delivered} of {pushes} sent")
    return Drain(pushes / elapsed, cpu / pushes * 1e6)


async def on_postgres(
    server: str, api: str, pushes: int, recipients: int, history: int = 0, idle_claims: int = 0
) -> Drain:
    async with scratch_database(server) as url:
        return await crmbot(url, api, pushes, recipients, history, idle_claims)


@dataclass
class Round:
    baseline: Drain
    sqlite: Drain
    postgres: Drain | None


def drain_in_child(database: str, api: str, args: argparse.Namespace) -> Drain:
    """``crmbot`` in a process of its own (the ORM keeps one database's SQL per process)."""
    size = ["--pushes", str(args.pushes), "--recipients", str(args.recipients), "--history", str(args.history)]
    size += ["--idle-claims", str(args.idle_claims)]
    cmd = [sys.executable, "-m", "bench.outbox", "--_drain", database, "--_api", api, *size]
    out = subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout
    rate, cpu_us = out.strip().splitlines()[-1].split()
    return Drain(float(rate), float(cpu_us))


async def one_round(args: argparse.Namespace) -> Round:
    port = _free_port()
    sim = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.outbox", "--_serve", str(port), cwd=ROOT)
    try:
        await _wait_port(port)
        api = f"http://127.0.0.1:{port}"
        base = await baseline(api, args.pushes, args.recipients, args.concurrency)
        with tempfile.TemporaryDirectory(prefix="crmbot-outbox-") as tmp:
            lite = await asyncio.to_thread(drain_in_child, f"sqlite://{tmp}/bench.sqlite3", api, args)
        pg = await asyncio.to_thread(drain_in_child, args.database, api, args) if args.database else None
        return Round(base, lite, pg)
    finally:
        sim.terminate()
        await sim.wait()


def _range(drains: list[Drain]) -> str:
    rates, cpu = [d.rate for d in drains], [d.cpu_us for d in drains]
    return f"{min(rates):,.0f}–{max(rates):,.0f}/s, {min(cpu):,.0f}–{max(cpu):,.0f} µs CPU a push"


def _share(drain: Drain, base: Drain) -> str:
    return f"{drain.rate:,.0f}/s ({drain.rate / base.rate:.0%}, {drain.cpu_us:,.0f} µs)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="", help="PostgreSQL server URL (a scratch database is made there)")
    parser.add_argument("--pushes", type=int, default=5000)
    parser.add_argument("--recipients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--history", type=int, default=0, help="pushes already sent in the outbox before the drain")
    parser.add_argument("--concurrency", type=int, default=100, help="the baseline's requests in flight")
    parser.add_argument("--idle-claims", type=int, default=0, help="claims from the empty outbox before the burst")
    parser.add_argument("--_serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_drain", help=argparse.SUPPRESS)
    parser.add_argument("--_api", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._serve:
        serve_simulator(args._serve)
        return
    if args._drain:
        drain = on_postgres if args._drain.startswith("postgres") else crmbot
        with asyncio.Runner(loop_factory=new_event_loop) as runner:  # the event loop ``crmbot serve`` runs on
            done = runner.run(
                drain(args._drain, args._api, args.pushes, args.recipients, args.history, args.idle_claims)
            )
        print(done.rate, done.cpu_us)
        return
    rounds = []
    for i in range(args.rounds):
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            r = runner.run(one_round(args))
        rounds.append(r)
        line = f"round {i + 1}: baseline {r.baseline.rate:,.0f}/s ({r.baseline.cpu_us:,.0f} µs)"
        line += f", crmbot SQLite {_share(r.sqlite, r.baseline)}"
        if r.postgres is not None:
            line += f", crmbot PostgreSQL {_share(r.postgres, r.baseline)}"
        print(line, flush=True)
    print(f"baseline (bare aiohttp) {_range([r.baseline for r in rounds])}")
    print(f"crmbot SQLite {_range([r.sqlite for r in rounds])}")
    if args.database:
        print(f"crmbot PostgreSQL {_range([r.postgres for r in rounds if r.postgres is not None])}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Soak and fault suite: a real ``crmbot serve`` under signed WeCom callbacks at a fixed rate, its memory sampled,
and the faults that cost messages in the field, each case reporting what was acknowledged, stored, answered and
duplicated.

The bot runs as deployed (``crmbot serve`` in a subprocess, staff imported with ``crmbot import staff``); the WeCom
API simulator (``tests/simulators/wecom.py``, which honours the duplicate check) and the load run in this process.
Each callback is a signed, encrypted ``搜 <token>`` with its own MsgId and token, so every reply is distinct and a
reply seen twice is a duplicate. A callback not answered 200 within 5 s is posted again, up to three times, as
WeCom does. Cases, in order (``--cases`` picks some):

- ``soak``: ``--rate`` callbacks per second for ``--duration`` seconds; the server's RSS at the start and every
  minute. Memory must stay bounded: once ``--warmup`` seconds have passed, the RSS then is the reference, and if
  it grows more than ``--rss-growth`` MiB beyond it the run FAILS (a message saying so, exit status 1).
- ``wecom_down``: the WeCom API answers HTTP 502 for ``--fault-seconds`` while callbacks arrive, then recovers.
- ``kill9``: a burst of callbacks against a slow WeCom (0.2 s per send); the server is killed with SIGKILL in the
  middle and started again; the callbacks it never answered are posted again.
- ``sqlite_locked`` (SQLite): another process holds the database's write lock for ``--fault-seconds``.
- ``pg_terminate`` (PostgreSQL): every server connection is killed with ``pg_terminate_backend`` every 2 s for
  ``--fault-seconds``.

Per case: acked (callbacks answered 200, after retries), stored (in ``message``), answered (distinct replies
delivered), duplicated (deliveries beyond the first of a reply), dropped (repeats WeCom's duplicate check
dropped), and how long after the last callback everything was answered::

    .venv/bin/python -m bench.soak --duration 180 --rate 20
    .venv/bin/python -m bench.soak --duration 180 --rate 20 --database postgres://postgres@127.0.0.1:5432/test
    .venv/bin/python -m bench.soak --duration 600 --rate 20 --cases soak   # the memory soak
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.rules import _pg, scratch_database
from bench.webhook import _free_port
from tests.helpers import WECOM, signed_callback, text_xml
from tests.simulators.wecom import WeComSimulator

ROOT = Path(__file__).resolve().parent.parent
STAFF = 50
CALLBACK_TIMEOUT = 5.0  # WeCom drops the connection after 5 s and posts again (after as long), three times at most
CALLBACK_TRIES = 4
RSS_EVERY = 10.0  # sampled this often, reported every minute


class MemoryGrew(Exception):
    """The server's RSS grew beyond the bound after warm-up: memory that grows without bound."""


@dataclass
class Server:
    """``crmbot serve`` as deployed, restartable on the same configuration."""

    config: Path
    port: int
    workdir: Path
    log: Path | None = None  # where the server's output goes (appended), else nowhere
    proc: asyncio.subprocess.Process | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        out = self.log.open("ab") if self.log is not None else asyncio.subprocess.DEVNULL
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "serve", "--config", str(self.config), cwd=self.workdir,
            stdout=out, stderr=out,
        )  # fmt: skip
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                try:
                    async with session.get(f"{self.base}/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        await self.stop(signal.SIGKILL)  # not left running behind the benchmark
        raise RuntimeError("crmbot serve did not start")

    async def stop(self, sig: int = signal.SIGINT) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)
            await self.proc.wait()

    def rss_mib(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


@dataclass
class Tally:
    """What one case did: callbacks acknowledged, messages stored, replies answered and duplicated."""

    case: str
    sent: int = 0
    acked: int = 0
    retried: int = 0
    stored: int = 0
    handled: int = 0
    answered: int = 0
    duplicated: int = 0
    dropped: int = 0
    settle_seconds: float = float("nan")

    @property
    def tag(self) -> str:
        """What the case's tokens start with, so that its messages and replies can be counted apart."""
        return self.case[:2].upper()

    def line(self) -> str:
        lost = self.acked - self.stored
        return (
            f"{self.case:14} callbacks {self.sent:5}  acked {self.acked:5} (re-posted {self.retried:3})  "
            f"stored {self.stored:5} (lost {lost})  handled {self.handled:5}  answered {self.answered:5}  "
            f"duplicated {self.duplicated}  (repeats dropped by WeCom {self.dropped})  "
            f"settled {self.settle_seconds:.1f} s after the last"
        )


class Soak:
    def __init__(self, server: Server, sim: WeComSimulator, database: str) -> None:
        self.server, self.sim, self.database = server, sim, database
        self._msgid = 50_000_000

    def callback(self, tag: str) -> tuple[dict[str, str], bytes]:
        """A signed, encrypted ``搜 <token>`` with a token of its own, from one of the staff in turn."""
        self._msgid += 1
        token = f"浸泡{tag}{self._msgid:09d}Q"
        query, body = signed_callback(text_xml(f"soak{self._msgid % STAFF:03d}", f"搜 {token}", self._msgid))
        return query, body.encode()

    async def post(self, session: aiohttp.ClientSession, query: dict[str, str], body: bytes, tally: Tally) -> None:
        """Post like WeCom: again after a failure or 5 s without an answer, four tries in all."""
        for attempt in range(CALLBACK_TRIES):
            if attempt:
                tally.retried += 1
                await asyncio.sleep(CALLBACK_TIMEOUT)
            try:
                timeout = aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT)
                async with session.post(
                    f"{self.server.base}/wecom/callback", params=query, data=body, timeout=timeout
                ) as resp:
                    await resp.read()
                    if resp.status == 200:
                        tally.acked += 1
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass

    async def load(
        self, tally: Tally, rate: float, seconds: float, during: Callable[[int], Awaitable[None]] | None = None
    ) -> None:
        """``rate`` callbacks a second for ``seconds`` (open loop); ``during(n)`` runs after the n-th is posted."""
        count = round(rate * seconds)
        tally.sent += count
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            started = time.perf_counter()
            posts = []
            for n in range(count):
                await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
                query, body = self.callback(tally.tag)
                posts.append(asyncio.create_task(self.post(session, query, body, tally)))
                if during is not None:
                    await during(n)
            await asyncio.gather(*posts)

    async def settle(self, tally: Tally, patience: float = 120.0) -> None:
        """Wait until every stored message of the case is answered, then count."""
        started = time.perf_counter()
        tag = f"浸泡{tally.tag}"
        dropped = self.sim.dropped_repeats()
        while True:
            counts = await self.count(f"SELECT COUNT(*), COUNT(handled_at) FROM message WHERE text LIKE '搜 {tag}%'")
            tally.stored, tally.handled = counts
            replies = [t for u in range(STAFF) for t in self.sim.texts_to(f"soak{u:03d}") if tag in t]
            tally.answered, tally.duplicated = len(set(replies)), len(replies) - len(set(replies))
            if tally.answered >= tally.stored or time.perf_counter() - started > patience:
                break
            await asyncio.sleep(0.2)
        tally.settle_seconds = time.perf_counter() - started
        tally.dropped = self.sim.dropped_repeats() - dropped

    async def count(self, query: str) -> tuple[int, int]:
        """The two counts ``query`` selects."""
        if self.database.startswith("sqlite://"):
            path = self.database.removeprefix("sqlite://")
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
                first, second = conn.execute(query).fetchone()
                return int(first), int(second)
        import asyncpg

        conn = await asyncpg.connect(self.database.replace("postgres://", "postgresql://"))
        try:
            row = await conn.fetchrow(query)
            assert row is not None
            return int(row[0]), int(row[1])
        finally:
            await conn.close()


async def case_soak(soak: Soak, args: argparse.Namespace) -> Tally:
    tally = Tally("soak")
    samples: list[tuple[float, float]] = []

    async def sample() -> None:
        started = time.perf_counter()
        while True:
            samples.append((time.perf_counter() - started, soak.server.rss_mib()))
            await asyncio.sleep(RSS_EVERY)

    sampling = asyncio.create_task(sample())
    try:
        await soak.load(tally, args.rate, args.duration)
        await soak.settle(tally)
    finally:
        sampling.cancel()
    report_memory(samples, args.warmup, args.rss_growth)
    return tally


def report_memory(samples: list[tuple[float, float]], warmup: float, bound: float) -> None:
    """Print the RSS at the start and every minute; raise ``MemoryGrew`` when it grew more than ``bound`` MiB
    beyond its level at the end of the warm-up."""
    minutes = [rss for at, rss in samples if round(at / RSS_EVERY) % round(60 / RSS_EVERY) == 0]
    print("RSS (MiB) at the start and every minute: " + " ".join(f"{rss:.0f}" for rss in minutes))
    after = [rss for at, rss in samples if at >= warmup]
    if len(after) < 2:
        print(f"(the soak was shorter than the {warmup:.0f} s warm-up: no memory bound checked)")
        return
    reference, peak = after[0], max(after)
    print(f"after the {warmup:.0f} s warm-up: {reference:.0f} MiB, peak {peak:.0f} MiB, end {after[-1]:.0f} MiB")
    if peak - reference > bound:
        raise MemoryGrew(
            f"RSS grew {peak - reference:.1f} MiB after the warm-up ({reference:.0f} → {peak:.0f} MiB), more than "
            f"the {bound:.0f} MiB bound: memory grows without bound"
        )


async def case_wecom_down(soak: Soak, args: argparse.Namespace) -> Tally:
    tally = Tally("wecom_down")
    soak.sim.http_error_next(10**9, status=502, endpoint="message/send")
    await soak.load(tally, args.rate, args.fault_seconds)
    soak.sim.faults.clear()
    await soak.load(tally, args.rate, 5)
    await soak.settle(tally)
    return tally


async def case_kill9(soak: Soak, args: argparse.Namespace) -> Tally:
    tally = Tally("kill9")
    soak.sim.slow_next(10**9, seconds=0.2, endpoint="message/send")
    burst = max(int(args.rate * 10), 100)

    restarting: list[asyncio.Task[None]] = []

    async def kill_midway(n: int) -> None:
        if n == burst // 2:
            await soak.server.stop(signal.SIGKILL)
            restarting.append(asyncio.get_running_loop().create_task(soak.server.start()))  # as a supervisor would

    await soak.load(tally, burst / 2, 2, during=kill_midway)  # the whole burst within 2 s
    await asyncio.gather(*restarting)
    soak.sim.faults.clear()
    await soak.settle(tally)
    return tally


async def case_sqlite_locked(soak: Soak, args: argparse.Namespace) -> Tally:
    tally = Tally("sqlite_locked")
    path = soak.database.removeprefix("sqlite://")

    async def lock(n: int) -> None:
        if n == 0:
            asyncio.get_running_loop().create_task(asyncio.to_thread(_hold_write_lock, path, args.fault_seconds))

    await soak.load(tally, args.rate, args.fault_seconds + 5, during=lock)
    await soak.settle(tally)
    return tally


def _hold_write_lock(path: str, seconds: float) -> None:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)
        conn.execute("COMMIT")
    finally:
        conn.close()


async def case_pg_terminate(soak: Soak, args: argparse.Namespace) -> Tally:
    tally = Tally("pg_terminate")
    name = soak.database.rsplit("/", 1)[1]

    async def terminate_every_2s() -> None:
        for _ in range(int(args.fault_seconds / 2)):
            await asyncio.sleep(2)
            await _pg(
                soak.database,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                f" WHERE datname = '{name}' AND pid <> pg_backend_pid()",
            )

    async def start(n: int) -> None:
        if n == 0:
            asyncio.get_running_loop().create_task(terminate_every_2s())

    await soak.load(tally, args.rate, args.fault_seconds + 5, during=start)
    await soak.settle(tally)
    return tally


CASES: dict[str, Callable[[Soak, argparse.Namespace], Awaitable[Tally]]] = {
    "soak": case_soak,
    "wecom_down": case_wecom_down,
    "kill9": case_kill9,
    "sqlite_locked": case_sqlite_locked,
    "pg_terminate": case_pg_terminate,
}


async def run(args: argparse.Namespace, database: str, workdir: Path) -> None:
    sim = WeComSimulator(WECOM.corp_id, WECOM.secret, WECOM.agent_id)
    runner = web.AppRunner(sim.app())
    await runner.setup()
    sim_port, port = _free_port(), _free_port()
    await web.TCPSite(runner, "127.0.0.1", sim_port).start()
    config = workdir / "soak.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n[database]\nurl = "{database}"\n'
        f'[wecom]\ncorp_id = "{WECOM.corp_id}"\nagent_id = {WECOM.agent_id}\nsecret = "{WECOM.secret}"\n'
        f'token = "{WECOM.token}"\nencoding_aes_key = "{WECOM.encoding_aes_key}"\n'
        f'api_base = "http://127.0.0.1:{sim_port}"\n[outbox]\nbackoff_max_seconds = 10.0\n',
        encoding="utf-8",
    )
    staff = workdir / "staff.csv"
    staff.write_text("姓名,企业微信账号,角色\n" + "".join(f"浸泡{i:03d},soak{i:03d},销售\n" for i in range(STAFF)))
    imported = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "import", "staff", str(staff), "--config", str(config), cwd=workdir,
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    if await imported.wait() != 0:
        raise RuntimeError("crmbot import staff failed")
    server = Server(config, port, workdir, args.server_log)
    soak = Soak(server, sim, database)
    postgres = not database.startswith("sqlite://")
    cases = [c for c in args.cases if c != ("sqlite_locked" if postgres else "pg_terminate")]
    tallies = []
    try:
        await server.start()
        for case in cases:
            print(f"-- {case}", flush=True)
            tally = await CASES[case](soak, args)
            print(tally.line(), flush=True)
            tallies.append(tally)
    finally:
        await server.stop()
        await runner.cleanup()
    print(f"\n{'PostgreSQL' if postgres else 'SQLite'}, rate {args.rate}/s, soak {args.duration:.0f} s:")
    for tally in tallies:
        print(tally.line())


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if not args.database:
            await run(args, f"sqlite://{workdir / 'soak.sqlite3'}", workdir)
            return
        async with scratch_database(args.database) as url:
            await run(args, url, workdir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of steady load in the soak case")
    parser.add_argument("--rate", type=float, default=20.0, help="callbacks per second")
    parser.add_argument("--fault-seconds", type=float, default=20.0, help="how long each fault lasts")
    parser.add_argument("--database", default="", help="PostgreSQL server URL (a scratch database is made there)")
    parser.add_argument("--server-log", default="", help="append the server's output to this file")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds of the soak before memory is bounded")
    parser.add_argument("--rss-growth", type=float, default=20.0, help="MiB the RSS may grow after the warm-up")
    args = parser.parse_args(argv)
    args.server_log = Path(args.server_log).resolve() if args.server_log else None
    os.chdir(ROOT)
    try:
        asyncio.run(main_async(args))
    except MemoryGrew as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Webhook benchmark: encrypted WeCom text callbacks through the real app vs an aiohttp hello-world endpoint.

Both servers run, one after the other, in a subprocess pinned to one core (``--server-cpu``); the load generator
(an aiohttp client, ``--requests`` requests at ``--concurrency``, loopback only) and the WeCom API simulator that
receives the bot's replies run in other processes, pinned to the remaining cores when there are any.

The app is the real ``create_app`` (SQLite in a temporary directory, scheduler and outbox dispatcher on), with the
senders registered as reps; each callback is a signed, encrypted text message with a unique MsgId, generated
before timing starts. Reported: acknowledged callbacks per second and p50/p99 latency (verify + decrypt + persist
+ ack), the time until every message was handled and its reply delivered to the simulator, and the hello-world
requests per second for the same request count and concurrency::

    .venv/bin/python -m bench.webhook --requests 5000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
CORP_ID = "ww1436e0e65a779aee"
TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
AES_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
AGENT_ID = 1000002
SECRET = "bench-app-secret"
CORP = {"corp_id": CORP_ID, "token": TOKEN, "encoding_aes_key": AES_KEY, "agent_id": AGENT_ID, "secret": SECRET}
SENDERS = 50
TEXT = "帮助"
WARMUP = 200


# -- servers (run in subprocesses) ------------------------------------------------------------------------------


def _pin(cpus: set[int]) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def serve_hello(port: int) -> None:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_post("/hello", hello)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def serve_app(port: int, database: str, api_base: str) -> None:
    from aiohttp import web

    from bot.app import create_app
    from bot.config import load_settings
    from models.staff import Role, Staff

    settings = load_settings(
        os.devnull,
        database={"url": database},
        wecom={**CORP, "api_base": api_base},
        server={"host": "127.0.0.1", "port": port},
    )
    app = create_app(settings)

    async def seed(app: web.Application) -> None:
        staff = [Staff(name=f"销售{i:03d}", wecom_userid=f"rep{i:03d}", role=Role.REP) for i in range(SENDERS)]
        await Staff.bulk_create(staff, ignore_conflicts=True)

    app.on_startup.append(seed)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def serve_simulator(port: int) -> None:
    from aiohttp import web

    from integrations.wecom.simulator import WeComSimulator

    sim = WeComSimulator(CORP_ID, SECRET, AGENT_ID)
    web.run_app(sim.app(), host="127.0.0.1", port=port, print=None, access_log=None)


# -- the load generator -----------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    errors: int
    server_cpu: float = float("nan")  # server CPU seconds per wall second during the run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(int(len(ordered) * p), len(ordered) - 1)] * 1000

    def line(self) -> str:
        return (
            f"{self.name:<22} {self.requests:>6} req  {self.rate:>8.0f} req/s  "
            f"p50 {self.percentile(0.50):6.2f} ms  p99 {self.percentile(0.99):6.2f} ms  errors {self.errors}  "
            f"server cpu {self.server_cpu:.0%}"
        )


def make_callbacks(count: int, first_msgid: int) -> list[tuple[str, bytes]]:
    """Signed, encrypted WeCom text callbacks (query string, body), each with its own MsgId."""
    from urllib.parse import urlencode

    from integrations.wecom.crypto import WeComCrypto

    crypto = WeComCrypto(TOKEN, AES_KEY, CORP_ID)
    now = int(time.time())
    out = []
    for i in range(count):
        msgid = first_msgid + i
        sender = f"rep{i % SENDERS:03d}"
        xml = (
            f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
            f"<FromUserName><![CDATA[{sender}]]></FromUserName><CreateTime>{now}</CreateTime>"
            f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{TEXT}]]></Content>"
            f"<MsgId>{msgid}</MsgId><AgentID>{AGENT_ID}</AgentID></xml>"
        )
        encrypt = crypto.encrypt(xml)
        timestamp, nonce = str(now), secrets.token_hex(5)
        query = urlencode(
            {"msg_signature": crypto.sign(timestamp, nonce, encrypt), "timestamp": timestamp, "nonce": nonce}
        )
        body = (
            f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><AgentID><![CDATA[{AGENT_ID}]]>"
            f"</AgentID><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        ).encode()
        out.append((query, body))
    return out


async def drive(name: str, url: str, requests: list[tuple[str, bytes]], concurrency: int) -> Result:
    """POST every request once with ``concurrency`` workers; latency per request, wall time for all."""
    latencies: list[float] = []
    errors = 0
    queue = iter(requests)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            for query, body in queue:
                started = time.perf_counter()
                async with session.post(f"{url}?{query}", data=body) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return Result(name, len(requests), seconds, latencies, errors)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], cpus: set[int], profile: str = "") -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "bench.webhook", "--_cpus", ",".join(map(str, sorted(cpus))), *args]
    if profile:  # collapsed stacks for flame graphs: py-spy must be installed next to the interpreter
        py_spy = str(Path(sys.executable).with_name("py-spy"))
        cmd = [py_spy, "record", "--format", "raw", "--rate", "100", "-o", profile, "--", *cmd]
    return subprocess.Popen(cmd, cwd=ROOT)


async def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux), to tell a CPU-bound server from a waiting one."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _handled(db_path: Path) -> tuple[int, int]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10) as conn:
        handled = conn.execute("SELECT COUNT(*) FROM message WHERE handled_at IS NOT NULL").fetchone()[0]
        sent = conn.execute("SELECT COUNT(*) FROM outbox WHERE status = 'sent'").fetchone()[0]
    return int(handled), int(sent)


async def bench_app(
    n: int,
    concurrency: int,
    server_cpus: set[int],
    other_cpus: set[int],
    workdir: Path,
    profile: str = "",
    db_options: str = "",
    settle_timeout: float = 600.0,
) -> tuple[Result, float]:
    sim_port, app_port = _free_port(), _free_port()
    db_path = workdir / "bench.sqlite3"
    sim = _start(["--_serve", "simulator", "--_port", str(sim_port)], other_cpus)
    app = _start(
        [
            "--_serve", "app", "--_port", str(app_port), "--_db", f"sqlite://{db_path}{db_options}",
            "--_api", f"http://127.0.0.1:{sim_port}",
        ],
        server_cpus,
        profile,
    )  # fmt: skip
    try:
        await _wait_ready(f"http://127.0.0.1:{app_port}/healthz", app)
        await _wait_ready(f"http://127.0.0.1:{sim_port}/cgi-bin/gettoken", sim)
        callbacks = make_callbacks(WARMUP + n, first_msgid=10_000_000)
        url = f"http://127.0.0.1:{app_port}/wecom/callback"
        await drive("warm-up", url, callbacks[:WARMUP], concurrency)
        started, cpu_before = time.perf_counter(), _cpu_seconds(app.pid)
        result = await drive("wecom callback (app)", url, callbacks[WARMUP:], concurrency)
        result.server_cpu = (_cpu_seconds(app.pid) - cpu_before) / result.seconds
        while True:  # every message handled and every reply delivered (or give up: reported as nan)
            handled, sent = _handled(db_path)
            if handled >= WARMUP + n and sent >= WARMUP + n:
                end_to_end = time.perf_counter() - started
                break
            if time.perf_counter() - started > settle_timeout:
                print(f"gave up waiting: {handled} handled, {sent} replies sent of {WARMUP + n}")
                end_to_end = float("nan")
                break
            await asyncio.sleep(0.05)
        return result, end_to_end
    finally:
        _stop(app)
        _stop(sim)


async def bench_hello(n: int, concurrency: int, server_cpus: set[int]) -> Result:
    port = _free_port()
    proc = _start(["--_serve", "hello", "--_port", str(port)], server_cpus)
    try:
        url = f"http://127.0.0.1:{port}/hello"
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.post(url, data=b"") as resp:
                        await resp.read()
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        bodies = make_callbacks(WARMUP + n, first_msgid=20_000_000)  # same request sizes as the callbacks
        await drive("warm-up", url, bodies[:WARMUP], concurrency)
        cpu_before = _cpu_seconds(proc.pid)
        result = await drive("hello world", url, bodies[WARMUP:], concurrency)
        result.server_cpu = (_cpu_seconds(proc.pid) - cpu_before) / result.seconds
        return result
    finally:
        _stop(proc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--server-cpu", type=int, default=0, help="core the servers are pinned to")
    parser.add_argument("--json", action="store_true", help="print one JSON line with the results")
    parser.add_argument("--profile", default="", help="record the app server with py-spy into this file")
    parser.add_argument(
        "--sqlite-synchronous",
        default="",
        choices=["", "FULL", "NORMAL"],
        help="append ?synchronous=... to the SQLite URL (default: the product's default, FULL)",
    )
    parser.add_argument(
        "--settle-timeout", type=float, default=600.0, help="seconds to wait for every message to be handled"
    )
    parser.add_argument("--_serve", choices=["app", "hello", "simulator"], help=argparse.SUPPRESS)
    parser.add_argument("--_port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_db", help=argparse.SUPPRESS)
    parser.add_argument("--_api", help=argparse.SUPPRESS)
    parser.add_argument("--_cpus", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._serve:
        _pin({int(c) for c in args._cpus.split(",") if c})
        if args._serve == "hello":
            serve_hello(args._port)
        elif args._serve == "simulator":
            serve_simulator(args._port)
        else:
            serve_app(args._port, args._db, args._api)
        return

    available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    server_cpus = {args.server_cpu} if args.server_cpu in available else set()
    other_cpus = (available - server_cpus) or available
    _pin(other_cpus)
    with tempfile.TemporaryDirectory(prefix="crmbot-bench-") as tmp:
        hello = asyncio.run(bench_hello(args.requests, args.concurrency, server_cpus))
        app, end_to_end = asyncio.run(
            bench_app(
                args.requests,
                args.concurrency,
                server_cpus,
                other_cpus,
                Path(tmp),
                args.profile,
                f"?synchronous={args.sqlite_synchronous}" if args.sqlite_synchronous else "",
                args.settle_timeout,
            )
        )
    ratio = app.rate / hello.rate
    print(f"server pinned to cpu {sorted(server_cpus) or 'any'}, load generator on {sorted(other_cpus) or 'any'}")
    print(hello.line())
    print(app.line())
    print(
        f"{'':<22} all {args.requests + WARMUP} messages handled and replies delivered "
        f"{end_to_end:.2f} s after the timed run started ({args.requests / end_to_end:.0f} msg/s end to end)"
    )
    print(f"callbacks acknowledged at {ratio:.0%} of the hello-world rate (goal: at least 20%)")
    if args.json:
        print(
            json.dumps(
                {
                    "hello_rps": round(hello.rate),
                    "callback_rps": round(app.rate),
                    "callback_p50_ms": round(app.percentile(0.5), 2),
                    "callback_p99_ms": round(app.percentile(0.99), 2),
                    "end_to_end_msg_per_s": round(args.requests / end_to_end),
                    "ratio": round(ratio, 3),
                    "errors": app.errors + hello.errors,
                }
            )
        )


if __name__ == "__main__":
    main()

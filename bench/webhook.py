"""Webhook benchmark: encrypted WeCom text callbacks through the real app vs an aiohttp hello-world endpoint.

Both servers run, taking turns (``--rounds`` app runs, each between two hello-world runs), in a subprocess
pinned to one core (``--server-cpu``). The load comes from ``wrk`` (a C load generator: a Python client would be
slower than the hello-world server and measure itself) pinned with the WeCom API simulator, which receives the
bot's replies, to the remaining cores. Traffic stays on loopback; each wrk run lasts ``--duration`` seconds after
``--warmup`` seconds of warm-up.

The app is the real ``create_app`` (SQLite in a temporary directory, scheduler and outbox dispatcher on), with the
senders registered as reps; each callback is a signed, encrypted text message with a unique MsgId, generated
before timing starts (a run that would need more than were generated is reported as an error, never repeated
as duplicates). Reported: acknowledged callbacks per second and p50/p99 latency (verify + decrypt + persist +
ack), the time until every message was handled and its reply delivered to the simulator, and the hello-world
requests per second at the same concurrency with request bodies of the same size::

    apt-get install wrk
    .venv/bin/python -m bench.webhook --duration 10 --rounds 3

``--paste-share 0.01 --paste-bytes 30000`` makes every hundredth callback a pasted Chinese text of 30,000 bytes
(UTF-8) instead of ``帮助``, to see whether long messages hold up everyone else's acknowledgements.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bot.app import new_event_loop

ROOT = Path(__file__).resolve().parent.parent
CORP_ID = "ww1436e0e65a779aee"
TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
AES_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
AGENT_ID = 1000002
SECRET = "bench-app-secret"
CORP = {"corp_id": CORP_ID, "token": TOKEN, "encoding_aes_key": AES_KEY, "agent_id": AGENT_ID, "secret": SECRET}
SENDERS = 50
TEXT = "帮助"
# What a pasted text is made of: the words of a product spec, with dates, in a fixed pseudo-random order, and no
# punctuation (a table copied out of a spreadsheet or a PDF): the longest runs a pattern can stumble on.
PASTE_WORDS = (
    "耐高温", "材料", "设备", "交期", "样品", "测试", "价格", "规格", "型号", "参数", "图纸", "包装", "运输", "质量",
    "检验", "报告", "安装", "调试", "密封圈", "液压", "阀门", "压力", "流量", "寿命", "批次", "下周三", "月底",
)  # fmt: skip


@dataclass(frozen=True)
class Pastes:
    """Every ``1 / share``-th callback is a pasted text of ``size`` bytes (UTF-8); share 0: none."""

    share: float = 0.0
    size: int = 30_000

    def text(self, i: int) -> str:
        if self.share <= 0 or i % round(1 / self.share) != round(1 / self.share) - 1:
            return TEXT
        rng = random.Random(i)
        words: list[str] = []
        size = 0
        while size < self.size:
            words.append(rng.choice(PASTE_WORDS))
            size += len(words[-1].encode())
        return "".join(words)


# -- servers (run in subprocesses) ------------------------------------------------------------------------------


def _pin(cpus: set[int]) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def split_cpus(server_cpu: int) -> tuple[set[int], set[int]]:
    """(the server's core, the others); this process, the load generator, moves to the others."""
    available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    server_cpus = {server_cpu} if server_cpu in available else set()
    other_cpus = (available - server_cpus) or available
    _pin(other_cpus)
    return server_cpus, other_cpus


def serve_hello(port: int) -> None:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_post("/hello", hello)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=new_event_loop())


def serve_app(port: int, database: str, api_base: str) -> None:
    from aiohttp import web

    from bot.app import create_app, load_settings
    from models.staff import Role, Staff, StaffAccount

    settings = load_settings(
        os.devnull,
        database={"url": database},
        wecom={**CORP, "api_base": api_base},
        server={"host": "127.0.0.1", "port": port},
    )
    app = create_app(settings)

    async def seed(app: web.Application) -> None:
        # Written here rather than with the tests' helpers: the server measured holds nothing of the tests (their
        # imports alone cost the acknowledgement rate a sixth, measured).
        for i in range(SENDERS):
            if not await Staff.filter(name=f"销售{i:03d}").exists():
                rep = await Staff.create(name=f"销售{i:03d}", role=Role.REP)
                await StaffAccount.create(staff_id=rep.id, platform="wecom", user_id=f"rep{i:03d}")

    app.on_startup.append(seed)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=new_event_loop())


def serve_simulator(port: int) -> None:
    from aiohttp import web

    from tests.simulators.wecom import WeComSimulator

    sim = WeComSimulator(CORP_ID, SECRET, AGENT_ID)
    web.run_app(sim.app(), host="127.0.0.1", port=port, print=None, access_log=None, loop=new_event_loop())


# -- the load generator -----------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu: float = float("nan")  # server CPU seconds per wall second during the run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def line(self) -> str:
        return (
            f"{self.name:<22} {self.requests:>6} req  {self.rate:>8.0f} req/s  "
            f"p50 {self.p50_ms:6.2f} ms  p99 {self.p99_ms:6.2f} ms  errors {self.errors}  "
            f"server cpu {self.server_cpu:.0%}"
        )


@dataclass
class Round:
    """One app run between two hello-world runs."""

    before: Result
    app: Result
    end_to_end: float  # seconds from the start of the timed run until every message was handled and answered
    after: Result

    @property
    def ratio(self) -> float:
        return self.app.rate / ((self.before.rate + self.after.rate) / 2)

    @property
    def end_to_end_rate(self) -> float:
        return self.app.requests / self.end_to_end

    def summary(self) -> dict[str, object]:
        return {
            "hello_rps_before": round(self.before.rate),
            "hello_rps_after": round(self.after.rate),
            "callback_rps": round(self.app.rate),
            "callback_p50_ms": round(self.app.p50_ms, 2),
            "callback_p99_ms": round(self.app.p99_ms, 2),
            "callback_server_cpu": round(self.app.server_cpu, 2),
            "end_to_end_msg_per_s": None if math.isnan(self.end_to_end) else round(self.end_to_end_rate),
            "ratio": round(self.ratio, 3),
            "errors": self.app.errors + self.before.errors + self.after.errors,
        }


def make_callbacks(count: int, first_msgid: int, pastes: Pastes = Pastes()) -> list[tuple[str, bytes]]:
    """Signed, encrypted WeCom text callbacks (query string, body), each with its own MsgId; ``pastes`` says
    which of them are long texts."""
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
            f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{pastes.text(i)}]]></Content>"
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


# wrk sends the prepared requests in order, once each unless ``repeat`` is set; past the end of a set that must not
# repeat it asks for a path that does not exist (answered 404), so a run that outgrew its set shows up as errors.
WRK_SCRIPT = """
local i = 0
request = function()
  i = i + 1
  if cycle then i = ((i - 1) % #prepared) + 1 end
  local r = prepared[i]
  if r == nil then return wrk.format("POST", "/exhausted", nil, "") end
  return wrk.format("POST", r[1], {["Content-Type"] = "text/xml"}, r[2])
end
done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def write_wrk_script(path: Path, url_path: str, requests: list[tuple[str, bytes]], repeat: bool = False) -> None:
    """A wrk script holding ``requests``; a Lua function has at most 65,536 constants, hence one per chunk."""
    with path.open("w") as f:
        f.write(f"cycle = {str(repeat).lower()}\nprepared = {{}}\n")
        for start in range(0, len(requests), 10_000):
            f.write("for _, r in ipairs((function() return {\n")
            for query, body in requests[start : start + 10_000]:  # base64 and XML: no "]==]" can occur in a body
                f.write(f'{{"{url_path}?{query}", [==[{body.decode()}]==]}},\n')
            f.write("} end)()) do prepared[#prepared + 1] = r end\n")
        f.write(WRK_SCRIPT)


async def drive(
    name: str, url: str, script: Path, seconds: float, concurrency: int, cpus: set[int], server_pid: int
) -> Result:
    """Run wrk for ``seconds`` at ``concurrency`` connections with ``script``'s requests."""
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url]
    if cpus and shutil.which("taskset"):
        cmd = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *cmd]
    cpu_before = _cpu_seconds(server_pid)
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed with {proc.returncode}")
    stats = json.loads(out.decode().strip().splitlines()[-1])
    wall = stats["duration_us"] / 1e6
    return Result(
        name,
        int(stats["requests"]),
        wall,
        stats["p50_us"] / 1000,
        stats["p99_us"] / 1000,
        int(stats["non2xx"]) + int(stats["socket_errors"]),
        (_cpu_seconds(server_pid) - cpu_before) / wall,
    )


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


def _progress(db_path: Path) -> tuple[int, int, int]:
    """Messages stored, handled, and replies sent, read from the app's database."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10) as conn:
        stored, handled = conn.execute("SELECT COUNT(*), COUNT(handled_at) FROM message").fetchone()
        sent = conn.execute("SELECT COUNT(*) FROM outbox WHERE status = 'sent'").fetchone()[0]
    return int(stored), int(handled), int(sent)


async def _settle(db_path: Path, patience: float) -> bool:
    """Wait until every stored message is handled and its reply sent; False after ``patience`` seconds."""
    deadline = time.perf_counter() + patience
    while True:
        stored, handled, sent = _progress(db_path)
        if handled >= stored and sent >= stored:
            return True
        if time.perf_counter() > deadline:
            print(f"gave up waiting: {handled} handled, {sent} replies sent of {stored}")
            return False
        await asyncio.sleep(0.05)


@dataclass
class Load:
    """How hard and how long to drive each server."""

    seconds: float
    warmup: float
    concurrency: int
    server_cpus: set[int]
    other_cpus: set[int]
    workdir: Path
    pastes: Pastes = Pastes()


async def bench_hello(load: Load) -> Result:
    port = _free_port()
    proc = _start(["--_serve", "hello", "--_port", str(port)], load.server_cpus)
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
        script = load.workdir / "hello.lua"
        # the callbacks' sizes; nothing is stored: repeat them
        bodies = make_callbacks(1000, first_msgid=20_000_000, pastes=load.pastes)
        write_wrk_script(script, "/hello", bodies, repeat=True)
        await drive("warm-up", url, script, load.warmup, load.concurrency, load.other_cpus, proc.pid)
        return await drive("hello world", url, script, load.seconds, load.concurrency, load.other_cpus, proc.pid)
    finally:
        _stop(proc)


async def bench_app(
    load: Load, run: int, ceiling: float, profile: str = "", db_options: str = "", settle_timeout: float = 600.0
) -> tuple[Result, float]:
    """Drive a new app with a database of its own; ``ceiling`` (requests/s no server here exceeds: the hello
    world's) sizes the callback set."""
    sim_port, app_port = _free_port(), _free_port()
    db_path = load.workdir / f"bench-{run}.sqlite3"
    sim = _start(["--_serve", "simulator", "--_port", str(sim_port)], load.other_cpus)
    app = _start(
        [
            "--_serve", "app", "--_port", str(app_port), "--_db", f"sqlite://{db_path}{db_options}",
            "--_api", f"http://127.0.0.1:{sim_port}",
        ],
        load.server_cpus,
        profile,
    )  # fmt: skip
    try:
        await _wait_ready(f"http://127.0.0.1:{app_port}/healthz", app)
        await _wait_ready(f"http://127.0.0.1:{sim_port}/cgi-bin/gettoken", sim)
        warm_n = math.ceil(ceiling * load.warmup * 1.2) + load.concurrency
        timed_n = math.ceil(ceiling * load.seconds * 1.2) + load.concurrency
        callbacks = make_callbacks(warm_n + timed_n, first_msgid=10_000_000, pastes=load.pastes)
        warm_script, timed_script = load.workdir / "warm.lua", load.workdir / "timed.lua"
        write_wrk_script(warm_script, "/wecom/callback", callbacks[:warm_n])
        write_wrk_script(timed_script, "/wecom/callback", callbacks[warm_n:])
        url = f"http://127.0.0.1:{app_port}"
        await drive("warm-up", url, warm_script, load.warmup, load.concurrency, load.other_cpus, app.pid)
        await _settle(db_path, settle_timeout)  # the timed run starts with no backlog
        started = time.perf_counter()
        result = await drive(
            "wecom callback (app)", url, timed_script, load.seconds, load.concurrency, load.other_cpus, app.pid
        )
        settled = await _settle(db_path, settle_timeout)
        return result, (time.perf_counter() - started) if settled else float("nan")
    finally:
        _stop(app)
        _stop(sim)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each timed run")
    parser.add_argument("--rounds", type=int, default=3, help="app runs, each between two hello-world runs")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each timed run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--server-cpu", type=int, default=0, help="core the servers are pinned to")
    parser.add_argument("--json", action="store_true", help="print one JSON line with the results")
    parser.add_argument("--profile", default="", help="record the first app run with py-spy into this file")
    parser.add_argument(
        "--sqlite-synchronous",
        default="",
        choices=["", "FULL", "NORMAL"],
        help="append ?synchronous=... to the SQLite URL (default: the product's default, FULL)",
    )
    parser.add_argument(
        "--settle-timeout", type=float, default=600.0, help="seconds to wait for every message to be handled"
    )
    parser.add_argument(
        "--paste-share", type=float, default=0.0, help="share of callbacks that are pasted long texts (0.01: 1%%)"
    )
    parser.add_argument("--paste-bytes", type=int, default=30_000, help="size of a pasted text in UTF-8 bytes")
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
    if shutil.which("wrk") is None:
        sys.exit("bench.webhook needs wrk (apt-get install wrk)")

    server_cpus, other_cpus = split_cpus(args.server_cpu)
    db_options = f"?synchronous={args.sqlite_synchronous}" if args.sqlite_synchronous else ""
    with tempfile.TemporaryDirectory(prefix="crmbot-bench-") as tmp:
        pastes = Pastes(args.paste_share, args.paste_bytes)
        load = Load(args.duration, args.warmup, args.concurrency, server_cpus, other_cpus, Path(tmp), pastes)
        # The machine's speed drifts (shared host): the app and the hello world take turns, hello world first and
        # last, and each app run is compared with the mean of the hello-world runs on either side of it.
        hellos = [asyncio.run(bench_hello(load))]
        rounds: list[Round] = []
        for i in range(args.rounds):
            profile = args.profile if i == 0 else ""
            app, end_to_end = asyncio.run(bench_app(load, i, hellos[-1].rate, profile, db_options, args.settle_timeout))
            hellos.append(asyncio.run(bench_hello(load)))
            rounds.append(Round(hellos[-2], app, end_to_end, hellos[-1]))
    print(f"server pinned to cpu {sorted(server_cpus) or 'any'}, wrk on {sorted(other_cpus) or 'any'}")
    if args.paste_share > 0:
        print(f"pastes: {args.paste_share:.1%} of the callbacks are pasted texts of {args.paste_bytes} bytes")
    print(hellos[0].line())
    for r in rounds:
        print(r.app.line())
        print(
            f"{'':<22} all {r.app.requests} messages handled and replies delivered {r.end_to_end:.2f} s after the "
            f"timed run started ({r.end_to_end_rate:.0f} msg/s end to end); {r.ratio:.1%} of the hello world"
        )
        print(r.after.line())
    ratios = sorted(r.ratio for r in rounds)
    median = statistics.median(ratios)
    print(
        f"callbacks acknowledged at {median:.1%} of the hello-world rate (median of {len(rounds)} rounds: "
        f"{', '.join(f'{x:.1%}' for x in ratios)}; goal: at least 20%)"
    )
    if args.json:
        print(json.dumps({"ratio_median": round(median, 3), "rounds": [r.summary() for r in rounds]}))


if __name__ == "__main__":
    main()

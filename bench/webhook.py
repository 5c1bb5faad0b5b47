"""Webhook benchmark: encrypted WeCom text callbacks through ``crmbot serve`` as deployed vs an aiohttp hello-world
endpoint.

Both servers run, taking turns (``--rounds`` app runs, each between two hello-world runs), in a subprocess
pinned to one core (``--server-cpu``). The load comes from ``wrk`` (a C load generator: a Python client would be
slower than the hello-world server and measure itself) pinned with the WeCom API simulator, which receives the
bot's replies, to the remaining cores. Traffic stays on loopback; each wrk run lasts ``--duration`` seconds after
``--warmup`` seconds of warm-up.

The app is ``crmbot serve --config crmbot.toml`` in a subprocess, its log written to a file, as an operator runs
it: the product's defaults (SQLite in a temporary directory, scheduler and outbox dispatcher on, ``[server]
access_log`` as ``--access-log`` says, by default the default), the senders imported with ``crmbot import staff``;
only WeCom's limits per person are raised (the simulator has none, and 50 senders at thousands a second would be
held at 25 replies a second). Each callback is a signed, encrypted text message with a unique MsgId, generated
before timing starts (a run that would need more than were generated is reported as an error, never repeated
as duplicates). Reported per round: acknowledged callbacks per second and p50/p99 latency (verify + decrypt +
persist + ack) at saturation, then p50/p99 at ``--paced-share`` of that rate (each wrk connection pausing between
an answer and its next request for a random time, exponentially distributed, so that the connections send
independently as people do; ``--fixed-pause`` pauses the same time each, as this benchmark once did), the time
until every message was handled and its reply delivered to the simulator, the app's RSS, and the hello-world
requests per second at the same concurrency with request bodies of the same size. A round whose hello-world runs
did not keep their server busy (under ``SATURATED_CPU`` of its core) is flagged and left out of the results::

    apt-get install wrk
    .venv/bin/python -m bench.webhook --duration 10 --rounds 3

``--database postgres://postgres@127.0.0.1:5432/test`` runs the app on PostgreSQL instead, in a new database on
that server for each run (dropped afterwards); the server's processes are not pinned.

``--workers 1`` (with ``--database``) splits the deployment into roles (docs/SCALING.md): the pinned app is a
``role = "web"`` instance, which only acknowledges, and that many ``role = "worker"`` instances on the remaining
cores handle what it stored and send the replies; the server CPU per message counts them all.

``--paste-share 0.01 --paste-bytes 30000`` makes every hundredth callback a pasted Chinese text of 30,000 bytes
(UTF-8) instead of ``帮助``, to see whether long messages hold up everyone else's acknowledgements.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg

from bench.rules import scratch_database
from bot.app import new_event_loop

ROOT = Path(__file__).resolve().parent.parent
CORP_ID = "ww1436e0e65a779aee"
TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
AES_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
AGENT_ID = 1000002
SECRET = "bench-app-secret"
CORP = {"corp_id": CORP_ID, "token": TOKEN, "encoding_aes_key": AES_KEY, "agent_id": AGENT_ID, "secret": SECRET}
SENDERS = 50
# A hello-world run whose server used less of its core than this was limited by the load, not by the server: its
# rate is no baseline, and its round is left out.
SATURATED_CPU = 0.9
PACING_TRIAL_SECONDS = 3.0  # the paced run's trial, which sets its pause (see ``_bench_app``)
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
    paced: Result | None = None  # the app at ``--paced-share`` of its own saturating rate
    rss_mib: float = float("nan")  # the app's resident memory after the runs
    peak_rss_mib: float = float("nan")
    # the app's CPU seconds from the start of the timed run until every message was handled and answered
    end_to_end_cpu: float = float("nan")

    @property
    def ratio(self) -> float:
        return self.app.rate / ((self.before.rate + self.after.rate) / 2)

    @property
    def saturated(self) -> bool:
        """Both hello-world runs kept their server busy: the baseline is the machine's, not the load's."""
        return min(self.before.server_cpu, self.after.server_cpu) >= SATURATED_CPU

    @property
    def end_to_end_rate(self) -> float:
        return self.app.requests / self.end_to_end

    @property
    def cpu_per_message_us(self) -> float:
        """The app's CPU per message, acknowledged, handled and answered: what bounds the end-to-end rate on one
        core, whatever else the machine runs."""
        return self.end_to_end_cpu / self.app.requests * 1e6

    def summary(self) -> dict[str, object]:
        return {
            "hello_rps_before": round(self.before.rate),
            "hello_rps_after": round(self.after.rate),
            "hello_server_cpu": [round(self.before.server_cpu, 2), round(self.after.server_cpu, 2)],
            "saturated": self.saturated,
            "callback_rps": round(self.app.rate),
            "callback_p50_ms": round(self.app.p50_ms, 2),
            "callback_p99_ms": round(self.app.p99_ms, 2),
            "callback_server_cpu": round(self.app.server_cpu, 2),
            "paced_rps": None if self.paced is None else round(self.paced.rate),
            "paced_p50_ms": None if self.paced is None else round(self.paced.p50_ms, 2),
            "paced_p99_ms": None if self.paced is None else round(self.paced.p99_ms, 2),
            "end_to_end_msg_per_s": None if math.isnan(self.end_to_end) else round(self.end_to_end_rate),
            "end_to_end_cpu_us_per_msg": None if math.isnan(self.end_to_end) else round(self.cpu_per_message_us),
            "rss_mib": round(self.rss_mib, 1),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
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
if pause_ms > 0 and fixed then delay = function() return pause_ms end
elseif pause_ms > 0 then delay = function() return -pause_ms * math.log(1 - math.random()) end end
done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def write_wrk_script(
    path: Path,
    url_path: str,
    requests: list[tuple[str, bytes]],
    repeat: bool = False,
    pause_ms: float = 0.0,
    fixed: bool = False,
) -> None:
    """A wrk script holding ``requests``; a Lua function has at most 65,536 constants, hence one per chunk.
    ``pause_ms``: each connection waits this long on average after an answer before its next request (a paced
    load), a random time each (exponentially distributed), as people who write independently do: with a fixed
    pause (``fixed``), the connections answered by one group commit all send again at the same moment, in step."""
    with path.open("w") as f:
        f.write(f"cycle = {str(repeat).lower()}\npause_ms = {pause_ms:.3f}\nfixed = {str(fixed).lower()}\n")
        f.write("prepared = {}\n")
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


_PROGRESS = (
    "SELECT (SELECT COUNT(*) FROM message), (SELECT COUNT(handled_at) FROM message),"
    " (SELECT COUNT(*) FROM outbox WHERE status = 'sent')"
)


async def _progress(database: str) -> tuple[int, int, int]:
    """Messages stored, handled, and replies sent, read from the app's database (an SQLite URL or PostgreSQL's)."""
    if database.startswith("sqlite://"):
        path = urlsplit(database).path
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
            stored, handled, sent = conn.execute(_PROGRESS).fetchone()
    else:
        conn = await asyncpg.connect(database.replace("postgres://", "postgresql://"))
        try:
            stored, handled, sent = await conn.fetchrow(_PROGRESS)
        finally:
            await conn.close()
    return int(stored), int(handled), int(sent)


@contextlib.asynccontextmanager
async def app_database(workdir: Path, run: int, options: argparse.Namespace) -> AsyncIterator[str]:
    """The URL of a new, empty database for one app run: an SQLite file in ``workdir`` (the product's default), or
    a database of its own on the PostgreSQL server that ``--database`` names, dropped afterwards."""
    if not options.database:
        extra = f"?synchronous={options.sqlite_synchronous}" if options.sqlite_synchronous else ""
        yield f"sqlite://{workdir / f'bench-{run}.sqlite3'}{extra}"
        return
    async with scratch_database(options.database) as url:
        yield url


async def _settle(database: str, patience: float) -> bool:
    """Wait until every stored message is handled and its reply sent; False after ``patience`` seconds."""
    deadline = time.perf_counter() + patience
    while True:
        stored, handled, sent = await _progress(database)
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


def write_config(
    workdir: Path, port: int, database: str, api_base: str, access_log: str, role: str = "all", name: str = "crmbot"
) -> Path:
    """The app's configuration as an operator writes it: the defaults, but for WeCom's limits per person, which
    the simulator does not enforce and 50 senders at thousands of callbacks a second would hit at once."""
    config = workdir / f"{name}.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\naccess_log = "{access_log}"\nrole = "{role}"\n'
        f'[database]\nurl = "{database}"\n'
        f'[wecom]\ncorp_id = "{CORP_ID}"\nagent_id = {AGENT_ID}\nsecret = "{SECRET}"\ntoken = "{TOKEN}"\n'
        f'encoding_aes_key = "{AES_KEY}"\napi_base = "{api_base}"\n'
        "member_messages_per_minute = 1000000\nmember_messages_per_hour = 1000000\n",
        encoding="utf-8",
    )
    return config


def import_staff(workdir: Path, config: Path) -> None:
    """The senders, registered with ``crmbot import staff`` as an operator would."""
    staff = workdir / "staff.csv"
    staff.write_text("姓名,企业微信账号,角色\n" + "".join(f"销售{i:03d},rep{i:03d},销售\n" for i in range(SENDERS)))
    cmd = [sys.executable, "-m", "bot.cli", "import", "staff", str(staff), "--config", str(config)]
    subprocess.run(cmd, cwd=workdir, check=True, stdout=subprocess.DEVNULL)


def serve(config: Path, workdir: Path, cpus: set[int], profile: str = "") -> subprocess.Popen[bytes]:
    """``crmbot serve`` as deployed (its log, named as its configuration, in the work directory), pinned to
    ``cpus``."""
    cmd = [sys.executable, "-m", "bot.cli", "serve", "--config", str(config)]
    if profile:  # collapsed stacks for flame graphs: py-spy must be installed next to the interpreter
        py_spy = str(Path(sys.executable).with_name("py-spy"))
        cmd = [py_spy, "record", "--format", "raw", "--rate", "100", "-o", profile, "--", *cmd]
    with (workdir / f"{config.stem}.log").open("ab") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=log)
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(proc.pid, cpus)  # the interpreter pins its own threads from the start
    return proc


def _memory(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MiB of a process (Linux)."""
    found = {"VmRSS:": float("nan"), "VmHWM:": float("nan")}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":")[0] + ":"
            if key in found:
                found[key] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return found["VmRSS:"], found["VmHWM:"]


@dataclass
class AppRun:
    saturated: Result
    end_to_end: float
    paced: Result | None
    rss_mib: float
    peak_rss_mib: float
    end_to_end_cpu: float


async def bench_app(load: Load, run: int, ceiling: float, options: argparse.Namespace, profile: str = "") -> AppRun:
    """Drive a new ``crmbot serve`` with a database of its own: saturated, then (``--paced-share``) at a share of
    the rate it just reached; ``ceiling`` (requests/s no server here exceeds: the hello world's) sizes the
    callback sets."""
    async with app_database(load.workdir, run, options) as database:
        return await _bench_app(load, run, ceiling, options, database, profile)


async def _bench_app(
    load: Load, run: int, ceiling: float, options: argparse.Namespace, database: str, profile: str
) -> AppRun:
    sim_port, app_port = _free_port(), _free_port()
    sim = _start(["--_serve", "simulator", "--_port", str(sim_port)], load.other_cpus)
    rundir = load.workdir / f"run-{run}"
    rundir.mkdir()
    api_base = f"http://127.0.0.1:{sim_port}"
    role = "web" if options.workers else "all"
    config = write_config(rundir, app_port, database, api_base, options.access_log, role)
    await asyncio.to_thread(import_staff, rundir, config)
    app = serve(config, rundir, load.server_cpus, profile)
    workers = []
    for n in range(options.workers):
        port = _free_port()
        worker_config = write_config(rundir, port, database, api_base, options.access_log, "worker", f"worker{n}")
        workers.append((serve(worker_config, rundir, load.other_cpus), port))
    settle_timeout = options.settle_timeout
    try:
        await _wait_ready(f"http://127.0.0.1:{app_port}/healthz", app)
        for worker, port in workers:
            await _wait_ready(f"http://127.0.0.1:{port}/healthz", worker)
        await _wait_ready(f"http://127.0.0.1:{sim_port}/cgi-bin/gettoken", sim)
        warm_n = math.ceil(ceiling * load.warmup * 1.2) + load.concurrency
        timed_n = math.ceil(ceiling * load.seconds * 1.2) + load.concurrency
        trial_n = math.ceil(ceiling * PACING_TRIAL_SECONDS) + load.concurrency
        callbacks = make_callbacks(warm_n + 2 * timed_n + trial_n, first_msgid=10_000_000, pastes=load.pastes)
        warm_script, timed_script = load.workdir / "warm.lua", load.workdir / "timed.lua"
        write_wrk_script(warm_script, "/wecom/callback", callbacks[:warm_n])
        write_wrk_script(timed_script, "/wecom/callback", callbacks[warm_n : warm_n + timed_n])
        url = f"http://127.0.0.1:{app_port}"
        await drive("warm-up", url, warm_script, load.warmup, load.concurrency, load.other_cpus, app.pid)
        await _settle(database, settle_timeout)  # the timed run starts with no backlog
        pids = [app.pid] + [worker.pid for worker, _ in workers]
        started, cpu_started = time.perf_counter(), sum(map(_cpu_seconds, pids))
        result = await drive(
            "wecom callback (app)", url, timed_script, load.seconds, load.concurrency, load.other_cpus, app.pid
        )
        settled = await _settle(database, settle_timeout)
        end_to_end = (time.perf_counter() - started) if settled else float("nan")
        end_to_end_cpu = sum(map(_cpu_seconds, pids)) - cpu_started
        paced = None
        if options.paced_share > 0:
            # Each connection pauses between an answer and its next request so that together they send about
            # ``paced_share`` of the saturating rate (wrk has no open-loop rate: wrk2 is not packaged). An answer
            # comes sooner at a lower rate, so a short trial at the first guess corrects the pause: the time a
            # request took in the trial, added to the new pause, makes a connection's cycle the target's.
            target = options.paced_share * result.rate
            cycle_ms = load.concurrency / target * 1000
            pause_ms = max(cycle_ms - result.p50_ms, 0.0)
            paced_script = load.workdir / "paced.lua"
            rest = callbacks[warm_n + timed_n :]
            fixed = options.fixed_pause
            write_wrk_script(paced_script, "/wecom/callback", rest[:trial_n], pause_ms=pause_ms, fixed=fixed)
            trial = await drive(
                "pacing trial", url, paced_script, PACING_TRIAL_SECONDS, load.concurrency, load.other_cpus, app.pid
            )
            answered_ms = load.concurrency / trial.rate * 1000 - pause_ms
            pause_ms = max(cycle_ms - answered_ms, 0.0)
            await _settle(database, settle_timeout)
            write_wrk_script(paced_script, "/wecom/callback", rest[trial_n:], pause_ms=pause_ms, fixed=fixed)
            name = f"app at {options.paced_share:.0%}"
            paced = await drive(name, url, paced_script, load.seconds, load.concurrency, load.other_cpus, app.pid)
            await _settle(database, settle_timeout)
        rss, peak = _memory(app.pid)
        return AppRun(result, end_to_end, paced, rss, peak, end_to_end_cpu)
    finally:
        _stop(app)
        for worker, _ in workers:
            _stop(worker)
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
        "--database",
        default="",
        help="a PostgreSQL server's URL (postgres://user@host:port/db): each app run gets a new database there "
        "(default: an SQLite file, the product's default)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="with --database: the app acknowledges only (role web) and this many worker instances handle and send",
    )
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
    parser.add_argument(
        "--paced-share", type=float, default=0.5, help="then drive the app at this share of its rate (0: skip)"
    )
    parser.add_argument(
        "--fixed-pause", action="store_true", help="paced connections pause the same time each, not a random time"
    )
    parser.add_argument(
        "--access-log", default="errors", choices=["errors", "all", "off"], help="[server] access_log of the app"
    )
    parser.add_argument("--_serve", choices=["hello", "simulator"], help=argparse.SUPPRESS)
    parser.add_argument("--_port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_cpus", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._serve:
        _pin({int(c) for c in args._cpus.split(",") if c})
        if args._serve == "hello":
            serve_hello(args._port)
        else:
            serve_simulator(args._port)
        return
    if args.workers and not args.database:
        parser.error("--workers shares the database between instances: it needs --database (PostgreSQL)")
    if shutil.which("wrk") is None:
        sys.exit("bench.webhook needs wrk (apt-get install wrk)")

    server_cpus, other_cpus = split_cpus(args.server_cpu)
    with tempfile.TemporaryDirectory(prefix="crmbot-bench-") as tmp:
        pastes = Pastes(args.paste_share, args.paste_bytes)
        load = Load(args.duration, args.warmup, args.concurrency, server_cpus, other_cpus, Path(tmp), pastes)
        # The machine's speed drifts (shared host): the app and the hello world take turns, hello world first and
        # last, and each app run is compared with the mean of the hello-world runs on either side of it.
        hellos = [asyncio.run(bench_hello(load))]
        rounds: list[Round] = []
        for i in range(args.rounds):
            profile = args.profile if i == 0 else ""
            app = asyncio.run(bench_app(load, i, hellos[-1].rate, args, profile))
            hellos.append(asyncio.run(bench_hello(load)))
            rounds.append(
                Round(
                    hellos[-2],
                    app.saturated,
                    app.end_to_end,
                    hellos[-1],
                    app.paced,
                    app.rss_mib,
                    app.peak_rss_mib,
                    app.end_to_end_cpu,
                )
            )
    print(f"server pinned to cpu {sorted(server_cpus) or 'any'}, wrk on {sorted(other_cpus) or 'any'}")
    database = "PostgreSQL" if args.database else "SQLite"
    print(f"crmbot serve with [server] access_log = {args.access_log!r}, on {database}")
    if args.workers:
        print(f"the pinned app is role = 'web'; {args.workers} role = 'worker' instance(s) on the other cores")
    if args.paste_share > 0:
        print(f"pastes: {args.paste_share:.1%} of the callbacks are pasted texts of {args.paste_bytes} bytes")
    print(hellos[0].line())
    for r in rounds:
        print(r.app.line())
        if r.paced is not None:
            print(r.paced.line())
        print(
            f"{'':<22} all {r.app.requests} messages handled and replies delivered {r.end_to_end:.2f} s after the "
            f"timed run started ({r.end_to_end_rate:.0f} msg/s end to end, server CPU {r.cpu_per_message_us:.0f} µs "
            f"per message); {r.ratio:.1%} of the hello world; "
            f"RSS {r.rss_mib:.0f} MiB (peak {r.peak_rss_mib:.0f})"
        )
        print(r.after.line())
        if not r.saturated:
            print(f"{'':<22} NOT SATURATED: a hello-world run used under {SATURATED_CPU:.0%} of its core; left out")
    kept = [r for r in rounds if r.saturated]
    if not kept:
        print("no round had a saturated hello world: no result (the load generator was starved)")
    else:
        ratios = sorted(r.ratio for r in kept)
        median = statistics.median(ratios)
        print(
            f"callbacks acknowledged at {median:.1%} of the hello-world rate (median of {len(kept)} saturated rounds "
            f"of {len(rounds)}: {', '.join(f'{x:.1%}' for x in ratios)}; goal: at least 20%)"
        )
        print(f"ack p99 at saturation: {_span([r.app.p99_ms for r in kept])} ms (goal < 50 ms)")
        paced = [r.paced for r in kept if r.paced is not None]
        if paced:
            print(
                f"ack p99 at {args.paced_share:.0%} of saturation ({_span([p.rate for p in paced], 0)} req/s): "
                f"{_span([p.p99_ms for p in paced])} ms (goal < 20 ms)"
            )
    if args.json:
        print(json.dumps({"rounds": [r.summary() for r in rounds]}))


def _span(values: list[float], digits: int = 1) -> str:
    return f"{min(values):.{digits}f}–{max(values):.{digits}f}"


if __name__ == "__main__":
    main()

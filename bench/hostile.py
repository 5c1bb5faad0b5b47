"""Hostile-input benchmark: what an unauthenticated XML bomb costs the WeCom callback, next to an ordinary bad
request, and how fast a genuine callback is acknowledged while bombs keep arriving.

The server is ``bench.webhook``'s: the real ``create_app`` on SQLite, pinned to one core, the WeCom API simulator
and this client on the others. First each kind of request is sent ``--each`` times, one at a time, and timed at
the client, with the server's CPU time per request (from /proc): a forged signature (403, the ordinary bad request),
a "billion laughs" envelope (an entity bomb in a DOCTYPE), an envelope nested 15,000 levels deep, an oversized
envelope, and a genuine signed callback. Then, for ``--duration`` seconds each, a genuine callback every 20 ms is
timed alone, while ``--bombers`` clients post forged signatures back to back, and while as many post bombs;
``/healthz`` is timed alongside. The server's resident memory is read before and after, and its log is counted::

    .venv/bin/python -m bench.hostile
    .venv/bin/python -m bench.hostile --each 300 --bombers 10 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from bench.webhook import ROOT, _cpu_seconds, _free_port, _start, _stop, _wait_ready, make_callbacks, split_cpus

BOMB = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "lollollollollollollollollollol">'
    + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9))
    + "]><xml><Encrypt>&j;</Encrypt></xml>"
).encode()
DEEP = b"<xml>" + b"<a>" * 15_000 + b"</a>" * 15_000 + b"</xml>"
OVERSIZED = b"<xml><Encrypt>" + b"A" * 300 * 1024 + b"</Encrypt></xml>"


def _start_app(port: int, database: str, api_base: str, cpus: set[int], log: Path) -> subprocess.Popen[bytes]:
    """``bench.webhook``'s app server, its log (one warning per refused request) into ``log``."""
    cmd = [sys.executable, "-m", "bench.webhook", "--_cpus", ",".join(map(str, sorted(cpus))), "--_serve", "app"]
    cmd += ["--_port", str(port), "--_db", database, "--_api", api_base]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, stderr=out)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _ms(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return f"p50 {cuts[49] * 1000:6.2f} ms  p99 {cuts[98] * 1000:6.2f} ms  max {max(values) * 1000:6.2f} ms"


class Target:
    """The app under test: where to post, and its process for CPU time and memory."""

    def __init__(self, session: aiohttp.ClientSession, port: int, pid: int) -> None:
        self.session, self.base, self.pid = session, f"http://127.0.0.1:{port}", pid
        self.genuine = iter(make_callbacks(20_000, first_msgid=30_000_000))
        self.refused = 0

    async def post(self, query: str, body: bytes) -> tuple[int, float]:
        sent = time.perf_counter()
        async with self.session.post(f"{self.base}/wecom/callback?{query}", data=body) as resp:
            await resp.read()
        self.refused += resp.status >= 400
        return resp.status, time.perf_counter() - sent

    async def genuine_callback(self) -> tuple[int, float]:
        return await self.post(*next(self.genuine))

    async def healthz(self) -> tuple[int, float]:
        sent = time.perf_counter()
        async with self.session.get(f"{self.base}/healthz") as resp:
            await resp.read()
        return resp.status, time.perf_counter() - sent


def kinds(target: Target) -> dict[str, Callable[[], object]]:
    """Each kind of request, as a coroutine factory, with the status it must get."""
    query, _ = make_callbacks(1, first_msgid=1)[0]
    forged = query.replace("=", "=0", 1)  # msg_signature comes first
    _, genuine_body = make_callbacks(1, first_msgid=2)[0]
    return {
        "forged signature (403)": lambda: target.post(forged, genuine_body),
        "billion laughs (400)": lambda: target.post(query, BOMB),
        "15,000 levels deep (400)": lambda: target.post(query, DEEP),
        "300 KiB envelope (413)": lambda: target.post(query, OVERSIZED),
        "genuine callback (200)": target.genuine_callback,
    }


async def cost_per_kind(target: Target, each: int) -> None:
    print(f"one request at a time, {each} of each kind: latency at the client, server CPU per request")
    for name, make in kinds(target).items():
        cpu, latencies, statuses = _cpu_seconds(target.pid), [], set()
        for _ in range(each):
            status, latency = await make()  # type: ignore[misc]
            statuses.add(status)
            latencies.append(latency)
        cpu_ms = (_cpu_seconds(target.pid) - cpu) / each * 1000
        print(f"  {name:<26} {_ms(latencies)}  cpu {cpu_ms:5.2f} ms  statuses {sorted(statuses)}")


async def genuine_while(
    target: Target, seconds: float, flooders: int, flood: tuple[str, bytes]
) -> tuple[list[float], list[float], int]:
    """Genuine callbacks and health checks every 20 ms for ``seconds``, while ``flooders`` clients post ``flood``
    (query, body) back to back; returns the acknowledgement and health-check times and how many were refused."""
    stop = asyncio.Event()
    refused = 0

    async def bomber() -> None:
        nonlocal refused
        while not stop.is_set():
            status, _ = await target.post(*flood)
            assert status in (400, 403), status
            refused += 1

    tasks = [asyncio.create_task(bomber()) for _ in range(flooders)]
    acks: list[float] = []
    health: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        (status, ack), (healthy, check) = await asyncio.gather(target.genuine_callback(), target.healthz())
        assert (status, healthy) == (200, 200), (status, healthy)
        acks.append(ack)
        health.append(check)
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.gather(*tasks)
    return acks, health, refused


async def run(each: int, seconds: float, bombers: int, server_cpus: set[int], other_cpus: set[int], tmp: Path) -> None:
    sim_port, app_port = _free_port(), _free_port()
    sim = _start(["--_serve", "simulator", "--_port", str(sim_port)], other_cpus)
    log = tmp / "server.log"
    app = _start_app(app_port, f"sqlite://{tmp / 'hostile.sqlite3'}", f"http://127.0.0.1:{sim_port}", server_cpus, log)
    try:
        await _wait_ready(f"http://127.0.0.1:{app_port}/healthz", app)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            target = Target(session, app_port, app.pid)
            await cost_per_kind(target, each)
            rss = _rss_mib(app.pid)
            query, body = make_callbacks(1, first_msgid=3)[0]
            floods = [
                ("nothing else", 0, (query, body)),
                (f"{bombers} clients posting forged signatures", bombers, (query.replace("=", "=0", 1), body)),
                (f"{bombers} clients posting billion laughs", bombers, (query, BOMB)),
            ]
            for label, n, flood in floods:
                acks, health, refused = await genuine_while(target, seconds, n, flood)
                print(f"genuine callbacks while {label} ({len(acks)} callbacks; {refused} others refused):")
                print(f"  ack      {_ms(acks)}")
                print(f"  /healthz {_ms(health)}")
            print(f"server resident memory {rss:.0f} MiB before the floods, {_rss_mib(app.pid):.0f} MiB after")
            refused = sum(" refused (" in line for line in log.read_text(errors="replace").splitlines())
            print(
                f"server log: {refused} warning lines for {target.refused} refused requests, tracebacks: "
                f"{log.read_text(errors='replace').count('Traceback')}"
            )
    finally:
        _stop(app)
        _stop(sim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--each", type=int, default=300, help="requests of each kind, one at a time")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of genuine callbacks, each phase")
    parser.add_argument("--bombers", type=int, default=10, help="clients posting bombs back to back")
    parser.add_argument("--server-cpu", type=int, default=0, help="core the server is pinned to")
    args = parser.parse_args()
    server_cpus, other_cpus = split_cpus(args.server_cpu)
    with tempfile.TemporaryDirectory(prefix="crmbot-hostile-") as tmp:
        asyncio.run(run(args.each, args.duration, args.bombers, server_cpus, other_cpus, Path(tmp)))


if __name__ == "__main__":
    main()

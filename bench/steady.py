"""Steady-load benchmark: WeCom callbacks at a fixed rate, below what the app can acknowledge, and how far handling
keeps up while they arrive.

``bench.webhook`` drives the app as hard as it goes; this sends ``--rate`` callbacks per second for ``--duration``
seconds on a fixed schedule (an open loop: a late answer does not delay the next callback), from an aiohttp client
pinned with the WeCom API simulator to the cores the server is not on. The server is the same as in
``bench.webhook``: ``crmbot serve`` as deployed on SQLite, pinned to one core, senders imported as reps, every
callback a signed, encrypted ``帮助`` with its own MsgId.

Reported: how many messages were handled and how many replies delivered when the last callback was answered,
how long after that until every message was handled and answered, the acknowledgement latency (p50/p99), and the
server's CPU seconds over the whole run::

    .venv/bin/python -m bench.steady --rate 400 --duration 8
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.webhook import (
    _cpu_seconds,
    _free_port,
    _progress,
    _settle,
    _start,
    _stop,
    _wait_ready,
    import_staff,
    make_callbacks,
    serve,
    split_cpus,
    write_config,
)


async def run(rate: int, seconds: float, server_cpus: set[int], other_cpus: set[int], workdir: Path) -> None:
    sim_port, app_port = _free_port(), _free_port()
    database = f"sqlite://{workdir / 'steady.sqlite3'}"
    sim = _start(["--_serve", "simulator", "--_port", str(sim_port)], other_cpus)
    config = write_config(workdir, app_port, database, f"http://127.0.0.1:{sim_port}", "errors")
    await asyncio.to_thread(import_staff, workdir, config)
    app = serve(config, workdir, server_cpus)
    try:
        await _wait_ready(f"http://127.0.0.1:{app_port}/healthz", app)
        await _wait_ready(f"http://127.0.0.1:{sim_port}/cgi-bin/gettoken", sim)
        callbacks = make_callbacks(round(rate * seconds), first_msgid=10_000_000)
        url = f"http://127.0.0.1:{app_port}/wecom/callback?"
        latencies: list[float] = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def post(query: str, body: bytes) -> None:
                sent = time.perf_counter()
                async with session.post(url + query, data=body) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"callback answered {resp.status}")
                latencies.append(time.perf_counter() - sent)

            cpu_started = _cpu_seconds(app.pid)
            started = time.perf_counter()
            posts = []
            for i, (query, body) in enumerate(callbacks):
                await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
                posts.append(asyncio.create_task(post(query, body)))
            sending = time.perf_counter() - started
            await asyncio.gather(*posts)
        stored, handled, sent = await _progress(database)
        answered = time.perf_counter()
        settled = await _settle(database, 600)
        cpu = _cpu_seconds(app.pid) - cpu_started
        cuts = statistics.quantiles(latencies, n=100)
        print(
            f"{len(callbacks)} callbacks at {rate}/s, sent in {sending:.1f} s, the last answered after "
            f"{answered - started:.1f} s; by then {handled} of {stored} handled and {sent} replies delivered"
        )
        if settled:
            print(f"every message handled and answered {time.perf_counter() - answered:.1f} s later")
        print(f"acknowledgement latency p50 {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms")
        print(f"server CPU {cpu:.1f} s ({cpu / len(callbacks) * 1e6:.0f} µs per message, acknowledged to answered)")
    finally:
        _stop(app)
        _stop(sim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=400, help="callbacks per second")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of sending")
    parser.add_argument("--server-cpu", type=int, default=0, help="core the server is pinned to")
    args = parser.parse_args()
    server_cpus, other_cpus = split_cpus(args.server_cpu)
    with tempfile.TemporaryDirectory(prefix="crmbot-steady-") as tmp:
        asyncio.run(run(args.rate, args.duration, server_cpus, other_cpus, Path(tmp)))


if __name__ == "__main__":
    main()

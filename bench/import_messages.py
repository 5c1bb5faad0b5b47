"""Benchmark: bulk imports through the CLI, next to a raw baseline measured in the same run.

``messages``: ``crmbot import messages FILE.jsonl`` exactly as an admin runs it (a subprocess, the CLI with its
defaults: search index and keyword rules on) on a fresh database seeded with 900 customers, their contacts and 60
reps, against the raw baseline on another fresh database of the same schema: the same lines parsed and inserted
into ``message`` only (SQLite: ``executemany`` in transactions of 10,000 rows; PostgreSQL: asyncpg
``copy_records_to_table``). The import's peak RSS and CPU time are the subprocess's own (``wait4``: with the worker
processes it forked and joined); the baseline's CPU time is this process's. On PostgreSQL the server's CPU time for
each database (its backends' user + system time, sampled from ``/proc`` every 200 ms while they run; the server must
be on this machine, readable) is given too, separately.

    .venv/bin/python -m bench.import_messages messages --n 100000 --db sqlite --rounds 3
    .venv/bin/python -m bench.import_messages messages --n 100000 --db postgres --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.search import drop_pg, fresh_pg, generate, seed_people
from bot.app import create_app, load_settings

RAW_BATCH = 10_000
COLUMNS = ("platform", "msgid", "to_bot", "sender", "receivers", "room_id", "msgtype", "text", "payload")
TIMES = ("sent_at", "received_at")


async def prepare(url: str) -> None:
    """Migrate the fresh database and seed the people the messages refer to."""
    from aiohttp import web

    app = create_app(load_settings(os.devnull, database={"url": url}), run_dispatcher=False, run_scheduler=False)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        await seed_people()
    finally:
        await runner.cleanup()


class ServerCpu:
    """CPU seconds of the PostgreSQL backends serving database ``name`` while the block runs (0 if not visible)."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name = name.encode()
        self.enabled = enabled
        self.ticks: dict[int, int] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ServerCpu:
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.enabled:
            self.thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.ticks.values()) / os.sysconf("SC_CLK_TCK")

    def _sample(self) -> None:
        while True:
            for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
                try:
                    if self.name not in Path(f"/proc/{pid}/cmdline").read_bytes().split(b" "):
                        continue
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                self.ticks[pid] = int(fields[11]) + int(fields[12])  # utime + stime
            if self.done.wait(0.2):
                return


def cli_import(url: str, data: Path, workdir: Path) -> tuple[float, float, float, str]:
    """``crmbot import messages`` in a subprocess: (seconds, its CPU seconds, peak RSS in MB, summary line)."""
    config = workdir / "config.toml"
    config.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    out = workdir / "import.out"
    t = time.perf_counter()
    with out.open("w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "import", "messages", str(data), "--config", str(config)],
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"import failed ({proc.returncode}): {text[-2000:]}")
    summary = text.strip().splitlines()[-1] if text.strip() else ""
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, summary


def raw_rows(data: Path) -> Iterator[list[tuple[Any, ...]]]:
    """The file's records as ``message`` rows, RAW_BATCH at a time (parsed the simplest way)."""
    now = datetime.now(UTC)
    batch: list[tuple[Any, ...]] = []
    with data.open("rb") as f:
        for raw in f:
            r = json.loads(raw)
            sent = datetime.fromtimestamp(r["msgtime"] / 1000, UTC)
            text = r.get("text", {}).get("content", "")
            batch.append(
                (
                    "wecom",
                    r["msgid"],
                    False,
                    r["from"],
                    json.dumps(r["tolist"], ensure_ascii=False),
                    r.get("roomid", ""),
                    r["msgtype"],
                    text,
                    "{}",
                    sent,
                    now,
                )
            )
            if len(batch) >= RAW_BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def raw_sqlite(path: Path, data: Path) -> float:
    t = time.perf_counter()
    db = sqlite3.connect(path)
    columns = ", ".join(COLUMNS + TIMES)
    insert = f"INSERT OR IGNORE INTO message ({columns}) VALUES ({', '.join('?' * (len(COLUMNS) + len(TIMES)))})"
    for batch in raw_rows(data):
        with db:
            db.executemany(insert, [(*r[:9], r[9].isoformat(), r[10].isoformat()) for r in batch])
    db.close()
    return time.perf_counter() - t


async def raw_postgres(url: str, data: Path) -> float:
    import asyncpg

    t = time.perf_counter()
    conn = await asyncpg.connect(url.replace("postgres://", "postgresql://"))
    try:
        for batch in raw_rows(data):
            await conn.copy_records_to_table("message", records=batch, columns=[*COLUMNS, *TIMES])
    finally:
        await conn.close()
    return time.perf_counter() - t


async def fresh(args: argparse.Namespace, workdir: Path, name: str) -> str:
    if args.db == "postgres":
        return await fresh_pg(args.pg, name)
    path = workdir / f"{name}.sqlite3"
    path.unlink(missing_ok=True)
    return f"sqlite://{path}"


async def messages(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="crmbot-import-"))
    data = Path(args.file) if args.file else workdir / "chat.jsonl"
    if not args.file:
        generate(data, args.n)
    n = sum(1 for _ in data.open("rb"))
    rounds: list[dict[str, Any]] = []
    try:
        for i in range(args.rounds):
            url = await fresh(args, workdir, "crmbot_import_cli")
            await prepare(url)
            with ServerCpu("crmbot_import_cli", args.db == "postgres") as cli_server:
                seconds, cpu, rss, summary = cli_import(url, data, workdir)
            load = os.getloadavg()[0]
            base_url = await fresh(args, workdir, "crmbot_import_raw")
            await prepare(base_url)
            base_cpu = time.process_time()
            with ServerCpu("crmbot_import_raw", args.db == "postgres") as raw_server:
                if args.db == "postgres":
                    base = await raw_postgres(base_url, data)
                else:
                    base = raw_sqlite(Path(base_url.removeprefix("sqlite://")), data)
            base_cpu = time.process_time() - base_cpu
            row = {
                "round": i + 1,
                "cli_per_second": round(n / seconds),
                "cli_seconds": round(seconds, 1),
                "cli_peak_rss_mb": round(rss),
                "cli_per_cpu_second": round(n / cpu),
                "cli_cpu_seconds": round(cpu, 1),
                "raw_per_second": round(n / base),
                "raw_per_cpu_second": round(n / base_cpu),
                "raw_cpu_seconds": round(base_cpu, 1),
                **(
                    {
                        "cli_server_cpu_seconds": round(cli_server.seconds, 1),
                        "raw_server_cpu_seconds": round(raw_server.seconds, 1),
                    }
                    if args.db == "postgres"
                    else {}
                ),
                "load": round(load, 1),
                "summary": summary,
            }
            rounds.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
            if args.db == "postgres":
                await drop_pg(args.pg, url)
                await drop_pg(args.pg, base_url)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    cli = [r["cli_per_second"] for r in rounds]
    raw = [r["raw_per_second"] for r in rounds]
    result = {
        "db": args.db,
        "n": n,
        "rounds": rounds,
        "cli_range": [min(cli), max(cli)],
        "raw_range": [min(raw), max(raw)],
    }
    print(
        f"{args.db} {n} messages: crmbot import messages {min(cli)}-{max(cli)} msg/s, raw {min(raw)}-{max(raw)} msg/s"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    msgs = kinds.add_parser("messages", help="crmbot import messages against raw inserts")
    msgs.add_argument("--n", type=int, default=100_000)
    msgs.add_argument("--file", default="", help="import this JSON Lines file instead of generating N messages")
    msgs.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    msgs.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432/test")
    msgs.add_argument("--rounds", type=int, default=3)
    msgs.add_argument("--json", dest="json_out", default="")
    args = parser.parse_args()
    result = asyncio.run(messages(args))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()

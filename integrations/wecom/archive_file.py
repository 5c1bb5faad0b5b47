"""``crmbot import messages FILE.jsonl``: exported chat-archive records (WeCom's decrypted format: ``msgid, action,
from, tolist, roomid, msgtime`` in ms, ``msgtype`` and its object, e.g. ``text.content``), one JSON object a line,
streamed into the one archive path in batches. Customer contacts are ids starting ``wm``/``wo``. Lines that are not
such records are reported with their number and the reason; the rest is imported.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from bot.archive import Prepared, archive_prepared, bulk_import, prepare
from bot.collector import fewer_collections
from bot.jsontext import JSONError, parse_json
from bot.keys import BOT
from integrations.wecom.archive import NotArchivable, normalize_record

IMPORT_BATCH = 5000  # lines a transaction: fewer, larger commits
POOL_MIN_BYTES = 2_000_000  # a smaller file is prepared in a thread: starting worker processes would not pay
MAX_WORKERS = 2
AHEAD = 3  # batches read and being prepared while one is written
PARENT_CHECK_SECONDS = 1.0
MAX_REJECTIONS_SHOWN = 20


@dataclass
class ImportReport:
    imported: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"消息导入完成 messages imported: {self.imported}, "
            f"重复 duplicates: {self.duplicates}, 拒绝 rejected: {len(self.rejected)}"
        ]
        for line_no, reason in self.rejected[:MAX_REJECTIONS_SHOWN]:
            lines.append(f"  第 {line_no} 行 line {line_no}: {reason}")
        if len(self.rejected) > MAX_REJECTIONS_SHOWN:
            lines.append(f"  … 另有 {len(self.rejected) - MAX_REJECTIONS_SHOWN} 行被拒绝 more rejected lines")
        return "\n".join(lines)


@dataclass
class _Parsed:
    """One slice of the file parsed and prepared: its byte count, its lines, the messages and the rejected lines."""

    size: int = 0
    lines: int = 0
    rows: list[Prepared] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)


def _parse(lines: list[bytes], first: int) -> _Parsed:
    """Parse and prepare ``lines`` (numbered from ``first``); run in a worker process for a large file."""
    parsed = _Parsed(size=sum(map(len, lines)), lines=len(lines))
    for number, raw in enumerate(lines, start=first):
        if raw.strip():
            try:
                record = parse_json(raw)
                if not isinstance(record, dict):
                    raise NotArchivable("not a JSON object")
                parsed.rows.append(prepare(normalize_record(record)))
            except ValueError as exc:  # NotArchivable, and JSONError (also for a line that is not UTF-8)
                reason = "invalid JSON" if isinstance(exc, JSONError) else str(exc)
                parsed.rejected.append((number, reason))
    return parsed


def _workers(size: int) -> Executor:
    """Where the lines are parsed and prepared: for a large file, worker processes (that CPU work then runs
    beside the writing instead of taking turns with it under one interpreter lock); else a thread.

    The workers are forked: they start without importing anything again, and run pure functions only (nothing
    of the parent's threads, database connection or event loop is touched in them)."""
    cpus = os.cpu_count() or 1
    if size < POOL_MIN_BYTES or cpus < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return ThreadPoolExecutor(1)
    return ProcessPoolExecutor(
        min(MAX_WORKERS, cpus),
        mp_context=multiprocessing.get_context("fork"),
        initializer=_end_with_parent,
        initargs=(os.getpid(),),
    )


def _end_with_parent(parent: int) -> None:
    """In a worker: end when the importing process is gone, also when it was killed (a worker would otherwise wait
    for work forever: a forked sibling holds the work queue open)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


async def import_jsonl(app: web.Application, path: str | Path, batch_size: int = IMPORT_BATCH) -> str:
    """Import ``path`` (JSON Lines as described above); returns the report for the admin.

    The file is streamed a batch at a time; the next batches are parsed and prepared (the rows' JSON, the index
    grams) while the current one is written, in worker processes for a large file, so that at most a few batches
    are in memory. Batches are written in the order of the file."""
    from tqdm import tqdm  # only here: the other commands start faster without it

    bot = app[BOT]
    report = ImportReport()
    file = Path(path)
    size = (await asyncio.to_thread(file.stat)).st_size
    handle = await asyncio.to_thread(file.open, "rb")
    interactive = sys.stderr.isatty()
    loop = asyncio.get_running_loop()
    workers = _workers(size)
    ahead: deque[asyncio.Future[_Parsed]] = deque()
    number = 1

    def read_next() -> None:
        nonlocal number
        lines = list(itertools.islice(handle, batch_size))
        if lines:
            ahead.append(loop.run_in_executor(workers, _parse, lines, number))
            number += len(lines)

    try:
        # What is alive now (the application, the ORM's models) stays: out of the collector's full passes, which an
        # import's millions of short-lived values would otherwise trigger over and over, each walking all of it.
        with (
            fewer_collections(freeze=True),
            handle,
            tqdm(total=size, unit="B", unit_scale=True, desc="导入消息", disable=not interactive) as bar,
        ):
            async with bulk_import():
                for _ in range(AHEAD):
                    read_next()
                while ahead:
                    parsed = await ahead.popleft()
                    read_next()
                    report.rejected += parsed.rejected
                    if parsed.rows:
                        result = await archive_prepared(bot, parsed.rows)
                        report.imported += len(result.new)
                        report.duplicates += result.duplicates
                    bar.update(parsed.size)
    finally:
        for pending in ahead:  # a failed batch: what was read ahead is not imported
            pending.cancel()
        workers.shutdown(wait=True, cancel_futures=True)
    return report.summary()

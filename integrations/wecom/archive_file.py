"""``crmbot import messages FILE.jsonl``: exported chat-archive records (WeCom's decrypted format: ``msgid, action,
from, tolist, roomid, msgtime`` in ms, ``msgtype`` and its object, e.g. ``text.content``), one JSON object a line,
streamed into the one archive path in batches. Customer contacts are ids starting ``wm``/``wo``. Lines that are not
such records are reported with their number and the reason; the rest is imported.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aiohttp import web

from bot.archive import archive_batch
from bot.keys import BOT
from bot.types import IncomingMessage
from integrations.wecom.archive import NotArchivable, normalize_record

IMPORT_BATCH = 5000  # lines a transaction: fewer, larger commits
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
    """One slice of the file read and parsed: its byte count, the messages and the rejected lines."""

    size: int = 0
    lines: int = 0
    messages: list[IncomingMessage] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)


def _parse(handle: IO[bytes], count: int, first: int) -> _Parsed:
    """Read and parse the next ``count`` lines (numbered from ``first``)."""
    parsed = _Parsed()
    for number, raw in enumerate(handle, start=first):
        parsed.size += len(raw)
        parsed.lines += 1
        if raw.strip():
            try:
                record = json.loads(raw)
                if not isinstance(record, dict):
                    raise NotArchivable("not a JSON object")
                parsed.messages.append(normalize_record(record))
            except ValueError as exc:  # NotArchivable and JSON / UTF-8 errors
                reason = "invalid JSON" if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError) else str(exc)
                parsed.rejected.append((number, reason))
        if parsed.lines >= count:
            break
    return parsed


async def import_jsonl(app: web.Application, path: str | Path, batch_size: int = IMPORT_BATCH) -> str:
    """Import ``path`` (JSON Lines as described above); returns the report for the admin.

    The file is streamed a batch at a time, and the next batch is read and parsed in a thread while the current
    one is written (the database works without the interpreter lock meanwhile), so at most two batches are in
    memory."""
    from tqdm import tqdm  # only here: the other commands start faster without it

    bot = app[BOT]
    report = ImportReport()
    file = Path(path)
    size = (await asyncio.to_thread(file.stat)).st_size
    handle = await asyncio.to_thread(file.open, "rb")
    interactive = sys.stderr.isatty()
    with handle, tqdm(total=size, unit="B", unit_scale=True, desc="导入消息", disable=not interactive) as bar:
        parsed = await asyncio.to_thread(_parse, handle, batch_size, 1)
        number = 1
        while parsed.lines:
            number += parsed.lines
            ahead = asyncio.ensure_future(asyncio.to_thread(_parse, handle, batch_size, number))
            report.rejected += parsed.rejected
            try:
                if parsed.messages:
                    result = await archive_batch(bot, parsed.messages)
                    report.imported += len(result.new)
                    report.duplicates += result.duplicates
            except BaseException:
                await asyncio.wait([ahead])  # the file stays open until the read ahead is over
                raise
            bar.update(parsed.size)
            parsed = await ahead
    return report.summary()

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
from bot.context import Services
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


def _read_lines(handle: IO[bytes], count: int) -> list[bytes]:
    lines = []
    for line in handle:
        lines.append(line)
        if len(lines) >= count:
            break
    return lines


async def import_jsonl(app: web.Application, path: str | Path, batch_size: int = IMPORT_BATCH) -> str:
    """Import ``path`` (JSON Lines as described above); returns the report for the admin."""
    from tqdm import tqdm  # only here: the other commands start faster without it

    bot = app[BOT]
    report = ImportReport()
    file = Path(path)
    size = (await asyncio.to_thread(file.stat)).st_size
    handle = await asyncio.to_thread(file.open, "rb")
    batch: list[IncomingMessage] = []
    number = 0
    interactive = sys.stderr.isatty()
    with handle, tqdm(total=size, unit="B", unit_scale=True, desc="导入消息", disable=not interactive) as bar:
        while lines := await asyncio.to_thread(_read_lines, handle, batch_size):
            for raw in lines:
                number += 1
                bar.update(len(raw))
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                    if not isinstance(record, dict):
                        raise NotArchivable("not a JSON object")
                    batch.append(normalize_record(record))
                except ValueError as exc:  # NotArchivable and JSON / UTF-8 errors
                    reason = "invalid JSON" if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError) else str(exc)
                    report.rejected.append((number, reason))
            if len(batch) >= batch_size:
                await _flush(bot, batch, report)
        await _flush(bot, batch, report)
    return report.summary()


async def _flush(bot: Services, batch: list[IncomingMessage], report: ImportReport) -> None:
    if batch:
        result = await archive_batch(bot, batch)
        report.imported += len(result.new)
        report.duplicates += result.duplicates
        batch.clear()

"""One export, from the chat or the command line: whose data it covers (``filters_for``), and the workbook of one
kind written to a file (``export_to_file``) or to bytes (``export_to_bytes``)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from datetime import datetime
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo

from handlers.exports.report import REPORT_SHEETS
from handlers.exports.sheets import DATA_SHEETS, Filters
from handlers.exports.workbook import Book, Column, write_sheet
from handlers.pipeline.funnel import scope_of
from models.staff import Role, Staff

REPORT = "report"
KINDS: tuple[str, ...] = (*DATA_SHEETS, REPORT)


class ExportRefused(Exception):
    """The export asked for is not allowed or makes no sense; the message is one line for the person."""


async def team_of(lead: Staff) -> list[int]:
    """A manager and their direct reports."""
    reports = await Staff.filter(manager_id=lead.id).values_list("id", flat=True)
    return [lead.id, *(int(str(i)) for i in reports)]


async def filters_for(asker: Staff | None, team: Staff | None = None, since: datetime | None = None) -> Filters:
    """What ``asker`` may export (None: an administrator at the command line, everything), limited to ``team``'s
    people when given: a rep their own data, a manager their team's, directors and admins everyone's."""
    owner_ids = None if asker is None else (await scope_of(asker)).owner_ids
    if team is not None:
        members = await team_of(team)
        if team.role == Role.REP and len(members) == 1:
            raise ExportRefused(f"「{team.name}」不是主管，没有团队 is not a manager: --team names a manager")
        if owner_ids is not None and not set(members) <= set(owner_ids):
            raise ExportRefused(f"「{team.name}」的团队不在您的数据范围内 team outside the data scope of --as")
        owner_ids = members
    return Filters(owner_ids, since)


async def write_export(kind: str, target: Path | IO[bytes], filters: Filters, tz: ZoneInfo) -> int:
    """Write the workbook of ``kind`` to ``target``; how many data rows it has."""
    book = Book(tz)
    if kind == REPORT:
        for sheet in REPORT_SHEETS:
            book.sheet(sheet.title, sheet.columns)
            book.append(await sheet.rows(filters))
    else:
        data = DATA_SHEETS[kind]
        extra = await data.extra(filters)
        columns = (*data.columns, *(Column(name, 14) for name in extra))
        await write_sheet(book, data.title, columns, data.rows(filters, extra))
    await asyncio.to_thread(book.save, target)
    return book.rows


async def export_to_file(kind: str, path: Path, filters: Filters, tz: ZoneInfo) -> int:
    """Write the workbook beside ``path`` and move it there when complete: a failed export leaves no half file."""
    partial = path.with_name(path.name + ".part")
    try:
        rows = await write_export(kind, partial, filters, tz)
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return rows


async def export_to_bytes(kind: str, filters: Filters, tz: ZoneInfo) -> tuple[bytes, int]:
    out = io.BytesIO()
    rows = await write_export(kind, out, filters, tz)
    return out.getvalue(), rows

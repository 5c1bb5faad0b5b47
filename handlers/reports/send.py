"""The one place a report leaves: its markdown summary with its chart (the funnel, the five metrics' trend, the
ranking) drawn as a PNG in a worker thread and stored as the reply's picture (``bot.files``), for a reply in chat
and for the scheduled push alike."""

from __future__ import annotations

from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient

import handlers.reports.summary as summary
from bot.files import store_file
from bot.types import Attachment, Reply


async def chart_png(report: summary.Report) -> bytes:
    """The report's chart as PNG bytes."""
    from handlers.reports.charts import render_in_thread  # start-up time: matplotlib only where a chart is drawn

    return await render_in_thread(summary.chart_data(report))


async def store_chart(report: summary.Report, png: bytes, now: datetime, conn: BaseDBAsyncClient | None) -> Attachment:
    """The report's chart (drawn by ``chart_png``), stored to be sent as a picture."""
    name = f"{summary.KIND_LABELS[report.kind]}-{report.period.start:%Y%m%d}.png"
    return await store_file(name, png, "image/png", now=now, using_db=conn)


async def report_reply(report: summary.Report, now: datetime, conn: BaseDBAsyncClient | None) -> Reply:
    """The report as one reply: the summary, and the chart as its picture."""
    attachment = await store_chart(report, await chart_png(report), now, conn)
    return Reply(summary.text(report), kind="markdown", attachments=(attachment,))

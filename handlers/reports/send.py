"""The one place a report leaves: its markdown summary, and its chart drawn as PNG bytes (in a worker thread)."""

from __future__ import annotations

from tortoise.backends.base.client import BaseDBAsyncClient

import handlers.reports.summary as summary
from bot.types import Reply


async def chart_png(report: summary.Report) -> bytes:
    """The report's chart (the funnel, the five metrics' trend, the ranking) as PNG bytes."""
    from handlers.reports.charts import render_in_thread  # start-up time: matplotlib only where a chart is drawn

    return await render_in_thread(summary.chart_data(report))


async def report_reply(report: summary.Report, conn: BaseDBAsyncClient | None) -> Reply:
    """The report as one reply."""
    return Reply.markdown(summary.text(report))

"""The weekly and monthly reports pushed to every manager by the scheduled-rules engine.

From ``[reports] weekly_weekday`` at ``weekly_at`` (Monday 09:00 by default) each active manager gets the report of
their team's last complete week, and from ``monthly_day`` at ``monthly_at`` (the 1st, 09:00) the last complete
month's, within ``push_window_minutes`` of that time (a report that could not leave by then, the bot being down,
is stale and skipped). The firing key is ``weekly_report:<manager id>:<that moment>``, so each manager gets one per
period however often the rules run (``crmbot jobs run --now`` included); the engine's quiet hours apply, and a
report is never folded into a digest. A report is computed, and its chart drawn (in a worker thread), only for the
managers who have not had it yet, while the pass still only reads; the chart is stored by the firing's side effect,
once its key is new.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime, time, timedelta

import handlers.reports.summary as summary
from bot.config import Settings
from bot.context import Firing, RuleContext
from handlers.reports.capability import capability
from handlers.reports.send import chart_png, store_chart
from models.reminders import RuleFiring
from models.staff import Role, Staff


def weekly_moment(now: datetime, settings: Settings) -> datetime:
    """The latest ``weekly_weekday`` ``weekly_at`` (local) at or before ``now``."""
    tz = settings.tz
    today = now.astimezone(tz).date()
    day = today - timedelta(days=(today.isoweekday() - settings.reports.weekly_weekday) % 7)
    moment = datetime.combine(day, settings.reports.weekly_at, tzinfo=tz)
    return moment if moment <= now else moment - timedelta(days=7)


def monthly_moment(now: datetime, settings: Settings) -> datetime:
    """The latest ``monthly_day`` of a month at ``monthly_at`` (local) at or before ``now``."""
    tz = settings.tz
    today = now.astimezone(tz).date()
    at: time = settings.reports.monthly_at
    moment = datetime.combine(today.replace(day=settings.reports.monthly_day), at, tzinfo=tz)
    if moment > now:
        first = today.replace(day=1) - timedelta(days=1)
        moment = datetime.combine(date(first.year, first.month, settings.reports.monthly_day), at, tzinfo=tz)
    return moment


async def _reports(ctx: RuleContext, rule: str, kind: summary.Kind, moment: datetime) -> list[Firing]:
    if ctx.now >= moment + timedelta(minutes=ctx.settings.reports.push_window_minutes):
        return []
    fired = await RuleFiring.filter(rule=rule, period_at=moment).values_list("staff_id", flat=True)
    told = {int(str(staff_id)) for staff_id in fired}
    firings = []
    for manager in await Staff.filter(role=Role.MANAGER, active=True).order_by("id"):
        if manager.id in told:
            continue
        report = await summary.build(ctx.bot, manager, kind, ctx.now)
        png = await chart_png(report)  # drawn while the pass only reads: SQLite's write lock is not held yet
        key = f"{rule}:{manager.id}:{moment.isoformat()}"
        firing = Firing(rule, key, manager, summary.text(report), period_at=moment, alone=True)
        firing.apply = _with_chart(firing, report, png, ctx.now)
        firings.append(firing)
    return firings


def _with_chart(firing: Firing, report: summary.Report, png: bytes, now: datetime) -> Callable[[], Awaitable[None]]:
    """The firing's side effect, run once when its key is new: store the chart and attach it."""

    async def attach() -> None:
        firing.attachments = (await store_chart(report, png, now, None),)

    return attach


@capability.rule(order=170)
async def weekly_report(ctx: RuleContext) -> list[Firing]:
    """Each manager's weekly report, once per week."""
    return await _reports(ctx, "weekly_report", "week", weekly_moment(ctx.now, ctx.settings))


@capability.rule(order=175)
async def monthly_report(ctx: RuleContext) -> list[Firing]:
    """Each manager's monthly report, once per month."""
    return await _reports(ctx, "monthly_report", "month", monthly_moment(ctx.now, ctx.settings))

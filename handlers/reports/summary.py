"""The weekly and monthly report of one staff member's scope: a markdown summary (health with its lights, the change
from the period before, the funnel, data quality, NPS, the customers at risk, the ranking, the dashboard link) and
the chart's data, computed once for the chat reply, the scheduled push and the dashboard alike."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import handlers.pipeline.deals as deals
from bot.context import Services
from handlers.nps.report import Period
from handlers.pipeline.funnel import Funnel, Scope, compute_funnel, scope_of
from handlers.reports.chartdata import ChartData
from handlers.reports.health import (
    Health,
    Quality,
    Ranked,
    health,
    month_of,
    quality,
    rep_ranking,
    trend,
    week_of,
)
from handlers.reports.links import dashboard_link
from handlers.reports.risk import CustomerHealth, at_risk
from models.customers import STAGE_LABELS
from models.staff import Staff

Kind = Literal["week", "month"]
KIND_LABELS: dict[str, str] = {"week": "周报", "month": "月报"}
PERCENT_METRICS = ("conversion", "aov_growth", "sla", "activity")


@dataclass
class Report:
    kind: Kind
    scope: Scope
    period: Period
    health: Health
    before: Health
    funnel: Funnel
    quality: Quality
    risky: list[CustomerHealth]
    risky_total: int
    ranking: list[Ranked]
    history: list[Health]  # the trend, oldest first, ending with ``health``
    link: str


def periods(kind: Kind, now: datetime, services: Services, count: int) -> list[Period]:
    """The last ``count`` complete weeks or months before ``now``, oldest first."""
    of = week_of if kind == "week" else month_of
    return [of(now, services.settings, back) for back in range(count, 0, -1)]


async def build(services: Services, staff: Staff, kind: Kind, now: datetime) -> Report:
    """The report of ``staff``'s scope for the last complete week or month as of ``now``."""
    settings = services.settings
    scope = await scope_of(staff)
    history = await trend(scope, settings, now, periods(kind, now, services, settings.reports.trend_periods))
    period = history[-1].period
    risky, total = await at_risk(services, scope, now, settings.reports.at_risk_shown)
    return Report(
        kind=kind,
        scope=scope,
        period=period,
        health=history[-1],
        before=history[-2] if len(history) > 1 else await health(scope, period, settings, now),
        funnel=await compute_funnel(scope, None, settings, now),
        quality=await quality(scope, period, settings, now),
        risky=risky,
        risky_total=total,
        ranking=await rep_ranking(scope, period, settings, now) if scope.owner_ids != [staff.id] else [],
        history=history,
        link=dashboard_link(settings, staff, now),
    )


def _delta(now: int | None, before: int | None) -> str:
    if now is None or before is None:
        return ""
    return f"（较上期 {now - before:+d}）"


def text(report: Report) -> str:
    """The markdown summary."""
    h = report.health
    score = "暂无数据" if h.score is None else f"{h.score} 分{_delta(h.score, report.before.score)}"
    lines = [
        f"**📋 {report.scope.label}{KIND_LABELS[report.kind]}（{report.period.label}）**",
        f"健康度：{h.light} {score}",
    ]
    lines.extend(f"> {m.light} {m.label}：{m.shown()}（{m.detail}）" for m in h.metrics.values())
    open_rows = list(report.funnel.rows.values())
    lines.append(
        f"漏斗：进行中 {sum(r.count for r in open_rows)} 个 {deals.yuan(sum(r.amount for r in open_rows))}"
        f"（{' / '.join(f'{STAGE_LABELS[r.stage]} {r.count}' for r in open_rows)}）"
    )
    lines.append("数据质量：" + "，".join(f"{m.light} {m.label} {m.shown()}" for m in report.quality.checks.values()))
    if report.risky:
        names = "、".join(f"{r.customer.name}（{r.score}）" for r in report.risky[:3])
        lines.append(f"风险客户 {report.risky_total} 个：{names}，发送「风险客户」查看")
    else:
        lines.append("风险客户：无")
    if report.ranking:
        top = "、".join(f"{r.staff.name} {'—' if r.score is None else r.score}" for r in report.ranking[:5])
        lines.append(f"销售健康度排名：{top}")
    lines.append(f"[打开看板]({report.link})")
    return "\n".join(lines)


def chart_data(report: Report) -> ChartData:
    """What the chart draws: the funnel now, each metric per period (rates in %, NPS in points), the ranking."""
    trend: dict[str, list[float | None]] = {}
    for h in report.history:
        for key, metric in h.metrics.items():
            value = metric.value
            if value is not None and key in PERCENT_METRICS:
                value = round(value * 100, 1)
            trend.setdefault(metric.label, []).append(value)
    return ChartData(
        title=f"{report.scope.label}{KIND_LABELS[report.kind]} {report.period.label}",
        funnel=[(STAGE_LABELS[r.stage], r.count) for r in report.funnel.rows.values()],
        periods=[h.period.label for h in report.history],
        trend=trend,
        ranking=[(r.staff.name, r.score) for r in report.ranking],
    )

"""The health model of a scope (a rep's own customers, a manager's team, the company) over a period: the five
metrics computed in SQL from the records, a traffic light per metric from ``[reports] thresholds`` and a weighted
score from ``[reports] weights``; the data-quality checks; the NPS ranking and the reps' ranking.

The definitions (numerator, denominator, period rule) are the README's "Health model" section, word for word in
the docstrings of the functions that compute them. A period is ``[start, end)`` in local time; the previous period
is the calendar month (or quarter, or year) before a calendar one, else the same length just before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from bot import sql
from bot.config import Settings
from handlers.nps.report import Period, Tally, compute
from handlers.pipeline.funnel import Scope
from models.customers import Stage
from models.opportunities import FUNNEL
from models.staff import Role, Staff
from models.tickets import TicketStatus

METRIC_LABELS: dict[str, str] = {
    "conversion": "线索转化率",
    "aov_growth": "客单价增长率",
    "sla": "售后响应时效",
    "nps": "NPS",
    "activity": "员工使用活跃度",
}
QUALITY_LABELS: dict[str, str] = {
    "completeness": "资料完整度",
    "updates": "商机及时更新",
    "closure": "工单关闭率",
}
FIELD_LABELS: dict[str, str] = {
    "industry": "行业",
    "grade": "等级",
    "contract_end": "合同到期",
    "contact": "联系人",
    "phone": "联系电话",
    "next_followup_at": "下次跟进",
}
GREEN, YELLOW, RED, NONE = "🟢", "🟡", "🔴", "⚪"
LIGHT_POINTS = {GREEN: 100, YELLOW: 60, RED: 20}
# Stages past 潜在: a deal that entered one of them converted.
CONVERTED_STAGES = tuple(s.value for s in FUNNEL if s != Stage.LEAD)


@dataclass
class Metric:
    key: str
    value: float | None  # None: no data in the period
    numerator: float = 0.0
    denominator: float = 0.0
    detail: str = ""
    light: str = NONE

    @property
    def label(self) -> str:
        return METRIC_LABELS.get(self.key) or QUALITY_LABELS.get(self.key, self.key)

    def shown(self) -> str:
        """The value as a person reads it."""
        if self.value is None:
            return "暂无数据"
        if self.key == "nps":
            return f"{self.value:+.0f}"
        if self.key == "aov_growth":
            return f"{self.value:+.1%}"
        return f"{self.value:.0%}"


@dataclass
class Health:
    scope: Scope
    period: Period
    metrics: dict[str, Metric] = field(default_factory=dict)
    score: int | None = None

    @property
    def light(self) -> str:
        return score_light(self.score)


def score_light(score: int | None) -> str:
    if score is None:
        return NONE
    return GREEN if score >= 80 else YELLOW if score >= 60 else RED


def light_of(value: float | None, thresholds: tuple[float, float]) -> str:
    """🟢 at or above the green threshold, 🟡 at or above the yellow one, else 🔴; ⚪ without data."""
    if value is None:
        return NONE
    green, yellow = thresholds
    return GREEN if value >= green else YELLOW if value >= yellow else RED


def weighted_score(metrics: dict[str, Metric], weights: dict[str, float]) -> int | None:
    """Σ weight × points of the light (🟢 100, 🟡 60, 🔴 20) over the metrics that have data, ÷ Σ of their
    weights; None when no metric has data."""
    scored = [(weights.get(k, 0.0), LIGHT_POINTS[m.light]) for k, m in metrics.items() if m.light in LIGHT_POINTS]
    total = sum(w for w, _ in scored)
    if not scored or total <= 0:
        return None
    return int(sum(w * p for w, p in scored) / total + 0.5)


# -- periods ---------------------------------------------------------------------------------------------------------


def _months_between(start: date, end: date) -> int | None:
    """Whole calendar months from ``start`` to ``end`` when both are first days of a month, else None."""
    if start.day != 1 or end.day != 1:
        return None
    return (end.year - start.year) * 12 + end.month - start.month


def _add_months(d: date, months: int) -> date:
    index = d.year * 12 + d.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def previous(period: Period, settings: Settings) -> Period:
    """The period just before: the previous calendar month(s) for a calendar period, else the same length."""
    tz = settings.tz
    start, end = period.start.astimezone(tz), period.end.astimezone(tz)
    months = _months_between(start.date(), end.date())
    if months and start.time() == time(0) and end.time() == time(0):
        first = _add_months(start.date(), -months)
        return Period(datetime.combine(first, time(0), tzinfo=tz), period.start, f"{first.year}年{first.month}月")
    length = period.end - period.start
    return Period(period.start - length, period.start, "上一期")


def month_of(moment: datetime, settings: Settings, back: int = 0) -> Period:
    """The calendar month ``back`` months before the one ``moment`` falls in (local time)."""
    tz = settings.tz
    first = _add_months(moment.astimezone(tz).date().replace(day=1), -back)
    return Period(
        datetime.combine(first, time(0), tzinfo=tz),
        datetime.combine(_add_months(first, 1), time(0), tzinfo=tz),
        f"{first.year}年{first.month}月",
    )


def week_of(moment: datetime, settings: Settings, back: int = 0) -> Period:
    """The Monday-to-Sunday week ``back`` weeks before the one ``moment`` falls in (local time)."""
    tz = settings.tz
    today = moment.astimezone(tz).date()
    monday = today - timedelta(days=today.weekday() + 7 * back)
    start = datetime.combine(monday, time(0), tzinfo=tz)
    sunday = monday + timedelta(days=6)
    return Period(start, start + timedelta(days=7), f"{monday:%m-%d}~{sunday:%m-%d}")


# -- SQL helpers -----------------------------------------------------------------------------------------------------


def _owners(column: str, scope: Scope) -> tuple[str, list[Any]]:
    if scope.owner_ids is None:
        return "", []
    return f" AND {column} IN ({', '.join('?' for _ in scope.owner_ids)})", list(scope.owner_ids)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


async def _one(query: str, params: list[Any]) -> dict[str, Any]:
    rows = await sql.select(sql.default(), query, params)
    return rows[0] if rows else {}


def _num(value: Any) -> float:
    return float(value or 0)


# The rows of a metric's query: the scope's total (key None), or one row per owner (``by_owner``: the ranking's).
Rows = dict[int | None, dict[str, Any]]


async def _rows(query: str, params: list[Any], owner: str | None, by_owner: bool) -> Rows:
    """``query`` (``SELECT {head}… WHERE …{tail}``) for the scope's total, or grouped by the ``owner`` column."""
    if not by_owner or owner is None:
        return {None: await _one(query.format(head="", tail=""), params)}
    rows = await sql.select(sql.default(), query.format(head=f"{owner} AS owner, ", tail=f" GROUP BY {owner}"), params)
    return {int(r["owner"]): r for r in rows if r["owner"] is not None}


# -- the five metrics ------------------------------------------------------------------------------------------------


async def conversion_rows(scope: Scope, period: Period, by_owner: bool = False) -> dict[int | None, Metric]:
    """线索转化率 = deals of the scope created in the period that entered a stage past 潜在 (stage history) before
    the period's end ÷ deals of the scope created in the period."""
    owners, params = _owners("o.owner_id", scope)
    stages = ", ".join("?" for _ in CONVERTED_STAGES)
    rows = await _rows(
        "SELECT {head}COUNT(*) AS n, SUM(CASE WHEN EXISTS (SELECT 1 FROM opportunity_stage s"
        f" WHERE s.opportunity_id = o.id AND s.stage IN ({stages}) AND s.entered_at < ?) THEN 1 ELSE 0 END)"
        f" AS converted FROM opportunity o WHERE o.created_at >= ? AND o.created_at < ?{owners}{{tail}}",
        [*CONVERTED_STAGES, _utc(period.end), _utc(period.start), _utc(period.end), *params],
        "o.owner_id",
        by_owner,
    )
    metrics = {}
    for key, row in rows.items():
        n, converted = _num(row.get("n")), _num(row.get("converted"))
        metrics[key] = Metric(
            "conversion", converted / n if n else None, converted, n, f"{converted:.0f}/{n:.0f} 个商机"
        )
    return metrics


async def conversion(scope: Scope, period: Period) -> Metric:
    return (await conversion_rows(scope, period))[None]


async def order_values(
    scope: Scope, period: Period, settings: Settings, by_owner: bool = False
) -> dict[int | None, tuple[float, float]]:
    """(amount, customers) of the period: won deals closed in it (by the deal's owner), or with ``aov_source =
    "orders"`` the orders dated in it that were not cancelled (by the customer's owner)."""
    if settings.reports.aov_source == "orders":
        owners, params = _owners("c.owner_id", scope)
        tz = settings.tz
        rows = await _rows(
            "SELECT {head}SUM(r.total) AS amount, COUNT(DISTINCT r.customer_id) AS customers FROM customer_order r"
            " JOIN customer c ON c.id = r.customer_id WHERE r.status <> 'cancelled' AND r.order_date >= ?"
            f" AND r.order_date < ?{owners}{{tail}}",
            [period.start.astimezone(tz).date(), period.end.astimezone(tz).date(), *params],
            "c.owner_id",
            by_owner,
        )
    else:
        owners, params = _owners("o.owner_id", scope)
        rows = await _rows(
            "SELECT {head}SUM(o.amount) AS amount, COUNT(DISTINCT o.customer_id) AS customers FROM opportunity o"
            f" WHERE o.stage = 'won' AND o.closed_at >= ? AND o.closed_at < ?{owners}{{tail}}",
            [_utc(period.start), _utc(period.end), *params],
            "o.owner_id",
            by_owner,
        )
    return {key: (_num(row.get("amount")), _num(row.get("customers"))) for key, row in rows.items()}


async def aov_growth_rows(
    scope: Scope, period: Period, settings: Settings, by_owner: bool = False
) -> dict[int | None, Metric]:
    """客单价增长率 = (客单价 of the period − 客单价 of the previous period) ÷ 客单价 of the previous period, where
    客单价 = amount won ÷ distinct customers it was won from; none when either period has no sale."""
    now_values = await order_values(scope, period, settings, by_owner)
    before_values = await order_values(scope, previous(period, settings), settings, by_owner)
    metrics = {}
    for key in {*now_values, *before_values}:
        amount, customers = now_values.get(key, (0.0, 0.0))
        before_amount, before_customers = before_values.get(key, (0.0, 0.0))
        now_aov = amount / customers if customers else None
        before_aov = before_amount / before_customers if before_customers else None
        growth = (now_aov - before_aov) / before_aov if now_aov is not None and before_aov else None
        detail = f"本期 {_yuan(now_aov)} / 上期 {_yuan(before_aov)}"
        metrics[key] = Metric("aov_growth", growth, now_aov or 0.0, before_aov or 0.0, detail)
    return metrics


async def aov_growth(scope: Scope, period: Period, settings: Settings) -> Metric:
    return (await aov_growth_rows(scope, period, settings))[None]


def _yuan(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 10000:.1f}万" if value >= 10000 else f"{value:.0f}元"


async def sla_rows(scope: Scope, period: Period, now: datetime, by_owner: bool = False) -> dict[int | None, Metric]:
    """售后响应时效 = tickets of the scope's customers created in the period whose first response came by its due
    time ÷ those tickets that can be judged at ``now`` (answered, or unanswered and past due)."""
    owners, params = _owners("c.owner_id", scope)
    rows = await _rows(
        "SELECT {head}COUNT(*) AS n, SUM(CASE WHEN t.first_responded_at IS NOT NULL"
        " AND t.first_responded_at <= t.first_response_due THEN 1 ELSE 0 END) AS met"
        " FROM ticket t JOIN customer c ON c.id = t.customer_id WHERE t.created_at >= ? AND t.created_at < ?"
        f" AND (t.first_responded_at IS NOT NULL OR t.first_response_due <= ?){owners}{{tail}}",
        [_utc(period.start), _utc(period.end), _utc(now), *params],
        "c.owner_id",
        by_owner,
    )
    metrics = {}
    for key, row in rows.items():
        n, met = _num(row.get("n")), _num(row.get("met"))
        metrics[key] = Metric("sla", met / n if n else None, met, n, f"{met:.0f}/{n:.0f} 张工单按时首次响应")
    return metrics


async def sla(scope: Scope, period: Period, now: datetime) -> Metric:
    return (await sla_rows(scope, period, now))[None]


def nps_metric(tally: Tally) -> Metric:
    """NPS = % promoters (9–10) − % detractors (0–6) of the surveys answered in the period whose customer the scope
    owned when surveyed."""
    value = tally.nps
    return Metric(
        "nps",
        float(value) if value is not None else None,
        tally.promoters - tally.detractors,
        tally.answered,
        f"{tally.answered} 份答卷",
    )


async def nps(scope: Scope, period: Period) -> Metric:
    return nps_metric((await compute(period, scope.owner_ids)).overall)


async def reps_of(scope: Scope) -> list[Staff]:
    """The active reps (role rep) of the scope."""
    query = Staff.filter(active=True, role=Role.REP)
    if scope.owner_ids is not None:
        query = query.filter(id__in=scope.owner_ids)
    return list(await query.order_by("id"))


async def messages_by_rep(reps: list[Staff], period: Period) -> dict[int, int]:
    """Messages each of ``reps`` sent the bot in the period (reps who sent none are absent)."""
    if not reps:
        return {}
    rows = await sql.select(
        sql.default(),
        "SELECT m.staff_id AS staff_id, COUNT(*) AS n FROM message m WHERE m.to_bot = ? AND m.sent_at >= ?"
        f" AND m.sent_at < ? AND m.staff_id IN ({', '.join('?' for _ in reps)}) GROUP BY m.staff_id",
        [True, _utc(period.start), _utc(period.end), *(r.id for r in reps)],
    )
    return {int(r["staff_id"]): int(r["n"]) for r in rows}


def activity_metric(reps: int, sent: dict[int, int]) -> Metric:
    """员工使用活跃度 = active reps of the scope who sent the bot at least one message in the period ÷ active reps
    of the scope; the detail is the messages sent to the bot per active rep."""
    if not reps:
        return Metric("activity", None, detail="没有销售")
    active, handled = len(sent), sum(sent.values())
    per_rep = handled / active if active else 0.0
    return Metric("activity", active / reps, active, reps, f"{active}/{reps} 人活跃，人均 {per_rep:.1f} 条")


async def activity(scope: Scope, period: Period) -> Metric:
    reps = await reps_of(scope)
    return activity_metric(len(reps), await messages_by_rep(reps, period))


def _scored(result: Health, metrics: list[Metric], settings: Settings) -> Health:
    for metric in metrics:
        metric.light = light_of(metric.value, settings.reports.thresholds[metric.key])
        result.metrics[metric.key] = metric
    result.score = weighted_score(result.metrics, settings.reports.weights)
    return result


async def health(scope: Scope, period: Period, settings: Settings, now: datetime) -> Health:
    """The five metrics of ``scope`` in ``period``, their lights and the weighted score."""
    metrics = [
        await conversion(scope, period),
        await aov_growth(scope, period, settings),
        await sla(scope, period, now),
        await nps(scope, period),
        await activity(scope, period),
    ]
    return _scored(Health(scope, period), metrics, settings)


def health_text(h: Health) -> str:
    score = "暂无数据" if h.score is None else f"{h.score} 分"
    lines = [f"🩺 {h.scope.label}健康度（{h.period.label}）：{h.light} {score}"]
    for metric in h.metrics.values():
        lines.append(f"{metric.light} {metric.label}：{metric.shown()}（{metric.detail}）")
    return "\n".join(lines)


# -- data quality ----------------------------------------------------------------------------------------------------

_FILLED: dict[str, str] = {
    "industry": "c.industry <> ''",
    "grade": "c.grade <> ''",
    "contract_end": "c.contract_end IS NOT NULL",
    "next_followup_at": "c.next_followup_at IS NOT NULL",
    "contact": "EXISTS (SELECT 1 FROM contact k WHERE k.customer_id = c.id)",
    "phone": "EXISTS (SELECT 1 FROM contact k WHERE k.customer_id = c.id AND k.phone <> '')",
}


@dataclass
class Quality:
    scope: Scope
    period: Period
    checks: dict[str, Metric] = field(default_factory=dict)
    missing: list[tuple[str, int]] = field(default_factory=list)  # (field, customers missing it), most first


async def completeness(scope: Scope, settings: Settings) -> tuple[Metric, list[tuple[str, int]]]:
    """资料完整度 = required fields filled over the scope's customers ÷ (customers × required fields), now; and
    per required field the customers missing it."""
    wanted = settings.reports.required_fields
    owners, params = _owners("c.owner_id", scope)
    sums = "".join(f", SUM(CASE WHEN {_FILLED[f]} THEN 1 ELSE 0 END) AS f_{f}" for f in wanted)
    row = await _one(f"SELECT COUNT(*) AS n{sums} FROM customer c WHERE 1 = 1{owners}", params)
    n = int(_num(row.get("n")))
    filled = {f: int(_num(row.get(f"f_{f}"))) for f in wanted}
    slots = n * len(wanted)
    done = sum(filled.values())
    missing = sorted(((f, n - k) for f, k in filled.items() if n - k > 0), key=lambda p: (-p[1], wanted.index(p[0])))
    metric = Metric("completeness", done / slots if slots else None, done, slots, f"{n} 个客户，{len(wanted)} 项必填")
    return metric, missing


async def timely_updates(scope: Scope, settings: Settings, now: datetime) -> Metric:
    """商机及时更新 = the scope's open deals whose stage changed, or whose customer was followed up, within the last
    ``update_days`` days ÷ the scope's open deals, now."""
    owners, params = _owners("o.owner_id", scope)
    cut = _utc(now - timedelta(days=settings.reports.update_days))
    open_stages = [s.value for s in FUNNEL if s != Stage.WON]
    marks = ", ".join("?" for _ in open_stages)
    row = await _one(
        "SELECT COUNT(*) AS n, SUM(CASE WHEN o.stage_entered_at >= ? OR c.last_followup_at >= ? THEN 1 ELSE 0 END)"
        f" AS fresh FROM opportunity o JOIN customer c ON c.id = o.customer_id WHERE o.stage IN ({marks}){owners}",
        [cut, cut, *open_stages, *params],
    )
    n, fresh = _num(row.get("n")), _num(row.get("fresh"))
    days = settings.reports.update_days
    return Metric("updates", fresh / n if n else None, fresh, n, f"{fresh:.0f}/{n:.0f} 个进行中商机 {days} 天内有更新")


async def closure(scope: Scope, period: Period) -> Metric:
    """工单关闭率 = tickets of the scope's customers created in the period that are resolved or closed now ÷ tickets
    of the scope's customers created in the period."""
    owners, params = _owners("c.owner_id", scope)
    row = await _one(
        "SELECT COUNT(*) AS n, SUM(CASE WHEN t.status IN (?, ?) THEN 1 ELSE 0 END) AS done FROM ticket t"
        f" JOIN customer c ON c.id = t.customer_id WHERE t.created_at >= ? AND t.created_at < ?{owners}",
        [TicketStatus.RESOLVED.value, TicketStatus.CLOSED.value, _utc(period.start), _utc(period.end), *params],
    )
    n, done = _num(row.get("n")), _num(row.get("done"))
    return Metric("closure", done / n if n else None, done, n, f"{done:.0f}/{n:.0f} 张工单已解决或关闭")


async def quality(scope: Scope, period: Period, settings: Settings, now: datetime) -> Quality:
    result = Quality(scope, period)
    filled, result.missing = await completeness(scope, settings)
    for metric in (filled, await timely_updates(scope, settings, now), await closure(scope, period)):
        metric.light = light_of(metric.value, settings.reports.quality_thresholds[metric.key])
        result.checks[metric.key] = metric
    return result


def quality_text(q: Quality) -> str:
    lines = [f"🧹 {q.scope.label}数据质量（工单按{q.period.label}）"]
    for metric in q.checks.values():
        lines.append(f"{metric.light} {metric.label}：{metric.shown()}（{metric.detail}）")
    if q.missing:
        lines.append("缺得最多：" + "、".join(f"{FIELD_LABELS[f]} {n} 个客户" for f, n in q.missing[:3]))
    return "\n".join(lines)


# -- rankings --------------------------------------------------------------------------------------------------------


@dataclass
class Ranked:
    staff: Staff
    score: int | None
    nps: Tally


async def rep_ranking(scope: Scope, period: Period, settings: Settings, now: datetime) -> list[Ranked]:
    """Each active rep of the scope with their own health score (the same five metrics, each query grouped by
    owner once for all of them) and NPS tally, best score first."""
    reps = await reps_of(scope)
    if not reps:
        return []
    group = Scope("", [r.id for r in reps])
    conversions = await conversion_rows(group, period, by_owner=True)
    growths = await aov_growth_rows(group, period, settings, by_owner=True)
    slas = await sla_rows(group, period, now, by_owner=True)
    tallies = (await compute(period, group.owner_ids)).by_rep
    sent = await messages_by_rep(reps, period)
    ranked = []
    for rep in reps:
        metrics = [
            conversions.get(rep.id) or Metric("conversion", None),
            growths.get(rep.id) or Metric("aov_growth", None),
            slas.get(rep.id) or Metric("sla", None),
            nps_metric(tallies.get(rep.id, Tally())),
            activity_metric(1, {rep.id: sent[rep.id]} if rep.id in sent else {}),
        ]
        own = _scored(Health(Scope(rep.name, [rep.id]), period), metrics, settings)
        ranked.append(Ranked(rep, own.score, tallies.get(rep.id, Tally())))
    ranked.sort(key=lambda r: (r.score is None, -(r.score or 0), r.staff.id))
    return ranked


async def nps_ranking(scope: Scope, period: Period) -> list[tuple[Staff, Tally]]:
    """The scope's staff with NPS answers in the period, highest NPS first (ties: more answers first)."""
    report = await compute(period, scope.owner_ids)
    staff = {s.id: s for s in await Staff.filter(id__in=list(report.by_rep)).order_by("id")}
    rows = [(staff[i], t) for i, t in report.by_rep.items() if i in staff and t.answered]
    rows.sort(key=lambda p: (-(p[1].nps or 0), -p[1].answered, p[0].id))
    return rows


def nps_ranking_text(scope: Scope, period: Period, rows: list[tuple[Staff, Tally]]) -> str:
    lines = [f"🏅 {scope.label} NPS 排名（{period.label}）"]
    if not rows:
        lines.append("本期还没有答卷。")
    for place, (member, tally) in enumerate(rows, 1):
        lines.append(f"{place}. {member.name}：{tally.line()}")
    return "\n".join(lines)


async def trend(scope: Scope, settings: Settings, now: datetime, periods: list[Period]) -> list[Health]:
    """The health of ``scope`` in each of ``periods`` (oldest first)."""
    return [await health(scope, p, settings, now) for p in periods]

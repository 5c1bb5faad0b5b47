"""The funnel and performance in chat: ``漏斗`` / ``销售漏斗 本季度`` (per stage: deals, amount, weighted amount,
conversion to the next stage, median days spent; stalled deals with their owner), ``本月业绩`` (won against target,
forecast of the weighted pipeline closing in the rest of the period) and ``目标 张三 本月 200万`` (a manager sets a
rep's monthly target). Each reads the asker's scope: a rep their own deals, a manager the team's, directors and
admins the company's.

Conversion counts a deal as having reached a stage when it ever entered it or a later one (``Opportunity.reached``),
so a deal that skipped a stage still passed through it; days spent are the completed stays in the stage history,
their medians found through per-day counts kept as stays close (``StayCount``) rather than by reading them all.
The totals come from the counts kept per owner, stage and furthest stage (``FunnelCount``), and stalled deals from
the index on when each deal last moved, so that the company's funnel reads rows per owner and stage, not per deal;
a funnel of the deals opened in a period reads those deals.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

import handlers.pipeline.deals as deals
from bot import sql
from bot.config import Settings
from bot.context import Context, Slots
from bot.identity import find_staff
from bot.nlu.numbers import find_amount
from bot.nlu.reading import Reading, Result
from bot.rulekit import as_moment
from bot.types import IncomingMessage, Reply
from handlers.nps.report import Period, resolve_period
from handlers.pipeline.capability import capability
from models.customers import STAGE_LABELS, Stage
from models.opportunities import OPEN_STAGES, SLOTS_PER_DAY, Opportunity, SalesTarget, rank
from models.staff import Role, Staff

STALLED_SHOWN = 10
_FUNNEL = re.compile(r"漏斗|funnel|pipeline", re.I)
_PERFORMANCE = re.compile(r"业绩|完成率|达成率|performance", re.I)
_WRITE_CUE = re.compile(r"目标\s*\S*\s*\d|设置|设为|改成|改为")


# -- recognition -----------------------------------------------------------------------------------------------------


def period_slots(r: Reading) -> Slots:
    period = r.times.find_period(r.text, r.now)
    return {"period": period.value} if period else {}


@capability.command(re.compile(r"^(?:销售漏斗|漏斗|商机漏斗|funnel)(?:\s+|[:：]|$|(?=\S))", re.I), order=142)
def funnel_command(r: Reading, rest: str) -> Result:
    return "funnel", period_slots(r)


@capability.command(re.compile(r"^(?:设置?(?:销售|业绩)?目标|(?:销售|业绩)目标|目标)(?:\s+|[:：])", re.I), order=96)
def target_command(r: Reading, rest: str) -> Result:
    slots: Slots = {}
    if staff := r.vocabulary.staff_in(rest):
        slots["to_staff"] = staff[0].surface
    elif words := rest.split():
        slots["to_staff"] = words[0]
    if found := find_amount(rest):
        slots["amount"] = found.value
    return "set_target", {**slots, **period_slots(r)}


@capability.phrase(order=8)
def report_phrase(r: Reading) -> Result | None:
    """漏斗 / 本季度的销售漏斗 / 本月业绩 / 这个月业绩怎么样: reading only, never a write."""
    if _WRITE_CUE.search(r.text):
        return None
    if _FUNNEL.search(r.text):
        return "funnel", period_slots(r)
    if _PERFORMANCE.search(r.text):
        return "performance", period_slots(r)
    return None


# -- scope -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Whose deals a report covers, and how the report names them."""

    label: str
    owner_ids: list[int] | None  # None: the whole company


async def scope_of(staff: Staff) -> Scope:
    """A rep's own deals, a manager's and their reports', or (directors and admins) the company's."""
    if staff.role in (Role.DIRECTOR, Role.ADMIN):
        return Scope("全公司", None)
    if staff.role == Role.MANAGER:
        reports = await Staff.filter(manager_id=staff.id).values_list("id", flat=True)
        return Scope(f"{staff.name}团队", [staff.id, *(int(str(i)) for i in reports)])
    return Scope("我的", [staff.id])


# -- the funnel ------------------------------------------------------------------------------------------------------


@dataclass
class StageRow:
    stage: Stage
    count: int = 0
    amount: float = 0.0
    weighted: float = 0.0
    reached: int = 0  # deals that entered this stage or a later one
    conversion: float | None = None  # to the next stage
    median_days: float | None = None


@dataclass
class Funnel:
    rows: dict[Stage, StageRow] = field(default_factory=dict)
    won: StageRow = field(default_factory=lambda: StageRow(Stage.WON))
    lost: StageRow = field(default_factory=lambda: StageRow(Stage.LOST))
    stalled: list[StalledDeal] = field(default_factory=list)
    stalled_total: int = 0


def _where(scope: Scope, period: Period | None) -> tuple[str, list[Any]]:
    """SQL conditions on ``o`` (opportunity) for the deals in ``scope`` opened in ``period``."""
    clauses: list[str] = ["1 = 1"]
    params: list[Any] = []
    if scope.owner_ids is not None:
        clauses.append(f"o.owner_id IN ({', '.join('?' for _ in scope.owner_ids)})")
        params.extend(scope.owner_ids)
    if period is not None:
        clauses.append("o.created_at >= ? AND o.created_at < ?")
        params.extend([period.start.astimezone(UTC), period.end.astimezone(UTC)])
    return " AND ".join(clauses), params


async def compute_funnel(scope: Scope, period: Period | None, settings: Settings, now: datetime) -> Funnel:
    """The funnel of the deals in ``scope`` (opened in ``period`` when given), as of ``now``: the totals by stage and
    furthest stage, the completed stays per stage (their medians), and the stalled deals."""
    conn = sql.default()
    where, params = _where(scope, period)
    funnel = Funnel(rows={s: StageRow(s) for s in OPEN_STAGES})
    if period is None:
        totals, days = await _kept_counts(conn, scope.owner_ids)
        medians = await counted_medians(conn, scope.owner_ids, days)
    else:
        totals = await _totals_of_deals(conn, where, params)
        medians = await read_medians(conn, where, params)
    reached_counts: dict[int, int] = {}
    for row in totals:
        stage = Stage(row["stage"])
        target = funnel.rows.get(stage) or (funnel.won if stage == Stage.WON else funnel.lost)
        target.count += int(row["n"])
        target.amount += float(row["amount"] or 0)
        if stage in OPEN_STAGES:
            share = settings.pipeline.probabilities.get(stage.value, 0.0)
            target.weighted += float(row["plain"] or 0) * share + float(row["own"] or 0)
        reached_counts[int(row["reached"])] = reached_counts.get(int(row["reached"]), 0) + int(row["n"])
    ranks = [*OPEN_STAGES, Stage.WON]
    at_least = {k: sum(n for r, n in reached_counts.items() if r >= k) for k in range(len(ranks))}
    for stage, stage_row in funnel.rows.items():
        k = rank(stage)
        stage_row.reached = at_least[k]
        stage_row.conversion = at_least[k + 1] / at_least[k] if at_least[k] else None
    funnel.won.reached = at_least[len(ranks) - 1]
    # Only open stages are ever left (won and lost end a deal), so every completed stay is an open stage's.
    for stage, median in medians.items():
        if stage in funnel.rows:
            funnel.rows[stage].median_days = median
    funnel.stalled, funnel.stalled_total = await stalled_deals(scope, period, settings, now, STALLED_SHOWN)
    return funnel


DayCounts = dict[Stage, list[tuple[int, int]]]


async def _kept_counts(conn: BaseDBAsyncClient, owner_ids: list[int] | None) -> tuple[list[dict[str, Any]], DayCounts]:
    """In one statement, from the kept counts of the deals of ``owner_ids`` (None: all): per stage and furthest
    stage, how many deals, their amount, the amount without a probability of its own and amount × probability of
    the others (``FunnelCount``); and per stage the completed stays per whole day, in order (``StayCount``)."""
    owners, params = _of_owners(owner_ids)
    rows = await sql.select(
        conn,
        "SELECT 0 AS part, stage, reached AS bucket, SUM(n) AS n, SUM(amount) AS amount, SUM(plain) AS plain,"
        f" SUM(own) AS own FROM opportunity_funnel_count WHERE n > 0{owners} GROUP BY stage, reached"
        " UNION ALL SELECT 1 AS part, stage, days AS bucket, SUM(n) AS n, 0 AS amount, 0 AS plain, 0 AS own"
        f" FROM opportunity_stay_count WHERE n > 0{owners} GROUP BY stage, days ORDER BY part, stage, bucket",
        [*params, *params],
    )
    totals = [{**row, "reached": row["bucket"]} for row in rows if int(row["part"]) == 0]
    days: DayCounts = {}
    for row in rows:
        if int(row["part"]) == 1:
            days.setdefault(Stage(row["stage"]), []).append((int(row["bucket"]), int(row["n"])))
    return totals, days


async def _totals_of_deals(conn: BaseDBAsyncClient, where: str, params: list[Any]) -> list[dict[str, Any]]:
    """The same totals as ``_kept_counts`` for the deals matching ``where`` on ``o`` (those opened in a period,
    which the kept counts do not tell apart), from the deals."""
    return await sql.select(
        conn,
        "SELECT o.stage AS stage, o.reached AS reached, COUNT(*) AS n, SUM(o.amount) AS amount,"
        " SUM(CASE WHEN o.probability IS NULL THEN o.amount ELSE 0 END) AS plain,"
        " SUM(CASE WHEN o.probability IS NULL THEN 0 ELSE o.amount * o.probability END) AS own"
        f" FROM opportunity o WHERE {where} GROUP BY o.stage, o.reached",
        params,
    )


async def read_medians(conn: BaseDBAsyncClient, where: str, params: list[Any]) -> dict[Stage, float]:
    """The median completed stay per stage of the deals matching ``where`` on ``o``, from every such stay: for
    deals opened in a period, which the per-day counts do not tell apart."""
    stays: dict[Stage, list[float]] = {}
    for row in await sql.select(
        conn,
        "SELECT s.stage AS stage, s.stay_days AS days FROM opportunity o"
        f" JOIN opportunity_stage s ON s.opportunity_id = o.id WHERE {where} AND s.stay_days IS NOT NULL",
        params,
    ):
        stays.setdefault(Stage(row["stage"]), []).append(float(row["days"]))
    return {stage: statistics.median(days) for stage, days in stays.items()}


def _of_owners(owner_ids: list[int] | None) -> tuple[str, list[Any]]:
    """An ``AND owner_id IN (…)`` condition for ``owner_ids`` (None: everyone, no condition)."""
    if owner_ids is None:
        return "", []
    return f" AND owner_id IN ({', '.join('?' for _ in owner_ids)})", list(owner_ids)


async def counted_medians(conn: BaseDBAsyncClient, owner_ids: list[int] | None, days: DayCounts) -> dict[Stage, float]:
    """The median completed stay per stage of the deals of ``owner_ids`` (None: all), given their per-day counts
    (``StayCount``), which say in which day the middle stay or stays fall: the per-slot counts of that day
    (``StaySlotCount``) say in which 45 minutes of it and at which offset, and an indexed read of that slot finds
    them (a statement each): the same values ``statistics.median`` takes from every stay."""
    owners, params = _of_owners(owner_ids)
    stages = list(days)
    # Where each middle stay is: (stage, day, offset within the day), then (stage, slot, offset within the slot).
    middles = [(k, *_locate(days[stage], p)) for k, stage in enumerate(stages) for p in _middle_positions(days[stage])]
    slots = await _slot_counts(conn, stages, sorted({(k, day) for k, day, _ in middles}), owners, params)
    in_slots = [(k, *_locate(slots[(k, day)], offset)) for k, day, offset in middles]
    reads: list[str] = []
    values: list[Any] = []
    for (k, slot), offsets in _grouped(in_slots).items():
        reads.append(
            f"SELECT * FROM (SELECT {k} AS k, stay_days AS days FROM opportunity_stage WHERE stage = ?"
            f" AND stay_days >= ? AND stay_days < ?{owners} ORDER BY stay_days LIMIT ? OFFSET ?) r{len(reads)}"
        )
        bounds = [slot / SLOTS_PER_DAY, (slot + 1) / SLOTS_PER_DAY]
        values.extend([stages[k].value, *bounds, *params, max(offsets) - min(offsets) + 1, min(offsets)])
    if not reads:
        return {}
    found: dict[Stage, list[float]] = {}
    for row in await sql.select(conn, " UNION ALL ".join(reads), values):
        found.setdefault(stages[int(row["k"])], []).append(float(row["days"]))
    return {stage: statistics.median(values) for stage, values in found.items()}


def _middle_positions(counts: list[tuple[int, int]]) -> list[int]:
    """The position of the middle stay (an odd number of stays) or of the two middle ones (even)."""
    total = sum(n for _, n in counts)
    return sorted({(total - 1) // 2, total // 2})


def _locate(counts: list[tuple[int, int]], position: int) -> tuple[int, int]:
    """The bucket (day or slot) the ``position``-th stay falls in, and its offset within that bucket."""
    for bucket, n in counts:
        if position < n:
            return bucket, position
        position -= n
    raise LookupError(f"no stay at position {position}")


def _grouped(located: list[tuple[int, int, int]]) -> dict[tuple[int, int], list[int]]:
    """The offsets wanted per (stage, slot): two middle stays in one slot are read at once."""
    grouped: dict[tuple[int, int], list[int]] = {}
    for k, slot, offset in located:
        grouped.setdefault((k, slot), []).append(offset)
    return grouped


async def _slot_counts(
    conn: BaseDBAsyncClient, stages: list[Stage], wanted: list[tuple[int, int]], owners: str, params: list[Any]
) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Per (stage, day) wanted: the per-slot counts of that day, in order."""
    parts, values = [], []
    for k, day in wanted:
        parts.append(
            f"SELECT {k} AS k, {day} AS d, slot, SUM(n) AS n FROM opportunity_stay_slot_count"
            f" WHERE stage = ? AND slot >= ? AND slot < ? AND n > 0{owners} GROUP BY slot"
        )
        values.extend([stages[k].value, day * SLOTS_PER_DAY, (day + 1) * SLOTS_PER_DAY, *params])
    counts: dict[tuple[int, int], list[tuple[int, int]]] = {key: [] for key in wanted}
    if parts:
        for row in await sql.select(conn, " UNION ALL ".join(parts) + " ORDER BY k, d, slot", values):
            counts[(int(row["k"]), int(row["d"]))].append((int(row["slot"]), int(row["n"])))
    return counts


def stall_cuts(settings: Settings, now: datetime) -> list[tuple[Stage, datetime]]:
    """Per open stage with a ``stall_days``: a deal of that stage that last moved at or before the moment given is
    stalled."""
    return [
        (Stage(code), (now - timedelta(days=days)).astimezone(UTC))
        for code, days in sorted(settings.pipeline.stall_days.items())
        if Stage(code) in OPEN_STAGES
    ]


def stalled_where(settings: Settings, now: datetime) -> tuple[str, list[Any]]:
    """SQL on ``o`` (opportunity): no stage change and no follow-up for the deal's stage's ``stall_days``."""
    branches, params = [], []
    for stage, cut in stall_cuts(settings, now):
        branches.append("(o.stage = ? AND o.last_moved_at <= ?)")
        params.extend([stage.value, cut])
    return f"({' OR '.join(branches) or '1 = 0'})", params


@dataclass(frozen=True)
class StalledDeal:
    """A stalled deal as the funnel and the rep's day list it."""

    name: str
    customer: str
    owner: str | None  # None: nobody's (公海)
    stage: Stage
    days: int  # since it last moved


async def stalled_deals(
    scope: Scope, period: Period | None, settings: Settings, now: datetime, limit: int
) -> tuple[list[StalledDeal], int]:
    """The ``limit`` longest-stalled deals of ``scope`` with the days since they last moved, and how many are
    stalled in all, in one statement. Each stage is one range of the index on (owner, stage, last moved), or
    (stage, last moved) for the company: counted there, and its longest-stalled read there in order."""
    where, params = _where(scope, period)
    counts: list[str] = []
    firsts: list[str] = []
    count_values: list[Any] = []
    first_values: list[Any] = []
    for stage, cut in stall_cuts(settings, now):
        branch = f"FROM opportunity o WHERE {where} AND o.stage = ? AND o.last_moved_at <= ?"
        counts.append(f"(SELECT COUNT(*) {branch})")
        count_values.extend([*params, stage.value, cut])
        firsts.append(
            f"SELECT * FROM (SELECT o.id AS id, o.last_moved_at AS moved {branch}"
            f" ORDER BY o.last_moved_at, o.id LIMIT ?) s{len(firsts)}"
        )
        first_values.extend([*params, stage.value, cut, limit])
    if not counts:
        return [], 0
    rows = await sql.select(
        sql.default(),
        f"SELECT d.name AS name, c.name AS customer, st.name AS owner, d.stage AS stage, s.moved AS moved,"
        f" {' + '.join(counts)} AS total FROM ({' UNION ALL '.join(firsts)}) s"
        " JOIN opportunity d ON d.id = s.id JOIN customer c ON c.id = d.customer_id"
        " LEFT JOIN staff st ON st.id = d.owner_id ORDER BY s.moved, s.id LIMIT ?",
        [*count_values, *first_values, limit],
    )
    listed = [
        StalledDeal(
            str(r["name"]), str(r["customer"]), r["owner"], Stage(r["stage"]),
            int((now - as_moment(r["moved"])).total_seconds() // 86400),
        )
        for r in rows
    ]  # fmt: skip
    return listed, int(rows[0]["total"]) if rows else 0


def moved_at(opp: Opportunity) -> datetime:
    """When the deal last moved (its stage change or its customer's last follow-up, whichever is later)."""
    return opp.last_moved_at or opp.stage_entered_at


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _days(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}天"


def funnel_text(title: str, funnel: Funnel) -> str:
    lines = [title, "阶段｜商机数｜金额｜加权金额｜→下一阶段｜停留中位数"]
    for stage, row in funnel.rows.items():
        lines.append(
            f"{STAGE_LABELS[stage]}｜{row.count}｜{deals.yuan(row.amount)}｜{deals.yuan(row.weighted)}｜"
            f"{_percent(row.conversion)}｜{_days(row.median_days)}"
        )
    total = sum(r.count for r in funnel.rows.values())
    pipeline = sum(r.amount for r in funnel.rows.values())
    weighted = sum(r.weighted for r in funnel.rows.values())
    lines.append(f"进行中合计：{total} 个，{deals.yuan(pipeline)}，加权 {deals.yuan(weighted)}")
    closed = funnel.won.count + funnel.lost.count
    rate = f"，赢单率 {funnel.won.count / closed:.0%}" if closed else ""
    lines.append(
        f"赢单：{funnel.won.count} 个 {deals.yuan(funnel.won.amount)}；丢单：{funnel.lost.count} 个 "
        f"{deals.yuan(funnel.lost.amount)}{rate}"
    )
    if funnel.stalled:
        lines.append(f"⚠️ 停滞商机 {funnel.stalled_total} 个（无阶段变化也无跟进）：")
        for deal in funnel.stalled[:STALLED_SHOWN]:
            lines.append(
                f"· {deal.customer}「{deal.name}」{STAGE_LABELS[deal.stage]} {deal.days} 天未动，"
                f"负责人：{deal.owner or '公海'}"
            )
        if funnel.stalled_total > STALLED_SHOWN:
            lines.append(f"……另有 {funnel.stalled_total - STALLED_SHOWN} 个")
    return "\n".join(lines)


@capability.intent("funnel", examples=["漏斗", "本月业绩"], order=81)
async def funnel(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """销售漏斗与业绩"""
    scope = await scope_of(ctx.staff)
    period = resolve_period(slots["period"], msg.text, ctx.now, ctx.settings.tz) if slots.get("period") else None
    result = await compute_funnel(scope, period, ctx.settings, ctx.now)
    label = f"{period.label}新增商机" if period else "全部商机"
    return Reply(funnel_text(f"📈 {scope.label}销售漏斗（{label}）", result))


# -- performance -----------------------------------------------------------------------------------------------------


def months_of(period: Period) -> list[str]:
    months: list[str] = []
    day = period.start.date().replace(day=1)
    while datetime.combine(day, datetime.min.time(), tzinfo=period.start.tzinfo) < period.end:
        months.append(f"{day.year}-{day.month:02d}")
        day = (day + timedelta(days=32)).replace(day=1)
    return months


@dataclass
class Performance:
    won: float = 0.0
    won_count: int = 0
    target: float = 0.0
    forecast: float = 0.0


async def compute_performance(
    owner_ids: list[int] | None, period: Period, settings: Settings, today: date
) -> dict[int | None, Performance]:
    """Per owner: won in ``period``, the monthly targets it covers, the weighted open deals expected to close
    between ``today`` and its end."""
    result: dict[int | None, Performance] = {}
    won = Opportunity.filter(stage=Stage.WON, closed_at__gte=period.start, closed_at__lt=period.end)
    open_deals = Opportunity.filter(
        stage__in=list(OPEN_STAGES), expected_close__gte=max(today, period.start.date()),
        expected_close__lt=period.end.date(),
    )  # fmt: skip
    targets = SalesTarget.filter(month__in=months_of(period))
    if owner_ids is not None:
        won, open_deals = won.filter(owner_id__in=owner_ids), open_deals.filter(owner_id__in=owner_ids)
        targets = targets.filter(staff_id__in=owner_ids)
    for opp in await won:
        p = result.setdefault(opp.owner_id, Performance())
        p.won += float(opp.amount)
        p.won_count += 1
    for opp in await open_deals:
        result.setdefault(opp.owner_id, Performance()).forecast += deals.weighted(opp, settings)
    for target in await targets:
        result.setdefault(target.staff_id, Performance()).target += float(target.amount)
    return result


def _total(parts: list[Performance]) -> Performance:
    total = Performance()
    for p in parts:
        total.won += p.won
        total.won_count += p.won_count
        total.target += p.target
        total.forecast += p.forecast
    return total


def performance_line(p: Performance) -> str:
    done = f"，完成 {p.won / p.target:.0%}" if p.target else "，未设目标"
    return (
        f"赢单 {p.won_count} 个 {deals.yuan(p.won)} / 目标 {deals.yuan(p.target)}{done}；"
        f"预测再签 {deals.yuan(p.forecast)}（加权）"
    )


@capability.intent("performance", order=82)
async def performance(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看业绩：赢单金额对比目标，以及本期剩余时间的预测"""
    scope = await scope_of(ctx.staff)
    period = resolve_period(slots.get("period"), msg.text, ctx.now, ctx.settings.tz)
    today = ctx.now.astimezone(ctx.settings.tz).date()
    by_owner = await compute_performance(scope.owner_ids, period, ctx.settings, today)
    lines = [f"🏆 {scope.label}业绩（{period.label}）", f"合计：{performance_line(_total(list(by_owner.values())))}"]
    if scope.owner_ids != [ctx.staff.id]:
        ids = scope.owner_ids if scope.owner_ids is not None else [i for i in by_owner if i is not None]
        staff = {s.id: s for s in await Staff.filter(id__in=ids).order_by("id")}
        for staff_id in sorted(staff):
            lines.append(f"· {staff[staff_id].name}：{performance_line(by_owner.get(staff_id, Performance()))}")
    lines.append("预测 = 预计在本期剩余时间成交的进行中商机 × 赢率。")
    return Reply("\n".join(lines))


async def _may_set_targets(slots: Slots, ctx: Context) -> Reply | None:
    if not ctx.staff.is_manager_level:
        return Reply("只有主管可以设置业绩目标。")
    if not slots.get("to_staff") or not slots.get("amount"):
        return Reply("请按「目标 张三 本月 200万」设置，也可以写「目标 张三 2026-03 200万」。")
    return None


@capability.intent("set_target", order=83, check=_may_set_targets)
async def set_target(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """设置销售的月度业绩目标（主管）"""
    rep = await find_staff(str(slots["to_staff"]))
    if rep is None:
        return Reply(f"没有找到同事「{slots['to_staff']}」。")
    if ctx.staff.role == Role.MANAGER and rep.id != ctx.staff.id and rep.manager_id != ctx.staff.id:
        return Reply(f"{rep.name} 不在您的团队，无法为其设置目标。")
    period = resolve_period(slots.get("period"), "", ctx.now, ctx.settings.tz)
    months = months_of(period)
    if len(months) != 1:
        return Reply("目标按月设置，请说明是哪个月，例如「本月」「下月」或「2026-03」。")
    amount = Decimal(str(slots["amount"]))
    row = await SalesTarget.get_or_none(staff_id=rep.id, month=months[0], using_db=ctx.conn)
    before = {"staff_id": rep.id, "month": months[0], "amount": str(row.amount)} if row else None
    if row is None:
        row = await SalesTarget.create(staff_id=rep.id, month=months[0], amount=amount, using_db=ctx.conn)
    else:
        row.amount = amount
        await row.save(using_db=ctx.conn, update_fields=["amount", "updated_at"])
    after = {"staff_id": rep.id, "month": months[0], "amount": str(amount)}
    await ctx.audit("set_target", "sales_target", row.id, before, after)
    return Reply(f"已把 {rep.name} {months[0]} 的业绩目标设为 {deals.yuan(amount)}。")

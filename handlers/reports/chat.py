"""Reports in chat, for the asker's scope (a rep their own, a manager the team, directors and admins the company):
``健康度`` (the five metrics with their lights and the weighted score), ``团队周报`` / ``月报`` (the report of the last
complete week or month, with its chart), ``数据质量``, ``NPS 排名``, ``风险客户`` and ``看板`` (the link to the
dashboard). Every one of them reads; none writes, so a question phrasing is as good as a command."""

from __future__ import annotations

import re

import handlers.reports.summary as summary
from bot.context import Context, Slots
from bot.nlu.reading import Reading, Result
from bot.types import IncomingMessage, Reply
from handlers.nps.report import resolve_period
from handlers.pipeline.funnel import scope_of
from handlers.reports.capability import capability
from handlers.reports.health import health, health_text, nps_ranking, nps_ranking_text, quality, quality_text
from handlers.reports.links import dashboard_link
from handlers.reports.risk import at_risk, at_risk_text
from handlers.reports.send import report_reply

_END = r"(?:\s+|[:：]|$|(?=\S))"
_RANK_WORDS = r"(?:排名|排行|榜|谁.{0,4}(?:第一|最高|最好))"
_NPS_RANK = re.compile(rf"(?:nps|净推荐值?).{{0,6}}{_RANK_WORDS}|(?:排名|排行|榜).{{0,6}}(?:nps|净推荐)", re.I)
_HEALTH = re.compile(r"健康度|健康分|健康情况|健康报告")
_WEEKLY = re.compile(r"周报")
_MONTHLY = re.compile(r"月报")
_QUALITY = re.compile(r"数据质量|资料完整度|资料完整率|数据完整")
_RISK = re.compile(r"风险客户|(?:哪些|哪个|有没有)客户.{0,8}(?:风险|危险|流失|不健康)|客户.{0,6}(?:流失风险|有风险)")
_DASHBOARD = re.compile(r"看板|仪表盘|dashboard|数据大屏", re.I)
# A line that asks for something else about a report (周一提醒我写周报) is not asking to read one.
_ELSEWHERE = re.compile(r"提醒|记得|别忘|写|准备|提交|交给|安排|跟进|工单|改成|设置")


def _period(r: Reading) -> Slots:
    period = r.times.find_period(r.text, r.now)
    return {"period": period.value} if period else {}


@capability.command(re.compile(rf"^(?:nps|净推荐值)\s*{_RANK_WORDS}{_END}", re.I), order=139)
def nps_ranking_command(r: Reading, rest: str) -> Result:
    return "nps_ranking", _period(r)


@capability.command(re.compile(rf"^(?:团队)?周报{_END}"), order=137)
def weekly_command(r: Reading, rest: str) -> Result:
    return "team_report", {"kind": "week"}


@capability.command(re.compile(rf"^(?:团队)?月报{_END}"), order=137)
def monthly_command(r: Reading, rest: str) -> Result:
    return "team_report", {"kind": "month"}


@capability.command(re.compile(rf"^(?:团队)?(?:健康度|健康分){_END}"), order=136)
def health_command(r: Reading, rest: str) -> Result:
    if r.customers:  # 健康度 华为: that customer's health, on its profile card
        return "show_customer", r.customer_slot(rest)
    return "health_report", _period(r)


@capability.command(re.compile(rf"^数据质量{_END}"), order=138)
def quality_command(r: Reading, rest: str) -> Result:
    return "data_quality", _period(r)


@capability.command(re.compile(rf"^(?:高)?风险客户{_END}"), order=134)
def risk_command(r: Reading, rest: str) -> Result:
    return "at_risk", {}


@capability.command(re.compile(rf"^(?:数据)?(?:看板|仪表盘){_END}"), order=133)
def dashboard_command(r: Reading, rest: str) -> Result:
    return "dashboard", {}


@capability.phrase(order=7)
def report_phrase(r: Reading) -> Result | None:
    """我们团队的健康度怎么样 / 这周的周报 / 数据质量如何 / NPS谁排第一 / 哪些客户有流失风险 / 看板: reads only. A
    customer's health (华为的健康度) is its profile card, which shows it; other lines naming a customer are left to
    the customer's own reads."""
    if _ELSEWHERE.search(r.text):
        return None
    if r.customers:  # a customer's health, asked or named alone, is its profile card; else not ours
        bare = _HEALTH.sub("", r.text.replace(r.customers[0].surface, "", 1))
        if _HEALTH.search(r.text) and (r.question or not re.sub(r"[\s的了吗呢？?。！!]", "", bare)):
            return "show_customer", r.customer_slot(r.text)
        return None
    if _NPS_RANK.search(r.text):
        return "nps_ranking", _period(r)
    if _RISK.search(r.text):
        return "at_risk", {}
    if _QUALITY.search(r.text):
        return "data_quality", _period(r)
    if _WEEKLY.search(r.text):
        return "team_report", {"kind": "week"}
    if _MONTHLY.search(r.text):
        return "team_report", {"kind": "month"}
    if _HEALTH.search(r.text):
        return "health_report", _period(r)
    if _DASHBOARD.search(r.text):
        return "dashboard", {}
    return None


@capability.intent("health_report", examples=["健康度", "上个月团队健康度"], order=84)
async def health_report(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看健康度：五项指标红黄绿灯与综合得分"""
    scope = await scope_of(ctx.staff)
    period = resolve_period(slots.get("period"), msg.text, ctx.now, ctx.settings.tz)
    return Reply(health_text(await health(scope, period, ctx.settings, ctx.now)))


@capability.intent("team_report", examples=["团队周报", "月报"], order=85)
async def team_report(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看上周（或上月）的团队报告与图表"""
    kind: summary.Kind = "month" if slots.get("kind") == "month" else "week"
    report = await summary.build(ctx.bot, ctx.staff, kind, ctx.now)
    return await report_reply(report, ctx.now, ctx.conn)


@capability.intent("data_quality", examples=["数据质量"], order=86)
async def data_quality(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看数据质量：资料完整度、商机及时更新、工单关闭率"""
    scope = await scope_of(ctx.staff)
    period = resolve_period(slots.get("period"), msg.text, ctx.now, ctx.settings.tz)
    return Reply(quality_text(await quality(scope, period, ctx.settings, ctx.now)))


@capability.intent("nps_ranking", examples=["NPS 排名"], order=87)
async def nps_rank(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看 NPS 排名（按销售）"""
    scope = await scope_of(ctx.staff)
    period = resolve_period(slots.get("period"), msg.text, ctx.now, ctx.settings.tz)
    return Reply(nps_ranking_text(scope, period, await nps_ranking(scope, period)))


@capability.intent("at_risk", examples=["风险客户"], order=88)
async def at_risk_customers(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看健康度最低的风险客户"""
    scope = await scope_of(ctx.staff)
    rows, total = await at_risk(ctx.bot, scope, ctx.now, ctx.settings.reports.at_risk_shown)
    return Reply(at_risk_text(scope, rows, total, show_owner=scope.owner_ids != [ctx.staff.id]))


@capability.intent("dashboard", examples=["看板"], order=89)
async def dashboard(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """打开数据看板（手机可看）"""
    link = dashboard_link(ctx.settings, ctx.staff, ctx.now)
    days = ctx.settings.reports.dashboard_link_days
    return Reply(f"📊 您的数据看板（{days} 天内有效，仅限本人使用）：\n{link}")

"""Computing and reporting NPS: ``本月NPS`` / ``NPS 上季度`` = % promoters (9–10) − % detractors (0–6) over the
surveys answered in the period, per rep (the rep who owned the customer when it was surveyed) and per team (a
manager's reports), for the asker's scope: a rep their own customers, a manager the team, directors and admins the
company."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.context import Context, Slots
from bot.nlu.cues import FAULT
from bot.nlu.reading import Reading, Result
from bot.types import IncomingMessage, Reply
from handlers.nps.capability import capability
from models.nps import DETRACTOR_MAX, PROMOTER_MIN, Survey
from models.staff import Role, Staff

_NPS = re.compile(r"nps|净推荐值|净推荐|推荐值|满意度", re.I)


def _period_slots(r: Reading) -> Slots:
    period = r.times.find_period(r.text, r.now)
    return {"period": period.value} if period else {}


@capability.command(re.compile(r"^(?:nps|净推荐值)(?:\s+|[:：]|$|(?=\S))", re.I), order=140)
def nps_command(r: Reading, rest: str) -> Result:
    return "nps_report", _period_slots(r)


@capability.phrase(order=20)
def nps_phrase(r: Reading) -> Result | None:
    if _NPS.search(r.lower) and not FAULT.search(r.text):
        return "nps_report", _period_slots(r)
    return None


@dataclass(frozen=True)
class Period:
    start: datetime  # inclusive, aware
    end: datetime  # exclusive, aware
    label: str


def _month_start(d: date) -> date:
    return d.replace(day=1)


def _add_months(d: date, months: int) -> date:
    index = d.year * 12 + d.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _quarter_start(d: date) -> date:
    return date(d.year, (d.month - 1) // 3 * 3 + 1, 1)


_PERIOD_WORDS: list[tuple[tuple[str, ...], str]] = [
    (("上上个月", "上上月"), "month:-2"),
    (("上个月", "上月", "last_month", "previous_month"), "month:-1"),
    (("本月", "这个月", "当月", "本月度", "this_month", "month", "current_month"), "month:0"),
    (("上个季度", "上季度", "上一季度", "last_quarter", "previous_quarter"), "quarter:-1"),
    (("本季度", "这个季度", "当季", "本季", "this_quarter", "quarter", "current_quarter"), "quarter:0"),
    (("去年", "上一年", "last_year", "previous_year"), "year:-1"),
    (("今年", "本年", "本年度", "this_year", "year", "current_year"), "year:0"),
]
_RECENT_DAYS = re.compile(r"(?:近|最近|过去)\s*(\d{1,3})\s*(天|日|个月|月)")
_ISO_MONTH = re.compile(r"^(\d{4})-(\d{1,2})$")
_ISO_QUARTER = re.compile(r"^(\d{4})-?Q([1-4])$", re.I)
_ISO_YEAR = re.compile(r"^(\d{4})$")


def resolve_period(value: Any, text: str, now: datetime, tz: ZoneInfo) -> Period:
    """The period a report covers: the ``period`` slot (a word, a code, ISO month/quarter/year, or a dict with
    ``start``/``end``), else what the text says, else this month. Boundaries are local midnights."""
    today = now.astimezone(tz).date()

    def at(d: date) -> datetime:
        return datetime.combine(d, time(0), tzinfo=tz)

    if isinstance(value, dict) and value.get("start"):
        start = _as_datetime(value["start"], tz)
        end = _as_datetime(value["end"], tz) if value.get("end") else now
        if start is not None and end is not None:
            return Period(start, end, f"{start:%Y-%m-%d} 至 {end:%Y-%m-%d}")
    for candidate in (str(value).strip() if isinstance(value, str) else "", text or ""):
        if not candidate:
            continue
        if m := _ISO_MONTH.match(candidate):
            first = date(int(m[1]), int(m[2]), 1)
            return Period(at(first), at(_add_months(first, 1)), f"{first.year}年{first.month}月")
        if m := _ISO_QUARTER.match(candidate):
            first = date(int(m[1]), (int(m[2]) - 1) * 3 + 1, 1)
            return Period(at(first), at(_add_months(first, 3)), f"{first.year}年第{m[2]}季度")
        if m := _ISO_YEAR.match(candidate):
            first = date(int(m[1]), 1, 1)
            return Period(at(first), at(date(first.year + 1, 1, 1)), f"{first.year}年")
        if m := _RECENT_DAYS.search(candidate):
            n = int(m[1])
            days = n if m[2] in ("天", "日") else n * 30
            return Period(now - timedelta(days=days), now, f"近{n}{m[2]}")
        lowered = candidate.lower()
        for words, code in _PERIOD_WORDS:
            if any(w in lowered for w in words):
                return _named_period(code, today, at)
    return _named_period("month:0", today, at)


def _named_period(code: str, today: date, at: Callable[[date], datetime]) -> Period:
    unit, offset_text = code.split(":")
    offset = int(offset_text)
    if unit == "month":
        first = _add_months(_month_start(today), offset)
        return Period(at(first), at(_add_months(first, 1)), f"{first.year}年{first.month}月")
    if unit == "quarter":
        first = _add_months(_quarter_start(today), 3 * offset)
        quarter = (first.month - 1) // 3 + 1
        return Period(at(first), at(_add_months(first, 3)), f"{first.year}年第{quarter}季度")
    first = date(today.year + offset, 1, 1)
    return Period(at(first), at(date(first.year + 1, 1, 1)), f"{first.year}年")


def _as_datetime(value: Any, tz: ZoneInfo) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


@dataclass
class Tally:
    promoters: int = 0
    passives: int = 0
    detractors: int = 0
    sent: int = 0

    def add(self, score: int) -> None:
        if score >= PROMOTER_MIN:
            self.promoters += 1
        elif score <= DETRACTOR_MAX:
            self.detractors += 1
        else:
            self.passives += 1

    @property
    def answered(self) -> int:
        return self.promoters + self.passives + self.detractors

    @property
    def nps(self) -> int | None:
        """% promoters − % detractors, rounded half away from zero; None without answers."""
        if not self.answered:
            return None
        exact = (self.promoters - self.detractors) * 100 / self.answered
        return int(exact + 0.5) if exact >= 0 else -int(-exact + 0.5)

    def line(self) -> str:
        if not self.answered:
            return f"暂无答卷（发出 {self.sent} 份）"
        nps = self.nps
        assert nps is not None
        return (
            f"NPS {nps:+d}（推荐 {self.promoters} · 中立 {self.passives} · 贬损 {self.detractors}，"
            f"共 {self.answered} 份答卷 / 发出 {self.sent} 份）"
        )


@dataclass
class NpsReport:
    period: Period
    overall: Tally = field(default_factory=Tally)
    by_rep: dict[int, Tally] = field(default_factory=dict)


async def compute(period: Period, owner_ids: list[int] | None) -> NpsReport:
    """Tallies for the surveys answered (and sent) in ``period``, overall and per rep; ``owner_ids`` limits it."""
    report = NpsReport(period)
    answered = Survey.filter(answered_at__gte=period.start, answered_at__lt=period.end, score__not_isnull=True)
    sent = Survey.filter(sent_at__gte=period.start, sent_at__lt=period.end)
    if owner_ids is not None:
        answered = answered.filter(owner_id__in=owner_ids)
        sent = sent.filter(owner_id__in=owner_ids)
    for owner_id, score in await answered.values_list("owner_id", "score"):
        report.overall.add(int(str(score)))
        if owner_id is not None:
            report.by_rep.setdefault(int(str(owner_id)), Tally()).add(int(str(score)))
    for (owner_id,) in await sent.values_list("owner_id"):
        report.overall.sent += 1
        if owner_id is not None:
            report.by_rep.setdefault(int(str(owner_id)), Tally()).sent += 1
    return report


def _sum(tallies: Iterable[Tally]) -> Tally:
    total = Tally()
    for t in tallies:
        total.promoters += t.promoters
        total.passives += t.passives
        total.detractors += t.detractors
        total.sent += t.sent
    return total


@capability.intent("nps_report", examples=["本月NPS", "NPS 上季度"], order=80)
async def nps_report(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看客户满意度 NPS（按人、团队、时段）"""
    period = resolve_period(slots.get("period"), msg.text, ctx.now, ctx.settings.tz)
    staff = ctx.staff
    title = f"📊 NPS {period.label}"
    if staff.role in (Role.DIRECTOR, Role.ADMIN):
        return Reply(await _company_report(period, title))
    if staff.role == Role.MANAGER:
        reports = await Staff.filter(manager_id=staff.id).order_by("id")
        return Reply(await _team_report(period, title, staff, reports))
    report = await compute(period, [staff.id])
    tally = report.by_rep.get(staff.id, Tally())
    return Reply(f"{title}\n您的客户：{tally.line()}{_footer()}")


async def _team_report(period: Period, title: str, manager: Staff, reports: list[Staff]) -> str:
    members = [manager, *reports]
    report = await compute(period, [m.id for m in members])
    lines = [title, f"{manager.name}团队：{report.overall.line()}"]
    for member in reports:
        lines.append(f"· {member.name}：{report.by_rep.get(member.id, Tally()).line()}")
    if (own := report.by_rep.get(manager.id)) is not None:
        lines.append(f"· {manager.name}（本人客户）：{own.line()}")
    return "\n".join(lines) + _footer()


async def _company_report(period: Period, title: str) -> str:
    report = await compute(period, None)
    staff = {s.id: s for s in await Staff.all().order_by("id")}
    lines = [title, f"全公司：{report.overall.line()}"]
    leaders = {s.manager_id for s in staff.values() if s.manager_id is not None}
    teams: dict[int | None, list[int]] = {}
    for rep_id in report.by_rep:
        teams.setdefault(_team_of(rep_id, staff, leaders), []).append(rep_id)
    for manager_id in sorted(teams, key=lambda m: (m is None, m or 0)):
        rep_ids = sorted(teams[manager_id])
        manager = staff.get(manager_id) if manager_id is not None else None
        team_name = f"{manager.name}团队" if manager is not None else "未分组"
        lines.append(f"{team_name}：{_sum(report.by_rep[r] for r in rep_ids).line()}")
        for rep_id in rep_ids:
            name = staff[rep_id].name if rep_id in staff else f"#{rep_id}"
            lines.append(f"· {name}：{report.by_rep[rep_id].line()}")
    return "\n".join(lines) + _footer()


def _team_of(staff_id: int, staff: dict[int, Staff], leaders: set[int]) -> int | None:
    """The team a staff member's answers count in: their own when they lead one (as ``_team_report`` counts a
    manager's own customers in the team), else their manager's."""
    if staff_id in leaders:
        return staff_id
    member = staff.get(staff_id)
    return member.manager_id if member is not None else None


def _footer() -> str:
    return "\nNPS = 推荐者(9-10分)占比 − 贬损者(0-6分)占比，按答卷时间统计。"

"""Chinese time expressions in the configured timezone: moments (明天下午3点, 下周三, 3天后, 月底), look-back
ranges (近3年, 最近3个月 → since) and report periods (本月, 上季度 → "2026-11", "2026-Q3").

jionlp does the heavy lifting for moments; a small layer in front handles what it misses or gets wrong for a CRM:
月底/月初/年底, "N 天/周/个月后", 明早/明晚, and a bare weekday or date already past rolls forward (a reminder
is always in the future). A date without a time of day means 09:00, the start of the working day.
"""

from __future__ import annotations

import contextlib
import io
import re
from calendar import monthrange
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from bot.nlu.numbers import to_number

WORKDAY_START = time(9, 0)
# A count of days, weeks, months or years beyond this is no moment anyone means, and would run off the calendar.
MAX_COUNT = 1000
# A count starts where its run of digits starts (see ``bot.nlu.numbers._NUM``: linear in a long run).
_N = r"(?P<n>(?<!\d)\d+|(?<![零一二两三四五六七八九十百半])[零一二两三四五六七八九十百半]+)"

_RELATIVE_AFTER = re.compile(rf"{_N}\s*(?P<unit>天|日|周|个星期|星期|个礼拜|礼拜|个月|月|年)(?:之后|以后|后)")
_MONTH_EDGE = re.compile(r"(?P<which>下个?月|本月|这个?月|当月)?(?P<edge>月底|月末|底|月初|初|月中|中旬|下旬|上旬)")
_YEAR_END = re.compile(r"(?P<which>明年|今年|年)(?:底|末)")
_SINCE = re.compile(
    rf"(?:近|最近|过去|前)\s*{_N}\s*(?P<unit>天|日|周|个星期|星期|个月|月|年|季度|个季度)(?:以来|内|里)?"
)
_SINCE_NAMED = re.compile(
    r"(?P<w>今年|本年|去年|本月|这个月|上个?月|本周|这周|上周|本季度?|上个?季度|今天|昨天)(?:以来|至今)?"
)
_PERIOD_NAMED = re.compile(
    r"(?P<w>今年|本年度?|去年|上一?年度?|本月|这个月|当月|上个?月|本季度?|这个?季度|上个?季度|本周|这周|上周)"
)
_PERIOD_MONTH = re.compile(
    r"(?:(?P<y>\d{4})\s*年\s*)?(?P<m>\d{1,2}|(?<![一二三四五六七八九十])[一二三四五六七八九十]+)\s*月份?"
)
_PERIOD_QUARTER = re.compile(r"(?:(?P<y>\d{4})\s*年\s*)?(?:第?(?P<q>[1-4一二三四])\s*季度|Q(?P<q2>[1-4]))", re.I)
_PERIOD_YEAR = re.compile(r"(?P<y>\d{4})\s*年(?!\s*\d{1,2}\s*月)")
_ENGLISH_PERIODS = {
    "this month": "本月", "last month": "上月", "this quarter": "本季度", "last quarter": "上季度",
    "this year": "今年", "last year": "去年", "this week": "本周", "last week": "上周",
}  # fmt: skip
_ENGLISH_PERIOD = re.compile("|".join(_ENGLISH_PERIODS), re.I)
_FIXUPS = (("明早", "明天早上"), ("明晚", "明天晚上"), ("今早", "今天早上"), ("今晚", "今天晚上"), ("下个月", "下月"))
_PAST_HINT = re.compile(r"昨|前天|上周|上个|上月|去年|前年|之前|以前")
_WEEKDAY_ONLY = re.compile(r"^(?:周|星期|礼拜)[一二三四五六日天]")


@dataclass(frozen=True, slots=True)
class Span:
    """A value found in the text and where: [start, end) in the string that was searched."""

    value: Any
    start: int
    end: int


def _count(raw: str) -> float | None:
    if raw == "半":
        return 0.5
    return to_number(raw)


def _add_months(day: date, months: int) -> date:
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return date(year, month, min(day.day, monthrange(year, month)[1]))


def _apply_fixups(text: str) -> tuple[str, list[int]]:
    """Rewrite what jionlp misreads (明早 → 明天早上); ``index[i]`` is the original position of fixed[i]."""
    out: list[str] = []
    index: list[int] = []
    i = 0
    while i < len(text):
        for a, b in _FIXUPS:
            if text.startswith(a, i):
                out.append(b)
                index.extend([i] * (len(b) - 1) + [i + len(a) - 1])
                i += len(a)
                break
        else:
            out.append(text[i])
            index.append(i)
            i += 1
    return "".join(out), index


@cache
def _jionlp() -> Any:
    """jionlp, imported on first use: it compiles hundreds of patterns (about a second), which commands that read
    no chat (imports, exports, searches) should not pay at start-up; a serving bot warms it up before the first
    message (``TimeParser.warm_up``)."""
    with contextlib.redirect_stdout(io.StringIO()):  # jionlp prints a banner on import
        import jionlp
    return jionlp


class TimeParser:
    """Finds time expressions relative to ``now`` (aware); returns aware datetimes in ``tz``."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz

    def warm_up(self) -> None:
        self.find_moment("明天下午3点提醒我", datetime(2026, 1, 1, tzinfo=self.tz))
        to_number("一百二十")  # loads the numeral converter too

    def _at(self, day: date, at: time = WORKDAY_START) -> datetime:
        return datetime.combine(day, at, tzinfo=self.tz)

    # -- moments -------------------------------------------------------------------------------------------

    def find_moment(self, text: str, now: datetime) -> Span | None:
        """The first future-facing moment mentioned (for next_at / at)."""
        local = now.astimezone(self.tz)
        if m := _RELATIVE_AFTER.search(text):
            n = _count(m["n"])
            if n is not None and n < MAX_COUNT:
                unit = m["unit"]
                if unit in ("天", "日"):
                    moment = self._at(local.date() + timedelta(days=n))
                elif unit in ("周", "个星期", "星期", "个礼拜", "礼拜"):
                    moment = self._at(local.date() + timedelta(days=7 * n))
                elif unit in ("个月", "月"):
                    moment = self._at(_add_months(local.date(), int(n)))
                else:
                    moment = self._at(_add_months(local.date(), int(12 * n)))
                return Span(moment, m.start(), m.end())
        if m := _YEAR_END.search(text):
            year = local.year + (1 if m["which"] == "明年" else 0)
            return Span(self._at(date(year, 12, 31)), m.start(), m.end())
        if m := _MONTH_EDGE.search(text):
            edge = m["edge"]
            if edge not in ("底", "初") or m["which"]:
                return Span(self._month_edge(local, m["which"] or "", edge), m.start(), m.end())
        return self._jionlp_moment(text, local)

    def _month_edge(self, local: datetime, which: str, edge: str) -> datetime:
        first = local.date().replace(day=1)
        if which.startswith("下"):
            first = _add_months(first, 1)
        last = monthrange(first.year, first.month)[1]
        if edge in ("月初", "初", "上旬"):
            if not which and local.day > 5:
                first = _add_months(first, 1)  # 月初 said late in a month means next month's start
            return self._at(first)
        if edge in ("月中", "中旬"):
            return self._at(first.replace(day=15))
        if edge == "下旬":
            return self._at(first.replace(day=21))
        return self._at(first.replace(day=last))

    def _jionlp_moment(self, text: str, local: datetime) -> Span | None:
        fixed, index = _apply_fixups(text)
        if not re.search(r"[天日号周点时月午晚早钟后礼拜期]|\d+:\d", fixed):
            return None  # nothing time-like: skip the (comparatively slow) extractor
        base = local.replace(tzinfo=None, second=0, microsecond=0)
        try:
            found = _jionlp().ner.extract_time(fixed, time_base=base, with_parsing=True)
        except Exception:  # jionlp raises on odd input; no time is the right answer then
            return None
        for item in found:
            span_text = str(item.get("text", ""))
            deadline = item.get("type") == "time_span" and re.search(r"(?:之前|以前|前)$", span_text)
            if item.get("type") != "time_point" and not deadline:
                continue
            detail = item.get("detail") or {}
            times = detail.get("time") or []
            if len(times) != 2:
                continue
            start, end = (datetime.strptime(t, "%Y-%m-%d %H:%M:%S") for t in times)
            if deadline:  # 周五前 / 12月5号以前: the day it is due
                moment = datetime.combine(end.date(), WORKDAY_START)
            else:
                moment = self._pick(start, end, detail.get("definition", ""))
            moment = self._roll_forward(moment, span_text, base)
            a, b = item["offset"]
            a, b = index[a], index[b - 1] + 1
            return Span(moment.replace(tzinfo=self.tz), a, b)
        return None

    @staticmethod
    def _pick(start: datetime, end: datetime, definition: str) -> datetime:
        if start.time() == time(0, 0) and end.time() >= time(23, 59) and end - start >= timedelta(hours=23):
            return datetime.combine(start.date(), WORKDAY_START)  # a whole day: start of the working day
        if definition == "blur" and end - start >= timedelta(hours=3):
            # 上午 / 下午 / 晚上: a sensible hour inside the part of the day
            hour = {7: 9, 8: 9, 13: 14, 18: 19}.get(start.hour, start.hour)
            return start.replace(hour=hour, minute=0)
        return start

    @staticmethod
    def _roll_forward(moment: datetime, span_text: str, base: datetime) -> datetime:
        if moment >= base or _PAST_HINT.search(span_text):
            return moment
        if _WEEKDAY_ONLY.match(span_text):
            return moment + timedelta(days=7)
        if re.match(r"^\d{1,2}\s*[月.\-/]", span_text) and "年" not in span_text:
            return moment.replace(year=moment.year + 1)
        if re.match(r"^(?:\d{1,2}|[一二三四五六七八九十]+)[号日]", span_text):
            return datetime.combine(_add_months(moment.date(), 1), moment.time())
        if moment.date() == base.date() and not re.search(r"今", span_text):
            return moment + timedelta(days=1)  # "下午3点" said at 16:00 means tomorrow
        return moment

    # -- look-back ranges (search filters) -------------------------------------------------------------------

    def find_since(self, text: str, now: datetime) -> Span | None:
        """The start of a look-back range: 近3年, 最近3个月, 过去7天, 今年, 上个月 … as an aware datetime."""
        local = now.astimezone(self.tz)
        today = local.date()
        if m := _SINCE.search(text):
            n = _count(m["n"])
            if n is not None and 0 < n < MAX_COUNT:
                unit = m["unit"]
                if unit in ("天", "日"):
                    day = today - timedelta(days=n)
                elif unit in ("周", "个星期", "星期"):
                    day = today - timedelta(days=7 * n)
                elif unit in ("个月", "月"):
                    day = _add_months(today, -int(n))
                elif unit in ("季度", "个季度"):
                    day = _add_months(today, -3 * int(n))
                else:
                    day = _add_months(today, -12 * int(n))
                return Span(self._at(day, time(0, 0)), m.start(), m.end())
        if m := _SINCE_NAMED.search(text):
            w = m["w"]
            start, _ = self._named_range(w, today)
            return Span(self._at(start, time(0, 0)), m.start(), m.end())
        return None

    def _named_range(self, w: str, today: date) -> tuple[date, date]:
        month1 = today.replace(day=1)
        q_first = date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
        if w in ("今天",):
            return today, today
        if w in ("昨天",):
            return today - timedelta(days=1), today - timedelta(days=1)
        if w.startswith(("今年", "本年")):
            return date(today.year, 1, 1), date(today.year, 12, 31)
        if w.startswith(("去年", "上一年", "上年")):
            return date(today.year - 1, 1, 1), date(today.year - 1, 12, 31)
        if w.startswith("上") and "月" in w:
            first = _add_months(month1, -1)
            return first, month1 - timedelta(days=1)
        if "月" in w:
            return month1, _add_months(month1, 1) - timedelta(days=1)
        if w.startswith("上") and "季" in w:
            first = _add_months(q_first, -3)
            return first, q_first - timedelta(days=1)
        if "季" in w:
            return q_first, _add_months(q_first, 3) - timedelta(days=1)
        monday = today - timedelta(days=today.weekday())
        if w.startswith("上"):
            return monday - timedelta(days=7), monday - timedelta(days=1)
        return monday, monday + timedelta(days=6)

    # -- report periods ----------------------------------------------------------------------------------------

    def find_period(self, text: str, now: datetime) -> Span | None:
        """A report period: "2026-11" (month), "2026-Q3" (quarter), "2026" (year), or for anything else
        (近3个月, 本周) ``{"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"}`` with both days included."""
        today = now.astimezone(self.tz).date()
        text = _ENGLISH_PERIOD.sub(lambda m: _ENGLISH_PERIODS[m.group(0).lower()], text)
        if m := _PERIOD_QUARTER.search(text):
            q = m["q"] or m["q2"]
            quarter = int(to_number(q) or 1)
            year = int(m["y"]) if m["y"] else today.year
            return Span(f"{year}-Q{quarter}", m.start(), m.end())
        if m := _PERIOD_NAMED.search(text):
            w = m["w"]
            start, end = self._named_range(w, today)
            if "月" in w:
                return Span(f"{start.year}-{start.month:02d}", m.start(), m.end())
            if "季" in w:
                return Span(f"{start.year}-Q{(start.month - 1) // 3 + 1}", m.start(), m.end())
            if "年" in w:
                return Span(f"{start.year}", m.start(), m.end())
            return Span({"start": start.isoformat(), "end": end.isoformat()}, m.start(), m.end())
        if m := _SINCE.search(text):
            since = self.find_since(m.group(0), now)
            if since is not None:
                return Span({"start": since.value.date().isoformat(), "end": today.isoformat()}, m.start(), m.end())
        if m := _PERIOD_MONTH.search(text):
            month = int(to_number(m["m"]) or 0)
            if 1 <= month <= 12:
                year = int(m["y"]) if m["y"] else (today.year if month <= today.month else today.year - 1)
                return Span(f"{year}-{month:02d}", m.start(), m.end())
        if m := _PERIOD_YEAR.search(text):
            return Span(m["y"], m.start(), m.end())
        return None


def iso(moment: datetime) -> str:
    """ISO 8601 in local time with its offset, to the second."""
    return moment.replace(microsecond=0).isoformat()

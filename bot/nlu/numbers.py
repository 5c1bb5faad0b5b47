"""Amounts (120万, 30万元, 5000元, 1.5亿, 一百二十万) and discounts (85折, 8.5折, 九折, 九五折, 优惠15%).

Amounts are returned in yuan (int when whole); a discount is the fraction of the list price the customer pays
(85折 → 0.85, 优惠15% → 0.85). cn2an converts Chinese numerals; the patterns find where they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CN_DIGITS = "零〇一二两三四五六七八九十百千"
# A number starts where a run of digits starts: tried inside a long run too, a pattern that needs something after
# the number would rescan the rest of the run from every position of it.
_NUM = rf"(?:(?<!\d)\d+(?:\.\d+)?|(?<![{_CN_DIGITS}])[{_CN_DIGITS}]+(?:点[{_CN_DIGITS}]+)?)"

# An amount needs a unit (万/亿/元/块/w) or a money word in front, so that "#12" or "3天" are not money.
_AMOUNT = re.compile(
    rf"(?P<prefix>(?:合同|订单|项目|采购|总)?(?:金额|总额|总价|合同额|订单额|额度|预算|货款|金额为|价格)\s*[:：是为约]?\s*)?"
    rf"(?P<num>{_NUM})\s*(?P<unit>亿元|亿|万元|万块|万|w|W|千元|千|元|块钱|块|rmb|RMB)?"
)
_DIGIT_DISCOUNT = re.compile(rf"(?:打\s*)?(?P<num>{_NUM})\s*折")
_PERCENT_OFF = re.compile(
    rf"(?:优惠|让利|降价|便宜|减|降|折让|下浮|少)\s*了?\s*(?P<num>{_NUM})\s*(?:%|％|个点|个百分点)"
)
_PERCENT_OF = re.compile(
    r"(?:按|以)?(?:原价|报价|目录价|list价)?\s*的?\s*(?P<num>(?<!\d)\d+(?:\.\d+)?)\s*(?:%|％)\s*(?:成交|执行|结算)"
)

_UNIT = {"亿元": 1e8, "亿": 1e8, "万元": 1e4, "万块": 1e4, "万": 1e4, "w": 1e4, "W": 1e4, "千元": 1e3, "千": 1e3}


@dataclass(frozen=True, slots=True)
class Found:
    value: float
    start: int
    end: int


def to_number(text: str) -> float | None:
    """Arabic or Chinese numerals to a float; None when it is not a number."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    if all(ch in _CN_DIGITS or ch == "点" for ch in text):
        # 八五 (as in 八五折) reads digit by digit, 一百二十 as a number.
        if not any(ch in "十百千" for ch in text) and "点" not in text and len(text) > 1:
            return float("".join(str(_digit(ch)) for ch in text))
        import cn2an  # on first use: its import costs every command's start-up a tenth of a second

        try:
            return float(cn2an.cn2an(text.replace("两", "二"), "smart"))
        except (ValueError, KeyError):
            return None
    return None


def _digit(ch: str) -> int:
    return "零一二三四五六七八九".index(ch) if ch in "零一二三四五六七八九" else {"〇": 0, "两": 2}.get(ch, 0)


def whole(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 2)


def find_amount(text: str) -> Found | None:
    """The first money amount, in yuan."""
    for m in _AMOUNT.finditer(text):
        unit, prefix = m["unit"], m["prefix"]
        if not unit and not prefix:
            continue
        value = to_number(m["num"])
        if value is None:
            continue
        # A discount such as 85折 or a count such as 3天 is not money.
        tail = text[m.end() : m.end() + 1]
        if not unit and tail in ("折", "%", "％", "天", "个", "号", "日", "点", "年", "月"):
            continue
        amount = value * _UNIT.get(unit or "", 1.0)
        start = m.start("prefix") if prefix else m.start("num")
        return Found(amount, start, m.end())
    return None


def find_discount(text: str) -> Found | None:
    """The discount as the fraction paid: 85折 → 0.85, 九折 → 0.9, 优惠15% → 0.85."""
    if m := _PERCENT_OFF.search(text):
        off = to_number(m["num"])
        if off is not None and 0 < off < 100:
            return Found(round(1 - off / 100, 4), m.start(), m.end())
    if m := _DIGIT_DISCOUNT.search(text):
        n = to_number(m["num"])
        if n is not None and 0 < n < 100:
            fraction = n / 10 if n < 10 else n / 100
            return Found(round(fraction, 4), m.start(), m.end())
    if m := _PERCENT_OF.search(text):
        n = to_number(m["num"])
        if n is not None and 0 < n < 100:
            return Found(round(n / 100, 4), m.start(), m.end())
    return None

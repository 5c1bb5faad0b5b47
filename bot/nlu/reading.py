"""What a matcher works with: one normalized line being read, and the extractors every capability shares.

A capability declares its matchers (``bot.capability``): *commands*, tried when their pattern matches at the start
of the line, and *phrases*, tried in order of priority on free Chinese. A matcher gets a ``Reading`` and answers
``(intent, slots)`` or None (not mine: the next one is asked). The extractors here read the parts every intent
needs the same way: which customer a line names (known, or guessed from the sentence's shape), a future moment,
the customer at the start of a command's arguments.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.nlu.cues import asks
from bot.nlu.text import clean
from bot.nlu.timeparse import TimeParser, iso
from bot.nlu.vocabulary import CRM_TERMS, Mention, Vocabulary

Slots = dict[str, Any]
Result = tuple[str, Slots]

CUSTOMER_FILTER = re.compile(r"(?:客户|customer)\s*[:：=]\s*(?P<c>[^\s,，;；]+)", re.I)

# Segmentation-based guess of a customer name that is not in the vocabulary yet.
# fmt: off
_LEAD_WORDS = {
    "把", "给", "跟", "和", "与", "对", "帮", "帮忙", "帮我", "请", "客户", "跟进", "拜访", "回访", "联系", "去",
    "了", "刚", "刚才", "今天", "昨天", "上午", "下午", "我", "我们", "已经",
}
_STOP_WORDS = {
    "的", "了", "这边", "那边", "已经", "已", "又", "也", "都", "说", "在", "是", "要", "想", "有", "没有", "那",
    "这", "设备", "机器", "产品", "项目", "合同", "订单", "单子", "那单", "样品", "阶段", "等级", "标签", "工单",
    "今天", "明天", "现在", "最近", "客户", "反馈", "表示", "以后", "由", "交给", "转给", "打", "上", "评为",
    "定为", "升为", "降为", "改为", "改成", "加", "去掉", "进入", "推进", "到", "签", "拿下",
}
# fmt: on
# What is left of "给华为打个85折" once the customer and the discount are cut out.
_HANGING = re.compile(r"^(?:打个|打|要个|给个|申请个|来个|做个|搞个)(?=[\s，,]|$)|(?<=[\s，,])(?:打个|要个|给个)$")
_NAME_PART = re.compile(r"[\w\u4e00-\u9fff]+")
_CUE_WORD = re.compile(r"赢|签|丢|输|黄|成交|流失|意向|报价|谈判|方案|故障|坏|漏|提醒|搜|转|升|降|评|改|加|去掉|打上")
_GUESSES = (
    re.compile(r"把(?P<c>[^\s,，。把]{2,30}?)(?:转|交|移|划|分|改|的|设|标|升|降|评|定|推|列|归|打)"),
    re.compile(r"^(?:跟进了?|拜访了?|回访了?|去了|见了|联系了)(?P<c>[^\s,，。]{2,30}?)(?:[,，。\s]|$)"),
    re.compile(r"^(?:客户)?(?P<c>[^\s,，。]{2,30}?)(?:的|这边|那边|已经|已|\s)"),
)
_NOT_A_NAME = re.compile(r"工单|阶段|等级|标签|提醒|客户|今天|明天|昨天|刚才|刚刚")


def tidy(text: str) -> str:
    """A slot as the rep wrote it, once the parsed parts are cut out: no doubled or orphaned punctuation, no
    particle left hanging at either end (``打个 ， ，竞争对手报价更低`` → ``竞争对手报价更低``)."""
    text = re.sub(r"\s*([，,。；;、：:！!？?])(?:[\s，,。；;、：:]*)", r"\1", text)
    text = re.sub(r"[！!～~]+$", "", re.sub(_HANGING, "", text.strip()))
    tidied = clean(re.sub(r"\s+", " ", text))
    # 设备坏了 is not 设备坏: the 了 of a one-character result verb is part of the word.
    kept = re.search(r"[坏停断丢黄漏掉完慢错](了)[\s，,。；;！!吧啊呀哈]*$", text)
    return tidied + "了" if kept and tidied.endswith(text[kept.start(1) - 1]) else tidied


class Reading:
    """One normalized line being read at ``now``, with the vocabulary of names and the time parser."""

    def __init__(
        self,
        text: str,
        now: datetime,
        vocabulary: Vocabulary,
        times: TimeParser,
        phrased: Callable[[Reading], Result],
    ) -> None:
        self.text = text
        self.now = now
        self.vocabulary = vocabulary
        self.times = times
        self._phrased = phrased

    @functools.cached_property
    def customers(self) -> list[Mention]:
        """The known customers the whole line mentions, in order."""
        return self.vocabulary.customers_in(self.text)

    @functools.cached_property
    def question(self) -> bool:
        """The line asks something and states nothing a write could rest on: no write intent may take it."""
        return asks(self.text)

    @functools.cached_property
    def lower(self) -> str:
        return self.text.lower()

    def phrased(self) -> Result:
        """What the phrase matchers make of the whole line (for a command that defers to them)."""
        return self._phrased(self)

    # -- customers ---------------------------------------------------------------------------------------------

    def command_customer(self, rest: str) -> str:
        """The customer a command names: a known mention at the start, else the first word as typed."""
        first = re.split(r"[\s,，;；:：]", rest, maxsplit=1)[0]
        if first and self.vocabulary.resolve(first):
            return first  # a known name, alias or unique prefix as its own word (恒力液压有限)
        mentions = self.vocabulary.customers_in(rest)
        if mentions and mentions[0].start <= 1:
            return mentions[0].surface
        m = CUSTOMER_FILTER.search(rest)
        if m:
            return m["c"]
        return first

    def customer_slot(self, text: str, typed: str | None = None) -> Slots:
        """``{"customer": …}``: the stored name for what was typed, else the first customer ``text`` mentions."""
        if typed:
            return {"customer": self.vocabulary.stored_or_typed(typed)}
        mentions = self.vocabulary.customers_in(text)
        if mentions:
            mention = mentions[0]
            names = mention.names
            return {"customer": names[0] if len(names) == 1 else mention.surface}
        return {}

    def split_customer(self, rest: str) -> tuple[Slots, str]:
        """The customer slot named at the start of a command's arguments, and the arguments without that name."""
        name = self.command_customer(rest)
        if not name:
            return {}, rest
        return self.customer_slot(rest, name), rest.replace(name, " ", 1)

    def guess_customer(self, text: str) -> str | None:
        """A customer name not (yet) in the vocabulary, from the shape of the sentence."""
        if self.vocabulary.customers_in(text):
            return None
        for pattern in _GUESSES:
            if m := pattern.search(text):
                name = clean(m["c"])
                if len(name) >= 2 and not _NOT_A_NAME.search(name):
                    return name
        return self._segmented_name(text)

    def _segmented_name(self, text: str) -> str | None:
        """jieba's first content words, up to a CRM term, verb or particle: 宁德时代赢单了 → 宁德时代."""
        words = self.vocabulary.words(text)
        i = 0
        while i < len(words) and words[i] in _LEAD_WORDS:
            i += 1
        parts: list[str] = []
        for word in words[i:]:
            if word in _STOP_WORDS or word in CRM_TERMS or not _NAME_PART.fullmatch(word) or _CUE_WORD.search(word):
                break
            parts.append(word)
        name = "".join(parts)
        return name if 2 <= len(name) <= 30 and len(parts) <= 4 else None

    # -- time --------------------------------------------------------------------------------------------------

    def next_at(self, text: str) -> tuple[str | None, tuple[int, int] | None]:
        """The first moment in ``text`` that lies in the future (ISO), and where it was."""
        offset = 0
        remaining = text
        for _ in range(4):
            moment = self.times.find_moment(remaining, self.now)
            if moment is None:
                return None, None
            if moment.value > self.now:
                return iso(moment.value), (offset + moment.start, offset + moment.end)
            offset += moment.end
            remaining = remaining[moment.end :]
        return None, None


CommandMatch = Callable[[Reading, str], Result | None]
PhraseMatch = Callable[[Reading], Result | None]


@dataclass(frozen=True, slots=True)
class Command:
    """A command word at the start of the line (``pattern``); ``match`` gets the rest of the line."""

    order: int
    pattern: re.Pattern[str]
    match: CommandMatch


@dataclass(frozen=True, slots=True)
class Phrase:
    """A way of saying something in free Chinese, tried in ``order`` (lowest first)."""

    order: int
    match: PhraseMatch

"""The names the parser must recognize: customers (name, aliases, short forms), staff, and CRM terms.

One Aho-Corasick automaton finds every customer or staff mention in a line in a single pass (longest match
wins); a jieba ``Tokenizer`` with the CRM vocabulary and the staff names added segments what is left, so that
"赢单" stays whole. The vocabulary is rebuilt from the database when customers or staff change
(``Understanding.refresh``) and can learn a single new customer at once (``learn_customer``).

Segmentation only ever sees a line that names no known customer (``Reading.guess_customer`` looks for one first),
so customer names are not added to jieba's dictionary word by word (three seconds at 100,000 customers, on every
rebuild): each name only adds its weight to the dictionary's total, as adding it would, which is all it changes
for such a line. jieba's own dictionary is loaded once a process (about two seconds) and shared by every
vocabulary, with the current staff names written into it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import ahocorasick
import jieba

jieba.setLogLevel(logging.WARNING)

# Company-name endings that people leave out when they talk: 恒力液压有限公司 → 恒力液压.
_LEGAL_SUFFIX = re.compile(r"(股份有限公司|有限责任公司|集团股份有限公司|集团有限公司|有限公司|集团公司|集团|公司|厂)$")
_TRADE_SUFFIX = re.compile(
    r"(科技|技术|实业|工业|电子|机械|制造|电气|自动化|新材料|材料|化工|能源|新能源|设备|工程|贸易|控股|智能|汽车|重工)$"
)
_REGION_PREFIX = re.compile(r"^(北京|上海|天津|重庆|深圳|广州|杭州|苏州|南京|武汉|成都|西安|宁波|无锡|佛山|东莞)(市)?")

# Terms jieba must keep whole so that intent cues and slots segment cleanly.
CRM_TERMS = (
    "跟进", "跟进记录", "回访", "拜访", "工单", "报修", "售后", "赢单", "丢单", "输单", "签单", "成交", "流失", "公海",
    "报价", "报价单", "折扣", "申请折扣", "合同金额", "框架协议", "年度框架协议", "驳回", "撤回", "漏油", "故障",
    "不能用", "坏了", "投诉", "密封圈", "意向", "潜在客户", "谈判", "方案", "已解决", "处理中", "标签", "打标签",
    "转给", "移交", "净推荐值", "提醒我", "开工单",
)  # fmt: skip


NAME_FREQ = 200_000  # a customer or staff name outweighs any word of jieba's own dictionary
TERM_FREQ = 100_000


class _Dictionary:
    """jieba's dictionary with the CRM terms, loaded once a process (about two seconds, 35 MB), with the staff names
    of the latest vocabulary written into it: one dictionary serves every tokenizer (segmentation only looks words
    up), and the names of staff who left are taken out again when the staff change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._freq: dict[str, int] = {}
        self._total = 0
        self._staff: dict[str, int | None] = {}  # a staff name written in → the entry it replaced (None: none)

    def with_staff(self, staff: frozenset[str]) -> tuple[dict[str, int], int]:
        """Word frequencies with these staff names in, and their total."""
        with self._lock:
            if not self._freq:
                base = jieba.Tokenizer()
                base.initialize()
                for term in CRM_TERMS:
                    base.add_word(term, freq=TERM_FREQ)
                self._freq, self._total = base.FREQ, base.total
            if staff != self._staff.keys():
                for person, replaced in self._staff.items():
                    # An entry of 0 is what jieba keeps for a prefix of a longer word: it never makes a word.
                    self._freq[person] = 0 if replaced is None else replaced
                self._staff = {person: self._freq.get(person) for person in staff}
                for person in staff:
                    for end in range(1, len(person)):  # prefixes, as jieba's add_word keeps them
                        self._freq.setdefault(person[:end], 0)
                    self._freq[person] = NAME_FREQ
            return self._freq, self._total + NAME_FREQ * len(self._staff)


_DICTIONARY = _Dictionary()


@dataclass(frozen=True, slots=True)
class Mention:
    start: int
    end: int
    surface: str
    names: tuple[str, ...]  # the stored names it may mean (several when ambiguous)


def short_forms(name: str) -> list[str]:
    """Ways people shorten a stored company name, longest first, each at least two characters."""
    forms: list[str] = []
    core = _LEGAL_SUFFIX.sub("", name)
    for candidate in (core, _REGION_PREFIX.sub("", core)):
        if candidate and candidate not in forms:
            forms.append(candidate)
        trimmed = _TRADE_SUFFIX.sub("", candidate)
        if len(trimmed) >= 2 and trimmed not in forms:
            forms.append(trimmed)
    return [f for f in forms if len(f) >= 2 and f != name]


@dataclass
class Vocabulary:
    """Customer names (stored name → aliases) and staff names, with the matchers built from them."""

    customer_aliases: dict[str, list[str]] = field(default_factory=dict)
    staff: set[str] = field(default_factory=set)
    _lookup: dict[str, set[str]] = field(default_factory=dict)  # any way of saying it → stored names
    _exact: dict[str, str] = field(default_factory=dict)  # stored names and aliases → stored name
    _automaton: ahocorasick.Automaton | None = None
    _tokenizer: jieba.Tokenizer | None = None

    @classmethod
    def build(cls, customers: Iterable[tuple[str, list[str]]], staff: Iterable[str]) -> Vocabulary:
        vocab = cls(customer_aliases={}, staff=set(staff))
        for name, aliases in customers:
            vocab.customer_aliases[name] = [a for a in aliases or [] if a]
        vocab._compile()
        return vocab

    def learn_customer(self, name: str, aliases: Iterable[str] = ()) -> None:
        """Recognize one more customer at once: its ways of being said are added to the matcher, whose links are
        made again (a few tens of milliseconds at 100,000 customers, against seconds to compile every name)."""
        known = name in self.customer_aliases
        self.customer_aliases[name] = [a for a in aliases if a]
        self._tokenizer = None  # its total counts the names (made again on next use, without loading anything)
        if known or self._automaton is None:  # a known customer's aliases changed, or the very first customer
            self._compile()
            return
        for key in self._add_keys(name, self.customer_aliases[name]):
            self._automaton.add_word(key, ("c", key, tuple(sorted(self._lookup[key]))))
        self._automaton.make_automaton()

    def _add_keys(self, name: str, aliases: list[str]) -> list[str]:
        """A new customer's name, aliases and short forms in the lookups, as ``_compile`` would have put them with
        this customer last; the keys whose meaning changed."""
        changed: list[str] = []
        for key in (name, *aliases):
            if key not in self._exact:  # at most someone's short form so far: a name or an alias takes it over
                self._lookup[key] = set()
            if key == name:
                self._exact[key] = name
            else:
                self._exact.setdefault(key, name)
            self._lookup.setdefault(key, set()).add(name)
            changed.append(key)
        for form in short_forms(name):
            if form not in self._exact:
                self._lookup.setdefault(form, set()).add(name)
                changed.append(form)
        return changed

    def _compile(self) -> None:
        lookup: dict[str, set[str]] = {}
        exact: dict[str, str] = {}
        for name, aliases in self.customer_aliases.items():
            exact[name] = name
            lookup.setdefault(name, set()).add(name)
            for alias in aliases:
                exact.setdefault(alias, name)
                lookup.setdefault(alias, set()).add(name)
        for name in self.customer_aliases:
            for form in short_forms(name):
                # A short form never overrides what is a stored name or alias of someone else.
                if form not in exact:
                    lookup.setdefault(form, set()).add(name)
        automaton = ahocorasick.Automaton()
        for key, names in lookup.items():
            automaton.add_word(key, ("c", key, tuple(sorted(names))))
        for person in self.staff:
            if person not in lookup and len(person) >= 2:
                automaton.add_word(person, ("s", person, (person,)))
        if len(automaton):
            automaton.make_automaton()
            self._automaton = automaton
        else:
            self._automaton = None
        self._lookup = lookup
        self._exact = exact

    # -- finding mentions ----------------------------------------------------------------------------------

    def _mentions(self, text: str, kind: str) -> list[Mention]:
        if self._automaton is None:
            return []
        found = []
        for end, (k, key, names) in self._automaton.iter_long(text):
            if k == kind:
                found.append(Mention(end - len(key) + 1, end + 1, key, names))
        return found

    def customers_in(self, text: str) -> list[Mention]:
        return self._mentions(text, "c")

    def staff_in(self, text: str) -> list[Mention]:
        return self._mentions(text, "s")

    def resolve(self, typed: str) -> tuple[str, ...]:
        """Stored names ``typed`` may mean: exact or alias first, then short forms, then a unique prefix."""
        typed = typed.strip()
        if not typed:
            return ()
        if typed in self._exact:
            return (self._exact[typed],)
        if typed in self._lookup:
            return tuple(sorted(self._lookup[typed]))
        prefixed = tuple(sorted(n for n in self.customer_aliases if n.startswith(typed)))
        return prefixed

    def stored_or_typed(self, typed: str) -> str:
        """The stored name when ``typed`` means exactly one customer, else what was typed."""
        names = self.resolve(typed)
        return names[0] if len(names) == 1 else typed.strip()

    # -- segmentation ----------------------------------------------------------------------------------------

    @property
    def tokenizer(self) -> jieba.Tokenizer:
        if self._tokenizer is None:
            freq, total = _DICTIONARY.with_staff(frozenset(self.staff))
            tokenizer = jieba.Tokenizer()
            tokenizer.FREQ, tokenizer.initialized = freq, True
            tokenizer.total = total + NAME_FREQ * len(self._lookup)
            self._tokenizer = tokenizer
        return self._tokenizer

    def words(self, text: str) -> list[str]:
        """jieba segmentation with customer, staff and CRM terms kept whole."""
        return [w for w in self.tokenizer.lcut(text) if w.strip()]

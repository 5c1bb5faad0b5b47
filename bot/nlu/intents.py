"""Phrasing rules: which intent a line is, and its slots.

A line is first normalized (full-width → half-width, spaces collapsed). A command word at the start decides the
intent outright (Chinese, with English aliases); otherwise free phrasing is classified by cues — verbs, objects
and particles rather than whole sentences — checked from the most specific (an approval id, a ticket number with
a status) to the most general (a customer name alone shows the profile). Slots are then read by small extractors
shared by both paths, so "跟进 华为 …" and "跟进了华为，…" fill the same slots the same way.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.nlu.numbers import find_amount, find_discount, whole
from bot.nlu.timeparse import TimeParser, iso
from bot.nlu.vocabulary import CRM_TERMS, Mention, Vocabulary

Slots = dict[str, Any]

STAGE_WORDS: dict[str, str] = {
    "潜在": "lead", "线索": "lead", "lead": "lead",
    "意向": "intent", "有意向": "intent", "intent": "intent",
    "方案": "proposal", "proposal": "proposal",
    "报价": "quote", "quote": "quote",
    "谈判": "negotiation", "商务谈判": "negotiation", "议价": "negotiation", "negotiation": "negotiation",
    "成交": "won", "赢单": "won", "签约": "won", "签单": "won", "won": "won", "win": "won",
    "流失": "lost", "丢单": "lost", "输单": "lost", "lost": "lost", "lose": "lost",
}  # fmt: skip
# Free phrasing that moves a stage without naming it: 比亚迪 赢单了, 华为签了, 三一黄了.
_STAGE_EVENT = re.compile(
    r"(?P<won>赢单|赢了|(?:已|成功)?(?:签约|签单|成交|中标|成单)(?:了|成功|啦|完成)|已(?:签约|签单|成交|中标)"
    r"|签了合同|签合同了|合同(?:已|也)?签了|签下来了|拿下了|拿下来了|签了)"
    r"|(?P<lost>丢单|输单|输了|丢了|黄了|没戏了|流失了|已流失|放弃了|没谈成|没拿下)"
    r"|(?P<intent>有意向了|有意向|意向客户了|有兴趣了|感兴趣了)"
)
_STAGE_MOVE = re.compile(
    r"(?:阶段|进入|推进到|推进至|推到|进到|到了|改为|改成|变成|变为|转入|设为|设置为|调整为|调到|更新为|升到|升级到|进展到)"
    r"\s*(?:了|到)?\s*(?P<word>潜在|线索|有意向|意向|方案|报价|商务谈判|谈判|议价|成交|赢单|流失|丢单|输单"
    r"|lead|intent|proposal|quote|negotiation|won|lost)",
    re.I,
)
_STAGE_CMD_VALUE = re.compile(
    r"(?P<word>潜在|线索|有意向|意向|方案|报价|商务谈判|谈判|议价|成交|赢单|签约|流失|丢单|输单"
    r"|lead|intent|proposal|quote|negotiation|won|lost)\s*(?:阶段)?",
    re.I,
)
_GRADE = re.compile(r"(?<![A-Za-z])(?P<g>[ABCabc])\s*(?:级|类|档|等)?(?:客户)?(?![A-Za-z])")
_GRADE_FREE = re.compile(
    r"(?:等级|评级|级别|分级|定级)\s*(?:改为|改成|调为|调整为|设为|是|为|:)?\s*(?P<g>[ABCabc])(?![A-Za-z])"
    r"|(?:评为|定为|升为|降为|改为|改成|调为|调整为|设为|升到|降到|列为|划为|归为|算)\s*(?P<g2>[ABCabc])\s*(?:级|类|档|等)"
    r"|(?P<g3>[ABCabc])\s*(?:级|类)客户",
)
_TICKET_ID = re.compile(
    r"(?:#|＃|工单\s*(?:号|编号)?\s*[#:：]?\s*|单号\s*[:：]?\s*|no\.?\s*)(?P<id>\d{1,9})|(?P<id2>\d{1,9})\s*号工单",
    re.I,
)
_APPROVAL_ID = re.compile(r"#?\s*(?P<id>AP\s*\d+)", re.I)
_BARE_APPROVAL_NUMBER = re.compile(r"#\s*(?P<id>\d+)")
_STATUS = (
    ("closed", re.compile(r"关闭|关单|关掉|结单|closed?|已关|可以关了|不用再跟")),
    (
        "resolved",
        re.compile(
            r"已解决|解决了|已修好|修好了|修复了|已修复|搞定了|搞定|处理好了|处理完了|已处理完|处理完毕|好了|resolved?|done",
            re.I,
        ),
    ),
    (
        "in_progress",
        re.compile(
            r"处理中|在处理|开始处理|正在处理|跟进中|已受理|受理了|接单|接手|in[_ ]?progress|已派|上门了|到现场", re.I
        ),
    ),
)
_URGENT = re.compile(r"紧急|加急|很急|十万火急|火急|急|urgent|马上|尽快|立刻|停产|停机|严重", re.I)
_FAULT = re.compile(
    r"故障|坏了|坏掉|损坏|不能用|用不了|不好用|漏油|漏水|渗油|异响|报警|停机|停产|失灵|卡死|不工作|不转|出问题|有问题|问题|报错|维修|修一下|投诉|售后|"
    r"停了|停线|停工|破损|派工程师|派人|派个人|上门维修|来修"
)
_TICKET_WORD = re.compile(r"工单|报修|售后单|维修单|ticket", re.I)
_TICKET_CREATE = re.compile(r"开|建|提|报|起|派|创建|新建|登记|录")
_FOLLOW_CUE = re.compile(
    r"跟进|拜访|回访|走访|见了|见面|面谈|碰了|碰面|约了|约见|打了?电话|通了电话|电话沟通|电话联系|电话里|微信沟通|微信聊|微信上|"
    r"沟通|聊了|聊过|谈了|谈过|开会|开了会|发了|发过|去了|联系了|联系过|来访|参观|演示|交流|汇报|寄了|送了|拜会|"
    r"记录一下|记一下|记录|备注|答复|回复了|确认了|调试"
)
_SEARCH_CMD = re.compile(r"^(?:搜索|搜一下|搜搜|搜|查找|检索|search|grep|找聊天|查聊天记录|查记录)\s*[:：]?\s*", re.I)
_SEARCH_FREE = re.compile(
    r"(?:搜|查找|检索|找找|找一下|查一下|查查|翻一下|翻翻)(?:一下)?(?P<q>.+?)(?:的)?(?:聊天记录|聊天|消息|记录|对话)"
    r"|(?:谁|哪些客户|哪个客户)(?:提到|说过|聊过|问过)(?:过)?(?P<q2>.+)"
    r"|(?:聊天记录|聊天|消息|记录)(?:里|中)?(?:搜|找|查)(?:一下)?(?P<q3>.+)"
)
_SEARCH_TAIL = re.compile(r"(?:的|里的|中的)?(?:聊天记录|聊天|消息|记录|对话|内容)$")
_CUSTOMER_FILTER = re.compile(r"(?:客户|customer)\s*[:：=]\s*(?P<c>[^\s,，;；]+)", re.I)
_REMIND = re.compile(r"提醒我|提醒一下我|叫我|记得提醒|到时候提醒|remind(?:\s+me)?|别忘了提醒我|提醒", re.I)
_NPS = re.compile(r"nps|净推荐值|净推荐|推荐值|满意度", re.I)
_DISCOUNT_CUE = re.compile(r"折扣|打折|\d+(?:\.\d+)?\s*折|[一二三四五六七八九]+\s*折|优惠|让利|降价|特价|折让|下浮")
_DISCOUNT_ASK = re.compile(r"申请|要|想|给|批|请批|求|能不能|可否|可以|报|走|提")
_APPROVE = re.compile(r"同意|批准|通过|批了|准了|可以|ok|approve|yes|没问题|行", re.I)
_REJECT = re.compile(r"驳回|拒绝|不同意|不批|不行|不通过|否决|打回|reject|no\b|不准|不可以|不能批", re.I)
_WITHDRAW = re.compile(r"撤回|撤销|撤掉|取消|withdraw|cancel|不申请了|不要了", re.I)
_TRANSFER = re.compile(
    r"负责人(?:改成|改为|换成|换为|变更为|调整为|设为)|转给|转交给?|移交给?|交给|转到|转移给?|划给|分给|分配给|改由|换成|换给|转为|给到"
)
_TAG_WORD = re.compile(r"标签|tag|打上|贴上|标记为|标为|标记", re.I)
_CREATE_CUSTOMER = re.compile(
    r"^(?:新建客户|新增客户|添加客户|创建客户|建个客户|新客户|加个客户|录入客户|建档|new\s*customer|add\s*customer)\s*[:：]?\s*",
    re.I,
)
_CREATE_CUSTOMER_FREE = re.compile(
    r"(?:新建|新增|添加|创建|建|加|录入|登记)(?:一个|个|一下)?(?:新)?客户\s*[:：,，]?\s*(?P<c>[^\s,，。；;]+)"
    r"|(?:新|来了个新|有个新)客户\s*[:：,，叫是]?\s*(?P<c2>[^\s,，。；;]+)"
    r"|(?:给|帮我)?(?P<c3>[^\s,，。；;]+?)建(?:个)?档"
)
_SHOW_CUE = re.compile(
    r"资料|情况|怎么样|咋样|如何|信息|详情|档案|客户卡|概况|画像|进展|状态|最近|看看|查查|查看|查一下|看一下|profile",
    re.I,
)
_FILLERS = re.compile(
    r"^(?:[，,。.;；:：、\s]|了|的|帮我|帮忙|麻烦|请|一下)+"
    r"|(?:[，,。.;；:：、\s]|了|吧|哈|啊|呀|呢|一下|谢谢|谢了|多谢)+$"
)

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
_NAME_PART = re.compile(r"[\w\u4e00-\u9fff]+")
_CUE_WORD = re.compile(r"赢|签|丢|输|黄|成交|流失|意向|报价|谈判|方案|故障|坏|漏|提醒|搜|转|升|降|评|改|加|去掉|打上")

# Command words at the start of a line → intent. Longer words first; English aliases must be followed by a space.
_COMMANDS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"^(?:帮助|help|菜单|menu|怎么用|使用说明|\?|？)(?:一下|吧|呢)?\s*[?？!！。]*\s*$"
            r"|^(?:你|机器人|助手)?(?:能|可以|会)(?:做|干)?(?:什么|啥|哪些)|^(?:有)?(?:哪些|什么)(?:功能|命令|指令)|^(?:怎么|如何)(?:用|使用)",
            re.I,
        ),
        "help",
    ),
    (_CREATE_CUSTOMER, "create_customer"),
    (re.compile(r"^(?:申请折扣|折扣申请|申请优惠|折扣|discount)(?:\s+|[:：]|(?=[^\s]))", re.I), "request_discount"),
    (re.compile(r"^(?:撤回|撤销|withdraw)(?:\s+|[:：]|(?=[#A-Za-z0-9]))", re.I), "withdraw"),
    (re.compile(r"^(?:驳回|拒绝|不同意|reject)(?:\s+|[:：]|(?=[#A-Za-z0-9]))", re.I), "reject"),
    (re.compile(r"^(?:同意|批准|通过|approve)(?:\s+|[:：]|(?=[#A-Za-z0-9]))", re.I), "approve"),
    (re.compile(r"^(?:新建工单|开工单|建工单|提工单|报修|工单|ticket)(?:\s+|[:：]|(?=\S))", re.I), "ticket"),
    (_SEARCH_CMD, "search"),
    (re.compile(r"^(?:提醒我|提醒|remind(?:\s+me)?)(?:\s+|[:：]|(?=\S))", re.I), "remind"),
    (
        re.compile(
            r"^(?:跟进记录|跟进|记录跟进|写跟进|follow(?:[\s_-]?up)?|fu)(?:了一下|了|一下|过)?(?:\s+|[:：]|(?=\S))",
            re.I,
        ),
        "follow_up",
    ),
    (re.compile(r"^(?:阶段|改阶段|设置阶段|stage)(?:\s+|[:：]|(?=\S))", re.I), "set_stage"),
    (re.compile(r"^(?:等级|评级|改等级|设置等级|grade)(?:\s+|[:：]|(?=\S))", re.I), "set_grade"),
    (re.compile(r"^(?:打标签|加标签|标签|tag)(?:\s+|[:：]|(?=\S))", re.I), "tag"),
    (re.compile(r"^(?:转交|移交|转移|转客户|transfer)(?:\s+|[:：]|(?=\S))", re.I), "transfer"),
    (re.compile(r"^(?:nps|净推荐值)(?:\s+|[:：]|$|(?=\S))", re.I), "nps_report"),
    (
        re.compile(
            r"^(?:客户资料|客户卡|客户|查看客户|查看|看看|查一下|查|show|customer|profile)(?:\s+|[:：]|(?=\S))", re.I
        ),
        "show_customer",
    ),
]


@dataclass(frozen=True, slots=True)
class Line:
    """A normalized line and what was found in it once."""

    text: str
    customers: list[Mention]
    staff: list[Mention]


_KEEP_WIDE = set("，：；！？（）")


def normalize(text: str) -> str:
    """Full-width letters, digits and signs to ASCII (Chinese punctuation kept as typed), spaces collapsed."""
    text = "".join(
        ch
        if ch in _KEEP_WIDE
        else unicodedata.normalize("NFKC", ch)
        if "\uff01" <= ch <= "\uff5e" or ch == "\u3000"
        else ch
        for ch in text
    )
    return re.sub(r"\s+", " ", text).strip()


def clean(text: str) -> str:
    """Trim punctuation, particles and politeness off both ends."""
    previous = None
    text = text.strip()
    while previous != text:
        previous = text
        text = _FILLERS.sub("", text).strip()
    return text


def cut(text: str, *spans: tuple[int, int] | None) -> str:
    """``text`` with the given spans replaced by a space."""
    chars = list(text)
    for span in spans:
        if span is None:
            continue
        for i in range(max(0, span[0]), min(len(chars), span[1])):
            chars[i] = " "
    return re.sub(r"\s+", " ", "".join(chars)).strip()


class PhrasingRules:
    """Classifies a normalized line; all state is the vocabulary and the time parser."""

    def __init__(self, vocabulary: Vocabulary, times: TimeParser) -> None:
        self.vocabulary = vocabulary
        self.times = times

    # -- entry point -----------------------------------------------------------------------------------------

    def parse(self, raw: str, now: datetime) -> tuple[str, Slots]:
        text = normalize(raw)
        if not text:
            return "unknown", {}
        for pattern, intent in _COMMANDS:
            if m := pattern.match(text):
                rest = text[m.end() :].strip()
                result = self._command(intent, text, rest, m.end(), now)
                if result is not None:
                    return result
                break
        return self._free(text, now)

    # -- commands --------------------------------------------------------------------------------------------

    def _command(self, intent: str, text: str, rest: str, offset: int, now: datetime) -> tuple[str, Slots] | None:
        if intent == "help":
            return "help", {}
        if intent == "create_customer":
            name = re.split(r"[\s,，;；]", rest, maxsplit=1)[0] if rest else ""
            return ("create_customer", {"customer": name}) if name else None
        if intent == "ticket":
            if _TICKET_ID.search(text) and self._status(rest):
                return "update_ticket", self._update_ticket_slots(text)
            if _TICKET_ID.search(rest) and not self.vocabulary.customers_in(rest):
                return "update_ticket", self._update_ticket_slots(text)
            return "create_ticket", self._ticket_slots(rest, command=True)
        if intent == "show_customer":
            if not rest:
                return None
            name = self._command_customer(rest)
            leftover = clean(rest.replace(name, "", 1)) if name else rest
            # "客户 华为 跟进了…" is not a profile request: let free phrasing decide.
            if leftover and not _SHOW_CUE.fullmatch(leftover):
                return None
            if not self.vocabulary.resolve(name):
                free = self._free(text, now)
                if free[0] != "unknown":
                    return free
            return "show_customer", {"customer": self.vocabulary.stored_or_typed(name)}
        extractor: dict[str, Callable[[str, str, datetime], Slots]] = {
            "request_discount": self._discount_slots,
            "withdraw": self._approval_slots,
            "reject": self._approval_slots,
            "approve": self._approval_slots,
            "search": self._search_slots,
            "remind": self._remind_slots,
            "follow_up": self._follow_command_slots,
            "set_stage": self._stage_command_slots,
            "set_grade": self._grade_command_slots,
            "tag": self._tag_slots,
            "transfer": self._transfer_slots,
            "nps_report": self._nps_slots,
        }
        slots = extractor[intent](text, rest, now)
        if intent in ("approve", "reject") and "approval_id" not in slots and not rest:
            return None
        return intent, slots

    def _command_customer(self, rest: str) -> str:
        """The customer a command names: a known mention at the start, else the first word as typed."""
        first = re.split(r"[\s,，;；:：]", rest, maxsplit=1)[0]
        if first and self.vocabulary.resolve(first):
            return first  # a known name, alias or unique prefix as its own word (恒力液压有限)
        mentions = self.vocabulary.customers_in(rest)
        if mentions and mentions[0].start <= 1:
            return mentions[0].surface
        m = _CUSTOMER_FILTER.search(rest)
        if m:
            return m["c"]
        return first

    def _customer_slot(self, text: str, typed: str | None = None) -> Slots:
        if typed:
            return {"customer": self.vocabulary.stored_or_typed(typed)}
        mentions = self.vocabulary.customers_in(text)
        if mentions:
            mention = mentions[0]
            names = mention.names
            return {"customer": names[0] if len(names) == 1 else mention.surface}
        return {}

    # -- free phrasing -----------------------------------------------------------------------------------------

    def _free(self, text: str, now: datetime) -> tuple[str, Slots]:
        lower = text.lower()
        customers = self.vocabulary.customers_in(text)

        if _APPROVAL_ID.search(text):
            rest = text
            if _WITHDRAW.search(text):
                return "withdraw", self._approval_slots(text, rest, now)
            if _REJECT.search(text):
                return "reject", self._approval_slots(text, rest, now)
            if _APPROVE.search(text):
                return "approve", self._approval_slots(text, rest, now)
        if _NPS.search(lower) and not _FAULT.search(text):
            return "nps_report", self._nps_slots(text, text, now)
        if (_REMIND.search(text) and "提醒我" in text) or re.search(r"^(?:.{0,12})提醒(?:我|一下)", text):
            return "remind", self._remind_slots(text, text, now)
        if _DISCOUNT_CUE.search(text) and (find_discount(text) or re.search(r"折扣|优惠", text)):
            if re.search(r"撤回|撤销|取消", text) and re.search(r"申请", text):
                return "withdraw", self._approval_slots(text, text, now)
            if _DISCOUNT_ASK.search(text) or find_discount(text):
                return "request_discount", self._discount_slots(text, text, now)
        ticket_id = _TICKET_ID.search(text)
        if ticket_id and (self._status(text) or ("工单" in text and not _TICKET_CREATE.search(text))):
            return "update_ticket", self._update_ticket_slots(text)
        if m := _CREATE_CUSTOMER_FREE.search(text):
            name = m["c"] or m["c2"] or m["c3"]
            if name and not customers:
                return "create_customer", {"customer": clean(name)}
        staff_named = self.vocabulary.staff_in(text)
        handed = staff_named and re.search(
            rf"(?:由|归|让)\s*{re.escape(staff_named[-1].surface)}\s*(?:来)?(?:跟进|负责|接手|对接|管)", text
        )
        if (_TRANSFER.search(text) or handed) and (staff_named or re.search(r"转给|转交|移交|交给(?!了)", text)):
            slots = self._transfer_slots(text, text, now)
            if slots.get("to_staff"):
                return "transfer", slots
        fault = _FAULT.search(text) and (customers or _URGENT.search(text))
        if (_TICKET_WORD.search(text) or fault) and (
            not _FOLLOW_CUE.search(text) or _TICKET_WORD.search(text) or _URGENT.search(text)
        ):
            return "create_ticket", self._ticket_slots(text, command=False)
        if _SEARCH_FREE.search(text) or re.match(r"^(?:帮我|帮忙|请|麻烦)?(?:搜|搜索|查找|检索)", text):
            return "search", self._search_free_slots(text, now)
        stage = self._stage_free(text)
        if stage is not None and (customers or re.search(r"阶段", text) or self._guess_customer(text)):
            return "set_stage", {**self._customer_slot(text, self._guess_customer(text)), "stage": stage}
        grade = _GRADE_FREE.search(text)
        if grade and (customers or re.search(r"等级|评级|级别", text) or self._guess_customer(text)):
            g = (grade["g"] or grade["g2"] or grade["g3"]).upper()
            return "set_grade", {**self._customer_slot(text, self._guess_customer(text)), "grade": g}
        if _TAG_WORD.search(text) and (customers or "标签" in text):
            return "tag", self._tag_free_slots(text)
        if _FOLLOW_CUE.search(text) and (customers or self._guess_customer(text)):
            return "follow_up", self._follow_free_slots(text, now)
        if customers:
            mention = customers[0]
            leftover = clean(cut(text, (mention.start, mention.end)))
            if not leftover or (_SHOW_CUE.search(leftover) and len(leftover) <= 8) or len(leftover) <= 2:
                return "show_customer", self._customer_slot(text)
            if _FAULT.search(text):
                return "create_ticket", self._ticket_slots(text, command=False)
            # A customer and a note: the most useful reading is a follow-up note.
            if len(leftover) >= 4:
                return "follow_up", self._follow_free_slots(text, now)
        return "unknown", {}

    def _guess_customer(self, text: str) -> str | None:
        """A customer name not (yet) in the vocabulary, from the shape of the sentence."""
        if self.vocabulary.customers_in(text):
            return None
        for pattern in (
            r"把(?P<c>[^\s,，。把]{2,30}?)(?:转|交|移|划|分|改|的|设|标|升|降|评|定|推|列|归|打)",
            r"^(?:跟进了?|拜访了?|回访了?|去了|见了|联系了)(?P<c>[^\s,，。]{2,30}?)(?:[,，。\s]|$)",
            r"^(?:客户)?(?P<c>[^\s,，。]{2,30}?)(?:的|这边|那边|已经|已|\s)",
        ):
            if m := re.search(pattern, text):
                name = clean(m["c"])
                if len(name) >= 2 and not re.search(r"工单|阶段|等级|标签|提醒|客户|今天|明天|昨天|刚才|刚刚", name):
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

    # -- slot extractors -----------------------------------------------------------------------------------------

    @staticmethod
    def _status(text: str) -> str | None:
        for status, pattern in _STATUS:
            if pattern.search(text):
                return status
        return None

    def _update_ticket_slots(self, text: str) -> Slots:
        slots: Slots = {}
        m = _TICKET_ID.search(text)
        if m:
            slots["ticket_id"] = int(m["id"] or m["id2"])
        status = self._status(text)
        if status:
            slots["status"] = status
        note = text
        if m:
            note = cut(note, m.span())
        note = re.sub(r"^(?:工单|ticket)", "", note.strip(), flags=re.I)
        for _, pattern in _STATUS:
            sm = pattern.search(note)
            if sm:
                note = cut(note, sm.span())
                break
        note = re.sub(r"^(?:工单|的|了|已|已经|,|，|\s)+", "", note)
        note = re.sub(r"(?:原因|方案|处理|说明|备注)\s*[:：]\s*", "", note)
        note = clean(note)
        if note:
            slots["content"] = note
        return slots

    def _ticket_slots(self, text: str, command: bool) -> Slots:
        slots: Slots = {}
        if command:
            name = self._command_customer(text) if text else ""
            if name:
                slots.update(self._customer_slot(text, name))
                body = text.replace(name, "", 1)
            else:
                body = text
        else:
            slots.update(self._customer_slot(text, self._guess_customer(text)))
            mentions = self.vocabulary.customers_in(text)
            body = cut(text, (mentions[0].start, mentions[0].end)) if mentions else text
            guessed = self._guess_customer(text)
            if guessed:
                body = body.replace(guessed, " ", 1)
        urgent = _URGENT.search(body)
        slots["priority"] = "urgent" if urgent else "normal"
        body = re.sub(r"(?:优先级|级别)\s*[:：]?\s*(?:紧急|普通|一般|高|低)", " ", body)
        body = re.sub(
            r"(?:帮忙|帮我|麻烦|请)?(?:给他们|给客户|给)?(?:开|建|提|报|起|派|创建|新建|登记)(?:一)?(?:个|张|一个|一张|下)?(?:紧急|加急)?(?:的)?(?:工单|售后单|维修单)"
            r"|(?:紧急|加急)(?:工单)?|十万火急|很急|火急|(?<![a-z])urgent|优先级|报修|工单",
            " ",
            body,
            flags=re.I,
        )
        content = clean(re.sub(r"\s+", " ", body))
        content = re.sub(r"^(?:的|那边的|这边的|帮|给|替|为)\s*", "", content)
        content = clean(content)
        if content:
            slots["content"] = content
        return slots

    def _approval_slots(self, text: str, rest: str, now: datetime) -> Slots:
        slots: Slots = {}
        m = _APPROVAL_ID.search(rest)
        if m:
            slots["approval_id"] = re.sub(r"\s+", "", m["id"]).upper()
            rest = cut(rest, m.span())
        elif m2 := _BARE_APPROVAL_NUMBER.search(rest) or re.match(r"^\s*(?P<id>\d+)\b", rest):
            slots["approval_id"] = f"AP{m2['id']}"
            rest = cut(rest, m2.span())
        reason = re.sub(r"^(?:撤回|撤销|撤掉|取消|驳回|拒绝|不同意|不批|同意|批准|通过|批了)", "", rest.strip())
        reason = re.sub(r"(?:折扣)?申请|审批|^(?:理由|原因|备注)\s*[:：]?", "", reason)
        reason = re.sub(r"^(?:理由|原因|因为|备注)\s*[:：]?\s*", "", clean(reason))
        reason = clean(reason)
        if reason:
            slots["reason"] = reason
        return slots

    def _discount_slots(self, text: str, rest: str, now: datetime) -> Slots:
        slots: Slots = {}
        body = rest
        mentions = self.vocabulary.customers_in(body)
        if mentions:
            slots.update(self._customer_slot(body))
            body = cut(body, (mentions[0].start, mentions[0].end))
        elif body is not text:  # command form: the first word is the customer
            name = self._command_customer(body)
            if name and not find_discount(name) and not find_amount(name):
                slots["customer"] = self.vocabulary.stored_or_typed(name)
                body = body.replace(name, " ", 1)
        reason_marker = re.search(r"(?:理由|原因|因为|由于|说明|备注)\s*[:：是]?\s*", body)
        reason_text = ""
        if reason_marker:
            reason_text = body[reason_marker.end() :]
            body = body[: reason_marker.start()]
        d = find_discount(body)
        if d:
            slots["discount"] = d.value
            body = cut(body, (d.start, d.end))
        a = find_amount(body)
        if a:
            slots["amount"] = whole(a.value)
            body = cut(body, (a.start, a.end))
        if not reason_text and rest is text:
            # Free phrasing: the reason is whichever clause is not the customer, discount or amount.
            clauses = [c for c in re.split(r"[，,。；;！!]", text) if c.strip()]
            others = [
                c
                for c in clauses
                if not find_discount(c)
                and not find_amount(c)
                and not (
                    self.vocabulary.customers_in(c)
                    and len(clean(cut(c, *[(m.start, m.end) for m in self.vocabulary.customers_in(c)]))) <= 2
                )
            ]
            reason_text = "，".join(clean(c) for c in others)
        elif not reason_text:
            reason_text = body
        reason_text = re.sub(
            r"申请折扣|折扣申请|申请|折扣|打折|帮忙|请批|给个|想要|要个|能不能|可否|合同|金额|要求|希望|,|。",
            " ",
            reason_text,
        )
        reason_text = clean(re.sub(r"\s+", " ", reason_text))
        if reason_text and not reason_text.isdigit():
            slots["reason"] = reason_text
        return slots

    def _search_filters(self, body: str, now: datetime) -> tuple[Slots, str]:
        """The customer (客户:名称) and time-range (近3年) filters of a search, and the text without them."""
        slots: Slots = {}
        m = _CUSTOMER_FILTER.search(body)
        if m:
            slots["customer"] = self.vocabulary.stored_or_typed(m["c"])
            body = cut(body, m.span())
        since = self.times.find_since(body, now)
        if since:
            slots["since"] = iso(since.value)
            body = cut(body, (since.start, since.end))
        return slots, body

    def _search_slots(self, text: str, rest: str, now: datetime) -> Slots:
        slots, body = self._search_filters(rest, now)
        query = clean(_SEARCH_TAIL.sub("", body.strip()))
        if query:
            slots["query"] = query
        return slots

    def _search_free_slots(self, text: str, now: datetime) -> Slots:
        slots, body = self._search_filters(text, now)
        mentions = self.vocabulary.customers_in(body)
        if (
            mentions
            and "customer" not in slots
            and re.search(re.escape(mentions[0].surface) + r"\s*(?:的|那边|聊|里|中|说)", body)
        ):
            slots.update(self._customer_slot(body))
            body = cut(body, (mentions[0].start, mentions[0].end))
        q = _SEARCH_FREE.search(body)
        query = (q["q"] or q["q2"] or q["q3"] or "") if q else _SEARCH_CMD.sub("", body)
        query = re.sub(r"(?:有关|关于|相关的?|提到|里的|里|中的?|的聊天记录|聊天记录|记录|包含|含有)", " ", query)
        query = clean(re.sub(r"\s+", " ", query))
        query = re.sub(r"^(?:的|聊过|说过|提过)", "", query).strip()
        if query:
            slots["query"] = query
        return slots

    def _remind_slots(self, text: str, rest: str, now: datetime) -> Slots:
        slots: Slots = {}
        moment = self.times.find_moment(text, now)
        body = text
        if moment:
            slots["at"] = iso(moment.value)
            body = cut(body, (moment.start, moment.end))
        slots.update(self._customer_slot(text))
        body = re.sub(r"^(?:remind(?:\s+me)?)", "", body, flags=re.I)
        body = re.sub(r"(?:记得|到时候|别忘了|请)?(?:提醒一下我|提醒我一下|提醒我|提醒一下|提醒)(?:一下)?", " ", body)
        content = clean(re.sub(r"\s+", " ", body))
        content = re.sub(r"^(?:要|去|该)(?=.)", "", content) if len(content) > 3 else content
        if content:
            slots["content"] = content
        return slots

    def _next_at(self, text: str, now: datetime) -> tuple[str | None, tuple[int, int] | None]:
        offset = 0
        remaining = text
        for _ in range(4):
            moment = self.times.find_moment(remaining, now)
            if moment is None:
                return None, None
            if moment.value > now:
                return iso(moment.value), (offset + moment.start, offset + moment.end)
            offset += moment.end
            remaining = remaining[moment.end :]
        return None, None

    def _follow_command_slots(self, text: str, rest: str, now: datetime) -> Slots:
        slots: Slots = {}
        customer, body = self._split_customer(rest)
        slots.update(customer)
        content = clean(body)
        if content:
            slots["content"] = content
        next_at, _ = self._next_at(content, now)
        if next_at:
            slots["next_at"] = next_at
        return slots

    def _follow_free_slots(self, text: str, now: datetime) -> Slots:
        slots: Slots = {}
        mentions = self.vocabulary.customers_in(text)
        guessed = None if mentions else self._guess_customer(text)
        slots.update(self._customer_slot(text, guessed))
        content = text
        # "跟进了华为，下周三再聊报价": the lead-in is not part of the note.
        lead = re.match(r"^(?:今天|刚才|刚刚|上午|下午|已经)?(?:跟进了?|跟进一下|跟进过|联系了|回访了?)\s*", text)
        surface = mentions[0].surface if mentions else guessed
        if lead and surface and text[lead.end() :].startswith(surface):
            content = text[lead.end() + len(surface) :]
        elif surface and text.startswith(surface):
            tail = text[len(surface) :]
            if re.match(r"^\s*[,，:：]", tail):
                content = tail
        content = clean(content)
        if content:
            slots["content"] = content
        next_at, _ = self._next_at(text, now)
        if next_at:
            slots["next_at"] = next_at
        return slots

    def _split_customer(self, rest: str) -> tuple[Slots, str]:
        """The customer slot named at the start of a command's arguments, and the arguments without that name."""
        name = self._command_customer(rest)
        if not name:
            return {}, rest
        return self._customer_slot(rest, name), rest.replace(name, " ", 1)

    def _stage_command_slots(self, text: str, rest: str, now: datetime) -> Slots:
        slots: Slots = {}
        customer, body = self._split_customer(rest)
        slots.update(customer)
        m = _STAGE_CMD_VALUE.search(body)
        if m:
            slots["stage"] = STAGE_WORDS[m["word"].lower()]
        return slots

    def _stage_free(self, text: str) -> str | None:
        if m := _STAGE_MOVE.search(text):
            return STAGE_WORDS[m["word"].lower()]
        if m := _STAGE_EVENT.search(text):
            return "won" if m["won"] else "lost" if m["lost"] else "intent"
        if m := re.search(r"(?P<word>潜在|意向|方案|报价|谈判|成交|流失)\s*阶段", text):
            return STAGE_WORDS[m["word"]]
        return None

    def _grade_command_slots(self, text: str, rest: str, now: datetime) -> Slots:
        slots: Slots = {}
        customer, body = self._split_customer(rest)
        slots.update(customer)
        m = _GRADE.search(body)
        if m:
            slots["grade"] = m["g"].upper()
        return slots

    def _tag_lists(self, body: str) -> Slots:
        add: list[str] = []
        remove: list[str] = []
        body = re.sub(r"标签|tag", " ", body, flags=re.I)
        # Explicit +x / -x first.
        for sign, word in re.findall(r"(?:^|\s)([+\-])\s*([^\s+\-,，、;；]+)", body):
            (add if sign == "+" else remove).append(word)
        body = re.sub(r"(?:^|\s)[+\-]\s*[^\s+\-,，、;；]+", " ", body)
        tail = re.match(r"^(?P<tags>[^+\-]*?)\s*(?:去掉|去除|删除|删掉|移除|取消|拿掉)(?:吧|了|掉)?$", body.strip())
        if tail and tail["tags"].strip() and not re.search(r"加|添加|增加|打上|贴上", tail["tags"]):
            body = "去掉 " + tail["tags"]
        parts = re.split(r"(去掉|去除|删除|删掉|移除|取消|拿掉|不要|remove|del)", body)
        target = add
        for part in parts:
            if re.fullmatch(r"去掉|去除|删除|删掉|移除|取消|拿掉|不要|remove|del", part):
                target = remove
                continue
            part = re.sub(
                r"加上|加个|加|添加|增加|打上|打个|贴上|贴个|贴|标记为|标为|标记|设为|add|的|给|把|一个|个", " ", part
            )
            for word in re.split(r"[\s,，、;；和及与/]+", part):
                word = re.sub(r"^的|的$", "", clean(word))
                if word and word not in add and word not in remove:
                    target.append(word)
        slots: Slots = {}
        if add:
            slots["add"] = add
        if remove:
            slots["remove"] = remove
        return slots

    def _tag_slots(self, text: str, rest: str, now: datetime) -> Slots:
        slots: Slots = {}
        customer, body = self._split_customer(rest)
        slots.update(customer)
        slots.update(self._tag_lists(body))
        return slots

    def _tag_free_slots(self, text: str) -> Slots:
        slots = self._customer_slot(text, self._guess_customer(text))
        mentions = self.vocabulary.customers_in(text)
        body = cut(text, (mentions[0].start, mentions[0].end)) if mentions else text
        guessed = self._guess_customer(text)
        if guessed:
            body = body.replace(guessed, " ", 1)
        body = re.sub(r"^(?:把|给|为|将)|这个客户|该客户|(?<=[把给为将])的|^的", " ", body.strip())
        slots.update(self._tag_lists(body))
        return slots

    def _transfer_slots(self, text: str, rest: str, now: datetime) -> Slots:
        slots: Slots = {}
        command = rest is not text
        staff = self.vocabulary.staff_in(rest)
        body = rest
        if staff:
            target = staff[-1]
            slots["to_staff"] = target.surface
            body = cut(body, (target.start, target.end))
        else:
            m = re.search(
                r"(?:负责人(?:改成|改为|换成|换为|变更为|调整为|设为)|转给|转交给?|移交给?|交给|转到|转移给?|划给|分给|分配给|改由|由|给)\s*(?P<s>[^\s,，。的]{2,4}?)(?:跟进|负责|管|来跟|$|[\s,，。])",
                rest,
            )
            if m:
                slots["to_staff"] = m["s"]
                body = cut(body, m.span("s"))
            elif command:
                words = body.split()
                if len(words) >= 2:
                    slots["to_staff"] = words[-1]
                    body = " ".join(words[:-1])
        mentions = self.vocabulary.customers_in(body)
        if mentions:
            slots.update(self._customer_slot(body))
        elif command and body.split():
            slots["customer"] = self.vocabulary.stored_or_typed(body.split()[0])
        else:
            guessed = self._guess_customer(text)
            if guessed:
                slots["customer"] = guessed
        return slots

    def _nps_slots(self, text: str, rest: str, now: datetime) -> Slots:
        period = self.times.find_period(text, now)
        return {"period": period.value} if period else {}

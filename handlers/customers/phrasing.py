"""How the customer intents are recognized: command words (新建客户, 阶段, 等级, 标签, 转交, 客户) and free phrasing
(比亚迪 赢单了, 把金风科技转给李四跟进, 华为怎么样了)."""

from __future__ import annotations

import re

from bot.nlu.reading import Reading, Result, Slots
from bot.nlu.text import clean, cut
from handlers.customers.capability import capability

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
    # A name is at most 30 characters: unbounded, the lazy run before 建档 is retried from every position of a long
    # line, which made reading it quadratic in its length.
    r"|(?:给|帮我)?(?P<c3>[^\s,，。；;]{1,30}?)建(?:个)?档"
)
SHOW_CUE = re.compile(
    r"资料|情况|怎么样|咋样|如何|信息|详情|档案|客户卡|概况|画像|进展|状态|最近|看看|查查|查看|查一下|看一下|查下|看下|profile",
    re.I,
)


# -- commands ------------------------------------------------------------------------------------------------------


@capability.command(_CREATE_CUSTOMER, order=10)
def create_customer_command(r: Reading, rest: str) -> Result | None:
    name = re.split(r"[\s,，;；]", rest, maxsplit=1)[0] if rest else ""
    return ("create_customer", {"customer": name}) if name else None


@capability.command(re.compile(r"^(?:阶段|改阶段|设置阶段|stage)(?:\s+|[:：]|(?=\S))", re.I), order=100)
def stage_command(r: Reading, rest: str) -> Result:
    slots, body = r.split_customer(rest)
    if m := _STAGE_CMD_VALUE.search(body):
        slots["stage"] = STAGE_WORDS[m["word"].lower()]
    return "set_stage", slots


@capability.command(re.compile(r"^(?:等级|评级|改等级|设置等级|grade)(?:\s+|[:：]|(?=\S))", re.I), order=110)
def grade_command(r: Reading, rest: str) -> Result:
    slots, body = r.split_customer(rest)
    if m := _GRADE.search(body):
        slots["grade"] = m["g"].upper()
    return "set_grade", slots


@capability.command(re.compile(r"^(?:打标签|加标签|标签|tag)(?:\s+|[:：]|(?=\S))", re.I), order=120)
def tag_command(r: Reading, rest: str) -> Result:
    slots, body = r.split_customer(rest)
    slots.update(tag_lists(body))
    return "tag", slots


@capability.command(re.compile(r"^(?:转交|移交|转移|转客户|transfer)(?:\s+|[:：]|(?=\S))", re.I), order=130)
def transfer_command(r: Reading, rest: str) -> Result:
    return "transfer", transfer_slots(r, rest, command=True)


@capability.command(
    re.compile(
        r"^(?:客户资料|客户卡|客户|查看客户|查看|看看|查一下|查|show|customer|profile)(?:\s+|[:：]|(?=\S))", re.I
    ),
    order=150,
)
def show_command(r: Reading, rest: str) -> Result | None:
    if not rest:
        return None
    name = r.command_customer(rest)
    leftover = clean(rest.replace(name, "", 1)) if name else rest
    # "客户 华为 跟进了…" is not a profile request: let free phrasing decide.
    if leftover and not SHOW_CUE.fullmatch(leftover):
        return None
    if not r.vocabulary.resolve(name):
        free = r.phrased()
        if free[0] != "unknown":
            return free
    return "show_customer", {"customer": r.vocabulary.stored_or_typed(name)}


# -- free phrasing ---------------------------------------------------------------------------------------------------


@capability.phrase(order=60)
def create_customer_phrase(r: Reading) -> Result | None:
    if r.question:
        return None
    if m := _CREATE_CUSTOMER_FREE.search(r.text):
        name = m["c"] or m["c2"] or m["c3"]
        if name and not r.customers:
            return "create_customer", {"customer": clean(name)}
    return None


@capability.phrase(order=70)
def transfer_phrase(r: Reading) -> Result | None:
    if r.question:
        return None
    text = r.text
    staff_named = r.vocabulary.staff_in(text)
    handed = staff_named and re.search(
        rf"(?:由|归|让)\s*{re.escape(staff_named[-1].surface)}\s*(?:来)?(?:跟进|负责|接手|对接|管)", text
    )
    if (_TRANSFER.search(text) or handed) and (staff_named or re.search(r"转给|转交|移交|交给(?!了)", text)):
        slots = transfer_slots(r, text, command=False)
        if slots.get("to_staff"):
            return "transfer", slots
    return None


@capability.phrase(order=100)
def stage_phrase(r: Reading) -> Result | None:
    if r.question:
        return None
    text = r.text
    stage = _stage_free(text)
    if stage is not None and (r.customers or re.search(r"阶段", text) or r.guess_customer(text)):
        return "set_stage", {**r.customer_slot(text, r.guess_customer(text)), "stage": stage}
    return None


@capability.phrase(order=110)
def grade_phrase(r: Reading) -> Result | None:
    if r.question:
        return None
    text = r.text
    grade = _GRADE_FREE.search(text)
    if grade and (r.customers or re.search(r"等级|评级|级别", text) or r.guess_customer(text)):
        g = (grade["g"] or grade["g2"] or grade["g3"]).upper()
        return "set_grade", {**r.customer_slot(text, r.guess_customer(text)), "grade": g}
    return None


@capability.phrase(order=120)
def tag_phrase(r: Reading) -> Result | None:
    if r.question:
        return None
    text = r.text
    if not (_TAG_WORD.search(text) and (r.customers or "标签" in text)):
        return None
    slots = r.customer_slot(text, r.guess_customer(text))
    mentions = r.vocabulary.customers_in(text)
    body = cut(text, (mentions[0].start, mentions[0].end)) if mentions else text
    guessed = r.guess_customer(text)
    if guessed:
        body = body.replace(guessed, " ", 1)
    body = re.sub(r"^(?:把|给|为|将)|这个客户|该客户|(?<=[把给为将])的|^的", " ", body.strip())
    slots.update(tag_lists(body))
    return "tag", slots


def show_leftover(r: Reading) -> str:
    """What the line says besides the first customer it names."""
    mention = r.customers[0]
    return clean(cut(r.text, (mention.start, mention.end)))


@capability.phrase(order=140)
def show_phrase(r: Reading) -> Result | None:
    """A customer named with nothing else, or with a word asking how they are: the profile."""
    if not r.customers:
        return None
    leftover = show_leftover(r)
    if not leftover or (SHOW_CUE.search(leftover) and len(leftover) <= 8) or len(leftover) <= 2:
        return "show_customer", r.customer_slot(r.text)
    return None


# -- slot extractors -------------------------------------------------------------------------------------------------


def _stage_free(text: str) -> str | None:
    if m := _STAGE_MOVE.search(text):
        return STAGE_WORDS[m["word"].lower()]
    if m := _STAGE_EVENT.search(text):
        return "won" if m["won"] else "lost" if m["lost"] else "intent"
    if m := re.search(r"(?P<word>潜在|意向|方案|报价|谈判|成交|流失)\s*阶段", text):
        return STAGE_WORDS[m["word"]]
    return None


def tag_lists(body: str) -> Slots:
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


def transfer_slots(r: Reading, rest: str, *, command: bool) -> Slots:
    slots: Slots = {}
    text = r.text
    staff = r.vocabulary.staff_in(rest)
    body = rest
    if staff:
        target = staff[-1]
        slots["to_staff"] = target.surface
        body = cut(body, (target.start, target.end))
    else:
        m = re.search(
            r"(?:负责人(?:改成|改为|换成|换为|变更为|调整为|设为)|转给|转交给?|移交给?|交给|转到|转移给?|划给|分给|分配给|改由|由|给)\s*(?P<s>我自己|我|自己|[^\s,，。的]{2,4}?)(?:吧|啦|了)?(?:跟进|负责|管|来跟|$|[\s,，。])",
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
    mentions = r.vocabulary.customers_in(body)
    if mentions:
        slots.update(r.customer_slot(body))
    elif command and body.split():
        slots["customer"] = r.vocabulary.stored_or_typed(body.split()[0])
    else:
        guessed = r.guess_customer(text)
        if guessed:
            slots["customer"] = guessed
    return slots

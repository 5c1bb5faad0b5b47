"""Lines that must not become a write: questions about a customer are read (the profile, a search of the chats, the
change history), actions the bot does not offer get a friendly refusal, and a line that names a customer without
saying what to do gets a numbered question (1 记录跟进 2 查看客户 3 搜索聊天记录) whose answer picks the reading,
slots and all (``bot.resolution.ask_intent``); nothing is written before that answer."""

from __future__ import annotations

import re

from bot.capability import Capability
from bot.context import Context, Slots
from bot.nlu.cues import QUESTION
from bot.nlu.reading import Reading, Result, tidy
from bot.nlu.text import cut
from bot.resolution import ask_intent
from bot.types import IncomingMessage, Reply
from bot.understanding import Parsed
from handlers.customers.phrasing import show_leftover

capability = Capability("clarify")

_DELETE = re.compile(r"删除|删掉|删了|删去|移除|注销|合并")
_DELETE_FILLER = re.compile(
    r"^(?:请|帮我|帮忙|麻烦)|把|客户资料|客户档案|这个客户|客户|档案|资料|的|吧|掉|了|一下|[，,。！!:：\s]"
)
_HISTORY = re.compile(
    r"操作记录|修改记录|变更记录|改动记录|操作历史|修改历史|变更历史|历史记录"
    r"|谁(?:把.{0,12}?)?(?:改|动|修改|调整|变更|设置|设的|删|换|转|加|调)|(?:被)?(?:谁|什么时候|何时)(?:改|动)(?:了|过)?"
)
_FIELDS = (("stage", re.compile(r"阶段")), ("grade", re.compile(r"等级|评级|级别")), ("tags", re.compile(r"标签")),
           ("owner_id", re.compile(r"负责人|归属")))  # fmt: skip
_SAID = re.compile(r"说|讲|提到|提过|提了|聊了|聊过|聊的|问了|问过|问的|反馈|回复|谈到|谈了|讨论")
_CHATS = re.compile(r"聊天记录|聊天|消息|对话")
_NOT_TOPIC = re.compile(
    r"的事情|的事|事情|提没提|说没说|聊没聊|讲没讲|问没问|"
    + _SAID.pattern
    + "|"
    + QUESTION.pattern
    + r"|有没有|没有|没|上次|上回|最近|之前|以前|那边|这边|客户"
    r"|聊天记录|聊天|消息|对话|记录|帮我|帮忙|查查|查一下|查下|搜一下|搜|看看|里面|里|跟我们|和我们|我们|跟我|和我|关于|有关|过|的|在|[?？]"
    r"|上周|这周|本周|上个?月|这个?月|本月|昨天|前天|今天|近期|前几天|这几天"
)
LABELS = {"follow_up": "记录跟进", "show_customer": "查看客户", "search": "搜索聊天记录"}


# -- recognition -----------------------------------------------------------------------------------------------------


@capability.phrase(order=5)
def unsupported_phrase(r: Reading) -> Result | None:
    """删除客户 比亚迪, 把比亚迪删了: nothing the bot does, so a refusal that says what it can do instead."""
    text = r.text
    action = _DELETE.search(text)
    if action is None:
        return None
    mentions = r.customers
    rest = cut(text, action.span(), *((m.start, m.end) for m in mentions[:1]))
    if _DELETE_FILLER.sub("", rest):
        return None  # something else is deleted (a tag, a reminder)
    if not mentions and not re.match(r"^(?:删除|删掉|移除|注销)客户", text):
        return None
    verb = "合并" if action[0] == "合并" else "删除"
    slots: Slots = {"action": f"{verb}客户"}
    slots.update(r.customer_slot(text) if mentions else {"customer": _DELETE_FILLER.sub("", rest)} if rest else {})
    return "unsupported", slots


@capability.phrase(order=25)
def question_phrase(r: Reading) -> Result | None:
    """A question about a customer, or its change history: read, never recorded. Early, so that no phrase that
    edits a customer sees it (华为的联系人是谁 is no new contact called 谁)."""
    if not r.customers:
        return None
    customer = r.customer_slot(r.text)
    if _HISTORY.search(r.text):
        fields = [name for name, pattern in _FIELDS if pattern.search(r.text)]
        return "history", {**customer, **({"field": fields[0]} if fields else {})}
    if not r.question:
        return None
    if _SAID.search(r.text) or _CHATS.search(r.text):
        mention = r.customers[0]
        topic = tidy(_NOT_TOPIC.sub(" ", cut(r.text, (mention.start, mention.end))))
        if topic:
            return "search", {**customer, "query": topic}
    return "show_customer", customer


@capability.phrase(order=170)
def unsure_phrase(r: Reading) -> Result | None:
    """A customer and words that say neither what to record nor what to look up: ask which was meant."""
    if not r.customers or r.question:
        return None
    customer = r.customer_slot(r.text)
    leftover = show_leftover(r)
    follow_up: Slots = {**customer, "content": leftover}
    next_at, where = r.next_at(leftover)
    if next_at:
        follow_up["next_at"] = next_at
    options = [Parsed("follow_up", follow_up), Parsed("show_customer", customer)]
    query = tidy(cut(leftover, where))
    if query:
        options.append(Parsed("search", {**customer, "query": query}))
    return "clarify", {**customer, "options": [{"intent": o.intent, "slots": o.slots} for o in options]}


# -- the intents -----------------------------------------------------------------------------------------------------


def describe(option: Parsed) -> str:
    """One option of the question as the rep reads it."""
    label = LABELS.get(option.intent, option.intent)
    if option.intent == "follow_up":
        return f"{label}：{option.slots.get('content', '')}"
    if option.intent == "search":
        return f"{label}：「{option.slots.get('query', '')}」"
    return f"{label}「{option.slots.get('customer', '')}」"


@capability.intent("clarify")
async def clarify(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """问清您想做什么（记录跟进、查看客户或搜索聊天记录）"""
    options = [Parsed(str(o["intent"]), dict(o["slots"])) for o in slots.get("options") or []]
    await ask_intent(ctx.staff.id, options, ctx.now, ctx.conn)
    lines = ["您是想："]
    lines.extend(f"{i}. {describe(option)}" for i, option in enumerate(options, 1))
    lines.append("请回复序号，例如「1」；在您回复之前我什么都不会记录。")
    return Reply("\n".join(lines))


@capability.intent("unsupported")
async def unsupported(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """说明做不到的操作，以及可以怎么做"""
    name = str(slots.get("customer") or "").strip()
    what = f"「{name}」" if name else ""
    short = name or "华为"
    return Reply(
        f"抱歉，我不能{slots.get('action') or '删除客户'}{what}：客户档案和聊天记录会一直保留，人员变动也不会丢。"
        f"您可以把客户转给同事（「把{short}转给李四」），或标记为流失（「{short} 丢单了」）；"
        "需要清理数据请联系管理员。发送「帮助」查看我能做的事。"
    )

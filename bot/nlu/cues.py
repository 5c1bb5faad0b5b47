"""Cue words several capabilities' matchers look for: a fault or complaint, urgency, a contact with the customer, a
question.

They are vocabulary of the business rather than of one intent: a fault opens a ticket, but it also means a line
about NPS is not an NPS question, and a contact cue decides between logging a visit and opening a ticket. A question
is never evidence of a write: a line that asks (``asks``) is read, not recorded, unless it also states a contact or
an explicit request.
"""

from __future__ import annotations

import re

URGENT = re.compile(r"紧急|加急|很急|十万火急|火急|急|urgent|马上|尽快|立刻|赶紧|赶快|停产|停机|停工|停线|严重", re.I)
FAULT = re.compile(
    r"故障|坏了|坏掉|损坏|不能用|用不了|不好用|漏油|漏水|渗油|异响|报警|停机|停产|失灵|卡死|不工作|不转|出问题|(?<!没)有问题|(?<!什么)(?<!没有)(?<!没)问题|报错|维修|修一下|投诉|售后|"
    r"停了|停线|停工|破损|派工程师|派人|派个人|上门维修|来修|跳闸|上不去|不正常|异常|开不了机|启动不了|无法启动|死机|过热|冒烟|烧坏|烧了|爆了"
)
CONTACT = re.compile(
    r"跟进|拜访|回访|走访|见了|见面|面谈|碰了|碰面|约了|约见|打了?电话|通了电话|电话沟通|电话联系|电话里|微信沟通|微信聊|微信上|"
    r"沟通|聊了|聊过|谈了|谈过|开会|开了会|发了|发过|去了|联系了|联系过|来访|参观|演示|交流|汇报|寄了|送了|拜会|"
    r"记录一下|记一下|记录|备注|答复|回复了|确认了|调试"
)

# A question: a question mark, 吗 or a question word. Declarative uses of the same words (没什么, 过几天, 有什么
# 问题随时联系) and questions the line reports someone asked (客户问有没有现货) do not make a line a question.
QUESTION = re.compile(
    r"[?？]|吗|谁|什么|啥|哪|多少|有没有|有无|是不是|是否|怎么|怎样|为什么|为何|为啥|咋|可不可以|能不能|要不要"
    r"|(?<![过这前近好十头])几(?![十百千万])|呢\s*$|么(?=\s*(?:[，,。；;！!？?]|$))|(?:了|过)没(?:有)?\s*$"
)
_INDEFINITE = re.compile(
    r"没(?:什么|啥|多少|有什么)|(?:有|需要)什么(?:问题|需要|事情?)?(?:随时|再|就|可以)|不管|无论|不知道|不清楚"
    r"|(?:能不能|可不可以|要不要)(?=.{0,20}(?:申请|帮|批|给))"
)
_REPORTED = re.compile(r"问|询问|咨询|打听|想知道|确认一下|看看")
# A clause that starts by saying someone asked (问上次的报价还有效吗) reports their question.
_ASKED_OF_US = re.compile(r"^\s*(?:客户|对方|他们|他|她|老板|采购)?(?:问|询问|咨询|打听)")
_CLAUSES = re.compile(r"[^，,。；;！!？?\n]+[？?]?")
# What a line must state, outside its questions, for a question in it not to decide: a contact or an explicit request.
WRITE_CUE = re.compile(
    CONTACT.pattern + r"|申请|提醒我|工单|报修|派人|派个人|派工程师|上门|安排售后|建档|新建|转给|转交|移交|打上|加标签"
    r"|改[为成]|设为|评为|升为|降为|定为|列为|理由"
)


def is_question(clause: str) -> bool:
    """One clause asks something (its own question, not one it reports)."""
    clause = clause.strip()
    if _ASKED_OF_US.match(clause):
        return False
    if re.search(r"(?:[?？]|吗|么)\s*$", clause):
        return True
    clause = _INDEFINITE.sub(" ", clause)
    m = QUESTION.search(clause)
    return m is not None and not _REPORTED.search(clause[: m.start()])


def asks(text: str) -> bool:
    """The line asks a question and states, besides, nothing a write could rest on."""
    if not QUESTION.search(text):
        return False  # most lines: one search and done
    clauses = _CLAUSES.findall(text)
    asked = [is_question(c) for c in clauses]
    if not any(asked):
        return False
    return not WRITE_CUE.search(" ".join(c for c, q in zip(clauses, asked, strict=True) if not q))

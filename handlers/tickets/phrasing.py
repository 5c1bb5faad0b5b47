"""How the ticket intents are recognized: 工单 … / 报修 … commands, 工单 #12 已解决, and a fault or complaint
described in free Chinese (华为的设备出故障了，紧急，帮忙开个工单)."""

from __future__ import annotations

import re

from bot.nlu.cues import CONTACT, FAULT, URGENT
from bot.nlu.reading import Reading, Result, Slots, tidy
from bot.nlu.text import cut
from handlers.tickets.capability import capability

TICKET_ID = re.compile(
    r"(?:#|＃|工单\s*(?:号|编号)?\s*[#:：]?\s*|单号\s*[:：]?\s*|no\.?\s*)(?P<id>\d{1,9})|(?P<id2>\d{1,9})\s*号工单",
    re.I,
)
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
_TICKET_WORD = re.compile(r"工单|报修|售后单|维修单|ticket", re.I)
_TICKET_CREATE = re.compile(r"开|建|提|报|起|派|创建|新建|登记|录")


def status_of(text: str) -> str | None:
    for status, pattern in _STATUS:
        if pattern.search(text):
            return status
    return None


# -- commands and phrases ----------------------------------------------------------------------------------------------


@capability.command(
    re.compile(r"^(?:新建工单|开工单|建工单|提工单|报修|工单|ticket)(?:\s+|[:：]|(?=\S))", re.I), order=60
)
def ticket_command(r: Reading, rest: str) -> Result:
    if TICKET_ID.search(r.text) and status_of(rest):
        return "update_ticket", update_slots(r.text)
    if TICKET_ID.search(rest) and not r.vocabulary.customers_in(rest):
        return "update_ticket", update_slots(r.text)
    return "create_ticket", ticket_slots(r, rest, command=True)


@capability.phrase(order=50)
def update_phrase(r: Reading) -> Result | None:
    if r.question:
        return None
    text = r.text
    if TICKET_ID.search(text) and (status_of(text) or ("工单" in text and not _TICKET_CREATE.search(text))):
        return "update_ticket", update_slots(text)
    return None


@capability.phrase(order=80)
def create_phrase(r: Reading) -> Result | None:
    if r.question:
        return None
    text = r.text
    fault = FAULT.search(text) and (r.customers or URGENT.search(text))
    if (_TICKET_WORD.search(text) or fault) and (
        not CONTACT.search(text) or _TICKET_WORD.search(text) or URGENT.search(text)
    ):
        return "create_ticket", ticket_slots(r, text, command=False)
    return None


@capability.phrase(order=150)
def fault_phrase(r: Reading) -> Result | None:
    """A customer named with more than a profile question (the profile's phrase comes first), and a fault."""
    if r.question:
        return None
    if r.customers and FAULT.search(r.text):
        return "create_ticket", ticket_slots(r, r.text, command=False)
    return None


# -- slot extractors ---------------------------------------------------------------------------------------------------


def update_slots(text: str) -> Slots:
    slots: Slots = {}
    m = TICKET_ID.search(text)
    if m:
        slots["ticket_id"] = int(m["id"] or m["id2"])
    status = status_of(text)
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
    note = tidy(note)
    if note:
        slots["content"] = note
    return slots


def ticket_slots(r: Reading, text: str, *, command: bool) -> Slots:
    slots: Slots = {}
    if command:
        name = r.command_customer(text) if text else ""
        if name:
            slots.update(r.customer_slot(text, name))
            body = text.replace(name, "", 1)
        else:
            body = text
    else:
        slots.update(r.customer_slot(text, r.guess_customer(text)))
        mentions = r.vocabulary.customers_in(text)
        body = cut(text, (mentions[0].start, mentions[0].end)) if mentions else text
        guessed = r.guess_customer(text)
        if guessed:
            body = body.replace(guessed, " ", 1)
    urgent = URGENT.search(body)
    slots["priority"] = "urgent" if urgent else "normal"
    body = re.sub(r"(?:优先级|级别)\s*[:：]?\s*(?:紧急|普通|一般|高|低)", " ", body)
    body = re.sub(
        r"(?:帮忙|帮我|麻烦|请)?(?:给他们|给客户|给)?(?:开|建|提|报|起|派|创建|新建|登记)(?:一)?(?:个|张|一个|一张|下)?(?:紧急|加急)?(?:的)?(?:工单|售后单|维修单)"
        r"|(?:紧急|加急)(?:工单)?|十万火急|很急|火急|(?<![a-z])urgent|优先级|报修|工单",
        " ",
        body,
        flags=re.I,
    )
    content = tidy(body)
    content = re.sub(r"^(?:的|那边的|这边的|帮|给|替|为)\s*", "", content)
    content = tidy(content)
    if content:
        slots["content"] = content
    return slots

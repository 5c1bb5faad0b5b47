"""The approval intents and how they are recognized: 申请折扣 … (and free phrasing such as 华为要个九折，竞争对手报价
更低), 同意 / 驳回 #AP12 (typed, or the command a tapped card button stands for) and 撤回 #AP12."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from bot.access import visible_to
from bot.context import Context, Slots
from bot.nlu.cues import is_question
from bot.nlu.numbers import find_amount, find_discount, whole
from bot.nlu.reading import Reading, Result, tidy
from bot.nlu.text import clean, cut
from bot.types import IncomingMessage, Reply
from handlers.approvals.capability import capability
from handlers.approvals.cards import amount_text, discount_long, parse_code
from handlers.approvals.routing import ROLE_LABELS
from handlers.approvals.workflow import decide, open_request
from handlers.approvals.workflow import withdraw as withdraw_request

USAGE = "请这样申请：「申请折扣 华为 85折 合同金额120万 年度框架协议」（客户、折扣必填，金额和理由建议写上）。"

_APPROVAL_ID = re.compile(r"#?\s*(?P<id>AP\s*\d+)", re.I)
_BARE_APPROVAL_NUMBER = re.compile(r"#\s*(?P<id>\d+)")
# Numbers start where their run starts, so a long run of digits is read once (linear), not once per position.
_DISCOUNT_CUE = re.compile(
    r"折扣|打折|(?<!\d)\d+(?:\.\d+)?\s*折|(?<![一二三四五六七八九])[一二三四五六七八九]+\s*折|优惠|让利|降价|特价|折让|下浮"
)
_DISCOUNT_ASK = re.compile(r"申请|要|想|给|批|请批|求|能不能|可否|可以|报|走|提")
_APPROVE = re.compile(r"同意|批准|通过|批了|准了|可以|ok|approve|yes|没问题|行", re.I)
_REJECT = re.compile(r"驳回|拒绝|不同意|不批|不行|不通过|否决|打回|reject|no\b|不准|不可以|不能批", re.I)
_WITHDRAW = re.compile(r"撤回|撤销|撤掉|取消|withdraw|cancel|不申请了|不要了", re.I)


# -- recognition -------------------------------------------------------------------------------------------------------


def approval_slots(rest: str) -> Slots:
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
    reason = tidy(reason)
    if reason:
        slots["reason"] = reason
    return slots


def _statements(text: str) -> list[str]:
    """The clauses of ``text`` that state something: a question beside a request (华为能打几折？) is no reason."""
    return [c for c in re.split(r"[，,。；;！!？?]", text) if c.strip() and not is_question(c)]


def discount_slots(r: Reading, rest: str, *, command: bool) -> Slots:
    text = r.text
    slots: Slots = {}
    body = rest
    mentions = r.vocabulary.customers_in(body)
    if mentions:
        slots.update(r.customer_slot(body))
        body = cut(body, (mentions[0].start, mentions[0].end))
    elif command:  # the first word is the customer
        name = r.command_customer(body)
        if name and not find_discount(name) and not find_amount(name):
            slots["customer"] = r.vocabulary.stored_or_typed(name)
            body = body.replace(name, " ", 1)
    reason_marker = re.search(r"(?:理由|原因|因为|由于|说明|备注)\s*[:：是]?\s*", body)
    reason_text = ""
    if reason_marker:
        reason_text = body[reason_marker.end() :]
        body = body[: reason_marker.start()]
    d = find_discount(body)
    if d:
        slots["discount"] = d.value
        # 打个85折: the verb belongs to the discount, not to the reason.
        lead = re.search(r"(?:打个|打|要个|给个|申请个|来个)\s*$", body[: d.start])
        body = cut(body, (lead.start() if lead else d.start, d.end))
    a = find_amount(body)
    if a:
        slots["amount"] = whole(a.value)
        body = cut(body, (a.start, a.end))
    if not reason_text and not command:
        # Free phrasing: the reason is whichever clause is not the customer, discount or amount.
        clauses = _statements(text)
        others = [
            c
            for c in clauses
            if not find_discount(c)
            and not find_amount(c)
            and not (
                r.vocabulary.customers_in(c)
                and len(clean(cut(c, *[(m.start, m.end) for m in r.vocabulary.customers_in(c)]))) <= 2
            )
        ]
        # One clause (给华为打个85折 竞争对手报价更低): what is left of it once its parts are cut out.
        rest = " ".join(_statements(body)) if len(clauses) == 1 else ""
        reason_text = "，".join(clean(c) for c in others) if others else rest
    elif not reason_text:
        reason_text = body
    reason_text = re.sub(r"申请折扣|折扣申请|申请|折扣|打折|帮忙|帮我|请批|给个|想要|要个|,|。", " ", reason_text)
    # The rep's own words keep 能不能 / 要求 (客户问能不能再低点); only a lead-in is not the reason.
    reason_text = re.sub(r"^\s*(?:(?:能不能|可否|合同|金额|要求|希望)\s*)+", "", reason_text)
    reason_text = tidy(re.sub(r"^\s*(?:给|帮|为|替)(?=\s)", "", reason_text))
    if reason_text and not reason_text.isdigit():
        slots["reason"] = reason_text
    return slots


@capability.command(re.compile(r"^(?:申请折扣|折扣申请|申请优惠|折扣|discount)(?:\s+|[:：]|(?=[^\s]))", re.I), order=20)
def discount_command(r: Reading, rest: str) -> Result:
    return "request_discount", discount_slots(r, rest, command=True)


@capability.command(re.compile(r"^(?:撤回|撤销|withdraw)(?:\s+|[:：]|(?=[#A-Za-z0-9]))", re.I), order=30)
def withdraw_command(r: Reading, rest: str) -> Result:
    return "withdraw", approval_slots(rest)


def _decision(intent: str, rest: str) -> Result | None:
    slots = approval_slots(rest)
    return None if "approval_id" not in slots and not rest else (intent, slots)


@capability.command(re.compile(r"^(?:驳回|拒绝|不同意|reject)(?:\s+|[:：]|(?=[#A-Za-z0-9]))", re.I), order=40)
def reject_command(r: Reading, rest: str) -> Result | None:
    return _decision("reject", rest)


@capability.command(re.compile(r"^(?:同意|批准|通过|approve)(?:\s+|[:：]|(?=[#A-Za-z0-9]))", re.I), order=50)
def approve_command(r: Reading, rest: str) -> Result | None:
    return _decision("approve", rest)


@capability.phrase(order=10)
def decision_phrase(r: Reading) -> Result | None:
    """An approval id with a verb: 撤回/驳回/同意 #AP12 anywhere in the line."""
    if r.question:
        return None
    text = r.text
    if not _APPROVAL_ID.search(text):
        return None
    if _WITHDRAW.search(text):
        return "withdraw", approval_slots(text)
    if _REJECT.search(text):
        return "reject", approval_slots(text)
    if _APPROVE.search(text):
        return "approve", approval_slots(text)
    return None


@capability.phrase(order=40)
def discount_phrase(r: Reading) -> Result | None:
    if r.question:
        return None
    text = r.text
    if _DISCOUNT_CUE.search(text) and (find_discount(text) or re.search(r"折扣|优惠", text)):
        if re.search(r"撤回|撤销|取消", text) and re.search(r"申请", text):
            return "withdraw", approval_slots(text)
        if _DISCOUNT_ASK.search(text) or find_discount(text):
            return "request_discount", discount_slots(r, text, command=False)
    return None


# -- the intents -------------------------------------------------------------------------------------------------------


def _decimal(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


async def _request_problem(slots: Slots, ctx: Context) -> Reply | None:
    """A request without a customer or a discount below list price, or with a non-positive amount."""
    discount = _decimal(slots.get("discount"))
    amount = _decimal(slots.get("amount"))
    if not str(slots.get("customer") or "").strip():
        return Reply("请告诉我是哪个客户。" + USAGE)
    if discount is None:
        return Reply("请告诉我申请的折扣，例如「85折」或「优惠15%」。" + USAGE)
    if not Decimal("0") < discount < Decimal("1"):
        return Reply(f"折扣要低于原价才需要审批（您写的是原价的 {discount:f} 倍）。例如「85折」表示按原价的 85% 成交。")
    if amount is not None and amount <= 0:
        return Reply("合同金额需要大于 0，例如「合同金额120万」。")
    return None


@capability.intent(
    "request_discount",
    examples=["申请折扣 华为 85折 合同金额120万 年度框架协议"],
    order=70,
    customer=True,
    check=_request_problem,
)
async def request_discount(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply | str:
    """申请折扣审批"""
    discount = _decimal(slots.get("discount"))
    assert discount is not None  # checked by _request_problem
    amount = _decimal(slots.get("amount"))
    reason = str(slots.get("reason") or "").strip()
    customer = ctx.customer
    if not await visible_to(ctx.staff, customer):
        return f"「{customer.name}」不是您或您团队的客户，不能为它申请折扣。"
    request = await open_request(ctx, customer, discount, amount, reason)
    if request is None:
        return "暂时找不到可以审批您这笔折扣的人（需要您的上级、总监或管理员），请联系管理员设置汇报关系。"
    approval, chain = request.approval, request.chain
    route = " → ".join(f"{link.approver.name}（{ROLE_LABELS[link.role]}）" for link in chain)
    await ctx.audit(
        "approval.request",
        "approval",
        approval.code,
        after={
            "customer": customer.name,
            "discount": str(discount),
            "amount": None if amount is None else str(amount),
            "reason": reason,
            "chain": [link.approver.name for link in chain],
        },
    )
    return (
        f"已提交折扣申请 {approval.code}：{customer.name} {discount_long(discount)}，合同金额{amount_text(amount)}。\n"
        f"审批流程：{route}\n已发给{chain[0].approver.name}审批，每一步结果都会第一时间通知您。"
        f"如需撤回，请发「撤回 #{approval.code}」。"
    )


@capability.intent("approve", examples=["同意 #AP12"], order=71)
async def approve(msg: IncomingMessage, slots: Slots, ctx: Context) -> list[Reply]:
    """同意折扣申请"""
    reason = str(slots.get("reason") or "").strip()
    return await decide(ctx, parse_code(slots.get("approval_id")), True, reason, ctx.click)


@capability.intent("reject", examples=["驳回 #AP12 价格太低"], order=72)
async def reject(msg: IncomingMessage, slots: Slots, ctx: Context) -> list[Reply]:
    """驳回折扣申请"""
    reason = str(slots.get("reason") or "").strip()
    return await decide(ctx, parse_code(slots.get("approval_id")), False, reason, ctx.click)


@capability.intent("withdraw", examples=["撤回 #AP12"], order=73)
async def withdraw(msg: IncomingMessage, slots: Slots, ctx: Context) -> str:
    """撤回折扣申请"""
    return await withdraw_request(ctx, parse_code(slots.get("approval_id")))

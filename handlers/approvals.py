"""Discount approvals (折扣审批): request, route, decide by one tap or by text, withdraw, remind and escalate.

A rep types ``申请折扣 华为 85折 合同金额120万 年度框架协议``; the request is routed (``bot.approval_routing``) into a
chain of levels, and the approver of the current level gets a card whose buttons are the text commands
``同意 #AP12`` / ``驳回 #AP12``. On WeCom the tap comes back as a ``template_card_event`` carrying the card's task id
and a single-use response code; on DingTalk (and when typed anywhere, the console included) it arrives as the
approver's own text. Either way only the current approver of the current step can decide, once: the step flips
from pending with a conditional update under a lock on the approval row, so a double click, a replayed or stale
card, a forged task id or somebody else's click changes nothing and gets a polite answer. The clicked card is
updated to show the decision, the requester is told at every step, the outcome is written on the customer, and
every step lands in the audit log. Scheduled rules remind a silent approver, then escalate the request a level.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Subquery

from bot.approval_routing import ROLE_LABELS, approval_chain, escalation_target, levels_needed
from bot.channels import Address
from bot.intents import Context, IntentRouter, Slots, as_replies
from bot.rules import Firing, Rule, RuleContext, release_time
from bot.types import Button, Card, IncomingMessage, Reply
from handlers.customers import resolve, visible_to
from models.approvals import APPROVAL_STATUS_LABELS, Approval, ApprovalStatus, ApprovalStep, StepStatus
from models.audit import AuditLog
from models.customers import Customer
from models.outbox import OutboxMessage
from models.reminders import RuleFiring
from models.staff import Staff

router = IntentRouter()

CARD_FIELD_LIMIT = 30  # WeCom shows about this many characters of a card field value
_CODE = re.compile(r"^\s*#?\s*(?:AP)?\s*(\d{1,9})\s*$", re.IGNORECASE)
_CARD_KEY = re.compile(r"^\s*(同意|驳回)\s*#?\s*AP(\d{1,9})\s*$", re.IGNORECASE)

USAGE = "请这样申请：「申请折扣 华为 85折 合同金额120万 年度框架协议」（客户、折扣必填，金额和理由建议写上）。"


# ---------------------------------------------------------------- formatting


def parse_code(value: object) -> int | None:
    """``AP12``, ``#AP12`` or ``12`` → 12."""
    m = _CODE.match(str(value or ""))
    return int(m[1]) if m else None


def code_of(approval_id: int) -> str:
    return f"AP{approval_id}"


def discount_text(discount: Decimal) -> str:
    """0.85 → ``85折``, 0.9 → ``9折``, 0.875 → ``87.5折``."""
    pct = (Decimal(discount) * 100).quantize(Decimal("0.01")).normalize()
    if pct == pct.to_integral_value():
        whole = int(pct)
        return f"{whole // 10 if whole % 10 == 0 else whole}折"
    return f"{pct:f}折"


def discount_long(discount: Decimal) -> str:
    off = (100 - Decimal(discount) * 100).quantize(Decimal("0.01")).normalize()
    return f"{discount_text(discount)}（优惠{off:f}%）"


def amount_text(amount: Decimal | None) -> str:
    if amount is None:
        return "未填写"
    amount = Decimal(amount)
    if amount >= 10000:
        return f"{(amount / 10000).quantize(Decimal('0.0001')).normalize():f}万元"
    return f"{amount.quantize(Decimal('0.01')).normalize():f}元"


def stamp(moment: datetime | None, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime("%m-%d %H:%M") if moment else ""


def _short(text: str, limit: int = CARD_FIELD_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary(approval: Approval, customer: Customer) -> str:
    return f"{customer.name} {discount_text(approval.discount)} 合同金额{amount_text(approval.amount)}"


async def recent_discounts(
    customer_id: int, limit: int, tz: ZoneInfo, conn: BaseDBAsyncClient | None = None, exclude: int | None = None
) -> str:
    """A customer's latest decided discount requests, e.g. ``AP7 9折 已同意 10-01`` (for cards and the profile)."""
    if limit <= 0:
        return "—"
    query = Approval.filter(customer_id=customer_id, status__in=[ApprovalStatus.APPROVED, ApprovalStatus.REJECTED])
    if exclude is not None:
        query = query.exclude(id=exclude)
    rows = await query.order_by("-created_at").limit(limit).using_db(conn)
    if not rows:
        return "暂无"
    return "；".join(
        f"{r.code} {discount_text(r.discount)} {APPROVAL_STATUS_LABELS[r.status]} {stamp(r.decided_at, tz)[:5]}"
        for r in rows
    )


# ---------------------------------------------------------------- cards


def new_task_id(approval_id: int, level: int) -> str:
    """Unique per approval and step, unguessable, and within WeCom's ``[0-9A-Za-z_-@]{1,128}``."""
    return f"ap{approval_id}-s{level}-{secrets.token_hex(4)}"


def card_key(step_id: int) -> str:
    return f"approval-card:{step_id}"


async def send_card(
    bot: Any,
    approval: Approval,
    step: ApprovalStep,
    conn: BaseDBAsyncClient | None,
    note: str = "",
    not_before: datetime | None = None,
) -> None:
    """Queue the current step's card to its approver (once per step, whatever retries happen)."""
    customer = await Customer.get(id=approval.customer_id, using_db=conn)
    requester = await Staff.get(id=approval.requester_id, using_db=conn)
    approver = await Staff.get(id=step.approver_id, using_db=conn)
    tz = bot.settings.tz
    recent = await recent_discounts(
        approval.customer_id, bot.settings.approvals.recent_discounts, tz, conn, approval.id
    )
    code = approval.code
    title = f"折扣审批 {code}（第{step.level}/{approval.levels}级）"
    description = note or f"{requester.name} 申请给 {customer.name} {discount_text(approval.discount)}，请审批"
    card = Card(
        title=title,
        task_id=step.task_id or "",
        description=description,
        fields=(
            ("客户", _short(customer.name)),
            ("合同金额", amount_text(approval.amount)),
            ("折扣", discount_long(approval.discount)),
            ("理由", _short(approval.reason or "未填写")),
            ("申请人", requester.name),
            ("近期折扣", _short(recent)),
        ),
        buttons=(Button(f"同意 #{code}", "同意", 1), Button(f"驳回 #{code}", "驳回", 2)),
    )
    text = (
        f"{title}\n{description}\n客户：{customer.name}\n合同金额：{amount_text(approval.amount)}\n"
        f"折扣：{discount_long(approval.discount)}\n理由：{approval.reason or '未填写'}\n申请人：{requester.name}\n"
        f"该客户近期折扣：{recent}\n回复「同意 #{code}」或「驳回 #{code} 理由」"
    )
    reply = Reply(text=text, kind="card", card=card)
    await bot.outbox.push(approver, reply, card_key(step.id), not_before=not_before, using_db=conn)


async def update_sent_card(bot: Any, step: ApprovalStep, label: str, conn: BaseDBAsyncClient | None) -> None:
    """Show ``label`` on a step's card that nobody clicked, with the update handle its sending returned (if any).

    A clicked card is updated with the click's own response code instead (single use each).
    """
    row = await OutboxMessage.filter(dedupe_key=card_key(step.id)).using_db(conn).first()
    handle = str((row.result or {}).get("response_code") or "") if row else ""
    if row is None or not handle or handle == step.response_code:
        return
    await bot.outbox.enqueue(
        Address(row.platform, row.recipient),  # type: ignore[arg-type]
        Reply(
            text=label,
            kind="card_update",
            update={
                "response_code": handle,
                "replace_name": label,
                "task_id": step.task_id,
                "userids": [row.recipient],
            },
        ),
        f"approval-card-update:{step.id}",
        staff_id=step.approver_id,
        using_db=conn,
    )
    await ApprovalStep.filter(id=step.id).using_db(conn).update(response_code=handle)


# ---------------------------------------------------------------- request


def _decimal(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


@router.intent("request_discount", examples=["申请折扣 华为 85折 合同金额120万 年度框架协议"], order=70)
async def request_discount(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply | str:
    """申请折扣审批"""
    name = str(slots.get("customer") or "").strip()
    discount = _decimal(slots.get("discount"))
    amount = _decimal(slots.get("amount"))
    reason = str(slots.get("reason") or "").strip()
    if not name:
        return "请告诉我是哪个客户。" + USAGE
    if discount is None:
        return "请告诉我申请的折扣，例如「85折」或「优惠15%」。" + USAGE
    if not Decimal("0") < discount < Decimal("1"):
        return f"折扣要低于原价才需要审批（您写的是原价的 {discount:f} 倍）。例如「85折」表示按原价的 85% 成交。"
    if amount is not None and amount <= 0:
        return "合同金额需要大于 0，例如「合同金额120万」。"
    found = await resolve(ctx, slots, "request_discount")  # not found: close names, several: a numbered choice
    if isinstance(found, Reply):
        return found
    customer = found
    if not await visible_to(ctx.staff, customer):
        return f"「{customer.name}」不是您或您团队的客户，不能为它申请折扣。"
    depth = levels_needed(discount, amount, ctx.settings.approvals)
    chain = await approval_chain(ctx.staff, depth)
    if not chain:
        return "暂时找不到可以审批您这笔折扣的人（需要您的上级、总监或管理员），请联系管理员设置汇报关系。"
    conn = ctx.conn
    approval = await Approval.create(
        customer_id=customer.id,
        requester_id=ctx.staff.id,
        amount=amount,
        discount=discount,
        reason=reason,
        level=1,
        levels=len(chain),
        platform=msg.platform,
        created_at=ctx.now,
        using_db=conn,
    )
    steps = []
    for link in chain:
        first = link.level == 1
        steps.append(
            await ApprovalStep.create(
                approval_id=approval.id,
                level=link.level,
                role=link.role,
                approver_id=link.approver.id,
                status=StepStatus.PENDING if first else StepStatus.WAITING,
                activated_at=ctx.now if first else None,
                task_id=new_task_id(approval.id, link.level) if first else None,
                using_db=conn,
            )
        )
    await send_card(ctx.bot, approval, steps[0], conn)
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


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class Click:
    """What a card click carries besides the key: the card it came from and the handle to update that card."""

    task_id: str
    response_code: str


async def _locked(approval_id: int, conn: BaseDBAsyncClient | None) -> Approval | None:
    """The approval row, locked for the rest of the transaction (PostgreSQL); decisions on it serialize."""
    return await Approval.filter(id=approval_id).select_for_update().using_db(conn).first()


def _label(action: str, who: str, when: datetime, tz: ZoneInfo) -> str:
    return f"{action} · {who} {stamp(when, tz)}"


async def _step_label(approval: Approval, step: ApprovalStep, tz: ZoneInfo, conn: BaseDBAsyncClient | None) -> str:
    """What a decided step's card shows: the outcome, who, when."""
    if step.status == StepStatus.CANCELLED:
        requester = await Staff.get(id=approval.requester_id, using_db=conn)
        return _label("已撤回", requester.name, step.decided_at or approval.decided_at or approval.created_at, tz)
    approver = await Staff.get(id=step.approver_id, using_db=conn)
    action = {StepStatus.APPROVED: "已同意", StepStatus.REJECTED: "已驳回"}.get(step.status, "已处理")
    return _label(action, approver.name, step.decided_at or approval.created_at, tz)


async def decide(
    ctx: Context, approval_id: int | None, approve: bool, comment: str, click: Click | None
) -> list[Reply]:
    """Approve or reject the current step of ``AP<approval_id>`` as ``ctx.staff``; every refusal changes nothing."""
    conn, tz, me = ctx.conn, ctx.settings.tz, ctx.staff
    verb = "同意" if approve else "驳回"
    if approval_id is None:
        return [Reply(await _pending_hint(me, conn, f"请注明审批单号，例如「{verb} #AP12」。"))]
    approval = await _locked(approval_id, conn)
    if approval is None:
        return [Reply(f"没有找到审批单 {code_of(approval_id)}，请核对单号。")]
    code = approval.code
    if click is not None:
        step = await ApprovalStep.filter(task_id=click.task_id).using_db(conn).first() if click.task_id else None
        if step is None or step.approval_id != approval.id:
            await ctx.audit(
                "approval.click_refused", "approval", code, after={"reason": "task_id", "task": click.task_id}
            )
            return [Reply("这张审批卡片无效（与审批单不符），已忽略。如需审批请回复「" + f"{verb} #{code}」。")]
    else:
        step = await ApprovalStep.filter(approval_id=approval.id, status=StepStatus.PENDING).using_db(conn).first()
    if me.id == approval.requester_id:
        return [Reply(f"{code} 是您自己提交的申请，不能自己审批。")]
    if step is None or step.status != StepStatus.PENDING or approval.status != ApprovalStatus.PENDING:
        return await _already_handled(ctx, approval, step, click)
    if step.approver_id != me.id:
        current = await Staff.get(id=step.approver_id, using_db=conn)
        await ctx.audit(
            "approval.click_refused" if click else "approval.refused",
            "approval",
            code,
            after={"reason": "not approver"},
        )
        return [Reply(f"您不是 {code} 的当前审批人（当前由{current.name}审批），无法操作。")]
    won = (
        await ApprovalStep.filter(id=step.id, status=StepStatus.PENDING)
        .using_db(conn)
        .update(
            status=StepStatus.APPROVED if approve else StepStatus.REJECTED,
            decided_at=ctx.now,
            comment=comment,
            response_code=click.response_code if click else "",
            decided_via="card" if click else "text",
        )
    )
    if not won:
        return await _already_handled(ctx, approval, await ApprovalStep.get(id=step.id, using_db=conn), click)
    customer = await Customer.get(id=approval.customer_id, using_db=conn)
    requester = await Staff.get(id=approval.requester_id, using_db=conn)
    what = summary(approval, customer)
    label = _label("已同意" if approve else "已驳回", me.name, ctx.now, tz)
    nxt = None
    if approve:
        nxt = (
            await ApprovalStep.filter(approval_id=approval.id, status=StepStatus.WAITING)
            .order_by("level")
            .using_db(conn)
            .first()
        )
    if nxt is not None:
        await _activate(ctx.bot, approval, nxt, ctx.now, conn)
        next_name = (await Staff.get(id=nxt.approver_id, using_db=conn)).name
        to_requester = (
            f"✅ {me.name}已同意您的折扣申请 {code}（{what}），"
            f"已转交{next_name}审批（第{nxt.level}/{approval.levels}级）。"
        )
        answer = f"已同意 {code}（{what}），已转交{next_name}继续审批，并已通知{requester.name}。"
    else:
        final = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
        await (
            Approval.filter(id=approval.id, status=ApprovalStatus.PENDING)
            .using_db(conn)
            .update(status=final, decided_at=ctx.now)
        )
        await (
            ApprovalStep.filter(approval_id=approval.id, status=StepStatus.WAITING)
            .using_db(conn)
            .update(status=StepStatus.CANCELLED)
        )
        await _land_on_customer(ctx, approval, customer, final, me.name)
        if approve:
            to_requester = (
                f"🎉 您的折扣申请 {code}（{what}）已审批通过（{me.name}）。"
                f"可以按 {discount_text(approval.discount)} 报价了。"
            )
            answer = f"已同意 {code}（{what}），审批通过，已通知{requester.name}。"
        else:
            why = f"，理由：{comment}" if comment else ""
            to_requester = f"❌ {me.name}驳回了您的折扣申请 {code}（{what}）{why}。"
            answer = f"已驳回 {code}（{what}），已通知{requester.name}。"
    await ctx.push(requester, to_requester)
    await ctx.audit(
        "approval.approve" if approve else "approval.reject",
        "approval",
        code,
        before={"level": step.level, "status": "pending"},
        after={
            "level": step.level,
            "approver": me.name,
            "comment": comment,
            "via": "card" if click else "text",
            "next": nxt.level if nxt else None,
        },
    )
    replies: list[Reply] = []
    if click is not None and click.response_code:
        replies.append(_card_update(click, label, ctx.msg.sender))
    else:
        await update_sent_card(ctx.bot, step, label, conn)
    replies.append(Reply(answer))
    return replies


def _card_update(click: Click, label: str, userid: str) -> Reply:
    return Reply(
        text=label,
        kind="card_update",
        update={
            "response_code": click.response_code,
            "replace_name": label,
            "task_id": click.task_id,
            "userids": [userid],
        },
    )


async def _already_handled(
    ctx: Context, approval: Approval, step: ApprovalStep | None, click: Click | None
) -> list[Reply]:
    """Nothing changes; say what the state is. A stale card clicked by its own approver shows its outcome."""
    conn, tz = ctx.conn, ctx.settings.tz
    code = approval.code
    card_label = ""
    if approval.status != ApprovalStatus.PENDING:
        state = APPROVAL_STATUS_LABELS[approval.status]
        when = f" {stamp(approval.decided_at, tz)}" if approval.decided_at else ""
        text = f"{code} 已处理过（{state}{when}），无需重复操作。"
    elif step is not None and step.approver_id == ctx.staff.id and step.status != StepStatus.PENDING:
        current = await ApprovalStep.filter(approval_id=approval.id, status=StepStatus.PENDING).using_db(conn).first()
        who = (await Staff.get(id=current.approver_id, using_db=conn)).name if current else ""
        if step.status == StepStatus.ESCALATED:
            text = f"{code} 因超时已转交{who or '上一级'}审批，这张卡片已失效，无需再处理。"
            card_label = f"已超时 · 转交{who or '上一级'}"
        else:
            text = f"{code} 您这一步已处理过，无需重复操作" + (f"，目前由{who}审批。" if who else "。")
    else:
        current = await ApprovalStep.filter(approval_id=approval.id, status=StepStatus.PENDING).using_db(conn).first()
        who = (await Staff.get(id=current.approver_id, using_db=conn)).name if current else "其他人"
        return [Reply(f"您不是 {code} 的当前审批人（当前由{who}审批），无法操作。")]
    replies = [Reply(text)]
    if click is not None and click.response_code and step is not None and step.approver_id == ctx.staff.id:
        card_label = card_label or await _step_label(approval, step, tz, conn)
        replies.insert(0, _card_update(click, card_label, ctx.msg.sender))
    await ctx.audit("approval.duplicate", "approval", code, after={"via": "card" if click else "text"})
    return replies


async def _activate(
    bot: Any,
    approval: Approval,
    step: ApprovalStep,
    now: datetime,
    conn: BaseDBAsyncClient | None,
    not_before: datetime | None = None,
) -> None:
    """Make ``step`` the current one (its clocks start at ``now``) and send its card."""
    step.task_id = new_task_id(approval.id, step.level)
    step.status = StepStatus.PENDING
    step.activated_at = now
    await (
        ApprovalStep.filter(id=step.id, status=StepStatus.WAITING)
        .using_db(conn)
        .update(status=StepStatus.PENDING, activated_at=now, task_id=step.task_id)
    )
    approval.level = step.level
    await Approval.filter(id=approval.id).using_db(conn).update(level=step.level)
    await send_card(bot, approval, step, conn, not_before=not_before)


async def _land_on_customer(
    ctx: Context, approval: Approval, customer: Customer, final: ApprovalStatus, decider: str
) -> None:
    """The outcome goes on the customer's profile (custom field 最近折扣审批)."""
    before = dict(customer.custom_fields or {})
    after = dict(before)
    after["最近折扣审批"] = (
        f"{approval.code} {discount_text(approval.discount)} {amount_text(approval.amount)} "
        f"{APPROVAL_STATUS_LABELS[final]}（{decider} {ctx.now.astimezone(ctx.settings.tz):%Y-%m-%d}）"
    )
    customer.custom_fields = after
    await customer.save(using_db=ctx.conn, update_fields=["custom_fields", "updated_at"])
    await ctx.audit(
        "customer.discount",
        "customer",
        customer.id,
        before={"最近折扣审批": before.get("最近折扣审批")},
        after={"最近折扣审批": after["最近折扣审批"]},
    )


async def _pending_hint(staff: Staff, conn: BaseDBAsyncClient | None, first: str) -> str:
    steps = (
        await ApprovalStep.filter(approver_id=staff.id, status=StepStatus.PENDING)
        .order_by("activated_at")
        .limit(10)
        .prefetch_related("approval__customer")
        .using_db(conn)
    )
    if not steps:
        return first + "您目前没有待审批的折扣申请。"
    lines = [first + "您待审批的："]
    lines.extend(f"· {s.approval.code} {summary(s.approval, s.approval.customer)}" for s in steps)
    return "\n".join(lines)


@router.intent("approve", examples=["同意 #AP12"], order=71)
async def approve(msg: IncomingMessage, slots: Slots, ctx: Context) -> list[Reply]:
    """同意折扣申请"""
    return await decide(ctx, parse_code(slots.get("approval_id")), True, str(slots.get("reason") or "").strip(), None)


@router.intent("reject", examples=["驳回 #AP12 价格太低"], order=72)
async def reject(msg: IncomingMessage, slots: Slots, ctx: Context) -> list[Reply]:
    """驳回折扣申请"""
    return await decide(ctx, parse_code(slots.get("approval_id")), False, str(slots.get("reason") or "").strip(), None)


@router.intent("event:template_card_event")
async def card_clicked(msg: IncomingMessage, slots: Slots, ctx: Context) -> list[Reply]:
    """卡片按钮"""
    key = str(slots.get("key") or "")
    if m := _CARD_KEY.match(key):
        click = Click(str(msg.raw.get("task_id") or ""), str(msg.raw.get("response_code") or ""))
        return await decide(ctx, int(m[2]), m[1] == "同意", "", click)
    # Any other card: its button key is the text command the click stands for.
    parsed = ctx.bot.understanding.parse(key, ctx.now)
    spec = ctx.bot.intents.get(parsed.intent)
    if spec is None or parsed.intent.startswith("event:"):
        return []
    return as_replies(await spec.handler(msg, parsed.slots, ctx))


# ---------------------------------------------------------------- withdrawal


@router.intent("withdraw", examples=["撤回 #AP12"], order=73)
async def withdraw(msg: IncomingMessage, slots: Slots, ctx: Context) -> str:
    """撤回折扣申请"""
    conn, me = ctx.conn, ctx.staff
    approval_id = parse_code(slots.get("approval_id"))
    if approval_id is None:
        mine = await Approval.filter(requester_id=me.id, status=ApprovalStatus.PENDING).order_by("id").using_db(conn)
        if not mine:
            return "请注明要撤回的审批单号，例如「撤回 #AP12」。您目前没有审批中的申请。"
        return "请注明要撤回的审批单号，例如「撤回 #AP12」。您审批中的申请：" + "、".join(a.code for a in mine)
    approval = await _locked(approval_id, conn)
    if approval is None:
        return f"没有找到审批单 {code_of(approval_id)}，请核对单号。"
    code = approval.code
    if approval.requester_id != me.id:
        return f"{code} 不是您提交的申请，只有申请人可以撤回。"
    if approval.status != ApprovalStatus.PENDING:
        return f"{code} 已结束（{APPROVAL_STATUS_LABELS[approval.status]}），无法撤回。"
    won = (
        await Approval.filter(id=approval.id, status=ApprovalStatus.PENDING)
        .using_db(conn)
        .update(status=ApprovalStatus.WITHDRAWN, decided_at=ctx.now)
    )
    if not won:
        return f"{code} 刚刚已被处理，无法撤回。"
    current = await ApprovalStep.filter(approval_id=approval.id, status=StepStatus.PENDING).using_db(conn).first()
    await (
        ApprovalStep.filter(approval_id=approval.id, status__in=[StepStatus.PENDING, StepStatus.WAITING])
        .using_db(conn)
        .update(status=StepStatus.CANCELLED, decided_at=ctx.now, decided_via="withdrawn")
    )
    customer = await Customer.get(id=approval.customer_id, using_db=conn)
    told = ""
    if current is not None:
        approver = await Staff.get(id=current.approver_id, using_db=conn)
        told = f"，已通知{approver.name}"
        await ctx.push(approver, f"↩️ {me.name}已撤回折扣申请 {code}（{summary(approval, customer)}），无需再审批。")
        await update_sent_card(ctx.bot, current, _label("已撤回", me.name, ctx.now, ctx.settings.tz), conn)
    await ctx.audit("approval.withdraw", "approval", code, before={"status": "pending"}, after={"status": "withdrawn"})
    return f"已撤回折扣申请 {code}（{summary(approval, customer)}）{told}。"


# ---------------------------------------------------------------- reminders and escalation


async def _pending_steps(rule: str, before: datetime, after: datetime | None = None) -> list[ApprovalStep]:
    """Current steps activated in (``after``, ``before``] for which ``rule`` has not fired yet."""
    fired = RuleFiring.filter(rule=rule, subject_id__not_isnull=True).values("subject_id")
    query = ApprovalStep.filter(status=StepStatus.PENDING, activated_at__lte=before).exclude(id__in=Subquery(fired))
    if after is not None:
        query = query.filter(activated_at__gt=after)
    return await query.order_by("activated_at").prefetch_related(
        "approver", "approval__customer", "approval__requester"
    )


async def remind_approvers(rc: RuleContext) -> list[Firing]:
    """An approver silent for ``approval_remind_hours`` is reminded, once per step."""
    hours = rc.settings.rules.approval_remind_hours
    escalate = rc.settings.rules.approval_escalate_hours
    steps = await _pending_steps("approval_remind", rc.now - timedelta(hours=hours), rc.now - timedelta(hours=escalate))
    firings = []
    for step in steps:
        approval = step.approval
        code = approval.code
        firings.append(
            Firing(
                rule="approval_remind",
                key=f"approval_remind:{step.id}:{hours}h:once",
                to=step.approver,
                text=(
                    f"⏰ 折扣申请 {code} 已等待您审批超过 {hours} 小时：{summary(approval, approval.customer)}"
                    f"（{approval.requester.name}申请）。请回复「同意 #{code}」或「驳回 #{code} 理由」。"
                ),
                customer=approval.customer,
            )
        )
    return firings


async def escalate_approvals(rc: RuleContext) -> list[Firing]:
    """An approval unanswered for ``approval_escalate_hours`` moves up a level, once per step."""
    hours = rc.settings.rules.approval_escalate_hours
    firings = []
    for step in await _pending_steps("approval_escalate", rc.now - timedelta(hours=hours)):
        approval = step.approval
        chain_ids = set(await ApprovalStep.filter(approval_id=approval.id).values_list("approver_id", flat=True))
        nxt = await ApprovalStep.filter(approval_id=approval.id, status=StepStatus.WAITING).order_by("level").first()
        if nxt is not None:
            target = await Staff.get(id=nxt.approver_id)
        else:
            found = await escalation_target(step.approver, {approval.requester_id, *(int(str(i)) for i in chain_ids)})
            if found is None:
                continue
            target = found
        code = approval.code
        firings.append(
            Firing(
                rule="approval_escalate",
                key=f"approval_escalate:{step.id}:{hours}h:once",
                to=target,
                text=(
                    f"⚠️ 折扣申请 {code}（{summary(approval, approval.customer)}，{approval.requester.name}申请）"
                    f"{step.approver.name}超过 {hours} 小时未处理，已升级由您审批，审批卡片随后送达。"
                ),
                customer=approval.customer,
                apply=_escalation(rc.bot, step.id, target.id, rc.now),
            )
        )
    return firings


def _escalation(bot: Any, step_id: int, target_id: int, now: datetime) -> Any:
    async def apply() -> None:
        await escalate(bot, step_id, target_id, now)

    return apply


async def escalate(bot: Any, step_id: int, target_id: int, now: datetime) -> bool:
    """Close the silent step and hand the request to ``target``; False when the step was decided meanwhile.

    Runs inside the rule engine's transaction (queries join it implicitly).
    """
    step = await ApprovalStep.get_or_none(id=step_id)
    if step is None:
        return False
    approval = await _locked(step.approval_id, None)
    if approval is None or approval.status != ApprovalStatus.PENDING:
        return False
    won = await ApprovalStep.filter(id=step.id, status=StepStatus.PENDING).update(
        status=StepStatus.ESCALATED, decided_at=now, decided_via="timeout"
    )
    if not won:
        return False
    target = await Staff.get(id=target_id)
    nxt = await ApprovalStep.filter(approval_id=approval.id, status=StepStatus.WAITING).order_by("level").first()
    if nxt is None or nxt.approver_id != target.id:
        level = approval.levels + 1
        nxt = await ApprovalStep.create(
            approval_id=approval.id,
            level=level,
            role=target.role.value,
            approver_id=target.id,
            status=StepStatus.WAITING,
        )
        approval.levels = level
        await Approval.filter(id=approval.id).update(levels=level)
    # Escalations are scheduled pushes: during quiet hours they wait for the morning, and so does the new clock.
    release = release_time(now, bot.settings)
    await _activate(bot, approval, nxt, release, None, not_before=release)
    silent = await Staff.get(id=step.approver_id)
    requester = await Staff.get(id=approval.requester_id)
    customer = await Customer.get(id=approval.customer_id)
    hours = bot.settings.rules.approval_escalate_hours
    await update_sent_card(bot, step, f"已超时 · 转交{target.name}", None)
    await bot.outbox.push(
        requester,
        Reply(
            f"⏫ 您的折扣申请 {approval.code}（{summary(approval, customer)}）{silent.name}超过 {hours} 小时未处理，"
            f"已升级给{target.name}审批。"
        ),
        f"approval-escalated:{step.id}:requester",
        not_before=release,
    )
    await bot.outbox.push(
        silent,
        Reply(
            f"折扣申请 {approval.code}（{summary(approval, customer)}）超过 {hours} 小时未处理，"
            f"已转交{target.name}审批。"
        ),
        f"approval-escalated:{step.id}:approver",
        not_before=release,
    )
    await AuditLog.create(
        actor_id=None,
        actor_name="系统",
        action="approval.escalate",
        entity="approval",
        entity_id=approval.code,
        before={"level": step.level, "approver": silent.name},
        after={"level": nxt.level, "approver": target.name, "hours": hours},
    )
    return True


RULES: list[Rule] = [remind_approvers, escalate_approvals]

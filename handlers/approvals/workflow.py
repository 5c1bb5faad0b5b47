"""The approval workflow: a request becomes a chain of steps, one approver a level; deciding a step (by a tap on
its card or by text) moves the request on, to the next level or to its outcome; a requester may withdraw; a silent
approver's step is escalated.

Only the current approver of the current step can decide, once: the step flips from pending with a conditional
update under a lock on the approval row, so a double click, a replayed or stale card, a forged card id or
somebody else's click changes nothing and gets a polite answer. The clicked card is updated to show the decision,
the requester is told at every step, the outcome is written on the customer, and every step lands in the audit
log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from tortoise.backends.base.client import BaseDBAsyncClient

from bot import audit
from bot.context import Context, Services
from bot.scheduled import release_time
from bot.types import CardUpdate, Click, Reply
from handlers.approvals.cards import (
    amount_text,
    code_of,
    discount_text,
    new_card_id,
    outcome_label,
    send_card,
    stamp,
    step_label,
    summary,
    update_sent_card,
)
from handlers.approvals.routing import Link, approval_chain, levels_needed
from models.approvals import APPROVAL_STATUS_LABELS, Approval, ApprovalStatus, ApprovalStep, StepStatus
from models.customers import Customer
from models.staff import Staff


@dataclass(frozen=True, slots=True)
class Request:
    """A request as it was opened: the approval and who decides each level."""

    approval: Approval
    chain: list[Link]


async def open_request(
    ctx: Context, customer: Customer, discount: Decimal, amount: Decimal | None, reason: str
) -> Request | None:
    """Create the approval and its steps and send the first card; None when nobody can approve it."""
    depth = levels_needed(discount, amount, ctx.settings.approvals)
    chain = await approval_chain(ctx.staff, depth)
    if not chain:
        return None
    conn = ctx.conn
    approval = await Approval.create(
        customer_id=customer.id,
        requester_id=ctx.staff.id,
        amount=amount,
        discount=discount,
        reason=reason,
        level=1,
        levels=len(chain),
        platform=ctx.msg.platform,
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
                card_id=new_card_id(approval.id, link.level) if first else None,
                using_db=conn,
            )
        )
    await send_card(ctx.bot, approval, steps[0], conn)
    return Request(approval, chain)


async def _locked(approval_id: int, conn: BaseDBAsyncClient | None) -> Approval | None:
    """The approval row, locked for the rest of the transaction (PostgreSQL); decisions on it serialize."""
    return await Approval.filter(id=approval_id).select_for_update().using_db(conn).first()


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
        step = await ApprovalStep.filter(card_id=click.card_id).using_db(conn).first() if click.card_id else None
        if step is None or step.approval_id != approval.id:
            await ctx.audit("approval.click_refused", "approval", code, after={"reason": "card", "card": click.card_id})
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
            card_handle=click.handle if click else "",
            decided_via="card" if click else "text",
        )
    )
    if not won:
        return await _already_handled(ctx, approval, await ApprovalStep.get(id=step.id, using_db=conn), click)
    customer = await Customer.get(id=approval.customer_id, using_db=conn)
    requester = await Staff.get(id=approval.requester_id, using_db=conn)
    what = summary(approval, customer)
    label = outcome_label("已同意" if approve else "已驳回", me.name, ctx.now, tz)
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
    if click is not None and click.handle:
        replies.append(_card_update(click, label))
    else:
        await update_sent_card(ctx.bot, step, label, conn)
    replies.append(Reply(answer))
    return replies


def _card_update(click: Click, label: str) -> Reply:
    return Reply.updating(CardUpdate(click.card_id, click.handle, label))


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
    if click is not None and click.handle and step is not None and step.approver_id == ctx.staff.id:
        card_label = card_label or await step_label(approval, step, tz, conn)
        replies.insert(0, _card_update(click, card_label))
    await ctx.audit("approval.duplicate", "approval", code, after={"via": "card" if click else "text"})
    return replies


async def _activate(
    bot: Services,
    approval: Approval,
    step: ApprovalStep,
    now: datetime,
    conn: BaseDBAsyncClient | None,
    not_before: datetime | None = None,
) -> None:
    """Make ``step`` the current one (its clocks start at ``now``) and send its card."""
    step.card_id = new_card_id(approval.id, step.level)
    step.status = StepStatus.PENDING
    step.activated_at = now
    await (
        ApprovalStep.filter(id=step.id, status=StepStatus.WAITING)
        .using_db(conn)
        .update(status=StepStatus.PENDING, activated_at=now, card_id=step.card_id)
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


async def withdraw(ctx: Context, approval_id: int | None) -> str:
    """Withdraw ``AP<approval_id>`` as its requester ``ctx.staff``: the current approver is told, the card updated."""
    conn, me = ctx.conn, ctx.staff
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
        await update_sent_card(ctx.bot, current, outcome_label("已撤回", me.name, ctx.now, ctx.settings.tz), conn)
    await ctx.audit("approval.withdraw", "approval", code, before={"status": "pending"}, after={"status": "withdrawn"})
    return f"已撤回折扣申请 {code}（{summary(approval, customer)}）{told}。"


async def escalate(bot: Services, step_id: int, target_id: int, now: datetime) -> bool:
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
    await audit.record(
        "approval.escalate",
        "approval",
        approval.code,
        before={"level": step.level, "approver": silent.name},
        after={"level": nxt.level, "approver": target.name, "hours": hours},
        customer_id=approval.customer_id,
    )
    return True

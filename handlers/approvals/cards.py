"""The approval card: what the approver of a step sees (title, the request's fields, the customer's recent
discounts, 同意 / 驳回 buttons whose keys are the text commands), how a card already sent is updated to show the
outcome, and how requests are written for people."""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from tortoise.backends.base.client import BaseDBAsyncClient

from bot.channels import CARD_HANDLE, Address
from bot.context import Services
from bot.types import Button, Card, CardUpdate, Reply
from models.approvals import APPROVAL_STATUS_LABELS, Approval, ApprovalStatus, ApprovalStep, StepStatus
from models.customers import Customer
from models.outbox import OutboxMessage
from models.staff import Staff

CARD_FIELD_LIMIT = 30  # cards show about this many characters of a field value
_CODE = re.compile(r"^\s*#?\s*(?:AP)?\s*(\d{1,9})\s*$", re.IGNORECASE)


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


def new_card_id(approval_id: int, level: int) -> str:
    """Unique per approval and step, unguessable, and made of characters every platform's card ids allow."""
    return f"ap{approval_id}-s{level}-{secrets.token_hex(4)}"


def card_key(step_id: int) -> str:
    return f"approval-card:{step_id}"


async def send_card(
    bot: Services,
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
        card_id=step.card_id or "",
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


async def update_sent_card(bot: Services, step: ApprovalStep, label: str, conn: BaseDBAsyncClient | None) -> None:
    """Show ``label`` on a step's card that nobody clicked, with the update handle its sending returned (if any).

    A clicked card is updated with the click's own handle instead (single use each).
    """
    row = await OutboxMessage.filter(dedupe_key=card_key(step.id)).using_db(conn).first()
    handle = str((row.result or {}).get(CARD_HANDLE) or "") if row else ""
    if row is None or not handle or handle == step.card_handle:
        return
    await bot.outbox.enqueue(
        Address(row.platform, row.recipient),
        Reply.updating(CardUpdate(step.card_id or "", handle, label)),
        f"approval-card-update:{step.id}",
        staff_id=step.approver_id,
        using_db=conn,
    )
    await ApprovalStep.filter(id=step.id).using_db(conn).update(card_handle=handle)


def outcome_label(action: str, who: str, when: datetime, tz: ZoneInfo) -> str:
    return f"{action} · {who} {stamp(when, tz)}"


async def step_label(approval: Approval, step: ApprovalStep, tz: ZoneInfo, conn: BaseDBAsyncClient | None) -> str:
    """What a decided step's card shows: the outcome, who, when."""
    if step.status == StepStatus.CANCELLED:
        requester = await Staff.get(id=approval.requester_id, using_db=conn)
        return outcome_label(
            "已撤回", requester.name, step.decided_at or approval.decided_at or approval.created_at, tz
        )
    approver = await Staff.get(id=step.approver_id, using_db=conn)
    action = {StepStatus.APPROVED: "已同意", StepStatus.REJECTED: "已驳回"}.get(step.status, "已处理")
    return outcome_label(action, approver.name, step.decided_at or approval.created_at, tz)

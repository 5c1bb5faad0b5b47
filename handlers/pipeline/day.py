"""The rep's day in one message (``我的客户`` / ``今天要跟进哪些客户``): follow-ups due by tonight, tickets past
their first-response time, approvals waiting for them (to decide, and their own requests), deals closing soon and
deals stalled. Reading only."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from typing import TypeVar

from tortoise.expressions import Q, Subquery
from tortoise.models import Model
from tortoise.queryset import QuerySet

import handlers.pipeline.deals as deals
from bot.config import Settings
from bot.context import Context, Slots
from bot.display import local
from bot.nlu.reading import Reading, Result
from bot.types import IncomingMessage, Reply
from handlers.pipeline.capability import capability
from handlers.pipeline.funnel import Scope, stalled_deals
from models.approvals import Approval, ApprovalStatus, ApprovalStep, StepStatus
from models.customers import STAGE_LABELS, Customer, Stage
from models.opportunities import OPEN_STAGES, Opportunity
from models.staff import Staff
from models.tickets import Ticket, TicketStatus

SHOWN = 8
M = TypeVar("M", bound=Model)
_MY_DAY = re.compile(
    r"^(?:我的客户|我的一天|今日待办|今天待办|我的待办|今天的待办|today)$"
    r"|(?:今天|今日|明天)(?:要|需要|该|得)?(?:跟进|联系|拜访|处理|做)(?:哪些|什么|谁|啥)"
    r"|(?:今天|今日)(?:有)?(?:什么|哪些|啥)(?:待办|事|要做)",
    re.I,
)


@capability.command(
    re.compile(r"^(?:我的客户|我的一天|今日待办|今天待办|我的待办|my\s*day)\s*[？?]?$", re.I), order=144
)
def my_day_command(r: Reading, rest: str) -> Result:
    return "my_day", {}


@capability.phrase(order=9)
def my_day_phrase(r: Reading) -> Result | None:
    """今天要跟进哪些客户 / 今天有什么待办: a question, never a write."""
    return ("my_day", {}) if _MY_DAY.search(r.text.rstrip("？?。 ")) else None


async def _listed(query: QuerySet[M]) -> tuple[list[M], int]:
    """The first ``SHOWN`` rows of ``query`` and how many there are in all (counted only when there are more)."""
    rows = list(await query.limit(SHOWN + 1))
    return rows[:SHOWN], len(rows) if len(rows) <= SHOWN else await query.count()


def _section(title: str, items: list[str], total: int) -> list[str]:
    """A titled list of at most ``SHOWN`` items, with how many there are in all."""
    if not total:
        return []
    shown = [f"· {item}" for item in items[:SHOWN]]
    if total > SHOWN:
        shown.append(f"……另有 {total - SHOWN} 项")
    return [f"{title}（{total}）", *shown]


@capability.intent("my_day", order=84)
async def my_day(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """今天的待办：到期跟进、超时工单、待审批、即将成交和停滞的商机"""
    return Reply(await day_text(ctx.staff, ctx.now, ctx.settings))


async def day_text(me: Staff, now: datetime, settings: Settings) -> str:
    """``me``'s day as of ``now``: one indexed query per section, each limited to what is shown."""
    tz = settings.tz
    tonight = datetime.combine(now.astimezone(tz).date() + timedelta(days=1), time(0), tzinfo=tz)
    soon = now.astimezone(tz).date() + timedelta(days=settings.pipeline.closing_soon_days)
    follow_ups = await _listed(
        Customer.filter(owner_id=me.id, next_followup_at__lt=tonight).order_by("next_followup_at")
    )
    tickets = await _listed(
        Ticket.filter(
            # Each branch whole, so that each is one range of the index on (assignee, responded, due).
            Q(assignee_id=me.id, first_responded_at__isnull=True, first_response_due__lte=now)
            | Q(
                assignee_id__isnull=True,
                first_responded_at__isnull=True,
                first_response_due__lte=now,
                customer_id__in=Subquery(Customer.filter(owner_id=me.id).values("id")),
            ),
            status__in=[TicketStatus.OPEN, TicketStatus.IN_PROGRESS],
        )
        .select_related("customer")
        .order_by("first_response_due")
    )
    to_decide = await _listed(
        ApprovalStep.filter(approver_id=me.id, status=StepStatus.PENDING)
        .select_related("approval__customer")
        .order_by("activated_at")
    )
    mine = await _listed(
        Approval.filter(requester_id=me.id, status=ApprovalStatus.PENDING).select_related("customer").order_by("id")
    )
    closing = await _listed(
        Opportunity.filter(owner_id=me.id, stage__in=list(OPEN_STAGES), expected_close__lte=soon)
        .select_related("customer")
        .order_by("expected_close", "id")
    )
    stalled, stalled_total = await stalled_deals(Scope(me.name, [me.id]), None, settings, now, SHOWN)
    lines = [f"📋 {me.name}，今天的待办："]
    lines += _section(
        "到期跟进", [f"{c.name}（约定 {local(c.next_followup_at, tz)}）" for c in follow_ups[0]], follow_ups[1]
    )
    lines += _section(
        "超时未响应的工单",
        [f"#{t.id} {t.customer.name} {t.title}（应于 {local(t.first_response_due, tz)} 响应）" for t in tickets[0]],
        tickets[1],
    )
    lines += _section(
        "待您审批",
        [f"#{s.approval_id} {s.approval.customer.name} {float(s.approval.discount) * 10:g}折" for s in to_decide[0]],
        to_decide[1],
    )
    lines += _section(
        "您的申请审批中", [f"#{a.id} {a.customer.name} {float(a.discount) * 10:g}折" for a in mine[0]], mine[1]
    )
    lines += _section(
        f"{settings.pipeline.closing_soon_days} 天内预计成交的商机",
        [
            f"{o.customer.name}「{o.name}」{STAGE_LABELS[Stage(o.stage)]} {deals.yuan(o.amount)}，"
            f"预计 {o.expected_close.isoformat() if o.expected_close else ''}"
            for o in closing[0]
        ],
        closing[1],
    )
    lines += _section(
        "停滞的商机",
        [f"{d.customer}「{d.name}」{STAGE_LABELS[d.stage]} {d.days} 天未动" for d in stalled],
        stalled_total,
    )
    if len(lines) == 1:
        lines.append("今天没有到期的事项，可以主动联系一下重点客户。👍")
    return "\n".join(lines)

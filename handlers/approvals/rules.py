"""The approval timers: an approver silent for ``approval_remind_hours`` is reminded, and after
``approval_escalate_hours`` the request moves up a level (``workflow.escalate``), once per step each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from tortoise.expressions import Subquery

from bot.context import Firing, RuleContext, Services
from handlers.approvals.capability import capability
from handlers.approvals.cards import summary
from handlers.approvals.routing import escalation_target
from handlers.approvals.workflow import escalate
from models.approvals import ApprovalStep, StepStatus
from models.reminders import RuleFiring
from models.staff import Staff


async def _pending_steps(rule: str, before: datetime, after: datetime | None = None) -> list[ApprovalStep]:
    """Current steps activated in (``after``, ``before``] for which ``rule`` has not fired yet."""
    fired = RuleFiring.filter(rule=rule, subject_id__not_isnull=True).values("subject_id")
    query = ApprovalStep.filter(status=StepStatus.PENDING, activated_at__lte=before).exclude(id__in=Subquery(fired))
    if after is not None:
        query = query.filter(activated_at__gt=after)
    return await query.order_by("activated_at").prefetch_related(
        "approver", "approval__customer", "approval__requester"
    )


@capability.rule(order=110)
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


@capability.rule(order=120)
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


def _escalation(bot: Services, step_id: int, target_id: int, now: datetime) -> Callable[[], Awaitable[None]]:
    async def apply() -> None:
        await escalate(bot, step_id, target_id, now)

    return apply

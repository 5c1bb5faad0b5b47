"""The departure handover (离职交接): in one transaction, everything a leaving staff member holds moves on — their
customers (to one successor, round robin over several, or into the public pool), open tickets, pending approval
steps and requests, unfired reminders — each customer audited with before and after; the leaver is deactivated;
the platform contacts to move are queued (``ContactTransfer``); the successors get a summary of what they took
over and what is due, the manager the totals. Used by the chat command and by ``crmbot staff leave``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tortoise.backends.base.client import BaseDBAsyncClient

from bot import audit
from bot.context import Services
from bot.identity import accounts_by_staff
from bot.types import Reply
from handlers.customers.profile import snapshot
from models.approvals import Approval, ApprovalStatus, ApprovalStep, StepStatus
from models.audit import AuditLog
from models.customers import Contact, Customer
from models.people import ContactTransfer, Handover
from models.reminders import Reminder
from models.staff import Staff
from models.tickets import Ticket, TicketStatus

TOP_CUSTOMERS = 5
DUE_WITHIN = timedelta(days=7)
GRADE_RANK = {"A": 0, "B": 1, "C": 2}


class HandoverRefused(ValueError):
    """The handover cannot be made as asked; the message says why, in words for people."""


@dataclass(frozen=True, slots=True)
class Plan:
    """Where the leaver's customers go: round robin over ``successors`` (one: all to them); none: the pool."""

    successors: tuple[Staff, ...] = ()
    departed: bool = False  # the leaver has already left the chat platforms too (their accounts are gone)

    @property
    def to_pool(self) -> bool:
        return not self.successors

    def describe(self) -> str:
        return "公海" if self.to_pool else "、".join(s.name for s in self.successors)


@dataclass
class Outcome:
    """What one handover moved, per successor and in total."""

    handover: Handover
    customers: dict[int | None, list[Customer]] = field(default_factory=dict)  # by new owner (None: the pool)
    totals: Counter[str] = field(default_factory=Counter)


def _ranked(customers: list[Customer]) -> list[Customer]:
    """Most important first: grade, then the most recently contacted."""
    epoch = datetime.min.replace(tzinfo=UTC)
    by_contact = sorted(customers, key=lambda c: c.last_followup_at or c.created_at or epoch, reverse=True)
    return sorted(by_contact, key=lambda c: GRADE_RANK.get(c.grade, 3))


async def check_plan(actor: Staff | None, leaver: Staff, plan: Plan) -> None:
    """Raise ``HandoverRefused`` unless ``actor`` (None: the command line) may hand ``leaver`` over as planned."""
    if actor is not None and not (
        actor.role in ("admin", "director") or (actor.role == "manager" and leaver.manager_id == actor.id)
    ):
        raise HandoverRefused(f"只有{leaver.name}的主管或管理员可以办理离职交接。")
    if not leaver.active:
        raise HandoverRefused(f"{leaver.name}已经办理过离职交接了。")
    for successor in plan.successors:
        if successor.id == leaver.id:
            raise HandoverRefused("接替人不能是离职人本人。")
        if not successor.active:
            raise HandoverRefused(f"{successor.name}已停用，不能接替客户。")


async def hand_over(
    services: Services,
    leaver: Staff,
    plan: Plan,
    *,
    actor: Staff | str,
    now: datetime,
    conn: BaseDBAsyncClient,
    platform: str = "",
) -> Outcome:
    """Move everything ``leaver`` holds as ``plan`` says, in ``conn``'s transaction; deactivate them; queue the
    platform contacts to move and the summaries. Raises ``HandoverRefused`` if someone else got there first."""
    if not await Staff.filter(id=leaver.id, active=True).using_db(conn).update(active=False):
        raise HandoverRefused(f"{leaver.name}已经办理过离职交接了。")
    actor_name = actor.name if isinstance(actor, Staff) else actor
    handover = await Handover.create(
        leaver_id=leaver.id,
        actor_name=actor_name,
        plan={"successors": [s.name for s in plan.successors], "departed": plan.departed},
        created_at=now.astimezone(UTC),
        using_db=conn,
    )
    outcome = Outcome(handover)
    rows = [entry("staff.deactivate", "staff", leaver.id, {"active": True}, {"active": False}, actor, platform)]
    manager = await Staff.filter(id=leaver.manager_id or 0, active=True).using_db(conn).first()
    fallback = plan.successors[0] if plan.successors else manager
    owner_of = await _move_customers(leaver, plan, outcome, rows, actor, platform, handover.id, conn)
    await _move_tickets(leaver, owner_of, fallback, outcome, rows, actor, platform, conn)
    await _move_approvals(leaver, owner_of, fallback, outcome, rows, actor, platform, conn)
    await _move_reminders(leaver, owner_of, fallback, outcome, rows, actor, platform, conn)
    await _queue_contact_transfers(services, leaver, handover, owner_of, outcome, conn)
    await AuditLog.bulk_create(rows, using_db=conn)
    handover.totals = dict(outcome.totals)
    await handover.save(using_db=conn, update_fields=["totals"])
    await _tell(services, leaver, plan, outcome, manager, actor, now, conn)
    return outcome


def entry(
    action: str, entity: str, entity_id: object, before: dict[str, object], after: dict[str, object],
    actor: Staff | str, platform: str,
) -> AuditLog:  # fmt: skip
    return audit.entry(action, entity, entity_id, before, after, actor=actor, platform=platform)


async def _move_customers(
    leaver: Staff, plan: Plan, outcome: Outcome, rows: list[AuditLog], actor: Staff | str, platform: str,
    handover_id: int, conn: BaseDBAsyncClient,
) -> dict[int, int | None]:  # fmt: skip
    """Every customer of ``leaver`` to its new owner; answers customer id → new owner id (None: the pool)."""
    customers = _ranked(await Customer.filter(owner_id=leaver.id).using_db(conn).order_by("id"))
    owner_of: dict[int, int | None] = {}
    for i, customer in enumerate(customers):
        target = plan.successors[i % len(plan.successors)].id if plan.successors else None
        owner_of[customer.id] = target
        before = snapshot(customer)
        customer.owner_id = target
        rows.append(entry("customer.handover", "customer", customer.id, before,
                          {**snapshot(customer), "handover": handover_id}, actor, platform))  # fmt: skip
        outcome.customers.setdefault(target, []).append(customer)
    for target, moved in outcome.customers.items():
        # Conditional on the owner still being the leaver: a customer moved meanwhile is not moved twice.
        await Customer.filter(id__in=[c.id for c in moved], owner_id=leaver.id).using_db(conn).update(owner_id=target)
    outcome.totals["customers"] = len(customers)
    outcome.totals["to_pool"] = len(outcome.customers.get(None, []))
    return owner_of


async def _move_tickets(
    leaver: Staff, owner_of: dict[int, int | None], fallback: Staff | None, outcome: Outcome,
    rows: list[AuditLog], actor: Staff | str, platform: str, conn: BaseDBAsyncClient,
) -> None:  # fmt: skip
    open_statuses = [TicketStatus.OPEN, TicketStatus.IN_PROGRESS]
    tickets = await Ticket.filter(assignee_id=leaver.id, status__in=open_statuses).using_db(conn)
    for ticket in tickets:
        target = owner_of.get(ticket.customer_id) or (fallback.id if fallback else None)
        await Ticket.filter(id=ticket.id).using_db(conn).update(assignee_id=target)
        rows.append(entry("ticket.handover", "ticket", ticket.id, {"assignee_id": leaver.id},
                          {"assignee_id": target}, actor, platform))  # fmt: skip
    outcome.totals["tickets"] = len(tickets)


async def _move_approvals(
    leaver: Staff, owner_of: dict[int, int | None], fallback: Staff | None, outcome: Outcome,
    rows: list[AuditLog], actor: Staff | str, platform: str, conn: BaseDBAsyncClient,
) -> None:  # fmt: skip
    """Steps the leaver was to decide go to the first successor (or the manager); requests they made go to the
    customer's new owner, who answers for them from now on."""
    waiting = [StepStatus.PENDING, StepStatus.WAITING]
    steps = await ApprovalStep.filter(approver_id=leaver.id, status__in=waiting).using_db(conn)
    if steps and fallback is not None:
        for step in steps:
            rows.append(entry("approval_step.handover", "approval_step", step.id, {"approver_id": leaver.id},
                              {"approver_id": fallback.id}, actor, platform))  # fmt: skip
        await ApprovalStep.filter(id__in=[s.id for s in steps]).using_db(conn).update(approver_id=fallback.id)
        outcome.totals["approval_steps"] = len(steps)
    requests = await Approval.filter(requester_id=leaver.id, status=ApprovalStatus.PENDING).using_db(conn)
    moved = 0
    for approval in requests:
        target = owner_of.get(approval.customer_id) or (fallback.id if fallback else None)
        if target is None:
            continue
        await Approval.filter(id=approval.id).using_db(conn).update(requester_id=target)
        rows.append(entry("approval.handover", "approval", approval.id, {"requester_id": leaver.id},
                          {"requester_id": target}, actor, platform))  # fmt: skip
        moved += 1
    outcome.totals["approvals"] = moved


async def _move_reminders(
    leaver: Staff, owner_of: dict[int, int | None], fallback: Staff | None, outcome: Outcome,
    rows: list[AuditLog], actor: Staff | str, platform: str, conn: BaseDBAsyncClient,
) -> None:  # fmt: skip
    reminders = await Reminder.filter(staff_id=leaver.id, fired_at__isnull=True).using_db(conn)
    moved = 0
    for reminder in reminders:
        target = owner_of.get(reminder.customer_id or 0) or (fallback.id if fallback else None)
        if target is None:
            continue
        await Reminder.filter(id=reminder.id).using_db(conn).update(staff_id=target)
        rows.append(entry("reminder.handover", "reminder", reminder.id, {"staff_id": leaver.id},
                          {"staff_id": target}, actor, platform))  # fmt: skip
        moved += 1
    outcome.totals["reminders"] = moved


async def _queue_contact_transfers(
    services: Services, leaver: Staff, handover: Handover, owner_of: dict[int, int | None], outcome: Outcome,
    conn: BaseDBAsyncClient,
) -> None:  # fmt: skip
    """The customer contacts the leaver holds on a platform, to be moved there to each customer's new owner."""
    moving = {cid: owner for cid, owner in owner_of.items() if owner is not None}
    contacts = await Contact.filter(customer_id__in=list(moving), external_userid__isnull=False).using_db(conn)
    accounts = await accounts_by_staff([leaver.id, *set(moving.values())], conn)
    transfers = []
    for contact in contacts:
        owner = moving[contact.customer_id]
        for platform, user_id in accounts.get(leaver.id, {}).items():
            successor = accounts.get(owner or 0, {}).get(platform)
            external = contact.external_userid or ""
            if successor and services.directory.is_external(platform, external):
                transfers.append(
                    ContactTransfer(
                        handover_id=handover.id, customer_id=contact.customer_id,
                        contact_user_id=external, from_user_id=user_id, to_user_id=successor,
                        platform=platform,
                    )
                )  # fmt: skip
    await ContactTransfer.bulk_create(transfers, using_db=conn)
    outcome.totals["contacts"] = len(transfers)


def _due(customers: list[Customer], now: datetime) -> list[Customer]:
    horizon = now + DUE_WITHIN
    return sorted(
        (c for c in customers if c.next_followup_at is not None and c.next_followup_at <= horizon),
        key=lambda c: c.next_followup_at or now,
    )


def successor_summary(leaver: Staff, customers: list[Customer], now: datetime, tz: object) -> str:
    """What a successor is told: how many, the most important ones, and the follow-ups due this week."""
    lines = [f"**客户交接**\n> {leaver.name}离职，{len(customers)} 位客户已转给您负责。"]
    lines.append("重点客户：")
    for c in customers[:TOP_CUSTOMERS]:
        lines.append(f"> {c.name}（{c.grade or '未分级'}级）")
    due = _due(customers, now)
    if due:
        lines.append(f"近 7 天待跟进 {len(due)} 位：")
        for c in due[:TOP_CUSTOMERS]:
            assert c.next_followup_at is not None
            when = c.next_followup_at.astimezone(tz).strftime("%m-%d %H:%M")  # type: ignore[arg-type]
            lines.append(f"> {when} {c.name}")
    lines.append("发送「客户 名称」查看资料，发送「跟进 名称 内容」记录跟进。")
    return "\n".join(lines)


def totals_text(leaver: Staff, plan: Plan, totals: Counter[str] | dict[str, int]) -> str:
    t = Counter(totals)
    return (
        f"**离职交接完成**\n> {leaver.name} → {plan.describe()}\n"
        f"> 客户 {t['customers']} 位（其中转入公海 {t['to_pool']} 位），未结工单 {t['tickets']} 个，"
        f"待审批 {t['approval_steps']} 个、审批申请 {t['approvals']} 个，提醒 {t['reminders']} 条，"
        f"客户联系人 {t['contacts']} 位待转接\n{leaver.name}的账号已停用。"
    )


async def _tell(
    services: Services, leaver: Staff, plan: Plan, outcome: Outcome, manager: Staff | None,
    actor: Staff | str, now: datetime, conn: BaseDBAsyncClient,
) -> None:  # fmt: skip
    key = f"handover:{outcome.handover.id}"
    for successor in plan.successors:
        moved = outcome.customers.get(successor.id, [])
        text = successor_summary(leaver, moved, now, services.settings.tz)
        await services.outbox.push(successor, Reply.markdown(text), f"{key}:{successor.id}", using_db=conn)
    told = {s.id for s in plan.successors}
    actor_id = actor.id if isinstance(actor, Staff) else None
    if manager is not None and manager.id not in told and manager.id != actor_id:
        text = totals_text(leaver, plan, outcome.totals)
        await services.outbox.push(manager, Reply.markdown(text), f"{key}:manager", using_db=conn)

"""The departure handover (离职交接): in one transaction, everything a leaving staff member holds moves on — their
customers (to one successor, round robin over several, or into the public pool), open tickets, pending approval
steps and requests, unfired reminders — each customer audited with before and after; the leaver is deactivated;
the platform contacts to move are queued (``ContactTransfer``); the successors get a summary of what they took
over and what is due, the manager the totals. Used by the chat command and by ``crmbot staff leave``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model

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
    """Where the leaver's customers go: round robin over ``successors`` (one: all to them; none: the pool), except
    for the grades ``by_grade`` names, which go round robin over their own list (empty: the pool)."""

    successors: tuple[Staff, ...] = ()
    departed: bool = False  # the leaver has already left the chat platforms too (their accounts are gone)
    by_grade: tuple[tuple[str, tuple[Staff, ...]], ...] = ()

    def targets_for(self, grade: str) -> tuple[Staff, ...]:
        return dict(self.by_grade).get(grade, self.successors)

    @property
    def everyone(self) -> tuple[Staff, ...]:
        """Every successor named, each once."""
        named = [*self.successors, *(s for _, staff in self.by_grade for s in staff)]
        return tuple({s.id: s for s in named}.values())

    def describe(self) -> str:
        def names(staff: tuple[Staff, ...]) -> str:
            return "、".join(s.name for s in staff) or "公海"

        rules = [f"{grade}级 → {names(staff)}" for grade, staff in self.by_grade]
        return "；".join([*rules, ("其余 → " if rules else "") + names(self.successors)])


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
    for successor in plan.everyone:
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
        plan={"describe": plan.describe(), "departed": plan.departed},
        created_at=now.astimezone(UTC),
        using_db=conn,
    )
    outcome = Outcome(handover)
    rows = [entry("staff.deactivate", "staff", leaver.id, {"active": True}, {"active": False}, actor, platform)]
    manager = await Staff.filter(id=leaver.manager_id or 0, active=True).using_db(conn).first()
    fallback = (plan.successors or plan.everyone or (manager,))[0]
    owner_of = await _move_customers(leaver, plan, outcome, rows, actor, platform, handover.id, conn)
    await _move_work(_Moves(leaver, owner_of, fallback, rows, actor, platform, conn), outcome.totals)
    await _queue_contact_transfers(services, leaver, handover, owner_of, outcome, conn)
    await AuditLog.bulk_create(rows, using_db=conn)
    handover.totals = dict(outcome.totals)
    await handover.save(using_db=conn, update_fields=["totals"])
    await _tell(services, leaver, plan, outcome, manager, actor, now, conn)
    return outcome


def entry(
    action: str, entity: str, entity_id: object, before: dict[str, Any], after: dict[str, Any],
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
    turns: Counter[str] = Counter()  # round robin within each grade's list
    for customer in customers:
        targets = plan.targets_for(customer.grade)
        key = customer.grade if customer.grade in dict(plan.by_grade) else ""
        target = targets[turns[key] % len(targets)].id if targets else None
        turns[key] += 1
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


@dataclass
class _Moves:
    """What moving the rest of the leaver's work needs: who takes over each customer, and the audit rows."""

    leaver: Staff
    owner_of: dict[int, int | None]  # customer id → new owner id (None: the pool)
    fallback: Staff | None  # who takes what belongs to no moved customer: the first successor, else the manager
    rows: list[AuditLog]
    actor: Staff | str
    platform: str
    conn: BaseDBAsyncClient

    async def reassign(self, model: type[Model], column: str, items: Sequence[Any], *, by_customer: bool) -> int:
        """Point ``column`` of each item at its customer's new owner (or the fallback); how many moved."""
        moved = 0
        for item in items:
            target = self.owner_of.get(item.customer_id or 0) if by_customer else None
            target = target or (self.fallback.id if self.fallback else None)
            if target is None:
                continue
            await model.filter(id=item.id).using_db(self.conn).update(**{column: target})
            table = model._meta.db_table
            before, after = {column: self.leaver.id}, {column: target}
            self.rows.append(entry(f"{table}.handover", table, item.id, before, after, self.actor, self.platform))
            moved += 1
        return moved


async def _move_work(moves: _Moves, totals: Counter[str]) -> None:
    """Open tickets, approval steps to decide and requests made, unfired reminders."""
    leaver, conn = moves.leaver, moves.conn
    tickets = Ticket.filter(assignee_id=leaver.id, status__in=[TicketStatus.OPEN, TicketStatus.IN_PROGRESS])
    totals["tickets"] = await moves.reassign(Ticket, "assignee_id", await tickets.using_db(conn), by_customer=True)
    steps = ApprovalStep.filter(approver_id=leaver.id, status__in=[StepStatus.PENDING, StepStatus.WAITING])
    totals["approval_steps"] = await moves.reassign(
        ApprovalStep, "approver_id", await steps.using_db(conn), by_customer=False
    )
    requests = Approval.filter(requester_id=leaver.id, status=ApprovalStatus.PENDING)
    totals["approvals"] = await moves.reassign(
        Approval, "requester_id", await requests.using_db(conn), by_customer=True
    )
    reminders = Reminder.filter(staff_id=leaver.id, fired_at__isnull=True)
    totals["reminders"] = await moves.reassign(Reminder, "staff_id", await reminders.using_db(conn), by_customer=True)


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
    for successor in plan.everyone:
        moved = outcome.customers.get(successor.id, [])
        text = successor_summary(leaver, moved, now, services.settings.tz)
        await services.outbox.push(successor, Reply.markdown(text), f"{key}:{successor.id}", using_db=conn)
    told = {s.id for s in plan.everyone}
    actor_id = actor.id if isinstance(actor, Staff) else None
    if manager is not None and manager.id not in told and manager.id != actor_id:
        text = totals_text(leaver, plan, outcome.totals)
        await services.outbox.push(manager, Reply.markdown(text), f"{key}:manager", using_db=conn)

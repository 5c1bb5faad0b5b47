"""The ticket rules: the first-response due time from ``[rules] sla_first_response_minutes_*``, the assignee (the
configured service engineer with the fewest open tickets, ``[tickets] service_engineers``, else the customer's
owner, else the reporter), who may update a ticket, and which moves are allowed. Resolving sets ``revisit_due`` =
resolved_at + ``ticket_revisit_hours``; the SLA and revisit timers are this capability's scheduled rules.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.functions import Count

from bot.access import visible_to
from bot.config import Settings
from bot.identity import find_staff
from models.customers import Customer
from models.staff import Role, Staff
from models.tickets import Ticket, TicketPriority, TicketStatus

OPEN_STATES = (TicketStatus.OPEN, TicketStatus.IN_PROGRESS)
# Allowed moves. A resolved ticket may be reopened (back to in progress); closed is final.
TRANSITIONS: dict[TicketStatus, set[TicketStatus]] = {
    TicketStatus.OPEN: {TicketStatus.IN_PROGRESS, TicketStatus.RESOLVED},
    TicketStatus.IN_PROGRESS: {TicketStatus.RESOLVED},
    TicketStatus.RESOLVED: {TicketStatus.CLOSED, TicketStatus.IN_PROGRESS},
    TicketStatus.CLOSED: set(),
}
PRIORITY_LABELS = {TicketPriority.NORMAL: "普通", TicketPriority.URGENT: "紧急"}


async def service_engineers(settings: Settings) -> list[Staff]:
    """The configured service engineers (names or platform user ids), in the configured order."""
    found: list[Staff] = []
    for name in settings.tickets.service_engineers:
        staff = await find_staff(name)
        if staff is not None and staff not in found:
            found.append(staff)
    return found


async def choose_assignee(customer: Customer, reporter: Staff | None, settings: Settings) -> Staff | None:
    """The service engineer with the fewest open tickets (ties: least recently assigned), else the owner."""
    engineers = await service_engineers(settings)
    if engineers:
        ids = [e.id for e in engineers]
        loads = dict(
            await Ticket.filter(assignee_id__in=ids, status__in=OPEN_STATES)
            .annotate(n=Count("id"))
            .group_by("assignee_id")
            .values_list("assignee_id", "n")
        )
        latest: dict[int, datetime] = {}
        for assignee_id, created in await Ticket.filter(assignee_id__in=ids).values_list("assignee_id", "created_at"):
            if assignee_id not in latest or created > latest[assignee_id]:
                latest[assignee_id] = created
        epoch = datetime.min.replace(tzinfo=None)

        def key(e: Staff) -> tuple[int, float, int]:
            last = latest.get(e.id)
            return (int(loads.get(e.id, 0)), last.timestamp() if last else epoch.toordinal(), e.id)

        return min(engineers, key=key)
    if customer.owner_id:
        owner = await Staff.get_or_none(id=customer.owner_id, active=True)
        if owner is not None:
            return owner
    return reporter


async def open_ticket(
    customer: Customer,
    content: str,
    priority: TicketPriority,
    reporter: Staff | None,
    now: datetime,
    settings: Settings,
    source: str = "manual",
    conn: Any = None,
) -> Ticket:
    """Create a ticket with its SLA due time and assignee (used by the command and by keyword rules)."""
    now = now.astimezone(UTC)
    minutes = (
        settings.rules.sla_first_response_minutes_urgent
        if priority == TicketPriority.URGENT
        else settings.rules.sla_first_response_minutes_normal
    )
    assignee = await choose_assignee(customer, reporter, settings)
    title = content.splitlines()[0][:60] if content else "客户服务请求"
    return await Ticket.create(
        customer_id=customer.id,
        title=title,
        description=content[:4000],
        priority=priority,
        status=TicketStatus.OPEN,
        reporter_id=reporter.id if reporter else None,
        assignee_id=assignee.id if assignee else None,
        source=source,
        first_response_due=now + timedelta(minutes=minutes),
        created_at=now,
        using_db=conn,
    )


def ticket_state(ticket: Ticket) -> dict[str, Any]:
    return {
        "status": str(ticket.status),
        "priority": str(ticket.priority),
        "assignee_id": ticket.assignee_id,
        "first_responded_at": ticket.first_responded_at.isoformat() if ticket.first_responded_at else None,
        "resolved_at": ticket.resolved_at.isoformat() if ticket.resolved_at else None,
        "revisit_due": ticket.revisit_due.isoformat() if ticket.revisit_due else None,
        "closed_at": ticket.closed_at.isoformat() if ticket.closed_at else None,
        "resolution": ticket.resolution,
    }


async def may_update(staff: Staff, ticket: Ticket, customer: Customer) -> bool:
    if staff.role in (Role.ADMIN, Role.DIRECTOR) or staff.id in (ticket.assignee_id, ticket.reporter_id):
        return True
    if await visible_to(staff, customer):
        return True
    if staff.role == Role.MANAGER and ticket.assignee_id:
        return await Staff.filter(id=ticket.assignee_id, manager_id=staff.id).exists()
    return False

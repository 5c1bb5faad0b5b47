"""Tickets (工单): service requests with a first-response SLA and a revisit after resolution."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from models.customers import Customer
from models.staff import Staff


class TicketStatus(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"


TICKET_STATUS_LABELS: dict[TicketStatus, str] = {
    TicketStatus.OPEN: "待处理",
    TicketStatus.IN_PROGRESS: "处理中",
    TicketStatus.RESOLVED: "已解决",
    TicketStatus.CLOSED: "已关闭",
}


class TicketPriority(StrEnum):
    NORMAL = "normal"
    URGENT = "urgent"


class Ticket(Model):
    """A service request. SLA times are stored when they are set, so timers are plain indexed queries."""

    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="tickets", on_delete=fields.CASCADE
    )
    customer_id: int
    title = fields.CharField(max_length=200, default="")
    description = fields.TextField(default="")
    priority = fields.CharEnumField(TicketPriority, max_length=16, default=TicketPriority.NORMAL)
    status = fields.CharEnumField(TicketStatus, max_length=16, default=TicketStatus.OPEN, db_index=True)
    reporter: fields.ForeignKeyNullableRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="reported_tickets", null=True, on_delete=fields.SET_NULL
    )
    reporter_id: int | None
    assignee: fields.ForeignKeyNullableRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="assigned_tickets", null=True, on_delete=fields.SET_NULL
    )
    assignee_id: int | None
    source = fields.CharField(max_length=16, default="manual", description="manual, or keyword rule")
    first_response_due = fields.DatetimeField(db_index=True)
    first_responded_at = fields.DatetimeField(null=True)
    resolution = fields.TextField(default="")
    resolved_at = fields.DatetimeField(null=True, db_index=True)
    revisit_due = fields.DatetimeField(null=True, db_index=True)
    revisited_at = fields.DatetimeField(null=True)
    closed_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(db_index=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "ticket"
        # The SLA and revisit rules: unanswered (or unrevisited) tickets by due time, without walking old ones;
        # one assignee's unanswered tickets (the rep's day).
        indexes = (
            ("first_responded_at", "status", "first_response_due"),
            ("status", "revisit_due"),
            ("assignee_id", "first_responded_at", "first_response_due"),
        )

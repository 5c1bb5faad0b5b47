"""People leaving and the public pool: a departure handover (``Handover``) with the chat-platform contacts it moves
(``ContactTransfer``), every claim from and release into the public pool (``PoolMove``), which the pool's limits
and cooldown are counted from, and the leads given to reps (``LeadAssignment``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model

from models.customers import Customer
from models.staff import Staff


class TransferStatus(StrEnum):
    WAITING = "waiting"  # not yet asked of the platform
    PENDING = "pending"  # asked; the platform has not finished (the customer may still refuse)
    DONE = "done"
    FAILED = "failed"


class Handover(Model):
    """One departure: everything ``leaver`` held, moved in one transaction by ``actor_name``; ``totals`` counts what
    moved, ``plan`` says to whom (a successor, a round robin over several, or the pool)."""

    id = fields.IntField(primary_key=True)
    leaver: fields.ForeignKeyRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="handovers", on_delete=fields.CASCADE
    )
    leaver_id: int
    actor_name = fields.CharField(max_length=64, default="")
    plan: Any = fields.JSONField(default=dict)
    totals: Any = fields.JSONField(default=dict)
    created_at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "handover"


class ContactTransfer(Model):
    """One customer contact on the chat platform moving from the leaver to the successor, until the platform says
    it is done or failed (``reason`` in the platform's words)."""

    id = fields.IntField(primary_key=True)
    handover: fields.ForeignKeyRelation[Handover] = fields.ForeignKeyField(
        "models.Handover", related_name="transfers", on_delete=fields.CASCADE
    )
    handover_id: int
    customer_id = fields.IntField(null=True)
    platform = fields.CharField(max_length=16)
    contact_user_id = fields.CharField(max_length=64)
    from_user_id = fields.CharField(max_length=64)
    to_user_id = fields.CharField(max_length=64)
    status = fields.CharEnumField(TransferStatus, max_length=16, default=TransferStatus.WAITING, db_index=True)
    reason = fields.CharField(max_length=64, default="")
    attempts = fields.IntField(default=0)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "contact_transfer"
        unique_together = (("handover_id", "contact_user_id"),)


class PoolMove(Model):
    """A customer claimed from (``claim``) or released into (``release``) the public pool by ``staff``."""

    id = fields.BigIntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="pool_moves", on_delete=fields.CASCADE
    )
    customer_id: int
    staff: fields.ForeignKeyRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="pool_moves", on_delete=fields.CASCADE
    )
    staff_id: int
    action = fields.CharField(max_length=8)
    at = fields.DatetimeField()

    class Meta:
        table = "pool_move"
        indexes = (("staff_id", "action", "at"), ("customer_id", "staff_id", "action"))


class LeadAssignment(Model):
    """A lead (a customer without an owner) given to ``staff`` at ``assigned_at``; ``returned_at`` is set when,
    unworked, it went back to the pool."""

    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="lead_assignments", on_delete=fields.CASCADE
    )
    customer_id: int
    staff: fields.ForeignKeyRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="lead_assignments", on_delete=fields.CASCADE
    )
    staff_id: int
    assigned_at = fields.DatetimeField()
    returned_at = fields.DatetimeField(null=True)

    class Meta:
        table = "lead_assignment"
        indexes = (("returned_at", "assigned_at"),)

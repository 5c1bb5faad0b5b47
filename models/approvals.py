"""Discount approvals (折扣审批): a rep's request and the chain of approvers it passes through, one step a level.

An ``Approval`` is shown to people as ``AP<id>``. Its ``ApprovalStep`` rows are the chain: exactly one step is
``pending`` (the current approver's) while the approval is pending, later ones wait. A decision flips a step from
``pending`` with a conditional update, so two clicks can never both win. An escalation closes the current step as
``escalated`` and moves the request up a level: to the next step of the chain, or to a new last step for the
approver's superior. ``card_id`` identifies the card sent for a step: a click must carry the very card id of the
step it decides.
"""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from models.customers import Customer
from models.staff import Staff


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


APPROVAL_STATUS_LABELS: dict[ApprovalStatus, str] = {
    ApprovalStatus.PENDING: "审批中",
    ApprovalStatus.APPROVED: "已同意",
    ApprovalStatus.REJECTED: "已驳回",
    ApprovalStatus.WITHDRAWN: "已撤回",
}


class StepStatus(StrEnum):
    WAITING = "waiting"
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    ESCALATED = "escalated"
    CANCELLED = "cancelled"


STEP_STATUS_LABELS: dict[StepStatus, str] = {
    StepStatus.WAITING: "待审批",
    StepStatus.PENDING: "审批中",
    StepStatus.APPROVED: "已同意",
    StepStatus.REJECTED: "已驳回",
    StepStatus.ESCALATED: "已超时升级",
    StepStatus.CANCELLED: "已取消",
}


class Approval(Model):
    """A discount request: customer, contract amount (yuan), discount (fraction of list price paid), reason."""

    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="approvals", on_delete=fields.CASCADE
    )
    customer_id: int
    requester: fields.ForeignKeyRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="approval_requests", on_delete=fields.CASCADE
    )
    requester_id: int
    amount = fields.DecimalField(max_digits=16, decimal_places=2, null=True, description="contract amount in yuan")
    discount = fields.DecimalField(max_digits=6, decimal_places=4, description="fraction of list price, 0.85")
    reason = fields.TextField(default="")
    status = fields.CharEnumField(ApprovalStatus, max_length=16, default=ApprovalStatus.PENDING, db_index=True)
    level = fields.IntField(default=1, description="the level being decided now, from 1")
    levels = fields.IntField(default=1, description="how many levels the chain has")
    platform = fields.CharField(max_length=16, default="", description="where the request was made")
    created_at = fields.DatetimeField(db_index=True)
    decided_at = fields.DatetimeField(null=True)
    updated_at = fields.DatetimeField(auto_now=True)

    steps: fields.ReverseRelation[ApprovalStep]

    class Meta:
        table = "approval"
        indexes = (("customer_id", "created_at"),)

    @property
    def code(self) -> str:
        """The public id people type and see, e.g. ``AP12``."""
        return f"AP{self.id}"


class ApprovalStep(Model):
    """One level of the chain, decided by one approver. ``activated_at`` starts the reminder and escalation clocks."""

    id = fields.IntField(primary_key=True)
    approval: fields.ForeignKeyRelation[Approval] = fields.ForeignKeyField(
        "models.Approval", related_name="steps", on_delete=fields.CASCADE
    )
    approval_id: int
    level = fields.IntField()
    role = fields.CharField(max_length=16, description="manager, director or admin")
    approver: fields.ForeignKeyRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="approval_steps", on_delete=fields.CASCADE
    )
    approver_id: int
    status = fields.CharEnumField(StepStatus, max_length=16, default=StepStatus.WAITING)
    activated_at = fields.DatetimeField(null=True)
    decided_at = fields.DatetimeField(null=True)
    comment = fields.TextField(default="")
    card_id = fields.CharField(max_length=128, null=True, unique=True, description="handle of the card sent")
    card_handle = fields.CharField(max_length=256, default="", description="update handle of the deciding click")
    decided_via = fields.CharField(max_length=16, default="", description="card, text or timeout")

    class Meta:
        table = "approval_step"
        unique_together = (("approval_id", "level"),)
        indexes = (("status", "activated_at"),)

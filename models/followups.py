"""Follow-ups (跟进记录): what a rep did with a customer, and when they will be in touch next."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

from models.customers import Customer
from models.staff import Staff


class FollowUp(Model):
    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="followups", on_delete=fields.CASCADE
    )
    customer_id: int
    staff: fields.ForeignKeyNullableRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="followups", null=True, on_delete=fields.SET_NULL
    )
    staff_id: int | None
    content = fields.TextField(default="")
    channel = fields.CharField(max_length=16, default="chat", description="visit, phone, wechat, chat, email")
    next_at = fields.DatetimeField(null=True, db_index=True)
    source = fields.CharField(max_length=16, default="manual", description="manual, or archive for a real reply")
    created_at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "followup"
        indexes = (("customer_id", "created_at"),)

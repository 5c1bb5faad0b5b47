"""The audit log: who changed what, before and after, when, from which platform and message, about which customer,
and which earlier row an undo (撤销) reverted."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class AuditLog(Model):
    id = fields.BigIntField(primary_key=True)
    actor_id = fields.IntField(null=True)
    actor_name = fields.CharField(max_length=64, default="")
    action = fields.CharField(max_length=64)
    entity = fields.CharField(max_length=32)
    entity_id = fields.CharField(max_length=64, default="")
    before: Any = fields.JSONField(null=True)
    after: Any = fields.JSONField(null=True)
    platform = fields.CharField(max_length=16, default="")
    source = fields.CharField(
        max_length=191, default="", db_default="", description="platform and message id of the request"
    )
    customer_id = fields.IntField(null=True, description="the customer the change is about")
    undo_of = fields.BigIntField(null=True, description="the row this undo reverted")
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)

    class Meta:
        table = "audit_log"
        # One person's latest changes (撤销), one customer's history (操作记录), newest first from the index.
        indexes = (("actor_id", "id"), ("customer_id", "id"))

"""The outbox: every reply and push is a row here before it is sent, so nothing is lost or sent twice.

``dedupe_key`` makes enqueueing idempotent (the same reply or the same reminder is one row however often it
is produced); a dispatcher claims due rows with a lease (``attempts`` counts the claims) and marks them in flight
in the same transaction, before any request (``attempted_at``: from the first send on, the row may have reached the
person), sends them, and marks each sent or reschedules it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.indexes import PartialIndex
from tortoise.models import Model


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class OutboxMessage(Model):
    id = fields.BigIntField(primary_key=True)
    dedupe_key = fields.CharField(max_length=191, unique=True)
    platform = fields.CharField(max_length=16)
    recipient = fields.CharField(max_length=128, description="platform user id, or a reply target")
    staff_id = fields.IntField(null=True)
    kind = fields.CharField(max_length=16, description="text | markdown | card | card_update")
    payload: Any = fields.JSONField()
    status = fields.CharEnumField(OutboxStatus, max_length=16, default=OutboxStatus.PENDING)
    attempts = fields.IntField(default=0)
    not_before = fields.DatetimeField(db_index=True)
    lease_until = fields.DatetimeField(null=True)
    attempted_at = fields.DatetimeField(null=True, description="when the first send began (committed before it)")
    last_error = fields.TextField(default="")
    result: Any = fields.JSONField(default=dict)
    created_at = fields.DatetimeField(auto_now_add=True)
    sent_at = fields.DatetimeField(null=True)

    class Meta:
        table = "outbox"
        # A claim reads the rows out on a lease and those due by (status, not_before), and the pending rows in id
        # order from an index of them only, stopping at its limit.
        indexes = (("status", "not_before"),
                   PartialIndex(fields=("id",), name="outbox_pending", condition={"status": "pending"}))  # fmt: skip


class OutboxQuota(Model):
    """A recipient's next free send slot under one of its platform's rate limits (WeCom: 30 messages per person
    per minute, 1,000 per hour): claims move it on as they lease rows, in their transaction, so that every
    instance respects the limit together."""

    id = fields.BigIntField(primary_key=True)
    platform = fields.CharField(max_length=16)
    recipient = fields.CharField(max_length=128)
    period_seconds = fields.IntField()
    slot = fields.DatetimeField()

    class Meta:
        table = "outbox_quota"
        unique_together = (("platform", "recipient", "period_seconds"),)

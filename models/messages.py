"""Archived messages: every message from every source, stored once per (platform, msgid).

Messages addressed to the bot (``to_bot``) also carry their processing state: a message is acknowledged to the
platform as soon as it is stored, and ``handled_at`` is set in the same transaction as the handler's effects, so
a crash in between is recovered by handling the unhandled rows again.
"""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.indexes import PartialIndex
from tortoise.models import Model

from models.customers import Customer
from models.staff import Staff


class Message(Model):
    id = fields.BigIntField(primary_key=True)
    platform = fields.CharField(max_length=16)
    msgid = fields.CharField(max_length=128)
    to_bot = fields.BooleanField(default=False)
    sender = fields.CharField(max_length=64, description="platform user id of the sender")
    receivers: Any = fields.JSONField(default=list)
    room_id = fields.CharField(max_length=128, default="")
    msgtype = fields.CharField(max_length=32, default="text")
    text = fields.TextField(default="")
    payload: Any = fields.JSONField(default=dict)
    staff: fields.ForeignKeyNullableRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="messages", null=True, on_delete=fields.SET_NULL
    )
    staff_id: int | None
    customer: fields.ForeignKeyNullableRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="messages", null=True, on_delete=fields.SET_NULL
    )
    customer_id: int | None
    sent_at = fields.DatetimeField(db_index=True)
    received_at = fields.DatetimeField(auto_now_add=True)
    handled_at = fields.DatetimeField(null=True)

    class Meta:
        table = "message"
        unique_together = (("platform", "msgid"),)
        # Only the messages to the bot are looked up by handled_at: an archive's millions of other rows stay out.
        indexes = (PartialIndex(fields=("handled_at",), name="message_to_bot_handled", condition={"to_bot": True}),
                   ("customer_id", "sent_at"))  # fmt: skip

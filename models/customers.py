"""Customers and their contacts: the profile every conversation, follow-up and ticket hangs on."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model

from models.staff import Staff


class Stage(StrEnum):
    LEAD = "lead"
    INTENT = "intent"
    PROPOSAL = "proposal"
    QUOTE = "quote"
    NEGOTIATION = "negotiation"
    WON = "won"
    LOST = "lost"


STAGE_LABELS: dict[Stage, str] = {
    Stage.LEAD: "潜在",
    Stage.INTENT: "意向",
    Stage.PROPOSAL: "方案",
    Stage.QUOTE: "报价",
    Stage.NEGOTIATION: "谈判",
    Stage.WON: "成交",
    Stage.LOST: "流失",
}


class Customer(Model):
    """A company we sell to. The ``owner`` is null while the customer sits in the public pool (公海)."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=128, unique=True)
    aliases: Any = fields.JSONField(default=list)
    industry = fields.CharField(max_length=64, default="")
    grade = fields.CharField(max_length=1, default="")
    stage = fields.CharEnumField(Stage, max_length=16, default=Stage.LEAD, db_index=True)
    owner: fields.ForeignKeyNullableRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="customers", null=True, on_delete=fields.SET_NULL
    )
    owner_id: int | None
    tags: Any = fields.JSONField(default=list)
    custom_fields: Any = fields.JSONField(default=dict)
    contract_end = fields.DateField(null=True, db_index=True)
    last_followup_at = fields.DatetimeField(null=True, db_index=True)
    next_followup_at = fields.DatetimeField(null=True, db_index=True)
    won_at = fields.DatetimeField(null=True, db_index=True)
    ladder_from = fields.DatetimeField(
        null=True, description="go-live baseline: the follow-up ladder counts from here if later"
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    contacts: fields.ReverseRelation[Contact]

    class Meta:
        table = "customer"
        # The follow-up ladder: stale customers by last contact, answered from the index alone (the go-live
        # baseline included); a rep's follow-ups due, in order (the rep's day).
        indexes = (
            ("last_followup_at", "owner_id", "stage", "ladder_from"),
            ("ladder_from",),
            ("owner_id", "next_followup_at"),
        )

    def __str__(self) -> str:
        return self.name


class Contact(Model):
    """A person at the customer. The ``external_userid`` links their WeCom chats (ids starting wm or wo)."""

    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="contacts", on_delete=fields.CASCADE
    )
    customer_id: int
    name = fields.CharField(max_length=64, default="")
    phone = fields.CharField(max_length=32, default="")
    title = fields.CharField(max_length=64, default="", db_default="", description="job title, e.g. 采购经理")
    role = fields.CharField(max_length=32, default="", description="decision-chain role, e.g. 决策人/采购/技术")
    external_userid = fields.CharField(max_length=64, null=True, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "contact"


class PendingChoice(Model):
    """A question the bot asked one staff member: which of these customers did you mean (reply with a number).

    Kept in the database so a restart between the question and the answer loses nothing. One per staff member:
    a newer question replaces the older one.
    """

    id = fields.IntField(primary_key=True)
    staff: fields.ForeignKeyRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="pending_choices", on_delete=fields.CASCADE
    )
    staff_id: int
    intent = fields.CharField(max_length=64)
    slots: Any = fields.JSONField(default=dict)
    slot = fields.CharField(max_length=32, default="customer", description="the slot the chosen option fills")
    options: Any = fields.JSONField(default=list)
    expires_at = fields.DatetimeField(db_index=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "pending_choice"
        unique_together = (("staff_id",),)


class VocabularyVersion(Model):
    """One row: a number that database triggers raise with every change of the names the bot recognizes
    (customer names and aliases, active staff names), in the transaction of the change. Understanding reloads
    its vocabulary when the number differs from the one it loaded (one primary-key read per batch)."""

    id = fields.IntField(primary_key=True)
    version = fields.BigIntField(default=0)

    class Meta:
        table = "vocabulary_version"

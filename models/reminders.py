"""Reminders a rep asked for (提醒我…) and the record of every scheduled push that has fired (RuleFiring)."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

from models.customers import Customer
from models.staff import Staff


class Reminder(Model):
    """An explicit reminder: tell ``staff`` the ``content`` at ``at``. ``fired_at`` is set when it went out."""

    id = fields.IntField(primary_key=True)
    staff: fields.ForeignKeyRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="reminders", on_delete=fields.CASCADE
    )
    staff_id: int
    customer: fields.ForeignKeyNullableRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="reminders", null=True, on_delete=fields.SET_NULL
    )
    customer_id: int | None
    content = fields.TextField(default="")
    at = fields.DatetimeField(db_index=True)
    fired_at = fields.DatetimeField(null=True)
    source = fields.CharField(max_length=191, default="", description="platform and msgid of the request")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "reminder"
        indexes = (("fired_at", "at"),)


class RuleFiring(Model):
    """One scheduled push that happened. The unique ``key`` (rule, subject, threshold, period) makes it once.

    ``subject_id`` and ``period_at`` repeat parts of the key as columns so that rules can skip subjects that
    already fired with an indexed anti-join instead of re-sending every key.
    """

    id = fields.BigIntField(primary_key=True)
    key = fields.CharField(max_length=191, unique=True)
    rule = fields.CharField(max_length=64)
    subject_id = fields.BigIntField(null=True)
    period_at = fields.DatetimeField(null=True)
    staff_id = fields.IntField(null=True)
    customer_id = fields.IntField(null=True)
    urgent = fields.BooleanField(default=False)
    text = fields.TextField(default="")
    run_id = fields.CharField(max_length=32, db_index=True)
    fired_at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "rule_firing"
        indexes = (("rule", "subject_id", "period_at"),)


class RuleCursor(Model):
    """Up to when the scheduled rules have run (``at`` = the ``now`` of the last completed pass)."""

    name = fields.CharField(max_length=32, primary_key=True)
    at = fields.DatetimeField()

    class Meta:
        table = "rule_cursor"

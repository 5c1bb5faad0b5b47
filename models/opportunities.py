"""Opportunities (商机): a deal with a customer, its amount, stage and expected close, the history of every stage it
entered (when, by whom) from which cycle times and conversion are computed exactly, and the sales targets per rep
and month that won amounts are measured against."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tortoise import fields
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model

from models.customers import Customer, Stage
from models.staff import Staff

# The open stages in the order a deal moves through them, then the win; ``rank`` compares how far deals got.
FUNNEL: tuple[Stage, ...] = (
    Stage.LEAD,
    Stage.INTENT,
    Stage.PROPOSAL,
    Stage.QUOTE,
    Stage.NEGOTIATION,
    Stage.WON,
)
OPEN_STAGES: tuple[Stage, ...] = FUNNEL[:-1]


def rank(stage: Stage | str) -> int:
    """How far along the funnel a stage is (lost is -1: it ends a deal without advancing it)."""
    value = Stage(stage)
    return FUNNEL.index(value) if value in FUNNEL else -1


class Opportunity(Model):
    """One deal (商机) with a customer. ``stage_entered_at`` is when its current stage began, ``reached`` the
    rank of the furthest stage it ever entered, ``last_moved_at`` the later of ``stage_entered_at`` and its
    customer's last follow-up (kept by whatever moves either), and ``details`` what a stage's playbook requires
    (需求分析 …)."""

    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="opportunities", on_delete=fields.CASCADE
    )
    customer_id: int
    name = fields.CharField(max_length=128)
    amount = fields.DecimalField(max_digits=16, decimal_places=2, default=0, description="yuan")
    stage = fields.CharEnumField(Stage, max_length=16, default=Stage.LEAD)
    probability = fields.FloatField(null=True, description="overrides the stage's probability when set")
    expected_close = fields.DateField(null=True, db_index=True)
    owner: fields.ForeignKeyNullableRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="opportunities", null=True, on_delete=fields.SET_NULL
    )
    owner_id: int | None
    source = fields.CharField(max_length=32, default="")
    lost_reason = fields.CharField(max_length=200, default="")
    details: Any = fields.JSONField(default=dict)
    reached = fields.IntField(default=0)
    stage_entered_at = fields.DatetimeField(db_index=True)
    last_moved_at = fields.DatetimeField(null=True, description="its stage change or its customer's follow-up")
    closed_at = fields.DatetimeField(null=True, db_index=True)
    created_at = fields.DatetimeField(db_index=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "opportunity"
        # Stalled deals by owner (or for the company) and stage, longest-stalled first; a rep's deals closing
        # soon, in order; the funnel's totals of deals opened in a period from the index alone; a customer's open
        # deals.
        indexes = (
            ("owner_id", "stage", "last_moved_at"),
            ("stage", "last_moved_at"),
            ("owner_id", "expected_close", "stage"),
            ("owner_id", "stage", "reached", "created_at", "amount", "probability"),
            ("customer_id", "stage"),
        )

    def __str__(self) -> str:
        return self.name


async def follow_ups_move_deals(
    customer_id: int, last_followup_at: datetime | None, conn: BaseDBAsyncClient | None
) -> None:
    """The customer's last follow-up is now ``last_followup_at``: each of its deals last moved at the later of that
    and its own stage change. Whatever sets a customer's ``last_followup_at`` calls this in the same transaction."""
    deals = await Opportunity.filter(customer_id=customer_id).using_db(conn).values_list("id", "stage_entered_at")
    for deal_id, entered in deals:
        moved = max(entered, last_followup_at) if last_followup_at is not None else entered
        await Opportunity.filter(id=deal_id).using_db(conn).update(last_moved_at=moved)


class StageChange(Model):
    """An opportunity entered ``stage`` at ``entered_at`` (by ``actor``) and left it at ``left_at`` (null while it
    is still there), after ``stay_days``."""

    id = fields.BigIntField(primary_key=True)
    opportunity: fields.ForeignKeyRelation[Opportunity] = fields.ForeignKeyField(
        "models.Opportunity", related_name="stage_changes", on_delete=fields.CASCADE
    )
    opportunity_id: int
    stage = fields.CharEnumField(Stage, max_length=16)
    entered_at = fields.DatetimeField()
    left_at = fields.DatetimeField(null=True)
    stay_days = fields.FloatField(null=True, description="left_at - entered_at in days, once left")
    actor: fields.ForeignKeyNullableRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="stage_changes", null=True, on_delete=fields.SET_NULL
    )
    actor_id: int | None
    owner_id = fields.IntField(null=True, description="the deal's owner, so that a scope's stays need no join")

    class Meta:
        table = "opportunity_stage"
        # One deal's history in order; the funnel's stays per deal from the index alone; the playbook rules'
        # "still in the stage entered then" by stage and time; the n-th stay of a stage within one whole day of
        # its histogram, for the company and for a team (from the index alone), and for one owner.
        indexes = (
            ("opportunity_id", "entered_at"),
            ("opportunity_id", "stage", "stay_days"),
            ("stage", "left_at", "entered_at"),
            ("stage", "stay_days", "owner_id"),
            ("owner_id", "stage", "stay_days"),
        )


class StayCount(Model):
    """How many completed stays of ``stage`` by deals of ``owner_id`` (0: none) lasted ``days`` whole days (the
    floor of ``stay_days``), kept in the same transaction as the stay is closed: a median is then found by
    walking these counts and reading one row of the history within the day it falls in."""

    id = fields.IntField(primary_key=True)
    owner_id = fields.IntField()
    stage = fields.CharEnumField(Stage, max_length=16)
    days = fields.IntField()
    n = fields.IntField(default=0)

    class Meta:
        table = "opportunity_stay_count"
        unique_together = (("owner_id", "stage", "days"),)
        # The company's counts by stage and day from the index alone, in order.
        indexes = (("stage", "days", "owner_id", "n"),)


# Slots per day of ``StaySlotCount``: a power of two, so that a stay's slot (the floor of ``stay_days × 32``) and the
# bounds of a slot (``slot / 32``) agree exactly in floating point.
SLOTS_PER_DAY = 32


class StaySlotCount(Model):
    """How many completed stays of ``stage`` by deals of ``owner_id`` (0: none) fell in ``slot``, the floor of
    ``stay_days × SLOTS_PER_DAY`` (45 minutes): within the day ``StayCount`` finds a median in, these say in which
    slot of it, so that the history is read over 45 minutes of stays rather than a whole day of them."""

    id = fields.IntField(primary_key=True)
    owner_id = fields.IntField()
    stage = fields.CharEnumField(Stage, max_length=16)
    slot = fields.IntField()
    n = fields.IntField(default=0)

    class Meta:
        table = "opportunity_stay_slot_count"
        unique_together = (("owner_id", "stage", "slot"),)
        # The company's counts by stage and slot from the index alone, in order.
        indexes = (("stage", "slot", "owner_id", "n"),)


class FunnelCount(Model):
    """The funnel's totals of the deals of ``owner_id`` (0: none) now at ``stage`` that got as far as
    ``reached``: how many, their amount, the amount of those without a probability of their own (weighted by the
    stage's), and the sum of amount × probability of the others. Kept in the transaction that opens, moves or
    edits a deal, so that a funnel reads a few rows per owner instead of every deal."""

    id = fields.IntField(primary_key=True)
    owner_id = fields.IntField()
    stage = fields.CharEnumField(Stage, max_length=16)
    reached = fields.IntField()
    n = fields.IntField(default=0)
    amount = fields.FloatField(default=0)
    plain = fields.FloatField(default=0)
    own = fields.FloatField(default=0)

    class Meta:
        table = "opportunity_funnel_count"
        unique_together = (("owner_id", "stage", "reached"),)


class SalesTarget(Model):
    """What one rep should win in one month (``YYYY-MM``), in yuan."""

    id = fields.IntField(primary_key=True)
    staff: fields.ForeignKeyRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="targets", on_delete=fields.CASCADE
    )
    staff_id: int
    month = fields.CharField(max_length=7)
    amount = fields.DecimalField(max_digits=16, decimal_places=2)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "sales_target"
        unique_together = (("staff_id", "month"),)

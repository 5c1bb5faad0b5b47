"""Opportunities (商机), their stage history and sales targets; every customer already beyond 潜在 gets one
deal at its stage (amount unknown, entered when the customer was last changed, or won), so funnel and cycle
times start from what the customers show."""

import functools
from json import dumps, loads

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

from models.customers import Stage

RANKS = (
    "CASE c.stage WHEN 'intent' THEN 1 WHEN 'proposal' THEN 2 WHEN 'quote' THEN 3 WHEN 'negotiation' THEN 4"
    " WHEN 'won' THEN 5 ELSE 0 END"
)
ENTERED = "CASE WHEN c.stage = 'won' THEN COALESCE(c.won_at, c.updated_at) ELSE c.updated_at END"
BRING_OVER = [
    "INSERT INTO opportunity (customer_id, name, amount, stage, owner_id, source, lost_reason, details, reached,"
    " stage_entered_at, closed_at, created_at, updated_at)"
    f" SELECT c.id, c.name, 0, c.stage, c.owner_id, 'migration', '', '{{}}', {RANKS}, {ENTERED},"
    f" CASE WHEN c.stage IN ('won', 'lost') THEN {ENTERED} END, c.created_at, c.updated_at"
    " FROM customer c WHERE c.stage <> 'lead'",
    "INSERT INTO opportunity_stage (opportunity_id, stage, entered_at)"
    " SELECT o.id, o.stage, o.stage_entered_at FROM opportunity o WHERE o.source = 'migration'",
]


class Migration(migrations.Migration):
    dependencies = [("models", "0006_orders")]

    initial = False

    operations = [
        ops.CreateModel(
            name="Opportunity",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "customer",
                    fields.ForeignKeyField(
                        "models.Customer",
                        source_field="customer_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="opportunities",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("name", fields.CharField(max_length=128)),
                ("amount", fields.DecimalField(default=0, description="yuan", max_digits=16, decimal_places=2)),
                (
                    "stage",
                    fields.CharEnumField(
                        default=Stage.LEAD,
                        description="LEAD: lead\nINTENT: intent\nPROPOSAL: proposal\nQUOTE: quote\nNEGOTIATION: negotiation\nWON: won\nLOST: lost",
                        enum_type=Stage,
                        max_length=16,
                    ),
                ),
                ("probability", fields.FloatField(null=True, description="overrides the stage's probability when set")),
                ("expected_close", fields.DateField(null=True, db_index=True)),
                (
                    "owner",
                    fields.ForeignKeyField(
                        "models.Staff",
                        source_field="owner_id",
                        null=True,
                        db_constraint=True,
                        to_field="id",
                        related_name="opportunities",
                        on_delete=OnDelete.SET_NULL,
                    ),
                ),
                ("source", fields.CharField(default="", max_length=32)),
                ("lost_reason", fields.CharField(default="", max_length=200)),
                (
                    "details",
                    fields.JSONField(
                        default=dict, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("reached", fields.IntField(default=0)),
                ("stage_entered_at", fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
                ("closed_at", fields.DatetimeField(null=True, db_index=True, auto_now=False, auto_now_add=False)),
                ("created_at", fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "opportunity",
                "app": "models",
                "indexes": [
                    Index(fields=["owner_id", "stage", "stage_entered_at"]),
                    Index(fields=["owner_id", "stage", "reached", "created_at", "amount", "probability"]),
                    Index(fields=["customer_id", "stage"]),
                ],
                "pk_attr": "id",
                "table_description": "One deal (商机) with a customer. ``stage_entered_at`` is when its current stage began, ``reached`` the",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="SalesTarget",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "staff",
                    fields.ForeignKeyField(
                        "models.Staff",
                        source_field="staff_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="targets",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("month", fields.CharField(max_length=7)),
                ("amount", fields.DecimalField(max_digits=16, decimal_places=2)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "sales_target",
                "app": "models",
                "unique_together": (("staff_id", "month"),),
                "pk_attr": "id",
                "table_description": "What one rep should win in one month (``YYYY-MM``), in yuan.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="StageChange",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "opportunity",
                    fields.ForeignKeyField(
                        "models.Opportunity",
                        source_field="opportunity_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="stage_changes",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                (
                    "stage",
                    fields.CharEnumField(
                        description="LEAD: lead\nINTENT: intent\nPROPOSAL: proposal\nQUOTE: quote\nNEGOTIATION: negotiation\nWON: won\nLOST: lost",
                        enum_type=Stage,
                        max_length=16,
                    ),
                ),
                ("entered_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("left_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("stay_days", fields.FloatField(null=True, description="left_at - entered_at in days, once left")),
                (
                    "actor",
                    fields.ForeignKeyField(
                        "models.Staff",
                        source_field="actor_id",
                        null=True,
                        db_constraint=True,
                        to_field="id",
                        related_name="stage_changes",
                        on_delete=OnDelete.SET_NULL,
                    ),
                ),
            ],
            options={
                "table": "opportunity_stage",
                "app": "models",
                "indexes": [
                    Index(fields=["opportunity_id", "entered_at"]),
                    Index(fields=["opportunity_id", "stage", "stay_days"]),
                    Index(fields=["stage", "left_at", "entered_at"]),
                ],
                "pk_attr": "id",
                "table_description": "An opportunity entered ``stage`` at ``entered_at`` (by ``actor``) and left it at ``left_at`` (null while it",
            },
            bases=["Model"],
        ),
        ops.RunSQL(BRING_OVER, reverse_sql=[]),
    ]

"""``handover``, ``contact_transfer``, ``pool_move`` and ``lead_assignment``: departures, the platform contacts they
move, the public pool's claims and releases, and the leads given to reps."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops

from models.people import TransferStatus


class Migration(migrations.Migration):
    dependencies = [("models", "0008_outbox_delivery")]

    initial = False

    operations = [
        ops.CreateModel(
            name="Handover",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "leaver",
                    fields.ForeignKeyField(
                        "models.Staff", source_field="leaver_id", db_constraint=True, to_field="id",
                        related_name="handovers", on_delete=fields.CASCADE,
                    ),
                ),
                ("actor_name", fields.CharField(default="", max_length=64)),
                ("plan", fields.JSONField(default=dict)),
                ("totals", fields.JSONField(default=dict)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=False, db_index=True)),
            ],
            options={"table": "handover", "app": "models", "pk_attr": "id"},
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ContactTransfer",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "handover",
                    fields.ForeignKeyField(
                        "models.Handover", source_field="handover_id", db_constraint=True, to_field="id",
                        related_name="transfers", on_delete=fields.CASCADE,
                    ),
                ),
                ("customer_id", fields.IntField(null=True)),
                ("platform", fields.CharField(max_length=16)),
                ("contact_user_id", fields.CharField(max_length=64)),
                ("from_user_id", fields.CharField(max_length=64)),
                ("to_user_id", fields.CharField(max_length=64)),
                (
                    "status",
                    fields.CharEnumField(
                        default=TransferStatus.WAITING, db_index=True, max_length=16, enum_type=TransferStatus,
                        description="WAITING: waiting\nPENDING: pending\nDONE: done\nFAILED: failed",
                    ),
                ),
                ("reason", fields.CharField(default="", max_length=64)),
                ("attempts", fields.IntField(default=0)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "contact_transfer",
                "app": "models",
                "unique_together": (("handover_id", "contact_user_id"),),
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="PoolMove",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "customer",
                    fields.ForeignKeyField(
                        "models.Customer", source_field="customer_id", db_constraint=True, to_field="id",
                        related_name="pool_moves", on_delete=fields.CASCADE,
                    ),
                ),
                (
                    "staff",
                    fields.ForeignKeyField(
                        "models.Staff", source_field="staff_id", db_constraint=True, to_field="id",
                        related_name="pool_moves", on_delete=fields.CASCADE,
                    ),
                ),
                ("action", fields.CharField(max_length=8)),
                ("at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "pool_move",
                "app": "models",
                "indexes": (("staff_id", "action", "at"), ("customer_id", "staff_id", "action")),
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="LeadAssignment",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "customer",
                    fields.ForeignKeyField(
                        "models.Customer", source_field="customer_id", db_constraint=True, to_field="id",
                        related_name="lead_assignments", on_delete=fields.CASCADE,
                    ),
                ),
                (
                    "staff",
                    fields.ForeignKeyField(
                        "models.Staff", source_field="staff_id", db_constraint=True, to_field="id",
                        related_name="lead_assignments", on_delete=fields.CASCADE,
                    ),
                ),
                ("assigned_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("returned_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "lead_assignment",
                "app": "models",
                "indexes": (("returned_at", "assigned_at"),),
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
    ]

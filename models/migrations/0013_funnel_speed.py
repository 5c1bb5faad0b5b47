"""The funnel at company scale: each deal keeps when it last moved (``last_moved_at``, the later of its stage
change and its customer's last follow-up), indexed by owner and stage so that stalled deals are counted and listed
from the index, and ``opportunity_funnel_count`` keeps the funnel's totals per owner, stage and furthest stage.
Both are filled here from the deals already there, and so are the stays per 45-minute slot
(``opportunity_stay_slot_count``) that narrow a median's read to one slot; and the indexes the rep's day reads by."""

from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

from models.customers import Stage
from models.opportunities import SLOTS_PER_DAY

LAST_MOVED = (
    "UPDATE opportunity SET last_moved_at = COALESCE((SELECT c.last_followup_at FROM customer c"
    " WHERE c.id = opportunity.customer_id AND c.last_followup_at > opportunity.stage_entered_at),"
    " stage_entered_at)"
)
COUNTS = (
    "INSERT INTO opportunity_funnel_count (owner_id, stage, reached, n, amount, plain, own)"
    " SELECT COALESCE(owner_id, 0), stage, reached, COUNT(*), SUM(amount),"
    " SUM(CASE WHEN probability IS NULL THEN amount ELSE 0 END),"
    " SUM(CASE WHEN probability IS NULL THEN 0 ELSE amount * probability END)"
    " FROM opportunity GROUP BY COALESCE(owner_id, 0), stage, reached"
)

# The slot of a stay: SQLite's CAST truncates toward zero, PostgreSQL's rounds, so each spells the floor.
SLOT = {
    "sqlite": f"CAST(stay_days * {SLOTS_PER_DAY} AS INTEGER)"
    f" - (stay_days * {SLOTS_PER_DAY} < CAST(stay_days * {SLOTS_PER_DAY} AS INTEGER))",
    "postgres": f"CAST(FLOOR(stay_days * {SLOTS_PER_DAY}) AS INTEGER)",
}


def count_slots(dialect: str) -> str:
    """The statement that fills ``opportunity_stay_slot_count`` from the stage history, in ``dialect``."""
    slot = SLOT["postgres" if dialect == "postgres" else "sqlite"]
    return (
        "INSERT INTO opportunity_stay_slot_count (owner_id, stage, slot, n)"
        f" SELECT COALESCE(owner_id, 0), stage, {slot}, COUNT(*) FROM opportunity_stage"
        f" WHERE stay_days IS NOT NULL GROUP BY COALESCE(owner_id, 0), stage, {slot}"
    )


async def fill_slots(apps, schema_editor):  # type: ignore[no-untyped-def]
    await schema_editor._run_sql(count_slots(str(schema_editor.client.capabilities.dialect)))


class Migration(migrations.Migration):
    dependencies = [("models", "0012_files")]

    initial = False

    operations = [
        ops.AddField(
            model_name="Opportunity",
            name="last_moved_at",
            field=fields.DatetimeField(null=True, description="its stage change or its customer's follow-up"),
        ),
        ops.RunSQL([LAST_MOVED], reverse_sql=[]),
        ops.RemoveIndex(model_name="Opportunity", name=None, fields=["owner_id", "stage", "stage_entered_at"]),
        ops.AddIndex(model_name="Opportunity", index=Index(fields=["owner_id", "stage", "last_moved_at"])),
        ops.AddIndex(model_name="Opportunity", index=Index(fields=["stage", "last_moved_at"])),
        ops.AddIndex(model_name="Opportunity", index=Index(fields=["owner_id", "expected_close", "stage"])),
        ops.RemoveIndex(model_name="StageChange", name=None, fields=["stage", "stay_days"]),
        ops.AddIndex(model_name="StageChange", index=Index(fields=["stage", "stay_days", "owner_id"])),
        ops.AddIndex(model_name="Customer", index=Index(fields=["owner_id", "next_followup_at"])),
        ops.AddIndex(
            model_name="Ticket", index=Index(fields=["assignee_id", "first_responded_at", "first_response_due"])
        ),
        ops.CreateModel(
            name="FunnelCount",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("owner_id", fields.IntField()),
                (
                    "stage",
                    fields.CharEnumField(
                        description="LEAD: lead\nINTENT: intent\nPROPOSAL: proposal\nQUOTE: quote\nNEGOTIATION: negotiation\nWON: won\nLOST: lost",
                        enum_type=Stage,
                        max_length=16,
                    ),
                ),
                ("reached", fields.IntField()),
                ("n", fields.IntField(default=0)),
                ("amount", fields.FloatField(default=0)),
                ("plain", fields.FloatField(default=0)),
                ("own", fields.FloatField(default=0)),
            ],
            options={
                "table": "opportunity_funnel_count",
                "app": "models",
                "unique_together": (("owner_id", "stage", "reached"),),
                "pk_attr": "id",
                "table_description": "The funnel's totals of the deals of ``owner_id`` (0: none) now at ``stage`` that got as far as",
            },
            bases=["Model"],
        ),
        ops.RunSQL([COUNTS], reverse_sql=[]),
        ops.AddIndex(model_name="StayCount", index=Index(fields=["stage", "days", "owner_id", "n"])),
        ops.CreateModel(
            name="StaySlotCount",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("owner_id", fields.IntField()),
                (
                    "stage",
                    fields.CharEnumField(
                        description="LEAD: lead\nINTENT: intent\nPROPOSAL: proposal\nQUOTE: quote\nNEGOTIATION: negotiation\nWON: won\nLOST: lost",
                        enum_type=Stage,
                        max_length=16,
                    ),
                ),
                ("slot", fields.IntField()),
                ("n", fields.IntField(default=0)),
            ],
            options={
                "table": "opportunity_stay_slot_count",
                "app": "models",
                "unique_together": (("owner_id", "stage", "slot"),),
                "indexes": [Index(fields=["stage", "slot", "owner_id", "n"])],
                "pk_attr": "id",
                "table_description": "How many completed stays of ``stage`` by deals of ``owner_id`` (0: none) fell in ``slot``, the floor of",
            },
            bases=["Model"],
        ),
        ops.RunPython(fill_slots, reverse_code=None),
    ]

"""The funnel's medians without reading every stay: each history row carries its deal's owner, and
``opportunity_stay_count`` counts completed stays per owner, stage and whole day, filled here from the history
already there."""

from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

from models.customers import Stage

OWNERS = (
    "UPDATE opportunity_stage SET owner_id ="
    " (SELECT o.owner_id FROM opportunity o WHERE o.id = opportunity_stage.opportunity_id)"
)
# The whole days of a stay: SQLite's CAST truncates toward zero, PostgreSQL's rounds, so each spells the floor.
FLOOR = {
    "sqlite": "CAST(stay_days AS INTEGER) - (stay_days < CAST(stay_days AS INTEGER))",
    "postgres": "CAST(FLOOR(stay_days) AS INTEGER)",
}


async def count_stays(apps, schema_editor):  # type: ignore[no-untyped-def]
    floor = FLOOR["postgres" if str(schema_editor.client.capabilities.dialect) == "postgres" else "sqlite"]
    await schema_editor._run_sql(
        "INSERT INTO opportunity_stay_count (owner_id, stage, days, n)"
        f" SELECT COALESCE(owner_id, 0), stage, {floor}, COUNT(*) FROM opportunity_stage"
        f" WHERE stay_days IS NOT NULL GROUP BY COALESCE(owner_id, 0), stage, {floor}"
    )


class Migration(migrations.Migration):
    dependencies = [("models", "0010_golive")]

    initial = False

    operations = [
        ops.AddField(
            model_name="StageChange",
            name="owner_id",
            field=fields.IntField(null=True, description="the deal's owner, so that a scope's stays need no join"),
        ),
        ops.RunSQL([OWNERS], reverse_sql=[]),
        ops.AddIndex(model_name="StageChange", index=Index(fields=["stage", "stay_days"])),
        ops.AddIndex(model_name="StageChange", index=Index(fields=["owner_id", "stage", "stay_days"])),
        ops.CreateModel(
            name="StayCount",
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
                ("days", fields.IntField()),
                ("n", fields.IntField(default=0)),
            ],
            options={
                "table": "opportunity_stay_count",
                "app": "models",
                "unique_together": (("owner_id", "stage", "days"),),
                "pk_attr": "id",
                "table_description": "How many completed stays of ``stage`` by deals of ``owner_id`` (0: none) lasted ``days`` whole days (the",
            },
            bases=["Model"],
        ),
        ops.RunPython(count_stays, reverse_code=None),
    ]

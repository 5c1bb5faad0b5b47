"""PostgreSQL: a smaller statistics target for the search index's gram arrays.

A search plans one branch per month partition, and planning each branch reads the gram column's most common
elements to estimate its selectivity: with the default target that is a thousand elements a partition to unpack,
2-4 ms of planning for a statement over three years of months. A hundred are enough for what the plans choose
between (docs/BENCHMARKS.md, "Search at 10M: the totals and the rare words"). The parent's setting reaches every
partition there is; ``bot.search.ensure_partitions`` gives it to the ones it creates. The next ``ANALYZE`` (by
autovacuum, or an admin) takes the new target. SQLite: nothing to do.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops

from bot.search import GRAM_STATISTICS


def _postgres(schema_editor) -> bool:  # type: ignore[no-untyped-def]
    return str(schema_editor.client.capabilities.dialect) == "postgres"


async def forward(apps, schema_editor):  # type: ignore[no-untyped-def]
    if _postgres(schema_editor):
        await schema_editor._run_sql(f"ALTER TABLE search_doc ALTER COLUMN grams SET STATISTICS {GRAM_STATISTICS}")


async def backward(apps, schema_editor):  # type: ignore[no-untyped-def]
    if _postgres(schema_editor):
        await schema_editor._run_sql("ALTER TABLE search_doc ALTER COLUMN grams SET STATISTICS -1")


class Migration(migrations.Migration):
    dependencies = [("models", "0016_latency")]

    initial = False

    operations = [ops.RunPython(forward, backward)]

"""PostgreSQL: the search index partitioned by month, so that a newest-first search reads the newest months only.

``search_doc`` becomes a table partitioned by range of its order key (``sent_at`` in ms << 20 | id, so a month of
UTC is one key range), with a partition per month named ``search_doc_yYYYYmMM`` and a default partition for any
key no month partition covers (the app creates the months' partitions ahead, ``bot.search.ensure_partitions``).
The rows already indexed move into the partitions of their months. ``message`` stays one table, the record of
truth with its (platform, msgid) unique key. SQLite keeps its one FTS5 table: nothing to do there.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops

from bot.search import month_key, partition_name

COLUMNS = "key, message_id, customer_id, hidden, body, grams"
SINGLE = [
    "ALTER TABLE search_doc RENAME TO search_doc_single",
    "ALTER TABLE search_doc_single RENAME CONSTRAINT search_doc_pkey TO search_doc_single_pkey",
    "ALTER TABLE search_doc_single RENAME CONSTRAINT search_doc_message_id_key TO search_doc_single_message_id_key",
    "ALTER INDEX search_doc_grams RENAME TO search_doc_single_grams",
]
PARTITIONED = [
    "CREATE TABLE search_doc ("
    " key BIGINT NOT NULL PRIMARY KEY,"
    " message_id BIGINT NOT NULL,"
    " customer_id INTEGER NULL,"
    " hidden BOOLEAN NOT NULL DEFAULT FALSE,"
    " body TEXT NOT NULL,"
    " grams TEXT[] NOT NULL)"
    " PARTITION BY RANGE (key)",
    "CREATE INDEX search_doc_grams ON search_doc USING GIN (grams)",
    "CREATE INDEX search_doc_message ON search_doc (message_id)",
    "CREATE TABLE search_doc_default PARTITION OF search_doc DEFAULT",
]
# The months (UTC, year * 12 + month - 1) of the rows already indexed.
MONTHS = (
    "SELECT DISTINCT CAST(date_part('year', t) * 12 + date_part('month', t) - 1 AS INTEGER) AS month"
    " FROM (SELECT to_timestamp((key >> 20) / 1000.0) AT TIME ZONE 'UTC' AS t FROM search_doc_single) s"
)
UNPARTITIONED = [
    "ALTER TABLE search_doc RENAME TO search_doc_by_month",
    "ALTER INDEX search_doc_grams RENAME TO search_doc_by_month_grams",
    "CREATE TABLE search_doc ("
    " key BIGINT PRIMARY KEY,"
    " message_id BIGINT NOT NULL UNIQUE,"
    " customer_id INTEGER NULL,"
    " hidden BOOLEAN NOT NULL DEFAULT FALSE,"
    " body TEXT NOT NULL,"
    " grams TEXT[] NOT NULL)",
    f"INSERT INTO search_doc ({COLUMNS}) SELECT {COLUMNS} FROM search_doc_by_month",
    "DROP TABLE search_doc_by_month",
    "CREATE INDEX search_doc_grams ON search_doc USING GIN (grams)",
]


def _postgres(schema_editor) -> bool:  # type: ignore[no-untyped-def]
    return str(schema_editor.client.capabilities.dialect) == "postgres"


async def forward(apps, schema_editor):  # type: ignore[no-untyped-def]
    if not _postgres(schema_editor):
        return
    for statement in SINGLE + PARTITIONED:
        await schema_editor._run_sql(statement)
    for row in await schema_editor.client.execute_query_dict(MONTHS):
        month = int(row["month"])
        await schema_editor._run_sql(
            f"CREATE TABLE {partition_name(month)} PARTITION OF search_doc"
            f" FOR VALUES FROM ({month_key(month)}) TO ({month_key(month + 1)})"
        )
    await schema_editor._run_sql(f"INSERT INTO search_doc ({COLUMNS}) SELECT {COLUMNS} FROM search_doc_single")
    await schema_editor._run_sql("DROP TABLE search_doc_single")


async def backward(apps, schema_editor):  # type: ignore[no-untyped-def]
    if _postgres(schema_editor):
        for statement in UNPARTITIONED:
            await schema_editor._run_sql(statement)


class Migration(migrations.Migration):
    dependencies = [("models", "0014_erp")]

    initial = False

    operations = [ops.RunPython(forward, backward)]

"""Send slots per recipient and rate limit (``outbox_quota``), and the vocabulary's version (``vocabulary_version``),
raised by triggers on every change of customer names and aliases and of staff names and activity."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops

# (table, the columns whose change alters the vocabulary)
WATCHED = (("customer", ("name", "aliases")), ("staff", ("name", "active")))
BUMP = "UPDATE vocabulary_version SET version = version + 1"


def _changed(columns: tuple[str, ...], distinct: str) -> str:
    """An update that really changes one of ``columns`` (a save that writes the same name is no change)."""
    return " OR ".join(f"OLD.{c} {distinct} NEW.{c}" for c in columns)


def _sqlite_triggers() -> list[str]:
    statements = []
    for table, columns in WATCHED:
        statements += [
            f"CREATE TRIGGER {table}_vocabulary_ins AFTER INSERT ON {table} BEGIN {BUMP}; END",
            f"CREATE TRIGGER {table}_vocabulary_upd AFTER UPDATE OF {', '.join(columns)} ON {table}"
            f" WHEN {_changed(columns, 'IS NOT')} BEGIN {BUMP}; END",
            f"CREATE TRIGGER {table}_vocabulary_del AFTER DELETE ON {table} BEGIN {BUMP}; END",
        ]
    return statements


def _postgres_triggers() -> list[str]:
    statements = [
        "CREATE FUNCTION vocabulary_changed() RETURNS trigger LANGUAGE plpgsql AS"
        f" $$ BEGIN {BUMP}; RETURN NULL; END $$"
    ]
    for table, columns in WATCHED:
        statements += [
            # Once per statement for inserts and deletes (an import of thousands is one bump).
            f"CREATE TRIGGER {table}_vocabulary AFTER INSERT OR DELETE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION vocabulary_changed()",
            f"CREATE TRIGGER {table}_vocabulary_upd AFTER UPDATE OF {', '.join(columns)} ON {table} FOR EACH ROW"
            f" WHEN ({_changed(columns, 'IS DISTINCT FROM')}) EXECUTE FUNCTION vocabulary_changed()",
        ]
    return statements


async def create_triggers(apps, schema_editor):  # type: ignore[no-untyped-def]
    postgres = str(schema_editor.client.capabilities.dialect) == "postgres"
    client = schema_editor.client
    await client.execute_query("INSERT INTO vocabulary_version (id, version) VALUES (1, 1)")
    # One statement at a time, as written: a trigger's body holds a semicolon.
    for statement in _postgres_triggers() if postgres else _sqlite_triggers():
        await client.execute_query(statement)


class Migration(migrations.Migration):
    dependencies = [("models", "0015_archive_partitions")]

    initial = False

    operations = [
        ops.CreateModel(
            name="OutboxQuota",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("platform", fields.CharField(max_length=16)),
                ("recipient", fields.CharField(max_length=128)),
                ("period_seconds", fields.IntField()),
                ("slot", fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "outbox_quota",
                "app": "models",
                "unique_together": (("platform", "recipient", "period_seconds"),),
                "pk_attr": "id",
                "table_description": "A recipient's next free send slot under one of its platform's rate limits"
                " (WeCom: 30 messages per person",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="VocabularyVersion",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("version", fields.BigIntField(default=0)),
            ],
            options={
                "table": "vocabulary_version",
                "app": "models",
                "pk_attr": "id",
                "table_description": "One row: a number that database triggers raise with every change of the names"
                " the bot recognizes",
            },
            bases=["Model"],
        ),
        ops.RunPython(create_triggers, reverse_code=None),
    ]

"""The keyword-search index (bot/search.py), raw SQL per database: Tortoise has no model for an FTS5 virtual
table or a GIN-indexed text[] column.

SQLite: ``search_doc`` (order key, message id, the customer it was indexed under, hidden flag, normalized body)
and a contentless FTS5 table of the body's unigrams and bigrams plus a customer token, whose rowid is the order key. The tokenizer keeps exactly the printable non-space
characters (categories L, N, M, P, S) so that every gram is one token. PostgreSQL: ``search_doc`` with the grams
in a ``text[]`` column under a GIN index.
"""

from pathlib import Path

from tortoise import migrations
from tortoise.migrations import operations as ops

if not (Path(__file__).parent / "0001_initial.py").exists():
    raise RuntimeError(
        "0002_search depends on 0001_initial. To regenerate 0001_initial, move 0002_search.py out of"
        " models/migrations first, run makemigrations, then move it back."
    )

SQLITE = [
    "CREATE TABLE IF NOT EXISTS search_doc ("
    " key INTEGER PRIMARY KEY,"
    " message_id BIGINT NOT NULL UNIQUE,"
    " customer_id INTEGER NULL,"
    " hidden INTEGER NOT NULL DEFAULT 0,"
    " body TEXT NOT NULL)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5(grams, content='', detail=none,"
    " tokenize=\"unicode61 categories 'L* N* M* P* S*' remove_diacritics 0\")",
]
SQLITE_DROP = ["DROP TABLE IF EXISTS search_fts", "DROP TABLE IF EXISTS search_doc"]
POSTGRES = [
    "CREATE TABLE IF NOT EXISTS search_doc ("
    " key BIGINT PRIMARY KEY,"
    " message_id BIGINT NOT NULL UNIQUE,"
    " customer_id INTEGER NULL,"
    " hidden BOOLEAN NOT NULL DEFAULT FALSE,"
    " body TEXT NOT NULL,"
    " grams TEXT[] NOT NULL)",
    "CREATE INDEX IF NOT EXISTS search_doc_grams ON search_doc USING GIN (grams)",
]
POSTGRES_DROP = ["DROP TABLE IF EXISTS search_doc"]


def _statements(schema_editor, sqlite, postgres):  # type: ignore[no-untyped-def]
    dialect = str(schema_editor.client.capabilities.dialect)
    return postgres if dialect == "postgres" else sqlite


async def forward(apps, schema_editor):  # type: ignore[no-untyped-def]
    for sql in _statements(schema_editor, SQLITE, POSTGRES):
        await schema_editor._run_sql(sql)


async def backward(apps, schema_editor):  # type: ignore[no-untyped-def]
    for sql in _statements(schema_editor, SQLITE_DROP, POSTGRES_DROP):
        await schema_editor._run_sql(sql)


class Migration(migrations.Migration):
    dependencies = [("models", "0001_initial")]

    operations = [ops.RunPython(forward, backward)]

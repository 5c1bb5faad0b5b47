"""``stored_file``: files the bot hands out (exports, charts), their bytes and where platforms already hold them."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0011_funnel")]

    initial = False

    operations = [
        ops.CreateModel(
            name="StoredFile",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("filename", fields.CharField(max_length=255)),
                ("content_type", fields.CharField(max_length=128)),
                ("size", fields.BigIntField()),
                ("sha256", fields.CharField(max_length=64)),
                ("data", fields.BinaryField()),
                (
                    "remote",
                    fields.JSONField(
                        default=dict, description="platform → {id, until}: the file as uploaded there"
                    ),
                ),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("expires_at", fields.DatetimeField(auto_now=False, auto_now_add=False, db_index=True)),
            ],
            options={
                "table": "stored_file",
                "app": "models",
                "pk_attr": "id",
                "table_description": "One file: its name as shown to people, its type, size and SHA-256, its bytes,"
                " and when it goes.",
            },
            bases=["Model"],
        ),
    ]

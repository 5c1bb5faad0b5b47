"""``seen_signature``: request credentials accepted once within their window (the replay cache)."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0003_staff_accounts")]

    initial = False

    operations = [
        ops.CreateModel(
            name="SeenSignature",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("scope", fields.CharField(max_length=32)),
                ("key", fields.CharField(max_length=128)),
                (
                    "digest",
                    fields.CharField(
                        description="SHA-256 (hex) of the body first sent with this key", max_length=64
                    ),
                ),
                ("expires_at", fields.DatetimeField(auto_now=False, auto_now_add=False, db_index=True)),
            ],
            options={
                "table": "seen_signature",
                "app": "models",
                "unique_together": (("scope", "key"),),
                "pk_attr": "id",
                "table_description": "One accepted credential (``key``) within ``scope``, the body it authenticated,"
                " and when it lapses.",
            },
            bases=["Model"],
        ),
    ]

"""Outbox rows remember when their first send began (``attempted_at``, committed before the request), so that a
later send of a row that may already have reached the person asks the platform to drop it as a duplicate."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0007_opportunities")]

    initial = False

    operations = [
        ops.AddField(
            model_name="OutboxMessage",
            name="attempted_at",
            field=fields.DatetimeField(
                null=True, auto_now=False, auto_now_add=False, description="when the first send began (committed before it)"
            ),
        ),
    ]

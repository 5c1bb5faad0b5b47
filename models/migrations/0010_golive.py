"""Go-live baseline: ``customer.ladder_from``, the moment an import started the follow-up ladder for a customer
whose last follow-up is older (``[rules] baseline_on_import``). It joins the ladder's index, so that a full sweep
still answers from the index alone, and has an index of its own for the ladder's range on it."""

from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0009_people")]

    initial = False

    operations = [
        ops.RemoveIndex(model_name="Customer", name=None, fields=["last_followup_at", "owner_id", "stage"]),
        ops.AddField(
            model_name="Customer",
            name="ladder_from",
            field=fields.DatetimeField(
                null=True,
                description="go-live baseline: the follow-up ladder counts from here if later",
                auto_now=False,
                auto_now_add=False,
            ),
        ),
        ops.AddIndex(model_name="Customer", index=Index(fields=["last_followup_at", "owner_id", "stage", "ladder_from"])),
        ops.AddIndex(model_name="Customer", index=Index(fields=["ladder_from"])),
    ]

"""Go-live baseline: ``customer.ladder_from``, the moment an import started the follow-up ladder for a customer
whose last follow-up is older (``[rules] baseline_on_import``)."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0003_staff_accounts")]

    initial = False

    operations = [
        ops.AddField(
            model_name="Customer",
            name="ladder_from",
            field=fields.DatetimeField(
                null=True,
                db_index=True,
                description="go-live baseline: the follow-up ladder counts from here if later",
                auto_now=False,
                auto_now_add=False,
            ),
        ),
    ]

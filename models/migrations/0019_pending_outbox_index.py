"""An index of the pending outbox rows in id order (``WHERE status = 'pending'``): a claim reads the first due
rows of a backlog and stops at its limit, where it used to read every due row through ``(status, not_before)``
and sort them, however long the backlog. The index of a recipient's rows by status goes: a claim now reads the
recipients out on a lease once, through ``(status, not_before)``, and every change of a row's status updated
it."""

from tortoise import migrations
from tortoise.indexes import PartialIndex
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0018_unhandled_index")]

    initial = False

    operations = [
        ops.RemoveIndex(model_name="OutboxMessage", fields=["platform", "recipient", "status"]),
        ops.AddIndex(
            model_name="OutboxMessage",
            index=PartialIndex(fields=("id",), name="outbox_pending", condition={"status": "pending"}),
        ),
    ]

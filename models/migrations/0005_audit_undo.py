"""The audit log learns what undo (撤销) and the history need: the message a change came from (``source``), the
customer it is about (``customer_id``), the row an undo reverted (``undo_of``), and indexes to find one person's
latest changes and one customer's history; contacts get a job title. Rows already there about a customer, or one
of its contacts, tickets or approvals, get the customer filled in. New text columns carry a database default, so
that tables with rows take them."""

from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

BACKFILL = [
    "UPDATE audit_log SET customer_id = CAST(entity_id AS INTEGER)"
    " WHERE entity = 'customer' AND customer_id IS NULL AND entity_id <> ''",
    *(
        f"UPDATE audit_log SET customer_id = (SELECT t.customer_id FROM {table} t"
        f" WHERE CAST(t.id AS VARCHAR(64)) = {key}) WHERE entity = '{entity}' AND customer_id IS NULL"
        for entity, table, key in (
            ("contact", "contact", "audit_log.entity_id"),
            ("ticket", "ticket", "audit_log.entity_id"),
            ("approval", "approval", "SUBSTR(audit_log.entity_id, 3)"),  # AP12
        )
    ),
]


class Migration(migrations.Migration):
    dependencies = [("models", "0004_seen_signatures")]

    initial = False

    operations = [
        ops.AddField(
            model_name="AuditLog",
            name="customer_id",
            field=fields.IntField(null=True, description="the customer the change is about"),
        ),
        ops.AddField(
            model_name="AuditLog",
            name="source",
            field=fields.CharField(
                default="", db_default="", description="platform and message id of the request", max_length=191
            ),
        ),
        ops.AddField(
            model_name="AuditLog",
            name="undo_of",
            field=fields.BigIntField(null=True, description="the row this undo reverted"),
        ),
        ops.AddIndex(model_name="AuditLog", index=Index(fields=["actor_id", "id"])),
        ops.AddIndex(model_name="AuditLog", index=Index(fields=["customer_id", "id"])),
        ops.AddField(
            model_name="Contact",
            name="title",
            field=fields.CharField(default="", db_default="", description="job title, e.g. 采购经理", max_length=64),
        ),
        ops.RunSQL(BACKFILL, reverse_sql=[]),
    ]

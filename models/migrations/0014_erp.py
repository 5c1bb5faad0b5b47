"""Product lines: an order line carries its product line (the ERP's inventory class, 存货分类), and a customer may
have a repurchase window per product line besides the one over everything it buys, so ``repurchase`` is keyed by
(customer, product line) and says whose rhythm a window is (``basis``). The existing windows are kept as the
customers' whole-history windows. Order lines get an index by order (they are replaced and joined by order)."""

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

KEEP = ["CREATE TABLE repurchase_kept AS SELECT * FROM repurchase"]
RESTORE = [
    "INSERT INTO repurchase (customer_id, product_line, basis, order_count, last_order_date, interval_days,"
    " spread_days, predicted_on, remind_at, updated_at) SELECT customer_id, '', 'customer', order_count,"
    " last_order_date, interval_days, spread_days, predicted_on, remind_at, updated_at FROM repurchase_kept",
    "DROP TABLE repurchase_kept",
]


class Migration(migrations.Migration):
    dependencies = [("models", "0013_funnel_speed")]

    initial = False

    operations = [
        ops.AddField(
            model_name="OrderLine",
            name="product_line",
            field=fields.CharField(default="", db_default="", max_length=64),
        ),
        ops.AddIndex(model_name="OrderLine", index=Index(fields=["order_id"])),
        ops.RunSQL(KEEP, reverse_sql=[]),
        ops.DeleteModel(name="Repurchase"),
        ops.CreateModel(
            name="Repurchase",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "customer",
                    fields.ForeignKeyField(
                        "models.Customer",
                        source_field="customer_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="repurchases",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("product_line", fields.CharField(default="", db_default="", max_length=64)),
                ("basis", fields.CharField(default="customer", db_default="customer", max_length=16)),
                ("order_count", fields.IntField(default=0)),
                ("last_order_date", fields.DateField()),
                ("interval_days", fields.IntField()),
                ("spread_days", fields.IntField(default=0)),
                ("predicted_on", fields.DateField()),
                (
                    "remind_at",
                    fields.DatetimeField(
                        db_index=True,
                        description="start of the local day the owner is reminded",
                        auto_now=False,
                        auto_now_add=False,
                    ),
                ),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "repurchase",
                "app": "models",
                "unique_together": (("customer_id", "product_line"),),
                "pk_attr": "id",
                "table_description": "A reorder window of a customer, for all they buy (``product_line`` empty) or for"
                " one product line: the",
            },
            bases=["Model"],
        ),
        ops.RunSQL(RESTORE, reverse_sql=[]),
    ]

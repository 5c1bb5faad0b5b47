"""Orders (订单) imported from the ERP, and each customer's reorder rhythm derived from them."""

from __future__ import annotations

from decimal import Decimal

from tortoise import fields
from tortoise.models import Model

from models.customers import Customer


class Order(Model):
    """One purchase by a customer. ``external_no`` is the ERP order number, unique, so re-imports are no-ops."""

    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="orders", on_delete=fields.CASCADE
    )
    customer_id: int
    order_date = fields.DateField()
    amount = fields.DecimalField(max_digits=16, decimal_places=2, default=Decimal(0))
    external_no = fields.CharField(max_length=64, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "customer_order"
        indexes = (("customer_id", "order_date"),)


class Repurchase(Model):
    """A customer's reorder rhythm: the average interval between orders and when the next one is due.

    Kept up to date by the order import, so the repurchase rule is one indexed range query on ``due_at``.
    """

    id = fields.IntField(primary_key=True)
    customer: fields.OneToOneRelation[Customer] = fields.OneToOneField(
        "models.Customer", related_name="repurchase", on_delete=fields.CASCADE
    )
    customer_id: int
    order_count = fields.IntField(default=0)
    last_order_date = fields.DateField()
    interval_days = fields.IntField()
    due_at = fields.DatetimeField(db_index=True, description="start of the local day the next order is due")
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "repurchase"

"""Orders (订单) from the ERP: the order with its lines and its status timeline, the ERP events already taken in
(so a replayed event is recognized), each order feed's cursor, and each customer's repurchase window derived from
their order history, as a whole and per product line."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from models.customers import Customer


class OrderStatus(StrEnum):
    PLACED = "placed"
    PRODUCTION = "production"
    PACKED = "packed"
    SHIPPED = "shipped"
    RECEIVED = "received"
    INVOICED = "invoiced"
    PAID = "paid"
    CANCELLED = "cancelled"


ORDER_STATUS_LABELS: dict[OrderStatus, str] = {
    OrderStatus.PLACED: "下单",
    OrderStatus.PRODUCTION: "生产中",
    OrderStatus.PACKED: "包装待发",
    OrderStatus.SHIPPED: "已发货",
    OrderStatus.RECEIVED: "已签收",
    OrderStatus.INVOICED: "已开票",
    OrderStatus.PAID: "已回款",
    OrderStatus.CANCELLED: "取消",
}
# Where a status lies on the way (the order of the enum): the later of two statuses reached at the same moment wins.
ORDER_STATUS_RANK: dict[OrderStatus, int] = {status: rank for rank, status in enumerate(OrderStatus)}


class Order(Model):
    """One purchase by a customer, unique by (source, order no.); ``status`` is the latest of its timeline."""

    id = fields.IntField(primary_key=True)
    source = fields.CharField(max_length=32, default="erp", db_default="erp")
    order_no = fields.CharField(max_length=64)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="orders", on_delete=fields.CASCADE
    )
    customer_id: int
    order_date = fields.DateField()
    total = fields.DecimalField(max_digits=16, decimal_places=2, default=Decimal(0))
    status = fields.CharEnumField(OrderStatus, max_length=16, default=OrderStatus.PLACED, db_default="placed")
    status_at = fields.DatetimeField(null=True)
    carrier = fields.CharField(max_length=64, default="", db_default="")
    tracking_no = fields.CharField(max_length=64, default="", db_default="")
    invoice_no = fields.CharField(max_length=64, default="", db_default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    lines: fields.ReverseRelation[OrderLine]
    timeline: fields.ReverseRelation[OrderStatusChange]

    class Meta:
        table = "customer_order"
        unique_together = (("source", "order_no"),)
        indexes = (("customer_id", "order_date"),)


class OrderLine(Model):
    """One line of an order: a product, how many, for how much (yuan)."""

    id = fields.IntField(primary_key=True)
    order: fields.ForeignKeyRelation[Order] = fields.ForeignKeyField(
        "models.Order", related_name="lines", on_delete=fields.CASCADE
    )
    order_id: int
    product = fields.CharField(max_length=128)
    product_line = fields.CharField(max_length=64, default="", db_default="")  # the ERP's 存货分类; "": none
    quantity = fields.DecimalField(max_digits=14, decimal_places=3)
    amount = fields.DecimalField(max_digits=16, decimal_places=2)

    class Meta:
        table = "order_line"
        indexes = (("order_id",),)  # a known order's lines are replaced, and windows read lines by order


class OrderStatusChange(Model):
    """An order reached a status at a moment: once per order and status, however often the ERP says so."""

    id = fields.IntField(primary_key=True)
    order: fields.ForeignKeyRelation[Order] = fields.ForeignKeyField(
        "models.Order", related_name="timeline", on_delete=fields.CASCADE
    )
    order_id: int
    status = fields.CharEnumField(OrderStatus, max_length=16)
    at = fields.DatetimeField()
    recorded_at = fields.DatetimeField(db_index=True, description="when we learned it (notices look at this)")

    class Meta:
        table = "order_status_change"
        unique_together = (("order_id", "status"),)
        indexes = (("status", "at"),)


class OrderEventSeen(Model):
    """An ERP event id already taken in: the same id again is a replay."""

    id = fields.IntField(primary_key=True)
    source = fields.CharField(max_length=32)
    event_id = fields.CharField(max_length=128)
    received_at = fields.DatetimeField()

    class Meta:
        table = "order_event_seen"
        unique_together = (("source", "event_id"),)


class OrderFeedCursor(Model):
    """How far an order feed has been read (its own position text), committed with the rows read up to it."""

    id = fields.IntField(primary_key=True)
    feed = fields.CharField(max_length=32, unique=True)
    position = fields.CharField(max_length=128, default="")
    synced_at = fields.DatetimeField(null=True)

    class Meta:
        table = "order_feed_cursor"


class Repurchase(Model):
    """A reorder window of a customer, for all they buy (``product_line`` empty) or for one product line: the
    typical interval (median) and its spread (median absolute deviation) of the intervals between order days, the
    predicted next order day, and when the owner is reminded. ``basis`` says whose rhythm it is: the customer's own
    orders (``customer``), or, for a customer with too few orders of the line, the line's rhythm over all its
    customers (``line``).

    Kept up to date by every order event, so the repurchase rule is one indexed range query on ``remind_at``.
    """

    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="repurchases", on_delete=fields.CASCADE
    )
    customer_id: int
    product_line = fields.CharField(max_length=64, default="", db_default="")
    basis = fields.CharField(max_length=16, default="customer", db_default="customer")
    order_count = fields.IntField(default=0)
    last_order_date = fields.DateField()
    interval_days = fields.IntField()
    spread_days = fields.IntField(default=0)
    predicted_on = fields.DateField()
    remind_at = fields.DatetimeField(db_index=True, description="start of the local day the owner is reminded")
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "repurchase"
        unique_together = (("customer_id", "product_line"),)

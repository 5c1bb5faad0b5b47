"""How orders read in chat: money, logistics, an order on one line, a repurchase month."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

from bot.display import local
from models.orders import ORDER_STATUS_LABELS, Order, OrderStatus


def money(amount: Decimal) -> str:
    return f"¥{amount:,.2f}"


def tracking(order: Order) -> str:
    return " ".join(x for x in (order.carrier, order.tracking_no) if x) or "暂无"


def month_of(day: date) -> str:
    return f"{day.year}-{day.month:02d}"


def order_line(order: Order, tz: ZoneInfo) -> str:
    """``SO-42 2026-11-20 ¥12,000.00 已发货（12-01 10:30）顺丰 SF123``."""
    label = ORDER_STATUS_LABELS[OrderStatus(order.status)]
    when = f"（{local(order.status_at, tz)}）" if order.status_at else ""
    logistics = f" {tracking(order)}" if order.carrier or order.tracking_no else ""
    return f"{order.order_no} {order.order_date.isoformat()} {money(order.total)} {label}{when}{logistics}"

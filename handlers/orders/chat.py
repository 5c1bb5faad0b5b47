"""Orders in chat: ``订单 华为`` and ``华为的货发了吗`` answer with the latest orders, their status and tracking
(read-only), and the lines the customer's profile card shows (recent orders, orders in progress, the repurchase
window)."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

from bot.access import visible_to
from bot.context import Context, Slots
from bot.nlu.reading import Reading, Result
from bot.types import IncomingMessage, Reply
from handlers.orders.capability import capability
from handlers.orders.display import order_line
from handlers.orders.rules import window_text
from models.orders import Order, OrderStatus, Repurchase

RECENT = 3
# Still on its way: not yet received, nor settled, nor cancelled.
IN_PROGRESS = (OrderStatus.PLACED, OrderStatus.PRODUCTION, OrderStatus.PACKED, OrderStatus.SHIPPED)
_ORDERS_COMMAND = re.compile(r"^(?:订单|查订单|订单状态|orders?)(?:\s+|[:：]|(?=\S))", re.I)
_ASKED = re.compile(
    r"(?:货|订单|单子|物流|快递|运单|单号)\S{0,6}?(?:发了|发出|到了|到哪|签收|状态|进度|怎么样|走到)"
    r"|(?:发货|到货|发出|签收)了?(?:吗|没|么|没有)"
)


@capability.command(_ORDERS_COMMAND, order=145)
def orders_command(r: Reading, rest: str) -> Result | None:
    slots, _ = r.split_customer(rest)
    return ("show_orders", slots) if slots else None


@capability.phrase(order=22)  # a read, tried before a question about the customer becomes the profile
def orders_phrase(r: Reading) -> Result | None:
    """A customer and a question about their goods: 华为的货发了吗, 三一的订单到哪了."""
    if r.customers and _ASKED.search(r.text):
        return "show_orders", r.customer_slot(r.text)
    return None


@capability.intent("show_orders", examples=["订单 华为", "华为的货发了吗"], order=45, customer=True)
async def show_orders(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看客户订单：最新状态与物流单号"""
    customer = ctx.customer
    if not await visible_to(ctx.staff, customer):
        return Reply(f"「{customer.name}」不是您或您团队的客户，无法查看。")
    orders = await Order.filter(customer_id=customer.id).order_by("-order_date", "-id").limit(5)
    if not orders:
        return Reply(f"「{customer.name}」还没有订单记录。")
    tz = ctx.settings.tz
    lines = [f"【{customer.name}】最近订单："]
    lines.extend(f"  {order_line(o, tz)}" for o in orders)
    return Reply("\n".join(lines))


async def card_lines(customer_id: int, tz: ZoneInfo) -> list[str]:
    """The profile card's order lines: orders in progress, the latest orders, the repurchase windows (one per
    product line, or one over everything)."""
    lines = []
    moving = await Order.filter(customer_id=customer_id, status__in=IN_PROGRESS).order_by("-order_date").limit(RECENT)
    if moving:
        lines.append("进行中订单：")
        lines.extend(f"  {order_line(o, tz)}" for o in moving)
    recent = await Order.filter(customer_id=customer_id).order_by("-order_date", "-id").limit(RECENT)
    shown = {o.id for o in moving}
    if rest := [o for o in recent if o.id not in shown]:
        lines.append("最近订单：")
        lines.extend(f"  {order_line(o, tz)}" for o in rest)
    for window in await Repurchase.filter(customer_id=customer_id).order_by("product_line"):
        line = f"（{window.product_line}）" if window.product_line else ""
        lines.append(f"复购{line}：{window_text(window)}")
    return lines

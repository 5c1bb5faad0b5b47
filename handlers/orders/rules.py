"""The orders capability's scheduled rules: an order reached a status the owner should hear about
(``order_notice``), an invoice is still unpaid (``payment_overdue``), and a customer's repurchase window is near
(``repurchase_due``). Each fires once per subject and period, through the rules engine (quiet hours, digests)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from bot.context import Firing, RuleContext
from bot.rulekit import as_moment, crossed, customers_by_id, follow_up_action, ids, not_fired, select, short, utc
from handlers.orders.capability import capability
from handlers.orders.display import money, month_of, tracking
from models.orders import ORDER_STATUS_LABELS, Order, OrderStatus, Repurchase

NOTICE_ACTIONS = {
    OrderStatus.PACKED: "请告知客户即将发货及物流单号",
    OrderStatus.SHIPPED: "请告知客户物流单号，留意签收",
    OrderStatus.RECEIVED: "可以回访客户使用情况了",
}


async def _steps(ctx: RuleContext, rule: str, condition: str, params: list[Any]) -> list[dict[str, Any]]:
    """Timeline steps matching ``condition`` whose customer has an owner and for which ``rule`` has not fired."""
    return await select(
        ctx,
        "SELECT s.id, s.order_id, s.status, s.at FROM order_status_change s"
        " JOIN customer_order o ON o.id = s.order_id JOIN customer c ON c.id = o.customer_id"
        f" WHERE {condition} AND c.owner_id IS NOT NULL AND {not_fired(rule, 's.id', 's.at')}"
        " ORDER BY s.id LIMIT ?",
        params,
    )


async def _orders(rows: list[dict[str, Any]]) -> dict[int, Order]:
    orders = await Order.filter(id__in=[int(r["order_id"]) for r in rows])
    customers = await customers_by_id(sorted({o.customer_id for o in orders}))
    for order in orders:
        order.customer = customers[order.customer_id]
    return {o.id: o for o in orders}


@capability.rule(order=64)
async def order_notice(ctx: RuleContext) -> list[Firing]:
    """An order reached one of ``erp.notify_statuses``: tell the customer's owner, once per order and status."""
    erp = ctx.settings.erp
    if not erp.notify_statuses:
        return []
    learned, params = crossed(ctx, "s.recorded_at")
    wanted = ", ".join("?" for _ in erp.notify_statuses)
    rows = await _steps(
        ctx,
        "order_notice",
        f"{learned} AND s.status IN ({wanted}) AND s.at >= ?",
        [*params, *erp.notify_statuses, utc(ctx.now - timedelta(days=erp.notice_max_age_days))],
    )
    orders = await _orders(rows)
    firings = []
    for row in rows:
        order, status = orders[int(row["order_id"])], OrderStatus(row["status"])
        c, label = order.customer, ORDER_STATUS_LABELS[status]
        text = (
            f"**订单{label}**\n> 客户：{c.name}\n> 订单：{order.order_no}（{money(order.total)}）\n"
            f"> 物流：{tracking(order)}\n{NOTICE_ACTIONS.get(status, '请留意订单进展')}，`订单 {short(c)}` 查看详情"
        )
        assert c.owner is not None
        key = f"order_notice:{row['id']}:{status.value}:{order.source}:{order.order_no}"
        firings.append(Firing("order_notice", key, c.owner, text, c, period_at=as_moment(row["at"])))
    return firings


@capability.rule(order=66)
async def payment_overdue(ctx: RuleContext) -> list[Firing]:
    """Invoiced ``erp.payment_overdue_days`` ago and not paid: tell the owner once per invoice."""
    days = ctx.settings.erp.payment_overdue_days
    reached, params = crossed(ctx, "s.at", timedelta(days=days))
    rows = await _steps(
        ctx,
        "payment_overdue",
        f"s.status = 'invoiced' AND {reached} AND o.status <> 'cancelled' AND NOT EXISTS (SELECT 1 FROM"
        " order_status_change p WHERE p.order_id = s.order_id AND p.status = 'paid')",
        params,
    )
    orders = await _orders(rows)
    firings = []
    for row in rows:
        order = orders[int(row["order_id"])]
        c, invoiced = order.customer, as_moment(row["at"])
        text = (
            f"**回款逾期**\n> 客户：{c.name}\n> 订单：{order.order_no}（{money(order.total)}）\n"
            f"> 发票：{order.invoice_no or '—'}，{invoiced.astimezone(ctx.settings.tz).date().isoformat()} 开票，"
            f"已超过 {days} 天未回款\n请跟进客户回款，{follow_up_action(c)}"
        )
        assert c.owner is not None
        key = f"payment_overdue:{row['id']}:{days}d:{order.source}:{order.order_no}"
        firings.append(Firing("payment_overdue", key, c.owner, text, c, period_at=invoiced))
    return firings


@capability.rule(order=60)
async def repurchase_due(ctx: RuleContext) -> list[Firing]:
    """The customer's repurchase window is near (predicted day − spread − ``rules.repurchase_lead_days``): tell
    the owner once per predicted cycle."""
    reached, params = crossed(ctx, "r.remind_at")
    rows = await select(
        ctx,
        "SELECT r.id FROM repurchase r JOIN customer c ON c.id = r.customer_id "
        f"WHERE {reached} AND c.owner_id IS NOT NULL AND c.stage <> 'lost' "
        f"AND {not_fired('repurchase_due', 'r.customer_id', 'r.remind_at')} ORDER BY r.remind_at LIMIT ?",
        params,
    )
    firings = []
    for r in await Repurchase.filter(id__in=ids(rows)).select_related("customer", "customer__owner").order_by("id"):
        c = r.customer
        if c.owner is None:
            continue
        text = (
            f"**复购提醒**\n> 客户：{c.name}\n> {window_text(r)}，上次下单 {r.last_order_date.isoformat()}\n"
            f"> 通常每 {r.interval_days} 天下一次单\n请联系客户了解需求，{follow_up_action(c)}"
        )
        key = f"repurchase_due:{c.id}:{r.interval_days}d:{r.predicted_on.isoformat()}"
        firings.append(Firing("repurchase_due", key, c.owner, text, c, period_at=r.remind_at))
    return firings


def window_text(r: Repurchase) -> str:
    """``预计 2027-03 复购，±25 天`` (the day too when the window is narrow)."""
    predicted: date = r.predicted_on
    when = predicted.isoformat() if r.spread_days < 15 else month_of(predicted)
    return f"预计 {when} 复购，±{r.spread_days} 天"

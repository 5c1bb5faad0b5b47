"""The orders capability's scheduled rules: an order reached a status the owner should hear about
(``order_notice``), an invoice is still unpaid (``payment_overdue``), and a customer's repurchase window is near
(``repurchase_due``). Each fires once per subject and period, through the rules engine (quiet hours, digests)."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta
from typing import Any

from bot.context import Firing, RuleContext
from bot.orderflow import LINE_BASIS
from bot.rulekit import as_moment, crossed, customers_by_id, follow_up_action, ids, not_fired, select, short, utc
from handlers.orders.capability import capability
from handlers.orders.display import money, month_of, tracking
from models.orders import ORDER_STATUS_LABELS, Order, OrderStatus, Repurchase

KEY_MAX = 191  # the length of a firing key
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
    """A customer's repurchase window (of everything it buys, or of one product line) is near (predicted day −
    spread − ``rules.repurchase_lead_days``): tell the owner once per predicted cycle and line; windows of one
    customer reminded the same day are one push."""
    reached, params = crossed(ctx, "r.remind_at")
    rows = await select(
        ctx,
        "SELECT r.id FROM repurchase r JOIN customer c ON c.id = r.customer_id "
        f"WHERE {reached} AND c.owner_id IS NOT NULL AND c.stage <> 'lost' "
        f"AND {not_fired('repurchase_due', 'r.customer_id', 'r.remind_at')} ORDER BY r.remind_at LIMIT ?",
        params,
    )
    due: dict[tuple[int, datetime], list[Repurchase]] = {}
    query = Repurchase.filter(id__in=ids(rows)).select_related("customer", "customer__owner")
    for r in await query.order_by("customer_id", "remind_at", "product_line"):
        due.setdefault((r.customer_id, r.remind_at), []).append(r)
    firings = []
    for windows in due.values():
        c = windows[0].customer
        if c.owner is None:
            continue
        body = "\n".join(f"> {_window_lines(r)}" for r in windows)
        text = f"**复购提醒**\n> 客户：{c.name}\n{body}\n请联系客户了解需求，{follow_up_action(c)}"
        cycles = "+".join(_cycle(r) for r in windows)
        key = f"repurchase_due:{c.id}:{cycles}"
        if len(key) > KEY_MAX:
            key = f"repurchase_due:{c.id}:{hashlib.sha1(cycles.encode()).hexdigest()}"
        firings.append(Firing("repurchase_due", key, c.owner, text, c, period_at=windows[0].remind_at))
    return firings


def _cycle(r: Repurchase) -> str:
    """One predicted cycle of one window (of everything: the key's form before product lines)."""
    cycle = f"{r.interval_days}d:{r.predicted_on.isoformat()}"
    return f"{r.product_line}:{cycle}" if r.product_line else cycle


def _window_lines(r: Repurchase) -> str:
    line = f"产品线「{r.product_line}」：" if r.product_line else ""
    last = f"上次下单 {r.last_order_date.isoformat()}"
    if r.basis == LINE_BASIS:
        return f"{line}{window_text(r)}，{last}\n> 同类产品客户通常每 {r.interval_days} 天下一次单"
    return f"{line}{window_text(r)}，{last}\n> 通常每 {r.interval_days} 天下一次单"


def window_text(r: Repurchase) -> str:
    """``预计 2027-03 复购，±25 天`` (the day too when the window is narrow), and ``按同类产品节奏预计`` when the
    window is the product line's rhythm rather than the customer's own."""
    predicted: date = r.predicted_on
    when = predicted.isoformat() if r.spread_days < 15 else month_of(predicted)
    text = f"预计 {when} 复购，±{r.spread_days} 天"
    return f"{text}（按同类产品节奏预计）" if r.basis == LINE_BASIS else text

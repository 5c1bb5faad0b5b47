"""Grades from what customers buy (``grade_from_purchases``): each customer with orders is of the highest grade
whose ``erp.grade_thresholds`` its purchases of the last 12 months (yuan, cancelled orders aside) reach, C below
every threshold. When that differs from the grade it has, the owner hears it once per grade reached, as a
suggestion with the command that applies it, or, with ``erp.auto_grade``, the grade is set (audited as a system
change, and the push says how to set it back)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from decimal import Decimal

from bot.audit import record
from bot.context import Firing, RuleContext
from bot.rulekit import customers_by_id, select, short
from handlers.orders.capability import capability
from handlers.orders.display import money
from models.customers import Customer

LOWEST = "C"
YEAR = timedelta(days=365)


def grade_of(spent: Decimal, thresholds: Iterable[tuple[str, int]]) -> str:
    """The highest grade whose threshold ``spent`` reaches; C below every one."""
    for grade, threshold in sorted(thresholds, key=lambda t: -t[1]):
        if spent >= threshold:
            return grade
    return LOWEST


def _apply(customer: Customer, grade: str) -> Callable[[], Awaitable[None]]:
    async def apply() -> None:
        before = {"grade": customer.grade}
        await Customer.filter(id=customer.id).update(grade=grade)
        await record("set_grade", "customer", customer.id, before, {"grade": grade}, source="auto_grade")

    return apply


@capability.rule(order=62)
async def grade_from_purchases(ctx: RuleContext) -> list[Firing]:
    """A customer's purchases of the last 12 months put it in another grade: tell (or, with ``erp.auto_grade``,
    apply it for) the owner, once per change."""
    erp = ctx.settings.erp
    if not erp.grade_thresholds:
        return []
    since = (ctx.now.astimezone(ctx.settings.tz) - YEAR).date()
    rows = await select(
        ctx,
        "SELECT o.customer_id AS id, c.grade AS grade, SUM(CASE WHEN o.status <> 'cancelled' AND o.order_date > ?"
        " THEN o.total ELSE 0 END) AS spent FROM customer_order o JOIN customer c ON c.id = o.customer_id"
        " WHERE c.owner_id IS NOT NULL GROUP BY o.customer_id, c.grade ORDER BY o.customer_id LIMIT ?",
        [since],
    )
    grades: dict[int, str] = {}
    spent: dict[int, Decimal] = {}
    for r in rows:
        amount = Decimal(str(r["spent"] or 0))
        if (grade := grade_of(amount, erp.grade_thresholds.items())) != (r["grade"] or ""):
            grades[int(r["id"])], spent[int(r["id"])] = grade, amount
    customers = await customers_by_id(sorted(grades))
    firings = []
    for cid, grade in grades.items():
        c = customers[cid]
        if c.owner is None:
            continue
        was, kind = c.grade or "—", "已调整" if erp.auto_grade else "建议"
        head = f"**客户等级{kind}**\n> 客户：{c.name}\n> 近 12 个月采购 {money(spent[cid])}"
        if erp.auto_grade:
            text = f"{head}，等级已由 {was} 调整为 {grade}\n如需改回，请回复：`等级 {short(c)} {c.grade or LOWEST}`"
        else:
            text = f"{head}，建议等级由 {was} 调整为 {grade}\n同意请回复：`等级 {short(c)} {grade}`"
        key = f"grade_from_purchases:{cid}:{grade}"  # once per grade reached: a declined suggestion stays declined
        apply = _apply(c, grade) if erp.auto_grade else None
        firings.append(Firing("grade_from_purchases", key, c.owner, text, c, apply=apply))
    return firings

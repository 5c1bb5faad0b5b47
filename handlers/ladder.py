"""The follow-up ladder and the customer calendar: no follow-up for ``ladder_warn_days`` warns the owner, for
``ladder_handover_days`` tells the manager and hands the customer over (or to the public pool); a deal joins the
return-visit pool after ``return_visit_days``; a contract's end is announced ``contract_expiry_days`` ahead.

Each rule is one indexed query (``bot.rulekit``) whose keys restart with the contact that resets its clock, so a
new follow-up restarts the ladder; every side effect is conditional and audited as the system.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from tortoise.expressions import Q

from bot import audit
from bot.capability import Capability
from bot.context import Firing, RuleContext
from bot.identity import find_staff_among
from bot.rulekit import (
    crossed,
    customers_by_id,
    follow_up_action,
    ids,
    iso,
    local_time,
    not_fired,
    select,
    short,
    staff_by_id,
    utc,
)
from models.customers import Customer
from models.staff import Staff

capability = Capability("ladder")
AUDIT_PLATFORM = "scheduler"


async def stale_customers(ctx: RuleContext, rule: str, days: int, until_days: int | None = None) -> list[int]:
    """Active customers with an owner whose last contact (or creation, if never contacted) is ``days`` old
    (and not yet ``until_days`` old), and for whom ``rule`` has not fired for that contact."""
    branches, params = [], []
    for column, null_check in (("c.last_followup_at", ""), ("c.created_at", "c.last_followup_at IS NULL AND ")):
        reached, values = crossed(ctx, column, timedelta(days=days))
        younger = ""
        if until_days is not None:
            younger = f"AND {column} > ? "
            values.append(utc(ctx.now - timedelta(days=until_days)))
        branches.append(
            f"SELECT c.id FROM customer c WHERE {null_check}{reached} {younger}"
            "AND c.owner_id IS NOT NULL AND c.stage NOT IN ('won', 'lost') "
            f"AND {not_fired(rule, 'c.id', column)}"
        )
        params.extend(values)
    return ids(await select(ctx, " UNION ALL ".join(branches) + " LIMIT ?", params))


def last_contact(c: Customer) -> datetime:
    return c.last_followup_at or c.created_at


@capability.rule(order=20)
async def ladder_warn(ctx: RuleContext) -> list[Firing]:
    """No follow-up for ``ladder_warn_days``: warn the owner (until the handover threshold takes over)."""
    rules = ctx.settings.rules
    stale = await stale_customers(ctx, "ladder_warn", rules.ladder_warn_days, rules.ladder_handover_days)
    firings = []
    for c in (await customers_by_id(stale)).values():
        if c.owner is None:
            continue
        since = last_contact(c)
        days = (ctx.now - since).days
        text = (
            f"**跟进预警**\n> 客户：{c.name}\n> 已 {days} 天没有跟进（上次：{local_time(since, ctx)}）\n"
            f"满 {rules.ladder_handover_days} 天未跟进将上报主管并移交客户。{follow_up_action(c)}"
        )
        firings.append(
            Firing(
                rule="ladder_warn",
                key=f"ladder_warn:{c.id}:{rules.ladder_warn_days}d:{iso(since)}",
                to=c.owner,
                text=text,
                customer=c,
                period_at=since,
            )
        )
    return firings


@capability.rule(order=30)
async def ladder_handover(ctx: RuleContext) -> list[Firing]:
    """No follow-up for ``ladder_handover_days``: tell the manager and hand the customer over (or to the pool)."""
    rules = ctx.settings.rules
    customers = await customers_by_id(await stale_customers(ctx, "ladder_handover", rules.ladder_handover_days))
    managers = await staff_by_id(c.owner.manager_id for c in customers.values() if c.owner is not None)
    firings: list[Firing] = []
    for c in customers.values():
        owner = c.owner
        if owner is None:
            continue
        since = last_contact(c)
        manager = managers.get(owner.manager_id) if owner.manager_id else None
        to_pool = rules.ladder_handover_mode == "pool" or manager is None
        days = (ctx.now - since).days
        key = f"ladder_handover:{c.id}:{rules.ladder_handover_days}d:{iso(since)}"
        apply = _handover(c, owner, None if to_pool else manager, since)
        where = "已释放到公海" if to_pool else f"已移交给 {manager.name if manager else ''}"
        if manager is not None:
            action = (
                f"请重新分配：`转移 {short(c)} 给 姓名`"
                if not to_pool
                else f"如需认领请回复：`转移 {short(c)} 给 姓名`"
            )
            text = (
                f"**客户移交**\n> 客户：{c.name}\n"
                f"> 负责人 {owner.name} 已 {days} 天未跟进（上次：{local_time(since, ctx)}）\n> {where}\n{action}"
            )
            firings.append(Firing("ladder_handover", key, manager, text, customer=c, apply=apply, period_at=since))
            owner_apply = None
        else:
            owner_apply = apply
        text = (
            f"**客户已移交**\n> 客户：{c.name}\n> 已 {days} 天未跟进，{where}\n"
            f"如仍在跟进，请联系主管，并及时记录：`跟进 {short(c)} 跟进内容`"
        )
        firings.append(
            Firing(
                "ladder_handover_notice",
                f"ladder_handover_notice:{c.id}:{rules.ladder_handover_days}d:{iso(since)}",
                owner,
                text,
                customer=c,
                apply=owner_apply,
                period_at=since,
            )
        )
    return firings


def _handover(c: Customer, owner: Staff, manager: Staff | None, since: datetime) -> Callable[[], Awaitable[None]]:
    async def apply() -> None:
        # Conditional: if the customer moved or was followed up meanwhile, the handover no longer applies.
        moved = await Customer.filter(
            Q(last_followup_at=c.last_followup_at) if c.last_followup_at else Q(last_followup_at__isnull=True),
            id=c.id,
            owner_id=owner.id,
        ).update(owner_id=manager.id if manager else None)
        if moved:
            after = {"owner": manager.name if manager else None, "reason": f"no follow-up since {since.isoformat()}"}
            before = {"owner": owner.name}
            await audit.record("customer.handover", "customer", c.id, before, after, platform=AUDIT_PLATFORM)

    return apply


@capability.rule(order=40)
async def return_visit(ctx: RuleContext) -> list[Firing]:
    """``return_visit_days`` after a deal: the customer joins the return-visit pool and service is told."""
    rules = ctx.settings.rules
    reached, params = crossed(ctx, "c.won_at", timedelta(days=rules.return_visit_days))
    rows = await select(
        ctx,
        f"SELECT c.id FROM customer c WHERE {reached} "
        f"AND {not_fired('return_visit', 'c.id', 'c.won_at')} ORDER BY c.won_at LIMIT ?",
        params,
    )
    customers = await customers_by_id(ids(rows))
    service = await find_staff_among(rules.return_visit_staff)
    firings: list[Firing] = []
    for c in customers.values():
        if c.won_at is None:
            continue
        recipients = service or ([c.owner] if c.owner else [])
        apply = _tag(c, rules.return_visit_tag)
        for i, staff in enumerate(recipients):
            owner = c.owner.name if c.owner else "公海"
            text = (
                f"**回访提醒**\n> 客户：{c.name}（负责人：{owner}）\n> 成交已满 {rules.return_visit_days} 天"
                f"（成交：{local_time(c.won_at, ctx)}），已加入{rules.return_visit_tag}\n"
                f"请安排回访，回访后回复：`跟进 {short(c)} 回访内容`"
            )
            firings.append(
                Firing(
                    "return_visit",
                    f"return_visit:{c.id}:{rules.return_visit_days}d:{iso(c.won_at)}:{staff.id}",
                    staff,
                    text,
                    customer=c,
                    apply=apply if i == 0 else None,
                    period_at=c.won_at,
                )
            )
    return firings


def _tag(c: Customer, tag: str) -> Callable[[], Awaitable[None]]:
    async def apply() -> None:
        fresh = await Customer.get(id=c.id)
        tags = list(fresh.tags or [])
        if tag not in tags:
            await Customer.filter(id=c.id).update(tags=[*tags, tag])
            after = {"tags": [*tags, tag]}
            await audit.record("customer.tag", "customer", c.id, {"tags": tags}, after, platform=AUDIT_PLATFORM)

    return apply


@capability.rule(order=50)
async def contract_expiry(ctx: RuleContext) -> list[Firing]:
    """The contract ends within ``contract_expiry_days``: tell the owner (once per contract end date)."""
    days = ctx.settings.rules.contract_expiry_days
    today = ctx.now.astimezone(ctx.settings.tz).date()
    recent = utc(ctx.now - timedelta(days=days + 1))
    window, params = "c.contract_end >= ? AND c.contract_end <= ?", [today, today + timedelta(days=days)]
    if ctx.since is not None:  # only contracts whose warning day began since the last pass
        window += " AND c.contract_end > ?"
        params.append(ctx.since.astimezone(ctx.settings.tz).date() + timedelta(days=days))
    rows = await select(
        ctx,
        f"SELECT c.id FROM customer c WHERE {window} AND c.owner_id IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM rule_firing f WHERE f.rule = 'contract_expiry' AND f.subject_id = c.id "
        "AND f.fired_at > ?) ORDER BY c.contract_end LIMIT ?",
        [*params, recent],
    )
    firings = []
    for c in (await customers_by_id(ids(rows))).values():
        if c.owner is None or c.contract_end is None:
            continue
        left = (c.contract_end - today).days
        text = (
            f"**合同到期提醒**\n> 客户：{c.name}\n> 合同 {c.contract_end.isoformat()} 到期（还有 {left} 天）\n"
            f"请尽快联系续约，{follow_up_action(c)}"
        )
        firings.append(
            Firing("contract_expiry", f"contract_expiry:{c.id}:{days}d:{c.contract_end.isoformat()}", c.owner, text, c)
        )
    return firings

"""Reminders and the follow-up ladder: the scheduled rules about customers and tickets, and 提醒我… requests.

Every rule is one SQL query over indexed columns that skips subjects which already fired for the same period
(an anti-join on ``rule_firing``), so a pass costs the same whatever the number of customers; the engine in
``bot.rules`` records each key once. Keys are ``rule:subject:threshold:period``, the period being the value
that restarts the clock (the last follow-up, the deal, the due time), so a new follow-up restarts the ladder.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tortoise.expressions import Q

from bot.db import db
from bot.intents import Context, IntentRouter, Slots
from bot.rules import Firing, Rule, RuleContext
from bot.types import IncomingMessage, Reply
from handlers.customers import find_customer, not_found
from models.audit import AuditLog
from models.customers import Customer
from models.reminders import Reminder
from models.staff import Staff
from models.tickets import TICKET_STATUS_LABELS, Ticket, TicketPriority, TicketStatus

log = logging.getLogger(__name__)

router = IntentRouter()

# At most this many subjects per rule and pass: a backlog (first start, long downtime) drains over a few minutes
# instead of one huge transaction. ``crmbot jobs run`` is one pass, like one minute of the scheduler.
BATCH = 1000
SYSTEM = "系统"


# --- SQL helpers -----------------------------------------------------------------------------------------------


async def select(ctx: RuleContext, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    """Run a read query written with ``?`` placeholders and ending in ``LIMIT ?`` on either database.

    A full sweep takes at most ``BATCH`` rows per rule and pass (and asks the engine for another sweep when it
    hit that); an incremental pass only sees a few minutes of thresholds and takes them all.
    """
    conn = db()
    limit = BATCH if ctx.since is None else 1_000_000_000
    if conn.capabilities.dialect == "postgres":
        parts = sql.split("?")
        sql = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))
    rows = await conn.execute_query_dict(sql, [*params, limit])
    if len(rows) >= limit:
        ctx.more = True
    return rows


def crossed(ctx: RuleContext, column: str, after: timedelta = timedelta(0)) -> tuple[str, list[Any]]:
    """SQL for: the threshold ``column + after`` has been reached by now (and, in an incremental pass, only
    since the last pass) - a range on the column's index."""
    if ctx.since is None:
        return f"{column} <= ?", [utc(ctx.now - after)]
    return f"{column} <= ? AND {column} > ?", [utc(ctx.now - after), utc(ctx.since - after)]


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def not_fired(rule: str, subject: str, period: str) -> str:
    """SQL: no firing of ``rule`` for this subject and period yet (probes the (rule, subject_id, period_at) index)."""
    return (
        f"NOT EXISTS (SELECT 1 FROM rule_firing f WHERE f.rule = '{rule}' "
        f"AND f.subject_id = {subject} AND f.period_at = {period})"
    )


def ids(rows: Iterable[dict[str, Any]]) -> list[int]:
    return [int(r["id"]) for r in rows]


async def customers_by_id(customer_ids: list[int]) -> dict[int, Customer]:
    if not customer_ids:
        return {}
    return {c.id: c for c in await Customer.filter(id__in=customer_ids).select_related("owner").order_by("id")}


async def staff_by_id(staff_ids: Iterable[int | None]) -> dict[int, Staff]:
    wanted = {s for s in staff_ids if s is not None}
    if not wanted:
        return {}
    return {s.id: s for s in await Staff.filter(id__in=wanted)}


def short(customer: Customer) -> str:
    """The name a rep types: the first alias when there is one."""
    aliases = customer.aliases or []
    return str(aliases[0]) if aliases else customer.name


def iso(moment: datetime | date | None) -> str:
    return moment.isoformat() if moment is not None else "none"


def local(moment: datetime, ctx: RuleContext) -> str:
    return moment.astimezone(ctx.settings.tz).strftime("%m-%d %H:%M")


def follow_up_action(customer: Customer) -> str:
    return f"联系后请记录跟进，例如回复：`跟进 {short(customer)} 电话沟通了需求 下周三再联系`"


async def audit(action: str, entity: str, entity_id: object, before: Any, after: Any) -> None:
    await AuditLog.create(
        actor_id=None,
        actor_name=SYSTEM,
        action=action,
        entity=entity,
        entity_id=str(entity_id),
        before=before,
        after=after,
        platform="scheduler",
    )


# --- customer rules --------------------------------------------------------------------------------------------


async def followup_due(ctx: RuleContext) -> list[Firing]:
    """The next follow-up time a rep set has come (and no follow-up was logged since it was set)."""
    due, params = crossed(ctx, "c.next_followup_at", timedelta(minutes=ctx.settings.rules.next_followup_grace_minutes))
    rows = await select(
        ctx,
        f"SELECT c.id FROM customer c WHERE {due} AND c.owner_id IS NOT NULL "
        "AND (c.last_followup_at IS NULL OR c.last_followup_at < c.next_followup_at) "
        f"AND {not_fired('followup_due', 'c.id', 'c.next_followup_at')} ORDER BY c.next_followup_at LIMIT ?",
        params,
    )
    firings = []
    for c in (await customers_by_id(ids(rows))).values():
        if c.owner is None or c.next_followup_at is None:
            continue
        text = (
            f"**跟进提醒**\n> 客户：{c.name}\n> 约定的跟进时间：{local(c.next_followup_at, ctx)}\n"
            f"现在该联系客户了。{follow_up_action(c)}"
        )
        firings.append(
            Firing(
                rule="followup_due",
                key=f"followup_due:{c.id}:0:{iso(c.next_followup_at)}",
                to=c.owner,
                text=text,
                customer=c,
                period_at=c.next_followup_at,
            )
        )
    return firings


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
            f"**跟进预警**\n> 客户：{c.name}\n> 已 {days} 天没有跟进（上次：{local(since, ctx)}）\n"
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
                f"> 负责人 {owner.name} 已 {days} 天未跟进（上次：{local(since, ctx)}）\n> {where}\n{action}"
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
            await audit("customer.handover", "customer", c.id, {"owner": owner.name}, after)

    return apply


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
    service = await service_staff(rules.return_visit_staff)
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
                f"（成交：{local(c.won_at, ctx)}），已加入{rules.return_visit_tag}\n"
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


async def service_staff(names: list[str]) -> list[Staff]:
    """The configured service team (names or platform user ids), active members only, in the configured order."""
    if not names:
        return []
    found = await Staff.filter(
        Q(name__in=names) | Q(wecom_userid__in=names) | Q(dingtalk_userid__in=names), active=True
    ).order_by("id")
    return list(found)


def _tag(c: Customer, tag: str) -> Callable[[], Awaitable[None]]:
    async def apply() -> None:
        fresh = await Customer.get(id=c.id)
        tags = list(fresh.tags or [])
        if tag not in tags:
            await Customer.filter(id=c.id).update(tags=[*tags, tag])
            await audit("customer.tag", "customer", c.id, {"tags": tags}, {"tags": [*tags, tag]})

    return apply


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


async def repurchase_due(ctx: RuleContext) -> list[Firing]:
    """The next order is due (the customer's average reorder interval): tell the owner a few days ahead."""
    from models.orders import Repurchase

    lead = ctx.settings.rules.repurchase_lead_days
    reached, params = crossed(ctx, "r.due_at", -timedelta(days=lead))
    rows = await select(
        ctx,
        "SELECT r.id FROM repurchase r JOIN customer c ON c.id = r.customer_id "
        f"WHERE {reached} AND c.owner_id IS NOT NULL AND c.stage <> 'lost' "
        f"AND {not_fired('repurchase_due', 'r.customer_id', 'r.due_at')} ORDER BY r.due_at LIMIT ?",
        params,
    )
    firings = []
    for r in (
        await Repurchase.filter(id__in=ids(rows)).select_related("customer", "customer__owner").order_by("customer_id")
    ):
        c = r.customer
        if c.owner is None:
            continue
        due = r.due_at.astimezone(ctx.settings.tz).date()
        text = (
            f"**复购提醒**\n> 客户：{c.name}\n"
            f"> 平均 {r.interval_days} 天下一次单，上次下单 {r.last_order_date.isoformat()}，"
            f"预计 {due.isoformat()} 该复购了\n请联系客户了解需求，{follow_up_action(c)}"
        )
        firings.append(
            Firing(
                "repurchase_due",
                f"repurchase_due:{c.id}:{r.interval_days}d:{due.isoformat()}",
                c.owner,
                text,
                c,
                period_at=r.due_at,
            )
        )
    return firings


# --- ticket rules ----------------------------------------------------------------------------------------------


async def _tickets(ticket_ids: list[int]) -> list[Ticket]:
    if not ticket_ids:
        return []
    return list(
        await Ticket.filter(id__in=ticket_ids).select_related("customer", "customer__owner", "assignee").order_by("id")
    )


async def ticket_sla(ctx: RuleContext) -> list[Firing]:
    """First response overdue: escalate to the assignee's manager (or the owner's), and chase the assignee."""
    due, params = crossed(ctx, "t.first_response_due")
    rows = await select(
        ctx,
        f"SELECT t.id FROM ticket t WHERE t.status IN ('open', 'in_progress') AND {due} "
        "AND t.first_responded_at IS NULL "
        f"AND {not_fired('ticket_sla', 't.id', 't.first_response_due')} ORDER BY t.first_response_due LIMIT ?",
        params,
    )
    tickets = await _tickets(ids(rows))
    handlers = [t.assignee or t.customer.owner for t in tickets]
    managers = await staff_by_id(h.manager_id for h in handlers if h is not None)
    firings: list[Firing] = []
    for t, handler in zip(tickets, handlers, strict=True):
        manager = managers.get(handler.manager_id) if handler and handler.manager_id else None
        urgent = t.priority == TicketPriority.URGENT
        minutes = int((ctx.now - t.created_at).total_seconds() // 60)
        label = "紧急" if urgent else "普通"
        who = handler.name if handler else "未分配"
        period = iso(t.first_response_due)
        if manager is not None:
            text = (
                f"**工单超时上报**\n> 工单 #{t.id}（{label}）{t.title or t.description[:30]}\n"
                f"> 客户：{t.customer.name}　处理人：{who}\n> 已 {minutes} 分钟无人响应"
                f"（应于 {local(t.first_response_due, ctx)} 前响应）\n"
                f"请督促 {who} 立即处理（处理人回复：`工单 #{t.id} 处理中`）"
            )
            firings.append(
                Firing(
                    "ticket_sla",
                    f"ticket_sla:{t.id}:first_response:{period}",
                    manager,
                    text,
                    customer=t.customer,
                    urgent=urgent,
                    apply=_escalated(t, manager),
                    period_at=t.first_response_due,
                )
            )
        if handler is not None:
            escalated = f"，已上报 {manager.name}" if manager else ""
            text = (
                f"**工单响应超时**\n> 工单 #{t.id}（{label}）{t.title or t.description[:30]}\n"
                f"> 客户：{t.customer.name}，已 {minutes} 分钟未响应{escalated}\n"
                f"请立即处理，回复：`工单 #{t.id} 处理中`"
            )
            firings.append(
                Firing(
                    "ticket_sla_assignee",
                    f"ticket_sla_assignee:{t.id}:first_response:{period}",
                    handler,
                    text,
                    customer=t.customer,
                    urgent=urgent,
                    period_at=t.first_response_due,
                )
            )
    return firings


def _escalated(t: Ticket, manager: Staff) -> Callable[[], Awaitable[None]]:
    async def apply() -> None:
        await audit("ticket.escalate", "ticket", t.id, {"assignee_id": t.assignee_id}, {"escalated_to": manager.name})

    return apply


async def ticket_revisit(ctx: RuleContext) -> list[Firing]:
    """A resolved ticket was not revisited in time: remind whoever handled it (else the customer's owner)."""
    due, params = crossed(ctx, "t.revisit_due")
    rows = await select(
        ctx,
        f"SELECT t.id FROM ticket t WHERE t.status = 'resolved' AND {due} AND t.revisited_at IS NULL "
        f"AND {not_fired('ticket_revisit', 't.id', 't.revisit_due')} ORDER BY t.revisit_due LIMIT ?",
        params,
    )
    firings = []
    for t in await _tickets(ids(rows)):
        to = t.assignee or t.customer.owner
        if to is None or t.revisit_due is None:
            continue
        resolved = local(t.resolved_at, ctx) if t.resolved_at else "—"
        text = (
            f"**工单回访提醒**\n> 工单 #{t.id} {t.title or t.description[:30]}\n> 客户：{t.customer.name}，"
            f"{resolved} {TICKET_STATUS_LABELS[TicketStatus.RESOLVED]}，还没有回访\n"
            f"请回访客户确认问题已解决，回访后关闭工单：`工单 #{t.id} 关闭 已回访，客户确认解决`"
        )
        firings.append(
            Firing(
                "ticket_revisit",
                f"ticket_revisit:{t.id}:revisit:{iso(t.revisit_due)}",
                to,
                text,
                customer=t.customer,
                period_at=t.revisit_due,
            )
        )
    return firings


# --- explicit reminders ----------------------------------------------------------------------------------------


async def explicit_reminders(ctx: RuleContext) -> list[Firing]:
    """Reminders reps asked for (``明天下午3点提醒我给华为打电话``), at the time they asked."""
    firings = []
    due = Reminder.filter(fired_at__isnull=True, at__lte=ctx.now).order_by("at", "id").limit(BATCH)
    reminders = await due.select_related("staff", "customer")
    ctx.more = ctx.more or len(reminders) >= BATCH
    for r in reminders:
        about = f"\n> 客户：{r.customer.name}" if r.customer else ""
        action = f"\n完成后可回复：`跟进 {short(r.customer)} 跟进内容`" if r.customer else ""
        text = f"**提醒**\n> {r.content}{about}\n> 提醒时间：{local(r.at, ctx)}{action}"
        firings.append(
            Firing(
                "reminder",
                f"reminder:{r.id}:at:{iso(r.at)}",
                r.staff,
                text,
                customer=r.customer,
                # The rep chose this moment themselves: quiet hours do not hold it back.
                urgent=True,
                apply=_mark_fired(r, ctx.now),
                period_at=r.at,
            )
        )
    return firings


def _mark_fired(r: Reminder, now: datetime) -> Callable[[], Awaitable[None]]:
    async def apply() -> None:
        await Reminder.filter(id=r.id).update(fired_at=now)

    return apply


@router.intent("remind", examples=["明天下午3点提醒我给华为打电话", "提醒我 周五 10点 跟进比亚迪报价"])
async def remind(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """设置提醒：明天下午3点提醒我给华为打电话"""
    content = str(slots.get("content") or "").strip()
    at_text = str(slots.get("at") or "").strip()
    if not at_text:
        return Reply("请告诉我什么时候提醒您，例如：明天下午3点提醒我给华为打电话")
    try:
        at = datetime.fromisoformat(at_text)
    except ValueError:
        return Reply(f"没看懂提醒时间「{at_text}」，请换个说法，例如：明天下午3点提醒我给华为打电话")
    tz = ctx.settings.tz
    at = at if at.tzinfo else at.replace(tzinfo=tz)
    if at <= ctx.now:
        return Reply(f"提醒时间 {at.astimezone(tz).strftime('%m-%d %H:%M')} 已经过去了，请说一个将来的时间。")
    customer = None
    if name := str(slots.get("customer") or "").strip():
        customer, suggestions = await find_customer(name)
        if customer is None:
            return not_found(name, suggestions)
    content = content or (f"跟进 {customer.name}" if customer else "您设置的提醒")
    reminder = await Reminder.create(
        staff_id=ctx.staff.id,
        customer_id=customer.id if customer else None,
        content=content,
        at=at.astimezone(UTC),
        source=f"{msg.platform}:{msg.msgid}"[:191],
        using_db=ctx.conn,
    )
    await ctx.audit("reminder.create", "reminder", reminder.id, None, {"at": at.isoformat(), "content": content})
    when = at.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    return Reply(f"好的，{when} 提醒您：{content}")


RULES: list[Rule] = [
    followup_due,
    ladder_warn,
    ladder_handover,
    return_visit,
    contract_expiry,
    repurchase_due,
    ticket_sla,
    ticket_revisit,
    explicit_reminders,
]

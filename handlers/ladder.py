"""The follow-up ladder and the customer calendar: no follow-up for ``ladder_warn_days`` warns the owner, for
``ladder_handover_days`` tells the manager and hands the customer over (or to the public pool), both per grade
when ``ladder_by_grade`` names it (A 3/15, C 14/30); a deal joins the return-visit pool after
``return_visit_days``; a contract's end is announced ``contract_expiry_days`` ahead.

Each rule is one indexed query (``bot.rulekit``) whose keys restart with the contact that resets its clock, so a
new follow-up restarts the ladder; every side effect is conditional and audited as the system.

A go-live import of long-neglected customers must not hand them over one push at a time: past
``handover_flood_threshold`` handovers for one person in one pass, the engine sends one summary (``Batch``), and
the manager redistributes them in bulk (``批量分配 姓名 N|全部``, ``批量放入公海``; ``待分配客户`` lists them), a
command for managers and admins, audited per customer. ``提醒清单`` lists every push of the last day, so that a
digest that names only the first few is never the only way to see them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tortoise.expressions import Q

from bot import audit, sql
from bot.capability import Capability
from bot.config import RulesSettings
from bot.context import Batch, Context, Firing, RuleContext, Slots
from bot.identity import find_staff, find_staff_among
from bot.nlu.reading import Reading, Result
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
from bot.scheduled import LIST_COMMAND, one_line
from bot.types import IncomingMessage, Reply
from models.audit import AuditLog
from models.customers import Customer
from models.reminders import RuleFiring
from models.staff import Role, Staff

capability = Capability("ladder")
AUDIT_PLATFORM = "scheduler"


# The moment the ladder counts from: the last contact (creation, if never contacted), unless a go-live baseline
# (``ladder_from``, set by an import with ``[rules] baseline_on_import``) is later. One branch per column, each a
# range on that column's index; the conditions make exactly one branch apply to a customer.
CLOCKS = (
    ("c.last_followup_at", "(c.ladder_from IS NULL OR c.ladder_from <= c.last_followup_at) AND "),
    ("c.created_at", "c.last_followup_at IS NULL AND (c.ladder_from IS NULL OR c.ladder_from <= c.created_at) AND "),
    ("c.ladder_from", "c.ladder_from > COALESCE(c.last_followup_at, c.created_at) AND "),
)


def grade_groups(rules: RulesSettings) -> list[tuple[str, list[Any], tuple[int, int]]]:
    """The SQL condition on the grade, its parameters, and the (warn, handover) days: one per configured grade,
    and the defaults for every other grade (or none)."""
    grades = list(rules.ladder_by_grade)
    groups: list[tuple[str, list[Any], tuple[int, int]]] = [
        ("c.grade = ? AND ", [g], rules.ladder_days(g)) for g in grades
    ]
    others = f"c.grade NOT IN ({', '.join('?' * len(grades))}) AND " if grades else ""
    groups.append((others, list(grades), (rules.ladder_warn_days, rules.ladder_handover_days)))
    return groups


async def stale_customers(ctx: RuleContext, rule: str, warn: bool) -> list[int]:
    """Active customers with an owner whose ladder clock (``last_contact``) is as old as their grade's warn days
    (``warn``; and not yet its handover days) or handover days, and for whom ``rule`` has not fired for that
    moment. One query: a branch per grade group and clock."""
    branches, params = [], []
    for grade, grade_params, (warn_days, handover_days) in grade_groups(ctx.settings.rules):
        for column, applies in CLOCKS:
            reached, values = crossed(ctx, column, timedelta(days=warn_days if warn else handover_days))
            younger = ""
            if warn:
                younger = f"AND {column} > ? "
                values.append(utc(ctx.now - timedelta(days=handover_days)))
            branches.append(
                f"SELECT c.id FROM customer c WHERE {grade}{applies}{reached} {younger}"
                "AND c.owner_id IS NOT NULL AND c.stage NOT IN ('won', 'lost') "
                f"AND {not_fired(rule, 'c.id', column)}"
            )
            params.extend([*grade_params, *values])
    return ids(await select(ctx, " UNION ALL ".join(branches) + " LIMIT ?", params))


def last_contact(c: Customer) -> datetime:
    """The last contact (or creation), or the go-live baseline when that is later."""
    since: datetime = c.last_followup_at or c.created_at
    return c.ladder_from if c.ladder_from is not None and c.ladder_from > since else since


def _since_label(c: Customer, ctx: RuleContext) -> str:
    """Where the ladder's days count from, as the push says it: the last contact, or the go-live import."""
    since = last_contact(c)
    label = "上线导入" if since == c.ladder_from else "上次"
    return f"{label}：{local_time(since, ctx)}"


@capability.rule(order=20)
async def ladder_warn(ctx: RuleContext) -> list[Firing]:
    """No follow-up for ``ladder_warn_days``: warn the owner (until the handover threshold takes over)."""
    rules = ctx.settings.rules
    stale = await stale_customers(ctx, "ladder_warn", warn=True)
    firings = []
    for c in (await customers_by_id(stale)).values():
        if c.owner is None:
            continue
        warn_days, handover_days = rules.ladder_days(c.grade)
        since = last_contact(c)
        days = (ctx.now - since).days
        text = (
            f"**跟进预警**\n> 客户：{c.name}\n> 已 {days} 天没有跟进（{_since_label(c, ctx)}）\n"
            f"满 {handover_days} 天未跟进将上报主管并移交客户。{follow_up_action(c)}"
        )
        firings.append(
            Firing(
                rule="ladder_warn",
                key=f"ladder_warn:{c.id}:{warn_days}d:{iso(since)}",
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
    customers = await customers_by_id(await stale_customers(ctx, "ladder_handover", warn=False))
    managers = await staff_by_id(c.owner.manager_id for c in customers.values() if c.owner is not None)
    firings: list[Firing] = []
    for c in customers.values():
        owner = c.owner
        if owner is None:
            continue
        since = last_contact(c)
        handover_days = rules.ladder_days(c.grade)[1]
        manager = managers.get(owner.manager_id) if owner.manager_id else None
        to_pool = rules.ladder_handover_mode == "pool" or manager is None
        days = (ctx.now - since).days
        key = f"ladder_handover:{c.id}:{handover_days}d:{iso(since)}"
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
                f"> 负责人 {owner.name} 已 {days} 天未跟进（{_since_label(c, ctx)}）\n> {where}\n{action}"
            )
            summary = _handover_summary(ctx, to_pool)
            firings.append(_handover_firing("ladder_handover", key, manager, text, c, apply, since, ctx, summary))
            owner_apply = None
        else:
            owner_apply = apply
        text = (
            f"**客户已移交**\n> 客户：{c.name}\n> 已 {days} 天未跟进，{where}\n"
            f"如仍在跟进，请联系主管，并及时记录：`跟进 {short(c)} 跟进内容`"
        )
        key = f"ladder_handover_notice:{c.id}:{handover_days}d:{iso(since)}"
        notice = _handover_firing(
            "ladder_handover_notice", key, owner, text, c, owner_apply, since, ctx, _notice_summary(ctx, where)
        )
        firings.append(notice)
    return firings


def _handover_firing(
    rule: str,
    key: str,
    to: Staff,
    text: str,
    c: Customer,
    apply: Callable[[], Awaitable[None]] | None,
    since: datetime,
    ctx: RuleContext,
    summarize: Callable[[list[Firing]], str],
) -> Firing:
    """A handover push, summarized with the others of its kind to the same person past the flood threshold."""
    batch = Batch(rule, ctx.settings.rules.handover_flood_threshold, summarize)
    return Firing(rule, key, to, text, customer=c, apply=apply, period_at=since, batch=batch)


def ranked(customers: list[Customer]) -> list[Customer]:
    """The order customers are listed and assigned in: grade A first, then the most recently contacted."""
    return sorted(customers, key=lambda c: (GRADE_ORDER.get(c.grade, len(GRADE_ORDER)), -last_contact(c).timestamp()))


GRADE_ORDER = {"A": 0, "B": 1, "C": 2}


def _by_grade(customers: list[Customer]) -> str:
    counts = Counter(f"{c.grade}级" if c.grade else "未分级" for c in customers)
    return "，".join(f"{grade} {counts[grade]}" for grade in sorted(counts))


def _top(customers: list[Customer], ctx: RuleContext) -> list[str]:
    """The first ``handover_flood_list`` customers by rank, one line each."""
    shown = ranked(customers)[: ctx.settings.rules.handover_flood_list]
    return [
        f"{i}. {c.name}（{c.grade or '未分级'}，原负责人 {c.owner.name if c.owner else '公海'}，"
        f"上次跟进 {local_date(last_contact(c), ctx.settings.tz)}）"
        for i, c in enumerate(shown, 1)
    ]


def local_date(moment: datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d")


def _handover_days(customers: list[Customer], ctx: RuleContext) -> str:
    """The handover days of these customers' grades: one number, or the range when grades differ."""
    days = sorted({ctx.settings.rules.ladder_days(c.grade)[1] for c in customers})
    return str(days[0]) if len(days) == 1 else f"{days[0]}–{days[-1]}"


def _handover_summary(ctx: RuleContext, to_pool: bool) -> Callable[[list[Firing]], str]:
    def summarize(firings: list[Firing]) -> str:
        customers = [f.customer for f in firings if f.customer is not None]
        where = "已释放到公海" if to_pool else "已移交给您"
        lines = [
            "**客户移交汇总**",
            # The quoted line is what a digest keeps of this push: it names the command that lists them all.
            f"> 本次共 {len(customers)} 位客户满 {_handover_days(customers, ctx)} 天未跟进，"
            f"{where}（{_by_grade(customers)}），"
            f"全部名单请发送 `{PENDING_COMMAND}`",
            f"按等级排在前面的 {min(len(customers), ctx.settings.rules.handover_flood_list)} 位：",
            *_top(customers, ctx),
            "批量分配：`批量分配 姓名 20` 或 `批量分配 姓名 全部`（按上面的顺序）",
        ]
        if not to_pool:
            lines.append("不再跟进的放入公海：`批量放入公海`")
        return "\n".join(lines)

    return summarize


def _notice_summary(ctx: RuleContext, where: str) -> Callable[[list[Firing]], str]:
    def summarize(firings: list[Firing]) -> str:
        customers = [f.customer for f in firings if f.customer is not None]
        return "\n".join(
            [
                "**客户已移交**",
                f"> 您有 {len(customers)} 位客户满 {_handover_days(customers, ctx)} 天未跟进，"
                f"{where}（{_by_grade(customers)}），"
                f"全部名单请发送 `{LIST_COMMAND}`",
                *_top(customers, ctx),
                "如仍在跟进，请联系主管，并及时记录：`跟进 客户名 跟进内容`",
            ]
        )

    return summarize


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


# -- after a flood: the lists and the bulk commands ---------------------------------------------------------------
# These intents give no examples, so help (one chat message) does not list them: the pushes that need them name them.

PENDING_COMMAND = "待分配客户"
PAGE = 20
LIST_HOURS = 24
ALL = "all"
_PAGE_NUMBER = re.compile(r"^\s*(?:第\s*)?(\d{1,4})\s*页?\s*$")
_COUNT = re.compile(r"^(?P<who>.+?)\s*(?:(?P<n>\d{1,5})\s*(?:个|位|家)?|(?P<all>全部|所有|all))?$", re.I)


def _page_slots(rest: str) -> Slots:
    m = _PAGE_NUMBER.match(rest)
    return {"page": int(m[1])} if m else {}


@capability.command(re.compile(rf"^(?:{LIST_COMMAND}|提醒列表|待办清单)(?:\s+|$|(?=\d))"), order=75)
def reminder_list_command(r: Reading, rest: str) -> Result:
    return "reminder_list", _page_slots(rest)


@capability.command(re.compile(rf"^(?:{PENDING_COMMAND}|移交清单)(?:\s+|$|(?=\d))"), order=125)
def pending_command(r: Reading, rest: str) -> Result:
    return "handover_list", _page_slots(rest)


@capability.command(re.compile(r"^批量分配(?:\s+|[:：]|(?=\S))"), order=126)
def bulk_assign_command(r: Reading, rest: str) -> Result:
    m = _COUNT.match(rest.strip())
    if m is None:
        return "bulk_assign", {}
    slots: Slots = {"to_staff": m["who"].strip()}
    if m["n"]:
        slots["count"] = int(m["n"])
    elif m["all"]:
        slots["count"] = ALL
    return "bulk_assign", slots


@capability.command(re.compile(r"^(?:批量放入公海|批量释放到公海|批量释放)\s*$"), order=127)
def bulk_release_command(r: Reading, rest: str) -> Result:
    return "bulk_release", {}


@capability.intent("reminder_list", order=95)
async def reminder_list(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看最近一天收到的全部提醒（每页 20 条）"""
    since = ctx.now - timedelta(hours=LIST_HOURS)
    query = RuleFiring.filter(staff_id=ctx.staff.id, fired_at__gte=since).using_db(ctx.conn)
    total = await query.count()
    if not total:
        return Reply("最近一天没有给您的提醒。")
    page, pages = _page(slots, total)
    texts = (
        await query.order_by("-fired_at", "-id").offset((page - 1) * PAGE).limit(PAGE).values_list("text", flat=True)
    )
    lines = [f"**最近一天的提醒**（共 {total} 条，第 {page}/{pages} 页）"]
    lines.extend(f"{(page - 1) * PAGE + i}. {one_line(str(t))}" for i, t in enumerate(texts, 1))
    if page < pages:
        lines.append(f"下一页：`{LIST_COMMAND} {page + 1}`")
    return Reply.markdown("\n".join(lines))


def _page(slots: Slots, total: int) -> tuple[int, int]:
    pages = max(1, -(-total // PAGE))
    return min(max(1, int(slots.get("page") or 1)), pages), pages


async def handed_over(ctx: Context) -> list[Customer]:
    """The customers the ladder handed to the asker (or, in pool mode, released to the pool, telling them) that
    still wait for an owner, not followed up since; in the order they are assigned."""
    manager = ctx.staff
    held = (
        "(c.owner_id = ? OR c.owner_id IS NULL)"
        if ctx.settings.rules.ladder_handover_mode == "pool"
        else "c.owner_id = ?"
    )
    rows = await sql.select(
        ctx.conn or sql.default(),
        f"SELECT c.id FROM customer c WHERE {held} "
        "AND c.stage NOT IN ('won', 'lost') AND EXISTS (SELECT 1 FROM rule_firing f "
        "WHERE f.rule = 'ladder_handover' AND f.subject_id = c.id AND f.staff_id = ? "
        "AND (c.last_followup_at IS NULL OR c.last_followup_at <= f.fired_at))",
        [manager.id, manager.id],
    )
    customers = await Customer.filter(id__in=ids(rows)).using_db(ctx.conn).select_related("owner")
    return ranked(list(customers))


def _may_redistribute(staff: Staff) -> bool:
    return staff.role in (Role.MANAGER, Role.DIRECTOR, Role.ADMIN)


NOT_ALLOWED = Reply("只有主管或管理员可以批量分配移交来的客户。")


@capability.intent("handover_list", order=96)
async def handover_list(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看移交给您、等待重新分配的客户（主管）"""
    if not _may_redistribute(ctx.staff):
        return NOT_ALLOWED
    customers = await handed_over(ctx)
    if not customers:
        return Reply("没有等待分配的移交客户。")
    page, pages = _page(slots, len(customers))
    lines = [f"**待分配客户**（共 {len(customers)} 位，{_by_grade(customers)}；第 {page}/{pages} 页）"]
    for i, c in enumerate(customers[(page - 1) * PAGE : page * PAGE], (page - 1) * PAGE + 1):
        where = c.owner.name if c.owner else "公海"
        contact = local_date(last_contact(c), ctx.settings.tz)
        lines.append(f"{i}. {c.name}（{c.grade or '未分级'}，{where}，上次跟进 {contact}）")
    if page < pages:
        lines.append(f"下一页：`{PENDING_COMMAND} {page + 1}`")
    lines.append("批量分配：`批量分配 姓名 20` 或 `批量分配 姓名 全部`；放入公海：`批量放入公海`")
    return Reply.markdown("\n".join(lines))


@capability.intent("bulk_assign", order=97)
async def bulk_assign(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """把移交来的客户批量分配给同事（主管）：批量分配 姓名 数量|全部"""
    staff = ctx.staff
    if not _may_redistribute(staff):
        return NOT_ALLOWED
    count = slots.get("count")
    if not slots.get("to_staff") or count is None or count == 0:
        return Reply("请说明分给谁、分几位，例如：`批量分配 张三 20` 或 `批量分配 张三 全部`。")
    target = await find_staff(str(slots["to_staff"]))
    if target is None:
        return Reply(f"没有找到同事「{slots['to_staff']}」。")
    if target.id == staff.id:
        return Reply("这些客户已经在您名下：自己跟进的，记录跟进后就不再等待分配。")
    if staff.role == Role.MANAGER and target.id != staff.id and target.manager_id != staff.id:
        return Reply(f"「{target.name}」不在您的团队，只能分配给您团队的同事。")
    customers = await handed_over(ctx)
    chosen = customers if count == ALL else customers[: int(count)]
    if not chosen:
        return Reply("没有等待分配的移交客户。")
    await _reassign(ctx, chosen, target, "bulk_assign")
    names = "、".join(c.name for c in chosen[:5]) + ("等" if len(chosen) > 5 else "")
    if target.id != staff.id:
        await ctx.push(
            target,
            f"{staff.name} 把 {len(chosen)} 位客户分配给了您：{names}。发送「客户 名称」查看资料，跟进后请记录。",
        )
    left = len(customers) - len(chosen)
    return Reply(
        f"已把 {len(chosen)} 位客户分配给{target.name}：{names}。" + (f"还有 {left} 位等待分配。" if left else "")
    )


@capability.intent("bulk_release", order=98)
async def bulk_release(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """把移交给您的客户全部放入公海（主管）"""
    if not _may_redistribute(ctx.staff):
        return NOT_ALLOWED
    held = [c for c in await handed_over(ctx) if c.owner_id == ctx.staff.id]
    if not held:
        return Reply("没有移交给您、等待分配的客户。")
    await _reassign(ctx, held, None, "bulk_release")
    return Reply(f"已把 {len(held)} 位移交来的客户放入公海，同事可以认领：`转移 客户名 给 姓名`。")


async def _reassign(ctx: Context, customers: list[Customer], to: Staff | None, action: str) -> None:
    """One conditional update (a customer someone took meanwhile stays theirs), one audit row per customer."""
    previous = {c.id: c.owner.name if c.owner else None for c in customers}
    moved = (
        await Customer.filter(Q(owner_id=ctx.staff.id) | Q(owner_id__isnull=True), id__in=list(previous))
        .using_db(ctx.conn)
        .update(owner_id=to.id if to else None)
    )
    if moved != len(customers):
        raise RuntimeError("customers changed owner while being reassigned")
    entries = [
        audit.entry(
            action,
            "customer",
            cid,
            {"owner": before},
            {"owner": to.name if to else None},
            actor=ctx.staff,
            platform=ctx.msg.platform,
        )
        for cid, before in previous.items()
    ]
    await AuditLog.bulk_create(entries, using_db=ctx.conn)

"""The public pool (公海) worked both ways: ``公海`` lists it (by grade, industry or region - ``公海 华东``,
``公海 地区 华东`` - a page at a time), ``认领 X`` / ``领取 X`` / ``把X转给我`` claims a customer within the rep's
limits (claims a day, pool customers held, no reclaim of one they released within the cooldown), ``放入公海 X``
releases one. The claim is one conditional update, so of
two reps claiming at once exactly one gets the customer; the manager is told of every move."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from tortoise.expressions import Q

from bot import sql
from bot.access import refusal
from bot.context import Context, HandlerResult, Slots
from bot.nlu.reading import Reading, Result
from bot.types import IncomingMessage, Reply
from handlers.customers.changes import transfer
from handlers.customers.profile import snapshot
from handlers.people.capability import capability
from models.customers import Customer, Stage
from models.people import PoolMove
from models.staff import Role, Staff

CLAIM, RELEASE = "claim", "release"
_LIST = re.compile(r"^(?:公海|公海客户|公海列表|客户公海)(?:\s+|[:：]|$)")
_CLAIM = re.compile(r"^(?:认领|领取|捞取)(?:\s+|[:：]|(?=\S))")
_RELEASE = re.compile(r"^(?:放入公海|放回公海|退回公海|释放)(?:\s+|[:：]|(?=\S))")
_TO_ME = re.compile(r"^把(?P<c>.+?)(?:转给|交给|分给|划给)我(?:跟进|负责)?[。！!]?$")
_GRADE = re.compile(r"(?<![A-Za-z])([ABCabc])(?:级|类)?(?![A-Za-z])")
_PAGE = re.compile(r"第?\s*(\d{1,3})\s*页")
_REGION = re.compile(r"(?:地区|区域)\s*[:：]?\s*(\S+)")


@capability.command(_LIST, order=145)
def pool_command(r: Reading, rest: str) -> Result:
    slots: Slots = {"page": 1, "grade": "", "industry": "", "region": ""}
    if m := _REGION.search(rest):
        slots["region"] = m[1]
        rest = _REGION.sub(" ", rest, count=1)
    if m := _PAGE.search(rest):
        slots["page"] = max(1, int(m[1]))
        rest = _PAGE.sub(" ", rest)
    if m := _GRADE.search(rest):
        slots["grade"] = m[1].upper()
        rest = _GRADE.sub(" ", rest, count=1)
    slots["industry"] = rest.strip(" ,，")
    return "pool_list", slots


@capability.command(_CLAIM, order=146)
def claim_command(r: Reading, rest: str) -> Result | None:
    return ("pool_claim", r.split_customer(rest)[0]) if rest.strip() else None


@capability.command(_RELEASE, order=147)
def release_command(r: Reading, rest: str) -> Result | None:
    return ("pool_release", r.split_customer(rest)[0]) if rest.strip() else None


@capability.phrase(order=65)
def claim_phrase(r: Reading) -> Result | None:
    m = _TO_ME.match(r.text.strip())
    return ("pool_claim", r.customer_slot(m["c"], m["c"])) if m else None


@capability.intent("pool_list", examples=["公海"], order=70)
async def pool_list(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看公海客户"""
    size = ctx.settings.pool.page_size
    page = int(slots.get("page") or 1)
    query = Customer.filter(owner_id__isnull=True).exclude(stage=Stage.LOST)
    if grade := str(slots.get("grade") or ""):
        query = query.filter(grade=grade)
    if region := str(slots.get("region") or ""):
        query = query.filter(id__in=await _in_region(region, ctx))
    if industry := str(slots.get("industry") or ""):
        # A bare word is an industry, part of a name, or a region (公海 华东).
        in_region = await _in_region(industry, ctx)
        query = query.filter(Q(industry__icontains=industry) | Q(name__icontains=industry) | Q(id__in=in_region))
    total = await query.count()
    rows = await query.order_by("grade", "-updated_at", "id").offset((page - 1) * size).limit(size)
    if not rows:
        return Reply(
            "公海里没有符合条件的客户。" if page == 1 else f"公海只有 {total} 位符合条件的客户，没有第 {page} 页。"
        )
    pages = (total + size - 1) // size
    lines = [f"**公海客户**（共 {total} 位，第 {page}/{pages} 页）"]
    lines += [f"> {c.name}　{c.grade or '未分级'}级　{c.industry or '—'}" for c in rows]
    more = f"发送「公海 第{page + 1}页」看下一页；" if page < pages else ""
    lines.append(f"{more}发送「认领 客户名」认领。")
    return Reply.markdown("\n".join(lines))


async def _in_region(region: str, ctx: Context) -> list[int]:
    """The pool's customers in ``region`` (the custom field 地区, as leads and imports keep it)."""
    # SQLite's JSON paths compare keys as stored (escaped), so its keys are read through json_each.
    field = (
        "c.custom_fields->>'地区' = ?"
        if sql.is_postgres(ctx.conn)
        else "EXISTS (SELECT 1 FROM json_each(c.custom_fields) j WHERE j.key = '地区' AND j.value = ?)"
    )
    query = f"SELECT c.id FROM customer c WHERE c.owner_id IS NULL AND {field}"
    return [int(r["id"]) for r in await sql.select(ctx.conn or sql.default(), query, [region])]


def _day_start(ctx: Context) -> datetime:
    local = ctx.now.astimezone(ctx.settings.tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


async def _over_limits(ctx: Context, customer: Customer) -> Reply | None:
    """Why ``ctx.staff`` may not claim ``customer`` now (None: they may)."""
    pool, me = ctx.settings.pool, ctx.staff.id
    claims = PoolMove.filter(staff_id=me, action=CLAIM)
    if await claims.filter(at__gte=_day_start(ctx)).using_db(ctx.conn).count() >= pool.claims_per_day:
        return Reply(f"您今天已认领 {pool.claims_per_day} 位公海客户，达到每日上限，明天再来吧。")
    held = Customer.filter(owner_id=me, pool_moves__staff_id=me, pool_moves__action=CLAIM).distinct()
    if await held.using_db(ctx.conn).count() >= pool.max_held:
        return Reply(f"您名下从公海认领的客户已有 {pool.max_held} 位，达到上限。请先跟进或释放一些再认领。")
    since = ctx.now - timedelta(days=pool.cooldown_days)
    released = PoolMove.filter(staff_id=me, customer_id=customer.id, action=RELEASE, at__gt=since)
    if last := await released.using_db(ctx.conn).order_by("-at").first():
        until = (last.at + timedelta(days=pool.cooldown_days)).astimezone(ctx.settings.tz).strftime("%m-%d")
        return Reply(f"「{customer.name}」是您放入公海的，{pool.cooldown_days} 天内不能再认领（{until} 后可以）。")
    return None


async def _tell_manager(ctx: Context, text: str) -> None:
    manager = await Staff.filter(id=ctx.staff.manager_id or 0, active=True).using_db(ctx.conn).first()
    if manager is not None:
        await ctx.push(manager, text)


@capability.intent("pool_claim", examples=["认领 恒力液压"], order=71, customer=True)
async def pool_claim(msg: IncomingMessage, slots: Slots, ctx: Context) -> HandlerResult:
    """认领公海客户"""
    customer = ctx.customer
    if customer.owner_id == ctx.staff.id:
        return Reply(f"「{customer.name}」已经是您负责的客户了。")
    if customer.owner_id is not None:
        if ctx.staff.role != Role.REP:
            # A manager's 把X转给我 about a customer someone owns: a transfer to themselves, with its permissions.
            return await transfer(msg, {**slots, "to_staff": ctx.staff.name}, ctx)
        owner = await Staff.get(id=customer.owner_id)
        return Reply(f"「{customer.name}」由{owner.name}负责，不在公海，无法认领。如需接手，请找主管转给您。")
    if (limited := await _over_limits(ctx, customer)) is not None:
        return limited
    before = snapshot(customer)
    # Conditional on the customer still being in the pool: of two claims at once, exactly one updates the row.
    if (
        not await Customer.filter(id=customer.id, owner_id__isnull=True)
        .using_db(ctx.conn)
        .update(owner_id=ctx.staff.id)
    ):
        return Reply(f"手慢了一步，「{customer.name}」刚被同事认领了。")
    customer.owner_id = ctx.staff.id
    await PoolMove.create(customer_id=customer.id, staff_id=ctx.staff.id, action=CLAIM, at=ctx.now, using_db=ctx.conn)
    await ctx.audit("pool.claim", "customer", customer.id, before, snapshot(customer))
    await _tell_manager(ctx, f"{ctx.staff.name} 从公海认领了客户「{customer.name}」。")
    return Reply(f"认领成功！「{customer.name}」现在由您负责。发送「客户 {customer.name}」查看资料，记得尽快跟进。")


@capability.intent("pool_release", order=72, customer=True)
async def pool_release(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """把客户放入公海（负责人或主管可操作）"""
    customer = ctx.customer
    if customer.owner_id is None:
        return Reply(f"「{customer.name}」已经在公海里了。")
    if (refused := await refusal(ctx.staff, customer)) is not None:
        return refused
    if customer.owner_id != ctx.staff.id and ctx.staff.role == Role.REP:
        return Reply(f"只有负责人可以把「{customer.name}」放入公海。")
    owner = await Staff.get(id=customer.owner_id)
    before = snapshot(customer)
    if not await Customer.filter(id=customer.id, owner_id=owner.id).using_db(ctx.conn).update(owner_id=None):
        return Reply(f"「{customer.name}」的负责人刚刚变了，请重新查看。")
    customer.owner_id = None
    await PoolMove.create(customer_id=customer.id, staff_id=owner.id, action=RELEASE, at=ctx.now, using_db=ctx.conn)
    await ctx.audit("pool.release", "customer", customer.id, before, snapshot(customer))
    if owner.id != ctx.staff.id:
        await ctx.push(owner, f"{ctx.staff.name} 把您负责的客户「{customer.name}」放入了公海。")
    await _tell_manager(ctx, f"{ctx.staff.name} 把客户「{customer.name}」放入了公海。")
    return Reply(f"已把「{customer.name}」放入公海，同事可以认领。")

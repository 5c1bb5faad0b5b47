"""Changing customers from chat: create one, and move its stage, grade, tags or owner."""

from __future__ import annotations

import difflib
from datetime import UTC

from bot.access import refusal
from bot.context import Context, Slots
from bot.identity import find_staff
from bot.resolution import alias_holder
from bot.types import IncomingMessage, Reply
from handlers.customers.capability import capability
from handlers.customers.profile import snapshot
from models.customers import STAGE_LABELS, Customer, Stage
from models.staff import Role, Staff

STAGE_BY_LABEL = {label: stage for stage, label in STAGE_LABELS.items()}


@capability.intent("create_customer", examples=["新建客户 宁德时代"], order=11)
async def create_customer(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """新建客户（建档后归您负责）"""
    name = str(slots.get("customer") or "").strip()
    if not name:
        return Reply("请告诉我客户名称，例如「新建客户 宁德时代」。")
    if len(name) > 128:
        return Reply("客户名称太长了，请控制在 128 个字以内。")
    existing = await Customer.get_or_none(name=name) or await alias_holder(name)
    if existing is not None:
        return Reply(f"「{existing.name}」已经建过档了，发送「客户 {existing.name}」查看。")
    customer = await Customer.create(name=name, owner_id=ctx.staff.id, using_db=ctx.conn)
    await ctx.audit("create_customer", "customer", customer.id, None, snapshot(customer))
    ctx.bot.understanding.learn_customer(name, [])
    return Reply(f"已为您建档「{name}」，负责人：{ctx.staff.name}，阶段：潜在。发送「跟进 {name} …」记录跟进。")


def _stage_of(slots: Slots) -> Stage | None:
    raw = str(slots.get("stage") or "").strip()
    if raw in Stage.__members__.values():
        return Stage(raw)
    return STAGE_BY_LABEL.get(raw)


async def _known_stage(slots: Slots, ctx: Context) -> Reply | None:
    if _stage_of(slots) is None:
        return Reply("请说明要改成哪个阶段：" + "/".join(STAGE_LABELS.values()) + "。例如「阶段 华为 报价」。")
    return None


@capability.intent(
    "set_stage", examples=["阶段 华为 报价", "比亚迪 赢单了"], order=30, customer=True, check=_known_stage
)
async def set_stage(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """更新客户阶段（潜在/意向/方案/报价/谈判/成交/流失）"""
    stage = _stage_of(slots)
    assert stage is not None  # checked by _known_stage
    customer = ctx.customer
    if (refused := await refusal(ctx.staff, customer)) is not None:
        return refused
    before = snapshot(customer)
    if customer.stage == stage:
        return Reply(f"「{customer.name}」已经是「{STAGE_LABELS[stage]}」阶段了。")
    customer.stage = stage
    fields = ["stage", "updated_at"]
    if stage == Stage.WON:
        customer.won_at = ctx.now.astimezone(UTC)
        fields.append("won_at")
    await customer.save(using_db=ctx.conn, update_fields=fields)
    await ctx.audit("set_stage", "customer", customer.id, before, snapshot(customer))
    old = STAGE_LABELS[Stage(before["stage"])]
    extra = "，恭喜赢单！🎉" if stage == Stage.WON else "。"
    return Reply(f"「{customer.name}」阶段：{old} → {STAGE_LABELS[stage]}{extra}")


async def _known_grade(slots: Slots, ctx: Context) -> Reply | None:
    if str(slots.get("grade") or "").strip().upper() not in ("A", "B", "C"):
        return Reply("等级只能是 A、B 或 C，例如「等级 华为 A」。")
    return None


@capability.intent("set_grade", examples=["等级 华为 A"], order=31, customer=True, check=_known_grade)
async def set_grade(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """设置客户等级（A/B/C）"""
    grade = str(slots.get("grade") or "").strip().upper()
    customer = ctx.customer
    if (refused := await refusal(ctx.staff, customer)) is not None:
        return refused
    before = snapshot(customer)
    if customer.grade == grade:
        return Reply(f"「{customer.name}」已经是 {grade} 级客户了。")
    customer.grade = grade
    await customer.save(using_db=ctx.conn, update_fields=["grade", "updated_at"])
    await ctx.audit("set_grade", "customer", customer.id, before, snapshot(customer))
    return Reply(f"「{customer.name}」等级：{before['grade'] or '—'} → {grade}。")


def _tags(slots: Slots, key: str) -> list[str]:
    return [str(t).strip() for t in slots.get(key) or [] if str(t).strip()]


async def _tags_given(slots: Slots, ctx: Context) -> Reply | None:
    add, remove = _tags(slots, "add"), _tags(slots, "remove")
    if not add and not remove:
        return Reply("请说明要加或去掉的标签，例如「标签 华为 +重点 -新能源」。")
    if any(len(t) > 32 for t in add):
        return Reply("标签太长了，每个标签请控制在 32 个字以内。")
    return None


@capability.intent(
    "tag", examples=["标签 华为 +重点 -新能源", "给华为打上重点客户标签"], order=32, customer=True, check=_tags_given
)
async def tag(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """给客户加/去标签"""
    add, remove = _tags(slots, "add"), _tags(slots, "remove")
    customer = ctx.customer
    if (refused := await refusal(ctx.staff, customer)) is not None:
        return refused
    before = snapshot(customer)
    tags = [t for t in customer.tags or [] if t not in remove]
    tags.extend(t for t in add if t not in tags)
    if tags == list(customer.tags or []):
        return Reply(f"「{customer.name}」的标签没有变化：{'、'.join(tags) or '—'}。")
    customer.tags = tags
    await customer.save(using_db=ctx.conn, update_fields=["tags", "updated_at"])
    await ctx.audit("tag", "customer", customer.id, before, snapshot(customer))
    return Reply(f"「{customer.name}」的标签：{'、'.join(tags) or '—'}。")


async def _known_colleague(slots: Slots, ctx: Context) -> Reply | None:
    target_name = str(slots.get("to_staff") or "").strip()
    if await find_staff(target_name) is not None:
        return None
    names = [str(n) for n in await Staff.filter(active=True).values_list("name", flat=True)]
    close = difflib.get_close_matches(target_name, names, n=3, cutoff=0.3)
    hint = f"您是不是要找：{'、'.join(close)}？" if close else "请写同事的姓名，例如「把华为转给李四」。"
    return Reply(f"没有找到同事「{target_name}」。{hint}")


@capability.intent("transfer", examples=["把金风科技转给李四跟进"], order=33, customer=True, check=_known_colleague)
async def transfer(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """把客户转给其他同事（负责人或主管可操作）"""
    target = await find_staff(str(slots.get("to_staff") or ""))
    assert target is not None  # checked by _known_colleague
    customer = ctx.customer
    staff = ctx.staff
    owner = await Staff.get_or_none(id=customer.owner_id) if customer.owner_id else None
    allowed = staff.role in (Role.ADMIN, Role.DIRECTOR) or customer.owner_id == staff.id
    if not allowed and staff.role == Role.MANAGER:
        allowed = owner is None or owner.manager_id == staff.id
    if not allowed:
        who = f"负责人是{owner.name}" if owner else "它在公海"
        return Reply(f"「{customer.name}」的{who}，只有负责人本人或其主管可以转交。")
    if customer.owner_id == target.id:
        return Reply(f"「{customer.name}」已经由{target.name}负责了。")
    before = snapshot(customer)
    customer.owner_id = target.id
    await customer.save(using_db=ctx.conn, update_fields=["owner_id", "updated_at"])
    await ctx.audit("transfer", "customer", customer.id, before, snapshot(customer))
    if target.id != staff.id:
        await ctx.push(
            target, f"{staff.name} 把客户「{customer.name}」转给了您负责，发送「客户 {customer.name}」查看资料。"
        )
    if owner is not None and owner.id not in (staff.id, target.id):
        await ctx.push(owner, f"{staff.name} 把您负责的客户「{customer.name}」转给了{target.name}。")
    return Reply(f"已把「{customer.name}」从{owner.name if owner else '公海'}转给{target.name}。")

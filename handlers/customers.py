"""Customers: finding the customer a rep means, the profile card, and changing owner, stage, grade and tags.

Resolution goes exact name → alias → prefix (恒力液压 → 恒力液压有限公司) → short form / contained → fuzzy.
Several matches → a numbered question stored in the database (``PendingChoice``), answered by replying "2".
Permissions: a rep acts on own customers (and the public pool), a manager on the team's, directors and admins
on all; every change is written to the audit log with before and after.
"""

from __future__ import annotations

import difflib
import importlib
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.intents import Context, IntentRouter, Slots
from bot.nlu.vocabulary import short_forms
from bot.types import IncomingMessage, Reply
from models.customers import STAGE_LABELS, Customer, PendingChoice, Stage
from models.messages import Message
from models.staff import Role, Staff
from models.tickets import TICKET_STATUS_LABELS, Ticket, TicketStatus

router = IntentRouter()

LATEST_MESSAGES = 3
CHOICE_TTL = timedelta(minutes=30)
STAGE_BY_LABEL = {label: stage for stage, label in STAGE_LABELS.items()}


# -- who may see and change what ---------------------------------------------------------------------------------


async def visible_to(staff: Staff, customer: Customer) -> bool:
    """A rep sees own customers and the public pool, a manager the team's, directors and admins all."""
    if staff.role in (Role.ADMIN, Role.DIRECTOR) or customer.owner_id in (None, staff.id):
        return True
    if staff.role == Role.MANAGER:
        return await Staff.filter(id=customer.owner_id, manager_id=staff.id).exists()
    return False


async def refusal(staff: Staff, customer: Customer) -> Reply | None:
    """None when ``staff`` may change ``customer``; otherwise a reply that says why not."""
    if await visible_to(staff, customer):
        return None
    owner = await Staff.get_or_none(id=customer.owner_id) if customer.owner_id else None
    who = f"由{owner.name}负责" if owner else "不在您的名下"
    if staff.role == Role.REP:
        return Reply(f"「{customer.name}」{who}，销售只能操作自己名下的客户。如需接手，请找主管转给您。")
    return Reply(f"「{customer.name}」{who}，不在您的团队，无法操作。")


# -- finding the customer ----------------------------------------------------------------------------------------


async def _all_names() -> list[tuple[int, str, list[str]]]:
    return [(int(i), str(n), list(a or [])) for i, n, a in await Customer.all().values_list("id", "name", "aliases")]


async def lookup_customer(name: str) -> tuple[Customer | None, list[str]]:
    """(customer, []) when ``name`` means exactly one; (None, several names) when ambiguous; (None, []) if none."""
    name = name.strip()
    if not name:
        return None, []
    if customer := await Customer.get_or_none(name=name):
        return customer, []
    rows = await _all_names()
    for stage in (
        lambda n, a: name in a,  # alias
        lambda n, a: n.startswith(name),  # prefix
        lambda n, a: name in short_forms(n) or any(x.startswith(name) for x in a),  # 恒力 → 恒力液压有限公司
        lambda n, a: name in n,  # contained
    ):
        hits = [(i, n) for i, n, a in rows if stage(n, a)]
        if len(hits) == 1:
            return await Customer.get(id=hits[0][0]), []
        if hits:
            return None, sorted(n for _, n in hits)[:9]
    return None, []


async def find_customer(name: str) -> tuple[Customer | None, list[str]]:
    """The customer named (exactly, by alias or by unique prefix), or None and up to five close names."""
    customer, several = await lookup_customer(name)
    if customer is not None:
        return customer, []
    return None, several[:5] if several else await close_names(name)


async def close_names(name: str, limit: int = 5) -> list[str]:
    """Stored customer names closest to ``name`` (by name or alias, sequence similarity)."""
    scored: list[tuple[float, str]] = []
    for _, stored, aliases in await _all_names():
        best = max(difflib.SequenceMatcher(None, name, s).ratio() for s in (stored, *aliases, *short_forms(stored)))
        if best >= 0.34:
            scored.append((-best, stored))
    return [s for _, s in sorted(scored)[:limit]]


def not_found(name: str, suggestions: list[str]) -> Reply:
    if suggestions:
        return Reply(f"没有找到客户「{name}」。您是不是要找：" + "、".join(suggestions) + "？")
    return Reply(f"没有找到客户「{name}」。可以发送「新建客户 {name}」先建档。")


async def resolve(ctx: Context, slots: Slots, intent: str) -> Customer | Reply:
    """The customer in ``slots``, or the reply to send instead: not found (close matches) or a numbered choice."""
    name = str(slots.get("customer") or "").strip()
    if not name:
        return Reply("请告诉我是哪个客户，例如「客户 华为」。")
    customer, several = await lookup_customer(name)
    if customer is not None:
        return customer
    if not several:
        return not_found(name, await close_names(name))
    await PendingChoice.filter(staff_id=ctx.staff.id).using_db(ctx.conn).delete()
    await PendingChoice.create(
        staff_id=ctx.staff.id,
        intent=intent,
        slots=dict(slots),
        slot="customer",
        options=several,
        expires_at=ctx.now.astimezone(UTC) + CHOICE_TTL,
        using_db=ctx.conn,
    )
    lines = [f"「{name}」对应多个客户，您指的是哪一个？请回复序号："]
    lines.extend(f"{i}. {option}" for i, option in enumerate(several, 1))
    return Reply("\n".join(lines))


def local(dt: object, tz: ZoneInfo) -> str:
    if not isinstance(dt, datetime):
        return "—"
    return dt.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def snapshot(customer: Customer) -> dict[str, Any]:
    return {
        "name": customer.name,
        "owner_id": customer.owner_id,
        "stage": str(customer.stage),
        "grade": customer.grade,
        "tags": list(customer.tags or []),
    }


# -- the profile card --------------------------------------------------------------------------------------------


async def _latest_nps(customer_id: int) -> str | None:
    """The latest NPS answer, when the NPS feature is installed (looked up, not imported, so this works without)."""
    try:
        module = importlib.import_module("models.nps")
    except ImportError:
        return None
    survey = getattr(module, "Survey", None)
    if survey is None:
        return None
    row = await survey.filter(customer_id=customer_id, score__isnull=False).order_by("-answered_at").first()
    if row is None:
        return None
    return f"{row.score} 分（{row.answered_at.strftime('%Y-%m-%d') if row.answered_at else ''}）"


@router.intent("show_customer", examples=["客户 华为", "华为怎么样了"], order=10)
async def show_customer(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看客户资料卡"""
    found = await resolve(ctx, slots, "show_customer")
    if isinstance(found, Reply):
        return found
    customer = found
    if not await visible_to(ctx.staff, customer):
        return Reply(f"「{customer.name}」不是您或您团队的客户，无法查看。")
    await customer.fetch_related("owner", "contacts")
    tz = ctx.settings.tz
    lines = [
        f"【{customer.name}】" + (f"（{'、'.join(customer.aliases)}）" if customer.aliases else ""),
        f"负责人：{customer.owner.name if customer.owner else '公海'}",
        f"阶段：{STAGE_LABELS[Stage(customer.stage)]}　等级：{customer.grade or '—'}",
        f"标签：{'、'.join(customer.tags) if customer.tags else '—'}",
        f"最近跟进：{local(customer.last_followup_at, tz)}　下次跟进：{local(customer.next_followup_at, tz)}",
    ]
    if customer.industry:
        lines.insert(2, f"行业：{customer.industry}")
    for contact in customer.contacts:
        lines.append(f"联系人：{contact.name} {contact.role} {contact.phone}".rstrip())
    open_tickets = (
        await Ticket.filter(customer_id=customer.id, status__in=[TicketStatus.OPEN, TicketStatus.IN_PROGRESS])
        .order_by("-created_at")
        .limit(5)
    )
    if open_tickets:
        lines.append("未结工单：")
        lines.extend(
            f"  #{t.id} {TICKET_STATUS_LABELS[TicketStatus(t.status)]} {'【紧急】' if t.priority == 'urgent' else ''}"
            f"{t.title}"
            for t in open_tickets
        )
    else:
        lines.append("未结工单：无")
    if nps := await _latest_nps(customer.id):
        lines.append(f"最近 NPS：{nps}")
    signal = (customer.custom_fields or {}).get(ctx.settings.keywords.buying_signal_field)
    if isinstance(signal, dict) and signal.get("at"):
        lines.append(f"购买信号：{signal.get('at')} {signal.get('words', '')}".rstrip())
    from models.followups import FollowUp

    last = await FollowUp.filter(customer_id=customer.id).order_by("-created_at").first()
    if last is not None:
        lines.append(f"最近跟进记录：{local(last.created_at, tz)} {last.content[:60]}")
    recent = await Message.filter(customer_id=customer.id, to_bot=False).order_by("-sent_at").limit(LATEST_MESSAGES)
    if recent:
        lines.append("最近消息：")
        lines.extend(f"  {local(m.sent_at, tz)} {m.text[:60]}" for m in recent)
    return Reply("\n".join(lines))


# -- changes -----------------------------------------------------------------------------------------------------


@router.intent("create_customer", examples=["新建客户 宁德时代"], order=11)
async def create_customer(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """新建客户（建档后归您负责）"""
    name = str(slots.get("customer") or "").strip()
    if not name:
        return Reply("请告诉我客户名称，例如「新建客户 宁德时代」。")
    if len(name) > 128:
        return Reply("客户名称太长了，请控制在 128 个字以内。")
    existing = await Customer.get_or_none(name=name)
    if existing is None:
        alias_of = [cid for cid, _, aliases in await _all_names() if name in aliases]
        existing = await Customer.get(id=alias_of[0]) if alias_of else None
    if existing is not None:
        return Reply(f"「{existing.name}」已经建过档了，发送「客户 {existing.name}」查看。")
    customer = await Customer.create(name=name, owner_id=ctx.staff.id, using_db=ctx.conn)
    await ctx.audit("create_customer", "customer", customer.id, None, snapshot(customer))
    ctx.bot.understanding.learn_customer(name, [])
    return Reply(f"已为您建档「{name}」，负责人：{ctx.staff.name}，阶段：潜在。发送「跟进 {name} …」记录跟进。")


async def _changeable(ctx: Context, slots: Slots, intent: str) -> Customer | Reply:
    found = await resolve(ctx, slots, intent)
    if isinstance(found, Reply):
        return found
    if (refused := await refusal(ctx.staff, found)) is not None:
        return refused
    return found


@router.intent("set_stage", examples=["阶段 华为 报价", "比亚迪 赢单了"], order=30)
async def set_stage(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """更新客户阶段（潜在/意向/方案/报价/谈判/成交/流失）"""
    raw = str(slots.get("stage") or "").strip()
    try:
        stage = Stage(raw) if raw in Stage.__members__.values() else STAGE_BY_LABEL[raw]
    except KeyError:
        return Reply("请说明要改成哪个阶段：" + "/".join(STAGE_LABELS.values()) + "。例如「阶段 华为 报价」。")
    found = await _changeable(ctx, slots, "set_stage")
    if isinstance(found, Reply):
        return found
    customer = found
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


@router.intent("set_grade", examples=["等级 华为 A"], order=31)
async def set_grade(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """设置客户等级（A/B/C）"""
    grade = str(slots.get("grade") or "").strip().upper()
    if grade not in ("A", "B", "C"):
        return Reply("等级只能是 A、B 或 C，例如「等级 华为 A」。")
    found = await _changeable(ctx, slots, "set_grade")
    if isinstance(found, Reply):
        return found
    customer = found
    before = snapshot(customer)
    if customer.grade == grade:
        return Reply(f"「{customer.name}」已经是 {grade} 级客户了。")
    customer.grade = grade
    await customer.save(using_db=ctx.conn, update_fields=["grade", "updated_at"])
    await ctx.audit("set_grade", "customer", customer.id, before, snapshot(customer))
    return Reply(f"「{customer.name}」等级：{before['grade'] or '—'} → {grade}。")


@router.intent("tag", examples=["标签 华为 +重点 -新能源", "给华为打上重点客户标签"], order=32)
async def tag(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """给客户加/去标签"""
    add = [str(t).strip() for t in slots.get("add") or [] if str(t).strip()]
    remove = [str(t).strip() for t in slots.get("remove") or [] if str(t).strip()]
    if not add and not remove:
        return Reply("请说明要加或去掉的标签，例如「标签 华为 +重点 -新能源」。")
    if any(len(t) > 32 for t in add):
        return Reply("标签太长了，每个标签请控制在 32 个字以内。")
    found = await _changeable(ctx, slots, "tag")
    if isinstance(found, Reply):
        return found
    customer = found
    before = snapshot(customer)
    tags = [t for t in customer.tags or [] if t not in remove]
    tags.extend(t for t in add if t not in tags)
    if tags == list(customer.tags or []):
        return Reply(f"「{customer.name}」的标签没有变化：{'、'.join(tags) or '—'}。")
    customer.tags = tags
    await customer.save(using_db=ctx.conn, update_fields=["tags", "updated_at"])
    await ctx.audit("tag", "customer", customer.id, before, snapshot(customer))
    return Reply(f"「{customer.name}」的标签：{'、'.join(tags) or '—'}。")


async def find_staff_named(name: str) -> Staff | None:
    name = name.strip()
    if not name:
        return None
    return (
        await Staff.filter(active=True, name=name).first()
        or await Staff.filter(active=True, wecom_userid=name).first()
        or await Staff.filter(active=True, dingtalk_userid=name).first()
    )


@router.intent("transfer", examples=["把金风科技转给李四跟进"], order=33)
async def transfer(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """把客户转给其他同事（负责人或主管可操作）"""
    target_name = str(slots.get("to_staff") or "").strip()
    target = await find_staff_named(target_name)
    if target is None:
        names = [str(n) for n in await Staff.filter(active=True).values_list("name", flat=True)]
        close = difflib.get_close_matches(target_name, names, n=3, cutoff=0.3)
        hint = f"您是不是要找：{'、'.join(close)}？" if close else "请写同事的姓名，例如「把华为转给李四」。"
        return Reply(f"没有找到同事「{target_name}」。{hint}")
    found = await resolve(ctx, slots, "transfer")
    if isinstance(found, Reply):
        return found
    customer = found
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

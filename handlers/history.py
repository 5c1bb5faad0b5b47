"""The history of changes, readable and reversible: ``撤销`` takes back the sender's own last change (from the
audit row's before and after, within ``[rules] undo_window_minutes``), and ``操作记录 华为`` / ``谁改了华为的阶段``
list who changed what about a customer, within the reader's data scope. ``crmbot audit`` reads the same rows.

An undo is refused, with the reason, when the changed record has changed since (someone, or a rule, changed it
afterwards), when the window has passed, when the last change cannot be taken back (an approval decision), or
when there is nothing to undo. An undo is itself audited (``undo_of`` names the row it reverted) and is never
undone in turn: a second 撤销 takes back the change before it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tortoise.queryset import QuerySet

from bot.access import visible_to
from bot.audit import UNDO
from bot.capability import Capability
from bot.context import Context, Slots
from bot.display import local
from bot.identity import Directory
from bot.nlu.reading import Reading, Result
from bot.types import IncomingMessage, Reply
from handlers.approvals.workflow import withdraw as withdraw_request
from handlers.customers.edits import contact_state, shown
from handlers.customers.profile import CUSTOM, FIELD_LABELS, field_value, restore_fields, same_value
from handlers.pipeline import deals
from models.approvals import APPROVAL_STATUS_LABELS, Approval, ApprovalStatus
from models.audit import AuditLog
from models.customers import STAGE_LABELS, Contact, Customer, Stage
from models.followups import FollowUp
from models.messages import Message
from models.opportunities import Opportunity, follow_ups_move_deals
from models.reminders import Reminder
from models.staff import Staff
from models.tickets import TICKET_STATUS_LABELS, Ticket, TicketStatus

capability = Capability("history")

SHOWN = 10  # rows a chat answer lists
SCAN = 50  # how far back one person's rows are read to find their last change
# Rows that record a refusal, a repeat or what followed from a change rather than a change: 撤销 looks past them
# (a customer's stage following its deals is taken back with the deal's move).
NOT_CHANGES = frozenset(
    {"approval.click_refused", "approval.refused", "approval.duplicate", "customer.stage_from_deals"}
)
ACTION_LABELS = {
    "buying_signal": "识别到购买信号",
    "customer.handover": "移交客户",
    "customer.tag": "打标签",
    "customer.discount": "记录折扣结果",
    "ticket.escalate": "工单超时升级",
    "create": "导入新建",
    "update": "导入更新",
}
CONTACT_LABELS = {"name": "姓名", "phone": "电话", "title": "职位", "role": "角色"}
# The words for a field in 谁改了华为的阶段 / 操作记录 华为 阶段 (contacts, follow-ups and tickets as a whole).
FIELD_WORDS = {label: key for key, label in FIELD_LABELS.items()} | {
    "合同": "contract_end",
    "合同到期日": "contract_end",
    "联系人": "contacts",
    "电话": "contacts",
    "跟进": "follow_up",
    "跟进记录": "follow_up",
    "工单": "tickets",
}


class CannotUndo(Exception):
    """Why this change cannot be taken back (said to the person as is)."""


# -- recognition -----------------------------------------------------------------------------------------------------

_UNDO = re.compile(
    r"^(?:撤销|撤回|undo)(?:一下)?(?:上一步|上一个操作|上一条|刚才的?(?:操作|修改)?)?(?:操作)?[。.!！]?$", re.I
)
_HISTORY_WORDS = r"操作记录|修改记录|变更记录|改动记录"
_HISTORY = re.compile(rf"^(?:{_HISTORY_WORDS})(?:\s+|[:：]|(?=\S))")
_WHO_CHANGED = re.compile(r"谁(?:改了|改的|动了|动的|修改了|修改的|变更了|调了)|是谁(?:改|动|修改)")


@capability.command(_UNDO, order=5)
def undo_command(r: Reading, rest: str) -> Result:
    return "undo", {}


def _field_slot(text: str) -> Slots:
    """``{"field": …}`` for the field a history request names (阶段 → stage, 付款方式 → custom:付款方式)."""
    word = re.sub(rf"^[\s的]+|(?:的)?(?:{_HISTORY_WORDS})|[?？。\s]+$", "", text).strip()
    word = re.sub(r"^(?:的)|(?:是谁(?:改|动|修改)的?|谁(?:改|动|修改)的?)$", "", word).strip()
    if not word:
        return {}
    return {"field": FIELD_WORDS.get(word, f"{CUSTOM}{word}")}


@capability.command(_HISTORY, order=135)
def history_command(r: Reading, rest: str) -> Result:
    slots, leftover = r.split_customer(rest)
    return "history", {**slots, **_field_slot(leftover)}


@capability.phrase(order=8)
def history_phrase(r: Reading) -> Result | None:
    """谁改了华为的阶段 · 华为的阶段是谁改的 · 华为的操作记录"""
    text = r.text
    who = _WHO_CHANGED.search(text)
    if who is None and not re.search(_HISTORY_WORDS, text):
        return None
    mentions = r.customers
    if not mentions:
        return None
    rest = text[mentions[0].end :]
    if who is not None and who.start() >= mentions[0].end:
        rest = text[mentions[0].end : who.start()]
    return "history", {**r.customer_slot(text), **_field_slot(rest)}


# -- undo ------------------------------------------------------------------------------------------------------------


async def last_change(staff: Staff, ctx: Context) -> AuditLog | None:
    """``staff``'s latest change that no undo took back (undos, and what an undo itself wrote, are passed over)."""
    rows = await AuditLog.filter(actor_id=staff.id).using_db(ctx.conn).order_by("-id").limit(SCAN)
    undone: set[int] = set()
    undo_sources: set[str] = set()
    for row in rows:
        if row.action == UNDO:
            undone.add(int(row.undo_of or 0))
            undo_sources.add(row.source)
        elif row.id not in undone and row.source not in undo_sources and row.action not in NOT_CHANGES:
            return row
    return None


@capability.intent("undo", order=95)
async def undo(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """撤销您自己的上一步修改（限时）

    Not listed in the help on its own: every reply to a change says how, and the history's help line mentions it.
    """
    row = await last_change(ctx.staff, ctx)
    if row is None:
        return Reply("没有可以撤销的操作。")
    book = await Book.load(ctx.bot.directory, ctx.settings.tz, [row])
    what = book.describe(row)
    window = ctx.settings.rules.undo_window_minutes
    undoer = UNDOERS.get(row.action)
    if undoer is None:
        return Reply(f"您的上一步「{what}」不能撤销。")
    if ctx.now - row.created_at > timedelta(minutes=window):
        return Reply(f"您的上一步「{what}」已超过 {window} 分钟的撤销时限，不能撤销了；如需修改，请直接发新的指令。")
    try:
        done = await undoer(row, ctx, book)
    except CannotUndo as refused:
        return Reply(f"不能撤销「{what}」：{refused}")
    await ctx.audit(UNDO, row.entity, row.entity_id, row.after, row.before, customer_id=row.customer_id, undo_of=row.id)
    return Reply(f"已撤销：{done}")


Undoer = Callable[[AuditLog, Context, "Book"], Awaitable[str]]


async def _customer_of(row: AuditLog, ctx: Context) -> Customer:
    customer = await Customer.filter(id=row.customer_id or 0).using_db(ctx.conn).first()
    if customer is None:
        raise CannotUndo("这个客户已经不在了。")
    return customer


async def _changed_by(row: AuditLog, key: str) -> str:
    """Who changed ``key`` of the row's customer after ``row`` (the latest such row's actor)."""
    later = await AuditLog.filter(customer_id=row.customer_id, id__gt=row.id).order_by("-id").limit(SCAN)
    for other in later:
        if key in (other.after or {}):
            return other.actor_name
    return "别人"


async def _unchanged_since(row: AuditLog, customer: Customer, keys: list[str], book: Book) -> None:
    for key in keys:
        now_value = field_value(customer, key)
        if not same_value(now_value, (row.after or {}).get(key)):
            who = await _changed_by(row, key)
            label = FIELD_LABELS.get(key, key.removeprefix(CUSTOM))
            raise CannotUndo(
                f"「{customer.name}」的{label}之后又被{who}改成了「{book.value(key, now_value)}」。"
                "如需修改，请直接发新的指令。"
            )


async def _undo_customer_fields(row: AuditLog, ctx: Context, book: Book) -> str:
    """Stage, grade, tags, owner and profile fields: back to the values before the change."""
    customer = await _customer_of(row, ctx)
    before, after = row.before or {}, row.after or {}
    keys = [k for k in after if not same_value(before.get(k), after.get(k))]
    await _unchanged_since(row, customer, keys, book)
    await restore_fields(customer, {k: before.get(k) for k in keys}, ctx.conn)
    restored = "、".join(book.value(k, before.get(k)) for k in keys if book.label(k))
    back = "已清空" if all(before.get(k) in (None, "", []) for k in keys) else f"已恢复为「{restored}」"
    return f"{customer.name} {book.describe(row)}，{back}"


async def _undo_follow_up(row: AuditLog, ctx: Context, book: Book) -> str:
    """The follow-up goes; the customer's last and next follow-up times are as they were."""
    customer = await _customer_of(row, ctx)
    before, after = row.before or {}, row.after or {}
    keys = ["last_followup_at", "next_followup_at"]
    for key in keys:
        if not same_value(field_value(customer, key), after.get(key)):
            raise CannotUndo(f"「{customer.name}」之后又有了新的跟进，请直接补充或更正。")
    await FollowUp.filter(id=after.get("followup_id")).using_db(ctx.conn).delete()
    await restore_fields(customer, {k: before.get(k) for k in keys}, ctx.conn)
    await follow_ups_move_deals(customer.id, customer.last_followup_at, ctx.conn)
    return f"{customer.name} 的跟进「{str(after.get('content', ''))[:40]}」，这条跟进已删除，跟进时间已恢复"


async def _undo_create_customer(row: AuditLog, ctx: Context, book: Book) -> str:
    """A customer created by mistake goes, as long as nothing hangs on it yet."""
    customer = await _customer_of(row, ctx)
    await _unchanged_since(row, customer, ["name", "owner_id", "stage", "grade", "tags"], book)
    for model in (FollowUp, Ticket, Approval, Reminder, Message, Contact, Opportunity):
        if await model.filter(customer_id=customer.id).using_db(ctx.conn).exists():
            raise CannotUndo(f"「{customer.name}」建档后已经有了跟进、工单、商机、联系人或消息，不能撤销建档。")
    await Customer.filter(id=customer.id).using_db(ctx.conn).delete()
    return f"新建客户「{customer.name}」，已删除这个客户"


async def _ticket_of(row: AuditLog, ctx: Context) -> Ticket:
    ticket = await Ticket.filter(id=int(row.entity_id)).using_db(ctx.conn).select_for_update().first()
    if ticket is None:
        raise CannotUndo(f"工单 #{row.entity_id} 已经不在了。")
    return ticket


async def _undo_create_ticket(row: AuditLog, ctx: Context, book: Book) -> str:
    """A ticket nobody has touched yet is cancelled (deleted); its assignee is told."""
    ticket = await _ticket_of(row, ctx)
    if ticket.status != TicketStatus.OPEN or ticket.first_responded_at is not None:
        raise CannotUndo(
            f"工单 #{ticket.id} 已经有人处理了（{TICKET_STATUS_LABELS[TicketStatus(ticket.status)]}），"
            f"如需关闭请发「关闭工单 #{ticket.id}」。"
        )
    await Ticket.filter(id=ticket.id).using_db(ctx.conn).delete()
    if ticket.assignee_id and ticket.assignee_id != ctx.staff.id:
        assignee = await Staff.get_or_none(id=ticket.assignee_id)
        if assignee is not None:
            await ctx.push(assignee, f"工单 #{ticket.id}（{ticket.title}）已被{ctx.staff.name}撤销，无需处理。")
    return f"工单 #{ticket.id}（{ticket.title}），已取消"


_TICKET_MOMENTS = ("first_responded_at", "resolved_at", "revisit_due", "closed_at")


async def _undo_update_ticket(row: AuditLog, ctx: Context, book: Book) -> str:
    """The ticket's status, times and notes as they were before the update."""
    ticket = await _ticket_of(row, ctx)
    before, after = row.before or {}, row.after or {}
    now = {
        "status": str(ticket.status),
        "resolution": ticket.resolution,
        "description": ticket.description,
        **{k: getattr(ticket, k).isoformat() if getattr(ticket, k) else None for k in _TICKET_MOMENTS},
    }
    if any(not same_value(value, after.get(key)) for key, value in now.items()):
        raise CannotUndo(f"工单 #{ticket.id} 之后又被更新过，请直接发新的状态。")
    ticket.status = TicketStatus(before["status"])
    ticket.resolution = before.get("resolution", ticket.resolution)
    ticket.description = before.get("description", ticket.description)
    for key in _TICKET_MOMENTS:
        setattr(ticket, key, datetime.fromisoformat(before[key]) if before.get(key) else None)
    await ticket.save(using_db=ctx.conn)
    return f"{book.describe(row)}，已恢复为「{TICKET_STATUS_LABELS[TicketStatus(before['status'])]}」"


async def _undo_reminder(row: AuditLog, ctx: Context, book: Book) -> str:
    """A reminder not yet sent is cancelled."""
    reminder = await Reminder.filter(id=int(row.entity_id)).using_db(ctx.conn).first()
    if reminder is None:
        raise CannotUndo("这个提醒已经不在了。")
    if reminder.fired_at is not None:
        raise CannotUndo("这个提醒已经发出了。")
    await Reminder.filter(id=reminder.id).using_db(ctx.conn).delete()
    return f"{book.describe(row)}，已取消"


async def _undo_request(row: AuditLog, ctx: Context, book: Book) -> str:
    """A discount request still waiting is withdrawn (the approver is told); a decided one stays."""
    approval = await Approval.filter(id=int(row.entity_id.removeprefix("AP"))).using_db(ctx.conn).first()
    if approval is None:
        raise CannotUndo(f"审批单 {row.entity_id} 已经不在了。")
    if approval.status != ApprovalStatus.PENDING:
        raise CannotUndo(f"{approval.code} {APPROVAL_STATUS_LABELS[ApprovalStatus(approval.status)]}，审批已有结果。")
    told = await withdraw_request(ctx, approval.id)
    if await Approval.filter(id=approval.id, status=ApprovalStatus.WITHDRAWN).using_db(ctx.conn).exists():
        return f"{book.describe(row)}，{told.removeprefix('已')}"
    raise CannotUndo(told)


async def _undo_contact(row: AuditLog, ctx: Context, book: Book) -> str:
    """A contact added is removed; a contact changed gets its earlier phone, title and role back."""
    contact = await Contact.filter(id=int(row.entity_id)).using_db(ctx.conn).first()
    if contact is None:
        raise CannotUndo("这个联系人已经不在了。")
    if contact_state(contact) != row.after:
        raise CannotUndo(f"联系人「{contact.name}」之后又被改过了。")
    if row.before is None:
        await Contact.filter(id=contact.id).using_db(ctx.conn).delete()
        return f"{book.describe(row)}，已删除"
    for key, value in row.before.items():
        setattr(contact, key, value)
    await contact.save(using_db=ctx.conn)
    return f"{book.describe(row)}，已恢复"


async def _undo_deal_move(row: AuditLog, ctx: Context, book: Book) -> str:
    """A deal moved to the wrong stage goes back to the stage it left, as long as it has not moved since."""
    opp = await Opportunity.filter(id=int(row.entity_id)).using_db(ctx.conn).select_for_update().first()
    if opp is None:
        raise CannotUndo("这个商机已经不在了。")
    before, after = row.before or {}, row.after or {}
    actor = deals.Actor(ctx.staff, ctx.msg.platform)
    if str(opp.stage) != after.get("stage") or not await deals.unmove(
        opp, before, now=ctx.now, actor=actor, conn=ctx.conn
    ):
        raise CannotUndo(f"商机「{opp.name}」之后又推进过了，请直接发新的阶段。")
    old, new = (STAGE_LABELS[Stage(str(s))] for s in (after.get("stage"), before.get("stage")))
    return f"商机「{opp.name}」阶段 {old}，已恢复为「{new}」"


UNDOERS: dict[str, Undoer] = {
    "set_stage": _undo_customer_fields,
    "set_grade": _undo_customer_fields,
    "tag": _undo_customer_fields,
    "transfer": _undo_customer_fields,
    "set_field": _undo_customer_fields,
    "follow_up": _undo_follow_up,
    "create_customer": _undo_create_customer,
    "create_ticket": _undo_create_ticket,
    "update_ticket": _undo_update_ticket,
    "reminder.create": _undo_reminder,
    "approval.request": _undo_request,
    "set_contact": _undo_contact,
    "set_opportunity_stage": _undo_deal_move,
}


# -- reading the history ---------------------------------------------------------------------------------------------


class Book:
    """Audit rows as people read them: names for staff ids, platform names, local times, the rows undos took back."""

    def __init__(self, tz: ZoneInfo, staff: dict[int, str], platforms: dict[str, str], undone: dict[int, AuditLog]):
        self.tz, self.staff, self.platforms, self.undone = tz, staff, platforms, undone

    @staticmethod
    async def load(directory: Directory, tz: ZoneInfo, rows: list[AuditLog]) -> Book:
        staff = {int(i): str(n) for i, n in await Staff.all().values_list("id", "name")}
        platforms = {}
        for row in rows:
            identity = directory.get(row.platform)
            platforms[row.platform] = identity.label if identity is not None and identity.label else row.platform
        targets = [int(r.undo_of) for r in rows if r.undo_of]
        undone = {r.id: r for r in await AuditLog.filter(id__in=targets)} if targets else {}
        return Book(tz, staff, platforms, undone)

    def label(self, key: str) -> str:
        return FIELD_LABELS.get(key, key.removeprefix(CUSTOM) if key.startswith(CUSTOM) else "")

    def value(self, key: str, value: Any) -> str:
        if key == "owner_id":
            return self.staff.get(int(value), "—") if value else "公海"
        if key == "stage" and value:
            return STAGE_LABELS[Stage(value)]
        return shown(value)

    def when(self, row: AuditLog) -> str:
        return local(row.created_at, self.tz)

    def platform(self, row: AuditLog) -> str:
        return self.platforms.get(row.platform, row.platform) or "系统"

    def describe(self, row: AuditLog) -> str:
        """What the row changed, in one short line: 阶段 报价 → 方案, 记录跟进：…, 开工单 #12：…"""
        before, after = row.before or {}, row.after or {}
        if row.action == UNDO:
            target = self.undone.get(int(row.undo_of or 0))
            return f"撤销了「{self.describe(target)}」" if target is not None else "撤销了一步操作"
        if (special := self._special(row, before, after)) is not None:
            return special
        parts = [
            f"{self.label(k)} {self.value(k, before.get(k))} → {self.value(k, after.get(k))}"
            for k in after
            if self.label(k) and not same_value(before.get(k), after.get(k))
        ]
        return "，".join(parts) or ACTION_LABELS.get(row.action, row.action)

    def _special(self, row: AuditLog, before: dict[str, Any], after: dict[str, Any]) -> str | None:
        action, ref = row.action, row.entity_id
        if action == "create_customer":
            return f"新建客户「{after.get('name', '')}」"
        if action == "follow_up":
            return f"记录跟进：{str(after.get('content', ''))[:40]}"
        if action == "create_ticket":
            return f"开工单 #{ref}" + (f"：{after['title']}" if after.get("title") else "")
        if action == "update_ticket":
            old, new = (TICKET_STATUS_LABELS[TicketStatus(s)] for s in (before["status"], after["status"]))
            note = f"（{after['note']}）" if after.get("note") else ""
            return f"工单 #{ref} {old} → {new}{note}"
        if action == "reminder.create":
            at = local(datetime.fromisoformat(after["at"]).astimezone(UTC), self.tz) if after.get("at") else ""
            return f"设置提醒：{after.get('content', '')}（{at}）"
        if action.startswith("approval."):
            verb = {"request": "申请折扣", "withdraw": "撤回折扣申请", "approve": "同意折扣申请"}
            verb |= {"reject": "驳回折扣申请"}
            return f"{verb.get(action.removeprefix('approval.'), '折扣审批')} {ref}"
        if row.entity == "contact":
            if not before:
                shown_parts = " ".join(str(after.get(k) or "") for k in ("name", "title", "role", "phone"))
                return f"新增联系人 {' '.join(shown_parts.split())}"
            changed = [
                f"{CONTACT_LABELS.get(k, k)} {shown(before.get(k))} → {shown(v)}"
                for k, v in after.items()
                if k in CONTACT_LABELS and before.get(k) != v
            ]
            return f"联系人 {after.get('name') or before.get('name', '')}：" + "，".join(changed)
        return None

    def as_json(self, row: AuditLog, customers: dict[int, str]) -> dict[str, Any]:
        return {
            "id": row.id,
            "time": row.created_at.astimezone(self.tz).isoformat(timespec="seconds"),
            "actor": row.actor_name,
            "platform": row.platform,
            "action": row.action,
            "entity": row.entity,
            "entity_id": row.entity_id,
            "customer": customers.get(row.customer_id) if row.customer_id else None,
            "summary": self.describe(row),
            "before": row.before,
            "after": row.after,
            "undo_of": row.undo_of,
        }


def changes(customer: Customer | None, since: datetime | None, actor: Staff | None) -> QuerySet[AuditLog]:
    """The audit rows (newest first) about ``customer`` (itself, its contacts, tickets, approvals…), since
    ``since``, by ``actor``; each filter only when given."""
    query = AuditLog.all()
    if customer is not None:
        query = query.filter(customer_id=customer.id)
    if since is not None:
        query = query.filter(created_at__gte=since)
    if actor is not None:
        query = query.filter(actor_id=actor.id)
    return query.order_by("-id")


# History of a part of the customer kept in rows of its own: those rows.
PART_ROWS: dict[str, dict[str, str]] = {
    "contacts": {"entity": "contact"},
    "tickets": {"entity": "ticket"},
    "follow_up": {"action": "follow_up"},
}
FIELD_SCAN = 2000  # the latest rows of a customer searched for changes of one field


async def field_history(query: QuerySet[AuditLog], field: str) -> tuple[int, list[AuditLog]]:
    """How many of the rows changed ``field``, and the latest of them."""
    if (part := PART_ROWS.get(field)) is not None:
        rows = query.filter(**part)
        return await rows.count(), await rows.limit(SHOWN)
    ids = [
        int(i)
        for i, before, after in await query.limit(FIELD_SCAN).values_list("id", "before", "after")
        if field in (after or {}) and not same_value((before or {}).get(field), after.get(field))
    ]
    return len(ids), await AuditLog.filter(id__in=ids[:SHOWN]).order_by("-id")


@capability.intent("history", examples=["操作记录 华为"], order=96, customer=True)
async def history(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """操作记录（发「撤销」撤回上一步）"""
    customer = ctx.customer
    if not await visible_to(ctx.staff, customer):
        return Reply(f"「{customer.name}」不是您或您团队的客户，无法查看操作记录。")
    field = str(slots.get("field") or "")
    query = changes(customer, None, None)
    if field:
        total, rows = await field_history(query, field)
    else:
        total, rows = await query.count(), await query.limit(SHOWN)
    what = f"{_field_name(field)}的修改记录" if field else "的操作记录"
    if not rows:
        return Reply(f"「{customer.name}」还没有{what.removeprefix('的')}。")
    book = await Book.load(ctx.bot.directory, ctx.settings.tz, rows)
    lines = [f"「{customer.name}」{what}（最新在前）："]
    lines.extend(f"{book.when(r)} {r.actor_name}（{book.platform(r)}）{book.describe(r)}" for r in rows)
    if total > len(rows):
        lines.append(f"……还有 {total - len(rows)} 条更早的记录。")
    return Reply("\n".join(lines))


def _field_name(field: str) -> str:
    names = {"contacts": "联系人", "tickets": "工单", "follow_up": "跟进"}
    return names.get(field) or FIELD_LABELS.get(field) or field.removeprefix(CUSTOM)

"""Customer contacts as the platform reports them: a contact who adds a rep is linked to the right customer (a known
contact id, then the company or name the rep noted, then a phone number), or the rep is asked which customer it is
(numbered, a new one, or not theirs: a new customer assigned by the lead rules); a customer who removes the rep
is a churn warning to the owner and the manager, once; a contact the platform could not move is reported; an
account the platform removed asks the manager for the handover.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from bot import audit
from bot.context import Context, Slots
from bot.identity import ContactCard
from bot.resolution import close_names, lookup_customer
from bot.types import (
    CONTACT_ADDED,
    CONTACT_DROPPED,
    CONTACT_LOST,
    CONTACT_TRANSFER_FAILED,
    STAFF_LEFT,
    IncomingMessage,
    Reply,
)
from handlers.customers.profile import snapshot
from handlers.people.capability import capability
from handlers.people.leads import assign, lead_of
from models.audit import AuditLog
from models.customers import Contact, Customer, PendingChoice
from models.people import ContactTransfer, TransferStatus
from models.staff import Staff

CHOICE_TTL = timedelta(days=3)
NEW_CUSTOMER = "新建客户："
AS_LEAD = "不是我的客户，作为线索分配："
LEFT_PLATFORM = "staff.left_platform"


async def _staff_of(msg: IncomingMessage, ctx: Context) -> Staff | None:
    account = str(msg.raw.get("account") or "")
    query = Staff.filter(accounts__platform=msg.platform, accounts__user_id=account, active=True)
    return await query.using_db(ctx.conn).first() if account else None


async def _manager_of(staff: Staff, ctx: Context) -> Staff | None:
    return await Staff.filter(id=staff.manager_id or 0, active=True).using_db(ctx.conn).first()


async def _card(msg: IncomingMessage, ctx: Context) -> ContactCard:
    identity = ctx.bot.directory.get(msg.platform)
    contact, account = str(msg.raw.get("contact") or ""), str(msg.raw.get("account") or "")
    if identity is None or identity.describe_contact is None:
        return ContactCard(name="")
    return await identity.describe_contact(contact, account) or ContactCard(name="")


async def _match(card: ContactCard, ctx: Context) -> tuple[Customer | None, Contact | None]:
    """The customer the card belongs to: by the company (or the rep's remark) as a customer name, then by phone."""
    for name in (card.company, card.remark):
        if name and (found := (await lookup_customer(name))[0]) is not None:
            return found, None
    if card.phones:
        known = await Contact.filter(phone__in=list(card.phones)).using_db(ctx.conn).order_by("id").first()
        if known is not None:
            return await Customer.get(id=known.customer_id, using_db=ctx.conn), known
    return None, None


async def _record(
    ctx: Context, actor: Staff | str, action: str, entity: str, entity_id: object, before: Any, after: Any
) -> None:
    await audit.record(action, entity, entity_id, before, after, actor=actor, platform=ctx.msg.platform, conn=ctx.conn)


async def _link(customer: Customer, slots: Slots, known: Contact | None, staff: Staff, ctx: Context) -> Contact:
    """The contact on ``customer``'s profile: the one already there (matched by phone), or a new one."""
    contact_id = str(slots["contact"])
    if known is not None and not known.external_userid:
        await Contact.filter(id=known.id).using_db(ctx.conn).update(external_userid=contact_id)
        await _record(ctx, staff, "contact.link", "contact", known.id, {"external_userid": None},
                      {"external_userid": contact_id})  # fmt: skip
        return known
    contact = await Contact.create(
        customer_id=customer.id, name=str(slots.get("name") or ""), phone=str(slots.get("phone") or ""),
        external_userid=contact_id, using_db=ctx.conn,
    )  # fmt: skip
    after = {"customer_id": customer.id, "name": contact.name, "phone": contact.phone, "external_userid": contact_id}
    await _record(ctx, staff, "contact.create", "contact", contact.id, None, after)
    return contact


@capability.intent(f"event:{CONTACT_ADDED}", order=910, system=True)
async def contact_added(msg: IncomingMessage, slots: Slots, ctx: Context) -> None:
    """客户联系人加了同事：关联到客户档案"""
    contact_id = str(msg.raw.get("contact") or "")
    staff = await _staff_of(msg, ctx)
    if staff is None or not contact_id:
        return
    if await Contact.filter(external_userid=contact_id).using_db(ctx.conn).exists():
        return  # already on a profile: the first rule of linking
    card = await _card(msg, ctx)
    about = {"contact": contact_id, "name": card.name or card.remark, "phone": card.phones[0] if card.phones else ""}
    customer, known = await _match(card, ctx)
    if customer is not None:
        contact = await _link(customer, about, known, staff, ctx)
        await ctx.push(staff, f"新的客户联系人「{contact.name or contact_id}」已关联到客户「{customer.name}」。")
        return
    guess = card.company or card.remark or card.name
    company = guess or card.name or contact_id
    options = [*(await close_names(guess) if guess else []), NEW_CUSTOMER + company, AS_LEAD + company]
    await PendingChoice.filter(staff_id=staff.id).using_db(ctx.conn).delete()
    await PendingChoice.create(
        staff_id=staff.id, intent="link_contact", slots=about, slot="choice", options=options,
        expires_at=ctx.now.astimezone(UTC) + CHOICE_TTL, using_db=ctx.conn,
    )  # fmt: skip
    who = f"「{about['name']}」" + (f"（{card.company}）" if card.company else "")
    lines = [f"新的客户联系人{who}加了您，TA 属于哪个客户？请回复序号："]
    lines += [f"{i}. {option}" for i, option in enumerate(options, 1)]
    await ctx.push(staff, "\n".join(lines))


@capability.intent("link_contact", order=909)
async def link_contact(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """把新加的客户联系人关联到客户（回复序号）"""
    choice = str(slots.get("choice") or "")
    if not slots.get("contact"):
        return Reply("请在收到「新的客户联系人」提问后回复序号。")
    if await Contact.filter(external_userid=str(slots["contact"])).using_db(ctx.conn).exists():
        return Reply("这位客户联系人已经关联过了。")
    if choice.startswith(AS_LEAD):
        return await _as_lead(choice.removeprefix(AS_LEAD)[:128], slots, ctx)
    if choice.startswith(NEW_CUSTOMER):
        name = choice.removeprefix(NEW_CUSTOMER)[:128]
        customer = await Customer.get_or_none(name=name, using_db=ctx.conn)
        if customer is None:
            customer = await Customer.create(name=name, owner_id=ctx.staff.id, using_db=ctx.conn)
            await ctx.audit("create_customer", "customer", customer.id, None, snapshot(customer))
            ctx.bot.understanding.learn_customer(name, [])
    else:
        found = await Customer.get_or_none(name=choice, using_db=ctx.conn)
        if found is None:
            return Reply(f"没有找到客户「{choice}」。")
        customer = found
    contact = await _link(customer, slots, None, ctx.staff, ctx)
    return Reply(f"已把客户联系人「{contact.name or contact.external_userid}」关联到客户「{customer.name}」。")


async def _as_lead(name: str, slots: Slots, ctx: Context) -> Reply:
    """The rep says the contact is not theirs: the contact's company, new and without an owner, goes to whoever the
    lead rules pick (not the rep who declined it); with nobody free it waits in the pool."""
    customer = await Customer.get_or_none(name=name, using_db=ctx.conn)
    if customer is not None and customer.owner_id is not None:
        return Reply(f"客户「{name}」已有负责人，请回复另一个序号，或联系主管。")
    if customer is None:
        customer = await Customer.create(name=name, owner_id=None, using_db=ctx.conn)
        # Recorded as a lead, not as the rep's own creation: their undo must not take back another rep's lead.
        await ctx.audit("lead.create", "customer", customer.id, None, snapshot(customer))
        ctx.bot.understanding.learn_customer(name, [])
    contact = await _link(customer, slots, None, ctx.staff, ctx)
    lead = await lead_of(customer, ctx.conn)
    rep = await assign(ctx.bot, customer, lead, ctx.now, ctx.conn, not_to=ctx.staff.id)
    who = contact.name or contact.external_userid
    if rep is None:
        return Reply(f"已为联系人「{who}」新建客户「{name}」，暂时没有同事可以接手，已放入公海。")
    return Reply(f"已为联系人「{who}」新建客户「{name}」，按线索规则分配给了{rep.name}。")


async def _contact_change(msg: IncomingMessage, ctx: Context) -> tuple[Contact, Customer, Staff, Staff] | None:
    """The known contact an event is about, its customer, the staff member of the event and the customer's owner
    (that staff member when the customer has no active owner); None for a contact or member we do not know."""
    contact_id = str(msg.raw.get("contact") or "")
    contact = await Contact.filter(external_userid=contact_id).using_db(ctx.conn).first() if contact_id else None
    staff = await _staff_of(msg, ctx)
    if contact is None or staff is None:
        return None
    customer = await Customer.get(id=contact.customer_id, using_db=ctx.conn)
    owner = await Staff.filter(id=customer.owner_id or 0, active=True).using_db(ctx.conn).first() or staff
    return contact, customer, staff, owner


@capability.intent(f"event:{CONTACT_LOST}", order=911, system=True)
async def contact_lost(msg: IncomingMessage, slots: Slots, ctx: Context) -> None:
    """客户删除了同事：流失预警"""
    if (change := await _contact_change(msg, ctx)) is None:
        return
    contact, customer, staff, owner = change
    who = contact.name or contact.external_userid
    text = (
        f"**流失预警**\n> 客户：{customer.name}\n> 联系人「{who}」删除了{staff.name}\n"
        f"请尽快电话联系了解原因，并记录：`跟进 {customer.name} 跟进内容`"
    )
    for person in {p.id: p for p in (owner, await _manager_of(owner, ctx)) if p is not None}.values():
        # Keyed by the contact and the person told: a repeat of the event warns nobody twice.
        key = f"churn:{msg.platform}:{contact.external_userid}:{staff.id}:{person.id}"
        await ctx.push(person, Reply.markdown(text), key=key)


@capability.intent(f"event:{CONTACT_DROPPED}", order=914, system=True)
async def contact_dropped(msg: IncomingMessage, slots: Slots, ctx: Context) -> None:
    """同事删除了客户联系人：告知负责人的主管"""
    if (change := await _contact_change(msg, ctx)) is None:
        return
    contact, customer, staff, owner = change
    told = AuditLog.filter(action="contact.dropped", entity="contact", entity_id=str(contact.id))
    if await told.using_db(ctx.conn).exists():
        return  # reported again: told once already
    await ctx.audit("contact.dropped", "contact", contact.id, {"follower": staff.name}, None)
    # A rep deleting a customer contact is how customers leave with a rep: the manager hears of it.
    who = contact.name or contact.external_userid
    text = (
        f"**客户联系人被删除**\n> 客户：{customer.name}\n> {staff.name} 删除了客户联系人「{who}」\n"
        "如非误删，请了解原因；客户资料与聊天记录仍保留在 CRM 中。"
    )
    for person in {p.id: p for p in (await _manager_of(owner, ctx), owner) if p is not None}.values():
        if person.id != staff.id:
            key = f"dropped:{msg.platform}:{contact.external_userid}:{staff.id}:{person.id}"
            await ctx.push(person, Reply.markdown(text), key=key)


@capability.intent(f"event:{CONTACT_TRANSFER_FAILED}", order=912, system=True)
async def contact_transfer_failed(msg: IncomingMessage, slots: Slots, ctx: Context) -> None:
    """客户联系人转接失败：记录并告知主管"""
    contact_id, account = str(msg.raw.get("contact") or ""), str(msg.raw.get("account") or "")
    reason = str(msg.raw.get("reason") or "转接失败")
    pending = ContactTransfer.filter(
        platform=msg.platform, contact_user_id=contact_id, to_user_id=account,
        status__in=[TransferStatus.WAITING, TransferStatus.PENDING],
    ).using_db(ctx.conn)  # fmt: skip
    transfer = await pending.first()
    if transfer is None or not await pending.update(status=TransferStatus.FAILED, reason=reason):
        return
    successor = await _staff_of(msg, ctx)
    customer = await Customer.get_or_none(id=transfer.customer_id or 0, using_db=ctx.conn)
    manager = await _manager_of(successor, ctx) if successor is not None else None
    if manager is not None:
        name = customer.name if customer else contact_id
        taker = successor.name if successor else account
        await ctx.push(manager, f"客户「{name}」的联系人未能转给{taker}：{reason}。请接替人主动联系客户重新添加。")


@capability.intent(f"event:{STAFF_LEFT}", order=913, system=True)
async def staff_left(msg: IncomingMessage, slots: Slots, ctx: Context) -> None:
    """同事的账号被删除：请主管确认离职交接"""
    staff = await _staff_of(msg, ctx)
    if staff is None:
        return
    await _record(ctx, audit.SYSTEM, LEFT_PLATFORM, "staff", staff.id, {"account": msg.raw.get("account")}, None)
    count = await Customer.filter(owner_id=staff.id).using_db(ctx.conn).count()
    manager = await _manager_of(staff, ctx)
    if manager is not None:
        text = (
            f"**离职交接待确认**\n> {staff.name}的账号已被删除，名下还有 {count} 位客户。\n"
            f"请确认交接：`离职交接 {staff.name} 给 接替人`（多人用顿号分隔，轮流分配），"
            f"或 `离职交接 {staff.name} 放入公海`"
        )
        await ctx.push(manager, Reply.markdown(text))

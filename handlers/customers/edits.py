"""Editing a customer's profile from chat: contacts (name, phone, title, decision-chain role), the contract end
date, the industry, aliases and custom fields, each value checked before anything is written.

How they are said: ``华为 联系人 刘强 13800000001 采购经理 决策人``, ``华为 刘强的电话改成 13900000002``,
``华为 合同到期 2027-03-31``, ``华为 行业 通信设备``, ``华为 别名 HW``, and for custom fields either
``华为 字段 付款方式 月结60天`` (creates the field if no customer has it yet) or ``华为 付款方式 月结60天`` (only for
a field name some customer already has: otherwise the line is more likely a note, and nothing is written).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from bot.access import refusal
from bot.context import Context, Slots
from bot.nlu.reading import Reading, Result
from bot.nlu.vocabulary import CRM_TERMS
from bot.resolution import alias_holder
from bot.types import IncomingMessage, Reply
from handlers.customers.capability import capability
from handlers.customers.profile import CUSTOM, FIELD_LABELS, field_value, restore_fields
from models.customers import Contact, Customer

# Decision-chain roles (决策链角色) people use; anything else after a contact's name is their job title.
ROLES = (
    "决策人", "决策者", "影响人", "影响者", "使用人", "使用者", "把关人", "技术把关", "支持者", "反对者", "教练",
    "内线", "关键人",
)  # fmt: skip
MOBILE = re.compile(r"1[3-9]\d{9}")
LANDLINE = re.compile(r"0\d{2,3}-?\d{7,8}(?:-\d{1,6})?")
PHONE_LIKE = re.compile(r"[+\d][\d\-\s()]{4,}")
_DATE = re.compile(r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?|(\d{4})(\d{2})(\d{2})")
DATE_HELP = "请写成 2027-03-31、2027年3月31日 或 2027/3/31"
PHONE_HELP = "手机号是 1 开头的 11 位数字，座机请带区号，例如 010-12345678"

# The field words of ``<customer> <word> <value>`` (the custom-field word 字段 names the field after it).
_FIELD_WORDS = {
    "合同到期日": "contract_end",
    "合同到期时间": "contract_end",
    "合同到期": "contract_end",
    "合同截止日": "contract_end",
    "合同截止": "contract_end",
    "所属行业": "industry",
    "行业": "industry",
    "别名": "aliases",
    "简称": "aliases",
    "字段": "custom",
}
_CONTACT_PARTS = {"电话": "phone", "手机号": "phone", "手机": "phone", "职位": "title", "职务": "title"}
_CONTACT_PARTS |= {"头衔": "title", "决策角色": "role", "角色": "role"}
_WORDS = "|".join(sorted([*_FIELD_WORDS, "联系人"], key=len, reverse=True))
_PARTS = "|".join(sorted(_CONTACT_PARTS, key=len, reverse=True))
_SET = r"\s*(?:改成|改为|换成|更新为|设为|是|[:：])?\s*"
_KEYWORD_EDIT = re.compile(rf"^\s*(?:的)?\s*(?P<kw>{_WORDS}){_SET}(?P<rest>\S.*)$")
_CONTACT_EDIT = re.compile(rf"^\s*(?P<name>[^\s的]{{1,16}})的(?P<part>{_PARTS}){_SET}(?P<value>\S+)$")
_CUSTOM_EDIT = re.compile(
    r"^\s+(?P<name>[\u4e00-\u9fffA-Za-z][\u4e00-\u9fffA-Za-z0-9]{1,11})\s*[:：]?\s+(?P<value>\S{1,64})$"
)
_UNTYPED_NAME = re.compile(rf"^(?P<c>[^\s,，:：]{{2,30}}?)\s*(?:的)?\s*(?={_WORDS}|[^\s的]{{1,16}}的(?:{_PARTS}))")


class BadValue(ValueError):
    """A value that cannot be stored; the message says why, in Chinese."""


# -- values ----------------------------------------------------------------------------------------------------------


def phone_number(raw: str) -> str:
    """A mainland mobile (1[3-9] and 9 digits) or a landline with its area code, tidied; BadValue otherwise."""
    text = re.sub(r"[\s()]", "", raw)
    text = re.sub(r"^(?:\+?86-?)(?=1)", "", text)
    if MOBILE.fullmatch(text.replace("-", "")):
        return text.replace("-", "")
    if LANDLINE.fullmatch(text):
        return text
    raise BadValue(f"电话号码「{raw}」不对：{PHONE_HELP}。")


def day(raw: str) -> date:
    """A real date written 2027-03-31, 2027年3月31日, 2027/3/31 (or 2027.3.31, 20270331); BadValue otherwise."""
    m = _DATE.fullmatch(raw.strip())
    if m is None:
        raise BadValue(f"没看懂日期「{raw}」，{DATE_HELP}。")
    y, mo, d = (int(g) for g in (m.groups()[:3] if m[1] else m.groups()[3:]))
    try:
        return date(y, mo, d)
    except ValueError:
        raise BadValue(f"「{raw}」不是一个真实的日期，{DATE_HELP}。") from None


def role_of(raw: str) -> str:
    if raw not in ROLES:
        raise BadValue(f"没有「{raw}」这个决策角色，可以是：{'、'.join(ROLES)}。")
    return raw


# -- recognition -----------------------------------------------------------------------------------------------------


def _customer_and_rest(r: Reading) -> tuple[Slots, str] | None:
    """The customer the line starts with (known, or as typed before an edit word) and what follows it."""
    mentions = r.customers
    if mentions and mentions[0].start == 0:
        m = mentions[0]
        return r.customer_slot(r.text[: m.end], m.surface), r.text[m.end :]
    if typed := _UNTYPED_NAME.match(r.text):
        return {"customer": typed["c"]}, r.text[typed.end() :]
    return None


def contact_slots(rest: str) -> Slots:
    """``刘强 13800000001 采购经理 决策人``: the name first, then a phone, a role and the title in any order."""
    name, *others = re.split(r"[\s,，、;；]+", rest.strip())
    slots: Slots = {"contact": name}
    title = []
    for part in others:
        if PHONE_LIKE.fullmatch(part):
            slots["phone"] = part
        elif part in ROLES:
            slots["role"] = part
        elif part:
            title.append(part)
    if title:
        slots["title"] = " ".join(title)
    return slots


@capability.phrase(order=45)
def profile_edit_phrase(r: Reading) -> Result | None:
    """华为 联系人 刘强 13800000001 采购经理 决策人 · 华为 刘强的电话改成 139… · 华为 合同到期 2027-03-31 …"""
    if r.question:
        return None  # 华为的联系人是谁 asks; it never adds a contact called 谁
    found = _customer_and_rest(r)
    if found is None:
        return None
    slots, rest = found
    if m := _CONTACT_EDIT.match(rest):
        return "set_contact", {**slots, "contact": m["name"], _CONTACT_PARTS[m["part"]]: m["value"], "existing": True}
    if (m := _KEYWORD_EDIT.match(rest)) is None:
        return None
    if m["kw"] == "联系人":
        return "set_contact", {**slots, **contact_slots(m["rest"])}
    field = _FIELD_WORDS[m["kw"]]
    if field != "custom":
        return "set_field", {**slots, "field": field, "value": m["rest"].strip()}
    name, _, value = m["rest"].strip().partition(" ")
    return "set_field", {**slots, "field": f"{CUSTOM}{name}", "value": value.strip(), "explicit": True}


@capability.phrase(order=155)
def custom_field_phrase(r: Reading) -> Result | None:
    """华为 付款方式 月结60天: a known customer, a field name and a value, and nothing else on the line."""
    if r.question:
        return None
    mentions = r.customers
    if not mentions or mentions[0].start != 0:
        return None
    m = _CUSTOM_EDIT.match(r.text[mentions[0].end :])
    if m is None or m["name"] in CRM_TERMS:  # 华为 报价 已发 is a note about the quote, not a field
        return None
    slots = r.customer_slot(r.text[: mentions[0].end], mentions[0].surface)
    return "set_field", {**slots, "field": f"{CUSTOM}{m['name']}", "value": m["value"]}


# -- the intents -----------------------------------------------------------------------------------------------------


def contact_state(contact: Contact) -> dict[str, Any]:
    return {"name": contact.name, "phone": contact.phone, "title": contact.title, "role": contact.role}


def _contact_changes(slots: Slots) -> dict[str, str]:
    """The contact's parts given in ``slots``, checked (BadValue says what is wrong)."""
    changes: dict[str, str] = {}
    if phone := str(slots.get("phone") or "").strip():
        changes["phone"] = phone_number(phone)
    if role := str(slots.get("role") or "").strip():
        changes["role"] = role_of(role)
    if title := str(slots.get("title") or "").strip():
        if len(title) > 64:
            raise BadValue("职位太长了，请控制在 64 个字以内。")
        changes["title"] = title
    return changes


@capability.intent(
    "set_contact",
    order=34,
    customer=True,
)
async def set_contact(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """添加或修改联系人（电话、职位、决策角色）

    Not listed in the help on its own (a WeCom text holds 2048 bytes): 改客户资料 stands for the profile edits.
    """
    customer = ctx.customer
    if (refused := await refusal(ctx.staff, customer)) is not None:
        return refused
    name = str(slots.get("contact") or "").strip()
    if not name or len(name) > 64 or PHONE_LIKE.fullmatch(name):
        return Reply(f"请先写联系人的姓名，例如「{customer.name} 联系人 刘强 13800000001 采购经理 决策人」。")
    try:
        changes = _contact_changes(slots)
    except BadValue as bad:
        return Reply(str(bad))
    contact = await Contact.filter(customer_id=customer.id, name=name).using_db(ctx.conn).first()
    if contact is None and slots.get("existing"):
        example = f"{customer.name} 联系人 {name} 电话 职位 角色"
        return Reply(f"「{customer.name}」没有叫「{name}」的联系人。要新增，请发「{example}」。")
    before = contact_state(contact) if contact is not None else None
    if contact is None:
        contact = Contact(customer_id=customer.id, name=name)
    elif not changes:
        return Reply(f"请写上要改的内容，例如「{customer.name} {name}的电话改成 13900000002」。")
    for key, value in changes.items():
        setattr(contact, key, value)
    if before == contact_state(contact):
        return Reply(f"联系人「{name}」的信息没有变化。")
    await contact.save(using_db=ctx.conn)
    await ctx.audit("set_contact", "contact", contact.id, before, contact_state(contact))
    verb = "已添加" if before is None else "已更新"
    return Reply(f"{verb}「{customer.name}」的联系人：{' '.join(p for p in contact_state(contact).values() if p)}")


async def _custom_field_known(name: str) -> bool:
    """Some customer already has a custom field of this name."""
    return any(name in (fields or {}) for fields in await Customer.all().values_list("custom_fields", flat=True))


async def _new_value(customer: Customer, key: str, raw: str, slots: Slots, ctx: Context) -> Any:
    """The stored form of ``raw`` for ``key``; BadValue when it cannot be stored."""
    if key == "contract_end":
        return day(raw).isoformat()
    if key == "industry":
        if len(raw) > 64:
            raise BadValue("行业名称太长了，请控制在 64 个字以内。")
        return raw
    if key == "aliases":
        aliases = list(customer.aliases or [])
        for alias in (a for a in re.split(r"[\s,，、;；]+", raw) if a):
            holder = await alias_holder(alias) or await Customer.get_or_none(name=alias)
            if len(alias) > 32:
                raise BadValue("别名太长了，每个请控制在 32 个字以内。")
            if holder is not None and holder.id != customer.id:
                raise BadValue(f"「{alias}」已经是「{holder.name}」的名称或别名了，换一个吧。")
            if alias not in aliases and alias != customer.name:
                aliases.append(alias)
        return aliases
    name = key.removeprefix(CUSTOM)
    if not name or len(name) > 32 or name in FIELD_LABELS.values() or name == ctx.settings.keywords.buying_signal_field:
        raise BadValue(f"「{name}」不能作为自定义字段名，请换一个。")
    if not slots.get("explicit") and not await _custom_field_known(name):
        raise BadValue(
            f"还没有「{name}」这个字段。要新建，请发「{customer.name} 字段 {name} {raw}」；"
            f"如果这是一条跟进记录，请发「跟进 {customer.name} {name} {raw}」。"
        )
    if len(raw) > 200:
        raise BadValue("字段内容太长了，请控制在 200 个字以内。")
    return raw


@capability.intent(
    "set_field",
    examples=["华为 合同到期 2027-03-31"],
    order=35,
    customer=True,
)
async def set_field(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """改客户资料

    The contract end, industry, aliases and custom fields (the help line is short: a WeCom text holds 2048 bytes).
    """
    customer = ctx.customer
    if (refused := await refusal(ctx.staff, customer)) is not None:
        return refused
    key = str(slots.get("field") or "")
    raw = str(slots.get("value") or "").strip()
    label = FIELD_LABELS.get(key, key.removeprefix(CUSTOM))
    if not raw:
        return Reply(f"请写上{label}的内容，例如「{customer.name} {label} …」。")
    try:
        value = await _new_value(customer, key, raw, slots, ctx)
    except BadValue as bad:
        return Reply(str(bad))
    before = {key: field_value(customer, key)}
    if before[key] == value:
        return Reply(f"「{customer.name}」的{label}已经是「{shown(value)}」了。")
    await restore_fields(customer, {key: value}, ctx.conn)
    await ctx.audit("set_field", "customer", customer.id, before, {key: value})
    if key == "aliases":
        ctx.bot.understanding.learn_customer(customer.name, list(value))
    return Reply(f"「{customer.name}」的{label}：{shown(before[key])} → {shown(value)}")


def shown(value: Any) -> str:
    """A field value as people read it."""
    if value is None or value == "" or value == []:
        return "—"
    if isinstance(value, list):
        return "、".join(str(v) for v in value)
    return str(value)

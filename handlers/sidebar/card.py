"""The customer fragment the sidebar shows: the profile card, the latest follow-ups, open tickets and open
opportunities, and the two forms (记录跟进, 开工单) that post back to the sidebar. Server-rendered, every value
escaped; no inline script or style, so the page's content policy holds for it too."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal
from html import escape
from zoneinfo import ZoneInfo

from bot.display import local
from handlers.followups import CHANNEL_LABELS
from handlers.tickets.service import OPEN_STATES, PRIORITY_LABELS
from models.customers import STAGE_LABELS, Contact, Customer, Stage
from models.followups import FollowUp
from models.opportunities import OPEN_STAGES, Opportunity
from models.staff import Staff
from models.tickets import TICKET_STATUS_LABELS, Ticket, TicketPriority, TicketStatus

LATEST_FOLLOWUPS = 3
SHOWN_ROWS = 5
EXCERPT = 80


def _money(amount: Decimal) -> str:
    if amount >= 10000:
        return f"{amount / 10000:.2f}".rstrip("0").rstrip(".") + " 万元"
    return f"{amount:.2f}".rstrip("0").rstrip(".") + " 元"


def _cut(text: str) -> str:
    return text if len(text) <= EXCERPT else text[:EXCERPT] + "…"


def _section(title: str, items: list[str], empty: str, ident: str) -> str:
    rows = "".join(f"<li>{item}</li>" for item in items) or f'<li class="none">{empty}</li>'
    return f'<section class="block" id="{ident}"><h2>{title}</h2><ul>{rows}</ul></section>'


@dataclass(frozen=True, slots=True)
class FormContext:
    """What every form of one fragment carries: the customer, the contact it was opened for, the form token."""

    customer_id: int
    contact: str
    token: str
    max_chars: int


async def render_customer(
    customer: Customer, contact: Contact | None, forms: FormContext, tz: ZoneInfo, notice: str = "", undo: bool = False
) -> str:
    """The fragment for ``customer``, met through ``contact``; ``notice`` is said at the top (what was just done),
    with a button that takes it back when ``undo``."""
    owner = await Staff.get_or_none(id=customer.owner_id) if customer.owner_id else None
    followups = await FollowUp.filter(customer_id=customer.id).order_by("-created_at", "-id").limit(LATEST_FOLLOWUPS)
    writers = {s.id: s.name for s in await Staff.filter(id__in={f.staff_id for f in followups if f.staff_id})}
    tickets = (
        await Ticket.filter(customer_id=customer.id, status__in=list(OPEN_STATES))
        .order_by("-created_at")
        .limit(SHOWN_ROWS)
    )
    deals = (
        await Opportunity.filter(customer_id=customer.id, stage__in=list(OPEN_STAGES))
        .order_by("expected_close", "id")
        .limit(SHOWN_ROWS)
    )
    who = ""
    if contact is not None:
        who = " ".join(escape(p) for p in (contact.name, contact.title, contact.role) if p)
    facts = [
        ("负责人", escape(owner.name) if owner else "公海"),
        ("联系人", who or "—"),
        ("标签", escape("、".join(customer.tags)) if customer.tags else "—"),
        ("最近跟进", local(customer.last_followup_at, tz)),
        ("下次跟进", local(customer.next_followup_at, tz)),
    ]
    if customer.industry:
        facts.insert(1, ("行业", escape(customer.industry)))
    grade = f'<span class="chip">{escape(customer.grade)} 级</span>' if customer.grade else ""
    card = (
        '<section class="profile" id="profile">'
        f'<h1 id="customer-name">{escape(customer.name)}</h1>'
        f'<p class="chips"><span class="chip stage">{STAGE_LABELS[Stage(customer.stage)]}</span>{grade}</p>'
        "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl></section>"
    )
    followup_items = [
        f'<span class="when">{local(f.created_at, tz)[5:]} · {CHANNEL_LABELS.get(f.channel, "沟通")}'
        f" · {escape(writers.get(f.staff_id or 0, '系统'))}</span>{escape(_cut(f.content))}"
        for f in followups
    ]
    ticket_items = [
        f'<span class="when">#{t.id} {TICKET_STATUS_LABELS[TicketStatus(t.status)]}'
        f"{' · ' + PRIORITY_LABELS[TicketPriority.URGENT] if t.priority == TicketPriority.URGENT else ''}</span>"
        f"{escape(t.title)}"
        for t in tickets
    ]
    deal_items = [
        f'<span class="when">{STAGE_LABELS[Stage(d.stage)]} · {_money(d.amount)}'
        f"{' · 预计 ' + d.expected_close.isoformat() if d.expected_close else ''}</span>{escape(d.name)}"
        for d in deals
    ]
    said = ""
    if notice:
        button = _form("undo", forms, "", "", "撤销这一步", sheet=False) if undo else ""
        said = f'<div class="notice" id="notice" role="status"><p>{escape(notice)}</p>{button}</div>'
    return (
        said
        + card
        + _actions(forms)
        + _section("最近跟进", followup_items, "还没有跟进记录", "followups")
        + _section("未结工单", ticket_items, "没有未结工单", "tickets")
        + _section("进行中的商机", deal_items, "没有进行中的商机", "deals")
    )


def _form(kind: str, f: FormContext, placeholder: str, extra: str, label: str, *, sheet: bool = True) -> str:
    """A form posting to ``/sidebar/<kind>``: a sheet with a note box (opened by its button), or a bare button."""
    # A fresh key per form shown: a second tap on the same submit is recognised and written once.
    key = secrets.token_urlsafe(12)
    fields = (
        f'<input type="hidden" name="customer" value="{f.customer_id}">'
        f'<input type="hidden" name="contact" value="{escape(f.contact)}">'
        f'<input type="hidden" name="csrf" value="{escape(f.token)}">'
        f'<input type="hidden" name="key" value="{key}">'
    )
    error = f'<p class="error" id="{kind}-error" role="alert" hidden></p>'
    if not sheet:
        return (
            f'<form class="inline" id="{kind}-form" method="post" action="/sidebar/{kind}">{fields}'
            f'<button type="submit" class="ghost" id="{kind}-submit">{label}</button>{error}</form>'
        )
    return (
        f'<form class="sheet" id="{kind}-form" method="post" action="/sidebar/{kind}" hidden>{fields}'
        f'<textarea name="content" id="{kind}-content" maxlength="{f.max_chars}" required '
        f'placeholder="{escape(placeholder)}"></textarea>{extra}'
        f'{error}<div class="row"><button type="button" class="ghost" data-close="{kind}">取消</button>'
        f'<button type="submit" id="{kind}-submit">{label}</button></div></form>'
    )


def _actions(f: FormContext) -> str:
    urgent = (
        '<label class="check"><input type="checkbox" name="priority" value="urgent" id="ticket-urgent"> 紧急</label>'
    )
    return (
        '<div class="actions">'
        '<button type="button" id="open-followup" data-open="followup">记录跟进</button>'
        '<button type="button" id="open-ticket" data-open="ticket" class="secondary">开工单</button></div>'
        + _form("followup", f, "例如：电话沟通了报价，下周三再联系", "", "保存跟进")
        + _form("ticket", f, "描述客户的问题，例如：液压站漏油", urgent, "提交工单")
    )


def message(title: str, text: str, ident: str = "message") -> str:
    """A short friendly fragment when there is no customer to show."""
    return f'<section class="message" id="{ident}"><h1>{escape(title)}</h1><p>{escape(text)}</p></section>'

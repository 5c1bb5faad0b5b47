"""Asking: ``rules.nps_delay_days`` after a delivery (a deal won, a ticket resolved) the customer contact is sent the
survey, once per ``rules.nps_period_days``.

The rule ``nps_survey`` finds the deliveries whose delay ran out and whose customer got no survey in the period,
creates a survey with a single-use link, and sends it to the contact through a platform that can message customers
on the rep's behalf (the rep confirms it there), or gives the rep a ready-to-forward message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.channels import Address
from bot.context import Firing, RuleContext
from bot.identity import CustomerRoute
from bot.rulekit import as_moment, select, utc
from bot.scheduled import release_time
from bot.types import TO_CUSTOMERS, Reply
from handlers.nps.capability import capability
from handlers.nps.page import expires_at, new_token, survey_key, survey_link
from models.customers import Contact, Customer
from models.nps import Survey, SurveyChannel, SurveyTrigger, token_hash
from models.staff import Staff

log = logging.getLogger(__name__)

RULE_NAME = "nps_survey"
# A delivery is surveyed when it is ``nps_delay_days`` old; after downtime, up to this many days late, never later.
GRACE_DAYS = 7


@dataclass
class _Due:
    customer_id: int
    trigger: SurveyTrigger
    trigger_id: int
    event_at: datetime
    fallback_owner_id: int | None = None  # the ticket's assignee when the customer has no owner


def customer_text(contact: Contact | None, link: str) -> str:
    """What the customer contact reads."""
    name = contact.name if contact is not None and contact.name else ""
    greeting = f"{name}您好！" if name else "您好！"
    return (
        f"{greeting}感谢您选择我们。想请您花 10 秒钟告诉我们：您有多大可能向同行推荐我们？"
        f"请点击链接打 0–10 分：{link}\n也可以直接回复一个数字，例如「9」。"
    )


def _event_label(due: _Due) -> str:
    return "成交" if due.trigger == SurveyTrigger.DEAL_WON else f"工单 #{due.trigger_id} 解决"


@capability.rule(order=100)
async def nps_survey_rule(rc: RuleContext) -> list[Firing]:
    """Deliveries ``nps_delay_days`` old whose customer got no survey within ``nps_period_days``.

    Two indexed range queries (won deals, resolved tickets) anti-joined with ``nps_survey`` on (customer, sent_at):
    in an incremental pass only deliveries whose delay ran out since the last pass, in a full sweep the whole
    grace window (at most ``BATCH`` each, the rest next pass).
    """
    settings = rc.settings
    delay = timedelta(days=settings.rules.nps_delay_days)
    due_before = rc.now - delay
    after = due_before - timedelta(days=GRACE_DAYS)
    if rc.since is not None:
        after = max(after, rc.since - delay)
    period_start = utc(rc.now - timedelta(days=settings.rules.nps_period_days))
    not_surveyed = "NOT EXISTS (SELECT 1 FROM nps_survey s WHERE s.customer_id = {} AND s.sent_at >= ?)"
    won = await select(
        rc,
        "SELECT c.id, c.won_at FROM customer c WHERE c.won_at <= ? AND c.won_at > ? "
        f"AND {not_surveyed.format('c.id')} ORDER BY c.won_at LIMIT ?",
        [utc(due_before), utc(after), period_start],
    )
    resolved = await select(
        rc,
        "SELECT t.id, t.customer_id, t.resolved_at, t.assignee_id FROM ticket t "
        "WHERE t.resolved_at <= ? AND t.resolved_at > ? AND t.status IN ('resolved', 'closed') "
        f"AND {not_surveyed.format('t.customer_id')} ORDER BY t.resolved_at LIMIT ?",
        [utc(due_before), utc(after), period_start],
    )
    due: dict[int, _Due] = {}
    for row in won:
        customer_id = int(row["id"])
        _keep_earliest(due, _Due(customer_id, SurveyTrigger.DEAL_WON, customer_id, as_moment(row["won_at"])))
    for row in resolved:
        assignee_id = int(row["assignee_id"]) if row["assignee_id"] is not None else None
        item = _Due(
            int(row["customer_id"]),
            SurveyTrigger.TICKET_RESOLVED,
            int(row["id"]),
            as_moment(row["resolved_at"]),
            assignee_id,
        )
        _keep_earliest(due, item)
    if not due:
        return []
    customers = await Customer.filter(id__in=list(due)).prefetch_related("owner", "contacts").order_by("id")
    fallback_ids = {d.fallback_owner_id for d in due.values() if d.fallback_owner_id}
    fallbacks = {s.id: s for s in await Staff.filter(id__in=list(fallback_ids), active=True)} if fallback_ids else {}
    firings = []
    for customer in customers:
        item = due[customer.id]
        owner = customer.owner if customer.owner is not None and customer.owner.active else None
        owner = owner or fallbacks.get(item.fallback_owner_id or 0)
        if owner is None:
            log.info("nps: customer %s has no active owner; no survey", customer.id)
            continue
        contact = pick_contact(customer.contacts)
        route = None
        if contact is not None and contact.external_userid:
            route = await rc.bot.directory.customer_route(owner.id, contact.external_userid)
        firings.append(_survey_firing(rc, customer, owner, item, contact, route))
    return firings


def _keep_earliest(due: dict[int, _Due], item: _Due) -> None:
    current = due.get(item.customer_id)
    if current is None or item.event_at < current.event_at:
        due[item.customer_id] = item


def pick_contact(contacts: Iterable[Contact]) -> Contact | None:
    """The contact to ask: one with a chat-platform id first (a decision maker before others), else the first."""
    ordered = sorted(contacts, key=lambda c: (not c.external_userid, c.role != "决策人", c.id))
    return ordered[0] if ordered else None


def _survey_firing(
    rc: RuleContext, customer: Customer, owner: Staff, item: _Due, contact: Contact | None, route: CustomerRoute | None
) -> Firing:
    settings = rc.settings
    token = new_token()
    link = survey_link(settings, token)
    direct = route is not None
    who = contact.name if contact is not None and contact.name else "客户联系人"
    days = settings.nps.link_expiry_days
    header = f"【满意度调查】客户【{customer.name}】{_event_label(item)}已满 {settings.rules.nps_delay_days} 天。"
    if route is not None:
        text = (
            f"{header}\n调查已通过{route.identity.label}发给 {who}，{route.identity.confirm_hint}。\n"
            f"若不便发送，也可以把这个链接转给客户：{link}\n链接 {days} 天内有效，只能提交一次。"
        )
    else:
        text = (
            f"{header}\n给 {who} 的调查消息已单独发给您，请长按那条消息转发给 {who}（或复制其中的链接发给客户）。\n"
            f"链接 {days} 天内有效，只能提交一次；客户在聊天里直接回复分数（如「9分」）也会被记录。"
        )
    key = f"{RULE_NAME}:{customer.id}:{item.trigger}:{item.trigger_id}:{item.event_at.date().isoformat()}"

    async def send_survey() -> None:
        now = rc.now
        survey = await Survey.create(
            customer_id=customer.id,
            contact_id=contact.id if contact is not None else None,
            owner_id=owner.id,
            token_hash=token_hash(survey_key(settings), token),
            trigger=item.trigger,
            trigger_id=item.trigger_id,
            channel=SurveyChannel.CUSTOMER_MESSAGE if direct else SurveyChannel.REP_FORWARD,
            sent_at=now,
            expires_at=expires_at(settings, now),
        )
        # The message itself leaves no earlier than the rule engine's own pushes (quiet hours).
        not_before = release_time(now, settings)
        message = Reply(customer_text(contact, link))
        if route is not None and contact is not None:
            await rc.bot.outbox.enqueue(
                Address(route.identity.platform, route.sender),
                message,
                f"nps:survey:{survey.id}:customer",
                staff_id=owner.id,
                not_before=not_before,
                reply_to={TO_CUSTOMERS: [contact.external_userid]},
            )
        else:  # plain text on its own, so that the rep can forward it as it is
            await rc.bot.outbox.push(owner, message, f"nps:survey:{survey.id}:forward", not_before=not_before)
        log.info("nps: survey %s for customer %s (%s)", survey.id, customer.id, survey.channel)

    return Firing(
        rule=RULE_NAME, key=key, to=owner, text=text, customer=customer, apply=send_survey, period_at=item.event_at
    )

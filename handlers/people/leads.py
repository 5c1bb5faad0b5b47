"""Leads: a customer without an owner is given to a rep by the rules in ``[leads]`` — the first route matching its
region and industry names the team, and the team's least-loaded rep under the cap takes it — who is told the
lead's details and a first step; a lead nobody followed up within ``return_hours`` returns to the pool. Leads
arrive by ``POST /leads`` (JSON, signed with the shared secret: hex HMAC-SHA256 of the body in
``X-Crmbot-Signature``), from a customer import's rows left without an owner (new or re-imported, once their
chunk commits), and from a new customer contact the rep declines as theirs.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q
from tortoise.functions import Count
from tortoise.transactions import in_transaction

from bot import audit
from bot.bodies import read_body
from bot.config import LeadSettings
from bot.context import Firing, RuleContext, Services
from bot.jsontext import JSONError, parse_json
from bot.keys import BOT, CLOCK
from bot.types import Reply
from handlers.customers.profile import snapshot
from handlers.people.capability import capability
from models.customers import Contact, Customer, Stage
from models.people import LeadAssignment
from models.staff import Role, Staff

SIGNATURE_HEADER = "X-Crmbot-Signature"
MAX_LEAD_BYTES = 16 * 1024
REGION_FIELD = "地区"  # where a customer's region is kept: a custom field, as imports and the pool read it
TEXT_FIELDS = {"name": 128, "industry": 64, "region": 32, "contact": 64, "phone": 32, "note": 500}


@dataclass(frozen=True, slots=True)
class Lead:
    """A lead as it arrives: the company, where and what it is, whom to call, and what they asked."""

    name: str
    industry: str = ""
    region: str = ""
    contact: str = ""
    phone: str = ""
    note: str = ""


async def _team_for(settings: LeadSettings, lead: Lead, conn: BaseDBAsyncClient | None) -> list[Staff]:
    """The active reps of the first route matching the lead (every active rep when none matches)."""
    for route in settings.routes:
        if (route.region and route.region != lead.region) or (route.industry and route.industry not in lead.industry):
            continue
        manager = await Staff.filter(name=route.team, active=True).using_db(conn).first()
        if manager is not None:
            return await Staff.filter(manager_id=manager.id, role=Role.REP, active=True).using_db(conn).order_by("id")
    return await Staff.filter(role=Role.REP, active=True).using_db(conn).order_by("id")


async def _least_loaded(reps: list[Staff], cap: int, conn: BaseDBAsyncClient | None) -> Staff | None:
    """The rep with the fewest leads (customers at 潜在) under ``cap``; the earliest on a tie."""
    if not reps:
        return None
    rows = (
        await Customer.filter(owner_id__in=[r.id for r in reps], stage=Stage.LEAD)
        .using_db(conn)
        .annotate(n=Count("id"))
        .group_by("owner_id")
        .values_list("owner_id", "n")
    )
    load = {int(str(owner)): int(str(n)) for owner, n in rows}
    open_reps = [r for r in reps if load.get(r.id, 0) < cap]
    return min(open_reps, key=lambda r: (load.get(r.id, 0), r.id)) if open_reps else None


def first_action(lead: Lead) -> str:
    who = f"{lead.contact}（{lead.phone}）" if lead.contact and lead.phone else lead.contact or lead.phone or "客户"
    return f"建议今天内联系{who}，了解需求后发送「跟进 {lead.name} 跟进内容」记录。"


async def assign(
    services: Services,
    customer: Customer,
    lead: Lead,
    now: datetime,
    conn: BaseDBAsyncClient | None,
    not_to: int | None = None,
) -> Staff | None:
    """Give ``customer`` (without an owner) to the rep the rules pick (other than ``not_to``), tell them; None:
    nobody can take it now."""
    settings = services.settings.leads
    team = [r for r in await _team_for(settings, lead, conn) if r.id != not_to]
    rep = await _least_loaded(team, settings.max_open_per_rep, conn)
    if rep is None or not await _give(services, customer, lead, rep, now, conn):
        return None
    return rep


async def _give(
    services: Services, customer: Customer, lead: Lead, rep: Staff, now: datetime, conn: BaseDBAsyncClient | None
) -> bool:
    """Make ``rep`` the owner of ``customer`` if it still has none, record it and tell them; False: taken."""
    before = snapshot(customer)
    if not await Customer.filter(id=customer.id, owner_id__isnull=True).using_db(conn).update(owner_id=rep.id):
        return False
    customer.owner_id = rep.id
    await LeadAssignment.create(
        customer_id=customer.id, staff_id=rep.id, assigned_at=now.astimezone(UTC), using_db=conn
    )
    await audit.record("lead.assign", "customer", customer.id, before, snapshot(customer), platform="leads", conn=conn)
    details = [f"> 客户：{customer.name}"]
    details += [f"> {label}：{value}" for label, value in
                (("地区", lead.region), ("行业", lead.industry), ("联系人", lead.contact), ("电话", lead.phone),
                 ("需求", lead.note)) if value]  # fmt: skip
    hours = services.settings.leads.return_hours
    text = "\n".join(["**新线索**", *details, first_action(lead), f"{hours} 小时内未跟进将退回公海。"])
    await services.outbox.push(
        rep, Reply.markdown(text), f"lead:{customer.id}:{rep.id}:{now.isoformat()}", using_db=conn
    )
    return True


async def lead_of(customer: Customer, conn: BaseDBAsyncClient | None) -> Lead:
    """A stored customer as a lead: its region (custom field 地区), industry and first contact."""
    contact = await Contact.filter(customer_id=customer.id).using_db(conn).order_by("id").first()
    region = str((customer.custom_fields or {}).get(REGION_FIELD) or "")
    return Lead(name=customer.name, industry=customer.industry, region=region,
                contact=contact.name if contact else "", phone=contact.phone if contact else "")  # fmt: skip


@capability.on_imported(order=10)
async def assign_imported(services: Services, customer_ids: list[int]) -> None:
    """Customers an import leaves without an owner are leads, whether it created them or found them stored (a
    re-imported customer nobody owns is offered like a new one; one with an owner keeps it): each is assigned as
    ``POST /leads`` would. An import hands over thousands at once, so each route's team is looked up once per
    batch, and a team whose reps are all at the cap is not asked again in it (their load only grows)."""
    now = services.clock.now()
    settings = services.settings.leads
    teams: dict[tuple[str, str], list[Staff]] = {}
    full: set[tuple[int, ...]] = set()
    async with in_transaction() as conn:
        unowned = Customer.filter(id__in=customer_ids, owner_id__isnull=True).exclude(stage=Stage.LOST)
        for customer in await unowned.using_db(conn).order_by("id"):
            lead = await lead_of(customer, conn)
            key = (lead.region, lead.industry)
            if key not in teams:
                teams[key] = await _team_for(settings, lead, conn)
            team = tuple(r.id for r in teams[key])
            if team in full:
                continue
            rep = await _least_loaded(teams[key], settings.max_open_per_rep, conn)
            if rep is None:
                full.add(team)
                continue
            await _give(services, customer, lead, rep, now, conn)


def _lead_of(body: bytes) -> Lead:
    """The lead in a request body, or ``ValueError`` saying what is wrong with it."""
    try:
        data = parse_json(body)
    except JSONError as exc:
        raise ValueError("body is not JSON") from exc
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    values: dict[str, str] = {}
    for key, limit in TEXT_FIELDS.items():
        value = data.get(key, "")
        if not isinstance(value, str) or len(value.strip()) > limit:
            raise ValueError(f"{key} must be a string of at most {limit} characters")
        values[key] = value.strip()
    if not values["name"]:
        raise ValueError("name is required")
    return Lead(**values)


def _signed(secret: str, body: bytes, signature: str) -> bool:
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return bool(secret) and hmac.compare_digest(expected, signature.strip().lower())


async def receive_lead(request: web.Request) -> web.Response:
    """``POST /leads``: a signed lead becomes a customer (and contact) and is assigned; 201 with who took it."""
    services = request.app[BOT]
    secret = services.settings.leads.secret
    body = await read_body(request, MAX_LEAD_BYTES)
    if not secret:
        raise web.HTTPNotFound()
    if body is None:
        return web.json_response({"error": "body too large"}, status=413)
    if not _signed(secret, body, request.headers.get(SIGNATURE_HEADER, "")):
        return web.json_response({"error": "bad signature"}, status=401)
    try:
        lead = _lead_of(body)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    now = request.app[CLOCK].now()
    async with in_transaction() as conn:
        if await Customer.filter(Q(name=lead.name)).using_db(conn).exists():
            return web.json_response({"error": f"customer {lead.name!r} exists"}, status=409)
        customer = await Customer.create(name=lead.name, industry=lead.industry, owner_id=None, using_db=conn,
                                         custom_fields={REGION_FIELD: lead.region} if lead.region else {})  # fmt: skip
        if lead.contact or lead.phone:
            await Contact.create(customer_id=customer.id, name=lead.contact, phone=lead.phone, using_db=conn)
        await audit.record(
            "lead.create", "customer", customer.id, None, snapshot(customer), platform="leads", conn=conn
        )
        rep = await assign(services, customer, lead, now, conn)
    services.understanding.learn_customer(lead.name, [])
    services.outbox.wake()
    return web.json_response({"customer_id": customer.id, "owner": rep.name if rep else None}, status=201)


capability.route("POST", "/leads", receive_lead)


@capability.rule(order=140)
async def lead_return(ctx: RuleContext) -> list[Firing]:
    """A lead its rep did not follow up within ``return_hours`` goes back to the pool; the rep is told."""
    hours = ctx.settings.leads.return_hours
    due = (
        await LeadAssignment.filter(returned_at__isnull=True, assigned_at__lte=ctx.now - timedelta(hours=hours))
        .order_by("id")
        .limit(500)
        .prefetch_related("customer", "staff")
    )
    firings = []
    for a in due:
        c = a.customer
        if c.owner_id != a.staff_id or (c.last_followup_at is not None and c.last_followup_at >= a.assigned_at):
            await LeadAssignment.filter(id=a.id).update(returned_at=ctx.now)  # worked, or moved on: done with it
            continue
        text = f"**线索退回公海**\n> 客户：{c.name}\n> 分配 {hours} 小时内没有跟进，已退回公海，同事可以认领。"
        firings.append(Firing("lead_return", f"lead_return:{a.id}", a.staff, text, c, apply=_returning(a, ctx.now)))
    return firings


def _returning(a: LeadAssignment, now: datetime) -> Any:
    async def apply() -> None:
        before = snapshot(a.customer)
        if await Customer.filter(id=a.customer_id, owner_id=a.staff_id).update(owner_id=None):
            a.customer.owner_id = None
            await audit.record(
                "lead.return", "customer", a.customer_id, before, snapshot(a.customer), platform="scheduler"
            )
        await LeadAssignment.filter(id=a.id).update(returned_at=now)

    return apply

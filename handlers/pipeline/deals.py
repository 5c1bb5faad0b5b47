"""What an opportunity is worth and how it moves: its win probability and weighted amount, finding the deal a rep
means among a customer's, the fields a stage requires, and moving it to a stage (closing the old stage in its
history, opening the new one, auditing both, and letting the customer's stage follow its most advanced open deal).

Every write here goes through the audit log with before and after, inside the caller's transaction.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from bot import audit, sql
from bot.config import Settings
from bot.types import Reply
from models.customers import STAGE_LABELS, Customer, PendingChoice, Stage
from models.opportunities import OPEN_STAGES, Opportunity, StageChange, rank
from models.staff import Staff

CHOICE_TTL = timedelta(minutes=30)
# Words that name a deal without telling deals apart: 华为电源项目 means the deal whose name has 电源.
_GENERIC = re.compile(r"商机|项目|单子|这单|那单|订单|生意|的")

# Fields a playbook may require that are columns of the deal; any other name is a free field (需求分析 …).
COLUMN_FIELDS: dict[str, str] = {
    "金额": "amount",
    "amount": "amount",
    "预计成交": "expected_close",
    "预计签约": "expected_close",
    "expected_close": "expected_close",
    "来源": "source",
    "source": "source",
    "概率": "probability",
    "赢率": "probability",
    "probability": "probability",
}


@dataclass(frozen=True)
class Actor:
    """Who makes a change, for the audit log: a staff member (from a platform) or the system (an import)."""

    who: Staff | str
    platform: str = ""

    @property
    def staff_id(self) -> int | None:
        return self.who.id if isinstance(self.who, Staff) else None


def probability(opp: Opportunity, settings: Settings) -> float:
    """The deal's own probability when set, else its stage's (won 1, lost 0)."""
    if opp.probability is not None:
        return float(opp.probability)
    stage = Stage(opp.stage)
    if stage == Stage.WON:
        return 1.0
    return float(settings.pipeline.probabilities.get(stage.value, 0.0))


def weighted(opp: Opportunity, settings: Settings) -> float:
    return float(opp.amount) * probability(opp, settings)


def yuan(amount: float | Decimal) -> str:
    """An amount as people say it: 300万, 12.5万, 8000元."""
    value = float(amount)
    if abs(value) >= 10_000:
        return f"{value / 10_000:,.2f}".rstrip("0").rstrip(".") + "万"
    return f"{value:,.0f}元"


def snapshot(opp: Opportunity) -> dict[str, Any]:
    """What the audit log keeps of a deal before and after a change."""
    return {
        "customer_id": opp.customer_id,
        "name": opp.name,
        "amount": str(opp.amount),
        "stage": str(opp.stage),
        "probability": opp.probability,
        "expected_close": opp.expected_close.isoformat() if opp.expected_close else None,
        "owner_id": opp.owner_id,
        "source": opp.source,
        "lost_reason": opp.lost_reason,
        "details": dict(opp.details or {}),
    }


def describe(opp: Opportunity, settings: Settings) -> str:
    """One line about a deal: name, stage, amount, probability, expected close."""
    close = f"，预计 {opp.expected_close.isoformat()} 成交" if opp.expected_close else ""
    return (
        f"「{opp.name}」{STAGE_LABELS[Stage(opp.stage)]}，{yuan(opp.amount)}，"
        f"赢率 {probability(opp, settings):.0%}{close}"
    )


# -- which deal ------------------------------------------------------------------------------------------------------


def _core(typed: str) -> str:
    return _GENERIC.sub("", typed).strip()


def matching(deals: list[Opportunity], typed: str) -> list[Opportunity]:
    """The deals ``typed`` may mean: the one so named, else those whose name contains what is typed (without
    generic words like 项目), or is contained in it."""
    typed = typed.strip()
    if exact := [d for d in deals if d.name == typed]:
        return exact
    core = _core(typed)
    if not core:
        return deals
    return [d for d in deals if core in d.name or (_core(d.name) and _core(d.name) in core)]


async def pick_deal(
    customer: Customer,
    typed: str,
    *,
    staff: Staff,
    intent: str,
    slots: dict[str, Any],
    now: datetime,
    conn: BaseDBAsyncClient | None,
    open_only: bool = True,
) -> Opportunity | Reply:
    """The deal of ``customer`` that ``typed`` means, or the reply to send instead (none, or a numbered question
    whose answer re-runs ``intent`` with the deal named)."""
    query = Opportunity.filter(customer_id=customer.id)
    if open_only:
        query = query.filter(stage__in=list(OPEN_STAGES))
    deals = list(await query.using_db(conn).order_by("id"))
    if not deals:
        return Reply(
            f"「{customer.name}」还没有进行中的商机。发送「商机 {customer.name} 商机名称 金额 预计几月签」新建一个。"
        )
    found = matching(deals, typed)
    if len(found) == 1:
        return found[0]
    if not found:
        names = "、".join(d.name for d in deals)
        return Reply(f"「{customer.name}」没有叫「{typed}」的商机。进行中的商机有：{names}。")
    await PendingChoice.filter(staff_id=staff.id).using_db(conn).delete()
    await PendingChoice.create(
        staff_id=staff.id,
        intent=intent,
        slots=dict(slots),
        slot="opportunity",
        options=[d.name for d in found],
        expires_at=now.astimezone(UTC) + CHOICE_TTL,
        using_db=conn,
    )
    lines = [f"「{customer.name}」有 {len(found)} 个商机，您指的是哪一个？请回复序号："]
    lines.extend(f"{i}. {d.name}" for i, d in enumerate(found, 1))
    return Reply("\n".join(lines))


# -- required fields -------------------------------------------------------------------------------------------------


def has_field(opp: Opportunity, name: str) -> bool:
    column = COLUMN_FIELDS.get(name)
    if column == "amount":
        return bool(opp.amount and opp.amount > 0)
    if column is not None:
        return getattr(opp, column) not in (None, "")
    return bool(str((opp.details or {}).get(name) or "").strip())


def missing(opp: Opportunity, required: list[str]) -> list[str]:
    return [name for name in required if not has_field(opp, name)]


def fill_hint(opp: Opportunity, names: list[str]) -> str:
    return "、".join(f"「商机 {opp.name} {name}：…」" for name in names)


# -- moving --------------------------------------------------------------------------------------------------------


async def start(
    customer: Customer,
    *,
    name: str,
    amount: float,
    stage: Stage,
    owner_id: int | None,
    now: datetime,
    actor: Actor,
    conn: BaseDBAsyncClient | None,
    expected_close: date | None = None,
    probability_override: float | None = None,
    source: str = "",
) -> Opportunity:
    """A new deal at ``stage``, its first history row, the audit row, and the customer's stage following it."""
    at = now.astimezone(UTC)
    opp = await Opportunity.create(
        customer_id=customer.id,
        name=name,
        amount=Decimal(str(amount)),
        stage=stage,
        probability=probability_override,
        expected_close=expected_close,
        owner_id=owner_id,
        source=source,
        reached=max(rank(stage), 0),
        stage_entered_at=at,
        closed_at=at if stage in (Stage.WON, Stage.LOST) else None,
        created_at=at,
        using_db=conn,
    )
    await _enter(opp, stage, at, actor, conn)
    await audit.record(
        "create_opportunity", "opportunity", opp.id, None, snapshot(opp), actor=actor.who, platform=actor.platform,
        conn=conn,
    )  # fmt: skip
    await follow_customer(customer.id, now, actor, conn)
    return opp


async def _enter(opp: Opportunity, stage: Stage, at: datetime, actor: Actor, conn: BaseDBAsyncClient | None) -> None:
    """The history row of ``opp`` entering ``stage`` at ``at``."""
    await StageChange.create(
        opportunity_id=opp.id, stage=stage, entered_at=at, actor_id=actor.staff_id, owner_id=opp.owner_id,
        using_db=conn,
    )  # fmt: skip


async def _count_stay(row: StageChange, stay: float, conn: BaseDBAsyncClient | None) -> None:
    """One more completed stay in the funnel's per-day counts, in the transaction that closed it; an upsert, so
    that two moves closing stays of the same day both count."""
    db = conn or sql.default()
    upsert = (
        "INSERT INTO opportunity_stay_count (owner_id, stage, days, n) VALUES (?, ?, ?, 1)"
        " ON CONFLICT (owner_id, stage, days) DO UPDATE SET n = opportunity_stay_count.n + 1"
    )
    await db.execute_query(sql.for_conn(upsert, db), [row.owner_id or 0, Stage(row.stage).value, math.floor(stay)])


async def move(
    opp: Opportunity,
    stage: Stage,
    *,
    now: datetime,
    actor: Actor,
    conn: BaseDBAsyncClient | None,
    reason: str = "",
) -> None:
    """Move ``opp`` to ``stage`` now: the current history row is closed, a new one opened, the deal, the audit
    log and the customer's stage updated. The caller has checked that the move is allowed."""
    at = now.astimezone(UTC)
    before = snapshot(opp)
    for current in await StageChange.filter(opportunity_id=opp.id, left_at__isnull=True).using_db(conn):
        stay = (at - current.entered_at).total_seconds() / 86400
        await StageChange.filter(id=current.id).using_db(conn).update(left_at=at, stay_days=stay)
        await _count_stay(current, stay, conn)
    await _enter(opp, stage, at, actor, conn)
    opp.stage = stage
    opp.stage_entered_at = at
    opp.reached = max(opp.reached, rank(stage))
    opp.closed_at = at if stage in (Stage.WON, Stage.LOST) else None
    if stage == Stage.LOST:
        opp.lost_reason = reason[:200]
    await opp.save(
        using_db=conn,
        update_fields=["stage", "stage_entered_at", "reached", "closed_at", "lost_reason", "updated_at"],
    )
    await audit.record(
        "set_opportunity_stage", "opportunity", opp.id, before, snapshot(opp), actor=actor.who,
        platform=actor.platform, conn=conn,
    )  # fmt: skip
    await follow_customer(opp.customer_id, now, actor, conn)


async def follow_customer(customer_id: int, now: datetime, actor: Actor, conn: BaseDBAsyncClient | None) -> None:
    """The customer's stage follows its most advanced open deal; with none open, won if any deal was won, else
    lost. A customer without deals keeps the stage set by hand."""
    rows = await Opportunity.filter(customer_id=customer_id).using_db(conn).values_list("stage", flat=True)
    stages = [Stage(str(s)) for s in rows]
    if not stages:
        return
    open_stages = [s for s in stages if s in OPEN_STAGES]
    target = max(open_stages, key=rank) if open_stages else Stage.WON if Stage.WON in stages else Stage.LOST
    customer = await Customer.get(id=customer_id, using_db=conn)
    if customer.stage == target:
        return
    before = {"stage": str(customer.stage), "won_at": customer.won_at.isoformat() if customer.won_at else None}
    customer.stage = target
    if target == Stage.WON:
        customer.won_at = now.astimezone(UTC)
    await customer.save(using_db=conn, update_fields=["stage", "won_at", "updated_at"])
    after = {"stage": str(target), "won_at": customer.won_at.isoformat() if customer.won_at else None}
    await audit.record(
        "customer.stage_from_deals",
        "customer",
        customer_id,
        before,
        after,
        actor=actor.who,
        platform=actor.platform,
        conn=conn,
    )

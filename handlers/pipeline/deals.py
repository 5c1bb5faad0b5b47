"""What an opportunity is worth and how it moves: its win probability and weighted amount, finding the deal a rep
means among a customer's, the fields a stage requires, and moving it to a stage (closing the old stage in its
history, opening the new one, auditing both, and letting the customer's stage follow its most advanced open deal)
or back (``unmove``, the undo of a move).

Every write here goes through the audit log with before and after, inside the caller's transaction, and keeps the
funnel's figures with it: the stay counts per day and per slot (``StayCount``, ``StaySlotCount``), the totals per
owner and stage (``FunnelCount``, through ``recount``) and when the deal last moved (``last_moved_at``).
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
from models.opportunities import OPEN_STAGES, SLOTS_PER_DAY, Opportunity, StageChange, rank
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


# -- the funnel's totals --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """What one deal adds to the funnel's totals (``FunnelCount``): its row's key and its amounts."""

    owner_id: int
    stage: str
    reached: int
    amount: float
    plain: float  # the amount when the deal has no probability of its own (weighted by its stage's)
    own: float  # amount × its own probability, when it has one


def tally(opp: Opportunity) -> Tally:
    amount = float(opp.amount)
    own = None if opp.probability is None else amount * float(opp.probability)
    return Tally(
        opp.owner_id or 0, Stage(opp.stage).value, opp.reached, amount, amount if own is None else 0.0, own or 0.0
    )


async def _add(tallied: Tally, sign: int, db: BaseDBAsyncClient) -> None:
    upsert = (
        "INSERT INTO opportunity_funnel_count (owner_id, stage, reached, n, amount, plain, own)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (owner_id, stage, reached) DO UPDATE SET"
        " n = opportunity_funnel_count.n + excluded.n, amount = opportunity_funnel_count.amount + excluded.amount,"
        " plain = opportunity_funnel_count.plain + excluded.plain, own = opportunity_funnel_count.own + excluded.own"
    )
    values = [sign, sign * tallied.amount, sign * tallied.plain, sign * tallied.own]
    await db.execute_query(sql.for_conn(upsert, db), [tallied.owner_id, tallied.stage, tallied.reached, *values])


async def recount(before: Tally | None, opp: Opportunity, conn: BaseDBAsyncClient | None) -> None:
    """The funnel's totals after ``opp`` changed from ``before`` (None: it is new): its old row loses it, its new
    row gains it, each an upsert of a difference, so that concurrent changes of one owner's deals all count."""
    after = tally(opp)
    if before == after:
        return
    db = conn or sql.default()
    if before is not None:
        await _add(before, -1, db)
    await _add(after, 1, db)


async def _last_moved(customer_id: int, at: datetime, conn: BaseDBAsyncClient | None) -> datetime:
    """When a deal of the customer that changes stage ``at`` last moved: then, or at a later follow-up."""
    followed = await Customer.filter(id=customer_id).using_db(conn).values_list("last_followup_at", flat=True)
    last = followed[0] if followed else None
    return max(at, last) if isinstance(last, datetime) else at


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
        last_moved_at=max(at, customer.last_followup_at) if customer.last_followup_at else at,
        closed_at=at if stage in (Stage.WON, Stage.LOST) else None,
        created_at=at,
        using_db=conn,
    )
    await recount(None, opp, conn)
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


async def _count_stay(row: StageChange, stay: float, sign: int, conn: BaseDBAsyncClient | None) -> None:
    """One more (``sign`` 1) or one fewer (-1, a move undone) completed stay in the funnel's per-day and per-slot
    counts, in the transaction that closed or reopened it; upserts, so that two moves closing stays of the same
    day both count."""
    db = conn or sql.default()
    owner, stage = row.owner_id or 0, Stage(row.stage).value
    for table, column, bucket in (
        ("opportunity_stay_count", "days", math.floor(stay)),
        ("opportunity_stay_slot_count", "slot", math.floor(stay * SLOTS_PER_DAY)),
    ):
        upsert = (
            f"INSERT INTO {table} (owner_id, stage, {column}, n) VALUES (?, ?, ?, ?)"
            f" ON CONFLICT (owner_id, stage, {column}) DO UPDATE SET n = {table}.n + excluded.n"
        )
        await db.execute_query(sql.for_conn(upsert, db), [owner, stage, bucket, sign])


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
    before, counted = snapshot(opp), tally(opp)
    for current in await StageChange.filter(opportunity_id=opp.id, left_at__isnull=True).using_db(conn):
        stay = (at - current.entered_at).total_seconds() / 86400
        await StageChange.filter(id=current.id).using_db(conn).update(left_at=at, stay_days=stay)
        await _count_stay(current, stay, 1, conn)
    await _enter(opp, stage, at, actor, conn)
    opp.stage = stage
    opp.stage_entered_at = at
    opp.last_moved_at = await _last_moved(opp.customer_id, at, conn)
    opp.reached = max(opp.reached, rank(stage))
    opp.closed_at = at if stage in (Stage.WON, Stage.LOST) else None
    if stage == Stage.LOST:
        opp.lost_reason = reason[:200]
    await opp.save(
        using_db=conn,
        update_fields=[
            "stage", "stage_entered_at", "last_moved_at", "reached", "closed_at", "lost_reason", "updated_at"
        ],
    )  # fmt: skip
    await recount(counted, opp, conn)
    await audit.record(
        "set_opportunity_stage", "opportunity", opp.id, before, snapshot(opp), actor=actor.who,
        platform=actor.platform, at=at, conn=conn,
    )  # fmt: skip
    await follow_customer(opp.customer_id, now, actor, conn)


async def unmove(
    opp: Opportunity, before: dict[str, Any], *, now: datetime, actor: Actor, conn: BaseDBAsyncClient | None
) -> bool:
    """Take back the last move of ``opp`` (``before`` is the deal as the move found it): the stage it entered
    leaves the history, the stage it left is current again and its stay uncounted, the deal, the funnel's totals
    and the customer's stage as before. False, with nothing changed, when the deal has moved since."""
    history = await StageChange.filter(opportunity_id=opp.id).using_db(conn).order_by("-entered_at", "-id").limit(2)
    last, earlier = [*history, None, None][:2]
    if (
        last is None or earlier is None or last.left_at is not None or last.stage != opp.stage
        or earlier.stage != before.get("stage") or earlier.left_at != last.entered_at or earlier.stay_days is None
    ):  # fmt: skip
        return False
    counted = tally(opp)
    await StageChange.filter(id=last.id).using_db(conn).delete()
    await _count_stay(earlier, earlier.stay_days, -1, conn)
    await StageChange.filter(id=earlier.id).using_db(conn).update(left_at=None, stay_days=None)
    stages = await StageChange.filter(opportunity_id=opp.id).using_db(conn).values_list("stage", flat=True)
    opp.stage = Stage(earlier.stage)
    opp.stage_entered_at = earlier.entered_at
    opp.last_moved_at = await _last_moved(opp.customer_id, earlier.entered_at, conn)
    opp.reached = max([0, *(rank(str(s)) for s in stages)])
    opp.closed_at = None
    opp.lost_reason = str(before.get("lost_reason") or "")
    await opp.save(
        using_db=conn,
        update_fields=[
            "stage", "stage_entered_at", "last_moved_at", "reached", "closed_at", "lost_reason", "updated_at"
        ],
    )  # fmt: skip
    await recount(counted, opp, conn)
    await follow_customer(opp.customer_id, now, actor, conn)
    return True


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
        at=now.astimezone(UTC),
        conn=conn,
    )

"""The customer health score (0–100) and the customers most at risk.

A customer starts at 100 and loses points for what the records say (README "Customer health score"):
no contact for the ladder's warn days (−15) or handover days (−30); each open ticket (−10, at most −20); each SLA
breach of the last 90 days — a ticket answered after its due time, or still unanswered past it (−15, at most −30);
the latest NPS answer a detractor (−20) or passive (−5); orders of the last 90 days under 70% of the 90 days before
(−15); each customer message of the last 30 days with a ticket word of the keyword rules, not negated (−10, at most
−20). Each signal is one grouped SQL query over the customers asked about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot import sql
from bot.context import Services
from handlers.keywords import KeywordMatcher
from handlers.pipeline.funnel import Scope
from handlers.reports.capability import capability
from handlers.reports.health import GREEN, RED, YELLOW
from models.customers import Customer
from models.nps import DETRACTOR_MAX, PROMOTER_MIN
from models.tickets import TicketStatus

WINDOW_DAYS = 90  # SLA breaches and the order trend look this far back
WORDS_DAYS = 30  # negative words look this far back
ORDER_DROP = 0.7  # orders of the last window under this share of the window before: a drop
CHUNK = 500  # customers per query


@dataclass(frozen=True)
class Subject:
    """What scoring a customer reads of it (plain values: a team's thousands are not loaded as models)."""

    id: int
    name: str
    grade: str
    last_contact: datetime  # the last follow-up, else when the customer was created
    owner: str  # the owner's name, empty in the pool

    @staticmethod
    def of(customer: Customer) -> Subject:
        last = customer.last_followup_at or customer.created_at
        return Subject(customer.id, customer.name, customer.grade, last, "")


@dataclass
class CustomerHealth:
    customer: Subject
    score: int = 100
    reasons: list[str] = field(default_factory=list)

    def lose(self, points: int, reason: str) -> None:
        if points > 0:
            self.score = max(0, self.score - points)
            self.reasons.append(reason)

    @property
    def light(self) -> str:
        return GREEN if self.score >= 80 else YELLOW if self.score >= 60 else RED


def _in(column: str, ids: list[int]) -> str:
    return f"{column} IN ({', '.join('?' for _ in ids)})"


def _moment(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def _counts(query: str, params: list[Any]) -> dict[int, int]:
    return {int(r["id"]): int(r["n"]) for r in await sql.select(sql.default(), query, params)}


async def score_customers(bot: Services, customers: list[Subject], now: datetime) -> list[CustomerHealth]:
    """The health of each of ``customers`` as of ``now``, a chunk of them per query (bounded parameter lists)."""
    scored: list[CustomerHealth] = []
    for start in range(0, len(customers), CHUNK):
        scored.extend(await _score_chunk(bot, customers[start : start + CHUNK], now))
    return scored


async def _score_chunk(bot: Services, customers: list[Subject], now: datetime) -> list[CustomerHealth]:
    ids = [c.id for c in customers]
    rules = bot.settings.rules
    window = (now - timedelta(days=WINDOW_DAYS)).astimezone(UTC)
    open_statuses = [TicketStatus.OPEN.value, TicketStatus.IN_PROGRESS.value]
    open_tickets = await _counts(
        f"SELECT customer_id AS id, COUNT(*) AS n FROM ticket WHERE status IN (?, ?) AND {_in('customer_id', ids)}"
        " GROUP BY customer_id",
        [*open_statuses, *ids],
    )
    breaches = await _counts(
        "SELECT customer_id AS id, COUNT(*) AS n FROM ticket WHERE first_response_due >= ? AND"
        " ((first_responded_at IS NOT NULL AND first_responded_at > first_response_due)"
        f" OR (first_responded_at IS NULL AND first_response_due <= ?)) AND {_in('customer_id', ids)}"
        " GROUP BY customer_id",
        [window, now.astimezone(UTC), *ids],
    )
    latest_scores: dict[int, int] = {}
    for row in await sql.select(
        sql.default(),
        "SELECT s.customer_id AS id, s.score AS score FROM nps_survey s WHERE s.score IS NOT NULL"
        f" AND {_in('s.customer_id', ids)} AND s.answered_at = (SELECT MAX(x.answered_at) FROM nps_survey x"
        " WHERE x.customer_id = s.customer_id AND x.score IS NOT NULL)",
        ids,
    ):
        latest_scores[int(row["id"])] = int(row["score"])
    tz = bot.settings.tz
    today = now.astimezone(tz).date()
    recent_from, before_from = today - timedelta(days=WINDOW_DAYS), today - timedelta(days=2 * WINDOW_DAYS)
    orders: dict[int, tuple[float, float]] = {}
    for row in await sql.select(
        sql.default(),
        "SELECT customer_id AS id, SUM(CASE WHEN order_date >= ? THEN total ELSE 0 END) AS recent,"
        " SUM(CASE WHEN order_date < ? THEN total ELSE 0 END) AS before FROM customer_order"
        f" WHERE status <> 'cancelled' AND order_date >= ? AND order_date <= ? AND {_in('customer_id', ids)}"
        " GROUP BY customer_id",
        [recent_from, recent_from, before_from, today, *ids],
    ):
        orders[int(row["id"])] = (float(row["recent"] or 0), float(row["before"] or 0))
    negative = await _negative_messages(bot, ids, now)
    result = []
    for customer in customers:
        h = CustomerHealth(customer)
        warn, handover = rules.ladder_days(customer.grade)
        days = int((now - customer.last_contact).total_seconds() // 86400)
        if days >= handover:
            h.lose(30, f"{days} 天未联系")
        elif days >= warn:
            h.lose(15, f"{days} 天未联系")
        if n := open_tickets.get(customer.id, 0):
            h.lose(min(20, 10 * n), f"未结工单 {n}")
        if n := breaches.get(customer.id, 0):
            h.lose(min(30, 15 * n), f"超时工单 {n}")
        score = latest_scores.get(customer.id)
        if score is not None and score <= DETRACTOR_MAX:
            h.lose(20, f"NPS {score} 分")
        elif score is not None and score < PROMOTER_MIN:
            h.lose(5, f"NPS {score} 分")
        recent, before = orders.get(customer.id, (0.0, 0.0))
        if before > 0 and recent < ORDER_DROP * before:
            h.lose(15, f"订单下滑 {1 - recent / before:.0%}")
        if n := negative.get(customer.id, 0):
            h.lose(min(20, 10 * n), f"负面消息 {n}")
        result.append(h)
    return result


async def _negative_messages(bot: Services, ids: list[int], now: datetime) -> dict[int, int]:
    """Customer messages of the last ``WORDS_DAYS`` days with a ticket word of the keyword rules, not negated."""
    matcher = KeywordMatcher(bot.settings.keywords)
    counts: dict[int, int] = {}
    rows = await sql.select(
        sql.default(),
        "SELECT customer_id AS id, platform, sender, text FROM message WHERE to_bot = ? AND sent_at >= ?"
        f" AND sent_at <= ? AND {_in('customer_id', ids)}",
        [False, (now - timedelta(days=WORDS_DAYS)).astimezone(UTC), now.astimezone(UTC), *ids],
    )
    for row in rows:
        if (
            bot.directory.is_external(str(row["platform"]), str(row["sender"]))
            and matcher.match(str(row["text"])).ticket
        ):
            counts[int(row["id"])] = counts.get(int(row["id"]), 0) + 1
    return counts


async def at_risk(bot: Services, scope: Scope, now: datetime, limit: int) -> tuple[list[CustomerHealth], int]:
    """The customers of ``scope`` scoring under ``[reports] at_risk_below``, lowest first (at most ``limit``), and
    how many there are."""
    owners = ""
    params: list[Any] = []
    if scope.owner_ids is not None:
        owners, params = f" WHERE {_in('c.owner_id', scope.owner_ids)}", list(scope.owner_ids)
    rows = await sql.select(
        sql.default(),
        "SELECT c.id AS id, c.name AS name, c.grade AS grade, c.last_followup_at AS last_followup_at,"
        " c.created_at AS created_at, s.name AS owner FROM customer c LEFT JOIN staff s ON s.id = c.owner_id"
        f"{owners} ORDER BY c.id",
        params,
    )
    subjects = [
        Subject(
            int(r["id"]),
            str(r["name"]),
            str(r["grade"] or ""),
            _moment(r["last_followup_at"] or r["created_at"]),
            str(r["owner"] or ""),
        )
        for r in rows
    ]
    scored = await score_customers(bot, subjects, now)
    risky = [h for h in scored if h.score < bot.settings.reports.at_risk_below]
    risky.sort(key=lambda h: (h.score, h.customer.id))
    return risky[:limit], len(risky)


def at_risk_text(scope: Scope, rows: list[CustomerHealth], total: int, show_owner: bool) -> str:
    if not rows:
        return f"✅ {scope.label}客户暂时没有风险客户（健康度都不低于阈值）。"
    lines = [f"⚠️ {scope.label}风险客户 {total} 个（健康度从低到高）："]
    for h in rows:
        owner = f"［{h.customer.owner or '公海'}］" if show_owner else ""
        lines.append(f"{h.light} {h.customer.name}{owner} {h.score} 分：{'、'.join(h.reasons)}")
    if total > len(rows):
        lines.append(f"……另有 {total - len(rows)} 个")
    return "\n".join(lines)


@capability.card_line(order=10)
async def health_line(bot: Services, customer: Customer, now: datetime) -> list[str]:
    """健康度：72 分 🟡（20 天未联系、未结工单 1）on the profile card."""
    [h] = await score_customers(bot, [Subject.of(customer)], now)
    reasons = f"（{'、'.join(h.reasons)}）" if h.reasons else ""
    return [f"健康度：{h.light} {h.score} 分{reasons}"]

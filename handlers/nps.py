"""NPS surveys: ask 15 days after a delivery, capture the 0–10 answer, compute NPS, and act on it.

* Ask: the rule ``nps_survey`` (in ``RULES``) finds customers whose deal was won or whose ticket was resolved
  ``rules.nps_delay_days`` ago and who got no survey in the last ``rules.nps_period_days``, creates a survey with a
  single-use link, and sends it to the customer contact through the platform's customer-contact API (WeCom
  ``customer_contact``, the rep confirms) or gives the rep a ready-to-forward message.
* Capture: the survey page (``bot.survey``) and customer replies in the archived chat ("9", "9分", "打9分", "十分")
  while the survey is open; the first answer wins.
* Compute: ``本月NPS`` / ``NPS 上季度`` = % promoters (9–10) − % detractors (0–6) over the surveys answered in the
  period, per rep (the rep who owned the customer when it was surveyed) and per team (a manager's reports).
* Act: a detractor opens a follow-up ticket for the customer's owner and tells the manager; a promoter is tagged
  「推荐者」.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from tortoise.transactions import in_transaction

from bot.channels import Address
from bot.config import Settings
from bot.intents import Context, IntentRouter, Slots
from bot.rules import Firing, Rule, RuleContext, release_time
from bot.survey import TO_CUSTOMERS, expires_at, new_token, survey_key, survey_link
from bot.types import IncomingMessage, Reply
from handlers.reminders import select, utc
from models.audit import AuditLog
from models.customers import Contact, Customer
from models.messages import Message
from models.nps import DETRACTOR_MAX, PROMOTER_MIN, Survey, SurveyChannel, SurveyTrigger, token_hash
from models.staff import Role, Staff
from models.tickets import Ticket, TicketPriority, TicketStatus

if TYPE_CHECKING:
    from bot.pipeline import Bot

log = logging.getLogger(__name__)

router = IntentRouter()

PROMOTER_TAG = "推荐者"
RULE_NAME = "nps_survey"
# A delivery is surveyed when it is ``nps_delay_days`` old; after downtime, up to this many days late, never later.
GRACE_DAYS = 7
EXTERNAL_PREFIXES = ("wm", "wo")


# -- ask ---------------------------------------------------------------------------------------------------------


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
        _keep_earliest(due, _Due(customer_id, SurveyTrigger.DEAL_WON, customer_id, _moment(row["won_at"])))
    for row in resolved:
        assignee_id = int(row["assignee_id"]) if row["assignee_id"] is not None else None
        item = _Due(
            int(row["customer_id"]),
            SurveyTrigger.TICKET_RESOLVED,
            int(row["id"]),
            _moment(row["resolved_at"]),
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
        firings.append(_survey_firing(rc, customer, owner, item))
    return firings


def _moment(value: Any) -> datetime:
    """A timestamp from a raw query: PostgreSQL returns datetimes, SQLite the ISO text Tortoise stored."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _keep_earliest(due: dict[int, _Due], item: _Due) -> None:
    current = due.get(item.customer_id)
    if current is None or item.event_at < current.event_at:
        due[item.customer_id] = item


def pick_contact(contacts: Iterable[Contact]) -> Contact | None:
    """The contact to ask: one reachable in WeCom first (a decision maker before others), else the first."""
    ordered = sorted(contacts, key=lambda c: (not c.external_userid, c.role != "决策人", c.id))
    return ordered[0] if ordered else None


def customer_message_possible(settings: Settings, owner: Staff, contact: Contact | None) -> bool:
    wecom = settings.wecom
    return bool(
        wecom.customer_contact
        and wecom.enabled
        and wecom.secret
        and owner.wecom_userid
        and contact is not None
        and contact.external_userid
        and contact.external_userid.startswith(EXTERNAL_PREFIXES)
    )


def _survey_firing(rc: RuleContext, customer: Customer, owner: Staff, item: _Due) -> Firing:
    settings = rc.settings
    contact = pick_contact(customer.contacts)
    token = new_token()
    link = survey_link(settings, token)
    direct = customer_message_possible(settings, owner, contact)
    who = contact.name if contact is not None and contact.name else "客户联系人"
    days = settings.nps.link_expiry_days
    header = f"【满意度调查】客户【{customer.name}】{_event_label(item)}已满 {settings.rules.nps_delay_days} 天。"
    if direct:
        text = (
            f"{header}\n调查已通过企业微信发给 {who}，请在企业微信「客户联系 → 群发助手」中确认发送。\n"
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
        if direct and contact is not None and owner.wecom_userid:
            await rc.bot.outbox.enqueue(
                Address("wecom", owner.wecom_userid),
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


RULES: list[Rule] = [nps_survey_rule]


# -- capture -----------------------------------------------------------------------------------------------------

_CN_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CHAT_SCORE = re.compile(
    r"^(?:我)?(?:就)?(?:打|给|评|选)?(?:你们|您们|你|您)?(?:打)?"
    r"(?P<n>10|[0-9]|十|[零〇一二两三四五六七八九])(?:分)?$"
)
_TRAILING = re.compile(r"[\s。.!！~～,，、吧啦呀哈]+$")


def parse_chat_score(text: str) -> int | None:
    """A customer's chat reply that is just a score: "9", "9分", "打9分", "给你们打十分", "十分", "满分"."""
    value = unicodedata.normalize("NFKC", text or "").strip()
    value = _TRAILING.sub("", value)
    value = re.sub(r"\s+", "", value)
    if value in ("满分", "打满分", "给满分"):
        return 10
    m = _CHAT_SCORE.match(value)
    if m is None:
        return None
    n = m["n"]
    if n.isdigit():
        return int(n)
    return 10 if n == "十" else _CN_DIGITS[n]


async def capture_replies(bot: Bot, messages: list[Message]) -> int:
    """Archive hook: customer chat replies that are a score answer the customer's open survey. Returns how many."""
    answered = 0
    for message in messages:
        if message.to_bot or message.customer_id is None or not message.sender.startswith(EXTERNAL_PREFIXES):
            continue
        score = parse_chat_score(message.text)
        if score is None:
            continue
        survey = (
            await Survey.filter(
                customer_id=message.customer_id,
                answered_at=None,
                sent_at__lte=message.sent_at,
                expires_at__gt=message.sent_at,
            )
            .order_by("-sent_at")
            .first()
        )
        if survey is None:
            continue
        if await record_answer(bot, survey.id, score, "", "chat", message.sent_at):
            answered += 1
    return answered


# -- act ---------------------------------------------------------------------------------------------------------


def category(score: int) -> str:
    if score >= PROMOTER_MIN:
        return "推荐者"
    if score <= DETRACTOR_MAX:
        return "贬损者"
    return "中立者"


async def record_answer(bot: Bot, survey_id: int, score: int, comment: str, source: str, at: datetime) -> bool:
    """Store the first answer to an open survey and act on it, in one transaction. False: nothing changed."""
    if not 0 <= score <= 10:
        return False
    async with in_transaction() as conn:
        won = (
            await Survey.filter(id=survey_id, answered_at=None, sent_at__lte=at, expires_at__gt=at)
            .using_db(conn)
            .update(score=score, comment=comment, answered_at=at, answer_source=source)
        )
        if not won:
            return False
        survey = await Survey.filter(id=survey_id).using_db(conn).get()
        await _act(bot, survey, conn)
    bot.outbox.wake()
    return True


async def _act(bot: Bot, survey: Survey, conn: Any) -> None:
    assert survey.score is not None
    score = survey.score
    customer = await Customer.filter(id=survey.customer_id).using_db(conn).get()
    contact = await Contact.filter(id=survey.contact_id).using_db(conn).first() if survey.contact_id else None
    owner_id = customer.owner_id or survey.owner_id
    owner = await Staff.filter(id=owner_id).using_db(conn).first() if owner_id else None
    who = contact.name if contact is not None and contact.name else "客户"
    said = f"\n客户留言：{survey.comment}" if survey.comment else ""
    head = f"客户【{customer.name}】的 {who} 在满意度调查中打了 {score} 分（{category(score)}）。"
    after: dict[str, Any] = {"score": score, "source": survey.answer_source}
    pushes: list[tuple[Staff, str]] = []
    if score <= DETRACTOR_MAX:
        ticket = await _detractor_ticket(bot.settings, survey, customer, owner, who, conn)
        after["ticket_id"] = ticket.id
        if owner is not None:
            pushes.append((owner, f"{head}{said}\n已为您创建回访工单 #{ticket.id}，请尽快联系客户了解原因并跟进处理。"))
            manager = await Staff.filter(id=owner.manager_id or 0, active=True).using_db(conn).first()
            if manager is not None:
                pushes.append(
                    (
                        manager,
                        f"【NPS 贬损提醒】{owner.name} 负责的{head}{said}\n"
                        f"已创建回访工单 #{ticket.id}，由 {owner.name} 跟进。",
                    )
                )
    elif score >= PROMOTER_MIN:
        if PROMOTER_TAG not in (customer.tags or []):
            customer.tags = [*(customer.tags or []), PROMOTER_TAG]
            await customer.save(using_db=conn, update_fields=["tags", "updated_at"])
            after["tags_added"] = [PROMOTER_TAG]
        if owner is not None:
            pushes.append((owner, f"{head}{said}\n已为客户打上「{PROMOTER_TAG}」标签，可以请他们帮忙转介绍。"))
    elif owner is not None:
        pushes.append((owner, f"{head}{said}\n可以问问客户还有哪些地方能做得更好。"))
    for i, (staff, text) in enumerate(pushes):
        await bot.outbox.push(staff, Reply(text), f"nps:answer:{survey.id}:{i}", using_db=conn)
    await AuditLog.create(
        actor_id=None,
        actor_name=who,
        action="nps_answer",
        entity="survey",
        entity_id=str(survey.id),
        after=after,
        platform=survey.answer_source,
        using_db=conn,
    )


async def _detractor_ticket(
    settings: Settings, survey: Survey, customer: Customer, owner: Staff | None, who: str, conn: Any
) -> Ticket:
    now = survey.answered_at
    assert now is not None
    description = f"{who} 在 NPS 调查中打了 {survey.score} 分。"
    if survey.comment:
        description += f"\n客户留言：{survey.comment}"
    ticket: Ticket = await Ticket.create(
        customer_id=customer.id,
        title=f"NPS 回访：{who} 打了 {survey.score} 分",
        description=description,
        priority=TicketPriority.NORMAL,
        status=TicketStatus.OPEN,
        assignee_id=owner.id if owner is not None else None,
        source="nps",
        first_response_due=now + timedelta(minutes=settings.rules.sla_first_response_minutes_normal),
        created_at=now,
        using_db=conn,
    )
    return ticket


# -- compute -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    start: datetime  # inclusive, aware
    end: datetime  # exclusive, aware
    label: str


def _month_start(d: date) -> date:
    return d.replace(day=1)


def _add_months(d: date, months: int) -> date:
    index = d.year * 12 + d.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _quarter_start(d: date) -> date:
    return date(d.year, (d.month - 1) // 3 * 3 + 1, 1)


_PERIOD_WORDS: list[tuple[tuple[str, ...], str]] = [
    (("上上个月", "上上月"), "month:-2"),
    (("上个月", "上月", "last_month", "previous_month"), "month:-1"),
    (("本月", "这个月", "当月", "本月度", "this_month", "month", "current_month"), "month:0"),
    (("上个季度", "上季度", "上一季度", "last_quarter", "previous_quarter"), "quarter:-1"),
    (("本季度", "这个季度", "当季", "本季", "this_quarter", "quarter", "current_quarter"), "quarter:0"),
    (("去年", "上一年", "last_year", "previous_year"), "year:-1"),
    (("今年", "本年", "本年度", "this_year", "year", "current_year"), "year:0"),
]
_RECENT_DAYS = re.compile(r"(?:近|最近|过去)\s*(\d{1,3})\s*(天|日|个月|月)")
_ISO_MONTH = re.compile(r"^(\d{4})-(\d{1,2})$")
_ISO_QUARTER = re.compile(r"^(\d{4})-?Q([1-4])$", re.I)
_ISO_YEAR = re.compile(r"^(\d{4})$")


def resolve_period(value: Any, text: str, now: datetime, tz: ZoneInfo) -> Period:
    """The period a report covers: the ``period`` slot (a word, a code, ISO month/quarter/year, or a dict with
    ``start``/``end``), else what the text says, else this month. Boundaries are local midnights."""
    today = now.astimezone(tz).date()

    def at(d: date) -> datetime:
        return datetime.combine(d, time(0), tzinfo=tz)

    if isinstance(value, dict) and value.get("start"):
        start = _as_datetime(value["start"], tz)
        end = _as_datetime(value["end"], tz) if value.get("end") else now
        if start is not None and end is not None:
            return Period(start, end, f"{start:%Y-%m-%d} 至 {end:%Y-%m-%d}")
    for candidate in (str(value).strip() if isinstance(value, str) else "", text or ""):
        if not candidate:
            continue
        if m := _ISO_MONTH.match(candidate):
            first = date(int(m[1]), int(m[2]), 1)
            return Period(at(first), at(_add_months(first, 1)), f"{first.year}年{first.month}月")
        if m := _ISO_QUARTER.match(candidate):
            first = date(int(m[1]), (int(m[2]) - 1) * 3 + 1, 1)
            return Period(at(first), at(_add_months(first, 3)), f"{first.year}年第{m[2]}季度")
        if m := _ISO_YEAR.match(candidate):
            first = date(int(m[1]), 1, 1)
            return Period(at(first), at(date(first.year + 1, 1, 1)), f"{first.year}年")
        if m := _RECENT_DAYS.search(candidate):
            n = int(m[1])
            days = n if m[2] in ("天", "日") else n * 30
            return Period(now - timedelta(days=days), now, f"近{n}{m[2]}")
        lowered = candidate.lower()
        for words, code in _PERIOD_WORDS:
            if any(w in lowered for w in words):
                return _named_period(code, today, at)
    return _named_period("month:0", today, at)


def _named_period(code: str, today: date, at: Callable[[date], datetime]) -> Period:
    unit, offset_text = code.split(":")
    offset = int(offset_text)
    if unit == "month":
        first = _add_months(_month_start(today), offset)
        return Period(at(first), at(_add_months(first, 1)), f"{first.year}年{first.month}月")
    if unit == "quarter":
        first = _add_months(_quarter_start(today), 3 * offset)
        quarter = (first.month - 1) // 3 + 1
        return Period(at(first), at(_add_months(first, 3)), f"{first.year}年第{quarter}季度")
    first = date(today.year + offset, 1, 1)
    return Period(at(first), at(date(first.year + 1, 1, 1)), f"{first.year}年")


def _as_datetime(value: Any, tz: ZoneInfo) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


@dataclass
class Tally:
    promoters: int = 0
    passives: int = 0
    detractors: int = 0
    sent: int = 0

    def add(self, score: int) -> None:
        if score >= PROMOTER_MIN:
            self.promoters += 1
        elif score <= DETRACTOR_MAX:
            self.detractors += 1
        else:
            self.passives += 1

    @property
    def answered(self) -> int:
        return self.promoters + self.passives + self.detractors

    @property
    def nps(self) -> int | None:
        """% promoters − % detractors, rounded half away from zero; None without answers."""
        if not self.answered:
            return None
        exact = (self.promoters - self.detractors) * 100 / self.answered
        return int(exact + 0.5) if exact >= 0 else -int(-exact + 0.5)

    def line(self) -> str:
        if not self.answered:
            return f"暂无答卷（发出 {self.sent} 份）"
        nps = self.nps
        assert nps is not None
        return (
            f"NPS {nps:+d}（推荐 {self.promoters} · 中立 {self.passives} · 贬损 {self.detractors}，"
            f"共 {self.answered} 份答卷 / 发出 {self.sent} 份）"
        )


@dataclass
class NpsReport:
    period: Period
    overall: Tally = field(default_factory=Tally)
    by_rep: dict[int, Tally] = field(default_factory=dict)


async def compute(period: Period, owner_ids: list[int] | None) -> NpsReport:
    """Tallies for the surveys answered (and sent) in ``period``, overall and per rep; ``owner_ids`` limits it."""
    report = NpsReport(period)
    answered = Survey.filter(answered_at__gte=period.start, answered_at__lt=period.end, score__not_isnull=True)
    sent = Survey.filter(sent_at__gte=period.start, sent_at__lt=period.end)
    if owner_ids is not None:
        answered = answered.filter(owner_id__in=owner_ids)
        sent = sent.filter(owner_id__in=owner_ids)
    for owner_id, score in await answered.values_list("owner_id", "score"):
        report.overall.add(int(str(score)))
        if owner_id is not None:
            report.by_rep.setdefault(int(str(owner_id)), Tally()).add(int(str(score)))
    for (owner_id,) in await sent.values_list("owner_id"):
        report.overall.sent += 1
        if owner_id is not None:
            report.by_rep.setdefault(int(str(owner_id)), Tally()).sent += 1
    return report


def _sum(tallies: Iterable[Tally]) -> Tally:
    total = Tally()
    for t in tallies:
        total.promoters += t.promoters
        total.passives += t.passives
        total.detractors += t.detractors
        total.sent += t.sent
    return total


@router.intent("nps_report", examples=["本月NPS", "NPS 上季度"], order=80)
async def nps_report(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看客户满意度 NPS（按人、团队、时段）"""
    period = resolve_period(slots.get("period"), msg.text, ctx.now, ctx.settings.tz)
    staff = ctx.staff
    title = f"📊 NPS {period.label}"
    if staff.role in (Role.DIRECTOR, Role.ADMIN):
        return Reply(await _company_report(period, title))
    if staff.role == Role.MANAGER:
        reports = await Staff.filter(manager_id=staff.id).order_by("id")
        return Reply(await _team_report(period, title, staff, reports))
    report = await compute(period, [staff.id])
    tally = report.by_rep.get(staff.id, Tally())
    return Reply(f"{title}\n您的客户：{tally.line()}{_footer()}")


async def _team_report(period: Period, title: str, manager: Staff, reports: list[Staff]) -> str:
    members = [manager, *reports]
    report = await compute(period, [m.id for m in members])
    lines = [title, f"{manager.name}团队：{report.overall.line()}"]
    for member in reports:
        lines.append(f"· {member.name}：{report.by_rep.get(member.id, Tally()).line()}")
    if (own := report.by_rep.get(manager.id)) is not None:
        lines.append(f"· {manager.name}（本人客户）：{own.line()}")
    return "\n".join(lines) + _footer()


async def _company_report(period: Period, title: str) -> str:
    report = await compute(period, None)
    staff = {s.id: s for s in await Staff.all().order_by("id")}
    lines = [title, f"全公司：{report.overall.line()}"]
    teams: dict[int | None, list[int]] = {}
    for rep_id in report.by_rep:
        member = staff.get(rep_id)
        teams.setdefault(member.manager_id if member is not None else None, []).append(rep_id)
    for manager_id in sorted(teams, key=lambda m: (m is None, m or 0)):
        rep_ids = sorted(teams[manager_id])
        manager = staff.get(manager_id) if manager_id is not None else None
        team_name = f"{manager.name}团队" if manager is not None else "未分组"
        lines.append(f"{team_name}：{_sum(report.by_rep[r] for r in rep_ids).line()}")
        for rep_id in rep_ids:
            name = staff[rep_id].name if rep_id in staff else f"#{rep_id}"
            lines.append(f"· {name}：{report.by_rep[rep_id].line()}")
    return "\n".join(lines) + _footer()


def _footer() -> str:
    return "\nNPS = 推荐者(9-10分)占比 − 贬损者(0-6分)占比，按答卷时间统计。"

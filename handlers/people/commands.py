"""离职交接 from chat (``离职交接 张三 给 李四``, ``… 给 李四、王五`` round robin, ``… 放入公海``) and from the command
line (``crmbot staff leave``): both name a leaver and a plan, check them, and run the one handover transaction."""

from __future__ import annotations

import re
from collections.abc import Sequence

from aiohttp import web
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot.context import Context, Slots
from bot.identity import find_staff
from bot.keys import BOT, CLOCK, OUTBOX
from bot.nlu.reading import Reading, Result
from bot.types import IncomingMessage, Reply
from handlers.people.capability import capability
from handlers.people.contacts import LEFT_PLATFORM
from handlers.people.handover import HandoverRefused, Plan, check_plan, hand_over, totals_text
from models.audit import AuditLog
from models.staff import Staff

_HANDOVER = re.compile(r"^(?:离职交接|离职移交|离职转交)(?:\s+|[:：]|(?=\S))")
_TO = re.compile(r"\s*(?:转给|交给|给|→|->)\s*")
_TO_POOL = re.compile(r"\s*(?:放入|转入|退回|进)?公海\s*")
_NAMES = re.compile(r"[\s,，、;；和]+")
# "A给李四、王五" / "C级放入公海": the customers of one grade, to their own successors or the pool.
_GRADE_RULE = re.compile(
    r"(?<![A-Za-z])(?P<grade>[ABCabc])\s*(?:级|类)?(?:客户)?\s*"
    r"(?:(?:转给|交给|给)\s*(?P<names>[^\sA-Za-z,，;；]+)|(?:放入|转入|退回|进)?公海)"
)


def _names(text: str) -> list[str]:
    return [n for n in _NAMES.split(text) if n]


@capability.command(_HANDOVER, order=160)
def handover_command(r: Reading, rest: str) -> Result:
    grades = {m["grade"].upper(): _names(m["names"] or "") for m in _GRADE_RULE.finditer(rest)}
    text = _GRADE_RULE.sub(" ", rest).strip()
    pool = bool(_TO_POOL.search(text))
    parts = _TO.split(_TO_POOL.sub(" ", text).strip(), maxsplit=1)
    names = _names(parts[1] if len(parts) > 1 else "")
    return "handover", {"leaver": parts[0].strip(), "successors": names, "pool": pool, "grades": grades}


async def _colleagues(names: Sequence[str]) -> tuple[Staff, ...]:
    found = []
    for name in names:
        staff = await find_staff(name)
        if staff is None:
            raise HandoverRefused(f"没有找到在职同事「{name}」。")
        found.append(staff)
    return tuple(found)


async def plan_of(
    leaver_name: str, successor_names: Sequence[str], pool: bool, grades: dict[str, list[str]] | None = None
) -> tuple[Staff, Plan]:
    """The leaver and the plan named, or ``HandoverRefused`` saying which name is unknown or what is missing."""
    leaver = await find_staff(leaver_name, active=False) if leaver_name else None
    if leaver is None:
        raise HandoverRefused(
            f"没有找到同事「{leaver_name}」。用法：离职交接 张三 给 李四（或：离职交接 张三 放入公海）"
        )
    if (pool and successor_names) or not (pool or successor_names or grades):
        raise HandoverRefused(
            "请说明交给谁：「离职交接 张三 给 李四」，多人轮流分配「给 李四、王五」，或「放入公海」。"
        )
    by_grade = tuple([(grade, await _colleagues(names)) for grade, names in sorted((grades or {}).items())])
    # Whether the platforms already removed the leaver decides how their contacts can be moved there.
    departed = await AuditLog.filter(action=LEFT_PLATFORM, entity="staff", entity_id=str(leaver.id)).exists()
    return leaver, Plan(await _colleagues(successor_names), departed=departed, by_grade=by_grade)


@capability.intent("handover", order=60)
async def handover(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """离职交接：把离职同事的客户、工单、审批、提醒一次转给接替人（主管或管理员可操作）"""
    try:
        names = [str(n) for n in slots.get("successors") or []]
        grades = {str(g): [str(n) for n in ns] for g, ns in (slots.get("grades") or {}).items()}
        leaver, plan = await plan_of(str(slots.get("leaver") or ""), names, bool(slots.get("pool")), grades)
        await check_plan(ctx.staff, leaver, plan)
        outcome = await hand_over(
            ctx.bot, leaver, plan, actor=ctx.staff, now=ctx.now, conn=_conn(ctx), platform=msg.platform
        )
    except HandoverRefused as refused:
        return Reply(str(refused))
    return Reply.markdown(totals_text(leaver, plan, outcome.totals))


def _conn(ctx: Context) -> BaseDBAsyncClient:
    assert ctx.conn is not None, "handling runs in a transaction"
    return ctx.conn


async def leave(
    app: web.Application, leaver_name: str, successor_names: Sequence[str], pool: bool, grade_rules: Sequence[str] = ()
) -> str:
    """``crmbot staff leave``: the same handover, by the operator at the command line; the summaries are sent.
    ``grade_rules`` are ``A=李四,王五`` or ``C=pool``."""
    grades: dict[str, list[str]] = {}
    for rule in grade_rules:
        grade, _, names = rule.partition("=")
        if grade.strip().upper() not in ("A", "B", "C") or not names.strip():
            raise HandoverRefused(f"--grade wants A=NAME[,NAME…] or A=pool, got {rule!r}")
        grades[grade.strip().upper()] = [] if names.strip() == "pool" else _names(names)
    leaver, plan = await plan_of(leaver_name, successor_names, pool, grades)
    await check_plan(None, leaver, plan)
    async with in_transaction() as conn:
        outcome = await hand_over(
            app[BOT], leaver, plan, actor="命令行", now=app[CLOCK].now(), conn=conn, platform="cli"
        )
    await app[OUTBOX].drain(app[CLOCK].now())
    return totals_text(leaver, plan, outcome.totals)

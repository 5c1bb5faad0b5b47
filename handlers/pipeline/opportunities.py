"""Opportunities from chat: opening one (商机 华为 5G基站电源 300万 预计3月签), moving it (华为电源项目 进入报价,
赢单, 丢单 价格原因), filling in its fields (商机 电源项目 需求分析：…) and listing a customer's deals.

A write needs clear evidence: the command word 商机, or a deal named beside a stage verb (进入/推进到 …, 赢单,
丢单). A customer with a stage verb and nothing else (比亚迪 赢单了) is the customer's own stage, not a deal's.
"""

from __future__ import annotations

import calendar
import re
from datetime import date

import handlers.pipeline.deals as deals
from bot.access import refusal, visible_to
from bot.context import Context, Slots
from bot.nlu.numbers import find_amount
from bot.nlu.reading import Reading, Result
from bot.nlu.text import clean, cut
from bot.types import IncomingMessage, Reply
from handlers.pipeline.capability import capability
from models.customers import STAGE_LABELS, Stage
from models.opportunities import FUNNEL, OPEN_STAGES, Opportunity, rank

STAGE_WORDS: dict[str, Stage] = {
    "潜在": Stage.LEAD, "线索": Stage.LEAD, "意向": Stage.INTENT, "方案": Stage.PROPOSAL, "报价": Stage.QUOTE,
    "谈判": Stage.NEGOTIATION, "商务谈判": Stage.NEGOTIATION, "议价": Stage.NEGOTIATION, "成交": Stage.WON,
    "赢单": Stage.WON, "流失": Stage.LOST, "丢单": Stage.LOST, "输单": Stage.LOST,
}  # fmt: skip
_WORD = "|".join(sorted(STAGE_WORDS, key=len, reverse=True))
_STAGE_VERB = re.compile(
    rf"(?:进入|推进到|推进至|推到|进到|到了|改为|改成|转入|升到|进展到|阶段)\s*(?:了|到)?\s*(?P<word>{_WORD})(?:阶段)?"
    r"|(?P<won>赢单|赢了|签约|签单|成交|中标|签了)"
    r"|(?P<lost>丢单|输单|输了|丢了|黄了|没戏了|流失)"
)
_CLOSE = re.compile(
    r"(?P<pre>预计|预期|计划|争取|预估)?\s*"
    r"(?:(?P<iy>\d{4})-(?P<im>\d{1,2})-(?P<id>\d{1,2})"
    r"|(?:(?P<y>\d{4})\s*年)?\s*(?P<m>\d{1,2}|十[一二]?|[一二三四五六七八九])\s*月(?:份)?\s*"
    r"(?:(?P<d>\d{1,2})\s*[日号]|(?P<edge>底|末|初|中旬|上旬|下旬|中))?)"
    r"\s*(?:前|内)?\s*(?P<post>签约|签单|签合同|签|成交|落地|下单|结单|关单)?"
)
_CN_MONTH = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9, "十": 10,
             "十一": 11, "十二": 12}  # fmt: skip
_PROBABILITY = re.compile(r"(?:赢率|概率|把握|可能性)\s*[:：]?\s*(?P<p>\d{1,3})\s*(?P<unit>%|％|成)?")
_SOURCE = re.compile(r"来源\s*[:：]?\s*(?P<s>[^\s,，;；]+)")
_FIELD = re.compile(r"(?P<field>[A-Za-z_\u4e00-\u9fff]{2,12})\s*[:：]\s*(?P<value>.+)$")
_NEW_DEAL = re.compile(r"(?:又?有|来了|新增|新建|建|添加|加)(?:一个|个)?新?商机|新商机")
_GENERIC_LEFT = re.compile(
    r"把|将|这单|那单|单子|合同|阶段|已经|已|也|成功|的|了|跟进|客户|这边|那边|今天|昨天|刚刚|刚才|终于|总算|[！!\s]"
)
# A deal's name is a few words: a longer stretch before the verb is a sentence (周经理说预算下来了，…去签约).
DEAL_NAME_MAX = 12


# -- slot extractors -------------------------------------------------------------------------------------------------


def stage_in(text: str) -> tuple[Stage, tuple[int, int]] | None:
    """The stage a line moves a deal to, and where it was said."""
    m = _STAGE_VERB.search(text)
    if m is None:
        return None
    stage = STAGE_WORDS[m["word"]] if m["word"] else Stage.WON if m["won"] else Stage.LOST
    return stage, m.span()


def close_date(text: str, today: date) -> tuple[date, tuple[int, int]] | None:
    """The expected close date (预计3月签, 2026-03-31, 3月底成交): the month's last day unless a day is said; a
    month already past this year is next year's."""
    for m in _CLOSE.finditer(text):
        if m["iy"]:
            try:
                return date(int(m["iy"]), int(m["im"]), int(m["id"])), m.span()
            except ValueError:
                continue
        if not (m["pre"] or m["post"]):
            continue
        month = int(m["m"]) if m["m"].isdigit() else _CN_MONTH.get(m["m"], 0)
        if not 1 <= month <= 12:
            continue
        year = int(m["y"]) if m["y"] else today.year if month >= today.month else today.year + 1
        last = calendar.monthrange(year, month)[1]
        edge = m["edge"] or ""
        day = int(m["d"]) if m["d"] else 10 if edge in ("初", "上旬") else 20 if edge in ("中", "中旬") else last
        return date(year, month, min(max(day, 1), last)), m.span()
    return None


def deal_slots(r: Reading, body: str) -> Slots:
    """Amount, expected close, probability and source said in ``body``, and the name that is left."""
    slots: Slots = {}
    spans: list[tuple[int, int]] = []
    if found := find_amount(body):
        slots["amount"] = found.value
        spans.append((found.start, found.end))
    if close := close_date(body, r.now.date()):
        slots["expected_close"] = close[0].isoformat()
        spans.append(close[1])
    if m := _PROBABILITY.search(body):
        p = int(m["p"]) * (10 if m["unit"] == "成" else 1)
        if 0 <= p <= 100:
            slots["probability"] = p / 100
            spans.append(m.span())
    if m := _SOURCE.search(body):
        slots["source"] = m["s"]
        spans.append(m.span())
    rest = cut(body, *spans)
    if found_stage := stage_in(rest):
        slots["stage"] = found_stage[0].value
        rest = cut(rest, found_stage[1])
    elif m := re.search(rf"(?P<word>{_WORD})\s*阶段", rest):
        slots["stage"] = STAGE_WORDS[m["word"]].value
        rest = cut(rest, m.span())
    name = clean(re.sub(r"\s+", " ", rest))
    if name:
        slots["opportunity"] = name
    return slots


def _reason(text: str) -> str:
    return clean(re.sub(r"^(?:了|，|,|\s)*(?:原因(?:是)?[:：]?)?", "", text))


def move_slots(customer: Slots, before: str, stage: Stage, after: str) -> Slots:
    slots: Slots = {**customer, "stage": stage.value}
    name = clean(before)
    if name:
        slots["opportunity"] = name
    if stage == Stage.LOST and (reason := _reason(after)):
        slots["reason"] = reason
    return slots


# -- recognition -----------------------------------------------------------------------------------------------------


@capability.command(re.compile(r"^(?:商机|新商机|新建商机|opportunity|opp)(?:\s+|[:：]|(?=\S))", re.I), order=95)
def deal_command(r: Reading, rest: str) -> Result | None:
    """商机 <客户> [名称 金额 预计…] / [名称 进入报价] / [名称 字段：值] / 商机 <客户> (list)."""
    if not rest.strip():
        return None
    customer, body = r.split_customer(rest)
    body = body.strip()
    if not body:
        return "list_opportunities", customer
    if found := stage_in(body):
        stage, (start, end) = found
        return "set_opportunity_stage", move_slots(customer, body[:start], stage, body[end:])
    if m := _FIELD.search(body):
        slots: Slots = {**customer, "field": m["field"], "value": m["value"].strip()}
        named = clean(body[: m.start()])
        if named:
            slots["opportunity"] = named
        return "set_opportunity_field", slots
    return "create_opportunity", {**customer, **deal_slots(r, body)}


@capability.phrase(order=55)
def new_deal_phrase(r: Reading) -> Result | None:
    """华为有个新商机 5G基站电源 300万 预计3月签."""
    m = _NEW_DEAL.search(r.text)
    if m is None or not r.customers:
        return None
    mention = r.customers[0]
    body = cut(r.text, (mention.start, mention.end), m.span())
    body = re.sub(r"^[\s，,:：]*(?:叫|是)?", "", body)
    return "create_opportunity", {**r.customer_slot(r.text), **deal_slots(r, body)}


@capability.phrase(order=95)
def deal_stage_phrase(r: Reading) -> Result | None:
    """华为电源项目 进入报价 / 华为电源项目 丢单 价格原因: a deal named after the customer, then a stage verb."""
    if not r.customers:
        return None
    found = stage_in(r.text)
    if found is None:
        return None
    stage, (start, end) = found
    mention = r.customers[0]
    if mention.end > start:
        return None
    named = r.text[mention.end : start]
    left = _GENERIC_LEFT.sub("", named)
    if re.search(r"[，,。；;]", named) or len(left) > DEAL_NAME_MAX:
        return None
    if "商机" not in r.text and not left:
        return None  # nothing names a deal: the customer's own stage
    return "set_opportunity_stage", move_slots(r.customer_slot(r.text), named, stage, r.text[end:])


# -- handlers --------------------------------------------------------------------------------------------------------


def _stage(slots: Slots) -> Stage | None:
    raw = str(slots.get("stage") or "")
    return Stage(raw) if raw in Stage.__members__.values() else None


def _actor(ctx: Context) -> deals.Actor:
    return deals.Actor(ctx.staff, ctx.msg.platform)


def _close(slots: Slots) -> date | None:
    raw = slots.get("expected_close")
    try:
        return date.fromisoformat(str(raw)) if raw else None
    except ValueError:
        return None


def _required_reply(opp: Opportunity, stage: Stage, names: list[str]) -> Reply:
    return Reply(
        f"「{opp.name}」进入{STAGE_LABELS[stage]}阶段前需要先填写：{'、'.join(names)}。"
        f"请发送{deals.fill_hint(opp, names)}补充后再推进。"
    )


def _checklist(ctx: Context, stage: Stage) -> str:
    playbook = ctx.settings.pipeline.playbooks.get(stage.value)
    if playbook is None or not (playbook.text or playbook.checklist):
        return ""
    lines = [f"\n{STAGE_LABELS[stage]}阶段要做：{playbook.text}".rstrip("：")]
    lines.extend(f"☐ {item}" for item in playbook.checklist)
    if playbook.countdown_days:
        lines.append(f"限时 {playbook.countdown_days} 天，超时将提醒主管。")
    return "\n".join(lines)


@capability.intent("create_opportunity", examples=["商机 华为 电源 300万"], order=40, customer=True)
async def create_opportunity(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """新建商机（推进：华为电源 进入报价 / 赢单）"""
    customer = ctx.customer
    if (refused := await refusal(ctx.staff, customer)) is not None:
        return refused
    name = str(slots.get("opportunity") or "").strip()[:128] or f"{customer.name}商机"
    stage = _stage(slots) or Stage.LEAD
    if stage in (Stage.WON, Stage.LOST):
        return Reply("新商机请从进行中的阶段开始，例如「商机 华为 5G基站电源 300万 方案阶段」。")
    if await Opportunity.filter(customer_id=customer.id, name=name, stage__in=list(OPEN_STAGES)).exists():
        return Reply(f"「{customer.name}」已经有进行中的商机「{name}」了。")
    probability = slots.get("probability")
    playbook = ctx.settings.pipeline.playbooks.get(stage.value)
    opp = await deals.start(
        customer,
        name=name,
        amount=float(slots.get("amount") or 0),
        stage=stage,
        owner_id=customer.owner_id or ctx.staff.id,
        now=ctx.now,
        actor=_actor(ctx),
        conn=ctx.conn,
        expected_close=_close(slots),
        probability_override=float(probability) if probability is not None else None,
        source=str(slots.get("source") or "")[:32],
    )
    if playbook is not None and (lacking := deals.missing(opp, playbook.required)):
        hint = f"\n注意：{STAGE_LABELS[stage]}阶段需要{'、'.join(lacking)}，请发送{deals.fill_hint(opp, lacking)}补充。"
    else:
        hint = ""
    return Reply(
        f"已为「{customer.name}」新建商机：{deals.describe(opp, ctx.settings)}。\n"
        f"推进阶段请发送「{customer.name} {opp.name} 进入意向」，赢单/丢单请发送「{opp.name} 赢单」。"
        + hint
        + _checklist(ctx, stage)
    )


async def _deal_of(ctx: Context, slots: Slots, intent: str, *, open_only: bool) -> Opportunity | Reply:
    """The deal of the resolved customer the slots name, if the sender may change it; else the reply to send."""
    customer = ctx.customer
    if (refused := await refusal(ctx.staff, customer)) is not None:
        return refused
    typed = str(slots.get("opportunity") or "")
    return await deals.pick_deal(
        customer, typed, staff=ctx.staff, intent=intent, slots=slots, now=ctx.now, conn=ctx.conn, open_only=open_only
    )


async def _known_stage(slots: Slots, ctx: Context) -> Reply | None:
    if _stage(slots) is None:
        return Reply(
            "请说明商机要进入哪个阶段：" + "/".join(STAGE_LABELS.values()) + "。例如「华为电源项目 进入报价」。"
        )
    return None


@capability.intent("set_opportunity_stage", order=41, customer=True, check=_known_stage)
async def set_opportunity_stage(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """推进商机阶段、赢单或丢单（丢单可附原因）"""
    stage = _stage(slots)
    assert stage is not None  # checked by _known_stage
    customer = ctx.customer
    picked = await _deal_of(ctx, slots, "set_opportunity_stage", open_only=True)
    if isinstance(picked, Reply):
        return picked
    opp = picked
    old = Stage(opp.stage)
    if old == stage:
        return Reply(f"商机「{opp.name}」已经在{STAGE_LABELS[stage]}阶段了。")
    playbook = ctx.settings.pipeline.playbooks.get(stage.value)
    if playbook is not None and (lacking := deals.missing(opp, playbook.required)):
        return _required_reply(opp, stage, lacking)
    stayed = (ctx.now - opp.stage_entered_at).total_seconds() / 86400
    await deals.move(opp, stage, now=ctx.now, actor=_actor(ctx), conn=ctx.conn, reason=str(slots.get("reason") or ""))
    ctx.audited.append("set_opportunity_stage")  # audited by the move: 撤销 takes it back
    head = f"商机「{opp.name}」（{customer.name}）阶段：{STAGE_LABELS[old]} → {STAGE_LABELS[stage]}"
    head += f"，在{STAGE_LABELS[old]}阶段停留 {stayed:.1f} 天"
    if stage == Stage.WON:
        return Reply(f"{head}。恭喜赢单 {deals.yuan(opp.amount)}！🎉")
    if stage == Stage.LOST:
        why = f"原因：{opp.lost_reason}。" if opp.lost_reason else "可发送「商机 … 丢单原因：…」补充原因。"
        return Reply(f"{head}。已记为丢单，{why}")
    return Reply(f"{head}。" + _checklist(ctx, stage))


def required_by(ctx: Context, stage: Stage) -> list[str]:
    """The fields the playbooks of ``stage`` and of every stage before it require, each once, in funnel order."""
    names: list[str] = []
    for step in FUNNEL[: rank(stage) + 1]:
        playbook = ctx.settings.pipeline.playbooks.get(step.value)
        names.extend(n for n in (playbook.required if playbook else []) if n not in names)
    return names


@capability.guard("request_discount")
async def deal_complete_before_discount(slots: Slots, ctx: Context) -> Reply | None:
    """No discount request for a customer whose open deal lacks a field its stage's playbooks require (需求分析 …):
    a discount is negotiated on a deal that has been qualified."""
    if not await visible_to(ctx.staff, ctx.customer):
        return None  # the request itself refuses it, without naming the customer's deals
    for opp in await Opportunity.filter(customer_id=ctx.customer.id, stage__in=list(OPEN_STAGES)).order_by("id"):
        if lacking := deals.missing(opp, required_by(ctx, Stage(opp.stage))):
            return Reply(
                f"「{ctx.customer.name}」的商机「{opp.name}」还缺少：{'、'.join(lacking)}，暂不能申请折扣。"
                f"请先发送{deals.fill_hint(opp, lacking)}补充，再申请折扣。"
            )
    return None


async def _field_given(slots: Slots, ctx: Context) -> Reply | None:
    if not str(slots.get("field") or "").strip() or not str(slots.get("value") or "").strip():
        return Reply("请按「商机 商机名称 字段：内容」填写，例如「商机 华为电源项目 需求分析：48V 整流模块」。")
    return None


def _apply_field(opp: Opportunity, field: str, value: str, today: date) -> str | None:
    """Set one field from what was typed; the error to reply when the value does not fit the field."""
    column = deals.COLUMN_FIELDS.get(field)
    if column == "amount":
        found = find_amount(value) or find_amount(f"金额{value}")
        if found is None:
            return "金额请写成「300万」或「120000元」。"
        opp.amount = found.value  # type: ignore[assignment]
    elif column == "expected_close":
        close = close_date(value, today) or close_date(f"预计{value}", today)
        if close is None:
            return "预计成交时间请写成「3月底」或「2026-03-31」。"
        opp.expected_close = close[0]
    elif column == "probability":
        m = re.search(r"(\d{1,3})\s*(%|％|成)?", value)
        p = int(m[1]) * (10 if m and m[2] == "成" else 1) if m else -1
        if not 0 <= p <= 100:
            return "赢率请写成 0–100 的百分数，例如「赢率：60%」。"
        opp.probability = p / 100
    elif column == "source":
        opp.source = value[:32]
    elif field in ("丢单原因", "lost_reason"):
        opp.lost_reason = value[:200]
    else:
        opp.details = {**(opp.details or {}), field: value[:500]}
    return None


@capability.intent("set_opportunity_field", order=42, customer=True, check=_field_given)
async def set_opportunity_field(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """填写商机字段（金额、预计成交、赢率、来源、需求分析等）"""
    picked = await _deal_of(ctx, slots, "set_opportunity_field", open_only=False)
    if isinstance(picked, Reply):
        return picked
    opp = picked
    field, value = str(slots["field"]).strip(), str(slots["value"]).strip()
    before, counted = deals.snapshot(opp), deals.tally(opp)
    if (error := _apply_field(opp, field, value, ctx.now.astimezone(ctx.settings.tz).date())) is not None:
        return Reply(error)
    await opp.save(using_db=ctx.conn)
    await deals.recount(counted, opp, ctx.conn)
    await ctx.audit("set_opportunity_field", "opportunity", opp.id, before, deals.snapshot(opp))
    return Reply(f"已更新商机「{opp.name}」的{field}。当前：{deals.describe(opp, ctx.settings)}。")


@capability.intent("list_opportunities", order=43, customer=True)
async def list_opportunities(msg: IncomingMessage, slots: Slots, ctx: Context) -> Reply:
    """查看客户的商机"""
    customer = ctx.customer
    if not await visible_to(ctx.staff, customer):
        return Reply(f"「{customer.name}」不是您或您团队的客户，无法查看。")
    rows = await Opportunity.filter(customer_id=customer.id).order_by("stage_entered_at", "id")
    if not rows:
        return Reply(f"「{customer.name}」还没有商机。发送「商机 {customer.name} 名称 金额 预计几月签」新建。")
    lines = [f"【{customer.name}】的商机："]
    lines.extend(f"{i}. {deals.describe(o, ctx.settings)}" for i, o in enumerate(rows, 1))
    return Reply("\n".join(lines))

"""Stage playbooks and stalled deals, as scheduled rules (``[pipeline.playbooks.<stage>]``, ``stall_days``).

Entering a stage with a playbook tells its people (``notify``) what to do, with the checklist and the countdown;
when the countdown runs out and the deal is still in that stage, ``escalate_to`` hears once; the owner gets the
cadence's suggested follow-ups on their days while the deal stays. A deal with no stage change and no follow-up
for its stage's ``stall_days`` is reported to its owner once per standstill. Each rule is an indexed query on
the stage history whose key names the stage entry (or the standstill), so a push happens once.
"""

from __future__ import annotations

from datetime import timedelta

import handlers.pipeline.deals as deals
from bot.config import Playbook
from bot.context import Firing, RuleContext
from bot.identity import find_staff_among
from bot.rulekit import crossed, ids, iso, local_time, not_fired, select, short, staff_by_id
from handlers.pipeline.capability import capability
from handlers.pipeline.funnel import moved_at, stalled_where
from models.customers import STAGE_LABELS, Stage
from models.opportunities import FUNNEL, Opportunity, StageChange, rank
from models.staff import Role, Staff

ROLE_WORDS = {"director": Role.DIRECTOR, "admin": Role.ADMIN}


async def recipients(names: list[str], opp: Opportunity) -> list[Staff]:
    """The people a playbook names: ``owner``, ``manager`` (the owner's), every ``director``/``admin``, or staff
    by name or platform user id; each once, in the order named."""
    found: list[Staff] = []
    owner = opp.owner
    for name in names:
        if name == "owner":
            people = [owner] if owner is not None else []
        elif name == "manager":
            manager = (await staff_by_id([owner.manager_id])).get(owner.manager_id or 0) if owner else None
            people = [manager] if manager is not None else []
        elif name in ROLE_WORDS:
            people = list(await Staff.filter(role=ROLE_WORDS[name], active=True).order_by("id"))
        else:
            people = await find_staff_among([name])
        found.extend(p for p in people if p.id not in {f.id for f in found})
    return found


async def current_entries(ctx: RuleContext, rule: str, stage: str, after: timedelta) -> list[StageChange]:
    """Stage entries into ``stage`` still current whose ``entered_at + after`` has been reached, not yet fired."""
    reached, params = crossed(ctx, "s.entered_at", after)
    rows = await select(
        ctx,
        f"SELECT s.id FROM opportunity_stage s WHERE s.stage = ? AND s.left_at IS NULL AND {reached} "
        f"AND {not_fired(rule, 's.id', 's.entered_at')} ORDER BY s.entered_at LIMIT ?",
        [stage, *params],
    )
    if not rows:
        return []
    return list(
        await StageChange.filter(id__in=[int(r["id"]) for r in rows])
        .select_related("opportunity__customer", "opportunity__owner")
        .order_by("entered_at", "id")
    )


def _deal_lines(opp: Opportunity, ctx: RuleContext) -> str:
    owner = opp.owner.name if opp.owner else "公海"
    return f"> 客户：{opp.customer.name}\n> 商机：{deals.describe(opp, ctx.settings)}\n> 负责人：{owner}"


async def _to_each(names: list[str], entry: StageChange, rule: str, key: str, text: str) -> list[Firing]:
    """One firing of ``rule`` per person ``names`` stands for, keyed ``key:<person>``, about ``entry``'s deal."""
    opp = entry.opportunity
    return [
        Firing(rule, f"{key}:{person.id}", person, text, customer=opp.customer, period_at=entry.entered_at)
        for person in await recipients(names, opp)
    ]


def _playbooks(ctx: RuleContext) -> list[tuple[str, Playbook]]:
    return sorted(ctx.settings.pipeline.playbooks.items())


@capability.rule(order=130)
async def playbook_enter(ctx: RuleContext) -> list[Firing]:
    """A deal entered a stage with a playbook: tell its people what to do, with the checklist and countdown."""
    firings: list[Firing] = []
    for stage, playbook in _playbooks(ctx):
        if not (playbook.text or playbook.checklist) or not playbook.notify:
            continue
        for entry in await current_entries(ctx, "playbook_enter", stage, timedelta(0)):
            opp = entry.opportunity
            label = STAGE_LABELS[Stage(stage)]
            parts = [
                f"**{label}阶段任务**",
                _deal_lines(opp, ctx),
                f"> 进入{label}：{local_time(entry.entered_at, ctx)}",
            ]
            if playbook.text:
                parts.append(playbook.text)
            parts.extend(f"☐ {item}" for item in playbook.checklist)
            if playbook.countdown_days:
                due = entry.entered_at + timedelta(days=playbook.countdown_days)
                parts.append(f"⏳ 请在 {local_time(due, ctx)} 前完成（{playbook.countdown_days} 天），超时将上报。")
            following = FUNNEL[min(rank(stage) + 1, len(FUNNEL) - 1)]
            parts.append(f"完成后推进阶段，例如回复：`{short(opp.customer)} {opp.name} 进入{STAGE_LABELS[following]}`")
            key = f"playbook_enter:{entry.id}:{stage}"
            firings += await _to_each(playbook.notify, entry, "playbook_enter", key, "\n".join(parts))
    return firings


@capability.rule(order=140)
async def playbook_escalate(ctx: RuleContext) -> list[Firing]:
    """A playbook's countdown ran out with the deal still in the stage: tell ``escalate_to`` once."""
    firings: list[Firing] = []
    for stage, playbook in _playbooks(ctx):
        if not playbook.countdown_days:
            continue
        days = playbook.countdown_days
        for entry in await current_entries(ctx, "playbook_escalate", stage, timedelta(days=days)):
            opp = entry.opportunity
            label = STAGE_LABELS[Stage(stage)]
            text = (
                f"**{label}阶段超时**\n{_deal_lines(opp, ctx)}\n"
                f"> 进入{label} {local_time(entry.entered_at, ctx)}，已超过 {days} 天仍未推进\n"
                f"请督促跟进，或了解卡点：`商机 {opp.customer.name}`"
            )
            key = f"playbook_escalate:{entry.id}:{days}d"
            firings += await _to_each(playbook.escalate_to, entry, "playbook_escalate", key, text)
    return firings


@capability.rule(order=150)
async def playbook_cadence(ctx: RuleContext) -> list[Firing]:
    """Day N of a stage with a cadence: suggest the follow-up and its wording to the owner."""
    firings: list[Firing] = []
    for stage, playbook in _playbooks(ctx):
        for step in playbook.cadence:
            rule = f"playbook_cadence_{step.day}d"
            for entry in await current_entries(ctx, rule, stage, timedelta(days=step.day)):
                opp = entry.opportunity
                if opp.owner is None:
                    continue
                label = STAGE_LABELS[Stage(stage)]
                text = (
                    f"**{label}第 {step.day} 天跟进建议**\n{_deal_lines(opp, ctx)}\n> 建议：{step.text}\n"
                    f"联系后请记录，例如回复：`跟进 {opp.customer.name} {step.text[:20]}`"
                )
                firings.append(
                    Firing(
                        rule, f"{rule}:{entry.id}:{stage}", opp.owner, text, opp.customer, period_at=entry.entered_at
                    )
                )
    return firings


@capability.rule(order=160)
async def pipeline_stalled(ctx: RuleContext) -> list[Firing]:
    """A deal with no stage change and no follow-up for its stage's ``stall_days``: tell the owner, once per
    standstill (a follow-up or a stage change starts a new one)."""
    stalled, params = stalled_where(ctx.settings, ctx.now)
    rows = await select(
        ctx,
        "SELECT o.id FROM opportunity o"
        f" WHERE o.owner_id IS NOT NULL AND {stalled} AND {not_fired('pipeline_stalled', 'o.id', 'o.last_moved_at')}"
        " ORDER BY o.last_moved_at, o.id LIMIT ?",
        params,
    )
    found = ids(rows)
    firings: list[Firing] = []
    deals_found = await Opportunity.filter(id__in=found).select_related("customer", "owner").order_by("id")
    for opp in deals_found:
        if opp.owner is None:
            continue
        since = moved_at(opp)
        days_still = int((ctx.now - since).total_seconds() // 86400)
        label = STAGE_LABELS[Stage(opp.stage)]
        text = (
            f"**商机停滞**\n{_deal_lines(opp, ctx)}\n> 在{label}阶段已 {days_still} 天没有推进也没有跟进"
            f"（自 {local_time(since, ctx)}）\n请联系客户推进，并记录：`跟进 {opp.customer.name} 跟进内容`"
        )
        firings.append(
            Firing(
                "pipeline_stalled",
                f"pipeline_stalled:{opp.id}:{opp.stage}:{iso(since)}",
                opp.owner,
                text,
                customer=opp.customer,
                period_at=since,
            )
        )
    return firings

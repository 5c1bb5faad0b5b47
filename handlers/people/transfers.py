"""Following the customer contacts a handover moves on the chat platforms: each pass asks the platform to move
the waiting ones and polls the pending ones (through ``Identity.move_contacts``), saves what changed, and tells
the leaver's manager of every contact that could not be moved, once each."""

from __future__ import annotations

import hashlib
from collections import defaultdict

from bot.context import Firing, RuleContext
from handlers.people.capability import capability
from models.customers import Customer
from models.people import ContactTransfer, Handover, TransferStatus
from models.staff import Role, Staff

BATCH = 1000
NAMES_SHOWN = 10
OPEN = [TransferStatus.WAITING, TransferStatus.PENDING]


@capability.rule(order=130)
async def contact_transfers(ctx: RuleContext) -> list[Firing]:
    """Ask and poll the platforms for open contact transfers; a failure is reported to the leaver's manager."""
    transfers = await ContactTransfer.filter(status__in=OPEN).order_by("id").limit(BATCH)
    ctx.more = ctx.more or len(transfers) == BATCH
    handovers = {h.id: h for h in await Handover.filter(id__in={t.handover_id for t in transfers})}
    groups: dict[tuple[str, bool], list[ContactTransfer]] = defaultdict(list)
    for transfer in transfers:
        groups[(transfer.platform, bool(handovers[transfer.handover_id].plan.get("departed")))].append(transfer)
    failed: list[ContactTransfer] = []
    for (platform, departed), group in groups.items():
        identity = ctx.bot.directory.get(platform)
        if identity is None or identity.move_contacts is None:
            continue
        before = {t.id: (t.status, t.reason, t.attempts) for t in group}
        await identity.move_contacts(group, departed)
        for t in group:
            if (t.status, t.reason, t.attempts) != before[t.id]:
                await t.save(update_fields=["status", "reason", "attempts", "updated_at"])
                if t.status == TransferStatus.FAILED:
                    failed.append(t)
    return await _failure_notices(failed, handovers)


async def _failure_notices(failed: list[ContactTransfer], handovers: dict[int, Handover]) -> list[Firing]:
    """One notice per handover and pass, listing the customers newly failed, grouped by reason."""
    if not failed:
        return []
    leavers = {s.id: s for s in await Staff.filter(id__in={h.leaver_id for h in handovers.values()})}
    managers = {s.id: s for s in await Staff.filter(id__in={s.manager_id for s in leavers.values()}, active=True)}
    admin = await Staff.filter(role=Role.ADMIN, active=True).order_by("id").first()
    customers = {c.id: c.name for c in await Customer.filter(id__in={t.customer_id for t in failed if t.customer_id})}
    by_handover: dict[int, list[ContactTransfer]] = defaultdict(list)
    for t in failed:
        by_handover[t.handover_id].append(t)
    firings = []
    for handover_id, transfers in by_handover.items():
        handover = handovers[handover_id]
        leaver = leavers[handover.leaver_id]
        to = managers.get(leaver.manager_id or 0) or admin
        if to is None:
            continue
        by_reason: dict[str, list[str]] = defaultdict(list)
        for t in transfers:
            by_reason[t.reason].append(customers.get(t.customer_id or 0, t.contact_user_id))
        lines = [f"**客户联系人转接失败**\n> {leaver.name}离职交接：{len(transfers)} 位客户的联系人未能转给接替人"]
        for reason, names in by_reason.items():
            more = f"等 {len(names)} 位" if len(names) > NAMES_SHOWN else ""
            lines.append(f"> {reason}：{'、'.join(names[:NAMES_SHOWN])}{more}")
        lines.append("请接替人主动联系这些客户重新添加。")
        ids = ",".join(str(t.id) for t in sorted(transfers, key=lambda t: t.id))
        key = f"contact_transfer_failed:{handover_id}:{hashlib.sha1(ids.encode()).hexdigest()[:16]}"
        firings.append(Firing("contact_transfer_failed", key, to, "\n".join(lines)))
    return firings

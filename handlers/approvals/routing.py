"""Routing of discount approvals: how many levels a request needs (``[approvals]`` in the config) and who sits
at each level, walking the requester's management line (``Staff.manager``).

Level 1 is the requester's manager, level 2 a director, level 3 an admin. Nobody ever approves their own request
and nobody sits twice in one chain: a manager asking for themself starts with their own superior, and a level no
one distinct can fill is left out (so a director's request goes straight to an admin).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from bot.config import ApprovalSettings
from models.staff import Role, Staff

LEVEL_ROLES: tuple[str, ...] = ("manager", "director", "admin")
ROLE_LABELS: dict[str, str] = {"manager": "主管", "director": "总监", "admin": "管理员"}
MAX_LINE = 20  # a management line deeper than this is a data error (a cycle); stop walking


@dataclass(frozen=True, slots=True)
class Link:
    """One level of a chain: the level number, the role it stands for, and who decides it."""

    level: int
    role: str
    approver: Staff


def levels_needed(discount: Decimal, amount: Decimal | None, settings: ApprovalSettings) -> int:
    """1 (manager), 2 (+ director) or 3 (+ admin) levels for paying ``discount`` of list price on ``amount`` yuan."""
    if discount < Decimal(str(settings.admin_below)):
        depth = 3
    elif discount < Decimal(str(settings.director_below)):
        depth = 2
    else:
        depth = 1
    if amount is not None:
        depth += sum(1 for threshold in settings.amount_levels if amount >= Decimal(str(threshold)))
    return min(depth, len(LEVEL_ROLES))


async def superiors(staff: Staff) -> list[Staff]:
    """``staff``'s management line upwards (active members only; an inactive manager is passed over)."""
    line: list[Staff] = []
    seen = {staff.id}
    manager_id = staff.manager_id
    while manager_id is not None and manager_id not in seen and len(line) < MAX_LINE:
        seen.add(manager_id)
        manager = await Staff.get_or_none(id=manager_id)
        if manager is None:
            break
        if manager.active:
            line.append(manager)
        manager_id = manager.manager_id
    return line


async def _first_with_role(roles: Iterable[Role], excluded: set[int]) -> Staff | None:
    return await Staff.filter(role__in=list(roles), active=True).exclude(id__in=list(excluded)).order_by("id").first()


async def approval_chain(requester: Staff, depth: int) -> list[Link]:
    """Who decides each of the first ``depth`` levels for ``requester``; empty when nobody can."""
    line = await superiors(requester)
    excluded = {requester.id}
    chain: list[Link] = []
    for role in LEVEL_ROLES[:depth]:
        approver = _pick(line, excluded, role)
        if approver is None:
            fallback = (Role.DIRECTOR, Role.ADMIN) if role != "admin" else (Role.ADMIN,)
            for wanted in fallback:
                approver = await _first_with_role([wanted], excluded)
                if approver is not None:
                    break
        if approver is None:
            continue
        excluded.add(approver.id)
        chain.append(Link(len(chain) + 1, role, approver))
    return chain


def _pick(line: list[Staff], excluded: set[int], role: str) -> Staff | None:
    """The first person up the line fit for ``role``: anyone for manager, a director or admin above that."""
    fit: tuple[Role, ...]
    if role == "manager":
        fit = (Role.MANAGER, Role.DIRECTOR, Role.ADMIN, Role.REP)
    elif role == "director":
        fit = (Role.DIRECTOR, Role.ADMIN)
    else:
        fit = (Role.ADMIN,)
    for person in line:
        if person.id not in excluded and person.role in fit:
            return person
    return None


async def escalation_target(approver: Staff, excluded: set[int]) -> Staff | None:
    """Who takes over from ``approver`` when they do not answer: their superior, else a director, else an admin."""
    for person in await superiors(approver):
        if person.id not in excluded:
            return person
    above: tuple[Role, ...] = {Role.DIRECTOR: (Role.ADMIN,), Role.ADMIN: ()}.get(
        approver.role, (Role.DIRECTOR, Role.ADMIN)
    )
    for role in above:
        if found := await _first_with_role([role], excluded | {approver.id}):
            return found
    return None

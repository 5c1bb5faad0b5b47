"""Who may see and change which customer: a rep their own customers and the public pool, a manager the team's,
directors and admins all."""

from __future__ import annotations

from bot.types import Reply
from models.customers import Customer
from models.staff import Role, Staff


async def visible_to(staff: Staff, customer: Customer) -> bool:
    """A rep sees own customers and the public pool, a manager the team's, directors and admins all."""
    if staff.role in (Role.ADMIN, Role.DIRECTOR) or customer.owner_id in (None, staff.id):
        return True
    if staff.role == Role.MANAGER:
        return await Staff.filter(id=customer.owner_id, manager_id=staff.id).exists()
    return False


async def refusal(staff: Staff, customer: Customer) -> Reply | None:
    """None when ``staff`` may change ``customer``; otherwise a reply that says why not."""
    if await visible_to(staff, customer):
        return None
    owner = await Staff.get_or_none(id=customer.owner_id) if customer.owner_id else None
    who = f"由{owner.name}负责" if owner else "不在您的名下"
    if staff.role == Role.REP:
        return Reply(f"「{customer.name}」{who}，销售只能操作自己名下的客户。如需接手，请找主管转给您。")
    return Reply(f"「{customer.name}」{who}，不在您的团队，无法操作。")

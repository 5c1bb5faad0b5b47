"""The audit log, written one way: by a person (the staff member whose message made the change) or by the system
(a scheduled rule, a keyword rule, an import), always with before and after."""

from __future__ import annotations

from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from models.audit import AuditLog
from models.staff import Staff

SYSTEM = "系统"


def entry(
    action: str,
    entity: str,
    entity_id: object,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    *,
    actor: Staff | str = SYSTEM,
    platform: str = "",
) -> AuditLog:
    """An unsaved audit row (for ``bulk_create``). ``actor`` is a staff member, or the name of what acted."""
    person = actor if isinstance(actor, Staff) else None
    return AuditLog(
        actor_id=person.id if person is not None else None,
        actor_name=person.name if person is not None else str(actor),
        action=action,
        entity=entity,
        entity_id=str(entity_id),
        before=before,
        after=after,
        platform=platform,
    )


async def record(
    action: str,
    entity: str,
    entity_id: object,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    *,
    actor: Staff | str = SYSTEM,
    platform: str = "",
    conn: BaseDBAsyncClient | None = None,
) -> None:
    """Write one audit row (in ``conn``'s transaction when given)."""
    await entry(action, entity, entity_id, before, after, actor=actor, platform=platform).save(using_db=conn)

"""The audit log, written one way: by a person (the staff member whose message made the change) or by the system
(a scheduled rule, a keyword rule, an import), always with before and after, the customer it is about and the
message that asked for it. Which changes a person may take back with 撤销 is decided here, so that the reply to
every such change can say so."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from models.audit import AuditLog
from models.staff import Staff

SYSTEM = "系统"
UNDO = "undo"
# The changes 撤销 takes back (each has its way back in the history capability).
UNDOABLE = frozenset(
    {
        "follow_up",
        "create_customer",
        "create_ticket",
        "update_ticket",
        "set_stage",
        "set_grade",
        "tag",
        "transfer",
        "reminder.create",
        "approval.request",
        "set_field",
        "set_contact",
        "set_opportunity_stage",
    }
)


def undo_hint(minutes: int) -> str:
    """The line that ends the reply to an undoable change."""
    return f"（{minutes} 分钟内回复「撤销」可撤回）"


def entry(
    action: str,
    entity: str,
    entity_id: object,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    *,
    actor: Staff | str = SYSTEM,
    platform: str = "",
    source: str = "",
    customer_id: int | None = None,
    undo_of: int | None = None,
    at: datetime | None = None,
) -> AuditLog:
    """An unsaved audit row (for ``bulk_create``). ``actor`` is a staff member, or the name of what acted.

    A change of a customer row is about that customer unless ``customer_id`` says otherwise; ``at`` defaults to
    the moment the row is saved.
    """
    person = actor if isinstance(actor, Staff) else None
    row = AuditLog(
        actor_id=person.id if person is not None else None,
        actor_name=person.name if person is not None else str(actor),
        action=action,
        entity=entity,
        entity_id=str(entity_id),
        before=before,
        after=after,
        platform=platform,
        source=source[:191],
        customer_id=_about(entity, entity_id, customer_id),
        undo_of=undo_of,
    )
    if at is not None:
        row.created_at = at
    return row


def _about(entity: str, entity_id: object, customer_id: int | None) -> int | None:
    if customer_id is None and entity == "customer" and str(entity_id).isdigit():
        return int(str(entity_id))
    return customer_id


# The columns of ``values`` rows, for writes of many audit rows at once (imports).
COLUMNS = ["actor_id", "actor_name", "action", "entity", "entity_id", "before", "after", "platform", "customer_id",
           "created_at"]  # fmt: skip


def values(
    action: str,
    entity: str,
    entity_id: object,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    *,
    actor: str,
    platform: str,
    at: datetime,
    customer_id: int | None = None,
) -> list[Any]:
    """One audit row by the system (``actor`` names what acted) as values in ``COLUMNS`` order, for writing many
    rows at once; the same row ``entry`` would make."""
    about = _about(entity, entity_id, customer_id)
    return [None, actor, action, entity, str(entity_id), before, after, platform, about, at]


async def record(
    action: str,
    entity: str,
    entity_id: object,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    *,
    actor: Staff | str = SYSTEM,
    platform: str = "",
    source: str = "",
    customer_id: int | None = None,
    undo_of: int | None = None,
    at: datetime | None = None,
    conn: BaseDBAsyncClient | None = None,
) -> AuditLog:
    """Write one audit row (in ``conn``'s transaction when given)."""
    row = entry(
        action,
        entity,
        entity_id,
        before,
        after,
        actor=actor,
        platform=platform,
        source=source,
        customer_id=customer_id,
        undo_of=undo_of,
        at=at,
    )
    await row.save(using_db=conn)
    return row

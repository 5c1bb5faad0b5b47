"""Staff: the reps, managers, directors and admins who talk to the bot, and their accounts on each chat platform.

A staff member has at most one account per platform (``StaffAccount``); which platforms exist, and what their user
ids look like, is the business of the integrations, so the core never names a platform.
"""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class Role(StrEnum):
    REP = "rep"
    MANAGER = "manager"
    DIRECTOR = "director"
    ADMIN = "admin"


class Staff(Model):
    """A member of the sales or service team, with ``manager`` the person escalations go to."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    role = fields.CharEnumField(Role, max_length=16, default=Role.REP)
    manager: fields.ForeignKeyNullableRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="reports", null=True, on_delete=fields.SET_NULL
    )
    manager_id: int | None
    active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    accounts: fields.ReverseRelation[StaffAccount]

    class Meta:
        table = "staff"

    def __str__(self) -> str:
        return self.name

    @property
    def is_manager_level(self) -> bool:
        return self.role in (Role.MANAGER, Role.DIRECTOR, Role.ADMIN)


class StaffAccount(Model):
    """One staff member's user id on one platform: who a platform's sender is, and where to reach them."""

    id = fields.IntField(primary_key=True)
    staff: fields.ForeignKeyRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="accounts", on_delete=fields.CASCADE
    )
    staff_id: int
    platform = fields.CharField(max_length=16)
    user_id = fields.CharField(max_length=64)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "staff_account"
        unique_together = (("platform", "user_id"), ("staff_id", "platform"))

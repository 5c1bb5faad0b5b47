"""Staff: the reps, managers, directors and admins who talk to the bot, with their platform accounts."""

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
    wecom_userid = fields.CharField(max_length=64, null=True, unique=True)
    dingtalk_userid = fields.CharField(max_length=64, null=True, unique=True)
    role = fields.CharEnumField(Role, max_length=16, default=Role.REP)
    manager: fields.ForeignKeyNullableRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="reports", null=True, on_delete=fields.SET_NULL
    )
    manager_id: int | None
    active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "staff"

    def __str__(self) -> str:
        return self.name

    @property
    def is_manager_level(self) -> bool:
        return self.role in (Role.MANAGER, Role.DIRECTOR, Role.ADMIN)

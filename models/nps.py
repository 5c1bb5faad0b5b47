"""NPS surveys: one survey sent to a customer contact after a delivery, and the answer it got.

The link's token is random and never stored: only its HMAC (``token_hash``) is, so a leaked database does not
leak working links. A survey is answered at most once (``answered_at`` is set by a conditional update), and a
customer gets at most one survey per period (``surveyed_since``).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from models.customers import Contact, Customer
from models.staff import Staff

PROMOTER_MIN = 9
DETRACTOR_MAX = 6


class SurveyTrigger(StrEnum):
    DEAL_WON = "deal_won"
    TICKET_RESOLVED = "ticket_resolved"


class SurveyChannel(StrEnum):
    CUSTOMER_MESSAGE = "customer_message"  # sent to the contact by the platform, confirmed by the rep
    REP_FORWARD = "rep_forward"  # the rep got a ready-to-forward message with the link


class AnswerSource(StrEnum):
    PAGE = "page"
    CHAT = "chat"


class Survey(Model):
    """A survey sent to a customer. ``owner`` is the rep who owned the customer when it was sent."""

    id = fields.IntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="surveys", on_delete=fields.CASCADE
    )
    customer_id: int
    contact: fields.ForeignKeyNullableRelation[Contact] = fields.ForeignKeyField(
        "models.Contact", related_name="surveys", null=True, on_delete=fields.SET_NULL
    )
    contact_id: int | None
    owner: fields.ForeignKeyNullableRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="surveys", null=True, on_delete=fields.SET_NULL
    )
    owner_id: int | None
    token_hash = fields.CharField(max_length=64, unique=True, description="HMAC-SHA256 of the link token, hex")
    trigger = fields.CharEnumField(SurveyTrigger, max_length=16)
    trigger_id = fields.IntField(description="customer id for a won deal, ticket id for a resolved ticket")
    channel = fields.CharEnumField(SurveyChannel, max_length=16)
    sent_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    answered_at = fields.DatetimeField(null=True, db_index=True)
    score = fields.SmallIntField(null=True)
    comment = fields.TextField(default="")
    answer_source = fields.CharField(max_length=8, default="", description="page or chat")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "nps_survey"
        indexes = (("customer_id", "sent_at"),)

    @property
    def is_promoter(self) -> bool:
        return self.score is not None and self.score >= PROMOTER_MIN

    @property
    def is_detractor(self) -> bool:
        return self.score is not None and self.score <= DETRACTOR_MAX

    def open_at(self, moment: datetime) -> bool:
        """Unanswered and within its validity at ``moment``."""
        return self.answered_at is None and self.sent_at <= moment < self.expires_at


def token_hash(key: bytes, token: str) -> str:
    """What is stored for a link token: HMAC-SHA256 under the survey key, hex."""
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


async def surveyed_since(customer_ids: list[int], since: datetime) -> set[int]:
    """The customers among ``customer_ids`` that were sent a survey at or after ``since`` (the period rule)."""
    if not customer_ids:
        return set()
    rows = await Survey.filter(customer_id__in=customer_ids, sent_at__gte=since).values_list("customer_id", flat=True)
    return {int(str(r)) for r in rows}

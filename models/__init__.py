"""Tortoise models, one module per aggregate. This package imports nothing else of ours.

``MODEL_MODULES`` is the list handed to Tortoise; a new aggregate adds its module here.
"""

MODEL_MODULES: list[str] = [
    "models.staff",
    "models.customers",
    "models.messages",
    "models.archive",
    "models.outbox",
    "models.audit",
    "models.followups",
    "models.tickets",
    "models.reminders",
    "models.orders",
    "models.nps",
    "models.approvals",
    "models.seen",
    "models.opportunities",
    "models.people",
    "models.files",
]

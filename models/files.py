"""Files the bot hands out (an exported spreadsheet, a chart): their bytes live in the database, so that whichever
instance sends an outbox row can read them, until ``expires_at``, when they are swept.

``remote`` remembers, per platform, the id under which the platform already holds the file and until when that id
is valid (a media id is valid for days), so that a repeated send does not upload it again.
"""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class StoredFile(Model):
    """One file: its name as shown to people, its type, size and SHA-256, its bytes, and when it goes."""

    id = fields.BigIntField(primary_key=True)
    filename = fields.CharField(max_length=255)
    content_type = fields.CharField(max_length=128)
    size = fields.BigIntField()
    sha256 = fields.CharField(max_length=64)
    data = fields.BinaryField()
    remote: Any = fields.JSONField(default=dict, description="platform → {id, until}: the file as uploaded there")
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "stored_file"

"""The chat-archive bookkeeping: how far each archive source has been pulled, and what could not be archived.

``ArchiveCursor.seq`` is written in the same transaction as the messages it covers, so a crash between a pull
and its commit re-pulls the same range and the (platform, msgid) uniqueness absorbs the repeat.
``ArchiveFailure`` keeps every message that could not be archived (unknown key version, decrypt error) so an
admin sees it, instead of the puller skipping it silently.
"""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class ArchiveCursor(Model):
    """The last archive sequence number stored for one source, e.g. wecom:CORPID."""

    id = fields.IntField(primary_key=True)
    source = fields.CharField(max_length=128, unique=True)
    seq = fields.BigIntField(default=0)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "archive_cursor"


class ArchiveFailure(Model):
    """One archive item that could not be stored, with the platform error code and the reason."""

    id = fields.BigIntField(primary_key=True)
    source = fields.CharField(max_length=128)
    seq = fields.BigIntField(default=0)
    msgid = fields.CharField(max_length=128, default="")
    key_version = fields.IntField(null=True)
    code = fields.IntField(default=0, description="platform error code, 0 when the failure is ours")
    reason = fields.CharField(max_length=255, default="")
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)
    resolved_at = fields.DatetimeField(null=True)

    class Meta:
        table = "archive_failure"
        unique_together = (("source", "seq", "msgid"),)

"""Credentials seen once: a request credential that may be presented only once within its validity window.

A platform whose request signature covers only a timestamp (not the body) would accept a captured header pair
again with any body; each accepted credential is recorded here under a scope, with the digest of the body it came
with, until the window it is valid in has passed. The unique (scope, key) makes the first request win on every
instance sharing the database; rows past ``expires_at`` can no longer be presented and are swept.
"""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class SeenSignature(Model):
    """One accepted credential (``key``) within ``scope``, the body it authenticated, and when it lapses."""

    id = fields.BigIntField(primary_key=True)
    scope = fields.CharField(max_length=32)
    key = fields.CharField(max_length=128)
    digest = fields.CharField(max_length=64, description="SHA-256 (hex) of the body first sent with this key")
    expires_at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "seen_signature"
        unique_together = (("scope", "key"),)

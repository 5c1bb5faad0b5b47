"""How moments are shown to people: in the configured timezone, to the minute."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo


def local(moment: object, tz: ZoneInfo) -> str:
    """``2026-11-18 10:00`` in ``tz``, or ``—`` when there is no moment."""
    if not isinstance(moment, datetime):
        return "—"
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M")

"""Signed, expiring dashboard links: ``/dash/{staff id}.{scope}.{expiry}.{signature}``.

The signature is HMAC-SHA256 over the staff id, the scope (``own-<id>``, ``team-<id>`` or ``company``) and the
expiry (Unix seconds) under ``[reports] dashboard_secret`` (or a key derived from the platforms' app secrets, never
used raw), compared in constant time. A valid signature is not enough: the scope must still be the staff member's
own (a rep their own customers, a manager their team, a director or admin the company) when the page is opened.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.config import Settings
from models.staff import Role, Staff

TOKEN_SHAPE = re.compile(r"^(\d{1,12})\.(own-\d{1,12}|team-\d{1,12}|company)\.(\d{1,12})\.([0-9a-f]{64})$")


@dataclass(frozen=True)
class DashToken:
    staff_id: int
    scope: str
    expires: int


def _key(settings: Settings) -> bytes:
    if settings.reports.dashboard_secret:
        material = "dash\0" + settings.reports.dashboard_secret
    else:
        material = "\0".join(("crmbot-dash-v1", *(part for p in settings.platforms() for part in p.secrets())))
    return hashlib.sha256(material.encode()).digest()


def _signature(settings: Settings, staff_id: int, scope: str, expires: int) -> str:
    message = f"{staff_id}|{scope}|{expires}".encode()
    return hmac.new(_key(settings), message, hashlib.sha256).hexdigest()


def scope_code(staff: Staff) -> str:
    """The scope a staff member's dashboard shows."""
    if staff.role in (Role.DIRECTOR, Role.ADMIN):
        return "company"
    if staff.role == Role.MANAGER:
        return f"team-{staff.id}"
    return f"own-{staff.id}"


def make_token(settings: Settings, staff: Staff, scope: str, now: datetime) -> str:
    expires = int((now + timedelta(days=settings.reports.dashboard_link_days)).timestamp())
    return f"{staff.id}.{scope}.{expires}.{_signature(settings, staff.id, scope, expires)}"


def dashboard_link(settings: Settings, staff: Staff, now: datetime) -> str:
    token = make_token(settings, staff, scope_code(staff), now)
    return f"{settings.server.public_url.rstrip('/')}/dash/{token}"


def read_token(settings: Settings, token: str, now: datetime) -> DashToken | None:
    """The token's content when it is well formed, signed with our key and not expired; else None."""
    m = TOKEN_SHAPE.match(token)
    if m is None:
        return None
    staff_id, scope, expires, signature = int(m[1]), m[2], int(m[3]), m[4]
    if not hmac.compare_digest(signature, _signature(settings, staff_id, scope, expires)):
        return None
    if now.timestamp() >= expires:
        return None
    return DashToken(staff_id, scope, expires)

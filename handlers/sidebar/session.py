"""The sidebar's signed session and form tokens.

After the platform vouched for a staff member (its sign-in code), the browser keeps a short-lived session cookie
(``[sidebar] session_minutes``): who (staff id, platform, platform user id), until when, and a random nonce, signed
with HMAC-SHA256 under ``[sidebar] secret`` (else a key derived from the platforms' app secrets, never used raw).
Nothing is stored on the server; a cookie that is altered, expired or made under another key opens to nothing. A
form token is the HMAC of the session's nonce under the same key, so a page of one session cannot post for another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from bot.config import Settings

COOKIE = "crmbot_sidebar"
STATE_COOKIE = "crmbot_sidebar_state"
STATE_SECONDS = 600  # a sign-in must come back within this
MAX_COOKIE_CHARS = 1024


@dataclass(frozen=True, slots=True)
class Session:
    staff_id: int
    platform: str
    user_id: str
    expires: int  # Unix time
    nonce: str


def session_key(settings: Settings) -> bytes:
    if settings.sidebar.secret:
        material = "sidebar\0" + settings.sidebar.secret
    else:
        material = "\0".join(("crmbot-sidebar-v1", *(part for p in settings.platforms() for part in p.secrets())))
    return hashlib.sha256(material.encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_session(staff_id: int, platform: str, user_id: str, now: float, minutes: int) -> Session:
    return Session(staff_id, platform, user_id, int(now) + minutes * 60, secrets.token_urlsafe(16))


def seal(key: bytes, session: Session) -> str:
    body = json.dumps(
        {"s": session.staff_id, "p": session.platform, "u": session.user_id, "e": session.expires, "n": session.nonce},
        separators=(",", ":"),
    ).encode()
    payload = _b64(body)
    return f"{payload}.{_b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())}"


def opened(key: bytes, value: str | None, now: float) -> Session | None:
    """The session sealed in ``value``, or None for anything forged, altered, malformed or expired."""
    if not value or len(value) > MAX_COOKIE_CHARS or value.count(".") != 1:
        return None
    payload, mac = value.split(".")
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        return None
    try:
        data = json.loads(_unb64(payload))
        session = Session(int(data["s"]), str(data["p"]), str(data["u"]), int(data["e"]), str(data["n"]))
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    return session if now < session.expires else None


def form_token(key: bytes, session: Session) -> str:
    return _b64(hmac.new(key, b"form\0" + session.nonce.encode(), hashlib.sha256).digest())


def form_token_ok(key: bytes, session: Session, token: str) -> bool:
    return hmac.compare_digest(token.encode(), form_token(key, session).encode())

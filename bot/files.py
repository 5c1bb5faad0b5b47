"""Files the bot sends (an exported spreadsheet, a chart): stored in the database, attached to replies, fetched by
signed links.

``store_file`` keeps the bytes in ``stored_file`` (inside the caller's transaction when given ``using_db``) and
answers the ``Attachment`` a ``Reply`` carries; every instance's outbox can then send it. A channel that can carry
the file itself (WeCom's image and file messages) reads it with ``load`` and remembers where the platform holds it
(``remote_id`` / ``remember_remote``) so that a repeated send does not upload it again; a channel that can only
carry a link (DingTalk, a markdown message) sends ``download_url``: ``{public_url}/files/{id}?exp=…&sig=…``, the
signature an HMAC-SHA256 over the id and the expiry under ``[files] secret`` (or a key derived from the platforms'
secrets), compared in constant time. A forged or expired link is refused with 403; a file already swept answers
410. ``sweep`` deletes the files past ``expires_at`` (hourly, ``bot/scheduler.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import mimetypes
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web
from tortoise.backends.base.client import BaseDBAsyncClient

from bot.config import Settings
from bot.keys import CLOCK, SETTINGS
from bot.types import Attachment, AttachmentKind
from models.files import StoredFile

log = logging.getLogger(__name__)

KEEP_HOURS = 72  # the default of ``[files] keep_hours``
DOWNLOAD_PATH = "/files/{id}"
_ID = re.compile(r"^[0-9]{1,18}$")
_EXP = re.compile(r"^[0-9]{1,12}$")
_SIG = re.compile(r"^[0-9a-f]{64}$")
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")
_ASCII_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]")

DOWNLOAD_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the signature is in the URL
    "Content-Security-Policy": "default-src 'none'; sandbox",
}
REFUSED = "链接无效或已过期，请在聊天里重新获取。"
GONE = "文件已过期删除，请在聊天里重新获取。"


def safe_filename(name: str) -> str:
    """The name a file is shown and saved under: no path separators or control characters, at most 120 chars."""
    clean = _UNSAFE_NAME.sub("_", name).strip().strip(".") or "file"
    if len(clean) > 120:
        stem, dot, ext = clean.rpartition(".")
        clean = (stem[: 120 - len(ext) - 1] + dot + ext) if dot and len(ext) <= 10 else clean[:120]
    return clean


def kind_of(content_type: str) -> AttachmentKind:
    return "image" if content_type.startswith("image/") else "file"


async def store_file(
    filename: str,
    data: bytes,
    content_type: str = "",
    *,
    now: datetime | None = None,
    keep_hours: int = KEEP_HOURS,
    using_db: BaseDBAsyncClient | None = None,
) -> Attachment:
    """Keep ``data`` for ``keep_hours`` and answer the attachment that sends it (an image for ``image/*``)."""
    name = safe_filename(filename)
    content_type = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    row = await StoredFile.create(
        filename=name,
        content_type=content_type,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,
        expires_at=moment + timedelta(hours=keep_hours),
        using_db=using_db,
    )
    return Attachment(kind_of(content_type), name, row.id)


async def load(file_id: int, using_db: BaseDBAsyncClient | None = None) -> StoredFile | None:
    """The stored file, or None once it is swept."""
    return await StoredFile.get_or_none(id=file_id, using_db=using_db)


def remote_id(stored: StoredFile, platform: str, now: datetime) -> str | None:
    """The id under which ``platform`` already holds this file, while it is valid there."""
    entry = (stored.remote or {}).get(platform)
    if not isinstance(entry, dict):
        return None
    try:
        until = datetime.fromisoformat(str(entry.get("until", "")))
    except ValueError:
        return None
    return str(entry.get("id") or "") or None if now < until else None


async def remember_remote(stored: StoredFile, platform: str, remote: str, until: datetime) -> None:
    """Remember that ``platform`` holds this file as ``remote`` until ``until``."""
    entries: dict[str, Any] = dict(stored.remote or {})
    entries[platform] = {"id": remote, "until": until.astimezone(UTC).isoformat()}
    stored.remote = entries
    await StoredFile.filter(id=stored.id).update(remote=entries)


async def sweep(now: datetime) -> int:
    """Delete the files past their expiry; how many."""
    return await StoredFile.filter(expires_at__lt=now.astimezone(UTC)).delete()


# -- signed download links -------------------------------------------------------------------------------------


def link_key(settings: Settings) -> bytes:
    """The HMAC key of download links: ``[files] secret``, else derived from the platforms' secrets."""
    if settings.files.secret:
        material = "files\0" + settings.files.secret
    else:
        material = "\0".join(("crmbot-files-v1", *(part for p in settings.platforms() for part in p.secrets())))
    return hashlib.sha256(material.encode()).digest()


def signature(key: bytes, file_id: int, exp: int) -> str:
    return hmac.new(key, f"{file_id}.{exp}".encode(), hashlib.sha256).hexdigest()


def download_url(settings: Settings, attachment: Attachment, now: datetime) -> str:
    """An absolute link that downloads ``attachment`` for ``[files] link_hours`` from ``now``."""
    exp = int(now.timestamp()) + settings.files.link_hours * 3600
    sig = signature(link_key(settings), attachment.file_id, exp)
    base = settings.server.public_url.rstrip("/")
    return f"{base}/files/{attachment.file_id}?exp={exp}&sig={sig}"


def content_disposition(kind: AttachmentKind, filename: str) -> str:
    """``inline`` for pictures, ``attachment`` for files; the UTF-8 name (RFC 6266) and an ASCII fallback."""
    fallback = _ASCII_UNSAFE.sub("_", filename) or "file"
    disposition = "inline" if kind == "image" else "attachment"
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def download(request: web.Request) -> web.Response:
    """``GET /files/{id}?exp=&sig=``: the file, for a link signed by us and not yet expired; else 403."""
    raw_id, exp, sig = request.match_info["id"], request.query.get("exp", ""), request.query.get("sig", "")
    if not (_ID.match(raw_id) and _EXP.match(exp) and _SIG.match(sig)):
        return _refuse(request)
    file_id, expiry = int(raw_id), int(exp)
    expected = signature(link_key(request.app[SETTINGS]), file_id, expiry)
    if not hmac.compare_digest(expected, sig):
        return _refuse(request)
    if request.app[CLOCK].now().timestamp() > expiry:
        return _refuse(request)
    stored = await load(file_id)
    if stored is None or stored.expires_at <= request.app[CLOCK].now():
        return web.Response(status=410, text=GONE, headers=DOWNLOAD_HEADERS)
    headers = {
        **DOWNLOAD_HEADERS,
        "Content-Type": stored.content_type,
        "Content-Disposition": content_disposition(kind_of(stored.content_type), stored.filename),
    }
    return web.Response(body=bytes(stored.data), headers=headers)


def _refuse(request: web.Request) -> web.Response:
    log.info("files: refused a download link from %s", request.remote)
    return web.Response(status=403, text=REFUSED, headers=DOWNLOAD_HEADERS)

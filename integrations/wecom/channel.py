"""The WeCom channel adapter: a platform-neutral ``Reply`` becomes ``message/send`` (text, markdown, template card,
image, file) or ``message/update_template_card`` (the state of a clicked card).

Attachments: the text goes first as its own message, then each attachment as an ``image`` (PNG or JPEG up to
10 MB) or ``file`` message (up to 20 MB) whose ``media_id`` comes from ``media/upload``. The media id is valid
for three days; it is remembered with the stored file (``bot.files.remember_remote``), so a repeated send, on
any instance, does not upload again.

Long text: WeCom cuts text and markdown content at 2048 bytes without saying so. A longer reply is split at line
breaks into up to ``MAX_PARTS`` messages sent in order; beyond that the last part ends with a visible note that
the answer was cut. Parts (and attachments) already delivered are remembered (in memory) so that a retry after a failure
in the middle does not repeat them.

Repeats: WeCom drops a ``message/send`` identical to one delivered to the same user within
``duplicate_check_interval`` seconds (at most 4 hours) when the request says ``enable_duplicate_check: 1``. The
check is set only on a send of an outbox row that may already have gone out (the outbox passes ``maybe_sent_at``:
an earlier claim took the row for sending then and no answer was recorded, after a timeout, a lost answer or a
crash), with an interval from that moment until now plus a margin; that covers the lease and the restart delay, and
the repeat is then not shown. A first send never carries the check, so texts that are identical on purpose (the
same help reply asked for twice, two reminders in the same words) are all delivered, and no message content is
altered. The remaining window: a repeat is also dropped when, within that interval, another identical message was
sent to the same person on purpose, which needs both a lost answer (or a crash) and a same-worded message minutes
apart. Split replies repeat each part with the check; template cards too (a card whose first send did reach the
person is not shown twice). Customer-contact messages (``externalcontact/add_msg_template``) and card updates have
no such check: a card update's response code is single-use, so its repeat is refused, never shown.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.channels import CARD_HANDLE, PermanentDeliveryError, RateLimit
from bot.files import load, remember_remote, remote_id
from bot.types import Attachment, Card, Platform, Reply
from integrations.wecom.client import WeComClient
from integrations.wecom.customer_message import customer_recipients, send_customer_message

log = logging.getLogger(__name__)

CONTENT_LIMIT = 2048  # bytes, text and markdown
MAX_PARTS = 4  # WeCom also limits each member to 30 app messages a minute, silently dropping the rest
CUT_NOTE = "\n……（内容过长，后面的部分未显示，请缩小查询范围）"
MAX_BUTTONS = 6
MAX_FIELDS = 6
TASK_ID_UNSAFE = re.compile(r"[^0-9A-Za-z_\-@]")
REMEMBERED_PARTS = 2000
DUPLICATE_CHECK_MAX_SECONDS = 4 * 3600  # WeCom's ceiling for duplicate_check_interval
# Added to the time since the first send: this host's clock against WeCom's, and the request's own time.
DUPLICATE_CHECK_MARGIN_SECONDS = 300
# media/upload: a media id is valid for three days (used here for a little less); size limits per type.
MEDIA_VALID = timedelta(days=3) - timedelta(hours=1)
IMAGE_TYPES = {"image/png", "image/jpeg"}
IMAGE_LIMIT = 10 * 1024 * 1024
FILE_LIMIT = 20 * 1024 * 1024
MEDIA_MIN_BYTES = 6  # "every file must be larger than 5 bytes"


def split_content(text: str, limit: int = CONTENT_LIMIT, max_parts: int = MAX_PARTS) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` UTF-8 bytes, preferring line breaks; at most ``max_parts``
    pieces, the last one then ending with ``CUT_NOTE``."""
    if len(text.encode()) <= limit:
        return [text]
    parts: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while len(line.encode()) > limit:  # one line longer than a whole message: cut it by characters
            head = _prefix_within(line, limit - len(current.encode()))
            if not head:
                parts.append(current)
                current = ""
                continue
            parts.append(current + head)
            current, line = "", line[len(head) :]
        if len((current + line).encode()) > limit:
            parts.append(current)
            current = line
        else:
            current += line
    if current:
        parts.append(current)
    parts = [p.rstrip("\n") for p in parts if p.strip()]
    if len(parts) > max_parts:
        parts = parts[:max_parts]
        last = _prefix_within(parts[-1], limit - len(CUT_NOTE.encode()))
        parts[-1] = last.rstrip("\n") + CUT_NOTE
    return parts


def _prefix_within(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits in ``limit`` bytes (never splitting a character)."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: max(limit, 0)].decode(errors="ignore")


def card_body(recipient: str, card: Card) -> dict[str, Any]:
    """A ``button_interaction`` template card; each button's key is the text command its click stands for."""
    template: dict[str, Any] = {
        "card_type": "button_interaction",
        "main_title": {"title": card.title},
        "task_id": safe_task_id(card.card_id),
        "button_list": [
            {"type": 0, "text": b.text, "style": b.style if 1 <= b.style <= 4 else 1, "key": b.key}
            for b in card.buttons[:MAX_BUTTONS]
        ],
    }
    if card.description:
        template["main_title"]["desc"] = card.description
    fields = list(card.fields)
    if fields:
        template["horizontal_content_list"] = [{"keyname": k, "value": v} for k, v in fields[:MAX_FIELDS]]
        if len(fields) > MAX_FIELDS:
            template["sub_title_text"] = "\n".join(f"{k}：{v}" for k, v in fields[MAX_FIELDS:])
    return {"touser": recipient, "msgtype": "template_card", "template_card": template}


def duplicate_check(maybe_sent_at: datetime | None) -> dict[str, Any]:
    """The ``message/send`` fields that make WeCom drop this send if it repeats one delivered since
    ``maybe_sent_at`` (none for a first send)."""
    if maybe_sent_at is None:
        return {}
    elapsed = max((datetime.now(UTC) - maybe_sent_at).total_seconds(), 0.0)
    interval = min(math.ceil(elapsed) + DUPLICATE_CHECK_MARGIN_SECONDS, DUPLICATE_CHECK_MAX_SECONDS)
    return {"enable_duplicate_check": 1, "duplicate_check_interval": interval}


def safe_task_id(task_id: str) -> str:
    """WeCom task ids are ``[0-9A-Za-z_-@]``, at most 128 bytes."""
    return TASK_ID_UNSAFE.sub("_", task_id)[:128] or "card"


class WeComChannel:
    """``ChannelAdapter`` for WeCom: recipients are WeCom UserIDs."""

    platform: Platform = "wecom"
    live_for: set[int] | None = None

    def __init__(self, client: WeComClient) -> None:
        self.client = client
        settings = client.settings
        self.rate_limits: tuple[RateLimit, ...] = (
            RateLimit(settings.member_messages_per_minute, 60),
            RateLimit(settings.member_messages_per_hour, 3600),
        )
        self._delivered: OrderedDict[str, str] = OrderedDict()

    async def send(
        self, recipient: str, reply: Reply, reply_to: dict[str, Any], *, maybe_sent_at: datetime | None = None
    ) -> dict[str, Any]:
        # Customer-contact message (NPS survey): to external contacts on the rep's behalf, see customer_message.py.
        if (externals := customer_recipients(reply_to)) is not None:
            return await send_customer_message(self.client, recipient, externals, reply.text)
        if reply.kind == "card_update":
            return await self._update_card(recipient, reply)
        check = duplicate_check(maybe_sent_at)
        if reply.kind == "card" and reply.card is not None:
            answer = await self.client.send_message(card_body(recipient, reply.card) | check)
            return {"msgid": answer.get("msgid", ""), CARD_HANDLE: answer.get("response_code", "")}
        msgtype = "markdown" if reply.kind == "markdown" else "text"
        text = reply.text  # a "card" without a card is plain text
        if not text.strip() and not reply.attachments:
            raise PermanentDeliveryError("empty message")
        return await self._send_parts(recipient, msgtype, text, reply.attachments, check)

    async def _send_parts(
        self, recipient: str, msgtype: str, text: str, attachments: tuple[Attachment, ...], check: dict[str, Any]
    ) -> dict[str, Any]:
        """The text's parts, then each attachment, each its own message, in order."""
        parts = split_content(text) if text.strip() else []
        files = ",".join(str(a.file_id) for a in attachments)
        digest = hashlib.sha256(f"{recipient}\0{msgtype}\0{text}\0{files}".encode()).hexdigest()[:32]
        steps = len(parts) + len(attachments)
        msgids = []
        for i in range(steps):
            key = f"{digest}:{i}"
            if (done := self._delivered.get(key)) is not None:
                msgids.append(done)
                continue
            if i < len(parts):
                body = {"touser": recipient, "msgtype": msgtype, msgtype: {"content": parts[i]}}
            else:
                body = await self._media_message(recipient, attachments[i - len(parts)])
            answer = await self.client.send_message(body | check)
            msgid = str(answer.get("msgid", ""))
            msgids.append(msgid)
            if steps > 1:
                self._remember(key, msgid)
        for i in range(steps):
            self._delivered.pop(f"{digest}:{i}", None)
        result: dict[str, Any] = {"msgid": msgids[0] if msgids else ""}
        if len(msgids) > 1:
            result["msgids"] = msgids
        return result

    async def _media_message(self, recipient: str, attachment: Attachment) -> dict[str, Any]:
        """An image or file message for ``attachment``, uploading it unless WeCom already holds it."""
        stored = await load(attachment.file_id)
        if stored is None:
            raise PermanentDeliveryError(f"file {attachment.file_id} is no longer stored")
        if not MEDIA_MIN_BYTES <= stored.size <= FILE_LIMIT:
            raise PermanentDeliveryError(f"file {attachment.file_id}: {stored.size} bytes cannot be sent")
        image = attachment.kind == "image" and stored.content_type in IMAGE_TYPES and stored.size <= IMAGE_LIMIT
        media_type = "image" if image else "file"
        now = datetime.now(UTC)
        where = f"{self.platform}:{media_type}"
        if (media_id := remote_id(stored, where, now)) is None:
            media_id = await self.client.upload_media(
                media_type, stored.filename, bytes(stored.data), stored.content_type
            )
            await remember_remote(stored, where, media_id, now + MEDIA_VALID)
        return {"touser": recipient, "msgtype": media_type, media_type: {"media_id": media_id}}

    def _remember(self, key: str, msgid: str) -> None:
        self._delivered[key] = msgid
        while len(self._delivered) > REMEMBERED_PARTS:
            self._delivered.popitem(last=False)

    async def _update_card(self, recipient: str, reply: Reply) -> dict[str, Any]:
        update = reply.card_update
        if update is None or not update.handle:
            raise PermanentDeliveryError("card update without a response code")
        await self.client.update_template_card([recipient], update.handle, update.label or reply.text or "已处理")
        return {"updated": update.handle}

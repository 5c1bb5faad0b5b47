"""DingTalk robot callback JSON → ``IncomingMessage``: the only place that reads DingTalk message field names.

The robot body (PROTOCOLS.md §6) carries the text, who sent it (``senderStaffId`` is the corp user id that
``Staff.dingtalk_userid`` holds), the conversation, and a ``sessionWebhook`` that can answer in that conversation
until ``sessionWebhookExpiredTime``. The webhook and its expiry travel in ``IncomingMessage.reply_to``, opaque to
the core, back to this integration's channel. In a group the robot only hears messages that @ it; the mention
text is removed so the rest parses like a 1:1 message.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bot.types import IncomingMessage

log = logging.getLogger(__name__)

# reply_to keys (private to this integration)
WEBHOOK = "session_webhook"
WEBHOOK_EXPIRES_MS = "session_webhook_expires_ms"
CONVERSATION_TYPE = "conversation_type"
CONVERSATION_ID = "conversation_id"
AT_USER = "at_user"

GROUP = "2"
SINGLE = "1"
_LEADING_MENTION = re.compile(r"^\s*@\S+\s*")


class NotAMessage(ValueError):
    """The body is not a DingTalk robot message we can read (HTTP 400)."""


class NotOurRobot(ValueError):
    """The body names another robot than the one configured (HTTP 403)."""


def check_robot(body: dict[str, Any], robot_code: str, chatbot_user_id: str) -> None:
    """The body's ``robotCode`` and ``chatbotUserId`` are ours, where configured; else ``NotOurRobot``."""
    for field, ours in (("robotCode", robot_code), ("chatbotUserId", chatbot_user_id)):
        if ours and body.get(field) != ours:
            raise NotOurRobot(f"{field} is not this robot's")


# A session webhook as DingTalk hands it out (https://oapi.dingtalk.com/robot/sendBySession?session=…): nothing in
# its path or query that could lead the reply elsewhere once a client normalizes the URL.
_WEBHOOK_PATH = re.compile(r"(/[A-Za-z0-9_\-.]+)+")
_WEBHOOK_QUERY = re.compile(r"(?:[A-Za-z0-9_\-.=&+]|%[0-9A-Fa-f]{2})*")


def safe_webhook(url: str, prefix: str) -> str:
    """``url`` rebuilt from its parts when it is a plain URL under ``prefix``, else "".

    Plain: printable ASCII; the scheme and the host (with its port, without userinfo) exactly the prefix's; a path
    below the prefix's path made of plain segments (no dot segments, no percent-escapes, so no encoded slashes);
    a query of ``key=value`` pairs (which cannot change the path); no fragment.
    """
    if not url.isascii() or not url.isprintable() or " " in url:
        return ""
    parts, base = urlsplit(url), urlsplit(prefix)
    if (parts.scheme, parts.netloc.lower(), parts.fragment) != (base.scheme, base.netloc.lower(), ""):
        return ""
    if not parts.path.startswith(base.path) or not _WEBHOOK_PATH.fullmatch(parts.path):
        return ""
    if any(segment in (".", "..") for segment in parts.path.split("/")) or not _WEBHOOK_QUERY.fullmatch(parts.query):
        return ""
    return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))


def _str(body: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise NotAMessage(f"missing {key}")
        return ""
    if not isinstance(value, str):
        raise NotAMessage(f"{key} must be a string")
    return value


def _int(body: dict[str, Any], key: str, *, required: bool = False) -> int | None:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise NotAMessage(f"missing {key}")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise NotAMessage(f"{key} must be an integer")
    try:
        return int(value)
    except ValueError as exc:
        raise NotAMessage(f"{key} must be an integer") from exc


def _text_of(body: dict[str, Any], msgtype: str) -> tuple[str, dict[str, Any]]:
    """The readable text and the media references worth keeping."""
    if msgtype == "text":
        text = body.get("text")
        if not isinstance(text, dict) or not isinstance(text.get("content"), str):
            raise NotAMessage("text message without text.content")
        return text["content"], {}
    content = body.get("content")
    if content is None:
        return "", {}
    if not isinstance(content, dict):
        raise NotAMessage("content must be an object")
    if msgtype == "richText":
        parts = content.get("richText")
        if not isinstance(parts, list):
            raise NotAMessage("richText message without content.richText")
        texts = [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
        codes = [p["downloadCode"] for p in parts if isinstance(p, dict) and isinstance(p.get("downloadCode"), str)]
        return "".join(texts), ({"download_codes": codes} if codes else {})
    if msgtype == "picture":
        code = content.get("downloadCode") or content.get("pictureDownloadCode")
        return "", ({"download_codes": [code]} if isinstance(code, str) else {})
    return "", {}


def strip_mention(text: str, robot_name: str = "") -> str:
    """Remove the @robot mention: ``@<robot_name>`` wherever it is, else one leading ``@name``."""
    if robot_name and f"@{robot_name}" in text:
        return text.replace(f"@{robot_name}", " ").strip()
    return _LEADING_MENTION.sub("", text, count=1).strip()


def normalize(body: Any, robot_name: str = "", webhook_prefix: str = "https://oapi.dingtalk.com/") -> IncomingMessage:
    """Build the neutral message from a robot callback body; raises ``NotAMessage`` for anything unreadable.

    A ``sessionWebhook`` that is not a plain URL under ``webhook_prefix`` is dropped (the reply then goes by
    batchSend): the signature covers only the headers, so the body's URL is not trusted blindly.
    """
    if not isinstance(body, dict):
        raise NotAMessage("body must be a JSON object")
    msgid = _str(body, "msgId", required=True)
    msgtype = _str(body, "msgtype", required=True)
    created = _int(body, "createAt", required=True) or 0
    sender = _str(body, "senderStaffId") or _str(body, "senderId", required=True)
    kind = _int(body, "conversationType")
    conversation_type = SINGLE if kind is None else str(kind)
    if conversation_type not in (SINGLE, GROUP):
        raise NotAMessage("conversationType must be 1 or 2")
    conversation_id = _str(body, "conversationId")
    webhook = _str(body, "sessionWebhook")
    expires = _int(body, "sessionWebhookExpiredTime")
    in_at_list = body.get("isInAtList")
    if in_at_list is not None and not isinstance(in_at_list, bool):
        raise NotAMessage("isInAtList must be a boolean")
    text, media = _text_of(body, msgtype)
    is_group = conversation_type == GROUP
    if is_group:
        text = strip_mention(text, robot_name)
    try:
        sent_at = datetime.fromtimestamp(created / 1000, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise NotAMessage("createAt out of range") from exc

    reply_to: dict[str, Any] = {CONVERSATION_TYPE: conversation_type, CONVERSATION_ID: conversation_id}
    if webhook and not (webhook := safe_webhook(webhook, webhook_prefix)):
        log.warning("dingtalk message %s: sessionWebhook outside %s ignored", msgid[:64], webhook_prefix)
    if webhook and expires:
        reply_to[WEBHOOK] = webhook
        reply_to[WEBHOOK_EXPIRES_MS] = expires
    if is_group and _str(body, "senderStaffId"):
        reply_to[AT_USER] = sender  # answers in a group @ the person who asked
    raw: dict[str, Any] = {
        "robot_code": _str(body, "robotCode"),
        "conversation_title": _str(body, "conversationTitle"),
        "in_at_list": bool(in_at_list),
        **media,
    }
    return IncomingMessage(
        platform="dingtalk",
        msgid=msgid[:128],
        sender=sender[:64],
        text=text.strip(),
        sent_at=sent_at,
        msgtype=msgtype[:32],
        sender_name=_str(body, "senderNick"),
        conversation_id=conversation_id[:128],
        is_group=is_group,
        reply_to=reply_to,
        raw=raw,
    )

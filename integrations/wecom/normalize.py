"""WeCom callback XML → ``IncomingMessage``: the only place that reads WeCom message field names."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import xmltodict

from bot.types import IncomingMessage


class NotAMessage(ValueError):
    """The decrypted XML is not a WeCom message."""


def parse_xml(xml: str) -> dict[str, Any]:
    """``<xml>`` fields as a dict, shaped as ``xmltodict`` shapes them (text stripped, empty → None).

    Callback envelopes and ordinary messages are flat (one text element per field) and take a fast path through
    ``xml.etree``; anything else (nested elements, repeated tags, attributes) goes through ``xmltodict``.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise NotAMessage(f"malformed XML: {type(exc).__name__}") from exc
    except Exception:  # e.g. an encoding declaration in a str: let the general parser decide
        return _parse_xml_general(xml)
    if root.tag == "xml" and not root.attrib and len(root):
        fields: dict[str, Any] = {}
        for child in root:
            if len(child) or child.attrib or child.tag in fields:
                return _parse_xml_general(xml)
            fields[child.tag] = (child.text or "").strip() or None
        return fields
    return _parse_xml_general(xml)


def _parse_xml_general(xml: str) -> dict[str, Any]:
    try:
        doc = xmltodict.parse(xml)
    except Exception as exc:  # expat raises several types for malformed input
        raise NotAMessage(f"malformed XML: {type(exc).__name__}") from exc
    root = doc.get("xml") if isinstance(doc, dict) else None
    if not isinstance(root, dict):
        raise NotAMessage("no <xml> root")
    return root


def normalize(fields: dict[str, Any]) -> IncomingMessage:
    """Build the neutral message; events are de-duplicated by sender + time + event (+ card task)."""
    sender = str(fields.get("FromUserName") or "")
    msgtype = str(fields.get("MsgType") or "")
    try:
        created = int(fields.get("CreateTime") or 0)
    except (TypeError, ValueError) as exc:
        raise NotAMessage("bad CreateTime") from exc
    if not sender or not msgtype:
        raise NotAMessage("missing FromUserName or MsgType")
    sent_at = datetime.fromtimestamp(created, UTC)
    if msgtype == "event":
        event = str(fields.get("Event") or "")
        event_key = str(fields.get("EventKey") or "")
        task_id = str(fields.get("TaskId") or "")
        msgid = f"ev:{sender}:{created}:{event}:{task_id}:{event_key}"[:128]
        return IncomingMessage(
            platform="wecom",
            msgid=msgid,
            sender=sender,
            text="",
            sent_at=sent_at,
            msgtype="event",
            event=event,
            event_key=event_key,
            raw=_event_raw(fields),
        )
    msgid = str(fields.get("MsgId") or "")
    if not msgid:
        raise NotAMessage("message without MsgId")
    text = str(fields.get("Content") or "") if msgtype == "text" else ""
    return IncomingMessage(
        platform="wecom",
        msgid=msgid,
        sender=sender,
        text=text.strip(),
        sent_at=sent_at,
        msgtype=msgtype,
        raw={k: v for k, v in fields.items() if k in _KEPT_FIELDS},
    )


_KEPT_FIELDS = {"MediaId", "PicUrl", "Format", "ThumbMediaId", "Title", "Description", "Url", "Label", "AgentID"}


def _event_raw(fields: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for key in ("TaskId", "CardType", "ResponseCode", "AgentID", "SelectedItems"):
        if key in fields:
            raw[_snake(key)] = fields[key]
    return raw


def _snake(name: str) -> str:
    return {"TaskId": "task_id", "CardType": "card_type", "ResponseCode": "response_code"}.get(name, name.lower())

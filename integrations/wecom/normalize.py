"""WeCom callback XML → ``IncomingMessage``: the only place that reads WeCom message field names.

A tap on a template card's button (``template_card_event``) becomes a neutral ``Click`` carrying the button's key,
the card's task id and the single-use response code that updates it; the chat archive's ``msgaudit_notify``
becomes the neutral ``ARCHIVE_READY`` event. Other events keep their WeCom name.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import defusedxml.ElementTree as defused
import xmltodict

from bot.types import (
    ARCHIVE_READY,
    CONTACT_ADDED,
    CONTACT_DROPPED,
    CONTACT_LOST,
    CONTACT_TRANSFER_FAILED,
    STAFF_LEFT,
    Click,
    IncomingMessage,
)


class NotAMessage(ValueError):
    """The XML is not a WeCom message, or not one we are willing to read."""


# Limits of what any WeCom document may be: a rep may paste a long text into WeCom (a 34,000-character spec is
# about 100 KB of UTF-8, 137 KB once encrypted and base64-encoded in the envelope), so 256 KiB, the server's default
# body limit, leaves room to spare; the deepest document is a card event's answers,
# <xml><SelectedItems><SelectedItem><OptionIds><OptionId>, five levels.
MAX_XML_CHARS = 256 * 1024
MAX_DEPTH = 6

# A flat document in the shape WeCom sends: <xml>, then elements each holding one CDATA section or plain text
# (no markup, entity, '>', carriage return or character XML forbids in it), nothing else. Anything outside this
# shape, however valid, takes the hardened XML parser; whatever this shape accepts, the parser reads the same way
# (tests/test_wecom_callback.py checks that on generated documents), and it can hold no declaration, DTD or entity.
_BAD = "\x00-\x08\x0b\x0c\x0e-\x1f\r\ufffe\uffff"
_FLAT_OPEN = re.compile(r"[ \t\n]*<xml>")
_FLAT_FIELD = re.compile(
    rf"[ \t\n]*<([A-Za-z_][A-Za-z0-9_]*)>"
    rf"(?:<!\[CDATA\[([^\]{_BAD}]*(?:\](?!\]>)[^\]{_BAD}]*)*)\]\]>|([^<&>{_BAD}]*))</\1>"
)
_FLAT_CLOSE = re.compile(r"[ \t\n]*</xml>[ \t\n]*")
_DECLARED_ENCODING = re.compile(r"\A\ufeff?\s*<\?xml\b[^>]*?\bencoding\s*=\s*[\"']([^\"']*)[\"']")


def parse_xml(xml: str) -> dict[str, Any]:
    """``<xml>`` fields as a dict, shaped as ``xmltodict`` shapes them (text stripped, empty → None).

    Every callback envelope and ordinary message is flat and is read with regular expressions (the XML parser
    costs several times more, on every callback); the rest goes through ``defusedxml`` (no DTD, no entities),
    within ``MAX_XML_CHARS`` and ``MAX_DEPTH``, declared as UTF-8 if declared at all, and, for nested elements,
    repeated tags or attributes, ``xmltodict``. Anything else raises ``NotAMessage``.
    """
    if len(xml) > MAX_XML_CHARS:
        raise NotAMessage(f"XML longer than {MAX_XML_CHARS} characters")
    return _parse_flat(xml) or _parse_hardened(xml)


def _parse_flat(xml: str) -> dict[str, Any] | None:
    """The fields of a document in the flat shape above; None for any other document."""
    opened = _FLAT_OPEN.match(xml)
    if opened is None:
        return None
    fields: dict[str, Any] = {}
    pos = opened.end()
    while (field := _FLAT_FIELD.match(xml, pos)) is not None:
        tag, cdata, text = field.groups()
        if tag in fields:
            return None
        fields[tag] = (cdata if text is None else text).strip() or None
        pos = field.end()
    return fields if fields and _FLAT_CLOSE.fullmatch(xml, pos) else None


def _parse_hardened(xml: str) -> dict[str, Any]:
    root = _checked_root(xml)
    if root.tag == "xml" and not root.attrib and len(root):
        fields: dict[str, Any] = {}
        for child in root:
            if len(child) or child.attrib or child.tag in fields:
                return _parse_xml_general(xml)
            fields[child.tag] = (child.text or "").strip() or None
        return fields
    return _parse_xml_general(xml)


def _checked_root(xml: str) -> ET.Element:
    """The root element, once ``defusedxml`` has read the whole document without a DTD or entity, and never
    deeper than ``MAX_DEPTH``."""
    declared = _DECLARED_ENCODING.match(xml)
    if declared is not None and declared.group(1).lower() != "utf-8":
        raise NotAMessage("XML declares an encoding other than UTF-8")
    parser = defused.XMLParser(target=_ShallowTree(), forbid_dtd=True)
    try:
        parser.feed(xml.encode())
        root: ET.Element = parser.close()
    except NotAMessage:
        raise
    except (ET.ParseError, ValueError, LookupError) as exc:  # DefusedXmlException is a ValueError
        raise NotAMessage(f"malformed XML: {type(exc).__name__}") from exc
    return root


class _ShallowTree(ET.TreeBuilder):
    """A tree builder that stops the parse at the first element deeper than ``MAX_DEPTH`` (the parser's per-element
    work is Python code: a deep document would otherwise cost milliseconds before any check could run)."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0

    def start(self, tag: Any, attrs: Any) -> ET.Element:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise NotAMessage(f"XML nested deeper than {MAX_DEPTH} levels")
        return super().start(tag, attrs)

    def end(self, tag: Any) -> ET.Element:
        self.depth -= 1
        return super().end(tag)


def _parse_xml_general(xml: str) -> dict[str, Any]:
    """``xmltodict``'s reading of a document ``_checked_root`` has already accepted (no DTD, shallow)."""
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
    created = _create_time(fields.get("CreateTime"))
    if not sender or not msgtype:
        raise NotAMessage("missing FromUserName or MsgType")
    sent_at = datetime.fromtimestamp(created, UTC)
    if msgtype == "event":
        event = str(fields.get("Event") or "")
        event_key = str(fields.get("EventKey") or "")
        task_id = str(fields.get("TaskId") or "")
        change = str(fields.get("ChangeType") or "")
        who = f":{change}:{fields.get('UserID') or ''}:{fields.get('ExternalUserID') or ''}" if change else ""
        msgid = f"ev:{sender}:{created}:{event}:{task_id}:{event_key}{who}"[:128]
        click = None
        if event == CARD_CLICK:
            click = Click(event_key, task_id, str(fields.get("ResponseCode") or ""))
            event = event_key = ""
        change_event = CHANGES.get((event, change))
        return IncomingMessage(
            platform="wecom",
            msgid=msgid,
            sender=sender,
            text="",
            sent_at=sent_at,
            msgtype="event",
            event=change_event or NEUTRAL_EVENTS.get(event, event),
            event_key=event_key,
            click=click,
            raw=_change_raw(fields) if change_event else _event_raw(fields),
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


def _create_time(value: Any) -> int:
    """``CreateTime``: Unix seconds WeCom writes as an unsigned 32-bit number; anything else is not a date."""
    text = str(value or "0").strip()
    if not _SECONDS.fullmatch(text) or int(text) > MAX_CREATE_TIME:
        raise NotAMessage("CreateTime is not a Unix time")
    return int(text)


MAX_CREATE_TIME = 2**32 - 1
_SECONDS = re.compile(r"[0-9]{1,10}")
CARD_CLICK = "template_card_event"
NEUTRAL_EVENTS = {"msgaudit_notify": ARCHIVE_READY}
# 客户联系 and address-book changes (Event, ChangeType) the core follows, by their neutral names.
CHANGES = {
    ("change_external_contact", "add_external_contact"): CONTACT_ADDED,
    ("change_external_contact", "add_half_external_contact"): CONTACT_ADDED,
    ("change_external_contact", "edit_external_contact"): CONTACT_ADDED,
    ("change_external_contact", "del_follow_user"): CONTACT_LOST,
    ("change_external_contact", "del_external_contact"): CONTACT_DROPPED,
    ("change_external_contact", "transfer_fail"): CONTACT_TRANSFER_FAILED,
    ("change_contact", "delete_user"): STAFF_LEFT,
}
TRANSFER_FAILURES = {"customer_refused": "客户拒绝", "customer_limit_exceed": "接替成员客户达到上限"}
_KEPT_FIELDS = {"MediaId", "PicUrl", "Format", "ThumbMediaId", "Title", "Description", "Url", "Label", "AgentID"}


def _change_raw(fields: dict[str, Any]) -> dict[str, Any]:
    """A contact or account change, neutrally: whose account, which customer contact, why a transfer failed."""
    return {
        "account": str(fields.get("UserID") or ""),
        "contact": str(fields.get("ExternalUserID") or ""),
        "reason": TRANSFER_FAILURES.get(str(fields.get("FailReason") or ""), ""),
    }


def _event_raw(fields: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for key in ("TaskId", "CardType", "ResponseCode", "AgentID", "SelectedItems"):
        if key in fields:
            raw[_snake(key)] = fields[key]
    return raw


def _snake(name: str) -> str:
    return {"TaskId": "task_id", "CardType": "card_type", "ResponseCode": "response_code"}.get(name, name.lower())

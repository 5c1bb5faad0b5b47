"""Platform-neutral values that cross the core: what came in, and what goes out.

Integrations turn platform payloads into ``IncomingMessage`` and turn ``Reply`` / ``Card`` back into platform
payloads; nothing in ``bot/`` or ``handlers/`` ever sees a platform field name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Platform = Literal["wecom", "dingtalk", "console"]
ReplyKind = Literal["text", "markdown", "card", "card_update"]


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One message or event from a platform, normalized.

    ``sender`` is the platform user id (WeCom UserID, DingTalk staffId, console user). ``reply_to`` carries
    what the platform needs to answer in the same conversation (e.g. a DingTalk session webhook); it is opaque
    to the core and handed back to the platform's channel adapter.
    """

    platform: Platform
    msgid: str
    sender: str
    text: str
    sent_at: datetime
    msgtype: str = "text"
    sender_name: str = ""
    conversation_id: str = ""
    is_group: bool = False
    to_bot: bool = True
    receivers: tuple[str, ...] = ()
    event: str = ""
    event_key: str = ""
    reply_to: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Button:
    key: str
    text: str
    style: int = 1


@dataclass(frozen=True, slots=True)
class Card:
    """An interactive card (approval and the like): a title, labelled fields and up to six buttons.

    ``task_id`` identifies the card so that a click can be matched and the card updated later.
    """

    title: str
    task_id: str
    description: str = ""
    fields: tuple[tuple[str, str], ...] = ()
    buttons: tuple[Button, ...] = ()


@dataclass(frozen=True, slots=True)
class Reply:
    """Something to say: plain text, markdown, a card, or the new state of a card already sent."""

    text: str = ""
    kind: ReplyKind = "text"
    card: Card | None = None
    # For card updates: the clicked card's update handle (WeCom response code) and the button's new label.
    update: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def markdown(text: str) -> Reply:
        return Reply(text=text, kind="markdown")

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"text": self.text}
        if self.card is not None:
            payload["card"] = {
                "title": self.card.title,
                "task_id": self.card.task_id,
                "description": self.card.description,
                "fields": [list(f) for f in self.card.fields],
                "buttons": [{"key": b.key, "text": b.text, "style": b.style} for b in self.card.buttons],
            }
        if self.update:
            payload["update"] = dict(self.update)
        return payload

    @staticmethod
    def from_payload(kind: ReplyKind, payload: dict[str, Any]) -> Reply:
        card = None
        if (c := payload.get("card")) is not None:
            card = Card(
                title=c["title"],
                task_id=c["task_id"],
                description=c.get("description", ""),
                fields=tuple((str(k), str(v)) for k, v in c.get("fields", [])),
                buttons=tuple(Button(b["key"], b["text"], int(b.get("style", 1))) for b in c.get("buttons", [])),
            )
        return Reply(text=payload.get("text", ""), kind=kind, card=card, update=dict(payload.get("update", {})))

"""Platform-neutral values that cross the core: what came in, and what goes out.

Integrations turn platform payloads into ``IncomingMessage`` (a tapped card button into a ``Click``) and turn
``Reply`` / ``Card`` / ``CardUpdate`` back into platform payloads; nothing in ``bot/`` or ``handlers/`` ever sees a
platform field name or event name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Platform = str  # the name an integration registers under
ReplyKind = Literal["text", "markdown", "card", "card_update"]
AttachmentKind = Literal["image", "file"]

# The neutral event an integration reports when its chat archive has new messages to pull.
ARCHIVE_READY = "archive_ready"
# Neutral events about customer contacts and staff accounts; ``raw`` carries ``account`` (the staff member's user
# id), ``contact`` (the customer contact's id) and, for a failed transfer, ``reason``.
CONTACT_ADDED = "contact_added"  # a customer contact and a staff member became contacts (or their details changed)
CONTACT_LOST = "contact_lost"  # the customer removed the staff member
CONTACT_DROPPED = "contact_dropped"  # the staff member removed the customer contact
CONTACT_TRANSFER_FAILED = "contact_transfer_failed"  # a contact did not move to the successor
STAFF_LEFT = "staff_left"  # the platform removed a staff member's account
# ``reply_to`` flag on an outbox row: deliver the text to these customer contacts (platform ids) on behalf of the
# staff member the row is addressed to, through the platform's customer-contact API.
TO_CUSTOMERS = "to_customers"


@dataclass(frozen=True, slots=True)
class Click:
    """A tap on a card button: the button's key (the text command it stands for), the card it was on, and the
    single-use handle the platform gave for updating that card (empty when it gives none)."""

    key: str
    card_id: str = ""
    handle: str = ""


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One message or event from a platform, normalized.

    ``sender`` is the platform's user id for the sender. ``reply_to`` carries what the platform needs to answer
    in the same conversation; it is opaque to the core and handed back to the platform's channel adapter.
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
    click: Click | None = None
    reply_to: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ArchivedMessage:
    """A customer conversation message as the archive stored it: what the archive hooks get (plain values, no
    model object: an import hands them hundreds of thousands)."""

    id: int
    platform: Platform
    msgid: str
    sender: str
    receivers: tuple[str, ...]
    room_id: str
    msgtype: str
    text: str
    event: str
    event_key: str
    sent_at: datetime
    staff_id: int | None
    customer_id: int | None


@dataclass(frozen=True, slots=True)
class Button:
    key: str
    text: str
    style: int = 1


@dataclass(frozen=True, slots=True)
class Card:
    """An interactive card (approval and the like): a title, labelled fields and up to six buttons.

    ``card_id`` identifies the card so that a click can be matched and the card updated later.
    """

    title: str
    card_id: str
    description: str = ""
    fields: tuple[tuple[str, str], ...] = ()
    buttons: tuple[Button, ...] = ()


@dataclass(frozen=True, slots=True)
class CardUpdate:
    """The new state of a card already sent: its buttons give way to ``label``. ``handle`` is the single-use update
    handle the platform gave (with a click, or when the card was sent)."""

    card_id: str
    handle: str
    label: str


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent with a reply: a picture (``image``) or any other file (``file``), by the id of its stored bytes
    (``bot.files.store_file`` makes one)."""

    kind: AttachmentKind
    filename: str
    file_id: int

    def to_payload(self) -> dict[str, Any]:
        return {"kind": self.kind, "filename": self.filename, "file_id": self.file_id}

    @staticmethod
    def from_payload(payload: dict[str, Any]) -> Attachment:
        kind: AttachmentKind = "image" if payload.get("kind") == "image" else "file"
        return Attachment(kind, str(payload.get("filename", "")), int(payload["file_id"]))


@dataclass(frozen=True, slots=True)
class Reply:
    """Something to say: plain text, markdown, a card, or the new state of a card already sent; ``attachments``
    go out after the text (pictures and files, see ``bot/files.py``)."""

    text: str = ""
    kind: ReplyKind = "text"
    card: Card | None = None
    card_update: CardUpdate | None = None
    attachments: tuple[Attachment, ...] = ()

    @staticmethod
    def markdown(text: str) -> Reply:
        return Reply(text=text, kind="markdown")

    @staticmethod
    def updating(update: CardUpdate) -> Reply:
        return Reply(text=update.label, kind="card_update", card_update=update)

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"text": self.text}
        if self.card is not None:
            payload["card"] = {
                "title": self.card.title,
                "card_id": self.card.card_id,
                "description": self.card.description,
                "fields": [list(f) for f in self.card.fields],
                "buttons": [{"key": b.key, "text": b.text, "style": b.style} for b in self.card.buttons],
            }
        if self.card_update is not None:
            u = self.card_update
            payload["card_update"] = {"card_id": u.card_id, "handle": u.handle, "label": u.label}
        if self.attachments:
            payload["attachments"] = [a.to_payload() for a in self.attachments]
        return payload

    @staticmethod
    def from_payload(kind: ReplyKind, payload: dict[str, Any]) -> Reply:
        card = None
        if (c := payload.get("card")) is not None:
            card = Card(
                title=c["title"],
                card_id=str(c.get("card_id", "")),
                description=c.get("description", ""),
                fields=tuple((str(k), str(v)) for k, v in c.get("fields", [])),
                buttons=tuple(Button(b["key"], b["text"], int(b.get("style", 1))) for b in c.get("buttons", [])),
            )
        update = None
        if (u := payload.get("card_update")) is not None:
            update = CardUpdate(str(u.get("card_id", "")), str(u.get("handle", "")), str(u.get("label", "")))
        attachments = tuple(Attachment.from_payload(a) for a in payload.get("attachments", ()))
        return Reply(text=payload.get("text", ""), kind=kind, card=card, card_update=update, attachments=attachments)

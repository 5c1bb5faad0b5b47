"""The DingTalk channel adapter: how a ``Reply`` leaves on DingTalk.

Route: a reply to a message whose ``sessionWebhook`` is still valid (by the app clock, with
``webhook_margin_seconds`` to spare) is POSTed to that webhook, so it lands in the same 1:1 or group conversation
(in a group it @-mentions the asker). Everything else (pushes, late replies, a webhook DingTalk reports gone)
goes to the recipient 1:1 through ``batchSend`` with the matching ``msgKey``.

Cards: DingTalk's robot messages cannot call back into our server, so a ``Card`` is rendered as an ActionCard
whose buttons are links of the form ``dtmd://dingtalkclient/sendMessage?content=<url-encoded button key>``. The
DingTalk client opens such a link by sending ``content`` into the current chat as the tapper's own message, so a
tap on 「同意」 reaches the bot as the tapper typing ``同意 #AP12``: it arrives through the ordinary callback, signed,
from the right staff member, and is routed like any typed command (who may approve is checked by the handler,
as for typed text). The buttons are the vertical variants (webhook ``btnOrientation "0"``, batchSend
``sampleActionCard`` for one button and ``sampleActionCard2``-``5`` for more, keys ``actionTitleN/actionURLN``);
the two-button horizontal ``sampleActionCard6`` is avoided because its key casing is unconfirmed. In a group the
robot only hears messages that @ it, which a tap does not, so a card answering a group message goes 1:1. A card with
more than five buttons shows the first five; the text always lists every command so it can also be typed.
ActionCards cannot be edited after sending, so a ``card_update`` becomes a short text notice to the recipient.

Attachments: a robot message cannot carry our bytes, so the reply becomes one markdown message, its text followed
by a picture ``![图表](link)`` for each image and a link ``[文件名](link)`` for each file, the links signed and
expiring (``bot.files.download_url`` under ``[server] public_url``). Asked for in a group, it goes 1:1 to the asker.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from bot.channels import DeliveryError, PermanentDeliveryError, RateLimit
from bot.clock import Clock
from bot.types import Attachment, Button, Card, Platform, Reply
from integrations.dingtalk.client import DingTalkClient, WebhookGone
from integrations.dingtalk.normalize import (
    AT_USER,
    CONVERSATION_TYPE,
    GROUP,
    WEBHOOK,
    WEBHOOK_EXPIRES_MS,
    safe_webhook,
)
from integrations.dingtalk.settings import DingTalkSettings

log = logging.getLogger(__name__)

MAX_BUTTONS = 5
DEFAULT_TITLE = "CRM 助手"
_MARKUP = re.compile(r"^[\s#>*\-]+|[*`]+")
_LINK_TEXT_UNSAFE = re.compile(r"[\[\]()\\`*_]")
# The signed download link of an attachment as of a moment (``bot.files.download_url`` with the settings).
Links = Callable[[Attachment, datetime], str]


def tap_url(key: str) -> str:
    """The link that makes the DingTalk client send ``key`` as the tapper's own message."""
    return "dtmd://dingtalkclient/sendMessage?content=" + quote(key, safe="")


def title_of(text: str) -> str:
    """A notification title: the first non-empty line without markdown markup, at most 30 characters."""
    for line in text.splitlines():
        plain = _MARKUP.sub("", line).strip()
        if plain:
            return plain[:30]
    return DEFAULT_TITLE


def card_markdown(card: Card) -> str:
    lines = [f"### {card.title}"]
    if card.description:
        lines.append(card.description)
    lines.extend(f"**{name}**：{value}" for name, value in card.fields)
    if card.buttons:
        lines.append("也可直接回复：" + " / ".join(f"「{b.key}」" for b in card.buttons))
    return "\n\n".join(lines)


def update_notice(reply: Reply) -> str:
    """The text that stands in for a card update (an ActionCard cannot be edited once sent)."""
    if reply.card_update is not None and (label := reply.card_update.label):
        return f"审批卡片状态已更新：{label}"
    return reply.text or "审批卡片状态已更新"


def with_links(reply: Reply, links: list[tuple[Attachment, str]]) -> Reply:
    """``reply`` as one markdown message: its text, then each image shown and each file as a download link."""
    lines = [reply.text] if reply.text.strip() else []
    for attachment, url in links:
        if attachment.kind == "image":
            lines.append(f"![图表]({url})")
        else:
            lines.append(f"[{_LINK_TEXT_UNSAFE.sub('_', attachment.filename)}]({url})")
    return Reply.markdown("\n\n".join(lines))


def _buttons(card: Card) -> tuple[Button, ...]:
    return card.buttons[:MAX_BUTTONS]


def webhook_body(reply: Reply, at_user: str = "") -> dict[str, Any]:
    """The JSON a sessionWebhook takes for ``reply`` (text, markdown or actionCard)."""
    body: dict[str, Any]
    if reply.card is not None and reply.kind == "card":
        card, buttons = reply.card, _buttons(reply.card)
        text = card_markdown(card)
        if not buttons:
            body = {"msgtype": "markdown", "markdown": {"title": card.title, "text": text}}
        elif len(buttons) == 1:
            action: dict[str, Any] = {
                "title": card.title,
                "text": text,
                "singleTitle": buttons[0].text,
                "singleURL": tap_url(buttons[0].key),
            }
            body = {"msgtype": "actionCard", "actionCard": action}
        else:
            btns = [{"title": b.text, "actionURL": tap_url(b.key)} for b in buttons]
            action = {"title": card.title, "text": text, "btnOrientation": "0", "btns": btns}
            body = {"msgtype": "actionCard", "actionCard": action}
    elif reply.kind == "markdown":
        body = {"msgtype": "markdown", "markdown": {"title": title_of(reply.text), "text": reply.text}}
    else:
        body = {"msgtype": "text", "text": {"content": reply.text}}
    if at_user and body["msgtype"] in ("text", "markdown"):
        body["at"] = {"atUserIds": [at_user]}
    return body


def batch_message(reply: Reply) -> tuple[str, dict[str, Any]]:
    """The batchSend ``msgKey`` and ``msgParam`` for ``reply``."""
    if reply.card is not None and reply.kind == "card":
        card, buttons = reply.card, _buttons(reply.card)
        text = card_markdown(card)
        if not buttons:
            return "sampleMarkdown", {"title": card.title, "text": text}
        if len(buttons) == 1:
            return "sampleActionCard", {
                "title": card.title,
                "text": text,
                "singleTitle": buttons[0].text,
                "singleURL": tap_url(buttons[0].key),
            }
        param: dict[str, Any] = {"title": card.title, "text": text}
        for i, button in enumerate(buttons, start=1):
            param[f"actionTitle{i}"] = button.text
            param[f"actionURL{i}"] = tap_url(button.key)
        return f"sampleActionCard{len(buttons)}", param
    if reply.kind == "markdown":
        return "sampleMarkdown", {"title": title_of(reply.text), "text": reply.text}
    return "sampleText", {"content": reply.text}


class DingTalkChannel:
    platform: Platform = "dingtalk"
    live_for: set[int] | None = None

    def __init__(self, client: DingTalkClient, settings: DingTalkSettings, clock: Clock, links: Links) -> None:
        self.client = client
        self.settings = settings
        self.clock = clock
        self.links = links
        self.rate_limits: tuple[RateLimit, ...] = (RateLimit(settings.messages_per_minute, 60),)

    def _live_webhook(self, reply_to: dict[str, Any]) -> str:
        url, expires_ms = reply_to.get(WEBHOOK), reply_to.get(WEBHOOK_EXPIRES_MS)
        if not isinstance(url, str) or not isinstance(expires_ms, int):
            return ""
        # Checked again on the way out: a reply queued before a stricter check still never leaves for elsewhere.
        url = safe_webhook(url, self.settings.session_webhook_prefix)
        if not url:
            return ""
        now_ms = int(self.clock.now().timestamp() * 1000)
        return url if now_ms + self.settings.webhook_margin_seconds * 1000 < expires_ms else ""

    async def send(
        self, recipient: str, reply: Reply, reply_to: dict[str, Any], *, maybe_sent_at: datetime | None = None
    ) -> dict[str, Any]:
        # sessionWebhook and batchSend have no duplicate check: a possible repeat is sent like the first send
        # (docs/DELIVERY.md says what remains possible), so ``maybe_sent_at`` changes nothing here.
        if reply.kind == "card_update":
            reply = Reply(update_notice(reply))
        # In a group the robot only hears messages that @ it, and a button tap does not: cards go 1:1. So do files:
        # a download link posted in a group would hand the asker's data to everyone in it.
        one_to_one = (reply.kind == "card" or bool(reply.attachments)) and reply_to.get(CONVERSATION_TYPE) == GROUP
        if reply.attachments:
            now = self.clock.now()
            reply = with_links(reply, [(a, self.links(a, now)) for a in reply.attachments])
        if not one_to_one and (webhook := self._live_webhook(reply_to)):
            try:
                await self.client.post_webhook(webhook, webhook_body(reply, str(reply_to.get(AT_USER) or "")))
                return {"via": "session_webhook"}
            except WebhookGone as exc:
                log.info("dingtalk reply to %s: %s; sending by batchSend", recipient, exc)
        msg_key, msg_param = batch_message(reply)
        result = await self.client.batch_send([recipient], msg_key, msg_param)
        if recipient in result.invalid:
            raise PermanentDeliveryError(f"dingtalk: {recipient} is not a valid staff id for this robot")
        if recipient in result.flow_controlled:
            raise DeliveryError(
                f"dingtalk: {recipient} is flow-controlled", retry_after=self.settings.throttle_retry_seconds
            )
        return {"via": "batch_send", "process_query_key": result.process_query_key, "msg_key": msg_key}

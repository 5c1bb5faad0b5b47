"""WeCom customer-contact messages (客户联系): text sent to external contacts on a rep's behalf.

An outbox row addressed to a rep's WeCom UserID whose ``reply_to`` carries ``bot.types.TO_CUSTOMERS`` (a list of
external contact ids) is not an app message to the rep: it becomes ``externalcontact/add_msg_template``
(``chat_type`` single, ``sender`` the rep). WeCom then asks the rep to confirm the message in their client, and it
reaches the customer from the rep's own account. Needs the app to hold the customer-contact permission
(``[wecom] customer_contact = true``).
"""

from __future__ import annotations

import logging
from typing import Any

from bot.channels import PermanentDeliveryError
from bot.types import TO_CUSTOMERS
from integrations.wecom.client import WeComClient

log = logging.getLogger(__name__)

API = "externalcontact/add_msg_template"
CONTENT_LIMIT = 4000  # bytes of text.content accepted by add_msg_template


def customer_recipients(reply_to: dict[str, Any]) -> list[str] | None:
    """The external contact ids a row is for, or None for an ordinary app message."""
    value = reply_to.get(TO_CUSTOMERS)
    if value is None:
        return None
    return [str(v) for v in value if v] if isinstance(value, list) else []


async def send_customer_message(
    client: WeComClient, sender: str, external_userids: list[str], text: str
) -> dict[str, Any]:
    """Create the rep's message task; returns ``msgid`` and the contacts WeCom could not take (``fail_list``)."""
    if not external_userids:
        raise PermanentDeliveryError("customer message without recipients")
    if not text.strip():
        raise PermanentDeliveryError("empty customer message")
    content = text.encode()[:CONTENT_LIMIT].decode(errors="ignore")
    body = {
        "chat_type": "single",
        "external_userid": external_userids,
        "sender": sender,
        "text": {"content": content},
    }
    answer = await client.post(API, body)
    failed = [str(u) for u in answer.get("fail_list") or []]
    if failed and set(failed) >= set(external_userids):
        # Not a friend of this rep (any more), or the contact refused: retrying cannot help.
        raise PermanentDeliveryError(f"wecom {API}: no recipient could be reached")
    if failed:
        log.warning("wecom %s: %d of %d contacts not reachable", API, len(failed), len(external_userids))
    return {"msgid": str(answer.get("msgid", "")), "fail_list": failed}

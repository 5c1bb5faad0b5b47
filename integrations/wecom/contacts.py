"""WeCom customer contact (客户联系): moving a leaver's customers to their successor and following each move.

An active member's customers go through ``externalcontact/transfer_customer``, a departed member's through
``externalcontact/resigned/transfer_customer``, at most ``TRANSFER_BATCH`` external ids a call; a customer WeCom
accepted (errcode 0) is only on its way (the customer has 24 hours to refuse), so ``…/transfer_result`` is polled,
page by page, until each is 接替完毕 or failed. A successor over WeCom's limit is asked again, up to
``MAX_ATTEMPTS`` times; a refusal is final. ``describe`` reads one contact with ``externalcontact/get``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from bot.channels import DeliveryError, PermanentDeliveryError
from bot.identity import ContactCard
from integrations.wecom.client import WeComClient
from models.people import ContactTransfer, TransferStatus

log = logging.getLogger(__name__)

TRANSFER_BATCH = 100  # external_userid per transfer_customer call
MAX_ATTEMPTS = 3
# transfer_result's status: 1 接替完毕, 2 等待接替, 3 客户拒绝, 4 接替成员客户达到上限, 5 无接替记录.
DONE, WAITING, REFUSED, OVER_LIMIT, NO_RECORD = 1, 2, 3, 4, 5
REASONS = {REFUSED: "客户拒绝", OVER_LIMIT: "接替成员客户达到上限", NO_RECORD: "无接替记录"}


class ContactMover:
    """``Identity.move_contacts`` for WeCom."""

    def __init__(self, client: WeComClient) -> None:
        self.client = client

    async def __call__(self, transfers: Sequence[ContactTransfer], departed: bool) -> None:
        prefix = "externalcontact/resigned/" if departed else "externalcontact/"
        pairs: dict[tuple[str, str], list[ContactTransfer]] = defaultdict(list)
        for transfer in transfers:
            pairs[(transfer.from_user_id, transfer.to_user_id)].append(transfer)
        for (handover, takeover), group in pairs.items():
            try:
                await self._ask(prefix, handover, takeover, [t for t in group if t.status == TransferStatus.WAITING])
                await self._poll(prefix, handover, takeover, [t for t in group if t.status == TransferStatus.PENDING])
            except (DeliveryError, PermanentDeliveryError) as exc:  # left as they are: the next pass tries again
                log.warning("wecom transfer %s → %s: %s", handover, takeover, exc)

    async def _ask(self, prefix: str, handover: str, takeover: str, waiting: list[ContactTransfer]) -> None:
        for start in range(0, len(waiting), TRANSFER_BATCH):
            batch = {t.contact_user_id: t for t in waiting[start : start + TRANSFER_BATCH]}
            body = {"handover_userid": handover, "takeover_userid": takeover, "external_userid": list(batch)}
            answer = await self.client.post(prefix + "transfer_customer", body)
            for item in answer.get("customer") or []:
                transfer = batch.get(str(item.get("external_userid") or ""))
                if transfer is None:
                    continue
                transfer.attempts += 1
                errcode = int(item.get("errcode") or 0)
                transfer.status = TransferStatus.PENDING if errcode == 0 else TransferStatus.FAILED
                transfer.reason = "" if errcode == 0 else f"企业微信拒绝（错误码 {errcode}）"

    async def _poll(self, prefix: str, handover: str, takeover: str, pending: list[ContactTransfer]) -> None:
        if not pending:
            return
        by_contact = {t.contact_user_id: t for t in pending}
        for item in await self._results(prefix, handover, takeover):
            transfer = by_contact.get(str(item.get("external_userid") or ""))
            if transfer is not None:
                _settle(transfer, int(item.get("status") or NO_RECORD))

    async def _results(self, prefix: str, handover: str, takeover: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = ""
        while True:
            body = {"handover_userid": handover, "takeover_userid": takeover, "cursor": cursor}
            answer = await self.client.post(prefix + "transfer_result", body)
            items.extend(answer.get("customer") or [])
            cursor = str(answer.get("next_cursor") or "")
            if not cursor:
                return items


def _settle(transfer: ContactTransfer, status: int) -> None:
    if status == DONE:
        transfer.status, transfer.reason = TransferStatus.DONE, ""
    elif status == OVER_LIMIT and transfer.attempts < MAX_ATTEMPTS:
        transfer.status, transfer.reason = TransferStatus.WAITING, REASONS[OVER_LIMIT]  # asked again next pass
    elif status != WAITING:
        transfer.status, transfer.reason = TransferStatus.FAILED, REASONS.get(status, f"状态 {status}")


async def describe(client: WeComClient, contact: str, account: str) -> ContactCard | None:
    """``externalcontact/get``: the contact's name and company, with the rep's remark, company note and phones."""
    try:
        answer = await client.get("externalcontact/get", {"external_userid": contact})
    except (DeliveryError, PermanentDeliveryError) as exc:
        log.warning("wecom externalcontact/get %s: %s", contact, exc)
        return None
    person = answer.get("external_contact") or {}
    mine: dict[str, Any] = next((f for f in answer.get("follow_user") or [] if f.get("userid") == account), {})
    return ContactCard(
        name=str(person.get("name") or ""),
        company=str(mine.get("remark_corp_name") or person.get("corp_full_name") or person.get("corp_name") or ""),
        remark=str(mine.get("remark") or ""),
        phones=tuple(str(p) for p in mine.get("remark_mobiles") or [] if p),
    )

"""The 用友T+ order feed: signs in with the app key and secret (a bearer token, fetched again when refused),
asks for sales orders changed since a position, one page at a time, and turns each T+ row into an order event of
the webhook's schema. This module is the only code that knows T+ field names.

The position is ``<TS>|<ID>`` of the last row read: T+ lists changes in (TS, ID) order, so the next page starts
strictly after it, and rows sharing a timestamp are neither skipped nor read twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from bot.orderflow import FeedPage, FeedUnavailable
from integrations.tplus.settings import NAME, TplusSettings

TOKEN_PATH = "/api/v1/auth/token"
CHANGES_PATH = "/api/v1/SaleOrder/Changes"
# T+ voucher states (单据状态) → our status codes.
STATES = {
    "已下单": "placed",
    "下单": "placed",
    "生产中": "production",
    "包装待发": "packed",
    "已发货": "shipped",
    "已签收": "received",
    "已开票": "invoiced",
    "已回款": "paid",
    "已作废": "cancelled",
    "取消": "cancelled",
}


class TplusFeed:
    """``fetch_changes(since)`` against a T+ OpenAPI (``bot.orderflow.OrderFeed``)."""

    name = NAME

    def __init__(self, settings: TplusSettings, session: Callable[[], aiohttp.ClientSession]) -> None:
        self.settings = settings
        self.session = session
        self._token = ""

    async def fetch_changes(self, since: str) -> FeedPage:
        ts, _, after = since.partition("|")
        params = {"ts": ts, "afterId": after or "0", "pageSize": str(self.settings.page_size)}
        body = await self._get(CHANGES_PATH, params)
        data = body.get("Data")
        if not isinstance(data, dict) or not isinstance(data.get("Rows"), list):
            raise FeedUnavailable("T+ answered without Data.Rows")
        rows = [r for r in data["Rows"] if isinstance(r, dict)]
        position = f"{rows[-1].get('TS', ts)}|{rows[-1].get('ID', after)}" if rows else since
        return FeedPage([event_of(r) for r in rows], position, bool(data.get("HasMore")))

    async def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        for fresh_token in (False, True):
            if fresh_token or not self._token:
                self._token = await self._sign_in()
            status, body = await self._request("GET", path, params=params, headers={"Authorization": self._token})
            if status != 401:
                return _ok(status, body)
        raise FeedUnavailable("T+ refused a fresh token")

    async def _sign_in(self) -> str:
        payload = {"appKey": self.settings.app_key, "appSecret": self.settings.app_secret}
        body = _ok(*await self._request("POST", TOKEN_PATH, json=payload))
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise FeedUnavailable("T+ sign-in answered no access_token")
        return f"Bearer {token}"

    async def _request(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout_seconds)
        url = self.settings.api_base.rstrip("/") + path
        try:
            async with self.session().request(method, url, timeout=timeout, **kwargs) as resp:
                body = await resp.json(content_type=None) if resp.status < 500 else {}
                return resp.status, body if isinstance(body, dict) else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise FeedUnavailable(f"T+ {path}: {type(exc).__name__} {exc}") from exc


def _ok(status: int, body: dict[str, Any]) -> dict[str, Any]:
    if status >= 400 or str(body.get("Code", "0")) != "0":
        raise FeedUnavailable(f"T+ answered HTTP {status} {body.get('Message', '')}".rstrip())
    return body


def _name(value: object) -> str:
    return str(value.get("Name", "")) if isinstance(value, dict) else ""


def _inventory_class(inventory: object) -> str:
    """The inventory's class (存货分类), which is the product line."""
    return _name(inventory.get("InventoryClass")) if isinstance(inventory, dict) else ""


def event_of(row: dict[str, Any]) -> dict[str, Any]:
    """A T+ sales-order row as an order event (what it lacks is left for validation to report)."""
    state = str(row.get("VoucherState", ""))
    details = row.get("SaleOrderDetails")
    return {
        "event_id": f"{NAME}:{row.get('ID')}:{row.get('TS')}",
        "order_no": row.get("Code"),
        "customer": _name(row.get("Customer")),
        "status": STATES.get(state, state),
        "at": row.get("StateTime"),
        "order_date": row.get("VoucherDate"),
        "total": row.get("OrigTaxAmount"),
        "lines": [
            {
                "product": _name(d.get("Inventory")),
                "product_line": _inventory_class(d.get("Inventory")),
                "quantity": d.get("Quantity"),
                "amount": d.get("OrigTaxAmount"),
            }
            for d in details
            if isinstance(d, dict)
        ]
        if isinstance(details, list)
        else None,
        "carrier": row.get("LogisticsCompany") or "",
        "tracking_no": row.get("WaybillCode") or "",
        "invoice_no": row.get("InvoiceCode") or "",
    }

"""A 用友T+ OpenAPI stand-in for the order pull: app sign-in for a bearer token, and sales orders changed since a
(TS, ID) position, one page at a time, with the field names a T+ sales order (销货单) row carries.

``add(...)`` records a change (a row); ``fail_next`` answers that many requests with 503 first; ``revoke_tokens``
makes the next request with an old token answer 401; ``requests`` lists what was asked.
"""

from __future__ import annotations

import bisect
import itertools
import secrets
from typing import Any

from aiohttp import web


class TplusSimulator:
    def __init__(self, app_key: str = "tplus-app", app_secret: str = "tplus-secret") -> None:
        self.app_key, self.app_secret = app_key, app_secret
        self.rows: list[dict[str, Any]] = []
        self.tokens: set[str] = set()
        self.fail_next = 0
        self.requests: list[dict[str, str]] = []
        self.url = ""
        self._ids = itertools.count(1)
        self._order: list[tuple[str, int]] = []  # the rows' (TS, ID), sorted, kept while no row is added

    def settings(self) -> dict[str, Any]:
        return {"api_base": self.url, "app_key": self.app_key, "app_secret": self.app_secret, "page_size": 2}

    def add(
        self,
        code: str,
        customer: str,
        state: str,
        ts: str,
        *,
        date: str = "2026-11-20",
        amount: float = 12000.0,
        waybill: str = "",
        details: list[tuple[str, float, float]] | None = None,
        inventory_class: str = "",
    ) -> None:
        """A change of sales order ``code`` to ``state`` (a T+ voucher state such as 已发货) at ``ts`` (ISO); its
        products are of ``inventory_class`` (存货分类) when given."""
        kind = {"InventoryClass": {"Code": "01", "Name": inventory_class}} if inventory_class else {}
        self._order = []
        self.rows.append(
            {
                "ID": next(self._ids),
                "TS": ts,
                "Code": code,
                "VoucherDate": date,
                "Customer": {"Code": f"C{len(customer)}", "Name": customer},
                "VoucherState": state,
                "StateTime": ts,
                "OrigTaxAmount": amount,
                "SaleOrderDetails": [
                    {"Inventory": {"Name": name, **kind}, "Quantity": qty, "OrigTaxAmount": value}
                    for name, qty, value in (details or [("液压缸 HC-80", 10, amount)])
                ],
                "LogisticsCompany": "顺丰速运" if waybill else "",
                "WaybillCode": waybill,
                "InvoiceCode": "",
            }
        )

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1/auth/token", self._token)
        app.router.add_get("/api/v1/SaleOrder/Changes", self._changes)
        return app

    def _failing(self) -> bool:
        if self.fail_next > 0:
            self.fail_next -= 1
            return True
        return False

    async def _token(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self._failing():
            return web.Response(status=503)
        if (body.get("appKey"), body.get("appSecret")) != (self.app_key, self.app_secret):
            return web.json_response({"Code": "401", "Message": "appKey or appSecret wrong"}, status=401)
        token = secrets.token_hex(8)
        self.tokens.add(token)
        return web.json_response({"access_token": token, "expires_in": 7200})

    async def _changes(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.requests.append(query)
        if self._failing():
            return web.Response(status=503)
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self.tokens:
            return web.json_response({"Code": "401", "Message": "token invalid"}, status=401)
        after = (query.get("ts", ""), int(query.get("afterId", "0") or 0))
        size = int(query.get("pageSize", "100"))
        if len(self._order) != len(self.rows):
            self.rows.sort(key=lambda r: (r["TS"], r["ID"]))
            self._order = [(r["TS"], r["ID"]) for r in self.rows]
        start = bisect.bisect_right(self._order, after)
        page = self.rows[start : start + size]
        return web.json_response({"Code": "0", "Data": {"Rows": page, "HasMore": start + size < len(self.rows)}})
